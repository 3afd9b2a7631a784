"""Step 1 input: read a traffic log of any supported layout into the normalized request table.

The log is scanned by DuckDB (CSV, Parquet incl. hive partitions, JSON lines; files, folders,
globs), validated by a great-expectations suite that DuckDB evaluates over the whole log in one
aggregate (quality.run_sql_suite), and written as one sorted Parquet file. It is never loaded
into pandas; DuckDB's memory is capped by workload.memory_limit.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
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


class Progress:
    """Rows and files read, on stderr: one updating line on a terminal, a few lines otherwise."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_line = ""

    def __call__(self, message: str, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + message.ljust(len(self._last_line)) + ("\n" if final else ""))
        else:
            self.stream.write(message + "\n")
        self._last_line = "" if final else message
        self.stream.flush()


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
    c = f"TRY_CAST({ident} AS BIGINT[])"
    bad = f"{ident} IS NOT NULL AND ({c} IS NULL OR len({c}) != len(list_filter({c}, lambda e: e IS NOT NULL)))"
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


def _normalized_sql(scan: str, mapping: dict[str, str], unit: str, with_raw: bool) -> str:
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
    return f"SELECT {', '.join(parts)} FROM {scan}"


SPAN_AND_DUPLICATES = (
    "SELECT min(arrival_s), max(arrival_s), count(*) FILTER (WHERE output_tokens = 0), "
    "count(*) - count(DISTINCT (arrival_s, input_tokens, output_tokens))"
)


def _early_aggregate(
    con: duckdb.DuckDBPyConnection, scan: str, mapping: dict[str, str], types: dict[str, str], unit: str
) -> tuple[str, tuple[Any, ...]] | None:
    """(unit, first/last arrival, failed rows, duplicate rows) of the normalized log, run while great-expectations
    loads; None on any error, so every check reports in its own order afterwards (this only saves time)."""
    try:
        unit, _ = _resolve_unit(con, scan, mapping["arrival_s"], types[mapping["arrival_s"]], unit)
        norm = _normalized_sql(scan, mapping, unit, False)
        return unit, con.execute(f"{SPAN_AND_DUPLICATES} FROM ({norm}) AS norm").fetchall()[0]
    except (InputError, duckdb.Error, KeyError):
        return None


def open_source(source: str, pattern: str | None = None, root: Path | None = None) -> Source:
    """Resolve the user's path into a Source (files of one kind)."""
    return sources.resolve(source, pattern, root)


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
    """Read, validate and write the normalized request table (sorted, byte-stable Parquet)."""
    from pipeline import quality

    say = progress or (lambda *a, **k: None)
    # great-expectations takes 1-2 s to import (pure Python): it loads on a thread while DuckDB, which
    # releases the GIL, runs the log's first aggregate (see _early_aggregate)
    gx_loading = threading.Thread(target=quality._gx, daemon=True)
    gx_loading.start()
    # DuckDB's memory is capped (workload.memory_limit): a larger sort spills beside the output, and
    # DuckDB removes that folder when the connection closes. chunk_rows is no longer used.
    con = quality.ingest_connection(memory_limit, out_path.with_name(out_path.name + io.SPILL_SUFFIX))
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
    early = None
    if all(c in available for c in expected.values()):  # the schema suite will pass
        early = _early_aggregate(
            con,
            scan,
            {**mapping, **{k: v for k, v in layout.optional.items() if v in available}},
            types,
            layout.timestamp_unit if timestamp_unit == "auto" else timestamp_unit,
        )
    gx_loading.join()
    quality.check_columns(f"{label} (format '{layout.name}')", available, expected, hint)
    mapping.update({k: v for k, v in layout.optional.items() if v in available})
    unit = layout.timestamp_unit if timestamp_unit == "auto" else timestamp_unit
    unit, unit_note = _resolve_unit(con, scan, mapping["arrival_s"], types[mapping["arrival_s"]], unit)

    try:
        rows_read = con.execute(f"SELECT count(*) FROM {scan}").fetchall()[0][0]
    except duckdb.Error as exc:
        raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None
    if rows_read == 0:
        raise InputError(f"{label}: has a header but no rows; expected one row per request")

    optional = [k for k in mapping if k not in REQUIRED]
    rules = quality.request_rules(mapping, unit, optional)
    checked_sql = _normalized_sql(scan, {k: v for k, v in mapping.items() if k != "hash_ids"}, unit, True)

    say(f"validating {rows_read:,} rows from {len(source.files)} file(s) (great-expectations suite, run by DuckDB)")
    try:
        summary = quality.validate_sql(label, con, checked_sql, mapping, rules)
    except duckdb.Error as exc:
        raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None

    if "hash_ids" in mapping:
        check_hash_ids(con, scan, mapping["hash_ids"], label)
    norm = _normalized_sql(scan, mapping, unit, False)
    con.execute(f"CREATE TEMP VIEW norm AS {norm}")
    if early is not None and early[0] == unit:
        first, last, zero, dupes = early[1]
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

    present = [c for c in OUTPUT_ORDER if c in mapping or c in REQUIRED]
    select = []
    for c in present:
        if c in ("input_tokens", "output_tokens"):
            select.append(f"CAST({c} AS BIGINT) AS {c}")
        else:
            select.append(c)
    order = ", ".join(present)
    rows_written = rows_read - zero
    with io.atomic_path(out_path, ".parquet") as tmp:
        con.execute(
            f"COPY (SELECT {', '.join(select)} FROM norm WHERE output_tokens > 0 ORDER BY {order}) "
            "TO ? (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)",
            [str(tmp)],
        )
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
    )
