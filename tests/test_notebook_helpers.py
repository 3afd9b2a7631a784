"""pipeline.notebook and io's read-only mode: what lets a notebook open by hand without writing outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import io, notebook, params, paths
from tests.conftest import ROOT


@pytest.fixture
def read_only():
    io.set_read_only(True)
    yield
    io.set_read_only(False)


def test_read_only_discards_writes_into_the_project_and_says_so(read_only, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    target = tmp_path / "metrics" / "workload.json"
    target.parent.mkdir()
    target.write_text('{"old": 1}\n')
    io.write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["workload.json"]  # no temp file left beside it
    assert capsys.readouterr().out.strip() == (
        "note: opened by hand, not writing metrics/workload.json (only the stage runner writes outputs)"
    )
    io.write_text(tmp_path / "reports" / "01_workload.html", "x")
    assert not (tmp_path / "reports").exists()  # not even the folder


def test_read_only_still_writes_outside_the_project(read_only, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ROOT", tmp_path / "project")
    io.write_text(tmp_path / "scratch" / "a.txt", "kept")  # a scratch file (a CLI temp dir, a nested staged write)
    assert (tmp_path / "scratch" / "a.txt").read_text() == "kept"


def test_writes_are_real_by_default(tmp_path):
    assert io.read_only() is False
    io.write_text(tmp_path / "a.txt", "written")
    assert (tmp_path / "a.txt").read_text() == "written"


def test_find_root_walks_up_to_params_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    assert notebook.find_root(tmp_path / "notebooks" / "deep") == tmp_path
    assert notebook.find_root(tmp_path) == tmp_path


def test_under_the_runner_sections_are_left_to_the_injected_cell(monkeypatch):
    monkeypatch.setenv(notebook.STAGE_RUN_ENV, "1")
    assert notebook.sections("workload", "slo") == ({}, {})
    assert io.read_only() is False


def test_by_hand_sections_are_the_projects_params_and_writes_stop(monkeypatch, capsys):
    monkeypatch.delenv(notebook.STAGE_RUN_ENV, raising=False)
    monkeypatch.chdir(ROOT / "notebooks")  # where Jupyter starts a kernel
    try:
        tco, slo = notebook.sections("tco", "slo")
        assert io.read_only() is True
        assert Path.cwd() == ROOT  # relative paths in cells resolve from the project root
    finally:
        io.set_read_only(False)
    every = params.validate_all(params.load(ROOT / "params.yaml"), ROOT)
    assert (tco, slo) == (every["tco"], every["slo"])
    assert slo["ttft_p99_ms"] == 2000  # params.yaml's value, as the runner would inject it
    assert "utilization_trap_below" in tco  # the key notebooks 12 and finance stopped on (a KeyError on {})
    assert "parameters read from params.yaml" in capsys.readouterr().out
