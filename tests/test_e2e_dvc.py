"""End to end: `dvc repro` in a temporary git copy of the project, for real (papermill, kernel, GX, DuckDB)."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.run import STAGES
from tests.conftest import OPERATING_POINT_KEYS, ROOT, built_sample, put_back, run_cmd, save_outputs

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


_run = run_cmd  # tests/conftest.py


def _report_sections(root: Path) -> dict:
    """The report stage's params sections of `root`, validated as the finance notebook hashes them."""
    from pipeline import params, report
    from pipeline.stages import report as report_stage

    data = params.load(root / "params.yaml")
    return report_stage.validated(report.SECTIONS, {name: params.section(name, data) for name in report.SECTIONS})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git copy of the project's tracked and unignored files (the same fresh copy the pipeline_time benchmark
    measures) after one full `dvc repro` of the sample: this module's own copy of the session's run."""
    return built_sample(tmp_path_factory, tmp_path_factory.mktemp("e2e") / "project")


def test_repro_writes_the_three_outputs(project):
    metrics = json.loads((project / "metrics" / "workload.json").read_text())
    for key in (
        "requests",
        "span_s",
        "timestamp_resolution_s",
        "input_tokens",
        "output_tokens",
        "context_tokens",
        "rps",
        "archetype",
        "concurrency_littles_law",
        "hourly",
        "tiers",
    ):
        assert key in metrics, key
    assert set(metrics["rps"]) >= {
        "mean",
        "per_second_p95",
        "per_second_p99",
        "per_minute_p95",
        "per_minute_p99",
        "peak_1s",
        "sizing_rate",
    }
    assert set(metrics["input_tokens"]) == {"p50", "p90", "p95", "p99", "mean", "max"}
    # tenants mapped to routing tiers (workload.tiers.map): support-chat -> small, code-assist + doc-qa -> large
    assert set(metrics["tiers"]) == {"large", "small"}
    assert sum(t["requests"] for t in metrics["tiers"].values()) == metrics["requests"]
    assert metrics["provenance"]["source"] == "data/raw/traffic/sample_traffic.parquet"
    assert (project / "data" / "interim" / "requests.parquet").stat().st_size > 0


def test_memory_stage_writes_metrics_curves_and_reports(project):
    mem = json.loads((project / "metrics" / "memory.json").read_text())
    workload = json.loads((project / "metrics" / "workload.json").read_text())
    assert set(mem["recommended"]) == {"all", *workload["tiers"]}
    rec = mem["candidates"][mem["recommended"]["all"]]
    assert rec["fits"] and rec["meets_slo"] and rec["max_concurrency_per_replica"] >= 1
    assert mem["targets"]["all"]["concurrency_p95"] == workload["concurrency_littles_law"]["p95"]
    assert mem["models"]["Llama-3.1-70B"]["kv_bytes_per_token_bf16"] == 327_680
    import pyarrow.parquet as pq

    curve = pq.read_table(project / "data" / "interim" / "predicted_curve.parquet").to_pylist()
    assert {r["candidate"] for r in curve} >= {mem["recommended"]["all"]}
    for name, title in (
        ("02_hardware", "Step 2"),
        ("04_memory", "Step 4"),
        ("05_quantization", "Step 5"),
        ("06_parallelism", "Step 6"),
    ):
        html = (project / "reports" / f"{name}.html").read_text()
        assert f"<title>{title}" in html
        assert not re.search(r"""(src|href)=["']https?://""", html) and "<script src" not in html
        assert "candidates.load_plan" not in html and "run_stage" not in html
    assert "figure 2.1" in (project / "reports" / "04_memory.html").read_text()
    assert "figure 3.3.2" in (project / "reports" / "06_parallelism.html").read_text()


def test_memory_cli_matches_the_metrics_entry(project):
    mem = json.loads((project / "metrics" / "memory.json").read_text())
    e = mem["candidates"]["all/H100-SXM/w-fp8/kv-fp8"]
    t = mem["targets"]["all"]
    proc = _run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "memory",
            "--model",
            "Llama-3.1-70B",
            "--gpu",
            "H100-SXM",
            "--weights",
            "fp8",
            "--kv",
            "fp8",
            "--concurrency",
            str(t["concurrency_p95"]),
            "--context-tokens",
            str(t["context_tokens_p95"]),
            "--input-tokens",
            str(t["input_tokens_p95"]),
            "--output-tokens",
            str(t["output_tokens_mean"]),
            "--json",
        ],
        project,
    )
    out = json.loads(proc.stdout)
    for key in (
        "total_gb",
        "min_gpus",
        "tp",
        "max_concurrency_per_replica",
        "predicted_ttft_ms",
        "predicted_itl_ms",
        "meets_slo",
    ):
        assert out[key] == pytest.approx(e[key], rel=1e-3), key


def _svg_charts(html: str) -> list[str]:
    """The charts a report carries, decoded: each an inline base64 SVG image in an image/svg+xml output."""
    found = re.findall(
        r'data-mime-type="image/svg\+xml"[^>]*>\s*<img [^>]*src="data:image/svg\+xml;base64,([^"]+)"', html
    )
    return [base64.b64decode(b).decode() for b in found]


def test_every_chart_reaches_its_report_as_svg(project):
    """The runner turns each Vega-Lite output of the kernel into SVG: no spec and no JavaScript is left behind."""
    reports = sorted((project / "reports").glob("*.html"))
    # every notebook of pipeline/run.py STAGES: 14 step reports (01-13, 07b), finance, scenarios, the benchmark plan,
    # the deployment sheet
    assert [p.stem for p in reports] == sorted(nb for stage in STAGES.values() for nb in stage.notebooks)
    charted = 0
    for path in reports:
        html = path.read_text()
        assert "vnd.vegalite" not in html and "<script" not in html.split("</style>")[-1], path.name
        svgs = _svg_charts(html)
        assert all(s.startswith("<svg") and s.rstrip().endswith("</svg>") for s in svgs), path.name
        charted += bool(svgs)
    finance = (project / "reports" / "finance.html").read_text()
    assert len(_svg_charts(finance)) == 5  # pooled vs routed, cost by candidate, a schedule per fleet (2), utilization
    assert charted == len(reports) - 1  # every report carries a chart but the benchmark plan (a table)


def test_report_is_self_contained_and_offline(project):
    html = (project / "reports" / "01_workload.html").read_text()
    assert "<title>Step 1: workload profile</title>" in html
    assert not re.search(r"""(src|href)=["']https?://""", html), "report fetches something from the network"
    assert "<script src" not in html
    assert len(_svg_charts(html)) == 3  # length CDFs, requests/s over time, the hourly curve: inline SVG
    assert "Length distributions" in html and "Data quality" in html and "failed_requests_excluded" in html
    assert "import pipeline" not in html and "wl.run_stage" not in html  # no code cells


def test_cli_prints_the_same_profile(project):
    proc = _run([sys.executable, "-m", "pipeline", "profile", "--source-from-params", "--json", "--quiet"], project)
    assert json.loads(proc.stdout) == json.loads((project / "metrics" / "workload.json").read_text())


def test_unchanged_rerun_runs_nothing_and_is_byte_identical(project):
    lock = (project / "dvc.lock").read_bytes()
    outs = [
        "metrics/workload.json",
        "data/interim/requests.parquet",
        "reports/01_workload.html",
        "metrics/tiers.json",
        "reports/03_routing.html",
        "metrics/memory.json",
        "data/interim/predicted_curve.parquet",
        "reports/04_memory.html",
        "reports/06_parallelism.html",
        "metrics/calibration.json",
        "reports/07b_calibration.html",
        "metrics/operating_point.json",
        "data/interim/curves.parquet",
        "reports/07_benchmark.html",
        "reports/10_final_curve.html",
        "metrics/fleet.json",
        "reports/11_fleet.html",
        "metrics/tco.json",
        "reports/12_tco.html",
        "reports/finance.html",
        "metrics/validation.json",
        "reports/13_validation.html",
        "metrics/summary.json",
        "metrics/plots/rps_over_time.csv",
        "metrics/plots/input_length_cdf.csv",
        "metrics/plots/output_length_cdf.csv",
        "metrics/plots/ttft_vs_load/sample_vllm_h100x4_long_closed_loop.csv",
        "metrics/plots/itl_vs_load/sample_vllm_l40s_8b_small_closed_loop.csv",
        "metrics/plots/cost_per_candidate.csv",
        "reports/deploy.html",
        "metrics/deploy.json",
        "data/deploy/large.yaml",
        "data/deploy/small.yaml",
        "metrics/benchmark_plan.json",
        "reports/benchmark_plan.html",
        "data/benchmark_plan/large__H100-SXM__w-fp8__kv-fp8/trace.jsonl",
        "data/benchmark_plan/small__L40S__w-fp8__kv-fp8/commands.sh",
    ]
    before = {p: (project / p).read_bytes() for p in outs}
    proc = _run([str(BIN / "dvc"), "repro"], project)
    assert "didn't change, skipping" in proc.stdout and "Running stage" not in proc.stdout
    assert (project / "dvc.lock").read_bytes() == lock
    for p in outs:
        assert (project / p).read_bytes() == before[p], p
    # Byte-identical across runs: this session's full run (a fresh copy at another path, on this machine) wrote
    # the very dvc.lock the checkout holds, written by `make repro` when it was committed (another run, often on
    # another machine). The lock's md5 of every output (each report, metric, plot and data file above) is then
    # the same, and so are the deps'. (This replaces a second, forced full run of the same copy: 90 s of tests.)
    # (Stage for stage: dvc orders a lock's stages by when each first ran, which differs between a first run and
    # an incremental one.)
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text(encoding="utf-8"))
    fresh = yaml.safe_load(lock.decode("utf-8"))
    changed = _changed_outs(committed, fresh) or [
        n for n in committed["stages"] if committed["stages"][n] != fresh["stages"].get(n)
    ]
    assert fresh == committed, (
        f"a fresh `dvc repro` of the sample wrote another dvc.lock than the checkout's ({', '.join(changed)} "
        "differ): the outputs are not reproducible, or dvc.lock is stale -- run `make repro` and commit dvc.lock"
    )


def _changed_outs(committed: dict, fresh: dict) -> list[str]:
    """The outputs whose md5 differs between two dvc.lock documents (a readable failure message)."""

    def md5s(doc: dict) -> dict[str, str]:
        return {o["path"]: o.get("md5", "") for st in doc["stages"].values() for o in st.get("outs", [])}

    a, b = md5s(committed), md5s(fresh)
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))


def test_changing_a_curve_param_reruns_only_the_curve_stage(project):
    saved = save_outputs(project)
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["curve"]["knee_ratio"] = 2.5
    try:
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # `dvc repro curve`: the curve stage and whatever upstream changed (nothing), not the stages downstream
        proc = _run([str(BIN / "dvc"), "repro", "curve"], project)
        assert "Running stage 'curve'" in proc.stdout
        assert "Running stage 'memory'" not in proc.stdout and "Running stage 'workload'" not in proc.stdout
        assert "Running stage 'calibrate'" not in proc.stdout  # it tracks curve.source only
        assert "Stage 'memory' didn't change" in proc.stdout and "Stage 'calibrate' didn't change" in proc.stdout
        assert json.loads((project / "metrics" / "operating_point.json").read_text())["knee"] == 64
    finally:
        put_back(project, saved)


def test_calibrate_stage_writes_calibration_json(project):
    """Step 7b on the sample: its 4 sweeps are 2 deployments (the three H100 sweeps share one manifest identity)."""
    doc = json.loads((project / "metrics" / "calibration.json").read_text())
    keys = [d["key"] for d in doc["deployments"]]
    assert keys == [
        "Llama-3.1-70B/H100-SXM/tp4-pp1/w-fp8/kv-fp8/c-fp8/vllm",
        "Llama-3.1-8B/L40S/tp1-pp1/w-fp8/kv-fp8/c-fp8/vllm",
    ]
    h100, l40s = doc["deployments"]
    assert h100["sweeps"] == [f"data/raw/benchmarks/sample_vllm_h100x4_{s}" for s in ("chat", "large", "long")]
    assert (h100["levels"], l40s["levels"]) == (24, 8) and len(h100["levels_used"]) == 24
    scales = doc["pooled"]["gpu_arch_scale"]
    assert scales["hopper"] == 1.0 and set(scales) == {"ada", "hopper"}  # the family with the most rows is the anchor
    assert doc["settings"]["refine_passes"] == 24 and doc["settings"]["lolo_passes"] == 0  # params.yaml calibration
    assert len(doc["targets"]["rows"]) == 18
    summary = json.loads((project / "metrics" / "summary.json").read_text())
    lolo = doc["pooled"]["residuals"]["leave_one_level_out"]
    assert summary["calibrated_deployments"] == doc["calibrated_deployments"]
    assert summary["calibration_lolo_throughput_error_pct"] == round(100 * lolo["throughput"]["median_abs_rel"], 4)
    assert "<title>Step 7b" in (project / "reports" / "07b_calibration.html").read_text()


def test_editing_the_engine_model_flags_the_calibrate_stage(project):
    """Exact deps: pipeline/sim/cost.py is imported (transitively) by the stages that run the engine model -- calibrate
    (the fits), curve (every candidate's curve), fleet (the replay) and bench_plan (the plan's trace window) -- and
    by no other stage."""
    cost = project / "pipeline" / "sim" / "cost.py"
    saved = cost.read_text()
    try:
        cost.write_text(saved + "\n# edited\n")
        status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout)
        assert "calibrate" in status, status
        flagged = [s for s in status if not s.startswith("data/")]
        assert set(flagged) == {"calibrate", "curve", "fleet", "bench_plan"}, flagged
        changed = [c for entry in status["calibrate"] for c in entry.get("changed deps", {})]
        assert "pipeline/sim/cost.py" in changed, status["calibrate"]
    finally:
        cost.write_text(saved)
    assert "calibrate" not in json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout)


def test_roofline_params_feed_the_memory_calibrate_and_curve_stages_only():
    """The efficiencies set the memory stage's roofline, the engine model's prior (calibrate) and the overlay."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [name for name, st in stages.items() if "roofline" in st.get("params", [])] == [
        "memory",
        "calibrate",
        "curve",
    ]


def test_a_bad_key_anywhere_stops_the_first_stage_before_it_computes(project):
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["tco"]["planned_utilisation"] = 0.7  # a typo in a section the workload stage does not read
    params["workload"]["max_gap_s"] = 601  # makes the workload stage rerun
    lock = (project / "dvc.lock").read_bytes()
    try:
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = _run([str(BIN / "dvc"), "repro"], project, check=False)
        assert proc.returncode != 0 and "Running stage 'params'" in proc.stdout
        assert "Running stage 'workload'" not in proc.stdout  # the params stage runs first and stops it
        assert (
            "unknown key tco.planned_utilisation (did you mean 'planned_utilization'?); allowed keys in 'tco': pricing"
            in proc.stderr
        )
        assert "Traceback" not in proc.stderr and (project / "dvc.lock").read_bytes() == lock
    finally:
        (project / "params.yaml").write_text(original)
        _run(
            [str(BIN / "dvc"), "repro"], project
        )  # the failed run left the last good outputs; this reruns what changed


def test_a_misspelled_section_is_an_error_not_up_to_date(project):
    """`fleets:` for `fleet:` changes no param any stage tracks by section: the params stage tracks the file."""
    original = (project / "params.yaml").read_text()
    lock = (project / "dvc.lock").read_bytes()
    try:
        (project / "params.yaml").write_text(original + "fleets:\n  safety_factor: 1.5\n")
        proc = _run([str(BIN / "dvc"), "repro"], project, check=False)
        assert proc.returncode != 0 and "up to date" not in proc.stdout
        assert re.findall(r"Running stage '(\w+)'", proc.stdout) == ["params"]  # it stops before any other stage
        assert "error: params.yaml: unknown section 'fleets' (did you mean 'fleet'?)" in proc.stderr
        assert "Traceback" not in proc.stderr and (project / "dvc.lock").read_bytes() == lock
    finally:
        (project / "params.yaml").write_text(original)
    proc = _run([str(BIN / "dvc"), "repro"], project)  # the failed check recorded nothing: all up to date again
    assert "Running stage" not in proc.stdout


def test_a_misspelled_section_stops_a_targeted_repro_too(project):
    """`dvc repro fleet` reproduces fleet's upstream only; every stage depends on the params stage's stamp
    (data/interim/params.ok), so the whole-file check is upstream of each, and a valid edit elsewhere reruns
    the check alone (the stamp's bytes do not change)."""
    dvc = str(BIN / "dvc")
    original = (project / "params.yaml").read_text()
    lock = (project / "dvc.lock").read_bytes()
    try:
        (project / "params.yaml").write_text(original + "fleets:\n  safety_factor: 1.5\n")
        proc = _run([dvc, "repro", "fleet"], project, check=False)
        assert proc.returncode != 0 and "up to date" not in proc.stdout, proc.stdout
        assert re.findall(r"Running stage '(\w+)'", proc.stdout) == ["params"]  # it stops before any other stage
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr  # one line, naming the key and the nearest valid name
        assert errors[0].startswith("error: params.yaml: unknown section 'fleets' (did you mean 'fleet'?)"), errors
        assert "Traceback" not in proc.stderr and (project / "dvc.lock").read_bytes() == lock

        params = yaml.safe_load(original)
        params["tco"]["planned_utilization"] = 0.75  # valid, and no stage upstream of fleet tracks tco
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = _run([dvc, "repro", "fleet"], project)
        assert re.findall(r"Running stage '(\w+)'", proc.stdout) == ["params"]  # the same stamp: fleet up to date
    finally:
        (project / "params.yaml").write_text(original)
    proc = _run([dvc, "repro", "fleet"], project)
    assert re.findall(r"Running stage '(\w+)'", proc.stdout) == ["params"]
    assert (project / "data" / "interim" / "params.ok").read_text().startswith("params.yaml passed")


def test_unknown_gpu_in_params_stops_the_memory_stage(project):
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["hardware"]["gpus"] = ["H100-SXM", "H300"]
    try:
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = _run([str(BIN / "dvc"), "repro"], project, check=False)
        assert proc.returncode != 0
        assert "hardware.gpus[1] = 'H300' is not in data/catalog/gpus.csv; allowed values: A100-40GB" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        (project / "params.yaml").write_text(original)
        _run(
            [str(BIN / "dvc"), "repro"], project
        )  # the failed run left the last good outputs; this reruns what changed


def test_curve_stage_writes_the_operating_point_and_reports(project):
    op = json.loads((project / "metrics" / "operating_point.json").read_text())
    for key in OPERATING_POINT_KEYS:
        assert key in op, key
    assert op["slo"] == {"ttft_p99_ms": 2000, "itl_p99_ms": 50}
    assert op["curve_source"]["sweep"] == "sample_vllm_h100x4_long" and op["curve_source"]["synthetic"] is True
    # C_max from the raw files, by hand: ITL (TPOT) p99 crosses 50 ms between concurrency 32 and 64
    d = project / "data" / "raw" / "benchmarks" / "sample_vllm_h100x4_long"
    lv = {json.loads(f.read_text())["max_concurrency"]: json.loads(f.read_text()) for f in d.glob("*.json")}
    v32, v64 = lv[32]["p99_tpot_ms"], lv[64]["p99_tpot_ms"]
    c_max = 32 + (50 - v32) / (v64 - v32) * 32
    assert op["c_max"] == pytest.approx(c_max, abs=1e-4)
    r32, r64 = lv[32]["request_throughput"], lv[64]["request_throughput"]
    assert op["usable_rps"] == pytest.approx(r32 + (c_max - 32) / 32 * (r64 - r32), abs=1e-4)
    import pyarrow.parquet as pq

    table = pq.read_table(project / "data" / "interim" / "curves.parquet").to_pandas()
    assert len(table) == 32 and table["curve"].nunique() == 4
    # each routing tier on its own tagged sweep; the 8B tier's C_max by hand from its files (ITL binds)
    pt = op["per_tier"]
    assert pt["large"]["sweep"] == "sample_vllm_h100x4_large" and pt["small"]["sweep"] == "sample_vllm_l40s_8b_small"
    d8 = project / "data" / "raw" / "benchmarks" / "sample_vllm_l40s_8b_small"
    lv8 = {json.loads(f.read_text())["max_concurrency"]: json.loads(f.read_text()) for f in d8.glob("*.json")}
    lo = max(c for c, v in lv8.items() if v["p99_tpot_ms"] <= 50)
    hi = min(c for c, v in lv8.items() if v["p99_tpot_ms"] > 50)
    c8 = lo + (50 - lv8[lo]["p99_tpot_ms"]) / (lv8[hi]["p99_tpot_ms"] - lv8[lo]["p99_tpot_ms"]) * (hi - lo)
    assert pt["small"]["c_max"] == pytest.approx(c8, abs=1e-3)
    # steps 8-9 per tier: each tier's prefix reuse from its own rows of the log, its replicas on its own curve
    workload = json.loads((project / "metrics" / "workload.json").read_text())
    tiers = json.loads((project / "metrics" / "tiers.json").read_text())["tiers"]
    for tier in ("large", "small"):
        prefix = next(r for r in pt[tier]["recommendations"] if r["name"] == "prefix_caching")
        assert prefix["value"] == workload["tiers"][tier]["prefix_reuse"]["reuse_fraction"]
        assert prefix["replicas"] == math.ceil(tiers[tier]["rps"]["sizing_rate"] / pt[tier]["usable_rps"])
    assert "Per routing tier" in (project / "reports" / "08_kv_cache.html").read_text()
    for name, title in (
        ("07_benchmark", "Step 7"),
        ("08_kv_cache", "Step 8"),
        ("09_batching", "Step 9"),
        ("10_final_curve", "Step 10"),
    ):
        html = (project / "reports" / f"{name}.html").read_text()
        assert f"<title>{title}" in html and "SYNTHETIC DATA" in html
        assert not re.search(r"""(src|href)=["']https?://""", html) and "<script src" not in html
        assert "final_curve.compute" not in html and "run_stage" not in html
    final = (project / "reports" / "10_final_curve.html").read_text()
    assert "figure 8.2" in final and "Predicted (roofline) vs measured" in final
    # issue 17: the pooled curve's 3 charts, then per fleet (all, large, small) its sizing curve's TTFT and ITL
    # against load (6) after its `vllm bench serve`-style table, and a Pareto chart per fleet (3)
    assert len(_svg_charts(final)) == 3 + 6 + 3
    assert final.count("Maximum request concurrency") == 3 and "Latency against throughput: every candidate" in final


def test_curve_stage_puts_every_candidate_on_its_own_curve(project):
    """Issue 14: every memory-stage candidate (plus the benchmarked deployments) on a curve at its fleet's lengths."""
    import pyarrow.parquet as pq

    op = json.loads((project / "metrics" / "operating_point.json").read_text())
    memory = json.loads((project / "metrics" / "memory.json").read_text())
    cands = op["candidates"]
    assert set(memory["candidates"]) <= set(cands)
    keys = {"tier", "model", "gpu", "weights", "kv", "tp", "pp", "basis", "basis_why", "deployment_key", "c_max"}
    keys |= {"usable_rps", "binding_slo", "interval", "length_match", "lengths", "levels", "memory_rejected"}
    assert all(keys <= set(e) for e in cands.values())
    # the sample's three benchmarked deployments match their fleets' lengths: measured, the measured figures
    measured = {k for k, e in cands.items() if e["basis"] == "measured"}
    assert measured == {"all/H100-SXM/w-fp8/kv-fp8", "large/H100-SXM/w-fp8/kv-fp8", "small/L40S/w-fp8/kv-fp8"}
    assert cands["all/H100-SXM/w-fp8/kv-fp8"]["c_max"] == op["c_max"]
    assert cands["small/L40S/w-fp8/kv-fp8"]["usable_rps"] == op["per_tier"]["small"]["usable_rps"]
    # every other one: the pooled coefficients of metrics/calibration.json, at the fleet's sampled lengths
    others = [e for k, e in cands.items() if k not in measured]
    assert others and all(e["basis"] == "transferred" for e in others)
    assert all(e["lengths"]["requests"] == 1024 for e in others)
    assert all(e["interval"] is not None for e in others if e["c_max"] is not None)
    assert op["sizing_basis"] == "measured" and op["length_mismatch"] == []
    assert all(c["basis"] == "measured" and c["length_match"] for c in op["curves"].values())
    table = pq.read_table(project / "data" / "interim" / "candidate_curves.parquet").to_pandas()
    assert len(table) == sum(len(e["levels"]) for e in cands.values()) and set(table["id"]) == set(cands)
    final = (project / "reports" / "10_final_curve.html").read_text()
    assert "Every candidate on its own curve" in final and "all/H200/w-fp8/kv-fp8" in final


def _by_hand(rps: dict[str, float], usable: float, tp: int) -> tuple[int, int, int]:
    """(instances, with safety, total) from params: safety 1.2, growth 0.2, burst = per-minute p99 / sizing - 1, N+1."""
    import math

    peak = rps["sizing_rate"]
    base = math.ceil(peak / usable)
    safe = math.ceil(round(base * 1.2, 9))
    room = max(0.2, rps["per_minute_p99"] / peak - 1)
    return base, safe, math.ceil(round(safe * (1 + room), 9)) + 1


def test_the_operating_point_is_its_typed_contract_key_for_key(project):
    """metrics/operating_point.json of a real run round-trips through contracts.OperatingPointDoc byte for byte:
    every key kept, in order, the optional ones (candidates, anchor_rule, anchor) included (issue 16)."""
    from pipeline import io
    from pipeline.contracts import OperatingPointDoc

    text = (project / "metrics" / "operating_point.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    out = OperatingPointDoc.from_dict(doc).to_dict()
    assert list(out) == list(doc) and {"candidates", "anchor_rule", "anchor"} <= set(out)
    assert io.dumps(out) == text


def test_fleet_stage_sizes_the_fleet_from_the_profile_and_the_operating_point(project):
    import math

    w = json.loads((project / "metrics" / "workload.json").read_text())
    tiers = json.loads((project / "metrics" / "tiers.json").read_text())
    op = json.loads((project / "metrics" / "operating_point.json").read_text())
    fl = json.loads((project / "metrics" / "fleet.json").read_text())
    # the pooled fleet, by hand from the profile and the pooled operating point
    p = fl["pooled"]
    expected = _by_hand(w["rps"], op["usable_rps"], op["manifest"]["tp"])
    assert (p["instances"], p["instances_with_safety"], p["total_instances"]) == expected
    assert p["gpus"] == expected[2] * op["manifest"]["tp"] and p["gpu"] == op["manifest"]["gpu"]
    # the sample routes: pooled > 8 GPUs and 60% of requests on the 8B model
    assert fl["plan"] == "routed" and fl["routing"]["adopted"] is True and set(fl["per_tier"]) == {"large", "small"}
    assert tiers["simple_share"]["value"] == pytest.approx(w["tiers"]["small"]["requests"] / w["requests"], abs=1e-4)
    total = 0
    for name, t in fl["per_tier"].items():
        for key in ("instances", "instances_with_safety", "spares", "gpus", "gpu", "tp", "schedule"):
            assert key in t, key
        x = op["per_tier"][name]
        expected = _by_hand(w["tiers"][name]["rps"], x["usable_rps"], x["manifest"]["tp"])
        assert (t["instances"], t["instances_with_safety"], t["total_instances"]) == expected, name
        assert t["gpus"] == expected[2] * x["manifest"]["tp"] and t["gpu"] == x["manifest"]["gpu"]
        assert len(t["schedule"]["hours"]) == 24 and 0 < t["schedule"]["savings_vs_static"] < 1
        assert min(h["instances"] for h in t["schedule"]["hours"]) >= 2  # min warm 1 + the spare: never zero
        total += t["gpus"]
    assert fl["total_gpus"] == total and fl["gpus_by_type"] == {
        "H100-SXM": fl["per_tier"]["large"]["gpus"],
        "L40S": fl["per_tier"]["small"]["gpus"],
    }
    g = fl["guardrails"]
    assert g["max_input_tokens"] == math.ceil(2.5 * w["input_tokens"]["p95"])
    assert g["circuit_breaker_queue_depth"] == math.floor(0.8 * 2.0 * w["rps"]["sizing_rate"])
    html = (project / "reports" / "11_fleet.html").read_text()
    assert "<title>Step 11" in html and "SYNTHETIC DATA" in html and "run_stage" not in html
    # the burst test: each tier's fleet replayed on its busiest hour with the calibrated engine model
    rep = fl["replay"]
    assert fl["replay_note"] is None and set(rep["per_tier"]) == {"large", "small"}
    for name, r in rep["per_tier"].items():
        t = fl["per_tier"][name]
        assert r["formula_replicas"] == t["instances_with_headroom"] and r["basis"] == "calibrated", name
        assert r["window"]["kind"] == "busiest-hour" and r["window"]["requests"] > 0
        assert r["passes"] == (
            r["min_replicas_meeting_slo"] is not None and r["min_replicas_meeting_slo"] <= t["instances_with_headroom"]
        )
        assert r["saves_instances"] == (
            t["instances_with_headroom"] - r["min_replicas_meeting_slo"] if r["passes"] else 0
        )
        # like for like (issue 14): the replayed model is corrected to the tier's measured point, and re-simulated
        # there it gives the measured usable RPS
        cc = r["capacity_correction"]
        assert cc["applied"] and cc["same_deployment"], name
        assert cc["measured_usable_rps"] == op["per_tier"][name]["usable_rps"], name
        assert abs(cc["reproduced_usable_rps"] / cc["measured_usable_rps"] - 1) < 0.01, cc
    assert rep["passes"] == all(r["passes"] for r in rep["per_tier"].values())
    assert "corrected to the benchmark" in html
    assert "The chosen fleet, replayed on the busiest hour" in html and "formula N passes" in html


def test_bench_plan_stage_writes_the_plan_after_the_report(project):
    plan = json.loads((project / "metrics" / "benchmark_plan.json").read_text())
    tco = json.loads((project / "metrics" / "tco.json").read_text())
    chosen = {f"{t}/{r['gpu']}/w-{r['weights']}/kv-{r['kv']}" for t, r in tco["per_tier"].items()}
    roles = {p["candidate"]: p["role"] for p in plan["plans"]}
    assert chosen <= {c for c, role in roles.items() if role == "chosen"}
    assert any(role == "benchmark_next" for role in roles.values())
    for p in plan["plans"]:
        folder = project / p["folder"]
        assert sorted(x.name for x in folder.iterdir()) == sorted(
            ["trace.jsonl", "burst.jsonl", "commands.sh", "manifest.yaml", "README.md"]
        )
    html = (project / "reports" / "benchmark_plan.html").read_text()
    assert "<title>The benchmark plan" in html and "run_stage" not in html
    html = (project / "reports" / "03_routing.html").read_text()
    assert "<title>Step 3" in html and "60% of requests" in html and "run_stage" not in html


def _price(project: Path, gpu: str) -> float:
    import csv

    # every price from one provider (issue 15): the one metrics/tco.json names; the sample's GPUs are all on AWS
    provider = json.loads((project / "metrics" / "tco.json").read_text())["price_basis"]["provider"]
    assert provider == "AWS"
    with (project / "data" / "catalog" / "prices.csv").open() as fh:
        return min(
            float(r["usd_per_gpu_hour"])
            for r in csv.DictReader(fh)
            if r["gpu"] == gpu and r["pricing"] == "on-demand" and r["provider"] == provider
        )


def test_tco_stage_prices_the_measured_plan(project):
    w = json.loads((project / "metrics" / "workload.json").read_text())
    op = json.loads((project / "metrics" / "operating_point.json").read_text())
    fleet = json.loads((project / "metrics" / "fleet.json").read_text())
    t = json.loads((project / "metrics" / "tco.json").read_text())
    for key in ("per_candidate", "chosen", "monthly_usd", "annual_usd", "usd_per_million_output_tokens", "utilization"):
        assert key in t, key
    # the pooled plan: the measured deployment at the lowest on-demand list price of its GPU, 730 h a month
    m, fl = op["manifest"], fleet["pooled"]
    assert t["pooled"]["candidate"] == f"all/{m['gpu']}/w-{m['weight_dtype']}/kv-{m['kv_dtype']}"
    pooled_hour = fl["gpus"] * _price(project, m["gpu"])
    assert t["routing"]["pooled_monthly_usd"] == pytest.approx(pooled_hour * 730, abs=0.01)
    chosen = next(r for r in t["per_candidate"] if r["candidate"] == t["pooled"]["candidate"])
    assert chosen["basis"] == "measured" and chosen["usable_rps"] == op["usable_rps"]
    assert chosen["utilization"] == pytest.approx(
        w["rps"]["mean"] / (fl["total_instances"] * op["usable_rps"]), abs=1e-4
    )
    # the routed plan (adopted): each tier's GPUs x its GPU's price, summed
    assert t["chosen"] == "routed" and t["plan"] == "routed"
    per_hour = sum(x["gpus"] * _price(project, x["gpu"]) for x in fleet["per_tier"].values())
    assert t["monthly_usd"] == pytest.approx(per_hour * 730, abs=0.01)
    assert t["annual_usd"] == pytest.approx(per_hour * 8760, abs=0.01)
    capacity = sum(x["total_instances"] * x["usable_rps"] for x in fleet["per_tier"].values())
    mean = sum(w["tiers"][n]["rps"]["mean"] for n in fleet["per_tier"])
    assert t["utilization"] == pytest.approx(mean / capacity, abs=1e-4)
    # blended $/1M output tokens: total $/h over the tokens the whole log delivers
    tokens_m = w["rps"]["mean"] * w["output_tokens"]["mean"] * 3600 / 1e6
    assert t["usd_per_million_output_tokens"] == pytest.approx(per_hour / tokens_m, abs=1e-3)
    assert t["utilization_trap"] == (t["utilization"] < 0.4)
    assert t["routing"]["routing_saves_usd_per_month"] == pytest.approx((pooled_hour - per_hour) * 730, abs=0.05)
    # steps 4-12 per tier: each tier's own candidates, its measured deployment priced as its fleet
    for name, x in t["per_tier_candidates"].items():
        measured = next(r for r in x["candidates"] if r["candidate"] == x["measured"])
        assert measured["basis"] == "measured" and measured["monthly_usd"] == t["per_tier"][name]["monthly_usd"], name
        assert all(r["candidate"].startswith(f"{name}/") for r in x["candidates"])
    html = (project / "reports" / "12_tco.html").read_text()
    assert "<title>Step 12" in html and "Utilization trap" in html and "run_stage" not in html
    assert "Routing: one pooled fleet or one fleet per tier?" in html and "Per tier: what else could serve it" in html


def test_finance_report_first_screen_and_a_git_tag_as_the_previous_review(project):
    from pipeline import report

    t = json.loads((project / "metrics" / "tco.json").read_text())
    f = json.loads((project / "metrics" / "fleet.json").read_text())
    html = (project / "reports" / "finance.html").read_text()
    assert "<title>LLM inference fleet: GPUs and cost</title>" in html
    gpus = f"{f['total_gpus']}: {f['gpus_by_type']['H100-SXM']} H100-SXM + {f['gpus_by_type']['L40S']} L40S"
    assert f"USD {t['monthly_usd']:,.0f}" in html and gpus in html and "Routing:" in html
    scenarios = (project / "reports" / "scenarios.html").read_text()
    assert "<title>What-if scenarios side by side" in scenarios and "H200 instead of H100" in scenarios
    assert not re.search(r"""(src|href)=["']https?://""", scenarios) and "scenarios.table" not in scenarios
    assert "Risk flags" in html and "SYNTHETIC" in html and "Assumptions" in html
    # issue 17's first screen: one budget figure, the badge, the as-of line from the inputs (report.inputs_id)
    assert 'id="budget"' in html and 'id="badge"' in html and 'id="as-of"' in html
    assert f"${t['monthly_usd']:,.0f}" in html and "List prices are illustrative" in html
    assert f"inputs sha256 <code>{report.inputs_id(project, _report_sections(project))}</code>" in html
    assert not re.search(r"""(src|href)=["']https?://""", html) and "<script src" not in html
    assert "import pipeline" not in html and "rp.load" not in html
    # a previous review named by a git tag: commit this run's metrics, tag it, read it back
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-f", "metrics"], project)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "q3 review"], project)
    _run(["git", "tag", "-f", "review-q3"], project)
    prev, where = report.previous_metrics("review-q3", project)
    assert where == "git revision review-q3" and prev["tco"]["monthly_usd"] == t["monthly_usd"]


def test_validation_stage_compares_production_with_the_benchmark(project):
    import csv

    v = json.loads((project / "metrics" / "validation.json").read_text())
    assert set(v) >= {"recharacterize", "reasons", "metrics"}
    for name in ("ttft_p99_ms", "itl_p99_ms", "gpu_utilization_pct", "kv_cache_usage_pct", "prefix_cache_hit_rate"):
        assert set(v["metrics"][name]) >= {"production", "benchmark", "target", "status"}, name
    # production TTFT p99 by hand from the sample log (linear interpolation between order statistics)
    with (project / "data" / "raw" / "production" / "requests.csv").open() as fh:
        ttft = sorted(float(r["ttft_ms"]) for r in csv.DictReader(fh))
    k = 0.99 * (len(ttft) - 1)
    p99 = ttft[int(k)] + (k - int(k)) * (ttft[int(k) + 1] - ttft[int(k)])
    assert v["metrics"]["ttft_p99_ms"]["production"] == pytest.approx(p99, abs=1e-3)
    # the sample window: 7 servers in the scrapes, TTFT tail 1.5x the benchmark's, GPUs ~45% busy against 80%
    assert v["window"]["replicas"] == 7 and v["window"]["replicas_source"] == "distinct servers in the scrapes"
    assert v["recharacterize"] is True and len(v["reasons"]) == 2
    assert v["metrics"]["ttft_p99_ms"]["production"] > 1.3 * v["metrics"]["ttft_p99_ms"]["benchmark"]
    html = (project / "reports" / "13_validation.html").read_text()
    assert "<title>Step 13" in html and "SYNTHETIC DATA" in html and "Re-characterize: yes" in html
    assert (
        "run_stage" not in html
        and "Production does not behave like the benchmark" in (project / "reports" / "finance.html").read_text()
    )


def test_sizing_validate_checks_a_scrapes_only_window_and_writes_nothing(project, tmp_path):
    shutil.copytree(project / "data" / "raw" / "production" / "scrapes", tmp_path / "window" / "scrapes")
    before = (project / "data" / "interim" / "production.parquet").read_bytes()
    proc = _run([sys.executable, "-m", "pipeline", "validate", str(tmp_path / "window"), "--json"], project)
    v = json.loads(proc.stdout)
    m = v["metrics"]
    # no request log: TTFT and ITL come from the vLLM histograms, the rate from request_success_total
    assert "histograms over the scrape window" in m["ttft_p99_ms"]["source"]
    assert v["window"]["replicas"] == 7 and v["window"]["requests"] == 7597
    assert v["recharacterize"] is True and any("wide bucket" in w for w in v["warnings"])
    assert (project / "data" / "interim" / "production.parquet").read_bytes() == before
    text = _run([sys.executable, "-m", "pipeline", "validate", "--tier", "large"], project).stdout
    assert text.startswith("re-characterize: YES") and "fleet_utilization_pct" in text


def _assert_fits_a_terminal(text: str, changed: int) -> None:
    """`dvc metrics diff` as printed: a header and one row per changed metric, no line over 200 characters."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 200, max(lines, key=len)
    assert lines[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change"] or lines[0].split()[:2] == [
        "Path",
        "Metric",
    ], lines[0]
    assert len(lines) == 1 + changed, text
    assert all(line.startswith("metrics/summary.json") for line in lines[1:]), text


def _assert_plots_diff_has_both_revisions(project: Path, tag: str, h100_list_price: float) -> None:
    """`dvc plots diff <tag> --json`: every plot of dvc.yaml, each with the tag's and the workspace's data."""
    out = json.loads(_run([str(BIN / "dvc"), "plots", "diff", tag, "--json"], project).stdout)
    assert not out.get("errors"), out.get("errors")
    data = out["data"]
    ids = set(data)
    assert {
        "metrics/plots/rps_over_time.csv",
        "length_cdf",
        "metrics/plots/cost_per_candidate.csv",
        "metrics/plots/ttft_vs_load/sample_vllm_h100x4_long_closed_loop.csv",
        "metrics/plots/itl_vs_load/sample_vllm_l40s_8b_small_closed_loop.csv",
    } <= ids, ids
    assert len([i for i in ids if "_vs_load/" in i]) == 8  # 4 curves x (TTFT, ITL)
    for plot_id, plots in data.items():
        assert {*plots[0]["revisions"]} == {tag, "workspace"}, plot_id
        revs = {row["rev"] for row in plots[0]["content"]["data"]["values"]}
        assert revs == {tag, "workspace"}, plot_id
    # the cost plot carries both quarters' numbers: the H100 fp8 candidate priced at the list price, then at 2.5
    rows = data["metrics/plots/cost_per_candidate.csv"][0]["content"]["data"]["values"]
    h100 = {r["rev"]: r for r in rows if r["candidate"] == "all/H100-SXM/w-fp8/kv-fp8"}
    gpus = int(h100[tag]["gpus"])
    assert float(h100[tag]["monthly_usd"]) == pytest.approx(gpus * h100_list_price * 730, abs=0.01)
    assert float(h100["workspace"]["monthly_usd"]) == pytest.approx(gpus * 2.5 * 730, abs=0.01)
    # the SLO line of a latency plot: 2000 ms in both revisions
    ttft = data["metrics/plots/ttft_vs_load/sample_vllm_h100x4_long_closed_loop.csv"][0]["content"]["data"]["values"]
    assert {float(r["slo_ms"]) for r in ttft} == {2000.0}


def test_quarterly_review_and_what_if_flows_from_the_readme(project):
    """README 'Quarterly review' and 'What-if', for real: tag, dvc exp run -S, exp show, params/metrics diff, a branch."""
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    dvc = str(BIN / "dvc")
    _run([*git, "add", "-A"], project)
    _run([*git, "commit", "-qm", "2026q3 review", "--allow-empty"], project)
    _run(["git", "tag", "-f", "review-2026q3"], project)
    branch = _run(["git", "rev-parse", "--abbrev-ref", "HEAD"], project).stdout.strip()
    before = json.loads((project / "metrics" / "tco.json").read_text())
    saved = save_outputs(project)
    try:
        # a key params.yaml leaves out (at its default): `-S key=value` stops (Hydra finds nothing to override, and
        # no stage runs), `-S '++key=value'` adds it (README What-if)
        proc = _run([dvc, "exp", "run", "-n", "trap", "-S", "tco.utilization_trap_below=0.5"], project, check=False)
        assert proc.returncode != 0 and "Could not override 'tco.utilization_trap_below'" in proc.stderr, proc.stderr
        assert "Running stage" not in proc.stdout, proc.stdout
        assert "utilization_trap_below" not in yaml.safe_load((project / "params.yaml").read_text())["tco"]
        # an experiment on a set key and that added one, both in the tco section: only the stages that read it rerun
        trap = "++tco.utilization_trap_below=0.5"
        proc = _run([dvc, "exp", "run", "-n", "plan70", "-S", "tco.planned_utilization=0.7", "-S", trap], project)
        ran = re.findall(r"Running stage '(\w+)'", proc.stdout)
        # step 12 (tco) runs in the report stage; params checks the file; bench_plan reads tco.json
        assert ran == ["params", "report", "bench_plan"], ran
        assert yaml.safe_load((project / "params.yaml").read_text())["tco"]["utilization_trap_below"] == 0.5
        shown = _run([dvc, "exp", "show", "--no-pager", "--csv"], project).stdout
        assert "plan70" in shown and "tco.planned_utilization" in shown
        # `dvc exp show --only-changed`: a table of a few dozen flat columns (issue 16), not thousands
        header = _run([dvc, "exp", "show", "--no-pager", "--csv", "--only-changed"], project).stdout.splitlines()[0]
        columns = header.split(",")
        assert "tco.planned_utilization" in columns and "usd_per_million_output_tokens_planned" in columns
        assert len(columns) <= 40, columns
        params = json.loads(_run([dvc, "params", "diff", "review-2026q3", "--json"], project).stdout)
        change = params["params.yaml"]["tco.planned_utilization"]
        assert (change["old"], change["new"]) == (0.8, 0.7)
        assert params["params.yaml"]["tco.utilization_trap_below"] == {"old": None, "new": 0.5}
        metrics = json.loads(_run([dvc, "metrics", "diff", "review-2026q3", "--json"], project).stdout)
        assert list(metrics) == ["metrics/summary.json"]  # the one metrics file; the documents are outputs
        planned = metrics["metrics/summary.json"]["usd_per_million_output_tokens_planned"]
        # planned $/1M scales with 1 / planned utilization: x 0.8 / 0.7
        assert planned["new"] == pytest.approx(planned["old"] * 0.8 / 0.7, rel=1e-3)
        assert "total_gpus" not in metrics["metrics/summary.json"]  # the fleet did not change
        _assert_fits_a_terminal(
            _run([dvc, "metrics", "diff", "review-2026q3"], project).stdout, len(metrics["metrics/summary.json"])
        )
        # a git branch per scenario: edit params.yaml, dvc repro, commit, diff against the review tag
        _run(["git", "checkout", "-q", "-f", branch], project)
        _run([*git, "checkout", "-q", "-b", "whatif-reserved"], project)
        text = (project / "params.yaml").read_text().replace("  prices: {}", "  prices: {H100-SXM: 2.5}")
        (project / "params.yaml").write_text(text)
        proc = _run([dvc, "repro"], project)
        # step 12 and the reports share the `report` stage: a price change reruns that stage alone (the params
        # check tracks the whole file; the benchmark plan reads tco.json's choice and ranking)
        ran = re.findall(r"Running stage '(\w+)'", proc.stdout)
        assert ran == ["params", "report", "bench_plan"], ran
        assert "Stage 'fleet' didn't change" in proc.stdout
        priced = json.loads((project / "metrics" / "tco.json").read_text())["per_tier"]["large"]
        assert priced["usd_per_gpu_hour"] == 2.5 and priced["price_source"] == "params tco.prices"
        _run([*git, "commit", "-qam", "what if: reserved H100"], project)
        metrics = json.loads(_run([dvc, "metrics", "diff", "review-2026q3", "--json"], project).stdout)
        summary = metrics["metrics/summary.json"]
        monthly = summary["monthly_usd"]
        large = json.loads((project / "metrics" / "fleet.json").read_text())["per_tier"]["large"]
        # only the H100 fleet's price moved: its GPUs x (list price - 2.5) x 730 h less a month
        h100 = before["per_tier"]["large"]["usd_per_gpu_hour"]
        drop = large["gpus"] * (h100 - 2.5) * 730
        assert monthly["old"] - monthly["new"] == pytest.approx(drop, abs=0.05)
        assert summary["tier_large_monthly_usd"]["old"] - summary["tier_large_monthly_usd"]["new"] == pytest.approx(
            drop, abs=0.05
        )
        assert "tier_small_monthly_usd" not in summary and "total_gpus" not in summary  # the L40S fleet kept its price
        _assert_fits_a_terminal(_run([dvc, "metrics", "diff", "review-2026q3"], project).stdout, len(summary))
        shown = _run([dvc, "metrics", "show"], project).stdout.splitlines()
        # one file, one row: a few dozen flat columns, every name a summary key (nothing nested, no lists)
        assert len(shown) == 2 and shown[1].startswith("metrics/summary.json")
        keys = json.loads((project / "metrics" / "summary.json").read_text())
        assert shown[0].split() == ["Path", *sorted(keys)] and len(keys) <= 45
        _assert_plots_diff_has_both_revisions(project, "review-2026q3", h100)
    finally:
        _run(["git", "checkout", "-q", "-f", branch], project)
        put_back(project, saved)  # the review's outputs, byte for byte, and dvc finds every stage up to date
    assert json.loads((project / "metrics" / "tco.json").read_text()) == before


def test_a_sweep_without_manifest_stops_the_curve_stage(project):
    m = project / "data" / "raw" / "benchmarks" / "sample_vllm_h100x4_chat" / "manifest.yaml"
    saved = m.read_text()
    m.unlink()
    try:
        before = (project / "metrics" / "operating_point.json").read_bytes()
        proc = _run([sys.executable, "-m", "pipeline.run", "curve"], project, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "sample_vllm_h100x4_chat: no manifest.yaml" in proc.stderr and "sizing never guesses" in proc.stderr
        assert (project / "metrics" / "operating_point.json").read_bytes() == before  # nothing half-written
    finally:
        m.write_text(saved)


# Last: it leaves the workload stage failed (its deps changed), so later tests would rerun it.
def test_bad_log_stops_the_stage_with_one_message(project, tmp_path):
    before = (project / "metrics" / "workload.json").read_bytes()
    bad = project / "data" / "raw" / "traffic" / "bad.csv"
    bad.write_text("arrival_s,input_tokens,output_tokens\n0,5,5\n1,-4,5\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    original = (project / "params.yaml").read_text()
    params["workload"]["source"] = "data/raw/traffic/bad.csv"
    try:
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        proc = _run([str(BIN / "dvc"), "repro"], project, check=False)
        assert proc.returncode != 0
        assert "column 'input_tokens': 1 of 2 rows are below 1" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert (project / "metrics" / "workload.json").read_bytes() == before  # the last good answer stays
    finally:
        (project / "params.yaml").write_text(original)
        bad.unlink()
