"""vLLM `vllm bench serve` / `benchmark_serving.py --save-result` JSON.

One object per load level (one file each, or JSON lines with --append-result). `request_rate`
is a number or "inf"; `max_concurrency` set with an infinite rate is a closed-loop level.
Latencies are ms (`mean_/median_/pNN_{ttft,tpot,itl,e2el}_ms`); E2E exists only when e2el was
requested. Per-request arrays (`ttfts`, `itls` in seconds) exist with --save-detailed and in
older versions: they give E2E and goodput. The old key `request_goodput:` (trailing colon) is read.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.benchmarks.common import (
    PERCENTILES,
    Level,
    empty_row,
    fill_itl,
    fill_latency,
    name_field,
    number,
    numbers,
    percentiles_from,
    set_load,
)
from pipeline.errors import InputError

TOOL = "vllm"


def looks_like(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and ("backend" in obj or "endpoint_type" in obj)
        and any(k in obj for k in ("model_id", "num_prompts", "request_throughput", "burstiness"))
        and ("mean_ttft_ms" in obj or "median_ttft_ms" in obj or "p99_ttft_ms" in obj)
    )


def _stats(obj: dict[str, Any], metric: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {"mean": number(obj.get(f"mean_{metric}_ms"))}
    out["p50"] = number(obj.get(f"median_{metric}_ms", obj.get(f"p50_{metric}_ms")))
    for p in PERCENTILES[1:]:
        out[p] = number(obj.get(f"{p}_{metric}_ms"))
    return out


def _requests(obj: dict[str, Any], file: str) -> pd.DataFrame | None:
    ttfts, itls, outs = obj.get("ttfts"), obj.get("itls"), obj.get("output_lens")
    if ttfts is None or itls is None:
        return None
    # --save-detailed arrays: numbers only (itls: a list of gaps per request), checked before any float()
    numbers(ttfts, file, "ttfts")
    numbers(itls, file, "itls", nested=True)
    if outs is not None:
        numbers(outs, file, "output_lens")
    if len(ttfts) != len(itls) or not ttfts:
        return None
    errors = obj.get("errors") or [""] * len(ttfts)
    if not isinstance(errors, list):
        raise InputError(f"{file}: field 'errors' = {errors!r:.40}; expected a list, one error text per request")
    rows = []
    for i, (ttft, gaps) in enumerate(zip(ttfts, itls, strict=True)):
        ok = not (errors[i] if i < len(errors) else "")
        t = number(ttft)
        n_out = (
            int(outs[i]) if isinstance(outs, list) and i < len(outs) and outs[i] is not None else len(gaps or []) + 1
        )
        if not ok or t is None or (t == 0 and not gaps and n_out == 0):
            rows.append({"ttft_ms": None, "tpot_ms": None, "e2e_ms": None, "ok": False})
            continue
        e2e = t + sum(float(g) for g in gaps or [])
        tpot = (e2e - t) / (n_out - 1) if n_out > 1 else None
        rows.append(
            {"ttft_ms": t * 1e3, "tpot_ms": None if tpot is None else tpot * 1e3, "e2e_ms": e2e * 1e3, "ok": True}
        )
    return pd.DataFrame(rows, columns=["ttft_ms", "tpot_ms", "e2e_ms", "ok"])


def read(obj: dict[str, Any], file: str) -> Level:
    """One vLLM result object as a normalized level."""
    row = empty_row(TOOL, file)
    notes: list[str] = []
    set_load(row, obj.get("request_rate"), obj.get("max_concurrency"), notes)
    fill_latency(row, "ttft", _stats(obj, "ttft"))
    fill_itl(row, _stats(obj, "tpot"), _stats(obj, "itl"))
    e2e = _stats(obj, "e2el")
    requests = _requests(obj, file)
    if any(v is not None for v in e2e.values()):
        fill_latency(row, "e2e", e2e)
        row["e2e_source"] = "tool (e2el)"
    elif requests is not None and requests["ok"].any():
        fill_latency(row, "e2e", percentiles_from(requests.loc[requests["ok"], "e2e_ms"]))
        row["e2e_source"] = "per request: ttft + sum(itls)"
    errors = obj.get("errors")
    completed = number(obj.get("completed"))
    failed = number(obj.get("failed"))
    if failed is None and isinstance(errors, list):
        failed = float(sum(1 for e in errors if e))
    if failed is None and completed is not None and number(obj.get("num_prompts")) is not None:
        failed = max(number(obj.get("num_prompts")) - completed, 0.0)
    duration = number(obj.get("duration"))
    rps = number(obj.get("request_throughput"))
    if rps is None and completed and duration:
        rps = completed / duration
    goodput = number(obj.get("request_goodput", obj.get("request_goodput:")))
    row.update(
        rps=rps,
        output_tps=number(obj.get("output_throughput")),
        completed=completed,
        failed=failed,
        duration_s=duration,
        input_tokens_mean=(number(obj.get("total_input_tokens")) or 0) / completed if completed else None,
        output_tokens_mean=(number(obj.get("total_output_tokens")) or 0) / completed if completed else None,
        dataset=name_field(obj, file, "dataset_name") or name_field(obj, file, "dataset"),
        goodput_rps=goodput,
        goodput_source="tool (--goodput)" if goodput is not None else None,
    )
    return Level(row, requests, notes, name_field(obj, file, "model_id"))
