"""Step 11: fleet size, headroom and spares, the scaling schedule, cold start and gateway guardrails.

method.md step 11: instances = ceil(peak rate / usable RPS per instance); with safety factor s,
ceil(instances x s); GPUs = that x TP x PP (worked check: 120 / 12 = 10 x 1.3 = 13 x TP4 = 52).
Headroom = max(expected growth, burst absorption); N+1 (N+2 when critical) spare instances.
Schedule per hour of day from the diurnal curve, never below a minimum warm count, never zero;
cold start = weight bytes / load bandwidth + engine init. Guardrails: max_input_tokens = factor x
p95 input; circuit breaker at factor x (TTFT SLO seconds x arrival rate) queued requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.contracts import FleetDoc

# GB/s (1e9 bytes) of the load paths method.md names; object store takes the middle of 0.5-1 GB/s.
LOAD_PATHS_GBS = {"nvme": 12.5, "network_10gbe": 1.1, "object_store": 0.75}


@dataclass(frozen=True)
class FleetSize:
    """The fleet arithmetic for one tier, every intermediate kept so a report can show the chain."""

    peak_rps: float
    usable_rps: float
    tp: int
    pp: int
    safety: float
    headroom: float
    instances: int
    instances_with_safety: int
    instances_with_headroom: int
    spares: int
    total_instances: int
    gpus_per_instance: int
    gpus: int
    formula: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def size(
    peak_rps: float,
    usable_rps: float,
    tp: int,
    pp: int = 1,
    safety: float = 1.2,
    headroom: float = 0.0,
    spares: int = 0,
) -> FleetSize:
    """instances = ceil(peak / usable); x safety, ceil; x (1 + headroom), ceil; + spares; GPUs = x TP x PP."""
    for name, value in (("peak RPS", peak_rps), ("usable RPS per instance", usable_rps), ("safety", safety)):
        if not math.isfinite(value):
            raise ValueError(f"{name} = {value!r}; expected a finite number (not NaN or infinity)")
    if not math.isfinite(headroom):
        raise ValueError(f"headroom = {headroom!r}; expected a finite number (not NaN or infinity)")
    if usable_rps <= 0:
        raise ValueError("usable RPS per instance must be > 0")
    if peak_rps < 0 or safety < 1 or headroom < 0 or spares < 0 or tp < 1 or pp < 1:
        raise ValueError("expected peak >= 0, safety >= 1, headroom >= 0, spares >= 0, TP and PP >= 1")
    ratio = peak_rps / usable_rps
    if not math.isfinite(ratio * safety * (1 + headroom)) or ratio * safety * (1 + headroom) > 1e9:
        raise ValueError(
            f"peak {peak_rps:g} / usable {usable_rps:g} RPS = {ratio:.3g} instances: expected a usable RPS per "
            "instance within a billion times the peak (check the units)"
        )
    base = math.ceil(_clean(ratio))
    with_safety = math.ceil(_clean(base * safety))
    with_headroom = math.ceil(_clean(with_safety * (1 + headroom)))
    total = with_headroom + spares
    per = tp * pp
    formula = (
        f"ceil({peak_rps:g} peak RPS / {usable_rps:g} usable) = {base}; ceil({base} x safety {safety:g}) = {with_safety}; "
        f"ceil({with_safety} x (1 + headroom {headroom:.4g})) = {with_headroom}; + {spares} spare = {total} instances "
        f"x TP{tp} x PP{pp} = {total * per} GPUs"
    )
    return FleetSize(
        peak_rps,
        usable_rps,
        tp,
        pp,
        safety,
        headroom,
        base,
        with_safety,
        with_headroom,
        spares,
        total,
        per,
        total * per,
        formula,
    )


def _clean(x: float) -> float:
    """Round away float noise before a ceil (10 x 1.3 must be 13, not 13.000000000000002 -> 14)."""
    return round(x, 9)


def headroom(expected_growth: float, burst_absorption: float) -> float:
    """method.md: headroom = max(expected growth, burst absorption)."""
    return max(expected_growth, burst_absorption)


def spare_instances(critical: bool, failure_domains: int = 1) -> int:
    """N+1 spare instances per failure domain, N+2 when the tier is critical."""
    return (2 if critical else 1) * failure_domains


def cold_start_s(weight_bytes: float, load_path: str, init_s: float) -> float:
    """Seconds from an empty GPU to serving: weight bytes / load-path bandwidth + engine init."""
    try:
        bw = LOAD_PATHS_GBS[load_path]
    except KeyError as exc:
        raise ValueError(f"unknown load path {load_path!r}; expected one of {', '.join(LOAD_PATHS_GBS)}") from exc
    return weight_bytes / (bw * 1e9) + init_s


HOURS_OF_DAY = tuple(f"{h:02d}" for h in range(24))
MIN_SCHEDULE_SPAN_S = 3600.0
FILL_RULE = (
    "each hour of day the log does not cover is billed at the mean instance count of the hours it covers "
    "(instance-hours a day = observed instance-hours / observed hours x 24)"
)


def schedule(
    hourly_rps: dict[str, float],
    usable_rps: float,
    safety: float,
    min_warm: int,
    cold_start: float,
    spares: int = 0,
    static_instances: int | None = None,
    observed_hours: list[str] | None = None,
) -> dict[str, Any]:
    """Instances per hour of day: ceil(rate x safety / usable), at least `min_warm`, never zero, plus spares.

    A new instance serves only after `cold_start` seconds, so an hour whose successor needs more
    instances starts them within its last `cold_start` seconds: it is billed for
    max(need_h, need_h+1) when the rise comes (that fraction of the hour). Savings are measured
    against a static fleet of `static_instances` all day (default: the busiest hour's count).

    `observed_hours` are the hours of day ("00"-"23") the log covers (default: the keys of
    `hourly_rps`); an observed hour missing from `hourly_rps` had no traffic (rate 0). When the
    log covers all 24 the day wraps (23 rises into 00). When it covers fewer, the hours not covered
    are billed at the observed hours' mean (FILL_RULE), never silently as zero: a day is always 24 h.
    """
    if min_warm < 1:
        raise ValueError("min_warm must be >= 1: never scale from zero")
    if not (math.isfinite(usable_rps) and usable_rps > 0):
        raise ValueError(f"usable RPS per instance must be a finite number > 0, got {usable_rps!r}")
    hours = sorted(set(observed_hours if observed_hours is not None else hourly_rps))
    unknown = [h for h in [*hours, *hourly_rps] if h not in HOURS_OF_DAY]
    if unknown:
        raise ValueError(f"hour of day {unknown[0]!r}: expected '00' to '23'")
    if not hours:
        raise ValueError("the schedule needs at least one observed hour of day")
    rates = {h: float(hourly_rps.get(h, 0.0)) for h in hours}
    need = {h: max(min_warm, math.ceil(_clean(rates[h] * safety / usable_rps))) + spares for h in hours}
    full_day = len(hours) == len(HOURS_OF_DAY)
    rows = []
    for i, h in enumerate(hours):
        nxt_hour = hours[(i + 1) % len(hours)]
        contiguous = full_day or int(nxt_hour) == int(h) + 1
        rise = max(0, need[nxt_hour] - need[h]) if contiguous else 0
        early = min(cold_start / 3600, 1.0)
        billed = need[h] + rise * early
        rows.append(
            {"hour": h, "rps": rates[h], "instances": need[h], "instance_hours": billed, "scale_up_ahead": rise}
        )
    static = static_instances if static_instances is not None else max(need.values())
    observed_sum = sum(r["instance_hours"] for r in rows)
    used = observed_sum * len(HOURS_OF_DAY) / len(hours)
    static_day = static * len(HOURS_OF_DAY)
    return {
        "hours": rows,
        "peak_instances": max(need.values()),
        "static_instances": static,
        "min_instances": min(need.values()),
        "instance_hours_per_day": used,
        "static_instance_hours_per_day": static_day,
        "savings_vs_static": 1 - used / static_day if static else 0.0,
        "cold_start_s": cold_start,
        "observed_hours": hours,
        "hours_observed": len(hours),
        "hours_filled": len(HOURS_OF_DAY) - len(hours),
        "observed_instance_hours": observed_sum,
        "fill_rule": None if full_day else FILL_RULE,
    }


def no_schedule_reason(span_s: float | None) -> str | None:
    """Why a log gives no scaling schedule (None when it gives one): under an hour covers no hour of day."""
    if span_s is None or not math.isfinite(float(span_s)):
        return "the log's span is unknown (metrics/workload.json span_s): no schedule; the static fleet is the cost"
    if float(span_s) < MIN_SCHEDULE_SPAN_S:
        return (
            f"the log covers {float(span_s):,.0f} s, under an hour: it observes no whole hour of the day, so there is "
            "no scaling schedule; the static fleet is the cost"
        )
    return None


def guardrails(
    input_p95: float, ttft_slo_ms: float, arrival_rps: float, input_factor: float, breaker_factor: float
) -> dict[str, Any]:
    """Gateway limits: max_input_tokens = factor x p95 input; breaker at factor x (TTFT SLO s x arrival rate) queued."""
    return {
        "max_input_tokens": math.ceil(input_factor * input_p95),
        "circuit_breaker_queue_depth": math.floor(breaker_factor * ttft_slo_ms / 1e3 * arrival_rps),
        "formula": f"max_input_tokens = {input_factor:g} x p95 input {input_p95:g}; queue depth = {breaker_factor:g} x "
        f"({ttft_slo_ms / 1e3:g} s TTFT SLO x {arrival_rps:g} req/s)",
    }


SECTIONS = ("fleet", "routing", "slo")


def size_demand(
    d: Any,
    op: dict[str, Any],
    p: dict[str, Any],
    slo: dict[str, Any],
    critical: bool,
    load_model: Callable[[str], Any],
    span_s: float | None = None,
    observed_hours: list[str] | None = None,
) -> dict[str, Any]:
    """One fleet (a tier, or the pooled workload) from its demand (step 3) and its operating point (step 10).

    `span_s` is the whole log's span and `observed_hours` the hours of day it covers (metrics/workload.json):
    a log under an hour gives no schedule (`schedule` None, `schedule_note` says why); a log under a
    day fills the hours it does not cover by FILL_RULE. Without them (a caller that does not know the
    log) the demand's own hours are taken as observed. `load_model(name)`: the catalog's model of that
    name (the stage reads it; this module reads no file).
    """
    from pipeline import memory
    from pipeline.errors import InputError

    manifest = op.get("manifest") or {}
    if not manifest:
        raise InputError(
            f"metrics/operating_point.json has no manifest for '{d.tier}': the fleet needs the benchmarked GPU and TP"
        )
    sizing = float(d.rps["sizing_rate"])
    burst_rate = d.rps.get(p["burst_rate"])
    burst = max(0.0, float(burst_rate) / sizing - 1) if burst_rate and sizing else 0.0
    room = headroom(p["expected_growth"], burst)
    spares = spare_instances(critical, p["failure_domains"])
    tp, pp = int(manifest["tp"]), int(manifest.get("pp", 1))
    usable = float(op["usable_rps"])
    size_ = size(sizing, usable, tp, pp, p["safety_factor"], room, spares)
    model = load_model(str(manifest["model"]))
    weight_bytes = memory.engine_weight_bytes(model, manifest["weight_dtype"])
    cold = cold_start_s(weight_bytes, p["load_path"], p["init_s"])
    note = no_schedule_reason(span_s) if span_s is not None else None
    if note is None and not (observed_hours if observed_hours is not None else d.hourly_p95_rps):
        note = "the log has no hourly rates (metrics/workload.json hourly): no schedule; the static fleet is the cost"
    sched = (
        None
        if note
        else schedule(
            d.hourly_p95_rps,
            usable,
            p["safety_factor"],
            p["min_warm_instances"],
            cold,
            spares,
            size_.total_instances,
            observed_hours,
        )
    )
    if sched is not None and sched["fill_rule"]:
        note = (
            f"the log covers {sched['hours_observed']} of 24 hours of day: {sched['fill_rule']}; "
            "profile a whole day (or a week) for a schedule that follows the diurnal curve"
        )
    curve_name = op.get("curve") or (op.get("curve_source") or {}).get("curve")
    where = "metrics/workload.json" if d.tier == "all" else f"metrics/tiers.json tiers.{d.tier}"
    return {
        **size_.as_dict(),
        "tier": d.tier,
        "role": d.role,
        "share": d.share,
        "mean_rps": d.rps["mean"],
        "gpu": manifest["gpu"],
        "model": manifest["model"],
        "weight_dtype": manifest["weight_dtype"],
        "kv_dtype": manifest["kv_dtype"],
        "critical": critical,
        "expected_growth": p["expected_growth"],
        "burst_absorption": round(burst, 4),
        "schedule": sched,
        "schedule_note": note,
        "cold_start": {
            "seconds": round(cold, 2),
            "weight_gb": round(weight_bytes / 1e9, 2),
            "load_path": p["load_path"],
            "load_gbs": LOAD_PATHS_GBS[p["load_path"]],
            "init_s": p["init_s"],
        },
        "guardrails": guardrails(
            d.input_tokens["p95"], slo["ttft_p99_ms"], sizing, p["max_input_factor"], p["circuit_breaker_factor"]
        ),
        "synthetic_curve": bool(manifest.get("synthetic", False)),
        "provenance": {
            "peak_rps": f"{where} rps.sizing_rate" + (f" ({d.source})" if d.tier != "all" else ""),
            "usable_rps": "metrics/operating_point.json "
            + ("usable_rps" if d.tier == "all" else f"per_tier.{d.tier}.usable_rps")
            + f" (curve {curve_name})",
            "tp": f"{manifest.get('file', 'the sweep manifest')}",
            "burst_absorption": f"rps.{p['burst_rate']} / rps.sizing_rate - 1 (param fleet.burst_rate)",
            "headroom": "max(fleet.expected_growth, burst absorption) (method.md step 11)",
            "spares": f"N+{2 if critical else 1} per failure domain x {p['failure_domains']} "
            "(fleet.critical, routing.critical_tiers, fleet.failure_domains)",
            "schedule": f"{where} hourly p95 rate per hour; ceil(rate x safety / usable), at least "
            "fleet.min_warm_instances, + spares; hours the log does not cover: " + FILL_RULE,
            "cold_start": "whole-model weight bytes / load-path bandwidth + fleet.init_s",
        },
    }


def gpus_by_type(tiers: dict[str, dict[str, Any]]) -> dict[str, int]:
    """GPU count per GPU model across the fleets of a plan."""
    out: dict[str, int] = {}
    for t in tiers.values():
        out[t["gpu"]] = out.get(t["gpu"], 0) + int(t["gpus"])
    return dict(sorted(out.items()))


def plan(
    workload: dict[str, Any],
    op: dict[str, Any],
    tiers_json: dict[str, Any],
    p: dict[str, Any],
    routing_p: dict[str, Any],
    slo: dict[str, Any],
    load_model: Callable[[str], Any],
) -> dict[str, Any]:
    """metrics/fleet.json: the pooled fleet, one fleet per tier where each has a curve, and which plan the guide's rules pick.

    `per_tier` holds the adopted plan: every tier's own fleet when routing is adopted (step 3 rules,
    routing.mode), else the one pooled fleet under 'all'. Both plans are kept under `pooled` and `routed`.
    """
    from pipeline import routing

    demands = {n: routing.Demand.from_dict(d) for n, d in tiers_json["tiers"].items()}
    pooled_d = routing.Demand.from_dict(tiers_json["pooled"])
    span = workload.get("span_s")
    observed = sorted(pooled_d.hourly_p95_rps)
    pooled = size_demand(pooled_d, op, p, slo, p["critical"], load_model, span, observed)
    critical = set(tiers_json.get("critical_tiers") or [])
    routed: dict[str, dict[str, Any]] = {}
    unsized: dict[str, str] = {}
    for name, d in sorted(demands.items()):
        t_op = (op.get("per_tier") or {}).get(name)
        if t_op is None:
            unsized[name] = "the curve stage gave it no operating point: run dvc repro"
        elif "error" in t_op:
            unsized[name] = t_op["error"]
        else:
            routed[name] = size_demand(d, t_op, p, slo, p["critical"] or name in critical, load_model, span, observed)
    share = float((tiers_json.get("simple_share") or {}).get("value", 0.0))
    verdict = routing.verdict(routing_p["mode"], pooled["gpus"], share, unsized, len(demands), routing_p)
    adopted = routed if verdict["adopted"] else {"all": pooled}
    kind = ("cascade" if routing_p["mode"] == "cascade" else "routed") if verdict["adopted"] else "pooled"
    synthetic = any(t["synthetic_curve"] for t in adopted.values())
    return FleetDoc(
        per_tier=adopted,
        total_gpus=sum(int(t["gpus"]) for t in adopted.values()),
        gpus_by_type=gpus_by_type(adopted),
        plan=kind,
        guardrails=pooled["guardrails"],
        routing={
            **verdict,
            "simple_share": tiers_json.get("simple_share"),
            "tiers_from": tiers_json.get("tiers_from"),
            "pooled_gpus": pooled["gpus"],
            "pooled_gpus_by_type": gpus_by_type({"all": pooled}),
            "routed_gpus": sum(int(t["gpus"]) for t in routed.values()) if routed and not unsized else None,
            "routed_gpus_by_type": gpus_by_type(routed) if routed and not unsized else None,
        },
        pooled=pooled,
        routed=routed,
        synthetic_curve=synthetic,
        schedule_rule={
            "min_span_s": MIN_SCHEDULE_SPAN_S,
            "under_min_span": "no schedule (null): the static fleet is the cost",
            "hours_not_observed": FILL_RULE,
        },
        warnings=(["a curve that sized the fleet is SYNTHETIC (sample data)"] if synthetic else [])
        + sorted({t["schedule_note"] for t in adopted.values() if t.get("schedule_note")}),
    ).to_dict()  # contracts.FleetDoc: the document's keys in order (the fleet stage adds replay, replay_note)
