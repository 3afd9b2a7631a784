"""Step 12: total cost of ownership, utilization and cost per million tokens (method.md step 12).

cost per hour = GPUs x $/GPU-hour; a month is 730 h, a year 8760 h. utilization = average rate /
(instances x usable RPS per instance). cost per 1M output tokens = cost per hour / (output tokens
per hour / 1e6), at the planned utilization (the capacity the plan assumes is used) and at the
measured one (the traffic the log really brings): 40% utilization costs 2x what 80% does.
Prices in data/catalog/prices.csv are dated, sourced and illustrative; params may override them.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import io, paths
from pipeline.errors import InputError

HOURS_PER_MONTH = 730
HOURS_PER_YEAR = 8760
PRICES_CSV = "prices.csv"
PRICE_COLUMNS = ("gpu", "provider", "instance", "pricing", "usd_per_gpu_hour", "as_of", "confidence", "source")


@dataclass(frozen=True)
class Price:
    """One dated list price per GPU-hour and where it came from."""

    gpu: str
    provider: str
    instance: str
    pricing: str
    usd_per_gpu_hour: float
    as_of: str
    confidence: str
    source: str


def load_prices(root: Path | None = None) -> list[Price]:
    """data/catalog/prices.csv, checked: every column present, a positive price and a source on every row."""
    path = (root or paths.ROOT) / "data" / "catalog" / PRICES_CSV
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in PRICE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(PRICE_COLUMNS)}")
        rows = list(reader)
    out, bad = [], []
    for i, r in enumerate(rows, start=2):
        try:
            price = float(r["usd_per_gpu_hour"])
        except ValueError:
            price = -1.0
        if price <= 0 or not r["source"].strip() or not r["gpu"].strip():
            bad.append(f"line {i}: {r['gpu']!r} {r['usd_per_gpu_hour']!r}")
            continue
        out.append(
            Price(
                r["gpu"].strip(),
                r["provider"],
                r["instance"],
                r["pricing"],
                price,
                r["as_of"],
                r["confidence"],
                r["source"],
            )
        )
    if bad:
        raise InputError(
            f"{path}: column 'usd_per_gpu_hour' or 'source': {len(bad)} of {len(rows)} rows lack a positive price, a GPU "
            f"or a source; expected $ per GPU-hour and where it came from. Examples: {'; '.join(bad[:5])}"
        )
    return out


def price_for(gpu: str, prices: list[Price], pricing: str = "on-demand", provider: str | None = None) -> Price | None:
    """The price of one GPU: the named provider's, else the lowest of that pricing kind; None when none is listed."""
    pool = [p for p in prices if p.gpu == gpu and p.pricing == pricing and (provider is None or p.provider == provider)]
    return min(pool, key=lambda p: (p.usd_per_gpu_hour, p.provider)) if pool else None


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


TCO_JSON = "metrics/tco.json"
SECTIONS = ("tco", "fleet", "slo")


def predicted_capacity(
    curve: list[dict[str, Any]], ttft_slo_ms: float, itl_slo_ms: float | None
) -> tuple[float, float]:
    """(concurrency, RPS) where a candidate's roofline curve crosses the SLO (interpolated), else its last level."""
    import numpy as np

    from pipeline.curve import crossing

    pts = sorted(curve, key=lambda r: r["concurrency"])
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
    """What every candidate is sized and priced with: the memory stage's candidates and roofline curves, params, prices."""

    memory: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]]
    p: dict[str, Any]
    fleet_p: dict[str, Any]
    slo: dict[str, Any]
    prices: list[Price]


def candidates(
    tier_name: str,
    manifest: dict[str, Any],
    measured: float,
    demand: dict[str, Any],
    fleet_tier: dict[str, Any],
    pr: Pricing,
) -> list[dict[str, Any]]:
    """Every GPU x precision x TP candidate of one fleet (metrics/memory.json, tier `tier_name`), sized and priced.

    The benchmarked deployment (`manifest`) uses the measured usable RPS; every other candidate the
    measured one x the ratio of the two roofline capacities at the SLO: `roofline-scaled`, never chosen.
    """
    from pipeline import fleet

    memory, curves, p, fleet_p, slo, prices = pr.memory, pr.curves, pr.p, pr.fleet_p, pr.slo, pr.prices
    bench_id = f"{tier_name}/{manifest.get('gpu')}/w-{manifest.get('weight_dtype')}/kv-{manifest.get('kv_dtype')}"
    if bench_id not in curves:
        raise InputError(
            f"the benchmarked deployment {bench_id} (TP{manifest.get('tp')}) is not a candidate of metrics/memory.json that fits "
            "and meets the SLO: add its GPU and precisions to params hardware/quantization"
        )
    _, bench_pred = predicted_capacity(curves[bench_id], slo["ttft_p99_ms"], slo["itl_p99_ms"])
    rps = demand["rps"]
    source = "usable_rps" if tier_name == "all" else f"per_tier.{tier_name}.usable_rps"
    rows = []
    for cid, e in sorted(memory["candidates"].items()):
        if e["tier"] != tier_name or not e["fits"] or not e["meets_slo"] or cid not in curves:
            continue
        is_bench = cid == bench_id and int(e["tp"]) == int(manifest.get("tp", 0))
        conc, pred = predicted_capacity(curves[cid], slo["ttft_p99_ms"], slo["itl_p99_ms"])
        if pred <= 0:
            continue
        usable = measured if is_bench else measured * pred / bench_pred
        size = fleet.size(
            rps["sizing_rate"],
            usable,
            int(e["tp"]),
            int(e["pp"]),
            fleet_p["safety_factor"],
            fleet_tier["headroom"],
            fleet_tier["spares"],
        )
        override = (p["prices"] or {}).get(e["gpu"])
        price = price_for(e["gpu"], prices, p["pricing"], p["provider"])
        usd = float(override) if override is not None else (price.usd_per_gpu_hour if price else None)
        row: dict[str, Any] = {
            "candidate": cid,
            "gpu": e["gpu"],
            "weights": e["weights"],
            "kv": e["kv"],
            "tp": e["tp"],
            "basis": "measured" if is_bench else "roofline-scaled",
            "usable_rps": round(usable, 4),
            "usable_rps_source": f"metrics/operating_point.json {source} (measured)"
            if is_bench
            else f"measured {measured:g} x roofline {pred:.4g} / {bench_pred:.4g} req/s at the SLO (memory stage curves)",
            "roofline_concurrency_at_slo": round(conc, 2),
            "instances": size.total_instances,
            "gpus": size.gpus,
            "usd_per_gpu_hour": usd,
            "price_source": "params tco.prices"
            if override is not None
            else (f"{price.provider} {price.instance} ({price.as_of}): {price.source}" if price else None),
        }
        if usd is None:
            row["note"] = (
                f"no {p['pricing']} price for {e['gpu']} in data/catalog/prices.csv: set tco.prices.{e['gpu']}"
            )
        else:
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
            sched = fleet.schedule(
                demand["hourly_p95_rps"],
                usable,
                fleet_p["safety_factor"],
                fleet_p["min_warm_instances"],
                fleet_tier["schedule"]["cold_start_s"],
                fleet_tier["spares"],
                size.total_instances,
            )
            scheduled_monthly = sched["instance_hours_per_day"] / 24 * size.gpus_per_instance * usd * HOURS_PER_MONTH
            row.update(io.rounded({k: v for k, v in c.as_dict().items() if k not in ("gpus", "usd_per_gpu_hour")}))
            row["monthly_usd_with_schedule"] = round(scheduled_monthly, 2)
        rows.append(row)
    return rows


def plan(pr: Pricing, op: dict[str, Any], fleet_json: dict[str, Any], tiers_json: dict[str, Any]) -> dict[str, Any]:
    """metrics/tco.json: every candidate that meets the SLO, fleet-sized and priced; the cheapest measured one chosen.

    The benchmarked deployment uses its measured usable RPS. Every other candidate's usable RPS is
    the measured one scaled by the ratio of the two roofline capacities at the SLO (memory stage
    curves): an estimate to rank what to benchmark next, marked `roofline-scaled`, never chosen.
    """
    rows = candidates(
        "all", op.get("manifest") or {}, float(op["usable_rps"]), tiers_json["pooled"], fleet_json["pooled"], pr
    )
    priced = {r["candidate"]: r["monthly_usd"] for r in rows if "monthly_usd" in r and r["basis"] == "measured"}
    pick = cheapest(priced)
    chosen = next(r for r in rows if r["candidate"] == pick["chosen"])
    pooled = {
        "per_candidate": rows,
        "chosen": pick["chosen"],
        "monthly_usd": chosen["monthly_usd"],
        "annual_usd": chosen["annual_usd"],
        "usd_per_million_output_tokens": chosen["usd_per_million_output_tokens"],
        "utilization": chosen["utilization"],
        "runner_up": pick["runner_up"],
        "saves_usd_per_month": pick["saves_usd_per_month"],
        "utilization_trap": chosen["utilization_trap"],
        "benchmark_next": benchmark_next(rows, chosen["monthly_usd"]),
        "formula": "$/h = GPUs x $/GPU-h; month = 730 h, year = 8760 h; utilization = mean rate / (instances x usable RPS); "
        "$/1M output tokens = $/h / (mean rate x mean output tokens x 3600 / 1e6)",
        "prices_note": "list prices from data/catalog/prices.csv are dated and illustrative: re-check before a budget decision",
    }
    pooled["per_tier_candidates"] = tier_candidates(op, fleet_json, tiers_json, pr)
    return with_tiers(pooled, chosen, fleet_json, tiers_json, pr.p, pr.prices)


def tier_candidates(
    op: dict[str, Any], fleet_json: dict[str, Any], tiers_json: dict[str, Any], pr: Pricing
) -> dict[str, Any]:
    """Steps 4-12 per tier: each routing tier's candidates priced like the pooled ones, and what to benchmark next."""
    out: dict[str, Any] = {}
    for name, t in sorted((fleet_json.get("routed") or {}).items()):
        t_op = (op.get("per_tier") or {}).get(name) or {}
        try:
            rows = candidates(
                name, t_op.get("manifest") or {}, float(t_op["usable_rps"]), tiers_json["tiers"][name], t, pr
            )
        except (InputError, KeyError) as exc:
            out[name] = {"error": str(exc).strip("'")}
            continue
        measured = next((r for r in rows if r["basis"] == "measured" and "monthly_usd" in r), None)
        out[name] = {
            "candidates": rows,
            "measured": measured["candidate"] if measured else None,
            "benchmark_next": benchmark_next(rows, measured["monthly_usd"]) if measured else [],
        }
    return out


def benchmark_next(rows: list[dict[str, Any]], reference_usd: float, n: int = 3) -> list[dict[str, Any]]:
    """The `n` candidates estimated cheaper a month than the reference plan, cheapest first, with the saving."""
    cheaper = sorted(
        (r for r in rows if "monthly_usd" in r and r["monthly_usd"] < reference_usd),
        key=lambda r: (r["monthly_usd"], r["candidate"]),
    )
    return [
        {
            "candidate": r["candidate"],
            "monthly_usd": r["monthly_usd"],
            "estimated_saving_share": round(1 - r["monthly_usd"] / reference_usd, 4),
        }
        for r in cheaper[:n]
    ]


def price_fleet(t: dict[str, Any], d: dict[str, Any], p: dict[str, Any], prices: list[Price]) -> dict[str, Any]:
    """One fleet of metrics/fleet.json priced: $/h, month, year, utilization, $/1M tokens, with and without its schedule."""
    override = (p["prices"] or {}).get(t["gpu"])
    price = price_for(t["gpu"], prices, p["pricing"], p["provider"])
    usd = float(override) if override is not None else (price.usd_per_gpu_hour if price else None)
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
        "price_source": "params tco.prices"
        if override is not None
        else (f"{price.provider} {price.instance} ({price.as_of}): {price.source}" if price else None),
    }
    if usd is None:
        row["note"] = f"no {p['pricing']} price for {t['gpu']} in data/catalog/prices.csv: set tco.prices.{t['gpu']}"
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
    sched = t["schedule"]
    row["monthly_usd_with_schedule"] = round(
        sched["instance_hours_per_day"] / 24 * t["gpus_per_instance"] * usd * HOURS_PER_MONTH, 2
    )
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
            "monthly_usd_with_schedule": sum(r["monthly_usd_with_schedule"] for r in rows),
            "utilization": util,
            "planned_utilization": p["planned_utilization"],
            "usd_per_million_output_tokens": per_m,
            "usd_per_million_output_tokens_planned": per_m * util / p["planned_utilization"],
            "usd_per_million_input_tokens": per_hour / (in_per_hour / 1e6) if in_per_hour else float("inf"),
            "utilization_trap": round(util, 9) < p["utilization_trap_below"],
        }
    )


def with_tiers(
    pooled: dict[str, Any],
    chosen: dict[str, Any],
    fleet_json: dict[str, Any],
    tiers_json: dict[str, Any],
    p: dict[str, Any],
    prices: list[Price],
) -> dict[str, Any]:
    """Price every fleet of the routed plan, compare it with the pooled plan, and report the adopted plan's totals.

    The pooled plan is the cheapest measured candidate (per_candidate). When the fleet stage adopted
    routing (or a cascade), the top-level figures are the routed plan's, blended over its tiers.
    """
    demands = {"all": tiers_json["pooled"], **tiers_json["tiers"]}
    routed_rows = [price_fleet(t, demands[n], p, prices) for n, t in sorted((fleet_json.get("routed") or {}).items())]
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
        "routing_saves_share": round(1 - routed["monthly_usd"] / chosen["monthly_usd"], 4) if routed else None,
    }
    if routed is None:
        comparison["verdict"] = "routing not costed: " + (
            "; ".join(f"{k}: {v}" for k, v in sorted(fleet_json["routing"]["unsized"].items()))
            or "the workload has no tiers to route"
        )
    else:
        cheaper = routed["monthly_usd"] < chosen["monthly_usd"]
        comparison["cheaper"] = cheaper
        saving = abs(comparison["routing_saves_share"])
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
    if fleet_json["plan"] != "pooled" and routed is not None:
        out["per_tier"] = {r["tier"]: r for r in routed_rows}
        out["plan"] = fleet_json["plan"]
        out["chosen"] = fleet_json["plan"]
        out.update(
            {k: routed[k] for k in ("monthly_usd", "annual_usd", "usd_per_million_output_tokens", "utilization")}
        )
        out["utilization_trap"] = routed["utilization_trap"]
        out["totals"] = routed
        out["runner_up"] = chosen["candidate"]
        out["saves_usd_per_month"] = comparison["routing_saves_usd_per_month"]
    else:
        t = fleet_json["per_tier"]["all"]
        out["per_tier"] = {"all": {**price_fleet(t, tiers_json["pooled"], p, prices), "candidate": chosen["candidate"]}}
        out["plan"] = "pooled"
        out["totals"] = blend(list(out["per_tier"].values()), tiers_json["pooled"], p)
    return out


def run_stage(sections: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """Step 12 (run by the report stage): read the memory, curve, fleet and tier metrics; write metrics/tco.json atomically."""
    import pyarrow.parquet as pq

    from pipeline import params

    root = root or paths.ROOT
    sec = {name: params.validate_section(name, sections.get(name)) for name in SECTIONS}
    inputs = io.read_metrics(root, ("memory", "operating_point", "fleet", "tiers"))
    curves: dict[str, list[dict[str, Any]]] = {}
    for r in pq.read_table(root / "data" / "interim" / "predicted_curve.parquet").to_pylist():
        curves.setdefault(r["candidate"], []).append(r)
    pr = Pricing(inputs["memory"], curves, sec["tco"], sec["fleet"], sec["slo"], load_prices(root))
    result = plan(pr, inputs["operating_point"], inputs["fleet"], inputs["tiers"])
    io.write_json(root / TCO_JSON, result)
    return result
