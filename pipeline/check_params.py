"""The DVC `params` stage: the whole params.yaml checked (pipeline.params.validate_all), then a stamp written.

DVC reruns a stage only when something it tracks changes, and each stage tracks only its own sections,
so a misspelled section (`fleets:` for `fleet:`) changes nothing a stage tracks. This stage tracks the
whole file, and every other stage depends on the stamp it writes (data/interim/params.ok): a plain
`dvc repro` and a targeted one (`dvc repro fleet`) alike run this check first, and a bad key anywhere
stops them with one line, exit status 1. The stamp's bytes never depend on the values in params.yaml, so
a valid edit rewrites the same stamp and reruns only the stages whose sections changed.

    python -m pipeline.check_params [PARAMS]   (default: the project's params.yaml)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import runtime

if __name__ == "__main__":  # without the project's packages, rerun in .venv (as `python -m pipeline.params` does)
    runtime.ensure_project_python("pipeline.check_params", sys.argv[1:])

from pipeline import io, params, paths
from pipeline.errors import InputError, one_line

STAMP = Path("data") / "interim" / "params.ok"  # relative to the folder holding params.yaml
STAMP_TEXT = (
    "params.yaml passed pipeline.params.validate_all. Every dvc.yaml stage depends on this file, so that\n"
    "`dvc repro STAGE` checks the whole params.yaml first; its bytes never depend on the values.\n"
)


def main(argv: list[str] | None = None) -> int:
    """Validate params.yaml (argv[0], default the project's) whole; on success write the stamp beside it, exit 0.

    On bad params: one line `error: ...` on stderr, exit 1, and the stamp is not rewritten.
    """
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else paths.PARAMS
    root = path.resolve().parent
    try:
        params.validate_all(params.load(path), root)
    except InputError as exc:  # ParamsError is one too
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    stamp = root / STAMP
    if not stamp.exists() or stamp.read_text(encoding="utf-8") != STAMP_TEXT:
        io.write_text(stamp, STAMP_TEXT)  # atomic; left alone when current (same bytes, same mtime)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
