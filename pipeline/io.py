"""Atomic writers: outputs appear whole or not at all (write a temp file, then rename)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def clean_json(value: Any) -> Any:
    """Make a value JSON-safe and stable: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded (recursively through dicts and lists) so metrics stay readable and diffs small."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return round(value, digits) if isinstance(value, float) else value


def dumps(obj: Any) -> str:
    """The one JSON spelling used for metrics and CLI output (2-space indent, trailing newline)."""
    return json.dumps(clean_json(obj), indent=2, ensure_ascii=False) + "\n"


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(target, ".json") as tmp:
        tmp.write_text(dumps(obj), encoding="utf-8")


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_metrics(root: str | os.PathLike[str], names: tuple[str, ...]) -> dict[str, Any]:
    """metrics/<name>.json written by earlier stages; a missing one says to run them first."""
    from pipeline.errors import InputError

    out = {}
    for name in names:
        path = Path(root) / "metrics" / f"{name}.json"
        if not path.exists():
            raise InputError(f"{path} not found: run the earlier stages first (dvc repro)")
        out[name] = json.loads(path.read_text(encoding="utf-8"))
    return out
