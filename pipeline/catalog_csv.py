"""What every catalog file under data/catalog/ shares: CSV rows checked for shape, numbers checked, names matched.

Readers are plain Python (csv), so `sizing memory` starts fast.
"""

from __future__ import annotations

import csv
import math
from io import StringIO
from pathlib import Path

from pipeline.errors import InputError


def norm_name(name: str) -> str:
    """A name for matching: lower case, letters and digits only (H100-SXM, h100 sxm and H100SXM match)."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def parse_number(path: Path, row_no: int, col: str, raw: str, required: bool) -> float | None:
    """A catalog cell as a finite number >= 0 (None when empty and not required); errors name the row and column."""
    raw = (raw or "").strip()
    if not raw:
        if required:
            raise InputError(f"{path}: row {row_no} column '{col}' is empty; expected a number")
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise InputError(f"{path}: row {row_no} column '{col}' = {raw!r}; expected a plain number") from exc
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{path}: row {row_no} column '{col}' = {raw!r}; expected a number >= 0")
    return value


def read_csv_rows(
    path: Path, required: tuple[str, ...], columns: tuple[str, ...] | None = None
) -> list[dict[str, str]]:
    """The rows of a catalog CSV as text, checked: UTF-8, the required columns, every row as long as the header.

    A short row (a field missing) or a long one (an unquoted comma) stops with the file, the line and the
    column it lacks, instead of a None that breaks a computation later.
    """
    from pipeline import io

    expected = ", ".join(columns or required)
    text = io.read_text(path)
    reader = csv.DictReader(StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected columns {expected}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row:
                raise InputError(
                    f"{path}: line {line} has {len(header) + len(row[None])} fields but the header has {len(header)}; "
                    f"extra value(s) {', '.join(map(repr, row[None][:3]))} (quote a value that holds a comma)"
                )
            short = [c for c in header if row[c] is None]
            if short:
                raise InputError(
                    f"{path}: line {line} column '{short[0]}' is missing: the row has {len(header) - len(short)} "
                    f"of {len(header)} fields; expected columns {', '.join(header)}"
                )
            rows.append(row)
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from None
    return rows
