"""Step 13: post-deployment validation. Production against the benchmark at the same rate; the loop back.

Inputs (param validation.source, a folder): a production request log with latencies (any traffic
layout the workload stage reads, plus `ttft_ms` and `e2e_ms`), and/or Prometheus scrapes of vLLM or
SGLang servers and the DCGM exporter under `scrapes/` (two or more per source over the window).
The benchmark side is the curve that sized the fleet the window comes from (validation.tier),
read at the production rate per replica. method.md step 13: re-characterize (back to step 1) when
production TTFT p99 > 1.3 x the benchmark's at the same rate, or GPU utilization is more than 20
points below the benchmark's; every other figure is checked against the guide's targets table.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline import curve as cv
from pipeline import io
from pipeline.errors import InputError
from pipeline.production_window import LOG_SUFFIXES as LOG_SUFFIXES  # the window's reader; names kept here
from pipeline.production_window import PRODUCTION_PARQUET as PRODUCTION_PARQUET
from pipeline.production_window import production_log as production_log
from pipeline.production_window import scrape_figures as scrape_figures
from pipeline.production_window import write_empty_production as write_empty_production

COMPARED, NO_WINDOW = "compared", "no production window"  # metrics/validation.json `status`
SECTIONS = ("validation", "slo", "workload")
# metric -> (what to revisit, why), the loop back into the method
REVISIT = {
    "ttft_p99_ms": "step 1 (re-profile the traffic: lengths or arrivals changed) and step 7 (re-benchmark at production lengths)",
    "itl_p99_ms": "step 9 (batching: chunked prefill) and step 7 (re-benchmark)",
    "gpu_utilization_pct": "step 1 (re-profile: the traffic is not what was benchmarked) and step 12 (utilization)",
    "gpu_memory_used_pct": "steps 4-5 (memory floor and quantization)",
    "kv_cache_usage_pct": "step 8 (KV-cache strategy) and steps 4-5 (KV budget)",
    "kv_eviction_pct": "step 8 (KV-cache budget: more memory, FP8 KV, or less concurrency)",
    "prefix_cache_hit_rate": "step 8 (prefix caching and cache-aware routing)",
    "queue_depth": "step 11 (fleet size and the scaling schedule)",
    "fleet_utilization_pct": "steps 11-12 (fleet size, the schedule, the utilization trap)",
}


def benchmark_at(levels: list[dict[str, Any]], rps: float) -> dict[str, Any]:
    """TTFT and ITL p99 of the benchmark curve at a per-replica rate: linear in RPS between the two levels around it."""
    pts = sorted(
        ((float(r["rps"]), r) for r in levels if r.get("rps") is not None and math.isfinite(float(r["load"]))),
        key=lambda p: p[0],
    )
    if not pts:
        raise InputError("the benchmark curve has no levels with a request rate")
    xs = [x for x, _ in pts]
    note = ""
    if rps < xs[0] or rps > xs[-1]:
        note = (
            f"the production rate per replica ({rps:.3g} req/s) is outside the benchmark's range "
            f"({xs[0]:.3g}-{xs[-1]:.3g} req/s): the nearest level stands in"
        )
    out: dict[str, Any] = {"rps_per_replica": rps, "note": note}
    for col in ("ttft_p99_ms", "itl_p99_ms", "ttft_p50_ms", "itl_p50_ms"):
        out[col] = cv.interp(rps, xs, [r.get(col) for _, r in pts])  # clamped to the end levels outside the range
    for metric in ("ttft", "itl"):  # the best percentile the curve has: p99, else p95, p90, the median
        out[f"{metric}_ms"], out[f"{metric}_percentile"] = None, None
        for pct in BENCHMARK_PERCENTILES:
            value = cv.interp(rps, xs, [r.get(f"{metric}_{pct}_ms") for _, r in pts])
            if value is not None:
                out[f"{metric}_ms"], out[f"{metric}_percentile"] = value, pct
                break
    return out


BENCHMARK_PERCENTILES = ("p99", "p95", "p90", "p50")


def percentile_note(bench: dict[str, Any]) -> list[str]:
    """What the comparison with production's p99 stands on when the benchmark curve has no p99 (medians-only sweeps)."""
    out = []
    for metric, name in (("ttft", "TTFT"), ("itl", "ITL")):
        pct = bench.get(f"{metric}_percentile")
        if pct is None:
            out.append(f"the benchmark curve has no {name} percentile at all: production {name} p99 is not compared")
        elif pct != "p99":
            out.append(
                f"the benchmark curve has no {name} p99: production's p99 is compared with the benchmark's {pct} "
                f"(its best available percentile), which is lower, so a breach may be the percentile, not production"
            )
    return out


# metric, low, high, target, source: figures checked against the guide's band alone (method.md step 13)
BANDS = (
    ("gpu_memory_used_pct", 80, 90, "80-90%", "DCGM_FI_DEV_FB_USED / (USED + FREE)"),
    (
        "kv_cache_usage_pct",
        75,
        90,
        "75-90%",
        "vllm:kv_cache_usage_perc (gpu_cache_usage_perc before v0.10), mean of the scrapes",
    ),
    (
        "kv_eviction_pct",
        None,
        5,
        "< 5% of requests (> 20%: degrading)",
        "preemptions / finished requests over the window",
    ),
    ("queue_depth", None, 1, "~0 (mean <= 1 queued request per server)", "num_requests_waiting, mean of the scrapes"),
)


def _status(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "n/a"
    if low is not None and value < low:
        return "low"
    if high is not None and value > high:
        return "high"
    return "ok"


def assess(
    prod: dict[str, Any],
    bench: dict[str, Any],
    p: dict[str, Any],
    slo: dict[str, Any],
    usable_rps: float,
    replicas: int,
    prefix_reuse: float | None,
) -> dict[str, Any]:
    """The monitoring table (production, benchmark, target, status per metric) and the re-characterize verdict."""
    ratio, drop = p["ttft_ratio"], p["util_drop_points"]
    bench_util = p["benchmark_gpu_util_pct"]
    m: dict[str, dict[str, Any]] = {}

    def put(name: str, production: Any, benchmark: Any, target: str, status: str, source: str) -> None:
        m[name] = {
            "production": io.rounded(production) if production is not None else None,
            "benchmark": io.rounded(benchmark) if benchmark is not None else None,
            "target": target,
            "status": status,
            "source": source,
        }

    ttft, bttft = prod.get("ttft_p99_ms"), bench.get("ttft_ms", bench.get("ttft_p99_ms"))
    bpct = bench.get("ttft_percentile") or "p99"
    status = "n/a"
    if ttft is not None:
        status = "breach" if (bttft and ttft > ratio * bttft) or ttft > slo["ttft_p99_ms"] else "ok"
    put(
        "ttft_p99_ms",
        ttft,
        bttft,
        f"<= {ratio:g} x benchmark{'' if bpct == 'p99' else f' {bpct} (no p99 in the curve)'} at the same rate "
        f"and <= the SLO {slo['ttft_p99_ms']:g} ms",
        status,
        prod.get("ttft_source", ""),
    )
    m["ttft_p99_ms"]["benchmark_percentile"] = bench.get("ttft_percentile")
    itl, bitl = prod.get("itl_p99_ms"), bench.get("itl_ms", bench.get("itl_p99_ms"))
    limit = slo.get("itl_p99_ms")
    status = "n/a" if itl is None else ("breach" if limit is not None and itl > limit else "ok")
    if prod.get("itl_p99_ms_coarse") and itl is not None:
        status = "coarse" if status == "ok" else status
    put("itl_p99_ms", itl, bitl, f"<= the SLO {limit} ms", status, prod.get("itl_source", ""))
    m["itl_p99_ms"]["benchmark_percentile"] = bench.get("itl_percentile")
    util = prod.get("gpu_utilization_pct")
    status = _status(util, 60, 85)
    if util is not None and bench_util is not None and util < bench_util - drop:
        status = "breach"
    put(
        "gpu_utilization_pct",
        util,
        bench_util,
        f"60-85% (compute); not more than {drop:g} points below the benchmark's",
        status,
        "DCGM_FI_DEV_GPU_UTIL, mean of the scrapes",
    )
    for name, low, high, target, source in BANDS:
        put(name, prod.get(name), None, target, _status(prod.get(name), low, high), source)
    hit = prod.get("prefix_cache_hit_rate")
    put(
        "prefix_cache_hit_rate",
        hit,
        prefix_reuse,
        "at least the log's prefix reuse (step 1); ~1/N of it means cache-unaware routing",
        _status(hit, prefix_reuse * 0.8 if prefix_reuse else None, None),
        "prefix_cache_hits / prefix_cache_queries over the window",
    )
    rate = prod.get("rate_rps")
    fleet_util = rate / (replicas * usable_rps) * 100 if rate and replicas and usable_rps else None
    put(
        "fleet_utilization_pct",
        fleet_util,
        None,
        "60-80% (< 40%: utilization trap; > 90%: no headroom)",
        "trap" if fleet_util is not None and fleet_util < 40 else _status(fleet_util, 60, 80),
        f"production rate / ({replicas} replicas x usable {usable_rps:g} req/s)",
    )
    reasons = []
    if ttft is not None and bttft and ttft > ratio * bttft:
        reasons.append(
            f"TTFT p99 {ttft:,.0f} ms is {ttft / bttft:.2f}x the benchmark's"
            f"{'' if bpct == 'p99' else ' ' + bpct} {bttft:,.0f} ms at the same rate "
            f"(more than {ratio:g}x)"
        )
    if util is not None and bench_util is not None and util < bench_util - drop:
        reasons.append(
            f"GPU utilization {util:.0f}% is {bench_util - util:.0f} points below the benchmark's {bench_util:.0f}% "
            f"(more than {drop:g})"
        )
    revisit = sorted({REVISIT[k] for k, v in m.items() if v["status"] in ("breach", "high", "low", "trap")})
    return {"recharacterize": bool(reasons), "reasons": reasons, "metrics": m, "revisit": revisit}


def compare(
    sections: dict[str, Any],
    log: dict[str, Any] | None,
    scr: dict[str, Any] | None,
    inputs: dict[str, Any],
    curve_levels: list[dict[str, Any]],
) -> dict[str, Any]:
    """metrics/validation.json from the production window, the curves and the fleet plan (a compared window).

    `log`, `scr`: the window's request-log and scrape figures (production_window.production_log and
    scrape_figures; at least one of them); `inputs`: the project's operating_point, fleet and workload
    documents; `curve_levels`: the rows of data/interim/curves.parquet. The stage layer reads all of them.
    """
    p, slo = sections["validation"], sections["slo"]
    op, fleet = inputs["operating_point"], inputs["fleet"]
    tier = p["tier"]
    if tier == "all":
        curve, usable, sized = op["curve_source"]["curve"], op["usable_rps"], fleet["pooled"]
        bench_replicas = int((op.get("manifest") or {}).get("replicas", 1))
    else:
        t_op = (op.get("per_tier") or {}).get(tier)
        if not t_op or "error" in t_op:
            raise InputError(
                f"params.yaml: validation.tier = {tier!r} has no operating point; tiers: "
                f"{', '.join(sorted(op.get('per_tier') or {})) or '(none)'} or all"
            )
        curve, usable = t_op["curve"], t_op["usable_rps"]
        bench_replicas = int(t_op["manifest"].get("replicas", 1))
        sized = (fleet.get("routed") or {}).get(tier) or fleet["pooled"]
    prod: dict[str, Any] = {}
    if scr:
        prod.update({k: v for k, v in scr.items() if k not in ("sources", "notes", "validation", "synthetic")})
        prod["ttft_source"] = prod["itl_source"] = f"{scr.get('engine', 'engine')} histograms over the scrape window"
    if log:  # exact per-request latencies beat histogram buckets
        for k in ("ttft_p99_ms", "itl_p99_ms", "rate_rps", "requests"):
            if log.get(k) is not None:
                prod[k] = log[k]
        prod["ttft_source"] = prod["itl_source"] = f"{log['file']} (per request)"
        prod["itl_p99_ms_coarse"] = False
    replicas = p["replicas"] or (scr or {}).get("replicas") or sized["total_instances"]
    replicas_source = (
        "params validation.replicas"
        if p["replicas"]
        else ("distinct servers in the scrapes" if (scr or {}).get("replicas") else "the plan's instances (fleet.json)")
    )
    rate = prod.get("rate_rps")
    if not rate:
        raise InputError(f"{p['source']}: cannot tell the production request rate (no log, no request counter)")
    levels = [
        {**r, "rps": r["rps"] / bench_replicas if r["rps"] is not None else None}
        for r in curve_levels
        if r["curve"] == curve
    ]
    bench = benchmark_at(levels, rate / replicas)
    reuse = (inputs["workload"].get("prefix_reuse") or {}).get("reuse_fraction")
    verdict = assess(prod, bench, p, slo, usable, replicas, reuse)
    notes = list((scr or {}).get("notes") or [])
    if log:  # the log's per-request latencies are used; the histograms only cross-check
        notes = [
            n + ": not used, the request log gives per-request values" for n in notes if "latency" in n or "token" in n
        ]
    warnings = notes
    if bench["note"]:
        warnings.append(bench["note"])
    warnings += percentile_note(bench)
    return {
        "status": COMPARED,
        **verdict,
        "synthetic": bool((scr or {}).get("synthetic")),
        "window": io.rounded(
            {
                "tier": tier,
                "curve": curve,
                "requests": prod.get("requests"),
                "seconds": (log or {}).get("seconds") or max(s["seconds"] for s in scr["sources"].values()),
                "rate_rps": rate,
                "replicas": replicas,
                "replicas_source": replicas_source,
                "rate_per_replica_rps": rate / replicas,
                "usable_rps": usable,
                "benchmark_replicas": bench_replicas,
            }
        ),
        "benchmark_at_rate": io.rounded(bench),
        "inputs": {
            "log": {k: v for k, v in (log or {}).items() if k in ("file", "requests", "seconds")} or None,
            "scrapes": (scr or {}).get("sources"),
            "scrapes_validation": (scr or {}).get("validation"),
        },
        "warnings": warnings,
        "formulas": {
            "recharacterize": f"TTFT p99 > {p['ttft_ratio']:g} x benchmark TTFT p99 at the same per-replica rate, or "
            f"GPU utilization < benchmark - {p['util_drop_points']:g} points (method.md step 13)",
            "benchmark at rate": "linear in RPS between the benchmark levels around production rate / replicas",
            "histogram percentile": "PromQL histogram_quantile over the bucket increases between the first and last scrape",
        },
    }


def table_text(result: dict[str, Any]) -> str:
    """The verdict and the monitoring table as plain text (`sizing validate`)."""
    if result.get("status") == NO_WINDOW:
        return f"{NO_WINDOW}: validation.source is null; name a folder (sizing validate FOLDER) or set it\n"
    lines = [
        "re-characterize: " + ("YES" if result["recharacterize"] else "no"),
        *(f"  - {r}" for r in result["reasons"]),
        f"{'metric':<24}{'production':>14}{'benchmark':>14}  {'status':<8}target",
    ]
    for name, m in result["metrics"].items():
        prod = "-" if m["production"] is None else f"{m['production']:,.4g}"
        bench = "-" if m["benchmark"] is None else f"{m['benchmark']:,.4g}"
        lines.append(f"{name:<24}{prod:>14}{bench:>14}  {m['status']:<8}{m['target']}")
    if result["revisit"]:
        lines.append("revisit: " + "; ".join(result["revisit"]))
    lines += [f"note: {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def metrics_table(result: dict[str, Any]) -> Any:
    """Report 13's monitoring table: one row per metric, its unit in its name ("TTFT p99 (ms)", "GPU utilization
    (%)"), production and benchmark as numbers in that unit (a fraction such as the prefix-cache hit rate in
    percent), then the target, status and source. pipeline/tables.py formats the numbers."""
    import pandas as pd

    from pipeline import tables

    rows = []
    for name, m in result["metrics"].items():
        scale = 100.0 if tables.kind_of(name) == "fraction" else 1.0

        def shown(v: Any, scale: float = scale) -> Any:
            return None if v is None else float(v) * scale

        rows.append(
            {
                "metric": tables.header(name),
                "production": shown(m.get("production")),
                "benchmark": shown(m.get("benchmark")),
                "target": m.get("target"),
                "status": m.get("status"),
                "source": m.get("source"),
            }
        )
    return pd.DataFrame(rows, columns=["metric", "production", "benchmark", "target", "status", "source"])


def no_window() -> dict[str, Any]:
    """The result when validation.source is null: no production window yet, so nothing to re-characterize.

    The keys are those of a compared window (the finance report and the scenarios read them), empty.
    """
    return {
        "status": NO_WINDOW,
        "recharacterize": False,
        "reasons": [],
        "metrics": {},
        "revisit": [],
        "synthetic": False,
        "window": None,
        "benchmark_at_rate": None,
        "inputs": {"log": None, "scrapes": None, "scrapes_validation": None},
        "warnings": [
            "validation.source is null: there is no production window yet. Once the fleet serves traffic, put a "
            "window (requests.csv with ttft_ms and e2e_ms, and/or scrapes/*.prom) under data/raw/ and set "
            "validation.source to its folder"
        ],
        "formulas": {},
    }


def benchmark_levels(window: dict[str, Any], ttft_percentile: str | None, curves: Any) -> Any:
    """The chart's benchmark line: the window's curve from `curves` (data/interim/curves.parquet), RPS per replica.

    The sweep's RPS is divided by the replicas it ran on (window.benchmark_replicas); its best TTFT
    percentile (`ttft_percentile`, e.g. p99 or p95) is the `ttft_p99_ms` column the chart plots.
    Columns load, rps, ttft_p99_ms, sorted by RPS; None when the curve has no TTFT percentile.
    """
    if ttft_percentile is None:
        return None
    levels = curves[curves["curve"] == window["curve"]].sort_values("rps")
    levels["rps"] = levels["rps"] / window["benchmark_replicas"]
    levels = levels.assign(ttft_p99_ms=levels[f"ttft_{ttft_percentile}_ms"])
    return levels[["load", "rps", "ttft_p99_ms"]]
