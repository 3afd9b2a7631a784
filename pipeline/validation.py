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
from pathlib import Path
from typing import Any

from pipeline import curve as cv
from pipeline import io
from pipeline.errors import InputError
from pipeline.layout import display_path

COMPARED, NO_WINDOW = "compared", "no production window"  # metrics/validation.json `status`
PRODUCTION_PARQUET = "data/interim/production.parquet"
SECTIONS = ("validation", "slo", "workload")
LOG_SUFFIXES = (".csv", ".parquet", ".jsonl", ".json", ".ndjson")
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


def production_log(
    folder: Path,
    root: Path,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    out: Path | None = None,
) -> dict[str, Any] | None:
    """The request log in the folder (requests.*), validated by the workload reader (GX), its latency figures.

    ITL per request = (E2E - TTFT) / (output tokens - 1) for requests with more than one output token.
    """
    from pipeline import traffic
    from pipeline.traffic.sources import connect, resolve

    files = sorted(p for p in folder.glob("requests*") if p.suffix.lower() in LOG_SUFFIXES)
    if not files:
        return None
    source = resolve(display_path(files[0], root), None, root)
    out = out or root / PRODUCTION_PARQUET
    ing = traffic.ingest(source, out, fmt=fmt, columns=columns)
    missing = [c for c in ("ttft_ms", "e2e_ms") if c not in ing.columns]
    if missing:
        raise InputError(
            f"{source.label}: no {' or '.join(missing)} column; a production log for step 13 needs per-request "
            "latencies: ttft_ms and e2e_ms (milliseconds), with input_tokens and output_tokens"
        )
    con = connect()
    row = con.execute(
        """
        SELECT count(*), min(arrival_s), max(arrival_s),
               quantile_cont(ttft_ms, 0.99), quantile_cont(ttft_ms, 0.5), quantile_cont(e2e_ms, 0.99),
               quantile_cont((e2e_ms - ttft_ms) / (output_tokens - 1), 0.99) FILTER (WHERE output_tokens > 1),
               quantile_cont((e2e_ms - ttft_ms) / (output_tokens - 1), 0.5) FILTER (WHERE output_tokens > 1),
               count(*) FILTER (WHERE e2e_ms < ttft_ms)
        FROM read_parquet(?)
        """,
        [str(out)],  # the path is a bound parameter, never SQL text (a crafted TMPDIR cannot add a statement)
    ).fetchall()[0]
    con.close()
    n, first, last, ttft99, ttft50, e2e99, itl99, itl50, bad = row
    if bad:
        out.unlink(missing_ok=True)
        raise InputError(
            f"{source.label}: {bad:,} rows have e2e_ms < ttft_ms; expected the end-to-end latency to include the "
            "time to first token"
        )
    span = float(last - first)
    return {
        "file": source.label,
        "requests": int(n),
        "first_arrival_s": float(first),
        "seconds": span,
        "rate_rps": n / span if span > 0 else None,
        "ttft_p99_ms": float(ttft99),
        "ttft_p50_ms": float(ttft50),
        "itl_p99_ms": float(itl99) if itl99 is not None else None,
        "itl_p50_ms": float(itl50) if itl50 is not None else None,
        "e2e_p99_ms": float(e2e99),
        "validation": ing.validation.as_dict() if hasattr(ing.validation, "as_dict") else None,
    }


def scrape_figures(folder: Path, root: Path, coarse_ratio: float = 2.0) -> dict[str, Any] | None:
    """Window figures from the Prometheus scrapes under folder/scrapes (engine and DCGM)."""
    from pipeline import prometheus as pm

    files = sorted((folder / "scrapes").glob("*.prom")) + sorted((folder / "scrapes").glob("*.txt"))
    if not files:
        return None
    from pipeline import quality

    scrapes = pm.read(files, root)
    checked = quality.validate_scrapes(pm.samples_frame(scrapes), f"under {display_path(folder / 'scrapes', root)}")
    wins = pm.windows(scrapes)
    out: dict[str, Any] = {"sources": {k: {"scrapes": len(w.scrapes), "seconds": w.seconds} for k, w in wins.items()}}
    out["validation"] = checked.as_dict()
    out["synthetic"] = any(s.synthetic for s in scrapes)
    notes: list[str] = []
    engine = next(((k, w) for k, w in wins.items() if any(n.startswith(("vllm:", "sglang:")) for n in w.names())), None)
    if engine:
        _, w = engine
        prefix = next(p for p in pm.ENGINE_PREFIXES if any(n.startswith(p) for n in w.names()))
        out["engine"] = prefix.rstrip(":")
        out["replicas"] = w.instances(prefix + "num_requests_waiting") or w.instances(prefix + "request_success")
        for metric, q in (("time_to_first_token_seconds", 0.99), ("inter_token_latency_seconds", 0.99)):
            buckets = w.histogram(prefix + metric)
            res = pm.quantile(buckets, q, coarse_ratio) if buckets else None
            if res:
                key = "ttft_p99_ms" if metric.startswith("time_to_first") else "itl_p99_ms"
                out[key] = res["value"] * 1e3
                out[key + "_bucket_ms"] = [None if b is None else b * 1e3 for b in res["bucket"]]
                if res["coarse"]:
                    notes.append(f"{prefix}{metric}: {res['why']} (seconds)")
                out[key + "_coarse"] = res["coarse"]
        done = w.increase(prefix + "request_success")
        out["requests"] = done
        out["rate_rps"] = w.rate(prefix + "request_success")
        kv = w.gauge(prefix + "kv_cache_usage_perc")
        out["kv_cache_usage_pct"] = kv * 100 if kv is not None else None
        hits, queries = w.increase(prefix + "prefix_cache_hits"), w.increase(prefix + "prefix_cache_queries")
        out["prefix_cache_hit_rate"] = (
            hits / queries if hits is not None and queries else w.gauge(prefix + "cache_hit_rate")
        )
        pre = w.increase(prefix + "num_preemptions")
        out["kv_eviction_pct"] = pre / done * 100 if pre is not None and done else None
        out["queue_depth"] = w.gauge(prefix + "num_requests_waiting")
        out["queue_depth_max"] = w.gauge(prefix + "num_requests_waiting", "max")
    dcgm = next((w for w in wins.values() if "DCGM_FI_DEV_GPU_UTIL" in w.names()), None)
    if dcgm:
        out["gpu_utilization_pct"] = dcgm.gauge("DCGM_FI_DEV_GPU_UTIL")
        used, free = dcgm.gauge("DCGM_FI_DEV_FB_USED"), dcgm.gauge("DCGM_FI_DEV_FB_FREE")
        out["gpu_memory_used_pct"] = used / (used + free) * 100 if used is not None and free is not None else None
        out["gpus"] = dcgm.instances("DCGM_FI_DEV_GPU_UTIL")
    out["notes"] = notes
    return out


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


def run(sections: dict[str, Any], root: Path, scratch: Path | None = None) -> dict[str, Any]:
    """metrics/validation.json from the production window, the curves and the fleet plan.

    `scratch`: where the normalized production log goes (default data/interim/production.parquet;
    `sizing validate` passes a temporary file so a one-off check leaves the project untouched).
    """
    import pyarrow.parquet as pq

    p, slo, w = sections["validation"], sections["slo"], sections["workload"]
    if p["source"] is None:
        return no_window()
    folder = Path(p["source"]) if Path(p["source"]).is_absolute() else root / p["source"]
    if not folder.is_dir():
        raise InputError(
            f"{p['source']}: not a folder; validation.source should hold a production window: requests.csv "
            "(with ttft_ms, e2e_ms) and/or scrapes/*.prom (two or more Prometheus scrapes per server)"
        )
    log = production_log(
        folder, root, w["format"] if w["format"] == "generic" else "auto", w["columns"] or None, scratch
    )
    scr = scrape_figures(folder, root, p["coarse_bucket_ratio"])
    if log is None and scr is None:
        raise InputError(
            f"{p['source']}: no requests.* log and no scrapes/*.prom; expected at least one production input"
        )
    inputs = io.read_metrics(root, ("operating_point", "fleet", "workload"))
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
        for r in pq.read_table(root / "data" / "interim" / "curves.parquet").to_pylist()
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


def write_empty_production(path: Path) -> None:
    """data/interim/production.parquet with no rows (the normalized log's columns): the window has no request log."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("arrival_s", pa.float64()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("ttft_ms", pa.float64()),
            ("e2e_ms", pa.float64()),
        ]
    )
    with io.atomic_path(path, ".parquet") as tmp:
        pq.write_table(schema.empty_table(), tmp, compression="zstd")


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
