"""Step 10 as a whole: curve selection, manifests, the shipped synthetic sweep, and `sizing curve`."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from forkrun import run_module

from pipeline import curve as cv
from pipeline import final_curve, params
from pipeline.benchmarks import read_source, read_sweep
from pipeline.errors import InputError
from tests.conftest import OPERATING_POINT_KEYS, ROOT, SHARED

SAMPLE = ROOT / "data" / "raw" / "benchmarks"
SECTIONS = {
    name: params.validate_section(name, params.load(ROOT / "params.yaml").get(name)) for name in final_curve.SECTIONS
}
SETTINGS = cv.Settings.from_params(SECTIONS["curve"], SECTIONS["slo"])
WORKLOAD = final_curve.Workload(
    input_p95=6018,
    output_p95=1001,
    input_p50=1167,
    input_mean=1934,
    output_mean=336,
    sizing_rps=5.535,
    prefix_reuse=0.35,
)


def p99_crossing(files: list[Path], key: str, limit: float) -> float:
    """C_max recomputed straight from the vLLM JSON files (an independent path: no reader, no pandas)."""
    pts = sorted((json.loads(f.read_text())["max_concurrency"], json.loads(f.read_text())[key]) for f in files)
    for (l0, v0), (l1, v1) in itertools.pairwise(pts):
        if v0 <= limit < v1:
            return l0 + (limit - v0) / (v1 - v0) * (l1 - l0)
    raise AssertionError("no crossing")


def test_the_matching_curve_sizes_the_fleet_and_c_max_matches_the_files():
    sweeps = read_source(SAMPLE, ROOT)
    res = final_curve.analyze(sweeps, WORKLOAD, SETTINGS, SECTIONS, ROOT)
    assert res.chosen.curve.startswith("sample_vllm_h100x4_long")
    assert "matches the workload's p95 lengths" in res.selection
    files = sorted((SAMPLE / "sample_vllm_h100x4_long").glob("*.json"))
    itl = p99_crossing(files, "p99_tpot_ms", SETTINGS.itl_p99_ms)
    assert res.chosen.binding == "itl" and res.chosen.c_max == pytest.approx(itl)
    m = res.metrics()
    assert m["manifest"]["gpu"] == "H100-SXM" and m["curve_source"]["synthetic"] is True
    assert {r["name"] for r in m["recommendations"]} == {
        "prefix_caching",
        "chunked_prefill",
        "speculative_decoding",
        "pd_disaggregation",
        "kv_offload",
    }
    assert m["predicted_vs_measured"]["available"] is True


def test_no_length_match_takes_the_most_conservative_curve():
    sweeps = read_source(SAMPLE, ROOT)
    w = final_curve.Workload(input_p95=3000, output_p95=400)
    res = final_curve.analyze(sweeps, w, SETTINGS, SECTIONS, ROOT)
    # the pooled fleet is chosen among the sweeps whose manifest names no tier
    untagged = [p for name, p in res.points.items() if "large" not in name and "small" not in name]
    assert len(untagged) == 2
    assert res.chosen.usable_rps == min(p.usable_rps for p in untagged)
    assert "most conservative" in res.selection


def _demand(tier: str, model: str, inp: float, out: float) -> Any:
    from pipeline import routing

    lengths = {"p50": inp / 2, "p95": inp, "mean": inp / 2}
    return routing.Demand(
        tier,
        model,
        "routed",
        0.5,
        100,
        {"mean": 1.0, "sizing_rate": 2.0},
        {},
        {},
        lengths,
        {**lengths, "p95": out},
        "test",
    )


def test_each_tier_gets_its_own_curve():
    sweeps = read_source(SAMPLE, ROOT)
    demands = {
        "large": _demand("large", "Llama-3.1-70B", 7766, 1583),
        "small": _demand("small", "Llama-3.1-8B", 2611, 571),
        "chatty": _demand("chatty", "Llama-3.1-70B", 1250, 230),
        "qwen": _demand("qwen", "Qwen2.5-7B", 1000, 200),
    }
    res = final_curve.analyze(sweeps, WORKLOAD, SETTINGS, SECTIONS, ROOT, tier_demands=demands)
    pt = res.metrics()["per_tier"]
    # tagged sweeps serve their own tier, matched on the tier's lengths
    assert pt["large"]["sweep"] == "sample_vllm_h100x4_large" and pt["large"]["basis"].startswith("sweeps whose")
    assert pt["small"]["sweep"] == "sample_vllm_l40s_8b_small" and pt["small"]["manifest"]["gpu"] == "L40S"
    # C_max of the 8B tier straight from its vLLM files (ITL binds at the 50 ms SLO)
    files = sorted((SAMPLE / "sample_vllm_l40s_8b_small").glob("*.json"))
    assert pt["small"]["c_max"] == pytest.approx(p99_crossing(files, "p99_tpot_ms", 50.0), abs=1e-3)
    # an untagged tier falls back to the untagged sweeps of its model, picked by its own lengths
    assert (
        pt["chatty"]["sweep"] == "sample_vllm_h100x4_chat" and "untagged sweeps of its model" in pt["chatty"]["basis"]
    )
    # no sweep of the tier's model: a clear reason, not a borrowed curve
    assert "no benchmark sweep for model Qwen2.5-7B" in pt["qwen"]["error"] and "tier: qwen" in pt["qwen"]["error"]
    # the pooled point is unchanged by the tiers
    assert res.chosen.curve.startswith("sample_vllm_h100x4_long")


def test_each_tier_gets_its_own_steps_8_and_9():
    sweeps = read_source(SAMPLE, ROOT)
    demands = {
        "large": _demand("large", "Llama-3.1-70B", 7766, 1583),
        "small": _demand("small", "Llama-3.1-8B", 2611, 571),
    }
    workload = dataclasses.replace(WORKLOAD, tier_prefix_reuse={"small": 0.1})  # the large tier: not in the profile
    pt = final_curve.analyze(sweeps, workload, SETTINGS, SECTIONS, ROOT, tier_demands=demands).metrics()["per_tier"]
    recs = {t: {r["name"]: r for r in pt[t]["recommendations"]} for t in pt}
    # prefix caching: the small tier's own reuse (10% < the 20% floor); the large tier falls back to the whole log's 35%
    assert (
        recs["small"]["prefix_caching"]["verdict"] == "not recommended"
        and recs["small"]["prefix_caching"]["value"] == 0.1
    )
    large = recs["large"]["prefix_caching"]
    assert "tiers.small.prefix_reuse" in recs["small"]["prefix_caching"]["evidence"]  # where each reuse came from
    assert "the whole log" in large["evidence"]
    assert large["verdict"] == "recommended" and large["value"] == 0.35
    assert large["replicas"] == math.ceil(2.0 / pt["large"]["usable_rps"])  # the tier's 2 req/s on its own curve
    # P/D: KV bytes of the tier's own model and KV dtype. Llama-3.1-8B, FP8 KV: 32 layers x 8 KV heads x 128 x (K, V)
    # x 1 byte = 65,536 B/token; mean prompt 1305.5 tokens over the 50 GB/s link
    assert recs["small"]["pd_disaggregation"]["kv_transfer_ms"] == pytest.approx(1305.5 * 65_536 / 50e9 * 1e3, rel=1e-9)
    assert {r["name"] for r in pt["large"]["recommendations"]} == {
        "prefix_caching",
        "chunked_prefill",
        "speculative_decoding",
        "pd_disaggregation",
        "kv_offload",
    }


def test_every_sweep_tagged_leaves_no_pooled_curve(tmp_path):
    shutil.copytree(SAMPLE / "sample_vllm_h100x4_large", tmp_path / "large")
    with pytest.raises(InputError, match="needs at least one sweep without `tier:`"):
        final_curve.analyze(read_source(tmp_path, tmp_path), WORKLOAD, SETTINGS, SECTIONS, ROOT, tier_demands={})


def test_a_final_phase_sweep_outranks_the_baseline(tmp_path):
    for name in ("sample_vllm_h100x4_long", "sample_vllm_h100x4_chat"):
        shutil.copytree(SAMPLE / name, tmp_path / name)
    m = tmp_path / "sample_vllm_h100x4_chat" / "manifest.yaml"
    m.write_text(m.read_text().replace("phase: baseline", "phase: final"))
    res = final_curve.analyze(read_source(tmp_path, tmp_path), WORKLOAD, SETTINGS, SECTIONS, ROOT)
    assert res.chosen.curve.startswith("sample_vllm_h100x4_chat") and "phase: final" in res.selection


def test_a_missing_manifest_stops_sizing(tmp_path):
    shutil.copytree(SAMPLE / "sample_vllm_h100x4_long", tmp_path / "sweep")
    (tmp_path / "sweep" / "manifest.yaml").unlink()
    with pytest.raises(InputError, match=r"sweep: no manifest.yaml\. .*sizing never guesses"):
        final_curve.analyze(read_source(tmp_path, tmp_path), WORKLOAD, SETTINGS, SECTIONS, ROOT)


def test_manifest_load_mode_must_match_the_files(tmp_path):
    shutil.copytree(SAMPLE / "sample_vllm_h100x4_long", tmp_path / "sweep")
    m = tmp_path / "sweep" / "manifest.yaml"
    m.write_text(m.read_text().replace("load_mode: closed", "load_mode: open"))
    with pytest.raises(InputError, match="load_mode 'open' but the result files hold concurrency levels"):
        final_curve.analyze(read_source(tmp_path, tmp_path), WORKLOAD, SETTINGS, SECTIONS, ROOT)


def test_the_shipped_sample_sweep_is_regenerated_byte_for_byte(tmp_path):
    from pipeline import sample_sweep

    shutil.copytree(ROOT / "data" / "catalog", tmp_path / "data" / "catalog")
    written = sample_sweep.write(tmp_path)
    assert len(written) == 36  # 4 sweeps x (8 levels + manifest)
    for p in written:
        rel = p.relative_to(tmp_path)
        assert p.read_bytes() == (ROOT / rel).read_bytes(), rel


def test_the_sample_sweep_is_labelled_synthetic():
    for d in SAMPLE.iterdir():
        s = read_sweep([d])
        assert s.manifest["synthetic"] is True and "SYNTHETIC" in s.manifest["source"]


def _sizing(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module(["pipeline", "curve", *args], ROOT, timeout=120)  # a real child process (tests/forkrun.py)


def test_cli_curve_json_on_the_sample_sweep():
    d = SAMPLE / "sample_vllm_h100x4_long"
    proc = _sizing(str(d), "--ttft-p99-ms", "2000", "--itl-p99-ms", "50", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    files = sorted(d.glob("*.json"))
    assert out["c_max"] == pytest.approx(p99_crossing(files, "p99_tpot_ms", 50.0), abs=1e-4)
    for key in OPERATING_POINT_KEYS:
        assert key in out, key
    assert out["slo"] == {"ttft_p99_ms": 2000.0, "itl_p99_ms": 50.0}


@pytest.mark.skipif(not (SHARED / "benchmarks").exists(), reason="../shared/fixtures is absent")
def test_cli_curve_on_real_vllm_files_and_clear_errors(capsys):
    d = SHARED / "benchmarks" / "vllm_bench_serve_llama3.3-70b_8xa100-40gb_tp8"
    raw = {
        q: json.loads((d / f"serving_meta-llama-Llama-3.3-70B-Instruct_tp8_pp1_sharegpt_qps_{q}.json").read_text())
        for q in ("04", "16")
    }
    from pipeline import cli

    assert cli.main(["curve", str(d), "--ttft-p99-ms", "2000", "--itl-p99-ms", "30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    v4, v16 = raw["04"]["p99_tpot_ms"], raw["16"]["p99_tpot_ms"]
    assert out["c_max"] == pytest.approx(4 + (30 - v4) / (v16 - v4) * 12, abs=1e-4)
    assert out["load_kind"] == "request_rate" and out["manifest"] is None
    assert any("no manifest" in w for w in out["warnings"])
    proc = _sizing(str(d), "--ttft-p99-ms", "2000", "--itl-p99-ms", "50")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "C_max is at least the highest level tested (16 req/s); the sweep must go higher" in proc.stderr
    assert cli.main(["curve", str(SHARED / "benchmarks" / "aiperf_example_gpt-oss-20b"), "--ttft-p99-ms", "2000"]) == 1
    assert "a sweep with one level" in capsys.readouterr().err


def test_closed_and_open_loop_capacities_are_both_kept(tmp_path):
    shutil.copytree(SAMPLE / "sample_vllm_h100x4_long", tmp_path / "closed")
    (tmp_path / "open").mkdir()
    files = (SAMPLE / "sample_vllm_h100x4_long").glob("*.json")
    levels = sorted(((json.loads(f.read_text()), f.name) for f in files), key=lambda x: x[0]["max_concurrency"])
    for i, (obj, name) in enumerate(levels):
        obj["request_rate"], obj["max_concurrency"] = 0.25 * 2**i, None  # an open-loop sweep at 0.25..32 req/s
        obj["request_throughput"] = min(obj["request_rate"], 1.6)
        (tmp_path / "open" / name).write_text(json.dumps(obj))
    m = (SAMPLE / "sample_vllm_h100x4_long" / "manifest.yaml").read_text()
    (tmp_path / "open" / "manifest.yaml").write_text(m.replace("load_mode: closed", "load_mode: open"))
    res = final_curve.analyze(read_source(tmp_path, tmp_path), WORKLOAD, SETTINGS, SECTIONS, ROOT)
    assert set(res.capacities) == {"concurrency", "request_rate"}
    low = min(res.capacities, key=lambda k: res.capacities[k]["usable_rps"])
    assert res.chosen.load_kind == low and "more conservative" in res.sized_by
    closed = cv.Settings.from_params({**SECTIONS["curve"], "sizing_loop": "closed"}, SECTIONS["slo"])
    res = final_curve.analyze(read_source(tmp_path, tmp_path), WORKLOAD, closed, SECTIONS, ROOT)
    assert res.chosen.load_kind == "concurrency" and "curve.sizing_loop = closed" in res.sized_by


def test_a_saturation_only_run_beside_a_sweep_is_a_warning_not_an_error(tmp_path):
    from tests.test_benchmark_readers import guidellm_report

    (tmp_path / "benchmarks.json").write_text(json.dumps(guidellm_report("new")))
    from pipeline.stages import curve as curve_stage

    res = curve_stage.from_paths([tmp_path], 300.0, None, {}, ROOT)
    # concurrency 2 -> TTFT p99 120 ms, 8 -> 480 ms: C_max = 2 + (300 - 120) / (480 - 120) x 6 = 5
    assert res.chosen.load_kind == "concurrency" and res.chosen.c_max == pytest.approx(5.0)
    assert any("no usable open-loop curve" in w for w in res.warnings)
