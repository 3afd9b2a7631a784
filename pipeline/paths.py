"""Paths anchored at the project root, never at the working directory.

The module-level names are those of `pipeline.layout.Layout(project_root())`, kept for existing callers;
new code takes a `Layout` (the stages do) instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import layout as _layout
from pipeline.layout import Layout, project_root

LAYOUT = Layout(project_root())
ROOT = LAYOUT.root
PARAMS = LAYOUT.params_yaml
NOTEBOOKS = LAYOUT.notebooks
DATA = LAYOUT.data
RAW = LAYOUT.raw
INTERIM = LAYOUT.interim
CATALOG = LAYOUT.catalog
METRICS = LAYOUT.metrics
REPORTS = LAYOUT.reports

REQUESTS_PARQUET = LAYOUT.requests_parquet
RPS_SERIES_PARQUET = LAYOUT.rps_per_minute_parquet
WORKLOAD_JSON = LAYOUT.workload_json
WORKLOAD_REPORT = LAYOUT.workload_report


def display_path(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """A path as people should read it in reports: relative to the project root when inside it."""
    return _layout.display_path(path, root or ROOT)
