"""Step 1 input: read a traffic log of any supported layout into the normalized request table.

The log is scanned by DuckDB (CSV, Parquet incl. hive partitions, JSON lines; files, folders,
globs), validated chunk by chunk by great-expectations, and written as one sorted Parquet file.
It is never loaded into pandas whole.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pipeline import io
from pipeline.errors import InputError
from pipeline.traffic import layouts, sources
from pipeline.traffic.layouts import REQUIRED, Layout
from pipeline.traffic.sources import Source, sql_ident, sql_str

if TYPE_CHECKING:  # pandas and great-expectations load only when a log is ingested, not for a profile
    import pandas as pd

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.split("\n\nLINE")[0].replace("\n", " ")


def _resolve_unit(con: duckdb.DuckDBPyConnection, scan: str, column: str, col_type: str, requested: str) -> str:
    """The timestamp unit: as requested, else from the column type, else from the magnitude."""
    if requested != "auto":
        return requested
    if "TIMESTAMP" in col_type.upper() or col_type.upper() == "DATE":
        return "datetime"
    ident = sql_ident(column)
    row = con.execute(
        f"SELECT count(*) FILTER (WHERE TRY_CAST({ident} AS DOUBLE) IS NOT NULL), "
        f"count({ident}), max(abs(TRY_CAST({ident} AS DOUBLE))) FROM (SELECT {ident} FROM {scan} LIMIT 10000)"
    ).fetchall()[0]
    numeric, non_null, biggest = row
    if non_null and numeric < non_null:
        return "datetime"
    biggest = biggest or 0.0
    # Epoch seconds now are ~1.8e9; the same instant is ~1.8e12 ms, 1.8e15 us, 1.8e18 ns.
    if biggest >= 1e17:
        return "ns"
    if biggest >= 1e14:
        return "us"
    if biggest >= 1e11:
        return "ms"
    return "s"


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
            parts.append(f"CAST({sql_ident(mapping[name])} AS VARCHAR) AS {name}")
    for name in LATENCY_COLUMNS:
        if name in mapping:
            parts.append(f"TRY_CAST({sql_ident(mapping[name])} AS DOUBLE) AS {name}")
    if with_raw:
        for name in REQUIRED:
            parts.append(f"CAST({sql_ident(mapping[name])} AS VARCHAR) AS _raw_{name}")
        parts.append("filename AS _file")
    elif "hash_ids" in mapping:
        parts.append(f"CAST({sql_ident(mapping['hash_ids'])} AS BIGINT[]) AS hash_ids")
    return f"SELECT {', '.join(parts)} FROM {scan}"


def _chunks(con: duckdb.DuckDBPyConnection, sql: str, rows: int) -> Iterator[pd.DataFrame]:
    """Stream the query in DataFrames of about `rows` rows (bounded memory, few GX calls)."""
    import pyarrow as pa

    reader = con.cursor().sql(sql).to_arrow_reader(min(rows, 1_000_000))
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        pending.append(batch)
        size += batch.num_rows
        if size >= rows:
            yield pa.Table.from_batches(pending).to_pandas()
            pending, size = [], 0
    if size:
        yield pa.Table.from_batches(pending).to_pandas()


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
) -> Ingested:
    """Read, validate and write the normalized request table (sorted, byte-stable Parquet)."""
    from pipeline import quality

    say = progress or (lambda *a, **k: None)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    con.execute("SET TimeZone = 'UTC'")
    label = source.label
    scan = source.scan_sql()
    say(
        f"reading {label}: {len(source.files)} file{'s' if len(source.files) != 1 else ''}, "
        f"{source.total_bytes / 1e6:,.1f} MB ({source.kind})"
    )
    if source.total_bytes == 0:
        raise InputError(f"{label}: the file is empty; expected a traffic log with one row per request")
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
    quality.check_columns(f"{label} (format '{layout.name}')", available, expected, hint)
    mapping.update({k: v for k, v in layout.optional.items() if v in available})
    unit = layout.timestamp_unit if timestamp_unit == "auto" else timestamp_unit
    unit = _resolve_unit(con, scan, mapping["arrival_s"], types[mapping["arrival_s"]], unit)

    try:
        rows_read = con.execute(f"SELECT count(*) FROM {scan}").fetchall()[0][0]
    except duckdb.Error as exc:
        raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None
    if rows_read == 0:
        raise InputError(f"{label}: has a header but no rows; expected one row per request")

    optional = [k for k in mapping if k not in REQUIRED]
    rules = quality.request_rules(mapping, unit, optional)
    checked_sql = _normalized_sql(scan, {k: v for k, v in mapping.items() if k != "hash_ids"}, unit, True)

    def tick(rows: int, chunks: int) -> None:
        say(
            f"validated {rows:,} of {rows_read:,} rows from {len(source.files)} file(s)",
            final=rows >= rows_read,
        )

    try:
        summary = quality.validate_chunks(label, _chunks(con, checked_sql, chunk_rows), mapping, rules, tick)
    except duckdb.Error as exc:
        raise InputError(f"{label}: cannot be read: {_first_line(exc)}") from None

    norm = _normalized_sql(scan, mapping, unit, False)
    con.execute(f"CREATE TEMP VIEW norm AS {norm}")
    first, last, zero, dupes = con.execute(
        "SELECT min(arrival_s), max(arrival_s), count(*) FILTER (WHERE output_tokens = 0), "
        "count(*) - count(DISTINCT (arrival_s, input_tokens, output_tokens)) FROM norm"
    ).fetchall()[0]
    span_days = (last - first) / 86400
    if span_days > max_span_days:
        raise InputError(
            f"{label}: column '{mapping['arrival_s']}' spans {span_days:,.0f} days once read as {unit}; "
            f"expected at most {max_span_days:g} days (workload.max_span_days). "
            "Is the timestamp unit right? Set workload.timestamp_unit (s, ms, us, ns, datetime). No outputs were written."
        )
    warnings: list[dict[str, Any]] = []
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
            f"TO {sql_str(str(tmp))} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)"
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
