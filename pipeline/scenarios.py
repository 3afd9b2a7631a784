"""What-if scenarios side by side (reports/scenarios.html): GPUs, cost, utilization and SLO status per scenario.

A scenario in params (`scenarios: {NAME: {...}}`) changes the traffic (`traffic_scale`), the
deployment (`gpu`, `weights`, `kv`) or the price (`price_usd_per_gpu_hour`) of the pooled fleet
(all traffic on one deployment), and is sized and priced with the same step 11-12 rules as the plan.
Its usable RPS, basis (measured, calibrated, transferred, roofline) and cost band are those of the
candidate's own curve in metrics/tco.json (the engine-model curves of step 7b), and its price is the
comparison's provider's (tco.json price_basis: one provider, or it says there is none), unless the
scenario sets its own price. A deployment that does not fit
or does not meet the SLO on the roofline (metrics/memory.json) shows as failing, with the reason.
For a what-if that needs the whole pipeline (a new traffic log, a new sweep), use a git branch or
`dvc exp run -S` (README: What-if).
"""

from __future__ import annotations

from typing import Any

from pipeline import fleet, io, params, tco

# The scenario keys and their check live in params (the one params schema); the names are kept here.
SCHEMA = params.SCENARIO_SCHEMA
KEYS = params.SCENARIO_KEYS
check = params.check_scenarios


SLO_STATUS = {
    "measured": "meets (measured)",
    "calibrated": "meets (calibrated engine model: its own sweep at other lengths)",
    "transferred": "meets on a transferred curve (pooled coefficients, estimate: benchmark it)",
    "roofline": "meets on the roofline (estimate: benchmark it)",
}


def _base(t: dict[str, Any], op: dict[str, Any]) -> tuple[dict[str, Any] | None, str, str, str]:
    """The deployment a scenario changes: the pooled plan's chosen candidate row, and its GPU and precisions."""
    cid = (t.get("pooled") or {}).get("candidate")
    row = next((r for r in t.get("per_candidate") or [] if r["candidate"] == cid), None)
    if row is not None:
        return row, row["gpu"], row["weights"], row["kv"]
    man = op.get("manifest") or {}
    return None, man["gpu"], man["weight_dtype"], man["kv_dtype"]


def evaluate(
    name: str,
    sc: dict[str, Any],
    m: dict[str, dict[str, Any]],
    fleet_p: dict[str, Any],
    tco_p: dict[str, Any],
    prices: list[tco.Price],
) -> dict[str, Any]:
    """One scenario: the candidate it names, its fleet at the scaled traffic, its cost, utilization and SLO status.

    The candidate's usable RPS, basis and band are those of metrics/tco.json (its own curve, step 7b);
    its price is the comparison's provider's (tco.json price_basis), unless the scenario sets one.
    """
    op, t, w, pooled = m["operating_point"], m["tco"], m["workload"], m["fleet"]["pooled"]
    base, gpu0, w0, kv0 = _base(t, op)
    gpu = sc.get("gpu") or gpu0
    weights, kv = sc.get("weights") or w0, sc.get("kv") or kv0
    scale = float(sc.get("traffic_scale") or 1.0)
    same = (gpu, weights, kv) == (gpu0, w0, kv0)
    cid = base["candidate"] if same and base is not None else f"all/{gpu}/w-{weights}/kv-{kv}"
    row: dict[str, Any] = {"scenario": name, "candidate": cid, "traffic_scale": scale, "changes": dict(sc)}
    cand = next((r for r in t["per_candidate"] if r["candidate"] == cid), None)
    if cand is None:
        entry = m["memory"]["candidates"].get(cid)
        rejected = (m["memory"].get("rejected") or {}).get(cid)
        if entry is None and rejected is None:
            why = f"{cid} was not evaluated: add {gpu} to hardware.gpus and {weights}/{kv} to quantization"
        elif entry is not None and not entry.get("fits", False):
            why = f"{cid} does not fit in memory (step 4)"
        elif entry is not None:
            why = f"{cid} does not meet the SLO on the roofline (step 6)"
        else:
            why = f"{cid} was rejected: {rejected}"
        row.update(slo_status="fails", why=why)
        return row
    row["basis"] = cand.get("basis")
    if cand.get("usable_rps") is None:
        row.update(slo_status="unknown", why=f"{cid}: {cand.get('note') or 'no usable RPS estimate'}")
        return row
    sizing = w["rps"]["sizing_rate"] * scale
    tp, pp = int(cand["tp"]), int(cand.get("pp") or 1)
    size = fleet.size(
        sizing, cand["usable_rps"], tp, pp, fleet_p["safety_factor"], pooled["headroom"], pooled["spares"]
    )
    own_price = sc.get("price_usd_per_gpu_hour")
    price = own_price or cand.get("usd_per_gpu_hour")
    price_src = "scenario price" if own_price else cand.get("price_source")
    row["price_basis"] = "scenario price" if own_price else basis_label(t)
    row["price_provider"] = None if own_price else (t.get("price_basis") or {}).get("provider")
    row.update(
        gpu=gpu,
        weights=weights,
        kv=kv,
        tp=tp,
        pp=pp,
        usable_rps=cand["usable_rps"],
        sizing_rps=round(sizing, 4),
        instances=size.total_instances,
        gpus=size.gpus,
        slo_status=SLO_STATUS.get(cand["basis"], f"meets on a {cand['basis']} curve"),
        eligible=cand.get("eligible"),
    )
    if price is None:
        provider = row["price_provider"]
        row.update(
            why=f"no price for {gpu}"
            + (f" from {provider} (the comparison's provider)" if provider else "")
            + f": set tco.prices.{gpu} or the scenario's price_usd_per_gpu_hour"
        )
        return row
    c = tco.cost(
        size.gpus,
        float(price),
        size.total_instances,
        cand["usable_rps"],
        w["rps"]["mean"] * scale,
        w["output_tokens"]["mean"],
        w["input_tokens"]["mean"],
        tco_p["planned_utilization"],
        tco_p["utilization_trap_below"],
    )
    row.update(io.rounded({k: v for k, v in c.as_dict().items() if k != "gpus"}))
    band = (cand.get("interval") or {}) if cand.get("interval") else None
    row["interval"] = (
        tco.interval_cost(band, float(price), tp, pp, {"rps": {"sizing_rate": sizing}}, pooled, fleet_p)
        if band
        else None
    )
    row["price_source"] = price_src
    return row


def basis_label(t: dict[str, Any]) -> str:
    """Which provider's prices a row compares on (metrics/tco.json price_basis), in a few words."""
    basis = t.get("price_basis") or {}
    if not basis:
        return "not recorded (rerun the report stage)"
    if basis.get("like_for_like"):
        return f"{basis['provider']} ({basis['pricing']})"
    return "no one provider lists every compared GPU: lowest listed per GPU, NOT like-for-like"


def _gpus_by_type(t: dict[str, Any], f: dict[str, Any]) -> dict[str, int]:
    """GPUs per type of the adopted plan as metrics/tco.json prices it (per_tier), else fleet.json's count."""
    out: dict[str, int] = {}
    for row in (t.get("per_tier") or {}).values():
        if isinstance(row, dict) and row.get("gpu") and isinstance(row.get("gpus"), int):
            out[row["gpu"]] = out.get(row["gpu"], 0) + row["gpus"]
    return out or dict(f["gpus_by_type"])


def table(
    m: dict[str, dict[str, Any]],
    scenarios: dict[str, Any],
    fleet_p: dict[str, Any],
    tco_p: dict[str, Any],
    prices: list[tco.Price],
) -> list[dict[str, Any]]:
    """The adopted plan first (as metrics/tco.json prices it), then the pooled baseline and every scenario."""
    t, f = m["tco"], m["fleet"]
    ids = t.get("chosen_candidates") or {}
    plan = {
        "scenario": f"the plan ({t.get('plan') or f['plan']})",  # the plan tco.json prices (may not be fleet.json's)
        "candidate": " + ".join(ids[k] for k in sorted(ids)) if ids else t["chosen"],
        "basis": t.get("chosen_basis", "measured"),
        "traffic_scale": 1.0,
        "gpus": (t.get("totals") or {}).get("gpus", f["total_gpus"]),
        "gpu": " + ".join(f"{n} {g}" for g, n in _gpus_by_type(t, f).items()),
        "monthly_usd": t["monthly_usd"],
        "annual_usd": t["annual_usd"],
        "utilization": t["utilization"],
        "usd_per_million_output_tokens": t["usd_per_million_output_tokens"],
        "slo_status": SLO_STATUS.get(t.get("chosen_basis") or "measured", "meets"),
        "changes": {},
        "price_basis": basis_label(t),
        "price_provider": (t.get("price_basis") or {}).get("provider"),
    }
    rows = [plan, evaluate("pooled baseline", {}, m, fleet_p, tco_p, prices)]
    rows += [evaluate(name, sc, m, fleet_p, tco_p, prices) for name, sc in check(scenarios).items()]
    return rows
