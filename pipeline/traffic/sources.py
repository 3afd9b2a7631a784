"""Resolve what a user points at (a file, a folder, a glob) into files DuckDB can scan."""

from __future__ import annotations

import glob as globmod
from dataclasses import dataclass
from pathlib import Path

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


def file_kind(path: Path) -> str | None:
    """csv, parquet or json from the file name (compressed .gz/.zst text files included)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return KINDS.get(suffixes[-1]) if suffixes else None


def sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A SQL identifier, quoted (column names like 'Request tokens' have spaces)."""
    return '"' + str(name).replace('"', '""') + '"'


@dataclass(frozen=True)
class Source:
    """The files of one traffic log, all of one kind."""

    label: str
    files: tuple[Path, ...]
    kind: str
    hive: bool = False

    def scan_sql(self) -> str:
        """DuckDB table function that reads every file with its name in a `filename` column."""
        files = "[" + ", ".join(sql_str(str(f)) for f in self.files) + "]"
        if self.kind == "csv":
            return (
                f"read_csv({files}, header=true, all_varchar=true, filename=true, "
                "null_padding=true, union_by_name=true)"
            )
        if self.kind == "parquet":
            hive = "true" if self.hive else "false"
            return f"read_parquet({files}, filename=true, union_by_name=true, hive_partitioning={hive})"
        return f"read_json({files}, format='newline_delimited', filename=true, union_by_name=true)"

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
