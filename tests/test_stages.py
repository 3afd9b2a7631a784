"""The stage layer (issue 16): one Layout of every path, one list of rate names, stages that reproduce the
frozen sample outputs byte for byte, and step modules that read no params and no paths."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import params, paths, rates, routing
from pipeline.layout import Layout
from pipeline.stages import fleet as fleet_stage
from pipeline.stages import memory as memory_stage
from pipeline.stages import report as report_stage
from pipeline.stages import routing as routing_stage
from tests.conftest import METRICS_FIXTURE, ROOT

MOVED = (
    "workload",
    "routing",
    "fleet",
    "candidates",
    "tco",
    "report",
    "final_curve",
    "validation",
    "candidate_targets",
    "candidate_eval",
    "candidate_plan",
    "curve_result",
    "curve_selection",
    "curve_overlay",
    "curve_evidence",
    "curve_analysis",
    "contracts",
    "tco_pricing",
    "tco_cost",
    "tco_candidates",
    "tco_select",
    "tco_plan",
)  # stages in pipeline/stages/ (and the modules final_curve, candidates and tco were split into)


def test_layout_names_every_file_a_stage_declares():
    """Every metrics/ and data/interim/ output of dvc.yaml is a Layout property (by its path), and none is spelled twice."""
    layout = Layout(Path("/project"))
    props = {
        layout.relative(getattr(layout, name)) for name in dir(Layout) if isinstance(getattr(Layout, name), property)
    }
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    declared = {
        (o if isinstance(o, str) else next(iter(o)))
        for stage in stages.values()
        for key in ("outs", "metrics")
        for o in stage.get(key) or []
    }
    wanted = {d for d in declared if d.startswith(("metrics/", "data/interim/")) and d != "data/interim/params.ok"}
    wanted -= {"metrics/calibration.json"}  # the calibrate stage (being added) names its own
    assert "metrics/tiers.json" in wanted and "data/interim/curves.parquet" in wanted
    assert sorted(wanted - props) == []
    assert layout.tco_json == Path("/project/metrics/tco.json")
    assert layout.report("11_fleet") == Path("/project/reports/11_fleet.html")


def test_paths_are_the_layout_of_the_project_root():
    assert paths.ROOT == Layout.default().root == ROOT
    assert paths.WORKLOAD_JSON == ROOT / "metrics" / "workload.json"
    assert paths.REQUESTS_PARQUET == ROOT / "data" / "interim" / "requests.parquet"
    assert paths.PARAMS == ROOT / "params.yaml" and paths.CATALOG == ROOT / "data" / "catalog"


def test_one_list_of_rate_names():
    """params' choices, the tier demands' keys and the profile's `rps` keys are the one RateName list."""
    names = ("mean", "per_second_p95", "per_second_p99", "per_minute_p95", "per_minute_p99", "peak_1s")
    assert names == rates.RATE_NAMES and tuple(rates.RateName) == names
    assert names == params.SIZING_RATES and names[1:] == params.BURST_RATES
    assert (*names, "sizing_rate") == routing.RATE_KEYS
    profile = json.loads((METRICS_FIXTURE / "workload.json").read_text(encoding="utf-8"))
    assert set(profile["rps"]) == {*names, "sizing_rate"}
    with pytest.raises(params.ParamsError, match="sizing_rate"):
        params.validate_section("workload", {"sizing_rate": "per_minute_p90"})


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


@pytest.mark.parametrize("name", MOVED)
def test_moved_step_modules_import_neither_params_nor_paths_nor_a_stage(name):
    """A step module whose stage moved to pipeline/stages/ has no run_stage and imports no stage, params or paths."""
    path = ROOT / "pipeline" / f"{name}.py"
    imported = _imports(path)
    assert not imported & {"pipeline.params", "pipeline.paths"}, name
    assert not any(i.startswith("pipeline.stages") for i in imported), name
    assert "def run_stage(" not in path.read_text(encoding="utf-8"), name


def _project(tmp_path: Path, *metrics: str) -> Layout:
    """A project under tmp_path: the real catalog, and the frozen sample metrics named."""
    layout = Layout(tmp_path)
    layout.metrics.mkdir(parents=True)
    layout.interim.mkdir(parents=True)
    (tmp_path / "data" / "catalog").symlink_to(ROOT / "data" / "catalog")
    for name in metrics:
        shutil.copyfile(METRICS_FIXTURE / f"{name}.json", layout.metrics_json(name))
    return layout


def _sections(names: tuple[str, ...]) -> dict:
    data = params.load(ROOT / "params.yaml")
    return {name: params.section(name, data) for name in names}


def test_routing_and_fleet_stages_reproduce_the_sample_outputs(tmp_path):
    """From the frozen profile and operating point, the stages write tiers.json and fleet.json byte for byte."""
    layout = _project(tmp_path, "workload", "operating_point")
    tiers = routing_stage.run(_sections(routing.SECTIONS), layout)
    assert layout.tiers_json.read_bytes() == (METRICS_FIXTURE / "tiers.json").read_bytes()
    assert set(tiers["tiers"]) == {"large", "small"}
    fleet = fleet_stage.run(_sections(("fleet", "routing", "slo")), layout)
    got = json.loads(layout.fleet_json.read_text())
    # no request table here: no replay (tests/test_fleet_replay.py replays the sample), the rest as frozen
    assert got.pop("replay") is None and "requests.parquet not found" in got.pop("replay_note")
    got["warnings"] = [w for w in got["warnings"] if not w.startswith("replay_skipped:")]
    assert got == json.loads((METRICS_FIXTURE / "fleet.json").read_text())
    assert fleet["total_gpus"] == json.loads((METRICS_FIXTURE / "fleet.json").read_text())["total_gpus"]


def test_memory_and_report_stages_write_what_they_compute(tmp_path):
    """memory.json and its predicted curves from the frozen profile; then tco.json priced on the frozen fleet.

    (memory.json's engine figures move with the engine profile being calibrated, so they are not compared
    with the frozen file; the hand-checkable figures are.)
    """
    layout = _project(tmp_path, "workload", "operating_point", "fleet", "tiers")
    from pipeline import candidates, tco

    plan = memory_stage.run(_sections(candidates.SECTIONS), layout)
    written = json.loads(layout.memory_json.read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(plan.metrics()))
    assert (
        written["models"]["Llama-3.1-70B"]["kv_bytes_per_token_bf16"] == 80 * 8 * 128 * 2 * 2
    )  # layers x kv heads x dim x K,V x 2 B
    assert layout.predicted_curve_parquet.stat().st_size > 0
    assert memory_stage.load(_sections(candidates.SECTIONS), layout).metrics() == plan.metrics()
    t = report_stage.run(_sections(tco.SECTIONS), layout)
    assert json.loads(layout.tco_json.read_text(encoding="utf-8")) == json.loads(json.dumps(t))
    # the frozen fleet: routed, 28 H100-SXM + 7 L40S; $205.667/h x 730 h = $150,136.91 a month
    assert t["chosen"] == "routed" and t["totals"]["gpus"] == 35
    assert t["monthly_usd"] == round(t["totals"]["usd_per_hour"] * 730, 2) == 150136.91


def test_a_stage_validates_its_sections(tmp_path):
    layout = _project(tmp_path, "workload")
    with pytest.raises(params.ParamsError, match=r"routing\.mode"):
        routing_stage.run({"routing": {"mode": "sometimes"}, "model": {}}, layout)
    assert not layout.tiers_json.exists()  # nothing half-written
