"""NVIDIA AIPerf `profile_export_aiperf.json` (+ per-request `profile_export.jsonl`).

Two layouts: schema 1.x puts each metric at the top level (`time_to_first_token`,
`request_latency`, `inter_token_latency`, ... each `{unit, avg, p50, ..., p99}`); the early
layout nests them under `records` and tags TTFT `ttft`. `inter_token_latency` is per request
(TPOT) and is preferred over the chunk-level `inter_chunk_latency`. A sweep is a folder of
runs, one per concurrency or request rate (`input_config.loadgen`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.benchmarks.common import Level, empty_row, fill_latency, first_name, number, section, to_ms, unit_stats
from pipeline.errors import InputError

TOOL = "aiperf"
TTFT_TAGS = ("time_to_first_token", "ttft")


def _metrics(obj: dict[str, Any]) -> dict[str, Any]:
    if isinstance(obj.get("records"), dict):
        return obj["records"]
    return {k: v for k, v in obj.items() if isinstance(v, dict) and "unit" in v}


def looks_like(obj: Any, name: str = "") -> bool:
    if not isinstance(obj, dict):
        return False
    if "aiperf" in name:
        return True
    m = _metrics(obj)
    loadgen = (obj.get("input_config") or {}).get("loadgen") if isinstance(obj.get("input_config"), dict) else None
    return any(t in m for t in TTFT_TAGS) and ("records" in obj or loadgen is not None or "schema_version" in obj)


def _scalar(m: dict[str, Any], *tags: str) -> float | None:
    for tag in tags:
        if isinstance(m.get(tag), dict):
            return number(m[tag].get("avg"))
    return None


def _requests(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    rows = []
    from pipeline import io

    for lineno, line in enumerate(io.read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: line {lineno} is not valid JSON ({exc.msg}); expected one record per line"
            ) from None
        if not isinstance(rec, dict):
            raise InputError(f"{path}: line {lineno} is not a JSON object; expected one AIPerf record per line")
        m = section(rec, f"{path}: line {lineno}", "metrics")
        ttft = next((m[t] for t in TTFT_TAGS if t in m), None)
        ok = not rec.get("error") and ttft is not None
        if not ok:
            rows.append({"ttft_ms": None, "tpot_ms": None, "e2e_ms": None, "ok": False})
            continue
        itl = m.get("inter_token_latency")
        lat = m.get("request_latency")
        rows.append(
            {
                "ttft_ms": to_ms(ttft["value"], ttft.get("unit", "ms")),
                "tpot_ms": to_ms(itl["value"], itl.get("unit", "ms")) if itl else None,
                "e2e_ms": to_ms(lat["value"], lat.get("unit", "ms")) if lat else None,
                "ok": True,
            }
        )
    return pd.DataFrame(rows, columns=["ttft_ms", "tpot_ms", "e2e_ms", "ok"]) if rows else None


def read(obj: dict[str, Any], file: str, path: Path | None = None) -> Level:
    """One AIPerf run as a normalized level; the per-request JSONL beside it gives goodput."""
    row = empty_row(TOOL, file)
    notes: list[str] = []
    m = _metrics(obj)
    loadgen = section(obj, file, "input_config", "loadgen")
    rate = number(loadgen.get("request_rate"))
    conc = number(loadgen.get("concurrency"))
    if rate is not None:
        row.update(load_kind="request_rate", load=rate)
        if conc is not None:
            notes.append(f"request rate {rate:g}/s capped at concurrency {conc:g}")
    elif conc is not None:
        row.update(load_kind="concurrency", load=conc)
    fill_latency(row, "ttft", unit_stats(next((m[t] for t in TTFT_TAGS if t in m), None)))
    if "inter_token_latency" in m:
        fill_latency(row, "itl", unit_stats(m["inter_token_latency"]))
        row["itl_kind"] = "tpot"
    elif "inter_chunk_latency" in m:
        fill_latency(row, "itl", unit_stats(m["inter_chunk_latency"]))
        row["itl_kind"] = "itl"
    if "request_latency" in m:
        fill_latency(row, "e2e", unit_stats(m["request_latency"]))
        row["e2e_source"] = "tool (request_latency)"
    completed = _scalar(m, "request_count")
    failed = _scalar(m, "error_request_count")
    if failed is None and isinstance(obj.get("error_summary"), list):
        failed = float(sum(int(e.get("count") or 0) for e in obj["error_summary"]))
    isl = _scalar(m, "input_sequence_length")
    osl = _scalar(m, "output_sequence_length")
    row.update(
        rps=_scalar(m, "request_throughput"),
        output_tps=_scalar(m, "output_token_throughput"),
        completed=completed,
        failed=failed if failed is not None else 0.0,
        duration_s=_scalar(m, "benchmark_duration"),
        input_tokens_mean=isl,
        output_tokens_mean=osl,
        dataset="synthetic" if section(obj, file, "input_config", "input") else None,
    )
    prompt = section(obj, file, "input_config", "input", "prompt")
    row["nominal_output_tokens"] = number(section(prompt, file, "output_tokens").get("mean"))
    row["nominal_input_tokens"] = number(section(prompt, file, "input_tokens").get("mean"))
    requests = _requests(path.parent / "profile_export.jsonl") if path is not None else None
    model = first_name(section(obj, file, "input_config", "endpoint").get("model_names"))
    return Level(row, requests, notes, model)
