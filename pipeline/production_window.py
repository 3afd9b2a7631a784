"""Reading a production window (step 13's input, param validation.source): the request log with latencies and
the Prometheus scrapes under `scrapes/`, each through the project's readers and great-expectations suites.

The stage layer (pipeline/stages/validation.py) calls these; validation.compare works on what they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.errors import InputError
from pipeline.layout import display_path

PRODUCTION_PARQUET = "data/interim/production.parquet"
LOG_SUFFIXES = (".csv", ".parquet", ".jsonl", ".json", ".ndjson")


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
