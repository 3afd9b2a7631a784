"""GuideLLM `benchmarks.json`: a whole sweep in one file, one entry per strategy.

Each entry's strategy (`config.strategy`, or `args.strategy` in older reports) is
`synchronous` (concurrency 1), `concurrent` (`streams`), `constant`/`poisson` (`rate`) or
`throughput` (everything at once: a saturation run). Metrics are status distributions
(`successful.{mean, median, percentiles.p50..p99}`); `*_ms` metrics are ms, `request_latency`
is seconds. `inter_token_latency_ms` is per request, excluding the first token (vLLM's TPOT).
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.benchmarks.common import PERCENTILES, Level, empty_row, fill_latency, number, section
from pipeline.errors import InputError

TOOL = "guidellm"


def looks_like(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("benchmarks"), list)
        and all(isinstance(b, dict) and "metrics" in b for b in obj["benchmarks"])
    )


def _dist(metric: Any, scale: float = 1.0) -> dict[str, float | None]:
    if not isinstance(metric, dict):
        return {}
    s = metric.get("successful") if isinstance(metric.get("successful"), dict) else metric
    pct = s.get("percentiles") or {}
    out: dict[str, float | None] = {"mean": number(s.get("mean"))}
    out["p50"] = number(pct.get("p50", s.get("median")))
    for p in PERCENTILES[1:]:
        out[p] = number(pct.get(p, s.get(p)))
    return {k: (None if v is None else v * scale) for k, v in out.items()}


def _strategy(b: dict[str, Any]) -> dict[str, Any]:
    for holder in ("config", "args", "scheduler"):
        h = b.get(holder)
        if isinstance(h, dict) and isinstance(h.get("strategy"), dict):
            return h["strategy"]
    st = b.get("strategy")
    return st if isinstance(st, dict) else {}


def read(obj: dict[str, Any], file: str) -> list[Level]:
    """Every benchmark of the report as a normalized level."""
    levels = []
    for i, b in enumerate(obj["benchmarks"]):
        if not isinstance(b.get("metrics"), dict):
            raise InputError(
                f"{file}: field 'benchmarks[{i}].metrics' = {b.get('metrics')!r:.40}; expected a mapping of metric "
                "distributions (time_to_first_token_ms, ...), as `guidellm benchmark` writes"
            )
        row = empty_row(TOOL, file)
        notes: list[str] = []
        st = _strategy(b)
        kind = str(st.get("type_") or st.get("type") or "").lower()
        if kind == "synchronous":
            row.update(load_kind="concurrency", load=1.0)
        elif kind == "concurrent":
            row.update(load_kind="concurrency", load=number(st.get("streams")))
        elif kind in ("constant", "poisson", "async", "asynchronous"):
            row.update(load_kind="request_rate", load=number(st.get("rate")))
        elif kind == "throughput":
            row.update(load_kind="request_rate", load=math.inf, saturation=True)
            notes.append("throughput strategy: every request at once (a saturation run)")
        else:
            notes.append(f"unknown GuideLLM strategy {kind!r}")
        m = b["metrics"]
        for key in ("time_to_first_token_ms", "inter_token_latency_ms", "time_per_output_token_ms", "request_latency"):
            section(m, f"{file}: benchmarks[{i}].metrics", key)  # a distribution, or missing
        fill_latency(row, "ttft", _dist(m.get("time_to_first_token_ms")))
        if m.get("inter_token_latency_ms"):
            fill_latency(row, "itl", _dist(m.get("inter_token_latency_ms")))
        else:
            fill_latency(row, "itl", _dist(m.get("time_per_output_token_ms")))
        row["itl_kind"] = "tpot"
        fill_latency(row, "e2e", _dist(m.get("request_latency"), 1e3))
        row["e2e_source"] = "tool (request_latency, s)" if m.get("request_latency") else None
        totals = (
            section(m, file, "request_totals")
            or section(b, file, "run_stats", "requests_made")
            or section(b, file, "request_totals")
        )
        completed = number(totals.get("successful"))
        failed = (number(totals.get("errored")) or 0.0) + (number(totals.get("incomplete")) or 0.0) if totals else None
        row.update(
            rps=_dist(m.get("requests_per_second")).get("mean"),
            output_tps=_dist(m.get("output_tokens_per_second")).get("mean"),
            completed=completed,
            failed=failed,
            duration_s=number(b.get("duration")),
            input_tokens_mean=_dist(m.get("prompt_token_count")).get("mean"),
            output_tokens_mean=_dist(m.get("output_token_count")).get("mean"),
        )
        levels.append(Level(row, None, notes))
    return levels
