"""Resolve what a user points at (a file, a folder, a glob) into files DuckDB can scan."""

from __future__ import annotations

import glob as globmod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

KINDS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
}
COMPRESSED = (".gz", ".zst")
SCAN_FILES: dict[str, str] = {}  # a scan view -> the first file it reads (for messages)


def file_kind(path: Path) -> str | None:
    """csv, parquet or json from the file name (compressed .gz/.zst text files included)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return KINDS.get(suffixes[-1]) if suffixes else None


def sql_ident(name: str) -> str:
    """A SQL identifier, quoted (column names like 'Request tokens' have spaces); the only text spliced into SQL.

    Values and paths are never spliced: they are bound parameters (`?`, `$name`). A name holding a control
    character (NUL included) cannot be a column of a log and is refused.
    """
    text = str(name)
    if not text or any(not ch.isprintable() for ch in text):
        raise InputError(f"column name {text!r}: empty or holds control characters; expected a printable column name")
    return '"' + text.replace('"', '""') + '"'


def connect() -> Any:
    """An in-memory DuckDB connection in UTC, with DuckDB's progress bar off (it would land in `--json` stdout)."""
    import contextlib

    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB draws its bar on stdout, into `sizing profile --json`; a Jupyter kernel refuses the setting
    with contextlib.suppress(duckdb.Error):
        con.execute("SET enable_progress_bar = false")
    return con


def bound_view(con: Any, sql: str, values: dict[str, Any], prefix: str = "requests") -> str:
    """A view of `sql` with `values` bound as its $parameters (paths, names); returns its quoted name."""
    n = con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall()[0][0]
    name = f"{prefix}_{n}"
    con.sql(sql, params=values).create_view(name, replace=True)
    return sql_ident(name)


@dataclass(frozen=True)
class Source:
    """The files of one traffic log, all of one kind."""

    label: str
    files: tuple[Path, ...]
    kind: str
    hive: bool = False

    def scan_view(self, con: Any) -> str:
        """A view (its quoted name) reading every file with its name in a `filename` column.

        The file paths are a bound parameter of the view, never SQL text. CSV: null_padding reads a
        short (truncated) row as empty fields, so validation names it; DuckDB's parallel CSV scanner
        cannot combine that with a quoted field holding a newline, so the scan is serial.
        """
        if self.kind == "csv":
            scan = (
                "read_csv($files, header=true, all_varchar=true, filename=true, "
                "null_padding=true, parallel=false, union_by_name=true)"
            )
        elif self.kind == "parquet":
            hive = "true" if self.hive else "false"
            scan = f"read_parquet($files, filename=true, union_by_name=true, hive_partitioning={hive})"
        else:
            scan = "read_json($files, format='newline_delimited', filename=true, union_by_name=true)"
        view = bound_view(con, f"SELECT * FROM {scan}", {"files": [str(f) for f in self.files]}, "log_scan")
        SCAN_FILES[view] = str(self.files[0])
        return view

    @property
    def total_bytes(self) -> int:
        """Size of all files on disk."""
        return sum(f.stat().st_size for f in self.files)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def resolve(source: str, pattern: str | None = None, root: Path | None = None) -> Source:
    """Files for a file, a folder (recursively, or matching `pattern`) or a glob, relative to `root`."""
    base = root or Path.cwd()
    label = str(source)
    path = Path(source) if Path(source).is_absolute() else base / source
    if _is_glob(str(source)):
        files = [Path(p) for p in globmod.glob(str(path), recursive=True)]
        where = f"glob {label}"
    elif path.is_dir():
        files = list(path.glob(pattern)) if pattern else [p for p in path.rglob("*") if file_kind(p)]
        where = f"folder {label}" + (f" (pattern {pattern})" if pattern else "")
    elif path.is_file():
        files = [path]
        where = label
    else:
        raise InputError(f"traffic log not found: {label} (looked for {path}); expected a file, a folder or a glob")
    files = sorted(p for p in files if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(
            f"no traffic log files in {where}; expected files ending in {', '.join(sorted(KINDS))} (optionally .gz)"
        )
    kinds = {f: file_kind(f) for f in files}
    unknown = [f for f, k in kinds.items() if k is None]
    if unknown:
        raise InputError(
            f"{where}: cannot tell the format of {unknown[0].name}; expected one of "
            f"{', '.join(sorted(KINDS))} (optionally .gz)"
        )
    distinct = sorted(set(kinds.values()))
    if len(distinct) > 1:
        raise InputError(f"{where} mixes file formats ({', '.join(distinct)}); point the source at one format")
    kind = distinct[0]
    hive = kind == "parquet" and any("=" in part for f in files for part in f.parts[:-1])
    return Source(label=label, files=tuple(files), kind=kind, hive=hive)
