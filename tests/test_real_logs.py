"""Issue 15 on real public data (../shared/fixtures, read in place, skipped when absent): the figures finance
reads and the crashes a new user's own log hit with the default params.

- the Azure 2023 conversation trace covers 3,502 s, under an hour: no scaling schedule, and every report says why;
- the memory stage picks TP2 for the benchmarked H100 fp8/fp8 while the sweep is TP4: the measured deployment is
  still priced (it used to die with "no candidate meets the SLO");
- every price comes from one provider (AWS lists every compared GPU);
- the real SGLang sweep has medians only: step 13 compares production's p99 with the benchmark's p50, labelled,
  and the finance report is written (notebook 13 raised TypeError on `ttft_p99_ms`).

Expected figures are worked by hand from the raw files in the comments.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import cli, params, validation
from pipeline.benchmarks import read_sweep
from tests.conftest import AZURE_CONV, SHARED, azure_walked

BIN = Path(sys.executable).parent
SGLANG = SHARED / "benchmarks" / "sglang_bench_serving_llama3.3-70b_4xh200_tp4"
needs_fixtures = pytest.mark.skipif(
    not (AZURE_CONV.exists() and SGLANG.exists()), reason="../shared/fixtures is absent"
)
STAGES = ("workload", "routing", "memory", "calibrate", "curve", "fleet", "validation", "report")


def _online_levels() -> list[dict[str, Any]]:
    """The SGLang online run's random 1024/1024 levels straight from the JSON lines: request rate and median TTFT."""
    rows = [json.loads(x) for x in (SGLANG / "llama_3_3_70b_online_output.jsonl").read_text().splitlines() if x]
    rows = [r for r in rows if r["dataset_name"] == "random" and r["random_input_len"] == 1024]
    return [
        {"rps": r["completed"] / r["duration"], "ttft_p50": r["median_ttft_ms"], "itl_p50": r["median_itl_ms"]}
        for r in rows
    ]


@needs_fixtures
def test_a_medians_only_curve_is_compared_at_its_best_percentile_and_says_so():
    sweep = read_sweep([SGLANG])
    df = sweep.frame()
    levels = df[df["curve"].str.contains("random 1024/1024")].to_dict("records")
    assert all(r["ttft_p99_ms"] is None or math.isnan(r["ttft_p99_ms"]) for r in levels)  # medians only
    bench = validation.benchmark_at(levels, 5.0)
    # by hand: 5 req/s lies between the levels at 4.042 and 6.921 req/s (median TTFT 106.06 and 191.41 ms)
    raw = sorted(_online_levels(), key=lambda r: r["rps"])
    lo, hi = next((a, b) for a, b in itertools.pairwise(raw) if a["rps"] <= 5.0 <= b["rps"])
    expected = lo["ttft_p50"] + (5.0 - lo["rps"]) / (hi["rps"] - lo["rps"]) * (hi["ttft_p50"] - lo["ttft_p50"])
    assert bench["ttft_percentile"] == "p50" and bench["ttft_ms"] == pytest.approx(expected)
    assert bench["ttft_p99_ms"] is None and bench["itl_percentile"] == "p50"
    p = params.validate_section("validation", {})
    slo = params.validate_section("slo", {})
    prod = {"ttft_p99_ms": 300.0, "itl_p99_ms": 20.0, "rate_rps": 5.0, "ttft_source": "requests.csv (per request)"}
    verdict = validation.assess(prod, bench, p, slo, usable_rps=5.0, replicas=1, prefix_reuse=None)
    row = verdict["metrics"]["ttft_p99_ms"]
    assert row["benchmark"] == pytest.approx(expected, abs=1e-3) and row["benchmark_percentile"] == "p50"
    assert "benchmark p50 (no p99 in the curve)" in row["target"]
    # 300 ms > 1.3 x ~134 ms: a breach, and the reason names the percentile it stands on
    assert verdict["recharacterize"] and "the benchmark's p50" in verdict["reasons"][0]
    notes = validation.percentile_note(bench)
    assert any("no TTFT p99: production's p99 is compared with the benchmark's p50" in n for n in notes)
    # p95 but no p99: the p95 is the best available
    p95_only = [{**r, "ttft_p95_ms": r["ttft_p50_ms"] * 2} for r in levels]
    b95 = validation.benchmark_at(p95_only, 5.0)
    assert b95["ttft_percentile"] == "p95" and b95["ttft_ms"] == pytest.approx(2 * expected)


def _run_stage(stage: str, project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIZING_ROOT": str(project), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.run", stage], cwd=project, env=env, capture_output=True, text=True, check=False
    )


def _stages(project: Path, stages: tuple[str, ...] = STAGES) -> None:
    for stage in stages:
        proc = _run_stage(stage, project)
        assert proc.returncode == 0, f"{stage}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def _edit_params(project: Path, **changes: Any) -> None:
    path = project / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def azure_project(tmp_path_factory) -> Path:
    """The project on the Azure 2023 conversation trace as a new user sets it up: `sizing init --log` (no sample
    tiers, validation.tier all, no production window yet) and memory.concurrency 8, so that the memory stage picks
    TP2 for the H100 fp8/fp8 the (TP4) sample sweep measured. The session's one run of it (tests/conftest.py
    azure_walked), also read by tests/test_issue15_acceptance.py; this module's own copy."""
    if not AZURE_CONV.exists():
        pytest.skip("../shared/fixtures is absent")
    project, _ = azure_walked(tmp_path_factory, tmp_path_factory.mktemp("real") / "project")
    return project


def _metrics(project: Path, name: str) -> dict[str, Any]:
    return json.loads((project / "metrics" / f"{name}.json").read_text())


@pytest.mark.e2e
@needs_fixtures
def test_a_log_under_an_hour_has_no_schedule_and_finance_says_why(azure_project):
    w, f, t = (_metrics(azure_project, n) for n in ("workload", "fleet", "tco"))
    assert w["span_s"] == pytest.approx(3501.722, abs=0.01)  # 18:15:46.68 to 19:14:08.40 (PROVENANCE.md)
    pooled = f["pooled"]
    assert pooled["schedule"] is None and "3,502 s, under an hour" in pooled["schedule_note"]
    assert t["totals"]["monthly_usd_with_schedule"] is None and "under an hour" in t["totals"]["schedule_note"]
    for report in ("11_fleet", "finance"):
        html = (azure_project / "reports" / f"{report}.html").read_text()
        assert "No scaling schedule" in html and "under an hour" in html, report
        assert "instance-hours a day" not in html, report


@pytest.mark.e2e
@needs_fixtures
def test_the_measured_deployment_is_priced_when_the_memory_stage_picks_another_tp(azure_project):
    mem, op, f, t = (_metrics(azure_project, n) for n in ("memory", "operating_point", "fleet", "tco"))
    bench = "all/H100-SXM/w-fp8/kv-fp8"
    assert mem["candidates"][bench]["tp"] == 2 and op["manifest"]["tp"] == 4  # the mismatch that crashed step 12
    rows = {r["candidate"]: r for r in t["per_candidate"]}
    # issue 14: with engine-model candidates the sweep's TP4 is `<id>/tp4` and the memory stage's TP2 is `<id>`
    tp4 = f"{bench}/tp4" if f"{bench}/tp4" in rows else bench
    tp2 = bench if tp4 != bench else f"{bench}/tp2"
    measured = rows[tp4]
    assert measured["basis"] in ("measured", "calibrated") and measured["tp"] == 4 and measured["eligible"]
    assert t["chosen"] == t["plan"] == "pooled" and t["chosen_candidates"] == {"all": tp4}
    # by hand from metrics/workload.json and operating_point.json: the fleet rules of step 11, TP4, AWS's $6.88
    fl = f["pooled"]
    base = math.ceil(round(w_sizing(azure_project) / op["usable_rps"], 9))
    with_safety = math.ceil(round(base * 1.2, 9))
    total = math.ceil(round(with_safety * (1 + fl["headroom"]), 9)) + 1
    assert measured["gpus"] == total * 4 == fl["gpus"]
    assert measured["monthly_usd"] == pytest.approx(total * 4 * 6.88 * 730, abs=0.01)
    assert rows[tp2]["tp"] == 2 and rows[tp2]["basis"] != "measured"  # the memory stage's own TP stays a candidate


def w_sizing(project: Path) -> float:
    return float(_metrics(project, "workload")["rps"]["sizing_rate"])


@pytest.mark.e2e
@needs_fixtures
def test_prices_are_compared_on_one_provider(azure_project):
    t = _metrics(azure_project, "tco")
    basis = t["price_basis"]
    assert basis["provider"] == "AWS" and basis["like_for_like"] is True
    priced = [r for r in t["per_candidate"] if r.get("price_source")]
    assert priced and all(r["price_source"].startswith("AWS ") for r in priced)
    html = (azure_project / "reports" / "scenarios.html").read_text()
    assert "price basis" in html and "AWS (on-demand)" in html


@pytest.mark.e2e
@needs_fixtures
def test_sizing_fleet_gives_the_pipelines_gpu_count(azure_project, capsys):
    # issue 15: on this trace `sizing fleet` said 24 GPUs (headroom 0, no spares) where the pipeline said 36. What
    # this checks is that the CLI and the pipeline agree on the same inputs, so it compares with the pipeline's own
    # fleet.json (the count itself moves with the curve stage: issue 14 sizes this trace on the engine-model curve)
    f, w = _metrics(azure_project, "fleet")["pooled"], _metrics(azure_project, "workload")
    burst = w["rps"][params.section("fleet", params.load(azure_project / "params.yaml"))["burst_rate"]]
    argv = ["fleet", "--peak-rps", str(f["peak_rps"]), "--usable-rps", str(f["usable_rps"]), "--tp", str(f["tp"])]
    argv += ["--burst-rps", str(burst), "--params", str(azure_project / "params.yaml"), "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["total_instances"], out["gpus"]) == (f["total_instances"], f["gpus"])
    assert out["gpus"] == out["total_instances"] * f["tp"] and out["total_instances"] >= 2  # one spare at least


@pytest.mark.e2e
@needs_fixtures
def test_a_medians_only_sweep_runs_to_the_finance_report(azure_project, tmp_path):
    # the real SGLang sweep (H200 TP4, BF16, medians only), linked beside a manifest, as the only curve
    sweep = tmp_path / "sweeps" / "sglang_h200_tp4"
    sweep.mkdir(parents=True)
    for name in ("llama_3_3_70b_online_output.jsonl", "llama_3_3_70b_offline_output.jsonl"):
        (sweep / name).symlink_to(SGLANG / name)
    (sweep / "manifest.yaml").write_text(
        "model: Llama-3.1-70B\ngpu: H200\ngpu_count: 4\ntp: 4\npp: 1\nweight_dtype: bf16\nkv_dtype: bf16\n"
        "engine: sglang\nload_mode: open\nphase: baseline\nsource: datacrunch-research/h200-benchmarks sglang/\n"
    )
    # the sample's production window (init set none) so that step 13 compares production with this curve
    _edit_params(azure_project, curve__source=str(sweep.parent), validation__source="data/raw/production")
    finance = azure_project / "reports" / "finance.html"
    finance.unlink()
    _stages(azure_project, ("calibrate", "curve", "fleet", "validation", "report"))
    op, v = _metrics(azure_project, "operating_point"), _metrics(azure_project, "validation")
    assert op["percentile_used"] == "p50" and op["manifest"]["gpu"] == "H200"
    assert v["benchmark_at_rate"]["ttft_percentile"] == "p50"
    assert v["metrics"]["ttft_p99_ms"]["benchmark_percentile"] == "p50"
    assert any("no TTFT p99" in w for w in v["warnings"])
    html = (azure_project / "reports" / "13_validation.html").read_text()
    assert "TTFT p50" in html and "Traceback" not in html
    assert finance.exists() and "USD" in finance.read_text()
