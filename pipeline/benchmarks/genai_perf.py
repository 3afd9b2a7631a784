"""NVIDIA GenAI-Perf `profile_export_genai_perf.json` and `.csv` (one run per folder).

JSON: each metric `{unit, avg, p25..p99}` at the top level, the load in `input_config`
(`concurrency` or `request_rate`). Some builds write ns values as strings. CSV: two sections
(per-request metrics with percentiles, then `Metric,Value` totals), thousands separators in
quoted numbers; the load comes from the JSON twin or the folder name (`concurrency10`).
The same CSV parser reads AIPerf's `profile_export_aiperf.csv` when it has no JSON twin.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from pipeline.benchmarks.common import (
    PERCENTILES,
    Level,
    empty_row,
    fill_latency,
    first_name,
    name_field,
    number,
    section,
    to_ms,
    unit_stats,
)
from pipeline.errors import InputError

TOOL = "genai-perf"
CSV_METRICS = {
    "time to first token": "ttft",
    "inter token latency": "itl",
    "request latency": "e2e",
    "output sequence length": "osl",
    "input sequence length": "isl",
    "request throughput": "rps",
    "output token throughput": "output_tps",
    "request count": "completed",
    "error request count": "failed",
    "benchmark duration": "duration_s",
}
LOAD_RE = re.compile(r"(concurrency|request[_-]?rate)[_-]?(\d+(?:\.\d+)?)", re.IGNORECASE)


def looks_like(obj: Any, name: str = "") -> bool:
    if not isinstance(obj, dict):
        return False
    if "genai_perf" in name:
        return True
    ttft = obj.get("time_to_first_token")
    cfg = obj.get("input_config")
    return (
        isinstance(ttft, dict)
        and "unit" in ttft
        and isinstance(cfg, dict)
        and "loadgen" not in cfg
        and "endpoint_type" in cfg
    )


def _avg(obj: dict[str, Any], key: str) -> float | None:
    m = obj.get(key)
    return number(m.get("avg")) if isinstance(m, dict) else None


def load_from_name(path: Path) -> tuple[str, float] | None:
    """`concurrency10` / `request_rate2.5` in the file's folder or file name."""
    for part in (path.parent.name, path.stem):
        match = LOAD_RE.search(part)
        if match:
            kind = "concurrency" if match.group(1).lower().startswith("concurrency") else "request_rate"
            return kind, float(match.group(2))
    return None


def read(obj: dict[str, Any], file: str, path: Path | None = None) -> Level:
    """One GenAI-Perf JSON export as a normalized level."""
    row = empty_row(TOOL, file)
    cfg = section(obj, file, "input_config")
    rate, conc = number(cfg.get("request_rate")), number(cfg.get("concurrency"))
    if rate is not None:
        row.update(load_kind="request_rate", load=rate)
    elif conc is not None:
        row.update(load_kind="concurrency", load=conc)
    elif path is not None and load_from_name(path):
        kind, load = load_from_name(path)  # type: ignore[misc]
        row.update(load_kind=kind, load=load)
    fill_latency(row, "ttft", unit_stats(obj.get("time_to_first_token")))
    fill_latency(row, "itl", unit_stats(obj.get("inter_token_latency")))
    row["itl_kind"] = "tpot"
    fill_latency(row, "e2e", unit_stats(obj.get("request_latency")))
    row["e2e_source"] = "tool (request_latency)" if obj.get("request_latency") else None
    row.update(
        rps=_avg(obj, "request_throughput"),
        output_tps=_avg(obj, "output_token_throughput"),
        input_tokens_mean=_avg(obj, "input_sequence_length"),
        output_tokens_mean=_avg(obj, "output_sequence_length"),
        nominal_input_tokens=number(cfg.get("synthetic_input_tokens_mean")),
        nominal_output_tokens=number(cfg.get("output_tokens_mean")),
        dataset=name_field(cfg, file, "prompt_source") or name_field(cfg, file, "input_dataset"),
    )
    notes = ["GenAI-Perf exports no request count: completed and failed are unknown"]
    return Level(row, None, notes, first_name(cfg.get("model")))


def read_csv(path: Path, file: str, tool: str = TOOL) -> Level:
    """A two-section GenAI-Perf (or AIPerf) CSV export as a normalized level."""
    from pipeline import io as textio

    text = textio.read_text(path, file)
    row = empty_row(tool, file)
    found: dict[str, Any] = {}
    header: list[str] = []
    for rec in csv.reader(io.StringIO(text)):
        if not rec or not any(c.strip() for c in rec):
            header = []
            continue
        if rec[0].strip().lower() == "metric":
            header = [h.strip().lower() for h in rec]
            continue
        if not header:
            raise InputError(f"{path}: expected a header line starting with 'Metric'; found {rec[:3]}")
        name = rec[0].strip()
        unit_match = re.search(r"\(([^)]*)\)\s*$", name)
        unit = unit_match.group(1).strip().lower() if unit_match else ""
        base = re.sub(r"\s*\([^)]*\)\s*$", "", name).strip().lower()
        tag = CSV_METRICS.get(base)
        if tag is None:
            continue
        values = dict(zip(header[1:], rec[1:], strict=False))
        if tag in ("ttft", "itl", "e2e"):
            u = unit if unit in ("ms", "s", "sec", "us", "ns") else "ms"
            stats = {"mean": to_ms(values.get("avg"), u), **{p: to_ms(values.get(p), u) for p in PERCENTILES}}
            fill_latency(row, tag, stats)
        else:
            found[tag] = number(values.get("avg", values.get("value")))
    if row["ttft_p50_ms"] is None and row["ttft_mean_ms"] is None:
        raise InputError(f"{path}: no 'Time To First Token' row; expected a GenAI-Perf or AIPerf CSV export")
    row["itl_kind"] = "tpot"
    row["e2e_source"] = "tool (request_latency)" if row["e2e_mean_ms"] is not None else None
    row.update(
        rps=found.get("rps"),
        output_tps=found.get("output_tps"),
        input_tokens_mean=found.get("isl"),
        output_tokens_mean=found.get("osl"),
        completed=found.get("completed"),
        failed=found.get("failed"),
        duration_s=found.get("duration_s"),
    )
    load = load_from_name(path)
    if load is None:
        raise InputError(
            f"{path}: a CSV export does not say its load; put it in a folder named like 'concurrency10' "
            "or 'request_rate2', or keep the JSON export beside it"
        )
    row.update(load_kind=load[0], load=load[1])
    return Level(row, None, ["read from the CSV export (no JSON twin)"])
