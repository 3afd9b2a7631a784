"""Paths anchored at the project root, never at the working directory."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder that holds params.yaml: $SIZING_ROOT if set, else the checkout this package lives in."""
    env = os.environ.get("SIZING_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


ROOT = project_root()
PARAMS = ROOT / "params.yaml"
NOTEBOOKS = ROOT / "notebooks"
DATA = ROOT / "data"
RAW = DATA / "raw"
INTERIM = DATA / "interim"
CATALOG = DATA / "catalog"
METRICS = ROOT / "metrics"
REPORTS = ROOT / "reports"

REQUESTS_PARQUET = INTERIM / "requests.parquet"
RPS_SERIES_PARQUET = INTERIM / "rps_per_minute.parquet"
WORKLOAD_JSON = METRICS / "workload.json"
WORKLOAD_REPORT = REPORTS / "01_workload.html"


def display_path(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """A path as people should read it in reports: relative to the project root when inside it."""
    resolved = Path(path).resolve()
    base = (root or ROOT).resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else str(path)
