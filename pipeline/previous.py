"""A previous review's metrics, for the quarter-over-quarter comparison (params `report.previous`).

A folder holding its metrics/*.json, or a git revision (tag, branch, commit) read with `git cat-file`,
the revision name checked first so it can never be read as an option, a path or a range. A leaf
module (stdlib only), so params can check `report.previous` without importing the report.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from pipeline.errors import InputError


def previous_metrics(ref: str | None, root: Path) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """A previous review's metrics: a folder holding its metrics/*.json, or a git revision (tag, branch, commit)."""
    if not ref:
        return None, ""
    folder = (root / ref) if not Path(ref).is_absolute() else Path(ref)
    out: dict[str, dict[str, Any]] = {}
    if folder.is_dir():
        for name in ("workload", "fleet", "tco"):
            p = folder / f"{name}.json"
            if p.exists():
                out[name] = _previous_json(p.read_bytes(), str(p), ref)
        where = f"folder {ref}"
    else:
        commit = _git_commit(ref, root)
        for name in ("workload", "fleet", "tco") if commit else ():
            proc = subprocess.run(
                ["git", "cat-file", "blob", f"{commit}:metrics/{name}.json"], cwd=root, capture_output=True, check=False
            )
            if proc.returncode == 0:
                out[name] = _previous_json(proc.stdout, f"metrics/{name}.json at git revision {ref}", ref)
        where = f"git revision {ref}"
    if not out:
        raise InputError(
            f"params.yaml: report.previous = {ref!r} is neither a folder with workload/fleet/tco.json nor a git revision "
            "holding metrics/*.json"
        )
    return out, where


GIT_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@{}~^+-]*")


def check_git_ref(ref: str) -> None:
    """Refuse anything but a plain revision name (tag, branch, commit, HEAD~1): no option, no path, no range."""
    why = None
    if ref.startswith("-"):
        why = "it starts with '-' (git would read it as an option)"
    elif any(ch.isspace() or not ch.isprintable() for ch in ref):
        why = "it holds whitespace or control characters"
    elif ".." in ref or ref.startswith("/") or ref.endswith((".", "/", ".lock")) or "//" in ref or "@{" in ref:
        why = "it holds '..', '@{' or a path-like part, which is not one revision"
    elif not GIT_REF.fullmatch(ref):
        why = "it holds characters a git tag, branch or commit name cannot have (only letters, digits and ._/@{}~^+-)"
    if why:
        raise InputError(
            f"params.yaml: report.previous = {ref!r} is not a folder and not a git revision name: {why}; "
            "expected a folder holding workload/fleet/tco.json, or a tag, branch or commit"
        )


def _git_commit(ref: str, root: Path) -> str | None:
    """The commit a checked revision name resolves to (None when git does not know it); never runs it as an option."""
    check_git_ref(ref)
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def _previous_json(data: bytes, where: str, ref: str) -> dict[str, Any]:
    """A previous review's metrics file, or one line naming the file and the ref when it is not UTF-8 JSON."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where}: byte {exc.start} is not UTF-8 (report.previous = {ref!r}); expected the JSON a review wrote"
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} "
            f"(report.previous = {ref!r}); expected the JSON a review wrote"
        ) from None
    if not isinstance(value, dict):
        raise InputError(
            f"{where}: holds a JSON {type(value).__name__}, not an object (report.previous = {ref!r}); "
            "expected the JSON a review wrote"
        )
    return value
