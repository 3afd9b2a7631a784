"""The stage commands run without an activated venv (issue 16): they rerun in `.venv`, or stop with one line.

dvc.yaml's commands are `python3 -m pipeline.run <stage>` / `python3 -m pipeline.params`, with `python3`
taken from PATH. Here that `python3` is a real bare venv (no third-party package at all), run from a
copy of the package, as `.venv/bin/dvc repro` in a fresh shell runs it with the system Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from pipeline import runtime
from tests.conftest import ROOT

PROJECT_VENV = Path(sys.prefix)  # the venv running these tests: the project's, with every package


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with nothing installed: `python -c 'import yaml'` fails in it."""
    where = tmp_path_factory.mktemp("bare") / "venv"
    venv.create(where, with_pip=False, symlinks=True)
    python = where / "bin" / "python"
    assert subprocess.run([python, "-c", "import yaml"], capture_output=True).returncode != 0
    return python


def _copy_package(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _run(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}  # a fresh shell: no venv on PATH
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "entry",
    [
        ["-m", "pipeline.run", "workload"],
        ["-m", "pipeline.params"],
        ["-m", "pipeline.check_params"],
        ["-m", "pipeline"],
    ],
)
def test_without_a_venv_one_line_says_how_to_activate(bare_python: Path, tmp_path: Path, entry: list[str]) -> None:
    """No `.venv` anywhere above the project: exit 1, one line naming the interpreter and the fix, nothing written."""
    root = _copy_package(tmp_path / "project")
    proc = _run(bare_python, entry, root)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: the project's packages are not importable by {bare_python} (missing: yaml")
    assert lines[0].endswith("; run `make venv` and `source .venv/bin/activate` (or use .venv/bin/dvc)")
    assert proc.stdout == ""
    assert sorted(p.name for p in root.iterdir()) == ["pipeline"]  # no metrics/, reports/, data/ made


@pytest.mark.parametrize("layout", ["project", "project/.dvc/tmp/exps/tmp1234"])  # the second: `dvc exp run --temp`
def test_with_the_project_venv_the_command_reruns_in_it(bare_python: Path, tmp_path: Path, layout: str) -> None:
    """A `.venv` at or above the project: the same command runs with its Python (as activated), args kept."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / ".venv").symlink_to(PROJECT_VENV)
    root = _copy_package(tmp_path / layout)
    from pipeline.run import STAGES

    # the runner's own message for an unknown stage: only the venv's Python gets past its imports to say it
    proc = _run(bare_python, ["-m", "pipeline.run", "no-such-stage"], root)
    assert (proc.returncode, proc.stderr.strip()) == (
        1,
        f"error: unknown stage 'no-such-stage'; stages: {', '.join(STAGES)}",
    )
    proc = _run(bare_python, ["-m", "pipeline", "fleet", "--help"], root)  # the CLI, args passed through
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: sizing fleet")
    # the rerun process sees the venv as activation would set it
    code = "import os, sys; print(sys.prefix); print(os.environ['VIRTUAL_ENV']); print(os.environ['PATH'])"
    probe = root / "pipeline" / "probe_env.py"
    probe.write_text(f"from pipeline import runtime\nruntime.ensure_project_python('pipeline.probe_env', [])\n{code}\n")
    proc = _run(bare_python, ["-m", "pipeline.probe_env"], root)
    assert proc.returncode == 0, proc.stderr
    prefix, virtual_env, path = proc.stdout.splitlines()
    assert Path(prefix).resolve() == PROJECT_VENV.resolve()
    assert virtual_env == str(tmp_path / "project" / ".venv")
    assert path == f"{tmp_path / 'project' / '.venv' / 'bin'}:/usr/bin:/bin"


def test_a_venv_missing_a_package_gets_the_line_not_a_loop(tmp_path: Path) -> None:
    """A broken `.venv` (here: the bare one as the project's) is not re-executed again and again."""
    project = tmp_path / "project"
    venv.create(project / ".venv", with_pip=False, symlinks=True)
    root = _copy_package(project)
    proc = _run(project / ".venv" / "bin" / "python", ["-m", "pipeline.run", "workload"], root)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: the project's packages are not importable by {project / '.venv'}")


def test_the_project_venv_has_every_required_module() -> None:
    """In the project's venv nothing is missing, so the check returns at once and never re-executes."""
    assert runtime.missing_modules() == []
    assert runtime.missing_modules(("yaml", "no_such_module_xyz")) == ["no_such_module_xyz"]


def test_dvc_stage_commands_use_python3() -> None:
    """`python` is absent from a fresh shell on many systems (Debian, macOS); `python3` is in every venv too."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert {name: st["cmd"].split()[:3] for name, st in stages.items()} == {
        name: ["python3", "-m", "pipeline.check_params" if name == "params" else "pipeline.run"] for name in stages
    }


@pytest.mark.e2e
def test_dvc_repro_from_a_fresh_shell_runs_the_stage_in_the_venv(bare_python: Path, tmp_path: Path) -> None:
    """`.venv/bin/dvc repro params` with a `python3` on PATH that has nothing installed, for real.

    With the project's `.venv`, the stage reruns itself there and succeeds; without one, dvc reports
    the stage failed and the stage's own message is the one line saying how to activate.
    """
    from benchmarks.pipeline_time import copy_project

    project = tmp_path / "project"
    copy_project(project)
    dvc = PROJECT_VENV / "bin" / "dvc"
    env = {
        "PATH": f"{bare_python.parent}:/usr/bin:/bin",  # python3 -> the bare venv, as a system Python would be
        "HOME": os.environ.get("HOME", "/tmp"),
        "DVC_NO_ANALYTICS": "1",
    }
    proc = subprocess.run([dvc, "repro", "params"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "error: the project's packages are not importable by" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    (project / ".venv").symlink_to(PROJECT_VENV)
    proc = subprocess.run([dvc, "repro", "params"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running stage 'params'" in proc.stdout and "> python3 -m pipeline.check_params" in proc.stdout
