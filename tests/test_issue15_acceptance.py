"""Issue 15 accepted as a new user would: the README "Your own log" walk-through on each real trace, and a
`kill -9` during the ingest's spilling sort (the 119 MB orphan of the issue)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import io
from tests.conftest import AZURE_CONV, ROOT, SHARED, azure_walked

BIN = Path(sys.executable).parent
TRACES = SHARED / "traces"


# --------------------------------------------------------------------------- kill -9 while DuckDB spills

KILLED_INGEST = """
import sys
from pathlib import Path
from pipeline.layout import Layout
from pipeline.stages import workload as workload_stage
workload_stage.run(
    {"workload": {"source": sys.argv[2], "format": "generic", "timestamp_unit": "s", "memory_limit": "40MB"}},
    Layout(Path(sys.argv[1])), progress=False,
)
"""


def test_a_kill_9_during_the_spilling_sort_leaves_nothing_after_the_next_run(tmp_path):
    """The workload stage killed while DuckDB spills its capped sort: the next stage run deletes the spill folder
    and the temp file (before the fix the `.requests.parquet.<pid>.*.tmp.duckdb-tmp/` folder, 150 MB here, stayed)."""
    log = tmp_path / "log.parquet"
    duckdb.connect().execute(
        "COPY (SELECT 1767225600 + i * 0.0005 AS arrival_s, 100 + (i * 7919) % 4000 AS input_tokens, "
        "1 + (i * 104729) % 600 AS output_tokens FROM range(6000000) t(i)) TO ? (FORMAT parquet)",
        [str(log)],
    )
    root = tmp_path / "project"
    interim = root / "data" / "interim"
    interim.mkdir(parents=True)
    (interim / "keep.duckdb-tmp").mkdir()  # a user's folder of another name is never touched
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_INGEST, str(root), str(log)], env=env)
    spill = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p for p in interim.glob(f"*{io.SPILL_SUFFIX}") if p.name != "keep.duckdb-tmp" and any(p.iterdir())]
        if found:
            spill = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert spill is not None, "the ingest never spilled: raise the row count or lower memory_limit"
    # what the kill left behind: the spill folder (DuckDB may have emptied it between the poll and the kill, a race
    # the 122,880-row write made likelier: the folder itself stays, and its files were seen before the kill)
    assert spill.is_dir()
    assert spill.name.startswith(".requests.parquet.") and ".tmp" in spill.name
    # the next run of any stage (the runner's transaction) cleans the orphans beside its outputs
    with io.stage_transaction(root, "workload", ["data/interim/requests.parquet", "metrics/workload.json"]):
        pass
    left = sorted(p.name for p in interim.iterdir())
    assert left == ["keep.duckdb-tmp"], left


def test_a_spill_folder_of_a_live_writer_is_kept_and_a_dead_ones_goes(tmp_path):
    target = tmp_path / "requests.parquet"
    live = tmp_path / f".requests.parquet.{os.getpid()}.abc.parquet.tmp{io.SPILL_SUFFIX}"
    dead = tmp_path / f".requests.parquet.999999999.abc.parquet.tmp{io.SPILL_SUFFIX}"
    plain = tmp_path / f"requests.parquet{io.SPILL_SUFFIX}"  # `sizing validate`-style out: the runner's only
    for d in (live, dead, plain):
        d.mkdir()
        (d / "duckdb_temp_storage-0.tmp").write_bytes(b"x")
    assert io.clean_orphans(target) == [dead]
    assert live.is_dir() and plain.is_dir()
    assert sorted(io.clean_orphans(target, live_too=True)) == sorted([live, plain])


# --------------------------------------------------------------------------- the walk-through on real traces


def _independent(trace: Path) -> dict[str, float]:
    """Per-minute p95/p99 (clock minutes, empty minutes 0, numpy linear percentiles) and the mean rate, by pandas."""
    if trace.suffix == ".csv":
        t = pd.to_datetime(pd.read_csv(trace)["TIMESTAMP"], format="ISO8601")
        sec = (t - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()
    else:
        sec = pd.read_json(trace, lines=True)["timestamp"].to_numpy() / 1000.0  # Mooncake: ms, trace-relative
    minute = np.floor(sec / 60).astype(np.int64)
    counts = pd.Series(minute).value_counts().reindex(range(minute.min(), minute.max() + 1), fill_value=0)
    return {
        "requests": len(sec),
        "pm_p95": float(np.percentile(counts / 60, 95)),
        "pm_p99": float(np.percentile(counts / 60, 99)),
        "mean": len(sec) / float(sec.max() - sec.min()),
        "span_s": float(sec.max() - sec.min()),
    }


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env.pop("SIZING_ROOT", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module", params=["azure2023_conv.csv", "mooncake_synthetic.jsonl"])
def walked(request, tmp_path_factory) -> tuple[Path, Path, str]:
    """A fresh git copy of the project, `sizing init --log TRACE`, then `dvc repro`: one pipeline run per trace.
    The Azure one is the session's shared walk-through (tests/conftest.py azure_walked, which also sets the site's
    memory.concurrency before the repro; tests/test_real_logs.py reads the same run)."""
    trace = TRACES / request.param
    if not trace.exists():
        pytest.skip("../shared/fixtures is absent")
    from benchmarks.pipeline_time import copy_project

    project = tmp_path_factory.mktemp("accept") / "project"
    if trace == AZURE_CONV:
        project, stdout = azure_walked(tmp_path_factory, project)
        return project, trace, stdout
    copy_project(project)
    init = _run([str(BIN / "sizing"), "init", "--log", str(trace)], project)
    _run([str(BIN / "dvc"), "repro"], project)
    return project, trace, init.stdout


def _metrics(project: Path, name: str) -> dict:
    return json.loads((project / "metrics" / f"{name}.json").read_text())


@pytest.mark.e2e
def test_init_leaves_no_sample_setting(walked):
    project, trace, _ = walked
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert Path(params["workload"]["source"]).resolve() == trace.resolve()  # init writes the resolved path
    assert params["workload"]["tiers"]["map"] == {} and params["model"]["tiers"] == {}
    assert params["validation"]["source"] is None and params["validation"]["tier"] == "all"
    assert params["validation"]["benchmark_gpu_util_pct"] is None and params["report"]["previous"] is None
    assert (project / "params.yaml.bak").read_text() == (ROOT / "params.yaml").read_text()


@pytest.mark.e2e
def test_the_sizing_rate_is_the_independent_per_minute_p95(walked):
    project, trace, _ = walked
    want = _independent(trace)
    w = _metrics(project, "workload")
    assert w["requests"] == want["requests"] and w["provenance"]["sample"] is False
    assert w["rps"]["sizing_rate"] == pytest.approx(want["pm_p95"], abs=1e-4)
    assert w["rps"]["per_minute_p99"] == pytest.approx(want["pm_p99"], abs=1e-4)
    assert w["rps"]["mean"] == pytest.approx(want["mean"], abs=1e-4)


@pytest.mark.e2e
def test_gpus_and_cost_follow_by_hand_from_the_rates_and_the_aws_price(walked):
    project, trace, _ = walked
    want = _independent(trace)
    fleet, tco = _metrics(project, "fleet"), _metrics(project, "tco")
    op = _metrics(project, "operating_point")
    usable = op["usable_rps"]
    # both traces are more than 2x from the 6000/1000 sweep (curve.max_length_mismatch): the measured usable RPS is
    # carried to the trace's p95 lengths with the engine model of the same deployment (one fixed length each side)
    assert op["sizing_basis"] != "measured" and op["length_mismatch"]
    carried = op["carried"]
    assert usable == pytest.approx(carried["usable_rps"], abs=1e-4)
    assert usable == pytest.approx(op["measured_usable_rps"] * carried["factor"], rel=1e-3)
    assert carried["factor"] == pytest.approx(
        carried["model_at_workload_p95"] / carried["model_at_sweep_lengths"], abs=5e-4
    )
    pooled = fleet["pooled"]
    assert fleet["plan"] == "pooled" and pooled["usable_rps"] == pytest.approx(usable, abs=1e-4) and pooled["tp"] == 4
    # method.md step 11 by hand: safety 1.2, headroom max(growth 0.2, burst p99/p95 - 1), N+1, TP4
    n = math.ceil(round(want["pm_p95"], 4) / usable)
    n = math.ceil(n * 1.2)
    n = math.ceil(n * (1 + max(0.2, want["pm_p99"] / want["pm_p95"] - 1)))
    gpus = (n + 1) * 4
    # the carried usable RPS: Azure 1.5627 x 3.1612 / 1.1434 = 4.3205 req/s, ceil(7.7925 / 4.3205) = 2 -> 3 -> 4,
    # (4 + 1) x 4 = 20; Mooncake (p95 48,905 in) 1.5627 x 0.2462 / 1.1434 = 0.3365, 13 -> 16 -> 20, 21 x 4 = 84
    assert fleet["total_gpus"] == gpus == {"azure2023_conv.csv": 20, "mooncake_synthetic.jsonl": 84}[trace.name]
    # priced on one provider: AWS lists every compared GPU; H100-SXM p5.48xlarge on demand is $6.88 per GPU-hour
    prices = pd.read_csv(ROOT / "data" / "catalog" / "prices.csv")
    aws = prices[(prices.gpu == "H100-SXM") & (prices.provider == "AWS") & (prices.pricing == "on-demand")]
    assert tco["price_provider"] == "AWS" and tco["like_for_like"] is True
    assert tco["totals"]["monthly_usd"] == pytest.approx(gpus * float(aws.usd_per_gpu_hour.iloc[0]) * 730, abs=0.01)
    # both logs are under an hour: no scaling schedule, and the reason is stated
    assert want["span_s"] < 3600
    assert tco["totals"]["monthly_usd_with_schedule"] is None and "under an hour" in tco["totals"]["schedule_note"]
    assert pooled["schedule"] is None


@pytest.mark.e2e
def test_finance_has_no_sample_verdict_and_the_banner_names_only_the_sweeps(walked):
    project, _, _ = walked
    validation = _metrics(project, "validation")
    assert validation["status"] == "no production window" and validation["recharacterize"] is False
    for report in sorted((project / "reports").glob("*.html")):
        html = report.read_text()
        assert "SAMPLE DATA" in html and "benchmark sweeps (sample_vllm" in html, report.name
        assert "sample_traffic" not in html and "SYNTHETIC production window" not in html, report.name
    finance = (project / "reports" / "finance.html").read_text()
    assert "x the benchmark" not in finance and "41x" not in finance
    assert "No production window yet" in (project / "reports" / "13_validation.html").read_text()
