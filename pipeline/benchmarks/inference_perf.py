"""kubernetes-sigs inference-perf `stage_N_lifecycle_metrics.json` (client side, seconds).

One file per constant-rate stage (`load_summary.requested_rate`). `time_per_output_token` is per
request (TPOT) and preferred over the chunk-level `inter_token_latency`. Summary and Prometheus
files are skipped: the server-side figures can contradict the client's; the lifecycle files are
what the clients measured.
"""

from __future__ import annotations

from typing import Any

from pipeline.benchmarks.common import Level, empty_row, fill_latency, number, section, to_ms

TOOL = "inference-perf"


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and "load_summary" in obj and "successes" in obj


def _stats(metric: Any) -> dict[str, float | None]:
    if not isinstance(metric, dict):
        return {}
    return {
        "mean": to_ms(metric.get("mean"), "s"),
        "p50": to_ms(metric.get("median", metric.get("p50")), "s"),
        "p90": to_ms(metric.get("p90"), "s"),
        "p95": to_ms(metric.get("p95"), "s"),
        "p99": to_ms(metric.get("p99"), "s"),
    }


def read(obj: dict[str, Any], file: str) -> Level:
    """One inference-perf stage as a normalized level (open loop at the requested rate)."""
    row = empty_row(TOOL, file)
    load = section(obj, file, "load_summary")
    ok = section(obj, file, "successes")
    lat = section(obj, file, "successes", "latency")
    row.update(load_kind="request_rate", load=number(load.get("requested_rate")))
    fill_latency(row, "ttft", _stats(lat.get("time_to_first_token")))
    if lat.get("time_per_output_token"):
        fill_latency(row, "itl", _stats(lat.get("time_per_output_token")))
        row["itl_kind"] = "tpot"
    else:
        fill_latency(row, "itl", _stats(lat.get("inter_token_latency")))
        row["itl_kind"] = "itl"
    fill_latency(row, "e2e", _stats(lat.get("request_latency")))
    row["e2e_source"] = "tool (request_latency, s)"
    thr = section(ok, file, "throughput")
    fails = section(obj, file, "failures")
    row.update(
        rps=number(thr.get("requests_per_sec")),
        output_tps=number(thr.get("output_tokens_per_sec")),
        completed=number(ok.get("count")),
        failed=number(fails.get("count")) or 0.0,
        duration_s=number(load.get("send_duration")),
        input_tokens_mean=number(section(ok, file, "prompt_len").get("mean")),
        output_tokens_mean=number(section(ok, file, "output_len").get("mean")),
    )
    notes = []
    achieved = number(load.get("achieved_rate"))
    if achieved is not None and row["load"] and achieved < 0.9 * row["load"]:
        notes.append(f"the client sent {achieved:.2f} req/s of the {row['load']:.2f} requested")
    return Level(row, None, notes)
