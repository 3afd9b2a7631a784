"""What every benchmark reader shares: the normalized level row, number and unit parsing.

One row per load level, whatever the tool: load (concurrency or request rate), TTFT / ITL / E2E
percentiles in ms, achieved RPS and output tokens/s, completed and failed requests. A reader
fills what its file states and leaves the rest empty; it never copies one percentile into
another's column (a p95-only tool has an empty p99, and the operating point says so).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import InputError

PERCENTILES = ("p50", "p90", "p95", "p99")
LATENCIES = ("ttft", "itl", "e2e")
LATENCY_COLUMNS = tuple(f"{m}_{s}_ms" for m in LATENCIES for s in ("mean", *PERCENTILES))
COLUMNS = (
    "curve",
    "tool",
    "file",
    "load_kind",
    "load",
    "saturation",
    *LATENCY_COLUMNS,
    "itl_kind",
    "e2e_source",
    "rps",
    "output_tps",
    "completed",
    "failed",
    "duration_s",
    "input_tokens_mean",
    "output_tokens_mean",
    "dataset",
    "nominal_input_tokens",
    "nominal_output_tokens",
    "goodput_rps",
    "goodput_source",
)
LOAD_KINDS = ("concurrency", "request_rate")
UNIT_TO_MS = {"ms": 1.0, "s": 1e3, "sec": 1e3, "seconds": 1e3, "us": 1e-3, "ns": 1e-6}


@dataclass
class Level:
    """One load level as a tool reported it, normalized; `requests` holds per-request latencies when the file has them."""

    row: dict[str, Any]
    requests: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    model: str | None = None  # the model the file says it served (vLLM model_id, ...), checked against the sweep


def first_name(value: Any) -> str | None:
    """A model name from a string or the first string of a list (AIPerf `model_names`, GenAI-Perf `model`)."""
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, str) and value else None


def number(value: Any) -> float | None:
    """A float from what the tools write: numbers, strings ("1,234.5", "550", "inf", "Infinity"), None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if not text or text.lower() in ("none", "null", "nan", "n/a", "-"):
            return None
        if text.lower() in ("inf", "+inf", "infinity", "+infinity"):
            return math.inf
        try:
            return float(text)
        except ValueError:
            return None
    return None


def to_ms(value: Any, unit: str) -> float | None:
    """A latency in ms from a value in `unit` (ms, s, sec, us, ns)."""
    v = number(value)
    if v is None:
        return None
    try:
        return v * UNIT_TO_MS[unit.strip().lower()]
    except KeyError as exc:
        raise InputError(f"unknown latency unit {unit!r}; expected one of {', '.join(UNIT_TO_MS)}") from exc


def empty_row(tool: str, file: str) -> dict[str, Any]:
    """A row with every normalized column present and empty."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(tool=tool, file=file, saturation=False)
    return row


def percentiles_from(values: pd.Series | list[float]) -> dict[str, float | None]:
    """mean, p50, p90, p95, p99 with linear interpolation (the method's definition), None when empty."""
    s = pd.Series(values, dtype="float64").dropna()
    if s.empty:
        return dict.fromkeys(("mean", *PERCENTILES))
    out: dict[str, float | None] = {"mean": float(s.mean())}
    for p in PERCENTILES:
        out[p] = float(s.quantile(int(p[1:]) / 100, interpolation="linear"))
    return out


def fill_latency(row: dict[str, Any], metric: str, stats: dict[str, float | None]) -> None:
    """Copy mean/p50/... of one metric into the row's `<metric>_<stat>_ms` columns (only those given)."""
    for stat, value in stats.items():
        if value is not None and stat in ("mean", *PERCENTILES):
            row[f"{metric}_{stat}_ms"] = float(value)


def section(obj: Any, file: str, *keys: str) -> dict[str, Any]:
    """The mapping at obj[k1][k2]...: {} when a key is missing or null; a value that is not a mapping
    (`"metrics": "abc"`, `"input_config": []`) is an InputError naming the file and the dotted field."""
    cur = obj
    for i, key in enumerate(keys):
        if not isinstance(cur, dict):
            return {}
        cur = cur.get(key)
        if cur is None:
            return {}
        if not isinstance(cur, dict):
            field = ".".join(keys[: i + 1])
            raise InputError(f"{file}: field '{field}' = {_short(cur)}; expected a mapping (the tool's JSON layout)")
    return cur if isinstance(cur, dict) else {}


def name_field(obj: dict[str, Any], file: str, key: str) -> str | None:
    """A name field (dataset, model): a string or null; a number or a list there is an InputError."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"{file}: field '{key}' = {_short(value)}; expected a name (a string)")
    return value


def numbers(value: Any, file: str, field: str, *, nested: bool = False, nullable: bool = True) -> list[Any]:
    """A per-request array (vLLM `ttfts`, `output_lens`; `itls` is a list of lists): JSON numbers or null only.

    A string, a mapping or a bare number where a list belongs is an InputError naming the field and the
    first bad index, e.g. `itls[3][0] = 'abc'`, never a float() traceback.
    """
    if not isinstance(value, list):
        raise InputError(f"{file}: field '{field}' = {_short(value)}; expected a list, one entry per request")
    for i, v in enumerate(value):
        if nested:
            if v is None:
                continue
            numbers(v, file, f"{field}[{i}]", nullable=False)
        elif (v is not None or not nullable) and (
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
        ):
            raise InputError(
                f"{file}: field '{field}[{i}]' = {_short(v)}; expected a finite number"
                + (" (or null)" if nullable else "")
            )
    return value


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


def read_json_records(path: Path, file: str | None = None) -> list[Any]:
    """A JSON file or JSON lines (vLLM --append-result, SGLang bench_serving); bare Infinity/NaN accepted."""
    from pipeline import io

    text = io.read_text(path, file)
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{path}: the file is empty; expected a benchmark result (JSON)")
    try:
        return [json.loads(stripped)]
    except json.JSONDecodeError:
        pass
    records = []
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(stripped):
        while pos < len(stripped) and stripped[pos].isspace():
            pos += 1
        if pos >= len(stripped):
            break
        try:
            obj, end = decoder.raw_decode(stripped, pos)
        except json.JSONDecodeError as exc:
            line = stripped.count("\n", 0, pos) + 1
            raise InputError(
                f"{path}: line {line} is not valid JSON ({exc.msg}); expected one result object per line"
            ) from exc
        records.append(obj)
        pos = end
    return records


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def set_load(row: dict[str, Any], request_rate: Any, max_concurrency: Any, notes: list[str]) -> None:
    """vLLM / SGLang load: a finite rate is open loop; an unlimited rate with a concurrency cap is closed loop;
    an unlimited rate with no cap sends everything at once (a saturation run, kept out of C_max)."""
    rate = number(request_rate)
    rate = math.inf if rate is None else rate
    cap = number(max_concurrency)
    if finite(rate):
        row.update(load_kind="request_rate", load=rate)
        if finite(cap):
            notes.append(f"request rate {rate:g}/s capped at {cap:g} concurrent requests")
    elif finite(cap):
        row.update(load_kind="concurrency", load=cap)
    else:
        row.update(load_kind="request_rate", load=math.inf, saturation=True)
        notes.append("unlimited request rate without max_concurrency: every request sent at once (a saturation run)")


def fill_itl(row: dict[str, Any], tpot: dict[str, float | None], itl: dict[str, float | None]) -> None:
    """Per-request TPOT when the tool gives it, else the chunk-level ITL (`itl_kind` says which)."""
    if any(v is not None for v in tpot.values()):
        fill_latency(row, "itl", tpot)
        row["itl_kind"] = "tpot"
    else:
        fill_latency(row, "itl", itl)
        row["itl_kind"] = "itl"


def unit_stats(metric: Any) -> dict[str, float | None]:
    """`{unit, avg, p50, ..., p99}` (AIPerf, GenAI-Perf) as ms."""
    if not isinstance(metric, dict) or not metric:
        return {}
    unit = str(metric.get("unit") or "ms")
    out = {"mean": to_ms(metric.get("avg"), unit)}
    for p in PERCENTILES:
        out[p] = to_ms(metric.get(p), unit)
    return out
