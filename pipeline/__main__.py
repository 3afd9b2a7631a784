"""`python -m pipeline ...` is the same as the `sizing` console script."""

import sys

from pipeline import runtime

runtime.ensure_project_python("pipeline", sys.argv[1:])  # without the project's packages: rerun in .venv

from pipeline.cli import main  # noqa: E402

raise SystemExit(main())
