"""A traffic log's requests as a simulator `Trace`, over a chosen window (method.md 7b, fleet replay).

- A normalized request table (the `data/interim/requests.parquet` the ingest stage writes:
  arrival_s, input_tokens, output_tokens, optional hash_ids) is read directly, row group by
  row group, only the columns needed.
- Any other log (CSV / Parquet / JSON lines in any supported layout) goes through the
  project's own reader, `pipeline.traffic.ingest`, with params.yaml's workload settings,
  into a temporary normalized table that is deleted afterwards.

Windows:
- `busiest-hour`: the 60-minute window, starting on a whole minute from the first arrival,
  whose per-minute arrival counts have the highest p99 (numpy's linear percentile over its
  60 minutes); ties go to the window with more arrivals, then to the earliest. A log
  shorter than an hour is taken whole.
- `all`: every request.
- `START:END`: seconds from the log's first arrival, END excluded (e.g. `3600:7200`).

The trace's arrival times are seconds from the window's start. Prefix hash ids (Mooncake /
AIPerf / the sample) are blocks of `HASH_BLOCK_TOKENS` tokens.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.sim.engine import Trace

HASH_BLOCK_TOKENS = 512
"""Tokens per hash block of hash_ids (Mooncake's and the shipped sample's block size)."""
NORMALIZED = ("arrival_s", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class Window:
    """The replayed window, in the log's own seconds ([start_s, end_s)) and relative to its first arrival."""

    kind: str  # busiest-hour | all | range
    start_s: float
    end_s: float
    log_first_s: float
    requests: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_s": round(self.start_s - self.log_first_s, 6),
            "end_s": round(self.end_s - self.log_first_s, 6) if math.isfinite(self.end_s) else None,
            "requests": self.requests,
        }


def parse_window(text: str) -> tuple[str, float, float]:
    """('busiest-hour'|'all'|'range', start, end) from the --window text, else InputError."""
    t = str(text).strip()
    if t in ("busiest-hour", "all"):
        return t, 0.0, math.inf
    if ":" in t:
        a, b = t.split(":", 1)
        try:
            start, end = float(a), float(b)
        except ValueError:
            start = end = math.nan
        if math.isfinite(start) and math.isfinite(end) and 0 <= start < end:
            return "range", start, end
    raise InputError(
        f"--window = {text!r}; expected busiest-hour, all, or START:END in seconds from the log's first "
        "arrival with 0 <= START < END (e.g. 3600:7200)"
    )


def busiest_hour(arrival_s: np.ndarray) -> tuple[float, float]:
    """[start, end) of the hour holding the per-minute p99 peak (see the module docstring), in the log's seconds."""
    a = np.asarray(arrival_s, dtype=np.float64)
    first = float(a[0])
    minute = np.floor((a - first) / 60.0).astype(np.int64)
    counts = np.bincount(minute).astype(np.float64)
    if len(counts) <= 60:
        return first, first + 3600.0
    best = (-1.0, -1.0, 0)
    windows = len(counts) - 59
    step = 100_000
    csum = np.concatenate([[0.0], np.cumsum(counts)])
    for lo in range(0, windows, step):
        hi = min(windows, lo + step)
        view = np.lib.stride_tricks.sliding_window_view(counts, 60)[lo:hi]
        p99 = np.percentile(view, 99, axis=1)
        total = csum[lo + 60 : hi + 60] - csum[lo:hi]
        top = p99.max()
        cand = np.flatnonzero(p99 == top)
        j = cand[np.argmax(total[cand])]  # first among the most arrivals
        key = (float(top), float(total[j]), -(lo + int(j)))
        if key[:2] > best[:2]:
            best = key
    start = first + 60.0 * (-best[2])
    return start, start + 3600.0


def window_bounds(arrivals: np.ndarray, window: str) -> tuple[str, float, float]:
    """(kind, lo, hi): the window's [lo, hi) in the log's own seconds, from the sorted finite arrivals (>= 1)."""
    kind, w_lo, w_hi = parse_window(window)
    first = float(arrivals[0])
    if kind == "busiest-hour":
        lo, hi = busiest_hour(arrivals)
    elif kind == "all":
        lo, hi = first, math.inf
    else:
        lo, hi = first + w_lo, first + w_hi
    return kind, lo, hi


def _is_normalized(path: Path) -> bool:
    if path.is_file() and path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception:
            return False
        return all(c in names for c in NORMALIZED)
    return False


def _ingest(log: str, work: Path, params_path: Path | None) -> Path:
    """The log through the project's traffic reader (params.yaml's workload settings) into work/requests.parquet."""
    from pipeline import params, paths, traffic

    candidate = params_path or paths.PARAMS
    data = params.load(candidate) if (params_path or candidate.exists()) else {}
    wl = params.section("workload", data)
    wl = params.validate_section("workload", {**wl, "source": log, "pattern": None})
    source = traffic.open_source(wl["source"], wl["pattern"], Path.cwd())
    out = work / "requests.parquet"
    traffic.ingest_with(source, out, wl, traffic.Progress(False))
    return out


def trace_from_arrow(t: Any, lo: float, hi: float, origin: float) -> Trace:
    """The rows of an Arrow table (arrival_s, input_tokens, output_tokens, optional hash_ids) with
    lo <= arrival_s < hi and output_tokens > 0, arrivals relative to origin, sorted by arrival (stable)."""
    return _assemble([p for p in [_part(t, lo, hi, origin)] if p is not None])


def _part(t: Any, lo: float, hi: float, origin: float) -> dict[str, np.ndarray] | None:
    import pyarrow.compute as pc

    a = t.column("arrival_s")
    # rows with 0 output tokens are failed requests (the ingest stage drops them too)
    mask = pc.and_(pc.and_(pc.greater_equal(a, lo), pc.less(a, hi)), pc.greater(t.column("output_tokens"), 0))
    t = t.filter(mask)
    if t.num_rows == 0:
        return None
    part = {
        "arrival_s": t.column("arrival_s").to_numpy().astype(np.float64) - origin,
        "input_tokens": t.column("input_tokens").to_numpy(zero_copy_only=False).astype(np.int64),
        "output_tokens": t.column("output_tokens").to_numpy(zero_copy_only=False).astype(np.int64),
    }
    if "hash_ids" in t.column_names:
        h = t.column("hash_ids").combine_chunks()
        h = pc.fill_null(h, [])  # type: ignore[arg-type]
        lens = pc.list_value_length(h).to_numpy(zero_copy_only=False).astype(np.int64)
        part["hash_len"] = lens
        part["hash_values"] = pc.list_flatten(h).to_numpy(zero_copy_only=False).astype(np.int64)
    return part


def _assemble(parts: list[dict[str, np.ndarray]]) -> Trace:
    if not parts:
        return Trace(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), hash_block_tokens=HASH_BLOCK_TOKENS)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cat["arrival_s"], kind="stable")
    arr, inp, out = cat["arrival_s"][order], cat["input_tokens"][order], cat["output_tokens"][order]
    inp = np.maximum(inp, 1)
    if "hash_len" in cat:
        lens = cat["hash_len"]
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        lens_o, starts_o = lens[order], starts[order]
        idx = np.repeat(starts_o - np.concatenate([[0], np.cumsum(lens_o)[:-1]]), lens_o) + np.arange(lens_o.sum())
        hv = cat["hash_values"][idx]
        off = np.concatenate([[0], np.cumsum(lens_o)]).astype(np.int64)
        return Trace(arr, inp, out, off, hv, HASH_BLOCK_TOKENS)
    return Trace(arr, inp, out, hash_block_tokens=HASH_BLOCK_TOKENS)


def _table_trace(path: Path, lo: float, hi: float, origin: float) -> Trace:
    """Rows of a normalized table with lo <= arrival_s < hi, arrivals relative to origin (row group by row group)."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    cols = [*NORMALIZED, *(["hash_ids"] if "hash_ids" in f.schema_arrow.names else [])]
    parts = [_part(f.read_row_group(g, columns=cols), lo, hi, origin) for g in range(f.num_row_groups)]
    return _assemble([p for p in parts if p is not None])


def _arrivals(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    a = pq.read_table(path, columns=["arrival_s"]).column("arrival_s").to_numpy()
    return np.sort(np.asarray(a, dtype=np.float64))


def load_trace(log: str | Path, window: str = "busiest-hour", params_path: Path | None = None) -> tuple[Trace, Window]:
    """The requests of `log` in `window` as a Trace (arrivals from the window's start), and the window.

    InputError (one line) when the log cannot be read or the window holds no arrivals."""
    parse_window(window)
    path = Path(log)
    with tempfile.TemporaryDirectory(prefix="sizing-simulate-") as tmp:
        table = path if _is_normalized(path) else _ingest(str(log), Path(tmp), params_path)
        arrivals = _arrivals(table)
        arrivals = arrivals[np.isfinite(arrivals)]
        if len(arrivals) == 0:
            raise InputError(f"{log}: no requests; expected a traffic log with arrivals")
        first = float(arrivals[0])
        kind, lo, hi = window_bounds(arrivals, window)
        count = int(np.count_nonzero((arrivals >= lo) & (arrivals < hi)))
        if count == 0:
            span = float(arrivals[-1] - first)
            raise InputError(
                f"{log}: --window {window}: no arrivals in [{lo - first:g}, {hi - first:g}) s from the first "
                f"arrival; expected a window inside the log's {span:,.0f} s"
            )
        trace = _table_trace(table, lo, hi, lo)
    if len(trace) == 0:
        raise InputError(f"{log}: --window {window}: every request in the window has 0 output tokens (failed)")
    return trace, Window(kind, lo, hi, first, len(trace))


def iter_chunks(trace: Trace, rows: int = 1 << 16) -> Iterator[Trace]:
    """Consecutive chunks of a trace (for engine.simulate_open_stream)."""
    for s in range(0, len(trace), rows):
        yield trace.slice(s, min(s + rows, len(trace)))
