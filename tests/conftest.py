"""Shared helpers: write tiny logs, ingest them for real (DuckDB + great-expectations), profile them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import traffic, workload

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "fixtures"
METRICS_FIXTURE = ROOT / "tests" / "data" / "metrics"  # frozen metrics/*.json of the sample: unit tests read these
# The keys of metrics/operating_point.json that issue 4 names (a contract users' scripts rely on).
OPERATING_POINT_KEYS = (
    "load_kind",
    "c_max",
    "usable_rps",
    "knee",
    "littles_law_ceiling_rps",
    "littles_law_gap",
    "gap_flag",
    "slo",
    "percentile_used",
    "curve_source",
    "manifest",
    "recommendations",
)


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def profile_of(source: Path | str, tmp_path: Path, settings: workload.ProfileSettings | None = None, **ingest_kw: Any):
    """Ingest a log into tmp_path/requests.parquet and profile it; returns (profile, ingested)."""
    src = traffic.open_source(str(source), ingest_kw.pop("pattern", None), Path.cwd())
    out = tmp_path / "out" / "requests.parquet"
    ing = traffic.ingest(src, out, progress=None, **ingest_kw)
    prof = workload.build_profile(ing, out, settings or workload.ProfileSettings())
    return prof, ing


@pytest.fixture
def shared_fixtures() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/fixtures is not present")
    return SHARED


def run_cmd(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a project command (the venv's bin first on PATH, no analytics) in `cwd`; fail the test with its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("SIZING_ROOT", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def catalog_model(name: str) -> Any:
    """The project's catalog model `name`: what the stages pass to the step functions' `load_model`."""
    from pipeline import catalog

    return catalog.load_model(name, ROOT)
