"""The stage runner's environment, standard library only: the Python it needs and what it tells the kernel.

dvc.yaml's commands (`python3 -m pipeline.run <stage>`, `python3 -m pipeline.params`) take `python3`
from PATH. In a shell where the project's venv is not activated (`.venv/bin/dvc repro`, or a `dvc`
installed elsewhere) that is a Python without the project's packages. `ensure_project_python` then
runs the same command again with the project's `.venv/bin/python` (as if the venv were activated),
or, when there is none, stops with one line saying how to make and activate it. The entry points
call it before importing anything outside the standard library.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

CHART_SPECS_ENV = "SIZING_CHART_SPECS"  # set in the kernel's environment: charts.enable() then emits specs
REEXEC_ENV = "SIZING_REEXEC"  # set on the re-executed command, so it is never re-executed twice
ROOT = Path(__file__).resolve().parent.parent  # the checkout this package lives in
# What the entry points import (requirements.in), by import name; find_spec looks them up without importing.
REQUIRED = (
    "yaml",
    "pydantic",
    "duckdb",
    "numpy",
    "pandas",
    "pyarrow",
    "altair",
    "vl_convert",
    "great_expectations",
    "jupyter_client",
    "ipykernel",
    "nbformat",
    "nbclient",
    "nbconvert",
    "papermill",
)


def missing_modules(names: Sequence[str] = REQUIRED) -> list[str]:
    """The modules of `names` this interpreter cannot import (none, in the project's venv)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def venv_python(root: Path = ROOT) -> Path | None:
    """The project's own interpreter, `<root>/.venv/bin/python` (what `make venv` makes), when there is one.

    `dvc exp run --temp` runs the stages in a copy under the project's `.dvc/tmp/exps/`, which has no
    `.venv` of its own: there, the one next to that `.dvc` folder.
    """
    for folder in (root, *(p.parent for p in root.parents if p.name == ".dvc")):
        python = folder / ".venv" / "bin" / "python"
        if python.is_file() and os.access(python, os.X_OK):
            return python
    return None


def activation_hint(missing: Sequence[str]) -> str:
    """The one line printed when no interpreter with the project's packages can be found."""
    return (
        f"error: the project's packages are not importable by {sys.executable} (missing: {', '.join(missing[:3])}"
        f"{', ...' if len(missing) > 3 else ''}); "
        "run `make venv` and `source .venv/bin/activate` (or use .venv/bin/dvc)"
    )


def ensure_project_python(module: str, argv: Sequence[str], root: Path = ROOT) -> None:
    """Return when this Python has the project's packages; else re-run `python -m module argv` in the venv, or exit 1.

    The re-run replaces this process (os.execve), with the venv's bin/ first on PATH and VIRTUAL_ENV
    set, as `source .venv/bin/activate` would. It happens at most once (REEXEC_ENV), and never from
    the venv itself: a venv missing a package gets the one line, not a loop.
    """
    missing = missing_modules()
    if not missing:
        return
    python = venv_python(root)
    in_venv = python is not None and Path(sys.prefix).resolve() == python.parent.parent.resolve()
    if python is not None and not in_venv and os.environ.get(REEXEC_ENV) != "1":
        venv = python.parent.parent
        env = {
            **os.environ,
            REEXEC_ENV: "1",
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("PYTHONHOME", None)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(python, [str(python), "-m", module, *argv], env)
    print(activation_hint(missing), file=sys.stderr)
    raise SystemExit(1)
