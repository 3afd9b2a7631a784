"""metrics/summary.json: the one file dvc.yaml declares as `metrics:`, a few dozen flat, named figures.

`dvc metrics show`, `dvc metrics diff <tag>` and `dvc exp show` read only this file, so each prints one
short row per figure. The full documents (metrics/workload.json, tco.json, ...) stay where they are,
with every key, declared as plain outputs. Every key carries its unit; flags are numbers:

- `*_usd`, `usd_per_*`: US dollars (month = 730 h, year = 8760 h, as tco.json).
- `*_rps`: requests per second; `*_tokens_p95`: tokens; `*_ms`: milliseconds.
- `utilization`, `planned_utilization`: shares of capacity (0-1).
- `tier_<name>_replicas`, `pooled_replicas`: serving instances with safety, headroom and spares.
- `*_basis_measured`: 1 when the deployment's usable RPS comes from its own benchmark, 0 when roofline-scaled.
- `price_like_for_like`: 1 when every compared GPU is priced by one provider (tco.json price_basis), else 0.
- `utilization_trap`: 1 when utilization is under the trap threshold (tco.json), else 0.
- `validation_recharacterize`: 1 production does not behave like the benchmark, 0 it does,
  -1 no production window to compare (validation.json status).
- Short strings: `plan` (routed or pooled), `price_provider`, `sizing_rate_key` (which rate sizes the fleet).
- `calibrated_deployments`: deployments whose engine-model coefficients come from their own sweeps
  (metrics/calibration.json); `calibration_lolo_*_error_pct`: the pooled leave-one-level-out median
  absolute error of the engine model, in percent (throughput, mean ITL, TTFT).
"""

from __future__ import annotations

from typing import Any

from pipeline import io

SUMMARY_JSON = "metrics/summary.json"
DOCUMENTS = ("workload", "operating_point", "fleet", "tco", "validation")
OPTIONAL = ("calibration",)  # metrics/calibration.json (the calibrate stage); its figures are left out without it
CALIBRATION_ERRORS = {"throughput": "throughput", "itl": "itl_mean", "ttft": "ttft"}  # key part -> residual metric


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _measured(rows: list[dict[str, Any]], candidate: str | None) -> int | None:
    row = next((r for r in rows or [] if r.get("candidate") == candidate), None)
    return None if row is None else int(row.get("basis") == "measured")


def build(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary from the stage documents (keys as DOCUMENTS: metrics/<name>.json parsed), flat and ordered.

    Pure: reads nothing. Figures a document lacks (a pooled plan has no tiers) are left out, never invented.
    """
    w, op, fl, t, v = (docs[name] for name in DOCUMENTS)
    totals = t.get("totals") or {}
    rps = w.get("rps") or {}
    out: dict[str, Any] = {
        "plan": t.get("plan"),
        "total_gpus": fl.get("total_gpus"),
        "monthly_usd": t.get("monthly_usd"),
        "annual_usd": t.get("annual_usd"),
        "monthly_usd_with_schedule": totals.get("monthly_usd_with_schedule"),
        "usd_per_million_output_tokens": t.get("usd_per_million_output_tokens"),
        "usd_per_million_output_tokens_planned": totals.get("usd_per_million_output_tokens_planned"),
        "utilization": t.get("utilization"),
        "planned_utilization": totals.get("planned_utilization"),
        "utilization_trap": _flag(t.get("utilization_trap")),
        "routing_saves_usd_per_month": (t.get("routing") or {}).get("routing_saves_usd_per_month"),
        "price_provider": t.get("price_provider"),
        "price_like_for_like": _flag(t.get("like_for_like")),
        "sizing_rate_key": w.get("sizing_rate_key"),
        "sizing_rate_rps": rps.get("sizing_rate"),
        "mean_rps": rps.get("mean"),
        "input_tokens_p95": (w.get("input_tokens") or {}).get("p95"),
        "output_tokens_p95": (w.get("output_tokens") or {}).get("p95"),
        "ttft_p99_slo_ms": (op.get("slo") or {}).get("ttft_p99_ms"),
        "itl_p99_slo_ms": (op.get("slo") or {}).get("itl_p99_ms"),
    }
    pooled_fleet, pooled_cost = fl.get("pooled") or {}, t.get("pooled") or {}
    out |= {
        "pooled_c_max": op.get("c_max"),
        "pooled_usable_rps": op.get("usable_rps"),
        "pooled_replicas": pooled_fleet.get("total_instances"),
        "pooled_gpus": pooled_fleet.get("gpus"),
        "pooled_monthly_usd": pooled_cost.get("monthly_usd"),
        "pooled_basis_measured": _measured(t.get("per_candidate") or [], pooled_cost.get("candidate")),
    }
    tier_points = op.get("per_tier") or {}
    tier_costs = t.get("per_tier") or {}
    tier_candidates = t.get("per_tier_candidates") or {}
    for name, tier in sorted((fl.get("per_tier") or {}).items()):
        point, cost, cands = tier_points.get(name) or {}, tier_costs.get(name) or {}, tier_candidates.get(name) or {}
        out |= {
            f"tier_{name}_gpus": tier.get("gpus"),
            f"tier_{name}_replicas": tier.get("total_instances"),
            f"tier_{name}_c_max": point.get("c_max"),
            f"tier_{name}_usable_rps": point.get("usable_rps", tier.get("usable_rps")),
            f"tier_{name}_sizing_rate_rps": tier.get("peak_rps"),
            f"tier_{name}_monthly_usd": cost.get("monthly_usd"),
            f"tier_{name}_basis_measured": _measured(cands.get("candidates") or [], cands.get("measured")),
        }
    recharacterize = v.get("recharacterize")
    out["validation_recharacterize"] = (
        -1 if v.get("status") != "compared" or recharacterize is None else int(recharacterize)
    )
    out |= _calibration(docs.get("calibration") or {})
    return {k: io.rounded(val) for k, val in out.items() if val is not None}


def _calibration(cal: dict[str, Any]) -> dict[str, Any]:
    """The calibrate stage's figures: calibrated deployments and the pooled leave-one-level-out errors (%)."""
    if not cal:
        return {}
    lolo = ((cal.get("pooled") or {}).get("residuals") or {}).get("leave_one_level_out") or {}
    out: dict[str, Any] = {"calibrated_deployments": cal.get("calibrated_deployments")}
    for name, metric in CALIBRATION_ERRORS.items():
        value = (lolo.get(metric) or {}).get("median_abs_rel")
        out[f"calibration_lolo_{name}_error_pct"] = None if value is None else 100.0 * value
    return out


def write(root: Any) -> dict[str, Any]:
    """Read the stage documents under `root`/metrics, write metrics/summary.json (atomically); returns it."""
    from pathlib import Path

    docs = io.read_metrics(root, DOCUMENTS)
    docs |= io.read_metrics(root, tuple(n for n in OPTIONAL if (Path(root) / "metrics" / f"{n}.json").exists()))
    summary = build(docs)
    io.write_json(Path(root) / SUMMARY_JSON, summary)
    return summary
