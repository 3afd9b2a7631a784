"""Issue 14, "The curve of every candidate": lengths, basis per case, C_max and its 80% band (pipeline/engine_curves.py).

Real components: the shipped sample sweeps through final_curve.analyze, the numba simulator, the sample traffic log
(and the Azure trace of ../shared/fixtures when present). The calibration and memory documents are written here by
hand so that each case is known in advance."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import curve as cv
from pipeline import engine_curves as ec
from pipeline import final_curve, params, routing
from pipeline.benchmarks import read_source
from pipeline.errors import InputError
from pipeline.layout import Layout
from pipeline.stages import curve as stage
from tests.conftest import ROOT

SAMPLE_SWEEPS = ROOT / "data" / "raw" / "benchmarks"
SAMPLE_LOG = ROOT / "data" / "raw" / "traffic" / "sample_traffic.parquet"
TENANT_TIER = {"support-chat": "small", "code-assist": "large", "doc-qa": "large"}  # params.yaml workload.tiers.map
SECTIONS = {
    name: params.validate_section(name, params.load(ROOT / "params.yaml").get(name)) for name in final_curve.SECTIONS
}
SETTINGS = cv.Settings.from_params(SECTIONS["curve"], SECTIONS["slo"])  # TTFT 2000 ms, ITL 50 ms, tolerance 25%
H100_KEY = "Llama-3.1-70B/H100-SXM/tp4-pp1/w-fp8/kv-fp8/c-fp8/vllm"


def _res(n: int, p10: float, p90: float) -> dict[str, Any]:
    return {"n": n, "median_abs_rel": abs(p10), "p10_rel": p10, "p50_rel": 0.0, "p90_rel": p90}


RESIDUALS = {
    "throughput": _res(8, -0.2, 0.25),
    "itl_mean": _res(8, -0.1, 0.1),
    "ttft": _res(8, -0.25, 0.1),
}


def calibration_doc(pooled: bool = True, deployments: bool = True) -> dict[str, Any]:
    """metrics/calibration.json by hand: the sample's H100 TP4 fp8 deployment calibrated, and a pooled fit."""
    doc: dict[str, Any] = {"settings": {}, "deployments": [], "pooled": None}
    if deployments:
        doc["deployments"].append(
            {
                "key": H100_KEY,
                "model": "Llama-3.1-70B",
                "gpu": "H100-SXM",
                "tp": 4,
                "pp": 1,
                "weight_dtype": "fp8",
                "kv_dtype": "fp8",
                "engine": "vllm",
                "basis": "calibrated",
                "coefficients": {
                    "fixed_s": 0.002,
                    "flops": 2.0,
                    "weight_bytes": 1.3,
                    "kv_bytes": 1.3,
                    "seqs": 0.0,
                    "allreduce": 1.0,
                },
                "request_overhead_s": 0.02,
                "engine_limits": {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "kv_blocks": 83642},
                "residuals": {"leave_one_level_out": RESIDUALS},
            }
        )
    if pooled:
        doc["pooled"] = {
            "coefficients": {
                "fixed_s": 0.003,
                "flops": 2.5,
                "weight_bytes": 1.4,
                "kv_bytes": 1.4,
                "seqs": 0.0,
                "allreduce": 1.0,
            },
            "request_overhead_s": 0.02,
            "gpu_arch_scale": {"hopper": 1.0, "ada": 1.1},
            "residuals": {"leave_one_deployment_out": RESIDUALS},
        }
    return doc


def mem_entry(tier: str, model: str, gpu: str, w: str, kv: str, tp: int, headroom_gpus: int = 1) -> dict[str, Any]:
    return {
        "tier": tier,
        "model": model,
        "gpu": gpu,
        "weights": w,
        "kv": kv,
        "tp": tp,
        "pp": 1,
        "fits": True,
        "total_gb": 300.0,
        "gpus_with_headroom": headroom_gpus,
        "engine": {"kv_cache_blocks": 80000},
    }


def memory_doc(h100_tp: int = 4, headroom_gpus: int = 4) -> dict[str, Any]:
    ids = {
        "all/H100-SXM/w-fp8/kv-fp8": mem_entry(
            "all", "Llama-3.1-70B", "H100-SXM", "fp8", "fp8", h100_tp, headroom_gpus
        ),
        "all/H200/w-fp8/kv-fp8": mem_entry("all", "Llama-3.1-70B", "H200", "fp8", "fp8", 2),
        "tiny/L40S/w-fp8/kv-fp8": mem_entry("tiny", "Llama-3.1-8B", "L40S", "fp8", "fp8", 1),
    }
    return {"candidates": ids, "rejected": {}}


def demand(tier: str, model: str, inp: float, out: float, role: str = "routed") -> routing.Demand:
    return routing.Demand(
        tier,
        model,
        role,
        0.5,
        100,
        {"mean": 1.0, "sizing_rate": 2.0},
        {},
        {},
        {"p50": inp / 3, "p95": inp, "mean": inp / 2},
        {"p50": out / 3, "p95": out, "mean": out / 2},
        "test",
    )


def log_rows() -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    df = pd.read_parquet(SAMPLE_LOG, columns=["input_tokens", "output_tokens", "tenant"])
    df = df[df["output_tokens"] > 0]
    tier = df["tenant"].map(TENANT_TIER)
    rows = {"all": (df["input_tokens"].to_numpy(), df["output_tokens"].to_numpy(), "sample log: every row")}
    for t in ("large", "small"):
        sub = df[tier == t]
        rows[t] = (sub["input_tokens"].to_numpy(), sub["output_tokens"].to_numpy(), f"sample log: tier {t}")
    rows["tiny"] = rows["small"]
    return rows


def run_case(
    in_p95: float,
    out_p95: float,
    memory: dict[str, Any] | None = None,
    cal: dict[str, Any] | None = None,
    tiers: dict[str, routing.Demand] | None = None,
    rows: dict[str, tuple[np.ndarray, np.ndarray, str]] | None = None,
    settings: cv.Settings = SETTINGS,
) -> final_curve.CurveResult:
    """The sample sweeps analysed for a workload of these p95 lengths, then every candidate evaluated."""
    w = final_curve.Workload(in_p95, out_p95, in_p95 / 3, in_p95 / 2, out_p95 / 2, 5.0, None)
    tiers = tiers if tiers is not None else {}
    res = final_curve.analyze(
        read_source(SAMPLE_SWEEPS, ROOT), w, settings, SECTIONS, ROOT, validate=False, tier_demands=tiers
    )
    demands = {"pooled": demand("all", "Llama-3.1-70B", in_p95, out_p95, "pooled"), "tiers": tiers}
    stage.evaluate_candidates(
        res, memory or memory_doc(), cal if cal is not None else calibration_doc(), rows or log_rows(), demands, ROOT
    )
    return res


# ------------------------------------------------------------------------------------------- lengths


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a / b - 1) <= rel


def test_sampled_lengths_match_each_tiers_p50_and_p95():
    rows = log_rows()
    for tier in ("all", "large", "small"):
        ins, outs, _ = rows[tier]
        sample = ec.sample_lengths(ins, outs, source=tier).stats()
        assert sample["requests"] == ec.LENGTH_POOL
        for key, arr in (("input_tokens", ins), ("output_tokens", outs)):
            for q in (50, 95):
                want = float(np.percentile(arr, q))  # the tier's own rows, by numpy (not DuckDB, not the module)
                assert _close(sample[f"{key}_p{q}"], want, 0.025), (tier, key, q, sample[f"{key}_p{q}"], want)
    # the same seed gives the same sample; a different seed another one
    a = ec.sample_lengths(*rows["small"][:2])
    b = ec.sample_lengths(*rows["small"][:2])
    assert np.array_equal(a.input_tokens, b.input_tokens) and np.array_equal(a.output_tokens, b.output_tokens)
    assert not np.array_equal(a.input_tokens, ec.sample_lengths(*rows["small"][:2], seed=1).input_tokens)


def test_sampled_lengths_of_a_real_trace(shared_fixtures):
    trace = shared_fixtures / "traces" / "azure2023_conv.csv"
    if not trace.exists():
        pytest.skip("azure2023_conv.csv is absent")
    df = pd.read_csv(trace)
    ins, outs = df["ContextTokens"].to_numpy(), df["GeneratedTokens"].to_numpy()
    keep = (ins > 0) & (outs > 0)
    sample = ec.sample_lengths(ins, outs).stats()
    for key, arr in (("input_tokens", ins[keep]), ("output_tokens", outs[keep])):
        for q in (50, 95):
            assert _close(sample[f"{key}_p{q}"], float(np.percentile(arr, q)), 0.025), (key, q)


def test_a_log_with_fewer_rows_than_the_pool_is_taken_whole_and_bad_rows_dropped():
    s = ec.sample_lengths(np.array([10, 20, 0, 40]), np.array([1, 2, 3, 0]))
    assert sorted(s.input_tokens.tolist()) == [10, 20] and s.rows == 2
    with pytest.raises(InputError, match="no request with input and output tokens >= 1"):
        ec.sample_lengths(np.array([0]), np.array([5]), source="tier x")


# ------------------------------------------------------------------------------------------- C_max and the band

HAND_LEVELS = [
    {"concurrency": c, "rps": float(c), "ttft_p99_ms": t, "itl_p99_ms": 10.0, "ttft_p50_ms": t / 2, "itl_p50_ms": 9.0}
    for c, t in ((1, 100.0), (2, 500.0), (4, 1500.0), (8, 2500.0))
]


def test_c_max_on_a_predicted_curve_is_the_hand_interpolation():
    # TTFT p99 crosses 2000 ms between c=4 (1500) and c=8 (2500): 4 + (2000 - 1500) / 1000 x 4 = 6; RPS = c there
    c_max, rps, binding = ec.predicted_point(HAND_LEVELS, SETTINGS)
    assert (c_max, rps, binding) == (6.0, 6.0, "ttft")
    # the same levels through the measured curve's own operating point give the same figures
    lv = [{**x, "e2e_p50_ms": 1000.0, "e2e_mean_ms": 1000.0, "output_tokens_per_s": 100.0} for x in HAND_LEVELS]
    p = cv.operating_point(ec.levels_frame("hand", lv, None), SETTINGS)
    assert (p.c_max, p.usable_rps, p.binding) == (6.0, 6.0, "ttft")
    # an SLO missed at the lowest level: no C_max, and why
    why = ec.predicted_point([{**x, "ttft_p99_ms": 3000.0} for x in HAND_LEVELS], SETTINGS)
    assert isinstance(why, str) and "missed at the lowest load" in why


def test_the_80_percent_band_brackets_the_point_and_equals_the_hand_values():
    band, _ = ec.interval(HAND_LEVELS, SETTINGS, RESIDUALS, "hand residuals")
    assert band is not None
    # C_max lo: TTFT at SLO x (1 - 0.25) = 1500 ms -> crossing at c = 4 exactly; hi: 2200 ms -> 4 + 700/1000 x 4
    assert band["c_max_lo"] == pytest.approx(4.0) and band["c_max_hi"] == pytest.approx(6.8)
    # usable RPS lo = RPS(4) / (1 + 0.25) = 3.2; hi = RPS(6.8) / (1 - 0.2) = 8.5
    assert band["usable_rps_lo"] == pytest.approx(3.2) and band["usable_rps_hi"] == pytest.approx(8.5)
    assert band["c_max_lo"] <= 6.0 <= band["c_max_hi"] and band["usable_rps_lo"] <= 6.0 <= band["usable_rps_hi"]
    assert band["level"] == 0.8 and band["capped"] is False
    # a relaxed bound beyond the levels is capped at the highest one, and says so
    wide = {**RESIDUALS, "ttft": _res(8, -0.25, 5.0)}
    capped, _ = ec.interval(HAND_LEVELS, SETTINGS, wide, "wide")
    assert capped["c_max_hi"] == 8.0 and capped["capped"] is True and "capped" in capped["source"]
    # no residuals (roofline): null and why
    none, why = ec.interval(HAND_LEVELS, SETTINGS, None, "none: no calibration levels")
    assert none is None and why.startswith("none")


def test_length_match_ratios_and_thresholds_by_hand():
    lm = ec.length_match(6000, 1000, 7303, 90, 0.25, 2.0)
    assert lm["input_ratio"] == round(6000 / 7303, 4) and lm["output_ratio"] == round(1000 / 90, 4)
    assert lm["within_tolerance"] is False and lm["used_for_sizing"] is False
    lm = ec.length_match(6000, 1000, 4000, 700, 0.25, 2.0)  # 1.5x and 1.43x: outside 25%, within 2x
    assert lm["within_tolerance"] is False and lm["used_for_sizing"] is True
    assert ec.length_match(6000, 1000, 6018, 1001, 0.25, 2.0)["within_tolerance"] is True


# ------------------------------------------------------------------------------------------- basis per case


def test_a_sweep_within_tolerance_is_measured_and_every_other_candidate_is_predicted():
    res = run_case(6018, 1001)
    c = res.candidates
    bench = c["all/H100-SXM/w-fp8/kv-fp8"]
    assert bench["basis"] == "measured" and bench["interval"] is None
    assert bench["c_max"] == pytest.approx(res.chosen.c_max, abs=1e-4)
    assert bench["usable_rps"] == pytest.approx(res.chosen.usable_rps, abs=1e-4)
    assert bench["length_match"]["within_tolerance"] is True
    # H200 has no sweep: the pooled fit (hopper scale 1), simulated at the workload's own lengths
    h200 = c["all/H200/w-fp8/kv-fp8"]
    assert h200["basis"] == "transferred" and h200["deployment_key"] is None and h200["usable_rps"] > 0
    assert h200["lengths"]["requests"] == ec.LENGTH_POOL and len(h200["levels"]) >= 3
    # its C_max is the hand interpolation of its own levels at the binding SLO
    lv = h200["levels"]
    col = "ttft_p99_ms" if h200["binding_slo"] == "ttft" else "itl_p99_ms"
    slo = SETTINGS.ttft_p99_ms if h200["binding_slo"] == "ttft" else SETTINGS.itl_p99_ms
    i = next(k for k, x in enumerate(lv) if x[col] > slo)
    a, b = lv[i - 1], lv[i]
    hand = a["concurrency"] + (slo - a[col]) / (b[col] - a[col]) * (b["concurrency"] - a["concurrency"])
    assert h200["c_max_model"] == pytest.approx(hand, rel=1e-3)  # the raw engine-model figure; c_max is anchored
    iv = h200["interval_model"]
    assert iv["c_max_lo"] <= h200["c_max_model"] <= iv["c_max_hi"] and "leave-one-deployment-out" in iv["source"]
    a = h200["anchor"]
    assert h200["c_max"] == pytest.approx(hand * a["c_max_factor"], rel=1e-3)
    assert h200["interval"]["c_max_lo"] <= h200["c_max"] <= h200["interval"]["c_max_hi"]
    m = res.metrics()
    assert m["sizing_basis"] == "measured" and m["length_mismatch"] == [] and m["interval"] is None
    assert all(v["basis"] == "measured" for v in m["curves"].values())
    assert set(m["candidates"]) == set(c) and not any(k.startswith("_") for e in c.values() for k in e)
    table = res.candidate_levels
    assert set(table["id"]) == set(c) and list(table.columns[:3]) == ["id", "tier", "basis"]


def test_a_curve_beyond_twice_the_workloads_lengths_does_not_size_the_fleet():
    # the real log: p95 7303 in / 90 out against the 6000 / 1000 sweep (11x on output)
    res = run_case(7303, 90)
    m = res.metrics()
    bench = res.candidates["all/H100-SXM/w-fp8/kv-fp8"]
    assert bench["basis"] == "calibrated" and bench["deployment_key"] == H100_KEY
    assert bench["length_match"]["used_for_sizing"] is False
    assert "LOLO" not in bench["interval"]["source"] and "leave-one-level-out" in bench["interval"]["source"]
    assert m["sizing_basis"] == "calibrated"
    assert m["usable_rps"] == bench["usable_rps"] and m["c_max"] == bench["c_max"]
    assert m["measured_usable_rps"] == pytest.approx(res.chosen.usable_rps, abs=1e-4)
    assert m["interval"] == bench["interval"]
    (mis,) = m["length_mismatch"]
    assert mis["tier"] == "all" and mis["used_for_sizing"] is False and "does NOT size the fleet" in mis["message"]
    assert mis["output_ratio"] == pytest.approx(1000 / 90, abs=1e-3)
    assert any("LENGTH MISMATCH" in w for w in m["warnings"])


def test_a_curve_outside_the_tolerance_but_within_twice_still_sizes_and_is_flagged():
    res = run_case(4000, 700)
    m = res.metrics()
    (mis,) = m["length_mismatch"]
    assert mis["used_for_sizing"] is True and mis["within_tolerance"] is False and "still sizes" in mis["message"]
    a = m["anchor"]  # the jump, in the message: measured at its lengths vs the engine model at the workload's
    assert (
        f"gives {a['measured_usable_rps']:.3f} req/s per instance, the engine model of the same deployment at the "
        f"workload's lengths {a['model_usable_rps']:.3f}: every calibrated model-based candidate is scaled by "
        f"{a['factor']:.3f}, transferred ones by {a['by_basis']['transferred']['factor']:.3f}"
    ) in mis["message"]
    assert m["sizing_basis"] == "measured" and "measured_usable_rps" not in m
    bench = res.candidates["all/H100-SXM/w-fp8/kv-fp8"]
    assert bench["basis"] == "measured" and bench["usable_rps"] == m["usable_rps"]


def test_a_tp_only_mismatch_keeps_the_benchmarked_tp_and_predicts_the_memory_stages_tp():
    res = run_case(6018, 1001, memory=memory_doc(h100_tp=2, headroom_gpus=2))
    c = res.candidates
    tp2, tp4 = c["all/H100-SXM/w-fp8/kv-fp8"], c["all/H100-SXM/w-fp8/kv-fp8/tp4"]
    assert tp4["tp"] == 4 and tp4["basis"] == "measured" and tp4["memory_rejected"] is None
    assert tp4["c_max"] == pytest.approx(res.chosen.c_max, abs=1e-4)
    # no TP2 deployment in the calibration: the pooled fit
    assert tp2["tp"] == 2 and tp2["basis"] == "transferred" and tp2["deployment_key"] is None
    assert tp2["usable_rps"] is not None


def test_a_benchmarked_tp_the_memory_stage_rejects_is_reported_with_the_reason():
    res = run_case(6018, 1001, memory=memory_doc(h100_tp=8, headroom_gpus=8))
    tp4 = res.candidates["all/H100-SXM/w-fp8/kv-fp8/tp4"]
    assert "needs 8 x H100-SXM" in tp4["memory_rejected"] and "TP4 x PP1 gives 4" in tp4["memory_rejected"]
    assert tp4["basis"] == "measured"  # still a candidate, on its measured curve


def test_a_tier_without_any_sweep_still_gets_transferred_curves_and_no_calibration_gives_roofline():
    tiers = {"tiny": demand("tiny", "Llama-3.1-8B", 2611, 571)}
    res = run_case(6018, 1001, tiers=tiers)
    assert "error" in res.per_tier["tiny"]  # the stop is the pricing stage's to decide
    tiny = res.candidates["tiny/L40S/w-fp8/kv-fp8"]
    assert tiny["basis"] == "transferred" and tiny["usable_rps"] > 0 and "ada scale" in tiny["basis_why"]
    res = run_case(6018, 1001, cal=calibration_doc(pooled=False, deployments=False))
    h200 = res.candidates["all/H200/w-fp8/kv-fp8"]
    assert h200["basis"] == "roofline" and h200["interval"] is None and h200["interval_note"].startswith("none")


def test_a_missing_or_broken_calibration_json_is_one_clear_error(tmp_path):
    layout = Layout(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "memory.json").write_text(json.dumps(memory_doc()))
    res = final_curve.analyze(
        read_source(SAMPLE_SWEEPS, ROOT), final_curve.Workload(6018, 1001), SETTINGS, SECTIONS, ROOT, validate=False
    )
    demands = {"pooled": demand("all", "Llama-3.1-70B", 6018, 1001, "pooled"), "tiers": {}}
    with pytest.raises(InputError, match=r"calibration\.json: not found .*calibrate stage"):
        stage.candidate_curves(res, {}, layout, demands)
    broken = copy.deepcopy(calibration_doc())
    del broken["deployments"][0]["coefficients"]["flops"]
    with pytest.raises(InputError, match=r"metrics/calibration\.json: deployments\[0\]\.coefficients\.flops = None"):
        ec.CalibrationDoc.from_document(broken)


def test_the_pooled_scale_matches_the_calibrators_own():
    from pipeline.sim.calibrate import PooledFit

    doc = calibration_doc()["pooled"]
    theta = np.array(
        [doc["coefficients"][k] for k in ("fixed_s", "flops", "weight_bytes", "kv_bytes", "seqs", "allreduce")] + [0.02]
    )
    fit = PooledFit(theta, {"hopper": 1.0, "ada": 0.5}, [], "hopper")
    mine = ec.Pooled(tuple(theta), {"hopper": 1.0, "ada": 0.5})
    for arch in ("hopper", "ada", "blackwell"):
        t, how = fit.theta_for(arch)
        m, how_m = mine.theta_for(arch)
        assert np.allclose(t, m) and how == how_m, arch


def test_the_benchmarked_deployment_is_always_a_candidate_with_the_memory_stages_reason():
    def measured(gpu: str, w: str, kv: str, tp: int) -> ec.Measured:
        return ec.Measured("Llama-3.1-70B", gpu, tp, 1, w, kv, "c", None, None, pd.DataFrame(), 1.0, 1.0, 1, True)

    memory = {
        "candidates": {"all/H100-SXM/w-fp8/kv-fp8": mem_entry("all", "Llama-3.1-70B", "H100-SXM", "fp8", "fp8", 4)},
        "rejected": {"all/A100-80GB/w-fp8/kv-fp8": "A100-80GB (ampere) has no FP8 tensor cores"},
    }
    fleet = ec.Fleet(
        "all",
        "Llama-3.1-70B",
        6000,
        1000,
        None,
        [
            measured("H100-SXM", "fp8", "fp8", 4),  # the memory stage's own pick: one candidate, not two
            measured("A100-80GB", "fp8", "fp8", 8),  # rejected by the memory stage: kept, with its reason
            measured("H200", "bf16", "bf16", 4),  # not evaluated by the memory stage at all
        ],
    )
    got = {c.id: c for c in ec.candidate_list(memory, [fleet])}
    assert sorted(got) == ["all/A100-80GB/w-fp8/kv-fp8", "all/H100-SXM/w-fp8/kv-fp8", "all/H200/w-bf16/kv-bf16"]
    assert got["all/H100-SXM/w-fp8/kv-fp8"].memory_rejected is None and got["all/H100-SXM/w-fp8/kv-fp8"].tp == 4
    assert got["all/A100-80GB/w-fp8/kv-fp8"].memory_rejected == (
        "the memory stage rejects it: A100-80GB (ampere) has no FP8 tensor cores"
    )
    assert "not a memory-stage candidate" in got["all/H200/w-bf16/kv-bf16"].memory_rejected
    # a larger TP than the memory stage picked is not a rejection: it merely picked the lowest that fits
    fleet.measured = [measured("H100-SXM", "fp8", "fp8", 8)]
    tp8 = {c.id: c for c in ec.candidate_list(memory, [fleet])}["all/H100-SXM/w-fp8/kv-fp8/tp8"]
    assert tp8.memory_rejected is None and "the memory stage's pick: TP4 x PP1" in tp8.note


def test_a_real_trace_with_a_tp_only_and_a_length_mismatch_is_sized_on_the_engine_model(shared_fixtures):
    """The Azure 2023 conversation trace (p95 4083 in / 451 out) against the 6000/1000 TP4 sweep, the memory stage
    at TP2: the sweep is beyond 2x on output, so the TP4 deployment's own calibrated curve at the trace's lengths
    sizes the fleet, and the memory stage's TP2 is a transferred candidate of its own."""
    trace = shared_fixtures / "traces" / "azure2023_conv.csv"
    if not trace.exists():
        pytest.skip("azure2023_conv.csv is absent")
    df = pd.read_csv(trace)
    df = df[(df["ContextTokens"] > 0) & (df["GeneratedTokens"] > 0)]
    ins, outs = df["ContextTokens"].to_numpy(), df["GeneratedTokens"].to_numpy()
    p95_in, p95_out = float(np.percentile(ins, 95)), float(np.percentile(outs, 95))
    assert 1000 / p95_out > 2  # the sweep's output length is more than twice the trace's p95
    res = run_case(p95_in, p95_out, memory=memory_doc(h100_tp=2, headroom_gpus=2), rows={"all": (ins, outs, "azure")})
    m = res.metrics()
    tp4, tp2 = res.candidates["all/H100-SXM/w-fp8/kv-fp8/tp4"], res.candidates["all/H100-SXM/w-fp8/kv-fp8"]
    assert tp4["basis"] == "calibrated" and tp4["deployment_key"] == H100_KEY and tp4["tp"] == 4
    assert tp2["basis"] == "transferred" and tp2["tp"] == 2
    assert (
        m["sizing_basis"] == "calibrated"
        and m["usable_rps"] == tp4["usable_rps"]
        and m["sizing_candidate"] == "all/H100-SXM/w-fp8/kv-fp8/tp4"
    )


# ------------------------------------------------------------------------------------------- the anchor (like for like)

INT8 = "all/H100-SXM/w-int8/kv-fp8"
FP8 = "all/H100-SXM/w-fp8/kv-fp8"


def _hand_candidate(tier: str, w: str, basis: str, u: float, c: float, **extra: Any) -> dict[str, Any]:
    return {
        "tier": tier,
        "model": "Llama-3.1-70B",
        "gpu": "H100-SXM",
        "weights": w,
        "kv": "fp8",
        "tp": 4,
        "pp": 1,
        "basis": basis,
        "usable_rps": u,
        "c_max": c,
        **extra,
    }


def _hand_measured(sizing: bool = True) -> ec.Measured:
    return ec.Measured(
        "Llama-3.1-70B", "H100-SXM", 4, 1, "fp8", "fp8", "long", None, None, pd.DataFrame(), 6000, 1000, 1, sizing
    )


def test_the_anchor_arithmetic_by_hand():
    band = {"c_max_lo": 30.0, "c_max_hi": 50.0, "usable_rps_lo": 1.6, "usable_rps_hi": 2.4, "source": "LODO"}
    # the benchmarked fp8 TP4: measured 1.5 req/s, C_max 60; the engine model at the mix on its own coefficients
    # 3.0 req/s, C_max 80; on the pooled coefficients 4.0 req/s, C_max 100
    by_basis = {"calibrated": (3.0, 80.0, "own"), "transferred": (4.0, 100.0, "pooled")}
    fp8 = _hand_candidate("all", "fp8", "measured", 1.5, 60.0, usable_rps_model=3.0, c_max_model=80.0)
    fp8.update(model_basis="calibrated", _model_by_basis=by_basis, length_match={"curve_input_tokens": 6000})
    tp8 = "all/H100-SXM/w-fp8/kv-fp8/tp8"
    cands = {
        FP8: fp8,
        INT8: _hand_candidate("all", "int8", "transferred", 2.0, 40.0, interval=dict(band)),
        tp8: {**_hand_candidate("all", "fp8", "calibrated", 2.0, 40.0), "tp": 8},
        "small/H100-SXM/w-int8/kv-fp8": _hand_candidate("small", "int8", "transferred", 5.0, 10.0),
    }
    fleets = [
        ec.Fleet("all", "Llama-3.1-70B", 6000, 1000, None, [_hand_measured()]),
        ec.Fleet("small", "Llama-3.1-70B", 2000, 500, None, []),  # no sweep: no anchor
    ]
    got = ec.anchor(cands, fleets)
    a = got["all"]
    # the fleet's (own basis): factor = measured / model = 1.5 / 3.0 = 0.5; C_max factor = 60 / 80 = 0.75
    assert (a["deployment"], a["factor"], a["c_max_factor"], a["model_basis"]) == (FP8, 0.5, 0.75, "calibrated")
    assert (a["measured_usable_rps"], a["model_usable_rps"], a["measured_c_max"], a["model_c_max"]) == (
        1.5,
        3.0,
        60.0,
        80.0,
    )
    # on the pooled coefficients: 1.5 / 4.0 = 0.375, 60 / 100 = 0.6
    assert a["by_basis"]["transferred"] == {
        "model_usable_rps": 4.0,
        "model_c_max": 100.0,
        "factor": 0.375,
        "c_max_factor": 0.6,
    }
    assert "priced like for like" in a["note"] and "scaled by 1.500 / 3.000 = 0.500" in a["note"]
    assert "its C_max by 60.0 / 80.0 = 0.750" in a["note"] and "transferred candidates are scaled by 0.375" in a["note"]
    # a calibrated candidate: 2.0 x 0.5 = 1.0 req/s, 40 x 0.75 = 30
    c8 = cands[tp8]
    assert (c8["usable_rps"], c8["c_max"], c8["usable_rps_model"], c8["c_max_model"]) == (1.0, 30.0, 2.0, 40.0)
    assert c8["anchor"]["factor"] == 0.5 and c8["anchor"]["model_basis"] == "calibrated"
    # a transferred one on the pooled anchor: 2.0 x 0.375 = 0.75, 40 x 0.6 = 24; band 1.6..2.4 -> 0.6..0.9 req/s,
    # C_max 30..50 -> 18..30
    i8 = cands[INT8]
    assert (i8["usable_rps"], i8["c_max"], i8["usable_rps_model"], i8["c_max_model"]) == (0.75, 24.0, 2.0, 40.0)
    iv = i8["interval"]
    assert (iv["usable_rps_lo"], iv["usable_rps_hi"], iv["c_max_lo"], iv["c_max_hi"]) == (0.6, 0.9, 18.0, 30.0)
    assert i8["interval_model"] == band
    ia = i8["anchor"]
    assert (ia["factor"], ia["c_max_factor"], ia["model_usable_rps"], ia["model_basis"]) == (
        0.375,
        0.6,
        4.0,
        "transferred",
    )
    assert "x 1.500 / 4.000 = 0.375" in ia["note"] and "by_basis" not in ia
    # the measured candidate keeps its own figures
    assert (cands[FP8]["usable_rps"], cands[FP8]["c_max"]) == (1.5, 60.0) and cands[FP8]["anchor"]["factor"] == 0.5
    # a fleet with no sweep: no factor, the raw figures, and why
    s = cands["small/H100-SXM/w-int8/kv-fp8"]
    assert got["small"]["factor"] is None and "no measured curve sizes tier small" in got["small"]["note"]
    assert (s["usable_rps"], s["usable_rps_model"], s["c_max"]) == (5.0, 5.0, 10.0)
    # no model figure for the benchmarked deployment: no factor, raw figures, and a note
    cands2 = {
        FP8: _hand_candidate("all", "fp8", "measured", 1.5, 60.0, usable_rps_model=None, c_max_model=None),
        INT8: _hand_candidate("all", "int8", "transferred", 2.0, 40.0),
    }
    a2 = ec.anchor(cands2, fleets[:1])["all"]
    assert a2["factor"] is None and a2["deployment"] == FP8 and "no usable RPS" in a2["note"]
    assert cands2[INT8]["usable_rps"] == 2.0 and cands2[INT8]["usable_rps_model"] == 2.0


def _int8_case(in_p95: float, out_p95: float, settings: cv.Settings = SETTINGS) -> final_curve.CurveResult:
    memory = memory_doc()
    memory["candidates"][INT8] = mem_entry("all", "Llama-3.1-70B", "H100-SXM", "int8", "fp8", 4, 4)
    # the hand calibration: the H100 fp8 TP4's own fit differs from the pooled one (flops 2.0 vs 2.5, bytes 1.3 vs 1.4)
    return run_case(in_p95, out_p95, memory=memory, settings=settings)


def test_a_same_gpu_same_bytes_candidate_is_priced_like_for_like_with_the_measured_one():
    # the sample's pooled p95 (6018 in / 1001 out) against the 6000/1000 sweep: measured; the int8 deployment is
    # simulated at the sample's length mix (mean ~1,900 in / ~340 out), far below the sweep's fixed lengths
    res = _int8_case(6018, 1001)
    fp8, i8 = res.candidates[FP8], res.candidates[INT8]
    assert fp8["basis"] == "measured" and i8["basis"] == "transferred"
    # the raw engine model at the mix: about twice the measured figure (the length convention, not the hardware)
    assert i8["usable_rps_model"] / fp8["usable_rps"] > 1.5
    assert fp8["usable_rps_model"] / fp8["usable_rps"] > 1.5
    # anchored: within a few % of the measured one (same GPU, same bytes per weight, same TP)
    assert i8["usable_rps"] == pytest.approx(fp8["usable_rps"], rel=0.05)
    assert i8["c_max"] == pytest.approx(fp8["c_max"], rel=0.05)
    a = i8["anchor"]
    # a transferred candidate is anchored on the benchmarked deployment simulated on the same pooled coefficients
    assert a["deployment"] == FP8 and a["model_basis"] == "transferred"
    pooled_fp8 = res.metrics()["anchor"]["by_basis"]["transferred"]["model_usable_rps"]
    assert a["factor"] == pytest.approx(fp8["usable_rps"] / pooled_fp8, abs=1e-3)
    assert i8["usable_rps"] == pytest.approx(i8["usable_rps_model"] * a["factor"], abs=1e-3)
    # the fleet's own anchor is the deployment on its own (calibrated) coefficients
    own = res.metrics()["anchor"]
    assert own["model_basis"] == "calibrated" and own["model_usable_rps"] == fp8["usable_rps_model"]
    # every transferred candidate of the fleet is scaled by the same factor; the band with it
    h200 = res.candidates["all/H200/w-fp8/kv-fp8"]
    assert h200["usable_rps"] == pytest.approx(h200["usable_rps_model"] * a["factor"], abs=1e-3)
    assert h200["interval"]["usable_rps_lo"] == pytest.approx(
        h200["interval_model"]["usable_rps_lo"] * a["factor"], abs=1e-3
    )
    m = res.metrics()
    assert m["usable_rps"] == fp8["usable_rps"]  # the sizing figure is the measured one


def test_beyond_the_max_mismatch_the_measured_figure_is_carried_and_the_fleet_anchored_on_it():
    # p95 7303 / 90 against the 6000/1000 sweep: 11x on output, beyond curve.max_length_mismatch
    res = _int8_case(7303, 90)
    m = res.metrics()
    fp8, i8 = res.candidates[FP8], res.candidates[INT8]
    k = fp8["carried"]
    # the carry: measured usable RPS x u_model(every request at 7303 / 90) / u_model(every request at 6000 / 1000)
    assert k["measured_usable_rps"] == pytest.approx(res.chosen.usable_rps, abs=1e-4)
    assert k["factor"] == pytest.approx(k["model_at_workload_p95"] / k["model_at_sweep_lengths"], abs=1e-4)
    assert k["usable_rps"] == pytest.approx(k["measured_usable_rps"] * k["factor"], abs=2e-4)
    assert k["factor"] > 1.5  # 90 output tokens instead of 1000: far more requests per second at the same SLO
    assert k["c_max"] == pytest.approx(k["measured_c_max"] * k["c_max_factor"], abs=2e-3)
    assert "carried from its lengths 6000 in / 1000 out to the workload's p95 7303 / 90" in k["note"]
    # the sizing: the benchmarked deployment stays calibrated, at the carried figure, with the block
    assert fp8["basis"] == "calibrated" and m["sizing_basis"] == "calibrated" and m["carried"] == k
    assert m["usable_rps"] == fp8["usable_rps"] == pytest.approx(k["usable_rps"], abs=1e-4)
    assert m["c_max"] == fp8["c_max"] == pytest.approx(k["c_max"], abs=1e-4)
    assert m["measured_usable_rps"] == pytest.approx(res.chosen.usable_rps, abs=1e-4)
    # the fleet is anchored on the carried figure, as a measured fleet is: factor = carried / u_model(D_b at the mix)
    a = m["anchor"]
    assert a["deployment"] == FP8 and a["measured_usable_rps"] == k["usable_rps"] and a["carried"] == k
    assert a["factor"] == pytest.approx(k["usable_rps"] / fp8["usable_rps_model"], abs=1e-4)
    assert "carried from its lengths to the workload's p95" in a["note"]
    pooled = a["by_basis"]["transferred"]
    assert pooled["factor"] == pytest.approx(k["usable_rps"] / pooled["model_usable_rps"], abs=1e-4)
    # a transferred candidate of that fleet: its raw figure x the pooled anchor
    assert i8["anchor"]["factor"] == pooled["factor"] and i8["anchor"]["model_basis"] == "transferred"
    assert i8["usable_rps"] == pytest.approx(i8["usable_rps_model"] * pooled["factor"], abs=1e-3)
    # the loud message says how it was carried
    (mis,) = m["length_mismatch"]
    assert "does NOT size the fleet as measured; its figures are carried" in mis["message"]
    assert (
        f"carried like for like: {k['measured_usable_rps']:.3f} req/s per instance measured x "
        f"{k['model_at_workload_p95']:.3f} / {k['model_at_sweep_lengths']:.3f}"
    ) in mis["message"]


def test_the_carry_factor_by_hand_from_the_simulator_at_two_fixed_points():
    """The two model figures of the carry are the simulator's closed-loop curves with every request at one length,
    on the benchmarked deployment's own calibrated coefficients: recomputed here from pipeline.sim directly."""
    from pipeline import catalog
    from pipeline.sim.cost import Coefficients, for_deployment
    from pipeline.sim.engine import EngineConfig

    res = run_case(7303, 90)
    k = res.candidates[FP8]["carried"]
    cal = ec.CalibrationDoc.from_document(calibration_doc())
    th = cal.find("Llama-3.1-70B", "H100-SXM", 4, 1, "fp8", "fp8").theta
    cost = for_deployment(
        catalog.load_model("Llama-3.1-70B", ROOT),
        catalog.find_gpu("H100-SXM", catalog.load_gpus(ROOT)),
        "fp8",
        "fp8",
        4,
        1,
        Coefficients(tuple(th[:6]), "calibrated", "hand", cal.form),
    )
    cfg = EngineConfig(
        max_num_seqs=256, max_num_batched_tokens=8192, block_size=16, kv_blocks=80000, enable_prefix_caching=False
    )  # the calibration's engine limits, the memory stage's KV blocks (memory_doc)
    got = {}
    for name, (i, o) in {"sweep": (6000, 1000), "p95": (7303, 90)}.items():
        lengths = ec.LengthSample(np.full(ec.LENGTH_POOL, i), np.full(ec.LENGTH_POOL, o), "hand", ec.LENGTH_POOL)
        got[name] = ec.predicted_point(ec.simulate_curve(cost, cfg, lengths, th[6], SETTINGS), SETTINGS)
    assert k["model_at_sweep_lengths"] == pytest.approx(got["sweep"][1], abs=1e-4)
    assert k["model_at_workload_p95"] == pytest.approx(got["p95"][1], abs=1e-4)
    assert k["c_max_model_at_sweep_lengths"] == pytest.approx(got["sweep"][0], abs=1e-4)
    assert k["factor"] == pytest.approx(got["p95"][1] / got["sweep"][1], abs=5e-4)  # of the rounded figures


def test_crossing_the_max_mismatch_at_a_ratio_near_one_does_not_move_the_sizing():
    """The reviewer's repro: tolerance 0.1%, max mismatch 1.002x, the sample's p95 6018 / 1001 against the 6000/1000
    sweep (ratios 0.997 / 0.999): beyond the threshold, but the carried figure is within 2% of the measured one,
    and so is the anchor of the fleet's other candidates."""
    tight = dataclasses.replace(SETTINGS, length_tolerance=0.001, max_length_mismatch=1.002)
    base, res = _int8_case(6018, 1001), _int8_case(6018, 1001, tight)
    mb, m = base.metrics(), res.metrics()
    assert mb["sizing_basis"] == "measured" and not mb["length_mismatch"]
    (mis,) = m["length_mismatch"]
    assert mis["used_for_sizing"] is False and m["sizing_basis"] == "calibrated"
    k = m["carried"]
    assert k["factor"] == pytest.approx(1.0, abs=0.01)  # 6018 / 1001 vs 6000 / 1000, one fixed length each
    assert m["usable_rps"] == pytest.approx(mb["usable_rps"], rel=0.02)
    assert m["c_max"] == pytest.approx(mb["c_max"], rel=0.02)
    # the other candidates: anchored on the carried figure, so within 2% of the measured fleet's anchor
    assert m["anchor"]["factor"] == pytest.approx(mb["anchor"]["factor"], rel=0.02)
    for cid in (INT8, "all/H200/w-fp8/kv-fp8"):
        assert res.candidates[cid]["usable_rps"] == pytest.approx(base.candidates[cid]["usable_rps"], rel=0.02), cid
        assert res.candidates[cid]["c_max"] == pytest.approx(base.candidates[cid]["c_max"], rel=0.02), cid


def test_the_anchor_on_a_carried_figure_by_hand():
    # the benchmarked fp8 TP4 beyond the max mismatch: calibrated, raw 3.0 req/s and C_max 80 at the mix, its
    # measured curve carried to 0.9 req/s and C_max 45; on the pooled coefficients 4.0 req/s and C_max 100 at the mix
    by_basis = {"calibrated": (3.0, 80.0, "own"), "transferred": (4.0, 100.0, "pooled")}
    carried = {"usable_rps": 0.9, "c_max": 45.0, "factor": 1.2, "measured_usable_rps": 0.75}
    carried |= {"model_at_workload_p95": 1.2, "model_at_sweep_lengths": 1.0}
    fp8 = _hand_candidate("all", "fp8", "calibrated", 3.0, 80.0, carried=carried, _model_by_basis=by_basis)
    fp8.update(usable_rps_model=3.0, c_max_model=80.0, model_basis="calibrated")
    cands = {FP8: fp8, INT8: _hand_candidate("all", "int8", "transferred", 2.0, 40.0)}
    a = ec.anchor(cands, [ec.Fleet("all", "Llama-3.1-70B", 7303, 90, None, [_hand_measured()])])["all"]
    # own basis: 0.9 / 3.0 = 0.3, 45 / 80 = 0.5625; pooled: 0.9 / 4.0 = 0.225, 45 / 100 = 0.45
    assert (a["factor"], a["c_max_factor"], a["measured_usable_rps"], a["measured_c_max"]) == (0.3, 0.5625, 0.9, 45.0)
    assert a["by_basis"]["transferred"]["factor"] == 0.225 and a["by_basis"]["transferred"]["c_max_factor"] == 0.45
    # the benchmarked deployment lands exactly on its carried figure; int8 at 2.0 x 0.225 = 0.45, 40 x 0.45 = 18
    assert (cands[FP8]["usable_rps"], cands[FP8]["c_max"]) == (0.9, 45.0)
    assert (cands[INT8]["usable_rps"], cands[INT8]["c_max"]) == (0.45, 18.0)
    assert "carried" not in cands[INT8]["anchor"] and "carried to the workload's p95" in cands[INT8]["anchor"]["note"]
    # not carried (no model figure at a fixed point): no factor, the raw figures
    fp8b = _hand_candidate("all", "fp8", "calibrated", 3.0, 80.0, carried={"factor": None, "usable_rps": None})
    cands2 = {FP8: fp8b, INT8: _hand_candidate("all", "int8", "transferred", 2.0, 40.0)}
    a2 = ec.anchor(cands2, [ec.Fleet("all", "Llama-3.1-70B", 7303, 90, None, [_hand_measured()])])["all"]
    assert a2["factor"] is None and "not used for sizing" in a2["note"] and cands2[INT8]["usable_rps"] == 2.0


def test_anchor_keys_are_on_every_candidate_and_fleet():
    tiers = {"tiny": demand("tiny", "Llama-3.1-8B", 2611, 571)}
    res = run_case(6018, 1001, tiers=tiers)
    m = res.metrics()
    keys = {"deployment", "measured_usable_rps", "model_usable_rps", "factor", "measured_c_max", "model_c_max"}
    keys |= {"c_max_factor", "model_basis", "note"}
    assert set(m["anchor"]) == keys | {"by_basis"} and set(m["per_tier"]["tiny"]["anchor"]) == keys | {"by_basis"}
    assert m["per_tier"]["tiny"]["anchor"]["factor"] is None  # no sweep for the tier
    for cid, e in m["candidates"].items():
        assert set(e["anchor"]) == keys, cid
        assert "usable_rps_model" in e and "c_max_model" in e, cid
        if e["basis"] != "measured":
            assert "interval_model" in e, cid


def test_report_10_says_how_each_fleet_is_anchored_and_shows_both_columns():
    from pipeline import curve_views as cv_views

    res = _int8_case(6018, 1001)
    doc = res.metrics()
    (para,) = cv_views.anchor_paragraphs(doc)
    a = doc["anchor"]
    assert para.startswith("The pooled fleet: priced like for like with the measured curve")
    assert f"gives {a['model_usable_rps']:.3f} req/s per instance for the benchmarked deployment {FP8}" in para
    assert f"scaled by {a['measured_usable_rps']:.3f} / {a['model_usable_rps']:.3f} = {a['factor']:.3f}" in para
    table = cv_views.candidates_table(doc).set_index("candidate")
    assert table.loc[INT8, "usable req/s"] == pytest.approx(res.candidates[INT8]["usable_rps"], abs=1e-3)
    assert table.loc[INT8, "engine model req/s (mix)"] == pytest.approx(res.candidates[INT8]["usable_rps_model"], 1e-3)
    # a transferred candidate: the factor on the pooled coefficients
    assert table.loc[INT8, "anchor factor"] == pytest.approx(a["by_basis"]["transferred"]["factor"], abs=1e-3)
    sizing = cv_views.sizing_table(doc).set_index("fleet")
    assert sizing.loc["all (pooled)", "anchor factor"] == pytest.approx(a["factor"], abs=1e-3)
    # beyond the max mismatch: anchored on the carried figure, and the sizing table shows the carry factor
    doc2 = _int8_case(7303, 90).metrics()
    (para2,) = cv_views.anchor_paragraphs(doc2)
    assert para2.startswith("The pooled fleet: priced like for like with the measured curve")
    assert "carried from its lengths to the workload's p95" in para2
    row = cv_views.sizing_table(doc2).set_index("fleet").loc["all (pooled)"]
    assert row["carried x (beyond max mismatch)"] == pytest.approx(doc2["carried"]["factor"], abs=1e-3)
    # no sweep at all for a fleet: not anchored, and says so
    doc3 = run_case(6018, 1001, tiers={"tiny": demand("tiny", "Llama-3.1-8B", 2611, 571)}).metrics()
    assert "Tier tiny: not anchored: no measured curve sizes tier tiny" in cv_views.anchor_paragraphs(doc3)[1]


def test_a_calibrated_band_is_widened_to_the_refined_fits_own_error():
    """The curve uses the refined fit; its in-sample error (+13% on throughput here) must lie inside the band."""
    lolo = {
        "throughput": {"n": 8, "p10_rel": -0.085, "p90_rel": 0.038},
        "itl_mean": {"n": 8, "p10_rel": -0.05, "p90_rel": 0.02},
    }
    fitted = {
        "throughput": {"n": 8, "p10_rel": 0.016, "p90_rel": 0.13},
        "itl_mean": {"n": 8, "p10_rel": -0.2, "p90_rel": 0.0},
    }
    band = ec.widened(lolo, fitted)
    assert band["throughput"]["p10_rel"] == -0.085 and band["throughput"]["p90_rel"] == 0.13
    assert band["itl_mean"]["p10_rel"] == -0.2 and band["itl_mean"]["p90_rel"] == 0.02
    assert band["throughput"]["n"] == 8 and lolo["throughput"]["p90_rel"] == 0.038  # the input is not modified
    assert ec.widened(lolo, None) == lolo and ec.widened(None, fitted) is None
