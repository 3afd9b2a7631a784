"""What-if scenarios side by side (reports/scenarios.html): GPUs, cost, utilization and SLO status per scenario.

A scenario in params (`scenarios: {NAME: {...}}`) changes the traffic (`traffic_scale`), the
deployment (`gpu`, `weights`, `kv`) or the price (`price_usd_per_gpu_hour`) of the pooled fleet
(all traffic on one deployment), and is sized and priced with the same step 11-12 rules as the plan.
Its usable RPS is the measured one when the scenario keeps the benchmarked deployment, else the
roofline-scaled estimate of metrics/tco.json (`basis` says which). A deployment that does not fit
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


def evaluate(
    name: str,
    sc: dict[str, Any],
    m: dict[str, dict[str, Any]],
    fleet_p: dict[str, Any],
    tco_p: dict[str, Any],
    prices: list[tco.Price],
) -> dict[str, Any]:
    """One scenario: the candidate it names, its fleet at the scaled traffic, its cost, utilization and SLO status."""
    op, t, w, pooled = m["operating_point"], m["tco"], m["workload"], m["fleet"]["pooled"]
    man = op["manifest"]
    gpu = sc.get("gpu") or man["gpu"]
    weights, kv = sc.get("weights") or man["weight_dtype"], sc.get("kv") or man["kv_dtype"]
    scale = float(sc.get("traffic_scale") or 1.0)
    cid = f"all/{gpu}/w-{weights}/kv-{kv}"
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
    if cand.get("usable_rps") is None:
        row.update(slo_status="unknown", why=f"{cid}: {cand.get('note') or 'no usable RPS estimate'}")
        return row
    sizing = w["rps"]["sizing_rate"] * scale
    size = fleet.size(
        sizing,
        cand["usable_rps"],
        int(cand["tp"]),
        1,
        fleet_p["safety_factor"],
        pooled["headroom"],
        pooled["spares"],
    )
    price = sc.get("price_usd_per_gpu_hour") or cand.get("usd_per_gpu_hour")
    price_src = "scenario price" if sc.get("price_usd_per_gpu_hour") else cand.get("price_source")
    row["price_basis"] = "scenario price" if sc.get("price_usd_per_gpu_hour") else basis_label(t)
    row.update(
        gpu=gpu,
        weights=weights,
        kv=kv,
        tp=cand["tp"],
        basis=cand["basis"],
        usable_rps=cand["usable_rps"],
        sizing_rps=round(sizing, 4),
        instances=size.total_instances,
        gpus=size.gpus,
        slo_status="meets (measured)"
        if cand["basis"] == "measured"
        else "meets on the roofline (estimate: benchmark it)",
    )
    if price is None:
        row.update(why=f"no price for {gpu}: set tco.prices.{gpu} or the scenario's price_usd_per_gpu_hour")
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
    row["price_source"] = price_src
    return row


def basis_label(t: dict[str, Any]) -> str:
    """Which provider's prices a row compares on (metrics/tco.json price_basis), in a few words."""
    basis = t.get("price_basis") or {}
    if not basis:
        return "not recorded (rerun the report stage)"
    if basis.get("like_for_like"):
        return f"{basis['provider']} ({basis['pricing']})"
    return "lowest listed per GPU: NOT like-for-like"


def table(
    m: dict[str, dict[str, Any]],
    scenarios: dict[str, Any],
    fleet_p: dict[str, Any],
    tco_p: dict[str, Any],
    prices: list[tco.Price],
) -> list[dict[str, Any]]:
    """The adopted plan first (as metrics/tco.json prices it), then the pooled baseline and every scenario."""
    t, f = m["tco"], m["fleet"]
    plan = {
        "scenario": f"the plan ({f['plan']})",
        "candidate": t["chosen"],
        "traffic_scale": 1.0,
        "gpus": f["total_gpus"],
        "gpu": " + ".join(f"{n} {g}" for g, n in f["gpus_by_type"].items()),
        "monthly_usd": t["monthly_usd"],
        "annual_usd": t["annual_usd"],
        "utilization": t["utilization"],
        "usd_per_million_output_tokens": t["usd_per_million_output_tokens"],
        "slo_status": "meets (measured)",
        "changes": {},
        "price_basis": basis_label(t),
    }
    rows = [plan, evaluate("pooled baseline", {}, m, fleet_p, tco_p, prices)]
    rows += [evaluate(name, sc, m, fleet_p, tco_p, prices) for name, sc in check(scenarios).items()]
    return rows
