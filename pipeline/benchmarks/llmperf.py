"""Ray LLMPerf `*_summary.json` (flattened `results_*` keys, seconds, some numbers as strings).

One summary per concurrency (`num_concurrent_requests`). `results_inter_token_latency_s_*`
is per request (TPOT). The `*_individual_responses.json` list beside it (or `individual_NAME.json`)
gives per-request latencies for goodput.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.benchmarks.common import PERCENTILES, Level, empty_row, fill_latency, name_field, number, to_ms

TOOL = "llmperf"


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and "num_concurrent_requests" in obj and any(k.startswith("results_") for k in obj)


def is_individual(obj: Any) -> bool:
    return isinstance(obj, list) and bool(obj) and isinstance(obj[0], dict) and "ttft_s" in obj[0]


def _stats(obj: dict[str, Any], stem: str) -> dict[str, float | None]:
    out = {"mean": to_ms(obj.get(f"results_{stem}_s_mean"), "s")}
    for p in PERCENTILES:
        out[p] = to_ms(obj.get(f"results_{stem}_s_quantiles_{p}"), "s")
    return out


def individual_path(path: Path) -> Path | None:
    """The per-request file of a summary: NAME_individual_responses.json or individual_NAME.json."""
    stem = path.stem.removesuffix("_summary")
    for candidate in (path.with_name(f"{stem}_individual_responses.json"), path.with_name(f"individual_{path.name}")):
        if candidate.exists():
            return candidate
    return None


def _requests(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    rows = []
    from pipeline import io
    from pipeline.errors import InputError

    try:
        records = json.loads(io.read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected LLMPerf records") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError(f"{path}: expected a list of per-request records (LLMPerf individual responses)")
    for r in records:
        ok = not r.get("error_code") and not r.get("error_msg")
        rows.append(
            {
                "ttft_ms": to_ms(r.get("ttft_s"), "s") if ok else None,
                "tpot_ms": to_ms(r.get("inter_token_latency_s"), "s") if ok else None,
                "e2e_ms": to_ms(r.get("end_to_end_latency_s"), "s") if ok else None,
                "ok": ok,
            }
        )
    return pd.DataFrame(rows, columns=["ttft_ms", "tpot_ms", "e2e_ms", "ok"])


def read(obj: dict[str, Any], file: str, path: Path | None = None) -> Level:
    """One LLMPerf summary as a normalized level (closed loop at num_concurrent_requests)."""
    row = empty_row(TOOL, file)
    row.update(load_kind="concurrency", load=number(obj.get("num_concurrent_requests")))
    fill_latency(row, "ttft", _stats(obj, "ttft"))
    fill_latency(row, "itl", _stats(obj, "inter_token_latency"))
    row["itl_kind"] = "tpot"
    fill_latency(row, "e2e", _stats(obj, "end_to_end_latency"))
    row["e2e_source"] = "tool (end_to_end_latency, s)"
    completed = number(obj.get("results_num_completed_requests"))
    per_min = number(obj.get("results_num_completed_requests_per_min"))
    row.update(
        rps=per_min / 60 if per_min is not None else None,
        output_tps=number(obj.get("results_mean_output_throughput_token_per_s")),
        completed=completed,
        failed=number(obj.get("results_number_errors")),
        input_tokens_mean=number(obj.get("results_number_input_tokens_mean")),
        output_tokens_mean=number(obj.get("results_number_output_tokens_mean")),
        nominal_input_tokens=number(obj.get("mean_input_tokens")),
        nominal_output_tokens=number(obj.get("mean_output_tokens")),
        dataset=name_field(obj, file, "name"),
    )
    notes = ["RPS = results_num_completed_requests_per_min / 60"]
    if row["output_tps"] is not None:
        notes.append("output tokens/s = results_mean_output_throughput_token_per_s (aggregate over the run)")
    ind = individual_path(path) if path is not None else None
    return Level(row, _requests(ind), notes, name_field(obj, file, "model"))
