"""Atomic writers: outputs appear whole or not at all (write a temp file, then rename)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPILL_SUFFIX = ".duckdb-tmp"  # traffic.ingest: DuckDB spills a capped sort into `<output>.duckdb-tmp/`


def _temp_pattern(target: Path) -> re.Pattern[str]:
    """The names atomic_path gives its temp files for `target` (nested ones too): `.<name>.<pid>.<random><suffix>.tmp`.

    Files written before the pid was part of the name (`.<name>.<random><suffix>.tmp`) match as well,
    with no pid.
    """
    return re.compile(r"\.+" + re.escape(target.name) + r"\.(?:(\d+)\.)?.*\.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_orphans(target: str | os.PathLike[str], live_too: bool = False) -> list[Path]:
    """Delete the temp files an interrupted atomic_path left beside `target` (a `kill -9` during a write).

    Only files named by atomic_path's own pattern for this target are touched, never a user's files;
    one whose writing process is still alive is kept unless `live_too` (the stage runner, which holds
    the stage's lock, passes it). The folders DuckDB spills a capped sort into (`<temp file>.duckdb-tmp`,
    or `<target>.duckdb-tmp` with `live_too`: traffic.ingest names them so) go the same way.
    Returns the paths deleted.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = _temp_pattern(target)
    removed = []
    for entry in target.parent.iterdir():
        if entry.is_symlink():
            continue
        spill = entry.name.endswith(SPILL_SUFFIX)
        name = entry.name[: -len(SPILL_SUFFIX)] if spill else entry.name
        match = pattern.fullmatch(name)
        if not (entry.is_dir() if spill else entry.is_file()):
            continue
        if not match and not (spill and live_too and name == target.name):
            continue
        pid = match[1] if match else None
        if not live_too and pid is not None and _alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            if spill:
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


_READ_ONLY = False  # set by pipeline.notebook when a notebook is opened by hand: outputs are not written


def set_read_only(on: bool) -> None:
    """Make every atomic write into the project compute into a scratch file and discard it (notebooks opened by hand)."""
    global _READ_ONLY
    _READ_ONLY = on


def read_only() -> bool:
    """Whether writes are discarded (set_read_only)."""
    return _READ_ONLY


def _in_project(target: Path) -> bool:
    from pipeline import paths

    return target.resolve().is_relative_to(paths.ROOT.resolve())


@contextlib.contextmanager
def _discarded(target: Path, suffix: str) -> Iterator[Path]:
    """A temp path outside the project for a write that read-only mode skips; deleted afterwards, with a printed note."""
    with tempfile.TemporaryDirectory(prefix="sizing-read-only-") as scratch:
        yield Path(scratch) / f"{target.name}{suffix}.tmp"
    from pipeline import paths

    print(f"note: opened by hand, not writing {paths.display_path(target)} (only the stage runner writes outputs)")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it onto `target` only if the block succeeds.

    Orphans of earlier interrupted writes to the same target are deleted first (clean_orphans).
    In read-only mode (set_read_only) the temp path lies outside the project and is discarded.
    """
    target = Path(target)
    if _READ_ONLY and _in_project(target):
        with _discarded(target, suffix) as tmp:
            yield tmp
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix + ".tmp", dir=target.parent)
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


def read_text(path: str | os.PathLike[str], label: str | None = None) -> str:
    """A user's text file as UTF-8 (a leading BOM dropped); other bytes are an InputError naming file, line, column.

    `label` is how the message names the file (default: the path). A missing file raises FileNotFoundError
    as Path.read_text does, so callers keep their own "not found" message.
    """
    from pipeline.errors import InputError

    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{label or path}: line {line}, column {col}: byte 0x{data[exc.start]:02x} is not UTF-8; "
            "expected a UTF-8 text file (re-save it as UTF-8)"
        ) from None


JOURNAL = ".sizing-journal"  # per-stage undo journals, under the project root (git-ignored)


def _try_lock(path: Path) -> Any:
    """An exclusive flock on `path`, or None when a live process holds it (the kernel drops it if that process dies)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def _save(src: Path, dst: Path) -> None:
    """A backup of `src` at `dst` that costs no copy: writers replace outputs by rename, so a hard link keeps the old bytes."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _roll_back(root: Path, folder: Path) -> None:
    """Put every output listed in `folder`'s manifest back as it was before the stage began; drop the journal."""
    manifest = folder / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text(encoding="utf-8"))["outputs"]:
            path = root / entry["path"]
            backup = folder / entry["backup"] if entry["backup"] else None
            if backup is None:  # new in this run: it goes
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            elif backup.exists() or backup.is_symlink():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                os.replace(backup, path)
            # a listed backup that is absent: the run stopped before touching anything, the output is as it was
            clean_orphans(path, live_too=True)
        manifest.unlink()
    shutil.rmtree(folder, ignore_errors=True)


def recover(root: str | os.PathLike[str]) -> list[str]:
    """Roll back every stage whose run was killed mid-way (its journal remains, its lock is free); names them."""
    journal = Path(root) / JOURNAL
    if not journal.is_dir():
        return []
    rolled = []
    for folder in sorted(p for p in journal.iterdir() if p.is_dir()):
        lock = _try_lock(journal / f"{folder.name}.lock")
        if lock is None:  # that stage is running now
            continue
        try:
            _roll_back(Path(root), folder)
            rolled.append(folder.name)
        finally:
            lock.close()
    return rolled


@contextlib.contextmanager
def stage_transaction(root: str | os.PathLike[str], stage: str, outputs: list[str]) -> Iterator[None]:
    """All of a stage's outputs change together or not at all.

    Before the block: every output in `outputs` (paths relative to `root`) is saved in an undo journal
    (`.sizing-journal/<stage>/`, hard links: no copy), and orphan temp files beside them are deleted.
    The block (and any process it starts, such as the notebook kernel) writes the outputs in place,
    each through atomic_path. If the block fails, every output is put back byte for byte and any
    output that did not exist before is removed; on success the journal is dropped. A run killed
    mid-way (`kill -9`) leaves its journal behind: the next transaction in the project rolls it back
    first. Outputs are written in place, not to a staging folder, so that a notebook reads what an
    earlier notebook of the same stage just wrote (finance reads metrics/tco.json from step 12).
    """
    from pipeline.errors import InputError

    root = Path(root)
    journal = root / JOURNAL
    lock = _try_lock(journal / f"{stage}.lock")
    if lock is None:
        raise InputError(f"stage '{stage}' is already running in {root}; wait for it to finish")
    try:
        recover(root)  # other stages killed mid-way
        folder = journal / stage
        if folder.exists():  # this stage killed mid-way: its lock was free
            _roll_back(root, folder)
        folder.mkdir(parents=True)
        entries = []
        for i, rel in enumerate(outputs):
            path = root / rel
            clean_orphans(path, live_too=True)
            entries.append({"path": rel, "backup": str(i) if path.exists() else None})
        write_json(folder / "manifest.json", {"stage": stage, "pid": os.getpid(), "outputs": entries})
        for entry in entries:
            if entry["backup"]:
                _save(root / entry["path"], folder / entry["backup"])
        try:
            yield
        except BaseException:
            _roll_back(root, folder)
            raise
        (folder / "manifest.json").unlink()  # the commit point
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        lock.close()
