"""Step 12: total cost of ownership, utilization and cost per million tokens (method.md step 12).

cost per hour = GPUs x $/GPU-hour; a month is 730 h, a year 8760 h. utilization = average rate /
(instances x usable RPS per instance). cost per 1M output tokens = cost per hour / (output tokens
per hour / 1e6), at the planned utilization (the capacity the plan assumes is used) and at the
measured one (the traffic the log really brings): 40% utilization costs 2x what 80% does.
Prices in data/catalog/prices.csv are dated, sourced and illustrative; params may override them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline import io, tco_choice  # io.rounded only: this module reads and writes no file
from pipeline.catalog import PRICE_COLUMNS as PRICE_COLUMNS  # the price catalog lives in catalog; names kept here
from pipeline.catalog import PRICES_CSV as PRICES_CSV
from pipeline.catalog import Price
from pipeline.catalog import load_prices as load_prices  # tco.load_prices: the name kept for callers
from pipeline.errors import InputError

HOURS_PER_MONTH = 730
HOURS_PER_YEAR = 8760


def price_for(gpu: str, prices: list[Price], pricing: str = "on-demand", provider: str | None = None) -> Price | None:
    """The price of one GPU: the named provider's, else the lowest of that pricing kind; None when none is listed."""
    pool = [p for p in prices if p.gpu == gpu and p.pricing == pricing and (provider is None or p.provider == provider)]
    return min(pool, key=lambda p: (p.usd_per_gpu_hour, p.provider)) if pool else None


CHEAPEST_RULE = (
    "the cheapest provider that lists every compared GPU (lowest sum of their {pricing} $/GPU-hour, then the name); "
    "compared GPUs: those of every candidate that fits and meets the SLO, and of the plan, that any provider lists"
)
NO_LIKE_FOR_LIKE = (
    "no provider lists every compared GPU ({gpus}): each GPU takes its lowest {pricing} price from whichever provider "
    "lists it, so the comparison is NOT like-for-like (set tco.provider, or tco.prices for the missing GPUs)"
)


def price_basis(gpus: list[str], prices: list[Price], pricing: str, provider: str | None) -> dict[str, Any]:
    """Which provider's list prices every candidate is compared on, so no Lambda H100 meets an AWS H200.

    `provider` (params tco.provider) names one. None: the cheapest provider that lists every compared
    GPU (the given GPUs that any provider lists at `pricing`), by the sum of their $/GPU-hour. When no
    provider lists them all there is no like-for-like price: each GPU takes its lowest listed price,
    flagged `like_for_like: false`. GPUs no provider lists stay unpriced (tco.prices) either way.
    """
    table: dict[str, dict[str, float]] = {}
    for x in prices:
        if x.pricing == pricing:
            row = table.setdefault(x.provider, {})
            row[x.gpu] = min(row.get(x.gpu, float("inf")), x.usd_per_gpu_hour)
    listed = {g for row in table.values() for g in row}
    compared = sorted({g for g in gpus if g in listed})
    out: dict[str, Any] = {
        "pricing": pricing,
        "compared_gpus": compared,
        "not_listed": sorted({g for g in gpus if g not in listed}),
    }
    if provider is not None:
        if provider not in table:
            raise InputError(
                f"params.yaml: tco.provider = {provider!r} lists no {pricing} price in data/catalog/prices.csv; "
                f"providers with {pricing} prices: {', '.join(sorted(table)) or '(none)'}"
            )
        missing = [g for g in compared if g not in table[provider]]
        return {
            **out,
            "provider": provider,
            "like_for_like": True,
            "rule": f"params tco.provider: {provider}'s {pricing} prices only"
            + (f"; it does not list {', '.join(missing)} (unpriced: set tco.prices)" if missing else ""),
            "unpriced_by_provider": missing,
        }
    full = {n: sum(row[g] for g in compared) for n, row in table.items() if all(g in row for g in compared)}
    if compared and full:
        name = min(full, key=lambda n: (full[n], n))
        return {
            **out,
            "provider": name,
            "like_for_like": True,
            "rule": CHEAPEST_RULE.format(pricing=pricing),
            "listing_every_compared_gpu": {n: round(v, 4) for n, v in sorted(full.items())},
            "unpriced_by_provider": [],
        }
    return {
        **out,
        "provider": None,
        "like_for_like": False,
        "rule": NO_LIKE_FOR_LIKE.format(gpus=", ".join(compared) or "none listed", pricing=pricing),
        "listing_every_compared_gpu": {},
        "unpriced_by_provider": [],
    }


def lookup(gpu: str, prices: list[Price], p: dict[str, Any], basis: dict[str, Any] | None) -> dict[str, Any]:
    """One GPU's $/GPU-hour on the comparison's basis: a tco.prices override, else the basis provider's list price.

    Returns usd_per_gpu_hour (None when unpriced), price_source, like_for_like and, when unpriced, a note.
    """
    override = (p["prices"] or {}).get(gpu)
    if override is not None:
        return {"usd_per_gpu_hour": float(override), "price_source": "params tco.prices", "like_for_like": True}
    provider = (basis or {}).get("provider") if basis is not None else p["provider"]
    price = price_for(gpu, prices, p["pricing"], provider)
    like = bool((basis or {}).get("like_for_like", provider is not None))
    if price is None:
        where = f"{provider} lists no {p['pricing']} price" if provider else f"no {p['pricing']} price"
        return {
            "usd_per_gpu_hour": None,
            "price_source": None,
            "like_for_like": like,
            "note": f"{where} for {gpu} in data/catalog/prices.csv: set tco.prices.{gpu}",
        }
    src = f"{price.provider} {price.instance} ({price.as_of}): {price.source}"
    if not like:
        src += " [lowest listed price of any provider: not like-for-like]"
    return {"usd_per_gpu_hour": price.usd_per_gpu_hour, "price_source": src, "like_for_like": like}


@dataclass(frozen=True)
class Cost:
    """The cost of one plan and what a million tokens costs at planned and measured utilization."""

    gpus: int
    usd_per_gpu_hour: float
    usd_per_hour: float
    monthly_usd: float
    annual_usd: float
    utilization: float
    planned_utilization: float
    usd_per_million_output_tokens: float
    usd_per_million_output_tokens_planned: float
    usd_per_million_input_tokens: float
    utilization_trap: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost(
    gpus: int,
    usd_per_gpu_hour: float,
    instances: int,
    usable_rps: float,
    average_rps: float,
    mean_output_tokens: float,
    mean_input_tokens: float,
    planned_utilization: float = 0.8,
    trap_below: float = 0.4,
) -> Cost:
    """Cost per hour/month/year, utilization and cost per 1M tokens (method.md step 12)."""
    per_hour = gpus * usd_per_gpu_hour
    capacity_rps = instances * usable_rps
    util = average_rps / capacity_rps if capacity_rps > 0 else 0.0
    out_per_hour = average_rps * mean_output_tokens * 3600
    in_per_hour = average_rps * mean_input_tokens * 3600
    planned_out = capacity_rps * planned_utilization * mean_output_tokens * 3600
    return Cost(
        gpus,
        usd_per_gpu_hour,
        per_hour,
        per_hour * HOURS_PER_MONTH,
        per_hour * HOURS_PER_YEAR,
        util,
        planned_utilization,
        per_hour / (out_per_hour / 1e6) if out_per_hour else float("inf"),
        per_hour / (planned_out / 1e6) if planned_out else float("inf"),
        per_hour / (in_per_hour / 1e6) if in_per_hour else float("inf"),
        round(util, 9) < trap_below,
    )


def cheapest(plans: dict[str, float]) -> dict[str, Any]:
    """The cheapest plan (by $/month) among those that meet the SLO, and by how much it beats the runner-up."""
    if not plans:
        raise InputError("no candidate meets the SLO: nothing to price")
    ranked = sorted(plans.items(), key=lambda kv: (kv[1], kv[0]))
    best, best_usd = ranked[0]
    out: dict[str, Any] = {
        "chosen": best,
        "monthly_usd": best_usd,
        "runner_up": None,
        "saves_usd_per_month": None,
        "saves_share": None,
    }
    if len(ranked) > 1:
        name, usd = ranked[1]
        out.update(
            runner_up=name, saves_usd_per_month=usd - best_usd, saves_share=(usd - best_usd) / usd if usd else None
        )
    return out


SECTIONS = ("tco", "fleet", "slo")


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


def interval_cost(
    interval: dict[str, Any] | None,
    usd_per_gpu_hour: float | None,
    tp: int,
    pp: int,
    demand: dict[str, Any],
    fleet_tier: dict[str, Any],
    fleet_p: dict[str, Any],
) -> dict[str, Any] | None:
    """The cost interval of one candidate: its 80% band of usable RPS through the same fleet sizing (step 11).

    monthly_usd_lo is the fleet sized at usable_rps_hi (fewer instances), monthly_usd_hi at usable_rps_lo;
    None when the curve has no band. A band edge <= 0 (the low end never meets the SLO) prices as None.
    """
    from pipeline import fleet

    if not interval or interval.get("usable_rps_lo") is None or interval.get("usable_rps_hi") is None:
        return None
    lo, hi = float(interval["usable_rps_lo"]), float(interval["usable_rps_hi"])
    out: dict[str, Any] = {"usable_rps_lo": round(lo, 4), "usable_rps_hi": round(hi, 4)}
    for key, rps in (("monthly_usd_lo", hi), ("monthly_usd_hi", lo)):
        if usd_per_gpu_hour is None or not (math.isfinite(rps) and rps > 0):
            out[key] = None
            continue
        size = fleet.size(
            demand["rps"]["sizing_rate"],
            rps,
            tp,
            pp,
            fleet_p["safety_factor"],
            fleet_tier["headroom"],
            fleet_tier["spares"],
        )
        out[key] = round(size.gpus * usd_per_gpu_hour * HOURS_PER_MONTH, 2)
    return out


def _finite_positive(x: Any) -> bool:
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
        if not _finite_positive(usable):
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
        if isinstance(e, dict) and e.get("gpu") and _finite_positive(e.get("usable_rps"))
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


class NoSweepError(InputError):
    """No candidate of a fleet has a measured or calibrated curve (no sweep) and tco.allow_transferred is false.

    `candidates`: the rows to benchmark first (`benchmark_first`); `document`: a metrics/tco.json-shaped dict
    (no plan; `per_candidate` every row, `benchmark_next` those first), for the benchmark plan writer
    (pipeline/bench_plan_io reads those two keys). Nothing is written when it is raised.
    """

    def __init__(
        self, message: str, candidates: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.candidates = candidates
        self.document: dict[str, Any] = {
            "plan": None,
            "chosen": None,
            "chosen_candidates": {},
            "per_candidate": rows or [],
            "per_tier_candidates": {},
            "benchmark_next": candidates,
            "stopped": message,
        }


FIRST_KEYS = (
    "candidate",
    "gpu",
    "weights",
    "kv",
    "tp",
    "pp",
    "basis",
    "usable_rps",
    "c_max",
    "monthly_usd",
    "interval",
)


def benchmark_first(rows: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """With no measured or calibrated curve: the `n` candidates to benchmark first.

    Those with a usable RPS on their curve, priced ones first by their point monthly cost, then the
    stronger basis (transferred before roofline), then the name. Each: FIRST_KEYS plus `tier`.
    """
    usable = [r for r in rows if _finite_positive(r.get("usable_rps"))]
    ranked = sorted(
        usable,
        key=lambda r: (
            r.get("monthly_usd") is None,
            r.get("monthly_usd") or 0.0,
            tco_choice.BASES.index(r["basis"]) if r.get("basis") in tco_choice.BASES else 9,
            r["candidate"],
        ),
    )
    return [{"tier": r["candidate"].split("/", 1)[0], **{k: r.get(k) for k in FIRST_KEYS}} for r in ranked[:n]]


def choose(rows: list[dict[str, Any]], tier_name: str, allow_transferred: bool) -> dict[str, Any]:
    """The cheapest eligible candidate of one fleet (`cheapest`), or one clear line saying why there is none.

    Eligible: a measured or calibrated curve (transferred too when `allow_transferred`) and a price.
    No measured or calibrated curve at all (no sweep): NoSweepError naming what to benchmark first.
    """
    priced = {r["candidate"]: r["monthly_usd"] for r in rows if r.get("eligible") and "monthly_usd" in r}
    if priced:
        return cheapest(priced)
    swept = sorted(
        (r for r in rows if r.get("basis") in tco_choice.CHOOSABLE),
        key=lambda r: (tco_choice.BASES.index(r["basis"]), r["candidate"]),
    )
    if swept:
        r = swept[0]
        raise InputError(f"the benchmarked deployment {r['candidate']} cannot be priced: {r.get('note')}")
    first = benchmark_first(rows)
    names = ", ".join(
        f"{r['candidate']} ({r['basis']}"
        + (f", about USD {r['monthly_usd']:,.0f} a month" if r.get("monthly_usd") is not None else "")
        + ")"
        for r in first
    )
    where = "metrics/operating_point.json: candidates"
    if allow_transferred:
        raise InputError(
            f"{where}: no candidate of fleet {tier_name} has a measured, calibrated or transferred curve with a "
            f"usable RPS and a price ({len(rows)} candidates); expected at least one (benchmark {names or 'one'})"
        )
    raise NoSweepError(
        f"{where}: no measured or calibrated curve for any candidate of fleet {tier_name} (no benchmark sweep of "
        f"its deployments); expected a sweep: benchmark {names or 'a candidate'} first (`sizing bench-plan` writes "
        "their traces and commands), or set tco.allow_transferred: true to price on transferred curves",
        first,
        rows,
    )


def plan(pr: Pricing, op: dict[str, Any], fleet_json: dict[str, Any], tiers_json: dict[str, Any]) -> dict[str, Any]:
    """metrics/tco.json: every candidate fleet-sized and priced on its own curve; the cheapest eligible one chosen.

    With the curve stage's `candidates` (step 7b), every candidate's usable RPS, basis and band come
    from its engine-model curve; the chosen plan must be measured or calibrated (transferred too with
    tco.allow_transferred). Without them (an older operating point) the benchmarked deployment is
    measured and the others roofline estimates, never chosen. Every price comes from one provider
    (`price_basis`: tco.provider, else the cheapest that lists every compared GPU), or the
    comparison says it is not like-for-like.
    """
    if pr.basis is None:
        pr = replace(
            pr, basis=price_basis(compared_gpus(pr, fleet_json, op), pr.prices, pr.p["pricing"], pr.p["provider"])
        )
    assert pr.basis is not None
    allow = bool(pr.p.get("allow_transferred", False))
    rows = tier_rows("all", op, op, tiers_json["pooled"], fleet_json["pooled"], pr)
    pick = choose(rows, "all", allow)
    chosen = next(r for r in rows if r["candidate"] == pick["chosen"])
    basis = pr.basis
    pooled = {
        "per_candidate": rows,
        "allow_transferred": allow,
        "benchmark_next": [],  # against the adopted plan's cost, below
        "benchmark_next_rule": tco_choice.ASSUMPTION,
        "formula": "$/h = GPUs x $/GPU-h; month = 730 h, year = 8760 h; utilization = mean rate / (instances x usable RPS); "
        "$/1M output tokens = $/h / (mean rate x mean output tokens x 3600 / 1e6); cost interval: the fleet sized at the "
        "high and the low end of the usable-RPS band",
        "prices_note": "list prices from data/catalog/prices.csv are dated and illustrative: re-check before a budget decision",
        "price_basis": basis,
        "price_provider": basis["provider"],
        "like_for_like": basis["like_for_like"],
    }
    pooled["per_tier_candidates"] = tier_candidates(op, fleet_json, tiers_json, pr)
    out = with_tiers(pooled, chosen, fleet_json, tiers_json, pr.p, pr.prices, basis, pick=pick, op=op)
    # what to benchmark next: any one deployment serving all traffic against the adopted plan's monthly cost
    out["benchmark_next"] = benchmark_next(rows, out["monthly_usd"], exclude=set(out["chosen_candidates"].values()))
    out["benchmark_next_reference"] = {"plan": out["plan"], "monthly_usd": out["monthly_usd"]}
    return out


def _usable(op: dict[str, Any], where: str = "usable_rps") -> float:
    """The operating point's usable RPS as a float; a missing or non-numeric one is a clear error."""
    value = op.get("usable_rps")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"metrics/operating_point.json {where} = {value!r}; expected the usable RPS per instance (run dvc repro)"
        ) from None


def tier_candidates(
    op: dict[str, Any], fleet_json: dict[str, Any], tiers_json: dict[str, Any], pr: Pricing
) -> dict[str, Any]:
    """Steps 4-12 per tier: each routing tier's candidates priced like the pooled ones, and what to benchmark next.

    Per tier: `candidates`, `measured` (the measured candidate, or None), `cheapest_eligible` (the one the
    tier could be served by: the reference of its `benchmark_next`, or None) and `benchmark_next`.
    """
    out: dict[str, Any] = {}
    allow = bool(pr.p.get("allow_transferred", False))
    for name, t in sorted((fleet_json.get("routed") or {}).items()):
        t_op = (op.get("per_tier") or {}).get(name) or {}
        try:
            rows = tier_rows(name, t_op, op, tiers_json["tiers"][name], t, pr)
        except (InputError, KeyError) as exc:
            out[name] = {"error": str(exc).strip("'")}
            continue
        measured = next((r for r in rows if r["basis"] == "measured" and "monthly_usd" in r), None)
        pool = {r["candidate"]: r["monthly_usd"] for r in rows if r.get("eligible") and "monthly_usd" in r}
        best = cheapest(pool)["chosen"] if pool else None
        ref = next((r for r in rows if r["candidate"] == best), None)
        out[name] = {
            "candidates": rows,
            "measured": measured["candidate"] if measured else None,
            "cheapest_eligible": best,
            "benchmark_next": benchmark_next(rows, ref["monthly_usd"], exclude={best}) if ref else [],
        }
        if not pool:
            out[name]["note"] = (
                f"no candidate of tier {name} may be chosen (measured or calibrated"
                + (" or transferred" if allow else "")
                + " with a price): nothing to compare against"
            )
    return out


def benchmark_next(
    rows: list[dict[str, Any]], reference_usd: float, n: int = 3, exclude: set[str] | None = None
) -> list[dict[str, Any]]:
    """The `n` unmeasured candidates most worth benchmarking against the reference (chosen) plan's $/month.

    Ranked by score = expected saving x P(beats the chosen plan), from each candidate's cost interval
    under a log-normal fitted to its 80% band (tco_choice.ASSUMPTION); a candidate without a band
    follows, cheapest first, when its point cost beats the reference.
    """
    return tco_choice.rank(rows, reference_usd, exclude or set(), n)


def price_fleet(
    t: dict[str, Any],
    d: dict[str, Any],
    p: dict[str, Any],
    prices: list[Price],
    basis: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One fleet of metrics/fleet.json priced: $/h, month, year, utilization, $/1M tokens, with and without its schedule.

    `basis`: the comparison's provider (price_basis); None: params tco.provider, else the lowest listed price.
    A fleet without a schedule (a log under an hour) has monthly_usd_with_schedule None and a schedule_note.
    """
    price = lookup(t["gpu"], prices, p, basis)
    usd = price["usd_per_gpu_hour"]
    row: dict[str, Any] = {
        "tier": t["tier"],
        "role": t["role"],
        "model": t["model"],
        "gpu": t["gpu"],
        "weights": t["weight_dtype"],
        "kv": t["kv_dtype"],
        "tp": t["tp"],
        "instances": t["total_instances"],
        "gpus": t["gpus"],
        "usable_rps": t["usable_rps"],
        "mean_rps": d["rps"]["mean"],
        "usd_per_gpu_hour": usd,
        "price_source": price["price_source"],
        "like_for_like": price["like_for_like"],
    }
    if usd is None:
        row["note"] = price["note"]
        return row
    c = cost(
        t["gpus"],
        usd,
        t["total_instances"],
        t["usable_rps"],
        d["rps"]["mean"],
        d["output_tokens"]["mean"],
        d["input_tokens"]["mean"],
        p["planned_utilization"],
        p["utilization_trap_below"],
    )
    row.update(io.rounded({k: v for k, v in c.as_dict().items() if k not in ("gpus", "usd_per_gpu_hour")}))
    sched = t.get("schedule")
    if sched is None:
        row["monthly_usd_with_schedule"] = None
        row["schedule_note"] = t.get("schedule_note") or "no scaling schedule for this fleet"
        return row
    row["monthly_usd_with_schedule"] = round(
        sched["instance_hours_per_day"] / 24 * t["gpus_per_instance"] * usd * HOURS_PER_MONTH, 2
    )
    if t.get("schedule_note"):
        row["schedule_note"] = t["schedule_note"]
    return row


def blend(rows: list[dict[str, Any]], delivered: dict[str, Any], p: dict[str, Any]) -> dict[str, Any] | None:
    """A plan of several fleets as one: summed cost, pooled utilization, and $/1M of the tokens users receive.

    utilization = sum of mean rates / sum of capacities (instances x usable RPS); $/1M output tokens =
    total $/h / (the whole log's mean rate x mean output tokens x 3600 / 1e6): a cascade's reruns cost
    GPUs but deliver no extra tokens. At planned utilization: that x utilization / planned.
    """
    if not rows or any("monthly_usd" not in r for r in rows):
        return None
    per_hour = sum(r["usd_per_hour"] for r in rows)
    capacity = sum(r["instances"] * r["usable_rps"] for r in rows)
    util = sum(r["mean_rps"] for r in rows) / capacity if capacity else 0.0
    out_per_hour = delivered["rps"]["mean"] * delivered["output_tokens"]["mean"] * 3600
    in_per_hour = delivered["rps"]["mean"] * delivered["input_tokens"]["mean"] * 3600
    per_m = per_hour / (out_per_hour / 1e6) if out_per_hour else float("inf")
    return io.rounded(
        {
            "gpus": sum(r["gpus"] for r in rows),
            "usd_per_hour": per_hour,
            "monthly_usd": per_hour * HOURS_PER_MONTH,
            "annual_usd": per_hour * HOURS_PER_YEAR,
            "monthly_usd_with_schedule": None
            if any(r.get("monthly_usd_with_schedule") is None for r in rows)
            else sum(r["monthly_usd_with_schedule"] for r in rows),
            "schedule_note": "; ".join(sorted({r["schedule_note"] for r in rows if r.get("schedule_note")})) or None,
            "utilization": util,
            "planned_utilization": p["planned_utilization"],
            "usd_per_million_output_tokens": per_m,
            "usd_per_million_output_tokens_planned": per_m * util / p["planned_utilization"],
            "usd_per_million_input_tokens": per_hour / (in_per_hour / 1e6) if in_per_hour else float("inf"),
            "utilization_trap": round(util, 9) < p["utilization_trap_below"],
        }
    )


def _same_deployment(row: dict[str, Any], t: dict[str, Any]) -> bool:
    """Is candidate `row` (tco) the deployment the fleet stage sized as fleet `t` (fleet.json)?"""
    return (row.get("gpu"), row.get("weights"), row.get("kv"), int(row.get("tp") or 0), int(row.get("pp") or 1)) == (
        t.get("gpu"),
        t.get("weight_dtype"),
        t.get("kv_dtype"),
        int(t.get("tp") or 0),
        int(t.get("pp") or 1),
    )


def _pooled_fleet(
    chosen: dict[str, Any],
    t: dict[str, Any],
    demand: dict[str, Any],
    p: dict[str, Any],
    prices: list[Price],
    basis: dict[str, Any] | None,
) -> dict[str, Any]:
    """The pooled plan's one fleet: fleet.json's when the chosen candidate is the deployment it sized, else the
    chosen candidate's own sizing (tco per_candidate), saying that the fleet stage sized another deployment."""
    if not chosen.get("gpu") or _same_deployment(chosen, t):
        return {**price_fleet(t, demand, p, prices, basis), "candidate": chosen["candidate"]}
    keep = [k for k in chosen if k not in ("eligible", "eligible_why", "length_match", "interval", "note")]
    row = {
        "tier": t["tier"],
        "role": t["role"],
        "model": t["model"],
        **{k: chosen[k] for k in keep},
        "mean_rps": demand["rps"]["mean"],
    }
    row["fleet_note"] = (
        f"fleet.json sized {t['gpu']} w-{t['weight_dtype']}/kv-{t['kv_dtype']} TP{t['tp']}; the cheapest eligible "
        f"candidate is {chosen['candidate']} ({chosen.get('basis')}), priced here on its own curve (fleet.json's "
        "guardrails, schedule and replay are of the deployment it sized)"
    )
    return row


def _plan_basis(
    out: dict[str, Any], fleet_json: dict[str, Any], op: dict[str, Any] | None
) -> tuple[dict[str, str], dict[str, str | None]]:
    """(candidate id per tier, basis per tier) of the adopted plan (out: with_tiers' document so far)."""
    ids: dict[str, str] = {}
    bases: dict[str, str | None] = {}
    if out["plan"] == "pooled":
        row = next((r for r in out.get("per_candidate") or [] if r["candidate"] == out["pooled"]["candidate"]), {})
        ids["all"] = out["pooled"]["candidate"]
        bases["all"] = row.get("basis", "measured")
        return ids, bases
    for name, t in sorted((fleet_json.get("routed") or {}).items()):
        rows = ((out.get("per_tier_candidates") or {}).get(name) or {}).get("candidates") or []
        row = next((r for r in rows if _same_deployment(r, t)), None)
        t_op = ((op or {}).get("per_tier") or {}).get(name) or {}
        ids[name] = row["candidate"] if row else f"{name}/{t['gpu']}/w-{t['weight_dtype']}/kv-{t['kv_dtype']}"
        # the fleet stage sizes a tier on op.per_tier[t].usable_rps: its sizing_basis (measured before issue 14)
        bases[name] = t_op.get("sizing_basis") or (row or {}).get("basis") or "measured"
    return ids, bases


def with_tiers(
    pooled: dict[str, Any],
    chosen: dict[str, Any],
    fleet_json: dict[str, Any],
    tiers_json: dict[str, Any],
    p: dict[str, Any],
    prices: list[Price],
    basis: dict[str, Any] | None = None,
    pick: dict[str, Any] | None = None,
    op: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Price every fleet of the routed plan, compare it with the pooled plan, and report the adopted plan's totals.

    The pooled plan is the cheapest eligible candidate (per_candidate; `pick`: tco.cheapest's verdict).
    When the fleet stage adopted routing (or a cascade), the adopted plan is the routed one, blended
    over its tiers, unless a tier's basis may not be chosen (transferred without tco.allow_transferred,
    or roofline). The top-level figures are computed once, from `totals` of the adopted plan; `chosen`
    is the plan id (`pooled`, `routed`, `cascade`) and `chosen_candidates` the deployment per tier.
    """
    allow = bool(p.get("allow_transferred", False))
    demands = {"all": tiers_json["pooled"], **tiers_json["tiers"]}
    routed_rows = [
        price_fleet(t, demands[n], p, prices, basis) for n, t in sorted((fleet_json.get("routed") or {}).items())
    ]
    routed = (
        blend(routed_rows, tiers_json["pooled"], p) if routed_rows and not fleet_json["routing"]["unsized"] else None
    )
    comparison: dict[str, Any] = {
        "adopted": fleet_json["plan"],
        "why": fleet_json["routing"]["why"],
        "pooled_monthly_usd": chosen["monthly_usd"],
        "pooled_usd_per_million_output_tokens": chosen["usd_per_million_output_tokens"],
        "routed_monthly_usd": routed["monthly_usd"] if routed else None,
        "blended_usd_per_million_output_tokens": routed["usd_per_million_output_tokens"] if routed else None,
        "routing_saves_usd_per_month": round(chosen["monthly_usd"] - routed["monthly_usd"], 2) if routed else None,
        "routing_saves_share": round(1 - routed["monthly_usd"] / chosen["monthly_usd"], 4)
        if routed and chosen["monthly_usd"]
        else None,
    }
    if routed is None:
        comparison["verdict"] = "routing not costed: " + (
            "; ".join(f"{k}: {v}" for k, v in sorted(fleet_json["routing"]["unsized"].items()))
            or "the workload has no tiers to route"
        )
    else:
        cheaper = routed["monthly_usd"] < chosen["monthly_usd"]
        comparison["cheaper"] = cheaper
        saving = abs(comparison["routing_saves_share"] or 0.0)
        comparison["verdict"] = (
            f"routing {'saves' if cheaper else 'costs'} {saving:.0%} a month against one pooled fleet "
            f"(USD {routed['monthly_usd']:,.0f} vs {chosen['monthly_usd']:,.0f})"
            + (
                ""
                if cheaper or not fleet_json["routing"]["adopted"]
                else ": the rules chose routing, the cost does not"
            )
        )
    out = dict(pooled)
    out["pooled"] = {k: chosen[k] for k in ("candidate", "gpus", "monthly_usd", "annual_usd", "utilization")}
    out["routing"] = comparison
    use_routed = fleet_json["plan"] != "pooled" and routed is not None
    if use_routed:
        out["plan"] = fleet_json["plan"]
        _, bases = _plan_basis(out, fleet_json, op)
        barred = {n: b for n, b in bases.items() if not tco_choice.eligibility(b or "roofline", True, 1.0, allow)[0]}
        if barred:
            use_routed = False
            comparison["verdict"] += (
                "; not adopted: "
                + ", ".join(f"tier {n} is sized on a {b} curve" for n, b in sorted(barred.items()))
                + (" (tco.allow_transferred is false)" if not allow else "")
            )
    if use_routed:
        out["per_tier"] = {r["tier"]: r for r in routed_rows}
        out["plan"] = fleet_json["plan"]
        out["totals"] = routed
        runner_up, saves = chosen["candidate"], comparison["routing_saves_usd_per_month"]
    else:
        t = (fleet_json.get("per_tier") or {}).get("all") or fleet_json["pooled"]
        out["per_tier"] = {"all": _pooled_fleet(chosen, t, tiers_json["pooled"], p, prices, basis)}
        out["plan"] = "pooled"
        out["totals"] = blend(list(out["per_tier"].values()), tiers_json["pooled"], p)
        runner_up = (pick or {}).get("runner_up")
        saves = (pick or {}).get("saves_usd_per_month")
        saves = round(saves, 2) if saves is not None else None
    ids, bases = _plan_basis(out, fleet_json, op)
    for name, row in out["per_tier"].items():  # each adopted fleet names its candidate, basis and cost band
        pool = ((out.get("per_tier_candidates") or {}).get(name) or {}).get("candidates") or []
        pool = pool if name != "all" else out.get("per_candidate") or []
        match = next((r for r in pool if r["candidate"] == ids.get(name)), {})
        row.setdefault("candidate", ids.get(name))
        row["basis"] = bases.get(name)
        row["interval"] = match.get("interval")
    totals = out["totals"] or {}
    out.update(
        chosen=out["plan"],
        chosen_candidates=ids,
        chosen_basis=tco_choice.weakest([b for b in bases.values() if b]),
        allow_transferred=allow,
        monthly_usd=totals.get("monthly_usd", chosen["monthly_usd"]),
        annual_usd=totals.get("annual_usd", chosen["annual_usd"]),
        usd_per_million_output_tokens=totals.get(
            "usd_per_million_output_tokens", chosen["usd_per_million_output_tokens"]
        ),
        utilization=totals.get("utilization", chosen["utilization"]),
        utilization_trap=totals.get("utilization_trap", chosen.get("utilization_trap", False)),
        runner_up=runner_up,
        saves_usd_per_month=saves,
    )
    return out
