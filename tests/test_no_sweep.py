"""Issue 14's "no sweep at all" case: curve.source holds no benchmark sweep.

The calibrate stage writes a calibration with no deployments and `pooled` null (a warning says so), so adding sweeps
later is a rerun; the curve stage puts every pooled-fleet candidate on its roofline curve, plans the three cheapest
per usable req/s (data/benchmark_plan/) and stops with one line, writing nothing else.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest

from pipeline import calibration_views, engine_curves
from pipeline.stages import calibrate as calibrate_stage
from pipeline.stages import curve as curve_stage
from pipeline.stages.no_sweep import no_sweep
from tests.conftest import ROOT, built_sample, run_cmd


def test_no_sweep_is_a_folder_with_nothing_a_sweep_is_made_of(tmp_path):
    src = tmp_path / "bench"
    assert not no_sweep(src)  # missing: the readers' "not found", not this case
    src.mkdir()
    assert no_sweep(src)
    (src / "README.md").write_text("sweeps go here\n")
    (src / ".gitkeep").write_text("")
    (src / "h100" / ".hidden").mkdir(parents=True)
    (src / "h100" / ".hidden" / "x.json").write_text("{}")
    assert no_sweep(src)  # a README, a .gitkeep, an empty subfolder and hidden files are no sweep
    (src / "h100" / "manifest.yaml").write_text("gpu: H100-SXM\n")
    assert not no_sweep(src)  # a manifest without results is a broken sweep: the reader says what is missing
    (src / "h100" / "manifest.yaml").unlink()
    (src / "h100" / "result.json").write_text("{}")
    assert not no_sweep(src)
    f = tmp_path / "one.json"
    f.write_text("{}")
    assert not no_sweep(f)


def test_calibrate_stage_with_no_sweep_writes_an_empty_calibration(tmp_path):
    from pipeline.layout import Layout

    (tmp_path / "data" / "raw" / "bench").mkdir(parents=True)
    sections = {"calibration": {"refine_passes": 2, "lolo_passes": 0}, "curve": {"source": "data/raw/bench"}}
    doc = calibrate_stage.run(sections, Layout(tmp_path))
    written = json.loads((tmp_path / "metrics" / "calibration.json").read_text())
    assert written == doc
    assert doc["deployments"] == [] and doc["pooled"] is None and doc["calibrated_deployments"] == 0
    assert len(doc["warnings"]) == 1 and doc["warnings"][0].startswith("data/raw/bench: no benchmark sweep at all")
    assert doc["settings"]["refine_passes"] == 2 and doc["targets"]["met"] == doc["targets"]["missed"] == 0
    # the same bytes on a rerun
    first = (tmp_path / "metrics" / "calibration.json").read_bytes()
    calibrate_stage.run(sections, Layout(tmp_path))
    assert (tmp_path / "metrics" / "calibration.json").read_bytes() == first
    # the curve stage and the step 7b report read it: no deployment, no pooled fit -> every candidate roofline
    cal = engine_curves.CalibrationDoc.from_document(doc)
    assert cal.deployments == [] and cal.pooled is None
    c = engine_curves.Candidate("all/H100-SXM/w-bf16/kv-bf16", "all", "m", "H100-SXM", "bf16", "bf16", 1, 1, None)
    assert engine_curves.resolve(c, cal, "hopper").basis == "roofline"
    assert calibration_views.coefficients_table(doc).empty and calibration_views.residuals_table(doc).empty
    assert calibration_views.sentence(doc).startswith("No benchmark sweep at all")
    assert calibration_views.level_residuals_frame(doc).empty


def _entry(gpu: str, tp: int, usable_rps: float | None, pp: int = 1) -> dict:
    return {"gpu": gpu, "tp": tp, "pp": pp, "usable_rps": usable_rps}


def test_rank_first_by_cost_per_usable_rps_then_gpus_per_rps():
    cands = {
        # 2 GPUs x $3 / 2 req/s = $3.00 per hour per req/s
        "all/A/w-bf16/kv-bf16": _entry("A", 2, 2.0),
        # 1 GPU x $4 / 1 req/s = $4.00
        "all/B/w-bf16/kv-bf16": _entry("B", 1, 1.0),
        # 1 x 2 GPUs x $3 / 3 req/s = $2.00: the cheapest
        "all/A/w-fp8/kv-fp8": _entry("A", 1, 3.0, pp=2),
        # unpriced: 1 GPU / 10 req/s = 0.1 GPU per req/s, after every priced one however cheap
        "all/C/w-bf16/kv-bf16": _entry("C", 1, 10.0),
        # unpriced: 4 GPUs / 10 req/s = 0.4 GPU per req/s
        "all/C/w-fp8/kv-fp8": _entry("C", 4, 10.0),
        "all/B/w-fp8/kv-fp8": _entry("B", 1, None),  # no usable RPS (misses the SLO): never planned
    }
    prices = {"A": 3.0, "B": 4.0, "C": None}
    got = curve_stage.rank_first(cands, prices, n=10)
    assert [cid for cid, _, _ in got] == [
        "all/A/w-fp8/kv-fp8",
        "all/A/w-bf16/kv-bf16",
        "all/B/w-bf16/kv-bf16",
        "all/C/w-bf16/kv-bf16",
        "all/C/w-fp8/kv-fp8",
    ]
    assert [cost for _, _, cost in got] == [2.0, 3.0, 4.0, None, None]
    assert [cid for cid, _, _ in curve_stage.rank_first(cands, prices)] == [cid for cid, _, _ in got[:3]]


def test_knee_is_the_first_level_past_the_ratio():
    levels = [
        {"concurrency": 1, "ttft_p50_ms": 100.0, "ttft_p99_ms": 150.0},
        {"concurrency": 4, "ttft_p50_ms": 100.0, "ttft_p99_ms": 200.0},  # exactly 2: not past it
        {"concurrency": 8, "ttft_p50_ms": 100.0, "ttft_p99_ms": 250.0},
    ]
    assert curve_stage._knee(levels, 2.0) == 8.0
    assert curve_stage._knee(levels[:2], 2.0) is None


@pytest.mark.e2e
def test_no_sweep_stops_the_curve_stage_with_the_benchmark_plan(tmp_path, tmp_path_factory):
    """A copy of the session's sample run (its workload, routing and memory outputs are what the upstream stages
    would write again: they do not read curve.source), curve.source an empty folder, then the calibrate and curve
    stages."""
    project = built_sample(tmp_path_factory, tmp_path / "project")
    last_good = {
        name: (project / "data" / "interim" / name).read_bytes()
        for name in ("curves.parquet", "candidate_curves.parquet")
    }
    params = project / "params.yaml"
    text = params.read_text(encoding="utf-8")
    old = "  source: data/raw/benchmarks "
    assert text.count(old) == 1
    params.write_text(text.replace(old, "  source: data/raw/no_sweeps "), encoding="utf-8")
    (project / "data" / "raw" / "no_sweeps").mkdir()
    shutil.rmtree(project / "data" / "benchmark_plan", ignore_errors=True)

    cal = run_cmd([sys.executable, "-m", "pipeline.run", "calibrate"], project)
    assert cal.returncode == 0
    doc = json.loads((project / "metrics" / "calibration.json").read_text())
    assert doc["deployments"] == [] and doc["pooled"] is None and len(doc["warnings"]) == 1

    # an earlier run's operating point (the committed one) stays as it was
    op = project / "metrics" / "operating_point.json"
    shutil.copy2(ROOT / "metrics" / "operating_point.json", op)
    before = op.read_bytes()
    proc = run_cmd([sys.executable, "-m", "pipeline.run", "curve"], project, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: data/raw/no_sweeps: no benchmark sweep at all: benchmark all/"), line
    assert line.endswith(
        " first -- the plans are in data/benchmark_plan/; with no sweep there is no calibration, so "
        "tco.allow_transferred cannot price on transferred curves"
    ), line
    assert " req/s per instance on the roofline), all/" in line
    m = re.search(
        r"at all: benchmark (\S+) \(about ([0-9.]+) req/s per instance on the roofline\), (\S+), (\S+) first", line
    )
    assert m, line
    ids = [m[1], m[3], m[4]]
    assert len(set(ids)) == 3 and float(m[2]) > 0
    plans = project / "data" / "benchmark_plan"
    folders = sorted(p.name for p in plans.iterdir())
    assert folders == sorted(i.replace("/", "__") for i in ids)
    for name in folders:
        assert (plans / name / "trace.jsonl").stat().st_size > 0
        assert (plans / name / "manifest.yaml").is_file() and (plans / name / "commands.sh").is_file()
    assert op.read_bytes() == before  # nothing else written
    for name, data in last_good.items():  # the failed curve stage keeps the last good curves (issue 15)
        assert (project / "data" / "interim" / name).read_bytes() == data, name
    # the three are the memory stage's pooled candidates, planned for a sweep up past the roofline's C_max
    memory = json.loads((project / "metrics" / "memory.json").read_text())
    assert all(memory["candidates"][i]["tier"] == "all" and memory["candidates"][i]["fits"] for i in ids)
    manifest = (plans / ids[0].replace("/", "__") / "manifest.yaml").read_text()
    assert ids[0].split("/")[1] in manifest
