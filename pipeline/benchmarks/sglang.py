"""SGLang `python -m sglang.bench_serving --output-file` JSON lines (one line per run).

Unlimited rate is written as a bare `Infinity`. Older key sets (Dec 2024) give only medians
for TTFT and ITL plus mean/median E2E: the p99 columns stay empty and the operating point says
which percentile it used. `random_input_len`/`random_output_len` are the nominal lengths when
the dataset is `random`; achieved means come from the token totals.
"""

from __future__ import annotations

from typing import Any

from pipeline.benchmarks.common import (
    PERCENTILES,
    Level,
    empty_row,
    fill_itl,
    fill_latency,
    name_field,
    number,
    set_load,
)

TOOL = "sglang"


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and (
        "total_output_tokens_retokenized" in obj
        or "median_e2e_latency_ms" in obj
        or ("random_input_len" in obj and "backend" in obj)
    )


def _stats(obj: dict[str, Any], stem: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "mean": number(obj.get(f"mean_{stem}_ms")),
        "p50": number(obj.get(f"median_{stem}_ms")),
    }
    for p in PERCENTILES[1:]:
        out[p] = number(obj.get(f"{p}_{stem}_ms"))
    return out


def read(obj: dict[str, Any], file: str) -> Level:
    """One bench_serving line as a normalized level."""
    row = empty_row(TOOL, file)
    notes: list[str] = []
    set_load(row, obj.get("request_rate"), obj.get("max_concurrency"), notes)
    fill_latency(row, "ttft", _stats(obj, "ttft"))
    fill_itl(row, _stats(obj, "tpot"), _stats(obj, "itl"))
    e2e = _stats(obj, "e2e_latency")
    if any(v is not None for v in e2e.values()):
        fill_latency(row, "e2e", e2e)
        row["e2e_source"] = "tool"
    completed = number(obj.get("completed"))
    duration = number(obj.get("duration"))
    rps = number(obj.get("request_throughput"))
    if rps is None and completed and duration:
        rps = completed / duration
        notes.append("RPS = completed / duration (the file has no request_throughput)")
    dataset = name_field(obj, file, "dataset_name")
    nominal_in = nominal_out = None
    if dataset and str(dataset).startswith("random"):
        nominal_in, nominal_out = number(obj.get("random_input_len")), number(obj.get("random_output_len"))
    num_prompts = number(obj.get("num_prompts"))
    failed = number(obj.get("failed"))
    if failed is None and num_prompts is not None and completed is not None:
        failed = max(num_prompts - completed, 0.0)
    row.update(
        rps=rps,
        output_tps=number(obj.get("output_throughput")),
        completed=completed,
        failed=failed if failed is not None else (0.0 if completed is not None else None),
        duration_s=duration,
        input_tokens_mean=(number(obj.get("total_input_tokens")) or 0) / completed if completed else None,
        output_tokens_mean=(number(obj.get("total_output_tokens")) or 0) / completed if completed else None,
        dataset=dataset,
        nominal_input_tokens=nominal_in,
        nominal_output_tokens=nominal_out,
    )
    if failed is None:
        notes.append("the file has no failed count or num_prompts: failures are assumed 0")
    return Level(row, None, notes)
