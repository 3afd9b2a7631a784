"""`sizing init --log PATH`: params.yaml rewritten for the user's own log (issue 15, crashes item 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import cli
from tests.conftest import ROOT, SHARED, write_csv, write_jsonl

BIN = Path(sys.executable).parent
WALKED_ON_REAL_TRACES = all(
    (SHARED / "traces" / name).exists() for name in ("azure2023_conv.csv", "mooncake_synthetic.jsonl")
)  # test_issue15_acceptance.walked
# what init sets or clears; every other key of params.yaml must be left exactly as it was
TOUCHED = {
    ("workload", "source"),
    ("workload", "format"),
    ("workload", "pattern"),
    ("workload", "columns"),
    ("workload", "timestamp_unit"),
    ("workload", "tiers"),
    ("model", "tiers"),
    ("validation", "source"),
    ("validation", "tier"),
    ("validation", "replicas"),
    ("validation", "benchmark_gpu_util_pct"),
    ("report", "previous"),
}


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """The files init reads: params.yaml, dvc.yaml and the catalog (params are checked against it)."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "data" / "catalog", dest / "data" / "catalog")
    monkeypatch.chdir(dest)
    return dest


def _own_log(folder: Path) -> Path:
    """1 h of trace-relative ms timestamps (~5 req/s), OpenAI-style names, two tenants."""
    rng = np.random.default_rng(42)
    t = np.cumsum(rng.exponential(200.0, 17_000))
    t = t[t < 3_600_000]
    rows = [f"{int(x)},{200 + i % 90},{20 + i % 13},{'acme' if i % 3 else 'globex'}" for i, x in enumerate(t)]
    return write_csv(folder / "logs" / "my_log.csv", "ts,prompt_tokens,completion_tokens,tenant", rows)


def _unchanged(before: dict, after: dict) -> None:
    for section, body in before.items():
        for key, value in (body or {}).items():
            if (section, key) not in TOUCHED:
                assert after[section][key] == value, f"{section}.{key} changed"


def test_init_rewrites_params_for_a_generic_log(project, capsys):
    log = _own_log(project)
    original = (project / "params.yaml").read_text()
    assert cli.main(["init", "--log", "logs/my_log.csv"]) == 0
    out = capsys.readouterr().out
    assert "params.yaml backed up to params.yaml.bak" in out and "dvc repro" in out
    assert (project / "params.yaml.bak").read_text() == original
    text = (project / "params.yaml").read_text()
    new, old = yaml.safe_load(text), yaml.safe_load(original)
    wl = new["workload"]
    assert wl["source"] == "logs/my_log.csv"  # relative to the project root
    assert wl["format"] == "generic"
    assert wl["columns"] == {"arrival_s": "ts", "input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}
    assert wl["timestamp_unit"] == "ms"  # relative ms, detected (not read as seconds)
    assert wl["tiers"] == {"column": "tenant", "rules": [], "map": {}}
    assert new["model"]["tiers"] == {}
    assert new["validation"]["source"] is None and new["validation"]["tier"] == "all"
    assert new["validation"]["benchmark_gpu_util_pct"] is None
    _unchanged(old, new)
    # comments survive, and nulls are written as params.yaml writes them
    assert "# time to first token, p99 target" in text and "# auto | generic | azure | burstgpt | mooncake" in text
    assert "  source: null" in text and "\n  pattern: null" in text
    # the log is profiled as the pipeline will: ~5 req/s, the relative-ms guess reported
    assert "Read as MILLISECONDS" in out and "Sizing rate: " in out
    assert log.exists()


def test_init_twice_keeps_the_first_backup(project):
    _own_log(project)
    original = (project / "params.yaml").read_text()
    assert cli.main(["init", "--log", "logs/my_log.csv"]) == 0
    first = (project / "params.yaml").read_text()
    assert cli.main(["init", "--log", "logs/my_log.csv"]) == 0
    assert (project / "params.yaml.bak").read_text() == original
    assert (project / "params.yaml.bak.2").read_text() == first


def test_init_on_a_bad_log_writes_nothing(project, capsys):
    rows = [{"timestamp": 1000 * i, "input_length": 600, "output_length": 10, "hash_ids": "oops"} for i in range(5)]
    path = write_jsonl(project / "bad.jsonl", rows)
    original = (project / "params.yaml").read_text()
    assert cli.main(["init", "--log", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sizing: error:") and "bad.jsonl" in err and "hash_ids" in err and err.count("\n") == 1
    assert (project / "params.yaml").read_text() == original
    assert not (project / "params.yaml.bak").exists()
    single = write_csv(project / "one.csv", "arrival_s,input_tokens,output_tokens", ["1700000000,5,5"])
    assert cli.main(["init", "--log", str(single)]) == 1
    assert "a single request" in capsys.readouterr().err
    assert (project / "params.yaml").read_text() == original


def test_init_needs_the_project_root(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    log = _own_log(tmp_path)
    assert cli.main(["init", "--log", str(log)]) == 1
    err = capsys.readouterr().err
    assert "expected to run `sizing init` in the project root" in err


def test_init_unknown_names_ask_for_columns(project, capsys):
    path = write_csv(project / "odd.csv", "when,a,b", ["1,2,3"])
    assert cli.main(["init", "--log", str(path)]) == 1
    err = capsys.readouterr().err
    assert "odd.csv" in err and "--column arrival_s=" in err
    assert not (project / "params.yaml.bak").exists()


def test_init_on_the_azure_trace(project, shared_fixtures):
    path = shared_fixtures / "traces" / "azure2023_conv.csv"
    assert cli.main(["init", "--log", str(path)]) == 0
    wl = yaml.safe_load((project / "params.yaml").read_text())["workload"]
    assert wl["source"] == str(path.resolve())  # outside the project: absolute
    assert (wl["format"], wl["columns"], wl["timestamp_unit"]) == ("azure", {}, "datetime")
    assert wl["tiers"] == {"column": "none", "rules": [], "map": {}}


@pytest.mark.e2e
def test_init_then_dvc_repro_reads_the_new_log(tmp_path):
    """The README walk-through: sizing init on a new log (ms timestamps, its own two tiers), then dvc repro, in a
    fresh git copy. The whole repro to the finance report runs here only without ../shared/fixtures; with them,
    tests/test_issue15_acceptance.py walks init + the whole repro on two real traces, and this log runs the
    workload stage, which reads what it adds."""
    from benchmarks.pipeline_time import copy_project

    dest = tmp_path / "project"
    copy_project(dest)
    _own_log(dest)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env.pop("SIZING_ROOT", None)

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(cmd), cwd=dest, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    run(str(BIN / "sizing"), "init", "--log", "logs/my_log.csv")
    if WALKED_ON_REAL_TRACES:
        # tests/test_issue15_acceptance.py walks `sizing init` + the whole `dvc repro` to the finance report on two
        # real traces and checks the validation verdict and every report's banner; here the workload stage alone
        # checks what this log adds (ms timestamps, its own tiers), saving a full pipeline run of test time.
        run(str(BIN / "dvc"), "repro", "workload")
    else:
        run(str(BIN / "dvc"), "repro")
    workload = json.loads((dest / "metrics" / "workload.json").read_text())
    assert workload["provenance"]["source"] == "logs/my_log.csv" and workload["provenance"]["sample"] is False
    assert workload["provenance"]["timestamp_unit"] == "ms" and set(workload["tiers"]) == {"acme", "globex"}
    if WALKED_ON_REAL_TRACES:
        return
    assert (dest / "reports" / "finance.html").stat().st_size > 0
    validation = json.loads((dest / "metrics" / "validation.json").read_text())
    assert validation["recharacterize"] is False and validation["synthetic"] is False
    # the sample sweeps are still the curve source: every report's SAMPLE banner says so, and only that
    for report in sorted((dest / "reports").glob("*.html")):
        html = report.read_text()
        assert "SAMPLE DATA" in html and "benchmark sweeps (sample_vllm" in html, report.name
        assert "the traffic log (data/raw/traffic/sample_traffic.parquet" not in html, report.name
