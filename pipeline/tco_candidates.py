"""Step 12 per candidate: every candidate of a fleet sized (step 11) and priced, on its own curve or the old way.

`Pricing` holds what every candidate is priced with; `tier_rows` gives one fleet's rows (`engine_candidates`
from the curve stage's `candidates`, else `candidates`: measured x roofline ratio); `compared_gpus` the GPUs a
price comparison covers. Pure: no file is read or written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline import io, tco_choice  # io.rounded only
from pipeline.catalog import Price
from pipeline.errors import InputError
from pipeline.tco_cost import HOURS_PER_MONTH, cost, interval_cost
from pipeline.tco_pricing import lookup


def predicted_capacity(
    curve: list[dict[str, Any]], ttft_slo_ms: float, itl_slo_ms: float | None
) -> tuple[float, float]:
    """(concurrency, RPS) where a candidate's roofline curve crosses the SLO (interpolated), else its last level."""
    import numpy as np

    from pipeline.curve import crossing

    pts = sorted(curve, key=lambda r: r["concurrency"])
    if not pts:
        return 0.0, 0.0
    loads = [float(r["concurrency"]) for r in pts]
    caps = [loads[-1]]
    for col, limit in (("ttft_ms", ttft_slo_ms), ("itl_ms", itl_slo_ms)):
        if limit is None:
            continue
        status, c, _ = crossing(loads, [float(r[col]) for r in pts], limit)
        if status == "below_lowest":
            return 0.0, 0.0
        if status == "ok" and c is not None:
            caps.append(c)
    c = min(caps)
    return c, float(np.interp(c, loads, [float(r["rps"]) for r in pts]))


@dataclass(frozen=True)
class Pricing:
    """What every candidate is sized and priced with: the memory stage's candidates and roofline curves, params, prices.

    `basis`: the provider every price comes from (price_basis); None: computed by `plan` from the candidates.
    """

    memory: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]]
    p: dict[str, Any]
    fleet_p: dict[str, Any]
    slo: dict[str, Any]
    prices: list[Price]
    basis: dict[str, Any] | None = None


def _bench_layout(manifest: dict[str, Any], where: str) -> tuple[str, int, int]:
    """The benchmarked deployment's candidate id suffix (GPU, precisions) and its TP and PP, checked."""
    missing = [k for k in ("gpu", "weight_dtype", "kv_dtype", "tp") if manifest.get(k) in (None, "")]
    if missing:
        raise InputError(
            f"{manifest.get('file', where)}: manifest field(s) {', '.join(missing)} missing; expected the benchmarked "
            "GPU, weight and KV precisions and TP (the deployment the fleet is sized and priced on)"
        )
    try:
        tp, pp = int(manifest["tp"]), int(manifest.get("pp") or 1)
    except (TypeError, ValueError):
        tp = pp = 0
    if tp < 1 or pp < 1:
        raise InputError(
            f"{manifest.get('file', where)}: tp = {manifest.get('tp')!r}, pp = {manifest.get('pp')!r}; "
            "expected whole numbers >= 1"
        )
    return f"{manifest['gpu']}/w-{manifest['weight_dtype']}/kv-{manifest['kv_dtype']}", tp, pp


def _price_row(
    row: dict[str, Any],
    gpu: str,
    tp: int,
    pp: int,
    usable: float,
    demand: dict[str, Any],
    fleet_tier: dict[str, Any],
    pr: Pricing,
) -> dict[str, Any]:
    """Size one candidate with the fleet's rules (step 11) and price it (step 12), schedule included when there is one."""
    from pipeline import fleet

    p, fleet_p = pr.p, pr.fleet_p
    rps = demand["rps"]
    size = fleet.size(
        rps["sizing_rate"], usable, tp, pp, fleet_p["safety_factor"], fleet_tier["headroom"], fleet_tier["spares"]
    )
    price = lookup(gpu, pr.prices, p, pr.basis)
    row.update(
        usable_rps=round(usable, 4),
        instances=size.total_instances,
        gpus=size.gpus,
        usd_per_gpu_hour=price["usd_per_gpu_hour"],
        price_source=price["price_source"],
        like_for_like=price["like_for_like"],
    )
    usd = price["usd_per_gpu_hour"]
    if usd is None:
        row["note"] = price["note"]
        return row
    c = cost(
        size.gpus,
        usd,
        size.total_instances,
        usable,
        rps["mean"],
        demand["output_tokens"]["mean"],
        demand["input_tokens"]["mean"],
        p["planned_utilization"],
        p["utilization_trap_below"],
    )
    row.update(io.rounded({k: v for k, v in c.as_dict().items() if k not in ("gpus", "usd_per_gpu_hour")}))
    fleet_sched = fleet_tier.get("schedule")
    if fleet_sched is None:
        row["monthly_usd_with_schedule"] = None
        row["schedule_note"] = fleet_tier.get("schedule_note") or "no scaling schedule for this fleet"
        return row
    sched = fleet.schedule(
        demand["hourly_p95_rps"],
        usable,
        fleet_p["safety_factor"],
        fleet_p["min_warm_instances"],
        fleet_sched["cold_start_s"],
        fleet_tier["spares"],
        size.total_instances,
        fleet_sched.get("observed_hours"),
    )
    scheduled_monthly = sched["instance_hours_per_day"] / 24 * size.gpus_per_instance * usd * HOURS_PER_MONTH
    row["monthly_usd_with_schedule"] = round(scheduled_monthly, 2)
    return row


def finite_positive(x: Any) -> bool:
    """Is `x` a finite number > 0 (a usable RPS that can be sized), not a bool?"""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def engine_candidates(
    tier_name: str,
    op: dict[str, Any],
    demand: dict[str, Any],
    fleet_tier: dict[str, Any],
    pr: Pricing,
) -> list[dict[str, Any]]:
    """Every candidate of one fleet priced on its own curve (metrics/operating_point.json `candidates`, step 7b).

    Each row: the candidate's usable RPS and basis (measured, calibrated, transferred, roofline), its
    fleet and cost (steps 11-12), the cost interval from its RPS band (`interval_cost`), its length
    match, and whether it may be the chosen plan (`eligible`, `eligible_why`: tco_choice.eligibility).
    A candidate whose curve never meets the SLO stays as a row without a price, with the reason.
    """
    allow = bool(pr.p.get("allow_transferred", False))
    rows: list[dict[str, Any]] = []
    for cid, e in sorted((op.get("candidates") or {}).items()):
        if not isinstance(e, dict) or e.get("tier") != tier_name:
            continue
        tp, pp = int(e.get("tp") or 1), int(e.get("pp") or 1)
        basis = str(e.get("basis") or "roofline")
        row: dict[str, Any] = {
            "candidate": cid,
            "gpu": e["gpu"],
            "weights": e["weights"],
            "kv": e["kv"],
            "tp": tp,
            "pp": pp,
            "basis": basis,
            "basis_why": e.get("basis_why"),
            "c_max": e.get("c_max"),
            "binding_slo": e.get("binding_slo"),
            "length_match": e.get("length_match"),
            "memory_rejected": e.get("memory_rejected"),
            "usable_rps_source": f"metrics/operating_point.json candidates.{cid}.usable_rps ({basis} curve)",
        }
        usable = e.get("usable_rps")
        if not finite_positive(usable):
            ok, why = tco_choice.eligibility(basis, False, None, allow)
            row.update(
                usable_rps=None,
                interval=None,
                eligible=ok,
                eligible_why=why,
                note=f"not priced: its {basis} curve gives no usable RPS at the SLO"
                + (f" ({e['basis_why']})" if e.get("basis_why") else ""),
            )
            rows.append(row)
            continue
        row = _price_row(row, e["gpu"], tp, pp, float(usable), demand, fleet_tier, pr)
        row["interval"] = interval_cost(
            e.get("interval"), row.get("usd_per_gpu_hour"), tp, pp, demand, fleet_tier, pr.fleet_p
        )
        if row["interval"] is None and basis != "measured":
            row["interval_note"] = e.get("interval_note") or "its curve states no prediction interval"
        ok, why = tco_choice.eligibility(basis, "monthly_usd" in row, float(usable), allow)
        row.update(eligible=ok, eligible_why=why)
        if e.get("memory_rejected"):
            row["eligible_why"] += f"; the memory stage rejects this TP/PP ({e['memory_rejected']}), the sweep ran it"
        rows.append(row)
    return rows


def tier_rows(
    tier_name: str,
    op_t: dict[str, Any],
    op: dict[str, Any],
    demand: dict[str, Any],
    fleet_tier: dict[str, Any],
    pr: Pricing,
) -> list[dict[str, Any]]:
    """One fleet's candidates: on their own curves when the curve stage wrote `candidates`, else the old way.

    `op_t` is the fleet's operating point (op itself for `all`, op.per_tier[t] for a tier). Without
    `op.candidates` (an operating point from before issue 14), the benchmarked deployment is the
    measured row and every other candidate a roofline-ratio estimate (`candidates`).
    """
    if isinstance(op.get("candidates"), dict) and any(
        isinstance(e, dict) and e.get("tier") == tier_name for e in op["candidates"].values()
    ):
        return engine_candidates(tier_name, op, demand, fleet_tier, pr)
    where = "usable_rps" if tier_name == "all" else f"per_tier.{tier_name}.usable_rps"
    return candidates(tier_name, op_t.get("manifest") or {}, _usable(op_t, where), demand, fleet_tier, pr)


def _usable(op: dict[str, Any], where: str = "usable_rps") -> float:
    """The operating point's usable RPS as a float; a missing or non-numeric one is a clear error."""
    value = op.get("usable_rps")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"metrics/operating_point.json {where} = {value!r}; expected the usable RPS per instance (run dvc repro)"
        ) from None


def candidates(
    tier_name: str,
    manifest: dict[str, Any],
    measured: float,
    demand: dict[str, Any],
    fleet_tier: dict[str, Any],
    pr: Pricing,
) -> list[dict[str, Any]]:
    """Every GPU x precision x TP candidate of one fleet (metrics/memory.json, tier `tier_name`), sized and priced.

    The benchmarked deployment (`manifest`) is always a candidate, at its own TP and PP and its
    measured usable RPS, whatever TP the memory stage picked for that GPU and precision. Every other
    candidate gets the measured RPS x the ratio of its roofline capacity at the SLO to the benchmarked
    deployment's: `roofline-scaled`, never chosen. When the memory stage's roofline for the
    benchmarked GPU and precisions is at another TP x PP, that capacity is scaled per GPU to the
    sweep's; a memory-stage TP other than the sweep's stays a candidate of its own (`.../tpN`).
    """
    memory, curves, slo = pr.memory, pr.curves, pr.slo
    source = "usable_rps" if tier_name == "all" else f"per_tier.{tier_name}.usable_rps"
    if not (isinstance(measured, int | float) and math.isfinite(measured) and measured > 0):
        raise InputError(
            f"metrics/operating_point.json {source} = {measured!r}; expected a finite usable RPS > 0 per instance "
            "(the curve stage's operating point): nothing can be sized or priced"
        )
    suffix, tp_b, pp_b = _bench_layout(manifest, f"metrics/operating_point.json ({tier_name})")
    bench_id = f"{tier_name}/{suffix}"
    entry_b = (memory.get("candidates") or {}).get(bench_id) or {}
    bench_pred: float | None = None
    bench_conc: float | None = None
    scale_note = ""
    if bench_id in curves and entry_b.get("tp"):
        conc_b, pred_b = predicted_capacity(curves[bench_id], slo["ttft_p99_ms"], slo["itl_p99_ms"])
        mem_gpus = int(entry_b["tp"]) * int(entry_b.get("pp") or 1)
        if pred_b > 0:
            bench_pred = pred_b * (tp_b * pp_b) / mem_gpus
            if mem_gpus != tp_b * pp_b or int(entry_b["tp"]) != tp_b:
                scale_note = (
                    f"; the memory stage's roofline for {bench_id} is TP{entry_b['tp']} x PP{entry_b.get('pp') or 1}, "
                    f"the sweep TP{tp_b} x PP{pp_b}: its capacity scaled per GPU x {tp_b * pp_b}/{mem_gpus}"
                )
            else:
                bench_conc = conc_b
        why_not = f"the roofline of the benchmarked {bench_id} never meets the SLO, so it gives no scale"
    else:
        why_not = (
            f"the benchmarked {bench_id} has no roofline curve in the memory stage (not a candidate that fits and "
            "meets the SLO on paper: check params hardware.gpus, quantization and parallelism.max_tp)"
        )
    bench_row: dict[str, Any] = {
        "candidate": bench_id,
        "gpu": manifest["gpu"],
        "weights": manifest["weight_dtype"],
        "kv": manifest["kv_dtype"],
        "tp": tp_b,
        "basis": "measured",
        "usable_rps_source": f"metrics/operating_point.json {source} (measured, TP{tp_b} x PP{pp_b} sweep)",
        "roofline_concurrency_at_slo": round(bench_conc, 2) if bench_conc is not None else None,
    }
    rows = [_price_row(bench_row, manifest["gpu"], tp_b, pp_b, measured, demand, fleet_tier, pr)]
    for cid, e in sorted((memory.get("candidates") or {}).items()):
        if e["tier"] != tier_name or not e["fits"] or not e["meets_slo"] or cid not in curves:
            continue
        tp, pp = int(e["tp"]), int(e.get("pp") or 1)
        if cid == bench_id and (tp, pp) == (tp_b, pp_b):
            continue  # the measured row above is this candidate
        conc, pred = predicted_capacity(curves[cid], slo["ttft_p99_ms"], slo["itl_p99_ms"])
        if pred <= 0:
            continue
        row: dict[str, Any] = {
            "candidate": cid if cid != bench_id else f"{cid}/tp{tp}" + (f"-pp{pp}" if pp > 1 else ""),
            "gpu": e["gpu"],
            "weights": e["weights"],
            "kv": e["kv"],
            "tp": e["tp"],
            "basis": "roofline",
            "pp": pp,
            "roofline_concurrency_at_slo": round(conc, 2),
        }
        if bench_pred is None:
            row.update(usable_rps=None, usable_rps_source=None, note=f"not estimated: {why_not}")
            rows.append(row)
            continue
        row["usable_rps_source"] = (
            f"measured {measured:g} x roofline {pred:.4g} / {bench_pred:.4g} req/s at the SLO (memory stage curves)"
            + scale_note
        )
        rows.append(_price_row(row, e["gpu"], tp, pp, measured * pred / bench_pred, demand, fleet_tier, pr))
    for r in rows:  # the keys of engine_candidates' rows: no band, no length match on this path
        measured_row = r["basis"] == "measured"
        priced = "monthly_usd" in r
        r.setdefault("pp", pp_b if measured_row else 1)
        r.update(interval=None, length_match=None)
        r["eligible"] = measured_row and priced
        r["eligible_why"] = (
            "measured curve"
            if r["eligible"]
            else "no price for its GPU on the comparison's basis"
            if measured_row
            else "roofline estimate (measured x roofline ratio; the curve stage wrote no engine-model curves): "
            "never chosen"
        )
    return sorted(rows, key=lambda r: r["candidate"])


def compared_gpus(pr: Pricing, fleet_json: dict[str, Any], op: dict[str, Any]) -> list[str]:
    """The GPUs a price comparison covers: every candidate that fits and meets the SLO (or has a usable RPS on its
    engine-model curve), the plan's and the benchmarked ones."""
    gpus = {e["gpu"] for e in (pr.memory.get("candidates") or {}).values() if e.get("fits") and e.get("meets_slo")}
    gpus |= {
        e["gpu"]
        for e in (op.get("candidates") or {}).values()
        if isinstance(e, dict) and e.get("gpu") and finite_positive(e.get("usable_rps"))
    }
    gpus |= {t["gpu"] for t in (fleet_json.get("per_tier") or {}).values()}
    gpus |= {t["gpu"] for t in (fleet_json.get("routed") or {}).values()}
    for m in [
        op.get("manifest") or {},
        *((t or {}).get("manifest") or {} for t in (op.get("per_tier") or {}).values()),
    ]:
        if m.get("gpu"):
            gpus.add(m["gpu"])
    return sorted(gpus)
