"""Step 12 arithmetic: cost per hour, month and year, utilization, $/1M tokens, schedules and cost bands.

cost per hour = GPUs x $/GPU-hour; a month is 730 h, a year 8760 h. `cost` prices one deployment, `price_fleet`
one fleet of metrics/fleet.json (with its schedule), `blend` several fleets as one plan, `interval_cost` a
candidate's band of usable RPS through the fleet sizing. Pure: no file is read or written here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pipeline import io  # io.rounded only
from pipeline.catalog import Price
from pipeline.tco_pricing import lookup

HOURS_PER_MONTH = 730
HOURS_PER_YEAR = 8760


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
