"""The engine model's physics refinements (issue 13 follow-up): physical lower bounds of the fit, SGLang's unmixed
prefill batches chosen from the manifest, the stated shared prefix replayed as cached prefix blocks, TTFT p50 scored
beside the target TTFT. Every expected value is worked by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import catalog
from pipeline.sim import calibrate as C
from pipeline.sim import cost as K
from pipeline.sim.engine import Trace
from tests.conftest import calibration_level, toy_step_cost

toy = toy_step_cost  # t = fixed_s + per_token_s x tokens (tests/conftest.py)


level = calibration_level  # tests/conftest.py: a measured open-loop level, fields overridable


# ------------------------------------------------------------------------------------------ physical bounds

# Two relative prefill rows (columns b0..b5, h; target 1): b1 + 10 h = 1 and 3 b1 + 5 h = 1. With b >= 0 only, the
# exact solution is h = 0.08, b1 = 0.2 (5x the GPU's peak). With b1 >= 1 (b1 = 1 + u, u >= 0): u + 10 h = 0 and
# 3 u + 5 h = -2 have non-positive right-hand sides, so u = h = 0: b1 = 1, h = 0.
ROWS = np.array([[0, 1.0, 0, 0, 0, 0, 10.0], [0, 3.0, 0, 0, 0, 0, 5.0]])
PRIOR = np.array([0.0, 1 / 0.45, 1.25, 1.25, 0.0, 1.0, 0.0])


def test_fit_keeps_b1_at_or_above_one():
    theta = C.fit_aggregates(np.zeros((0, C.NPAR)), ROWS, PRIOR, weight=0.0)
    assert theta[1] == pytest.approx(1.0, abs=1e-12)
    assert theta[6] == pytest.approx(0.0, abs=1e-12)
    assert C.PHYSICAL_LOWER.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_without_the_bounds_the_same_rows_give_five_times_peak(monkeypatch):
    monkeypatch.setattr(C, "PHYSICAL_LOWER", np.zeros(C.NPAR))
    theta = C.fit_aggregates(np.zeros((0, C.NPAR)), ROWS, PRIOR, weight=0.0)
    assert theta[1] == pytest.approx(0.2, abs=1e-9)
    assert theta[6] == pytest.approx(0.08, abs=1e-9)


def test_decode_rows_keep_the_bandwidth_terms_at_or_above_one():
    # one decode row, weights term only: 0.5 b2 = 1 wants b2 = 2 (>= 1, kept); 2 b2 = 1 wants b2 = 0.5 -> 1
    for coef, want in ((0.5, 2.0), (2.0, 1.0)):
        row = np.array([[0, 0, coef, 0, 0, 0, 0]])
        theta = C.fit_aggregates(row, np.zeros((0, C.NPAR)), PRIOR, weight=0.0)
        assert theta[2] == pytest.approx(want, abs=1e-9)
        assert theta[3] >= 1.0  # b3 never below the bandwidth bound


def test_a_gpu_family_scale_below_one_keeps_the_bounds():
    # theta b = (0, 1, 1, 1, 0, 1); ampere scale 0.5 -> (0, 0.5, 0.5, 0.5, 0, 0.5), the bounded three back at 1
    pooled = C.PooledFit(np.array([0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.01]), {"hopper": 1.0, "ampere": 0.5}, [], "hopper")
    t, _ = pooled.theta_for("ampere")
    assert t.tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.01])


# ------------------------------------------------------------------------------------ SGLang's scheduling


@pytest.fixture(scope="module")
def llama8b():
    model = catalog.load_model("Llama-3.1-8B")
    gpu = catalog.find_gpu("H100-SXM", catalog.load_gpus())
    c = K.for_deployment(model, gpu, "bf16", "bf16", 1)
    assert not isinstance(c, str)
    return model, gpu, c


@pytest.mark.parametrize(
    ("engine", "notes", "mixed"),
    [("vllm", "", True), ("sglang", "", False), ("sglang", "launch_server --enable-mixed-chunk --tp 4", True)],
)
def test_prefill_mixing_is_chosen_from_the_manifest_engine(llama8b, engine, notes, mixed):
    model, gpu, c = llama8b
    m = {"engine": engine, "weight_dtype": "bf16", "kv_dtype": "bf16", "notes": notes}
    lim = C.engine_limits(m, model, gpu, c, 1, 1)
    assert lim.mixed_prefill is mixed
    assert lim.config().mixed_prefill is mixed
    assert lim.as_dict()["mixed_prefill"] is mixed


# ------------------------------------------------------------------------------------------- shared prefix

NOTES = (
    "inference-perf 'general' profile: shared_prefix data, system prompt 100 + question 447 tokens,\n  output 248 "
    "(ignore_eos), 9 system prompts x\n  5 users, multi-turn chat True;"
)


def test_the_stated_shared_prefix_is_read_from_the_notes():
    assert C.shared_prefix(NOTES) == (100, 9)
    assert C.shared_prefix("random dataset, no prefix") is None


def test_cached_prefix_tokens_by_hand():
    # 100 stated tokens -> 96 (6 whole blocks of 16); a shortest prompt of 50 caps it at 49 -> 48; no prefix -> 0
    assert level(prefix_tokens=100, prefix_groups=9).cached_prefix_tokens() == 96
    lens = np.array([50, 600], np.int64)
    assert level(prefix_tokens=100, prefix_groups=9, input_lens=lens).cached_prefix_tokens() == 48
    assert level().cached_prefix_tokens() == 0


def test_prefill_pairs_after_a_cached_prefix_by_hand():
    # a 4-token prompt with 2 cached: positions 3 and 4 are computed, attending to 3 and 4 tokens: 7 pairs
    assert C._pairs(np.array([4]), K.BIG_WINDOW, 2) == (7.0, 7.0)
    assert C._pairs(np.array([4]), K.BIG_WINDOW) == (10.0, 10.0)


def test_replay_of_a_shared_prefix_level_carries_one_hash_per_group():
    lv = level(prefix_tokens=100, prefix_groups=3, requests=7)
    kind, tr = C.replay_trace(lv)
    assert kind == "open" and tr.hash_block_tokens == 100
    assert tr.hash_offsets.tolist() == list(range(8))
    assert tr.hash_values.tolist() == [1, 2, 3, 1, 2, 3, 1]


def test_a_second_request_of_the_group_skips_the_cached_prefix_by_hand():
    # toy 10 ms + 1 ms/token, prompts of 200 tokens sharing one 100-token hash block, 10 s apart: the first
    # prefills 200 tokens (TTFT 0.210 s); the second reuses 96 (100 rounded down to blocks of 16) and prefills 104
    # (TTFT 0.114 s). calibrate.simulate turns the server's prefix cache on for a trace with hashes.
    tr = Trace(
        np.array([0.0, 10.0]),
        np.array([200, 200], np.int64),
        np.array([1, 1], np.int64),
        np.array([0, 1, 2], np.int64),
        np.array([5, 5], np.int64),
        100,
    )
    res = C.simulate(toy(), C.EngineLimits(), "open", tr)
    assert res.ttft_s.tolist() == pytest.approx([0.210, 0.114], abs=1e-12)


# ------------------------------------------------------------------------------------------------ TTFT p50


def test_ttft_p50_is_scored_beside_the_target_ttft():
    pred = {"throughput": 110.0, "tpot_mean": 0.011, "ttft_p50": 0.11, "ttft_p99": 0.3}
    res = C.residuals_of(pred, level())
    # target TTFT is the p99 the level states: 0.3 / 0.2 - 1 = 0.5; the median beside it: 0.11 / 0.1 - 1 = 0.1
    assert res["ttft"] == pytest.approx(0.5) and res["ttft_p50"] == pytest.approx(0.1)
    assert res["throughput"] == pytest.approx(0.1) and res["itl_mean"] == pytest.approx(0.1)
    only_p99 = C.residuals_of(pred, level(ttft_s={"p99": 0.2}))
    assert "ttft_p50" not in only_p99 and only_p99["ttft"] == pytest.approx(0.5)
    assert "ttft_p50" in C.METRICS and C.METRICS[:3] == ("throughput", "itl_mean", "ttft")
    assert math.isclose(C.summarize({"ttft_p50": [0.1, -0.3]})["ttft_p50"]["median_abs_rel"], 0.2)
