"""kubernetes-sigs inference-perf `stage_N_lifecycle_metrics.json` (client side, seconds).

One file per constant-rate stage (`load_summary.requested_rate`). `time_per_output_token` is per
request (TPOT) and preferred over the chunk-level `inter_token_latency`. Summary and Prometheus
files are skipped: the server-side figures can contradict the client's; the lifecycle files are
what the clients measured.

A stage whose client fell behind its schedule (`load_summary.schedule_delay` median at least
CLIENT_BEHIND x the mean request latency: requests waited at the client as long as at the server)
ran with the client's concurrency cap full. The server then held a fixed number of requests, not
a Poisson stream: the level says so in a note with that number (the sent rate x the mean request
latency, Little's law), and calibration replays its requested rate through a client of that many
slots (pipeline.sim.calibrate INFLIGHT_RE, engine.simulate_open(max_inflight=)). On the Llama-3.1-8B H100 fixture, stages 4-6 asked for 123-183 req/s, sent ~106
and held 409-441 requests: their TTFT is a flat ~3 s queue wait (p50 3.04 s, p99 3.20 s), which a
Poisson stream at 106 req/s, whose queue grows through the run, does not give.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.benchmarks.common import Level, empty_row, fill_latency, number, section, to_ms

TOOL = "inference-perf"
CLIENT_BEHIND = 0.5  # median schedule delay / mean request latency from which the client's cap was full


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
    inflight = client_inflight(load, lat)
    if inflight is not None:
        notes.append(
            f"the client fell behind its schedule (median schedule delay {inflight[1]:.2f} s): it held about "
            f"{inflight[0]:.0f} requests in flight (sent rate x mean request latency), a closed loop"
        )
    return Level(row, None, notes)


def client_inflight(load: dict[str, Any], lat: dict[str, Any]) -> tuple[float, float] | None:
    """(requests in flight, median schedule delay s) of a stage whose client fell behind its schedule
    (CLIENT_BEHIND), else None: the sent rate x the mean request latency, Little's law over the sending."""
    delay = load.get("schedule_delay")
    e2e = lat.get("request_latency")
    if not isinstance(delay, dict) or not isinstance(e2e, dict):
        return None
    med = number(delay.get("median", delay.get("p50")))
    mean_s, sent = number(e2e.get("mean")), number(load.get("achieved_rate"))
    if med is None or mean_s is None or sent is None:
        return None
    if not (math.isfinite(med) and 0 < mean_s < math.inf and 0 < sent < math.inf) or med < CLIENT_BEHIND * mean_s:
        return None
    return sent * mean_s, med
