"""Every notebook opened by hand: a plain Jupyter kernel (no stage runner, no injected parameters), cwd notebooks/.

It must run top to bottom against the project's params.yaml and current outputs, and write nothing:
every file of the project (metrics/, reports/, data/interim/, dvc.lock, ...) hashes the same afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.conftest import ROOT, built_sample

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
SKIP = {".git", "__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".ruff_cache"}


def _outputs(root: Path) -> list[str]:
    """Every output dvc.yaml declares (outs, metrics, plots), relative to the root."""
    found = []
    for stage in (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]).values():
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key) or []:
                found.append(item if isinstance(item, str) else next(iter(item)))
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with current outputs: the checkout's own when it has them all, else the session's one
    `dvc repro` of the sample (tests/conftest.py built_sample, shared with the e2e modules; a fresh clone has no
    reports, which git ignores)."""
    from benchmarks.pipeline_time import copy_project

    dest = tmp_path_factory.mktemp("by-hand") / "project"
    outputs = _outputs(ROOT)
    if not (all((ROOT / out).exists() for out in outputs) and (ROOT / "dvc.lock").exists()):
        return built_sample(tmp_path_factory, dest)
    copy_project(dest)
    for rel in [*outputs, "dvc.lock"]:
        src, dst = ROOT / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():  # an output folder (data/deploy) may already hold a file named as an output
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    return dest


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not SKIP & set(rel.parts):
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _run_by_hand(project: Path, name: str, cwd: Path) -> nbformat.NotebookNode:
    """Execute notebooks/<name>.ipynb as Jupyter does: a fresh python3 kernel in `cwd`, the file as saved."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    env = {k: v for k, v in os.environ.items() if k not in ("SIZING_STAGE_RUN", "SIZING_ROOT", "SIZING_CHART_SPECS")}
    env["PYTHONPATH"] = str(project)  # the copy's pipeline package, as a checkout's own venv would import it
    nb = nbformat.read(project / "notebooks" / f"{name}.ipynb", as_version=4)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(cwd), env=env, extra_arguments=["--HistoryManager.enabled=False"])
    try:
        NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        km.shutdown_kernel(now=True)
    return nb


def _printed(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_by_hand_and_writes_nothing(project, name):
    before = _hashes(project)
    nb = _run_by_hand(project, name, project / "notebooks")
    after = _hashes(project)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], f"{name} opened by hand changed {changed}"
    assert "parameters read from params.yaml" in _printed(nb)


def test_workload_notebook_says_what_it_did_not_write(project):
    """Notebook 01 computes the profile, from the project root too, and says it skipped metrics/workload.json."""
    before = (project / "metrics" / "workload.json").read_bytes()
    printed = _printed(_run_by_hand(project, "01_workload", project))
    assert "not writing metrics/workload.json" in printed
    assert "not writing data/interim/requests.parquet" in printed
    assert (project / "metrics" / "workload.json").read_bytes() == before
