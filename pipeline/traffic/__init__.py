"""Step 1 input: read a traffic log of any supported layout into the normalized request table.

The log is scanned by DuckDB (CSV, Parquet incl. hive partitions, JSON lines; files, folders,
globs), validated by a great-expectations suite that DuckDB evaluates over the whole log in one
aggregate (quality.run_sql_suite), and written as one sorted Parquet file: a log already in that
order (one streamed first pass tells) is written as read, with no sort, and the same bytes. It is
never loaded into pandas; DuckDB's memory is capped by workload.memory_limit. Progress (rows, rate,
ETA of each pass) goes to stderr only (Progress).
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pipeline import io
from pipeline.errors import InputError
from pipeline.traffic import layouts, sources
from pipeline.traffic.layouts import REQUIRED, Layout
from pipeline.traffic.sources import SCAN_FILES, Source, sql_ident

if TYPE_CHECKING:  # great-expectations loads only when a log is ingested, not for a profile
    from pipeline import quality

UNIT_DIVISOR = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
STRING_COLUMNS = ("tenant", "model", "tier", "session_id")
LATENCY_COLUMNS = ("ttft_ms", "e2e_ms")
OUTPUT_ORDER = (
    "arrival_s",
    "input_tokens",
    "output_tokens",
    *STRING_COLUMNS,
    *LATENCY_COLUMNS,
    "hash_ids",
)


@dataclass
class Ingested:
    """What ingest read, checked and wrote; every count a report shows comes from here."""

    source: Source
    layout: Layout
    timestamp_unit: str
    columns: dict[str, str]
    rows_read: int
    rows_written: int
    failed_rows: int
    duplicate_rows: int
    validation: quality.ValidationSummary
    warnings: list[dict[str, Any]] = field(default_factory=list)
    written: str = "sorted"  # how requests.parquet was written: sorted, or as read (already in order); same bytes

    def provenance(self, root: Path | None = None) -> dict[str, Any]:
        """Which files, layout and mapping produced the request table."""
        from pipeline.paths import display_path

        files = [display_path(f, root) for f in self.source.files]
        return {
            "source": self.source.label,
            "files": files[:20] + ([f"... {len(files) - 20} more"] if len(files) > 20 else []),
            "file_count": len(files),
            "format": self.layout.name,
            "layout": self.layout.description,
            "columns": dict(sorted(self.columns.items())),
            "timestamp_unit": self.timestamp_unit,
        }


PLAIN_EVERY_S = 10.0  # off a terminal: one progress line per pass at most this often (plus its last line)
POLL_S = 0.25  # how often DuckDB's progress of a running pass is read


class Progress:
    """Ingest progress on stderr, never stdout or any output file: one line per step and, for each pass over
    the log, its rows, rate and ETA. On a terminal the pass is a tqdm bar; otherwise (a log file, CI, a
    notebook kernel) a few plain lines: one every PLAIN_EVERY_S seconds at most, and the pass's total."""

    def __init__(self, enabled: bool = True, stream: Any = None, every_s: float = PLAIN_EVERY_S) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s

    def __call__(self, message: str, final: bool = False) -> None:
        """One step's line (`final` is accepted for old callers; every line ends the line)."""
        if self.enabled:
            self.stream.write(message + "\n")
            self.stream.flush()

    def track(self, what: str, total: int | None) -> PassProgress:
        """A pass over `total` rows (None: not known yet): call .update(rows_done) as it runs, .close() at its end."""
        return PassProgress(self, what, total)


class PassProgress:
    """One pass's rows, rate and ETA (Progress.track)."""

    def __init__(self, owner: Progress, what: str, total: int | None) -> None:
        self.owner, self.what, self.total = owner, what, total
        self.start = self.last_line = time.monotonic()
        self.done = 0
        self.bar = None
        if owner.enabled and owner.tty:
            import shutil

            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"  {what}",
                unit=" rows",
                unit_scale=True,
                file=owner.stream,
                leave=False,
                mininterval=0.5,
                # 80 x 24 where the terminal reports no size: tqdm would draw nothing
                ncols=shutil.get_terminal_size().columns,
                nrows=shutil.get_terminal_size().lines,
            )

    def update(self, done: int, line: bool = True) -> None:
        """`done` rows of the pass are through (a running total); `line`: a plain line may be due."""
        done = max(self.done, min(done, self.total) if self.total else done)
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        if line and self.owner.enabled and not self.owner.tty and now - self.last_line >= self.owner.every_s:
            self.last_line = now
            self.owner(f"  {self.what}: {self._figures(now)}")

    def _figures(self, now: float, final: bool = False) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if final:
            return f"{self.done:,} rows in {elapsed:,.1f} s ({_rate(rate)})"
        if not self.total:
            return f"{self.done:,} rows, {_rate(rate)}"
        left = f", about {(self.total - self.done) / rate:,.0f} s left" if rate > 0 else ""
        return f"{self.done:,} of {self.total:,} rows ({self.done / self.total:.0%}), {_rate(rate)}{left}"

    def stop(self) -> None:
        """The pass ended early (an error follows): the bar goes, no last line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self, done: int | None = None) -> None:
        """The pass is over (`done`: its final row count): its last line, with rows and rate."""
        if done is not None:
            self.total = self.total or done
            self.update(done, line=False)
        if self.bar is not None:
            self.bar.close()
        self.owner(f"  {self.what}: {self._figures(time.monotonic(), final=True)}")


def _rate(rows_per_s: float) -> str:
    if rows_per_s >= 1e6:
        return f"{rows_per_s / 1e6:,.2f}M rows/s"
    return f"{rows_per_s:,.0f} rows/s"


def _polling(con: duckdb.DuckDBPyConnection, bar: PassProgress, run: Callable[[], Any]) -> Any:
    """Run one DuckDB statement (`run`) while a thread reads its progress (DuckDB's query_progress, percent)."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(POLL_S):
            with contextlib.suppress(duckdb.Error, RuntimeError):
                pct = con.query_progress()
                if pct > 0 and bar.total:
                    bar.update(int(bar.total * pct / 100))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        return run()
    except BaseException:
        bar.stop()
        raise
    finally:
        stop.set()
        watcher.join()


def _describe(con: duckdb.DuckDBPyConnection, scan: str, label: str) -> list[tuple[str, str]]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    except duckdb.Error as exc:
        raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None
    return [(r[0], r[1]) for r in rows if r[0] != "filename"]


def _first_non_utf8(path: Path) -> str | None:
    """'line N, field F (bytes ..)' of the first line of a plain-text log that is not UTF-8 (the error path only)."""
    if not path.is_file() or path.suffix.lower() in (".gz", ".zst"):
        return None
    with path.open("rb") as fh:
        header = b""
        for number, raw in enumerate(fh, start=1):
            header = header or raw
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.end].hex(" ")
                text = raw.decode("utf-8", "replace")
                field = ""
                if path.suffix.lower() in (".csv", ".tsv", ".txt") and number > 1:
                    names = header.decode("utf-8", "replace").strip().split(",")
                    cells = text.split(",")
                    idx = next((i for i, c in enumerate(cells) if "\ufffd" in c), None)
                    if idx is not None and idx < len(names):
                        field = f", field '{names[idx]}'"
                return f"line {number}{field} (bytes {bad})"
    return None


def _first_line(exc: BaseException) -> str:
    """DuckDB's read error as one line; the common ones (bad encoding, bad CSV rows) in plain words."""
    text = str(exc).strip()
    low = text.lower()
    line = re.search(r"(?:on line|in line):?\s*(\d+)", text, re.IGNORECASE)
    where = f"line {line.group(1)}" if line else "a line"
    if "utf-8" in low or "unicode" in low:
        named = re.search(r'(?:file = |in file ")([^"\n]+)', text)
        found = _first_non_utf8(Path(named.group(1))) if named else None
        if found:
            where = found
        return (
            f"{where} holds bytes that are not UTF-8 text; expected a UTF-8 encoded log "
            "(convert it, e.g. iconv -f latin1 -t utf-8 IN > OUT)"
        )
    if "expected number of columns" in low or "too many columns" in low:
        return f"{where} has a different number of fields than the header; expected one value per header column"
    return text.split("\n\nLINE")[0].split("\n  file =")[0].replace("\n", " ").strip()


UNIT_NAME_HINTS = (
    (("_ms", "millis", "msec"), "ms"),
    (("_us", "micros", "usec"), "us"),
    (("_ns", "nanos", "nsec"), "ns"),
    (("_s", "_sec", "_secs", "seconds"), "s"),
)
EPOCH_2000_S = 946_684_800.0
SPARSE_RPS = 1 / 60  # read as seconds, fewer arrivals than one a minute on average
MAX_PLAUSIBLE_RPS = 10_000


def _resolve_unit(
    con: duckdb.DuckDBPyConnection, scan: str, column: str, col_type: str, requested: str
) -> tuple[str, dict[str, Any] | None]:
    """The timestamp unit, and a warning when it was inferred from the arrival rate.

    As requested, else from the column type, else from the magnitude: epoch values (after 2000)
    give s/ms/us/ns by size. Trace-relative numbers (below epoch 2000) are ambiguous between s and ms:
    the column name decides (ts_ms, time_s, ...), else the implied rate: whole numbers that, read as
    seconds, give fewer than one arrival a minute but, read as ms, a plausible rate are milliseconds
    (a relative-ms log read as seconds sizes for 0 req/s). That guess is always reported.
    A column that is mostly numbers is numeric: its few non-numbers fail validation on their own rows.
    """
    if requested != "auto":
        return requested, None
    if "TIMESTAMP" in col_type.upper() or col_type.upper() == "DATE":
        return "datetime", None
    ident = sql_ident(column)
    try:
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE TRY_CAST({ident} AS DOUBLE) IS NOT NULL), "
            f"count({ident}), max(abs(TRY_CAST({ident} AS DOUBLE))) FROM (SELECT {ident} FROM {scan} LIMIT 10000)"
        ).fetchall()[0]
    except duckdb.Error as exc:
        raise InputError(f"{scan_label(scan)}: cannot be read: {_first_line(exc)}") from None
    numeric, non_null, biggest = row
    if non_null and numeric < non_null / 2:
        return "datetime", None
    biggest = biggest or 0.0
    # Epoch seconds now are ~1.8e9; the same instant is ~1.8e12 ms, 1.8e15 us, 1.8e18 ns.
    if biggest >= 1e17:
        return "ns", None
    if biggest >= 1e14:
        return "us", None
    if biggest >= 1e11:
        return "ms", None
    if biggest >= EPOCH_2000_S:
        return "s", None
    name = column.lower()
    for suffixes, unit in UNIT_NAME_HINTS:
        if name.endswith(suffixes):
            return unit, None
    return _relative_unit(con, scan, column)


def _relative_unit(con: duckdb.DuckDBPyConnection, scan: str, column: str) -> tuple[str, dict[str, Any] | None]:
    """s or ms for trace-relative numbers, from the whole column's count, span and integrality."""
    x = f"TRY_CAST({sql_ident(column)} AS DOUBLE)"
    try:
        n, lo, hi, fractional = con.execute(
            f"SELECT count(x), min(x), max(x), count(*) FILTER (WHERE x != floor(x)) FROM (SELECT {x} AS x FROM {scan})"
        ).fetchall()[0]
    except duckdb.Error as exc:
        raise InputError(f"{scan_label(scan)}: cannot be read: {_first_line(exc)}") from None
    span = (hi or 0.0) - (lo or 0.0)
    if n < 100 or span <= 0 or fractional > n / 2:
        return "s", None
    as_s, as_ms = n / span, n / (span / 1e3)
    if as_s >= SPARSE_RPS or as_ms > MAX_PLAUSIBLE_RPS:
        return "s", None
    return "ms", {
        "code": "timestamp_unit_inferred",
        "message": f"column '{column}' holds trace-relative whole numbers ({lo:,.0f} to {hi:,.0f}) and "
        f"workload.timestamp_unit is auto: read as seconds, {n:,} requests over {span / 86400:,.1f} days would be "
        f"{as_s:.4g} req/s (fewer than one a minute, a per-minute p95 of about 0); read as milliseconds they are "
        f"{as_ms:,.4g} req/s over {span / 3.6e6:,.2f} h. Read as MILLISECONDS. "
        "If that is wrong, set workload.timestamp_unit: s.",
    }


def check_rate_possible(
    label: str, mapping: dict[str, str], rows_read: int, failed: int, first: float, last: float
) -> None:
    """Before anything is written: at least 2 served requests, not all at one instant (else no arrival rate)."""
    served = rows_read - failed
    if served == 0:
        raise InputError(
            f"{label}: column '{mapping['output_tokens']}' (output_tokens): all {rows_read:,} rows have 0 output "
            "tokens (failed requests, excluded), so no request is left to profile; expected a log of served "
            "requests. No outputs were written."
        )
    if served == 1 or last <= first:
        what = "a single request" if served == 1 else f"all {rows_read:,} requests arrive at the same instant"
        raise InputError(
            f"{label}: column '{mapping['arrival_s']}' (arrival_s): {what} (arrival_s = {first:,.3f} s); expected "
            "at least 2 requests at different times, since an arrival rate needs a time span. No outputs were written."
        )


def scan_label(scan: str) -> str:
    """The first file a scan view reads (for messages)."""
    return SCAN_FILES.get(scan, scan)


def check_hash_ids(con: duckdb.DuckDBPyConnection, scan: str, column: str, label: str) -> None:
    """Every hash_ids value is a list of integers (or empty); else one error with example rows."""
    ident = sql_ident(column)
    bad = _hash_ids_bad_sql(column)
    try:
        rows = con.execute(
            f"SELECT count(*) OVER (), r, CAST(v AS VARCHAR) FROM (SELECT row_number() OVER () AS r, {ident} AS v, "
            f"{bad} AS bad FROM {scan}) WHERE bad ORDER BY r LIMIT 5"
        ).fetchall()
    except duckdb.Error as exc:
        raise InputError(f"{label}: column '{column}' (hash_ids) cannot be read: {_first_line(exc)}") from None
    if rows:
        examples = ", ".join(f"row {r}: {v[:40]!r}" for _, r, v in rows)
        raise InputError(
            f"{label}: column '{column}' (hash_ids): {rows[0][0]:,} rows are not lists of integers, e.g. {examples}; "
            "expected a list of integer prefix-block hashes such as [12, 13, 14]. No outputs were written."
        )


def _arrival_expr(column: str, unit: str) -> str:
    ident = sql_ident(column)
    if unit == "datetime":
        # Strings with an offset are converted to UTC; strings without a zone are read as UTC.
        return f"epoch_us(TRY_CAST({ident} AS TIMESTAMPTZ)) / 1e6"
    return f"TRY_CAST({ident} AS DOUBLE) / {UNIT_DIVISOR[unit]}"


def _normalized_sql(
    scan: str, mapping: dict[str, str], unit: str, with_raw: bool, bad_hash_ids: str | None = None
) -> str:
    """The normalized columns of `mapping` over `scan` (with raw text copies and the file for validation);
    `bad_hash_ids`: SQL of a boolean column `_bad_hash_ids` added last (the first pass's stream)."""
    parts = [
        f"{_arrival_expr(mapping['arrival_s'], unit)} AS arrival_s",
        f"TRY_CAST({sql_ident(mapping['input_tokens'])} AS DOUBLE) AS input_tokens",
        f"TRY_CAST({sql_ident(mapping['output_tokens'])} AS DOUBLE) AS output_tokens",
    ]
    for name in STRING_COLUMNS:
        if name in mapping:
            parts.append(f"CAST({sql_ident(mapping[name])} AS VARCHAR) AS {sql_ident(name)}")
    for name in LATENCY_COLUMNS:
        if name in mapping:
            parts.append(f"TRY_CAST({sql_ident(mapping[name])} AS DOUBLE) AS {sql_ident(name)}")
    if with_raw:
        for name in REQUIRED:
            parts.append(f"CAST({sql_ident(mapping[name])} AS VARCHAR) AS {sql_ident('_raw_' + name)}")
        parts.append("filename AS _file")
    elif "hash_ids" in mapping:
        parts.append(f"CAST({sql_ident(mapping['hash_ids'])} AS BIGINT[]) AS hash_ids")
    if bad_hash_ids is not None:
        parts.append(f"({bad_hash_ids}) AS _bad_hash_ids")
    return f"SELECT {', '.join(parts)} FROM {scan}"


SPAN_AND_DUPLICATES = (
    "SELECT min(arrival_s), max(arrival_s), count(*) FILTER (WHERE output_tokens = 0), "
    "count(*) - count(DISTINCT (arrival_s, input_tokens, output_tokens))"
)
STREAM_BATCH_ROWS = 1_000_000


@dataclass
class FirstPass:
    """What one streamed pass over the normalized log's arrivals and token counts, in file order, found.

    `ordered`: the rows already stand in the written order (OUTPUT_ORDER, ascending, every column a sort
    key), so the sorted write needs no sort: arrival, input and output never decrease from one row to the
    next, and where all three repeat, no other written column exists (or the pass cannot prove the order
    and `ordered` is False). `span`: first and last arrival, rows with 0 output tokens, and duplicate rows
    (count minus distinct (arrival, input, output)): adjacent repeats once the three never decrease, else
    DuckDB's count(DISTINCT).
    """

    unit: str
    mapping: dict[str, str]
    rows: int
    span: tuple[float, float, int, int]
    ordered: bool
    bad_hash_ids: int | None  # rows whose hash_ids are not lists of integers (None: no hash_ids column)
    first_zero_row: int | None  # the first row with 0 output tokens, counted from 0 in file order (None: none)


def _hash_ids_bad_sql(column: str) -> str:
    ident = sql_ident(column)
    c = f"TRY_CAST({ident} AS BIGINT[])"
    return f"{ident} IS NOT NULL AND ({c} IS NULL OR len({c}) != list_count({c}))"


def _stream_order(
    con: duckdb.DuckDBPyConnection, norm: str, rows: int, other_keys: bool, bar: PassProgress, flagged: bool = False
) -> tuple[bool, tuple[float, float, int, int | None], int | None, int | None] | None:
    """(ordered, (first, last, zero-output rows, duplicates or None), first zero-output row, rows with bad
    hash_ids or None) from one streamed pass over `norm` (_normalized_sql; `flagged`: it has the `_bad_hash_ids`
    column, which is counted); None if any arrival or token count is NULL (validation then reports it)."""
    import numpy as np
    import pyarrow.compute as pc

    reader = con.sql(
        f"SELECT arrival_s, input_tokens, output_tokens{', _bad_hash_ids' if flagged else ''} FROM ({norm}) AS norm"
    ).to_arrow_reader(STREAM_BATCH_ROWS)
    first, last, zero, inversions, repeats, done, bad = np.inf, -np.inf, 0, 0, 0, 0, 0
    first_zero: int | None = None
    prev: tuple[float, float, float] | None = None  # the last row so far, for the pair across two batches
    # Few passes over each batch: a minimum or maximum is NaN when any value is (a NULL reads as NaN); a batch whose
    # smallest output is above 0 has no zero; only the rows whose arrival equals the one before (a tie) are
    # compared on their token counts.
    for batch in reader:
        a, i, o = (np.asarray(batch.column(k).to_numpy(zero_copy_only=False), dtype=np.float64) for k in range(3))
        if not len(a):
            continue
        lo, hi, o_min = float(a.min()), float(a.max()), float(o.min())
        if np.isnan(lo) or np.isnan(hi) or np.isnan(float(i.min())) or np.isnan(o_min):
            return None
        if flagged:
            bad += int(pc.sum(batch.column(3)).as_py() or 0)
        first, last = min(first, lo), max(last, hi)
        if o_min <= 0:
            zeros = np.flatnonzero(o == 0)
            if len(zeros) and first_zero is None:
                first_zero = done + int(zeros[0])
            zero += len(zeros)
        done += len(a)
        if prev is not None:
            less, same = _pair_order(prev, (float(a[0]), float(i[0]), float(o[0])))
            inversions += less
            repeats += same
        prev = (float(a[-1]), float(i[-1]), float(o[-1]))
        inversions += int(np.count_nonzero(a[1:] < a[:-1]))
        ties = np.flatnonzero(a[1:] == a[:-1])
        if len(ties):
            i0, i1, o0, o1 = i[ties], i[ties + 1], o[ties], o[ties + 1]
            same_i = i1 == i0
            inversions += int(np.count_nonzero((i1 < i0) | (same_i & (o1 < o0))))
            repeats += int(np.count_nonzero(same_i & (o1 == o0)))
        bar.update(done)
    if done != rows:
        return None
    ordered = inversions == 0 and (repeats == 0 or not other_keys)
    return ordered, (first, last, zero, repeats if inversions == 0 else None), first_zero, bad if flagged else None


GIL_SWITCH_S = 0.0005  # the interpreter's switch interval during the first pass (Python's default: 0.005 s)


@contextlib.contextmanager
def _quick_gil_handoff() -> Iterator[None]:
    """While great-expectations imports on its thread (pure Python, holding the interpreter lock), the first pass's
    stream needs the lock for a moment between DuckDB's batches, about 15 times a batch: each wait for the importing
    thread to hand it over lasts up to the switch interval. A 0.5 ms interval instead of 5 ms keeps DuckDB fed
    (about 0.3 s less on the 10-million-row benchmark log); the interval is restored afterwards."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, GIL_SWITCH_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _pair_order(before: tuple[float, float, float], after: tuple[float, float, float]) -> tuple[int, int]:
    """(1 if `after` sorts before `before`, 1 if the two are equal) for two consecutive (arrival, input, output)."""
    return int(after < before), int(after == before)


def _first_pass(
    con: duckdb.DuckDBPyConnection,
    scan: str,
    mapping: dict[str, str],
    types: dict[str, str],
    unit: str,
    progress: Progress,
    before_stream: Callable[[str, int], None] | None = None,
) -> FirstPass | None:
    """The log's row count, span, duplicates, order and bad hash_ids, while great-expectations loads; None on
    any error or NULL, so that every check reports in its own order afterwards (this pass only saves time).

    `before_stream(unit, rows)` runs once the unit and row count are known, before the stream: DuckDB work
    that holds no Python lock goes there, while the import (pure Python) has the interpreter; the stream's
    per-batch numpy work needs it."""
    try:
        unit, _ = _resolve_unit(con, scan, mapping["arrival_s"], types[mapping["arrival_s"]], unit)
        rows = con.execute(f"SELECT count(*) FROM {scan}").fetchall()[0][0]
        if not rows:
            return None
        if before_stream is not None:
            before_stream(unit, rows)
        norm = _normalized_sql(scan, {k: v for k, v in mapping.items() if k != "hash_ids"}, unit, False)
        # the rows whose hash_ids are not lists of integers ride in the same stream (no scan of their own)
        bad = _hash_ids_bad_sql(mapping["hash_ids"]) if "hash_ids" in mapping else None
        stream = _normalized_sql(scan, {k: v for k, v in mapping.items() if k in REQUIRED}, unit, False, bad)
        written = [c for c in OUTPUT_ORDER if c in mapping or c in REQUIRED]
        bar, found = progress.track("reading", rows), None
        try:
            found = _stream_order(con, stream, rows, len(written) > 3, bar, flagged=bad is not None)
        finally:
            bar.stop() if found is None else bar.close(rows)
        if found is None:
            return None
        ordered, (first, last, zero, dupes), first_zero, bad_hash = found
        if dupes is None:
            dupes = con.execute(f"{SPAN_AND_DUPLICATES} FROM ({norm}) AS norm").fetchall()[0][3]
        return FirstPass(unit, dict(mapping), rows, (first, last, zero, dupes), ordered, bad_hash, first_zero)
    except (InputError, duckdb.Error, KeyError):
        return None


def open_source(source: str, pattern: str | None = None, root: Path | None = None) -> Source:
    """Resolve the user's path into a Source (files of one kind)."""
    return sources.resolve(source, pattern, root)


def ingest_with(
    source: Source, out_path: Path, workload: dict[str, Any], progress: Callable[..., None] | None = None
) -> Ingested:
    """`ingest` with the settings of a validated `workload` params section (the stage, the CLI, init and the
    simulator's trace loader all read a log the same way)."""
    return ingest(
        source,
        out_path,
        fmt=workload["format"],
        columns=workload["columns"],
        timestamp_unit=workload["timestamp_unit"],
        max_failed_share=workload["max_failed_share"],
        max_span_days=workload["max_span_days"],
        chunk_rows=workload["chunk_rows"],
        memory_limit=workload["memory_limit"],
        progress=progress,
    )


def ingest(
    source: Source,
    out_path: Path,
    *,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    timestamp_unit: str = "auto",
    max_failed_share: float = 0.05,
    max_span_days: float = 400,
    chunk_rows: int = 1_000_000,
    progress: Callable[..., None] | None = None,
    memory_limit: str = "1GB",
) -> Ingested:
    """Read, validate and write the normalized request table (sorted, byte-stable Parquet).

    `progress`: a Progress (steps, and rows, rate and ETA of each pass, on stderr), or any callable taking
    one line (steps only), or None (silent).
    """
    from pipeline import quality

    tracker = progress if isinstance(progress, Progress) else Progress(enabled=False)  # the passes' rows, rate, ETA
    say = progress or (lambda *a, **k: None)
    # great-expectations takes 1-2 s to import (pure Python): it loads on a thread while DuckDB, which
    # releases the GIL, makes the log's first pass (see _first_pass)
    gx_loading = threading.Thread(target=quality._gx, daemon=True)
    gx_loading.start()
    # DuckDB's memory is capped (workload.memory_limit): a larger sort spills beside the output, and
    # DuckDB removes that folder when the connection closes. chunk_rows is no longer used.
    con = quality.ingest_connection(memory_limit, out_path.with_name(out_path.name + io.SPILL_SUFFIX))
    if tracker.enabled:  # DuckDB's own progress, read by Progress (its bar printing stays off: stdout is data)
        with contextlib.suppress(duckdb.Error):
            con.execute("SET enable_progress_bar_print = false")
            con.execute("SET enable_progress_bar = true")
    label = source.label
    say(
        f"reading {label}: {len(source.files)} file{'s' if len(source.files) != 1 else ''}, "
        f"{source.total_bytes / 1e6:,.1f} MB ({source.kind})"
    )
    if source.total_bytes == 0:
        raise InputError(f"{label}: the file is empty; expected a traffic log with one row per request")
    try:
        scan = source.scan_view(con)  # the file paths are a bound parameter, never SQL text
    except duckdb.Error as exc:
        raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None
    described = _describe(con, scan, label)
    available = [name for name, _ in described]
    types = dict(described)
    layout = layouts.for_format(fmt, available, columns or {}, label)
    mapping = {**layout.columns}
    hint = ""
    guess = layouts.guess_layout_name(available)
    if fmt != "auto" and guess and guess != layout.name:
        hint = f"It looks like the '{guess}' layout: set workload.format (or --format) to {guess}, or auto."
    elif layout.name == "generic":
        hint = "Map your column names with workload.columns (or --column NAME=COLUMN)."
    expected = {**mapping, **(columns or {})} if layout.name == "generic" else mapping
    early, prefetched = None, None
    if all(c in available for c in expected.values()):  # the schema suite will pass
        early_mapping = {**mapping, **{k: v for k, v in layout.optional.items() if v in available}}

        def validate_early(unit: str, rows: int) -> None:
            """The suite's one aggregate, run while great-expectations may still be loading; it is used only if
            the SQL that GX's own expectations give is this SQL (quality.run_sql_suite)."""
            nonlocal prefetched
            say(f"validating {rows:,} rows from {len(source.files)} file(s) (great-expectations suite, run by DuckDB)")
            specs = quality.request_rule_specs(early_mapping, unit, [k for k in early_mapping if k not in REQUIRED])
            query = _normalized_sql(scan, {k: v for k, v in early_mapping.items() if k != "hash_ids"}, unit, True)
            bar = tracker.track("validating", rows)
            with contextlib.suppress(duckdb.Error):  # a read error is reported by the validation below
                prefetched = _polling(con, bar, lambda: quality.prefetch_counts(con, query, specs))
                bar.close(rows)

        with _quick_gil_handoff():
            early = _first_pass(
                con,
                scan,
                early_mapping,
                types,
                layout.timestamp_unit if timestamp_unit == "auto" else timestamp_unit,
                tracker,
                validate_early,
            )
    # requests.parquet goes to a temp file beside it (io.atomic_path), renamed onto it when ingest returns; any
    # error on the way removes it. A log that the first pass and the prefetched counts show will pass every check
    # (_passes_early) is written as read while great-expectations still loads (DuckDB has the cores the pure-Python
    # import leaves); every check then runs as before, in its order, and the write stands only if they pass and
    # the settings they resolve are the first pass's own.
    with contextlib.ExitStack() as files:
        early_file: Path | None = None
        early_groups: bool | None = None  # the early write's row groups are the sorted write's (None: no early write)
        if early is not None and _passes_early(early, prefetched, max_span_days, max_failed_share):
            early_file = files.enter_context(io.atomic_path(out_path, ".parquet"))
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW norm AS {_normalized_sql(scan, early.mapping, early.unit, False)}"
            )
            served = early.rows - early.span[2]
            bar = tracker.track("writing", early.rows)
            with contextlib.suppress(duckdb.Error):  # the write below, after the checks, reports it
                _write(con, _written_columns(early.mapping)[1], "", early_file, bar, early.rows)
                early_groups = _row_groups_as_sorted(con, early_file, served)
        gx_loading.join()
        quality.check_columns(f"{label} (format '{layout.name}')", available, expected, hint)
        mapping.update({k: v for k, v in layout.optional.items() if v in available})
        unit = layout.timestamp_unit if timestamp_unit == "auto" else timestamp_unit
        unit, unit_note = _resolve_unit(con, scan, mapping["arrival_s"], types[mapping["arrival_s"]], unit)
        if early is not None and (early.unit, early.mapping) != (unit, mapping):
            early = early_groups = None

        if early is not None:
            rows_read = early.rows
        else:
            try:
                rows_read = con.execute(f"SELECT count(*) FROM {scan}").fetchall()[0][0]
            except duckdb.Error as exc:
                raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None
        if rows_read == 0:
            raise InputError(f"{label}: has a header but no rows; expected one row per request")

        optional = [k for k in mapping if k not in REQUIRED]
        rules = quality.request_rules(mapping, unit, optional)
        checked_sql = _normalized_sql(scan, {k: v for k, v in mapping.items() if k != "hash_ids"}, unit, True)

        try:
            if prefetched is not None:  # used if it is this suite's SQL and values (else the aggregate runs again)
                summary = quality.validate_sql(label, con, checked_sql, mapping, rules, prefetched)
            else:
                say(
                    f"validating {rows_read:,} rows from {len(source.files)} file(s) (great-expectations suite, run by DuckDB)"
                )
                bar = tracker.track("validating", rows_read)
                summary = _polling(con, bar, lambda: quality.validate_sql(label, con, checked_sql, mapping, rules))
                bar.close(rows_read)
        except duckdb.Error as exc:
            raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None

        if "hash_ids" in mapping and (early is None or early.bad_hash_ids != 0):
            check_hash_ids(con, scan, mapping["hash_ids"], label)
        norm = _normalized_sql(scan, mapping, unit, False)
        con.execute(f"CREATE OR REPLACE TEMP VIEW norm AS {norm}")
        if early is not None:
            first, last, zero, dupes = early.span
        else:
            first, last, zero, dupes = con.execute(f"{SPAN_AND_DUPLICATES} FROM norm").fetchall()[0]
        span_days = (last - first) / 86400
        if span_days > max_span_days:
            raise InputError(
                f"{label}: column '{mapping['arrival_s']}' spans {span_days:,.0f} days once read as {unit}; "
                f"expected at most {max_span_days:g} days (workload.max_span_days). "
                "Is the timestamp unit right? Set workload.timestamp_unit (s, ms, us, ns, datetime). No outputs were written."
            )
        warnings: list[dict[str, Any]] = [unit_note] if unit_note else []
        share = zero / rows_read
        if zero:
            text = (
                f"{zero:,} of {rows_read:,} requests ({share:.2%}) have 0 output tokens "
                f"(column '{mapping['output_tokens']}'): failed or aborted requests, excluded from the profile"
            )
            if share > max_failed_share:
                raise InputError(
                    f"{label}: {text}. That is more than workload.max_failed_share = {max_failed_share:.0%}; "
                    "expected a log of served requests. No outputs were written."
                )
            warnings.append({"code": "failed_requests_excluded", "message": text + "."})
        check_rate_possible(label, mapping, rows_read, zero, first, last)
        if dupes:
            warnings.append(
                {
                    "code": "duplicate_rows",
                    "message": f"{dupes:,} rows repeat another row's arrival time and token counts exactly "
                    "(kept: identical requests can arrive together, but check for a double export).",
                }
            )

        present, select = _written_columns(mapping)
        # Every written column is a sort key, so the order is total and the file byte-stable. A log already in
        # that order (the first pass proved it) is written as read, without the sort that spills under
        # workload.memory_limit: DuckDB keeps the insertion order, and the bytes are the sorted write's as long
        # as the row groups are too (checked; else the log is written again, sorted). Rows with 0 output tokens
        # before the last row group's start would move its boundaries (_row_groups_as_sorted): such a log is sorted.
        # (written already, while great-expectations loaded, when early_groups is not None: the same bytes)
        rows_written = rows_read - zero
        written = "as read (already in order)" if early is not None and _as_read(early) else "sorted"
        tmp = early_file or files.enter_context(io.atomic_path(out_path, ".parquet"))
        if written != "sorted":
            if early_groups is None:
                _write(con, select, "", tmp, tracker.track("writing", rows_read), rows_read)
                early_groups = _row_groups_as_sorted(con, tmp, rows_written)
            if not early_groups:
                written = "sorted (the unsorted write's row groups differed)"
        if written.startswith("sorted"):
            _write(con, select, f" ORDER BY {', '.join(present)}", tmp, tracker.track("writing", rows_read), rows_read)
        say(f"wrote {rows_written:,} requests")
        con.close()
        return Ingested(
            source=source,
            layout=layout,
            timestamp_unit=unit,
            columns=mapping,
            rows_read=rows_read,
            rows_written=rows_written,
            failed_rows=zero,
            duplicate_rows=dupes,
            validation=summary,
            warnings=warnings,
            written=written,
        )


def _written_columns(mapping: dict[str, str]) -> tuple[list[str], list[str]]:
    """The columns of requests.parquet (OUTPUT_ORDER, those mapped) and their SELECT list over the `norm` view."""
    present = [c for c in OUTPUT_ORDER if c in mapping or c in REQUIRED]
    select = [f"CAST({c} AS BIGINT) AS {c}" if c in ("input_tokens", "output_tokens") else c for c in present]
    return present, select


def _as_read(early: FirstPass) -> bool:
    """Whether the log can be written as read: in order, and no row with 0 output tokens before the last row
    group's start (it would move the row-group boundaries: _row_groups_as_sorted)."""
    if not early.ordered:
        return False
    served = early.rows - early.span[2]
    last_group = (served - 1) // ROW_GROUP_VECTORS_ROWS * ROW_GROUP_VECTORS_ROWS
    return early.first_zero_row is None or early.first_zero_row >= last_group


def _passes_early(early: FirstPass, prefetched: Any, max_span_days: float, max_failed_share: float) -> bool:
    """Whether the first pass and the suite's prefetched counts (quality.prefetch_counts) show a log that is written
    as read and passes every check ingest makes of them: no unexpected row for any expectation, hash_ids all lists
    of integers, the span, the failed share and an arrival rate. Only then is it written before great-expectations
    has loaded; the checks themselves still run afterwards (this only saves time)."""
    row = getattr(prefetched, "row", None)
    if row is None or any(row[2::2]) or early.bad_hash_ids or not _as_read(early):
        return False
    first, last, zero, _ = early.span
    served = early.rows - zero
    return (
        (last - first) / 86400 <= max_span_days
        and zero / early.rows <= max_failed_share
        and served >= 2
        and last > first
    )


# requests.parquet's ROW_GROUP_SIZE: DuckDB's default (60 vectors). 1,000,000-row groups made the zstd write of
# a 10-million-row log ~1.7x slower (a dictionary per column chunk over ~1M session ids) and its peak RSS
# ~0.25 GiB higher; the table's rows, order, schema and values do not depend on it (issue 15, speed).
ROW_GROUP_ROWS = 122_880
# zstd level 1 (DuckDB's default is 3): on the 10-million-row benchmark log ~20% less CPU for the write and
# a smaller file (111.8 MB against 116.1 MB); the values read back are the same.
ZSTD_LEVEL = 1
VECTOR_ROWS = int(getattr(duckdb, "__standard_vector_size__", 2048))
ROW_GROUP_VECTORS_ROWS = -(-ROW_GROUP_ROWS // VECTOR_ROWS) * VECTOR_ROWS  # a row group of the sorted write


def _write(
    con: duckdb.DuckDBPyConnection, select: list[str], order: str, path: Path, bar: PassProgress, rows: int
) -> None:
    """COPY the served rows of the `norm` view to `path` (zstd Parquet, level ZSTD_LEVEL), in `order` (SQL; '': as read).

    `path` is atomic_path's temp file, so it exists: DuckDB would write a `tmp_<name>` beside it first, which
    a `kill -9` would orphan under a name no cleanup knows (USE_TMP_FILE false; the bytes are the same).
    """
    _polling(
        con,
        bar,
        lambda: con.execute(
            f"COPY (SELECT {', '.join(select)} FROM norm WHERE output_tokens > 0{order}) "
            f"TO ? (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
            "USE_TMP_FILE false)",
            [str(path)],
        ),
    )
    bar.close(rows)


def _row_groups_as_sorted(con: duckdb.DuckDBPyConnection, path: Path, rows: int) -> bool:
    """Whether `path` has the row groups of the sorted write of `rows` rows.

    The sort hands the writer full vectors (duckdb.__standard_vector_size__ rows), so each row group but
    the last holds the vectors that first reach ROW_GROUP_ROWS. A write as read can hand it part vectors
    (rows with 0 output tokens filtered out), which moves the boundaries; within a row group the bytes do not
    depend on how its rows arrived. One row group (up to ROW_GROUP_ROWS rows) always matches.
    """
    full = ROW_GROUP_VECTORS_ROWS
    sizes = [
        int(r[0])
        for r in con.execute(
            "SELECT any_value(row_group_num_rows) FROM parquet_metadata(?) GROUP BY row_group_id ORDER BY row_group_id",
            [str(path)],
        ).fetchall()
    ]
    return sum(sizes) == rows and all(n == full for n in sizes[:-1]) and (not sizes or sizes[-1] <= full)
