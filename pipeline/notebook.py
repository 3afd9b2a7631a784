"""What every notebook's parameters cell calls, so it runs in a plain Jupyter kernel as under the stage runner.

Under the stage runner (`python -m pipeline.run <stage>`, which sets SIZING_STAGE_RUN=1 in the kernel's
environment) the parameters come from the cell papermill injects after the parameters cell, and the
stage writes its outputs. Opened by hand in Jupyter (the kernel's working directory is notebooks/, or the
project root), the notebook reads params.yaml itself, works from the project root, and writes nothing:
every write of a metrics file, an interim table or a report is computed into a scratch file and
discarded, with a printed note (pipeline.io.set_read_only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STAGE_RUN_ENV = "SIZING_STAGE_RUN"  # the runner sets it to "1" in the kernel's environment


def stage_run() -> bool:
    """Whether this kernel was started by the stage runner (which injects the parameters and owns the outputs)."""
    return os.environ.get(STAGE_RUN_ENV) == "1"


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) that holds params.yaml.

    Falls back to the checkout this package lives in (pipeline.paths.ROOT) when none does.
    """
    from pipeline import paths

    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    return paths.ROOT


def sections(*names: str) -> tuple[dict[str, Any], ...]:
    """The named params.yaml sections, validated as the runner validates them, one dict per name.

    Under the stage runner: empty dicts (the injected cell that follows sets the real ones).
    By hand: changes the working directory to the project root, turns on read-only mode (nothing
    tracked is written) and returns the project's params.yaml sections, every default filled in.
    Either way, every DataFrame the notebook displays from here on renders through the one table
    layer (pipeline.tables.register; charts.enable() does it too).
    """
    from pipeline import tables

    tables.register()
    if stage_run():
        return tuple({} for _ in names)
    from pipeline import io, params, paths

    root = find_root()
    if root != paths.ROOT:
        print(
            f"note: the notebook is in {root} but the pipeline package reads {paths.ROOT}; "
            "set SIZING_ROOT or install this checkout (make venv) to use this one"
        )
        root = paths.ROOT
    os.chdir(root)
    io.set_read_only(True)
    every = params.validate_all(params.load(root / "params.yaml"), root)
    params.mark_validated(every)  # validated once: the stage the notebook calls does not validate them again
    print(
        "note: opened by hand: parameters read from params.yaml; nothing tracked is written "
        "(outputs are written only by the stage runner: dvc repro)"
    )
    return tuple(every[name] for name in names)
