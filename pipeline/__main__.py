"""`python -m pipeline ...` is the same as the `sizing` console script."""

from pipeline.cli import main

raise SystemExit(main())
