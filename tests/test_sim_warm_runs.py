"""Runs that repeat an earlier run's prompts against a prefix-caching server (pipeline/sim/calibrate.py WARM_RUNS,
pipeline/sim/engine.py warm_cache), and the fidelity benchmark's TTFT noise figures (benchmarks/fidelity.py). Every
expected value is worked by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.sim import calibrate as C
from pipeline.sim import engine
from pipeline.sim.engine import EngineConfig, Trace
from tests.conftest import calibration_level, load_fidelity, toy_step_cost

toy = toy_step_cost  # t = fixed_s + per_token_s x tokens: 10 ms + 1 ms per scheduled token (tests/conftest.py)


level = calibration_level  # tests/conftest.py: a measured open-loop level, fields overridable


# ----------------------------------------------------------------------------------------- cached tokens


def test_cached_tokens_of_warm_prompts_by_hand():
    # every whole 16-token block of the prompt but the last token's: 17 -> 16 (16 cacheable tokens, one block);
    # 16 -> 0 (15 cacheable, no whole block); 100 -> 96 (99 cacheable, 6 blocks); 1 -> 0
    lv = level(input_lens=np.array([17, 16, 100, 1], np.int64), warm_prompts=True)
    assert lv.cached_tokens(16).tolist() == [16, 0, 96, 0]
    # not warm: the stated shared prefix for every request (100 stated -> 96), else nothing
    lv = level(input_lens=np.array([547, 600], np.int64), prefix_tokens=100, prefix_groups=9)
    assert lv.cached_tokens(16).tolist() == [96, 96]
    assert level().cached_tokens(16).tolist() == [0] * 8


def test_prefill_pairs_with_per_request_cached_tokens_by_hand():
    # prompts of 4 and 3 tokens with 2 and 0 cached: 3 + 4 = 7 pairs and 1 + 2 + 3 = 6 pairs: mean 6.5
    assert C._pairs(np.array([4, 3]), 10**9, np.array([2, 0])) == (6.5, 6.5)


def test_replay_of_a_warm_level_chains_each_prompt():
    # prompts 17 and 40 tokens, 3 requests (the prompts in turn: 17, 40, 17): 1, 2 and 1 whole blocks of 16 below
    # the last token; hash = prompt index x 2^24 + block number (from 1), so request 2 repeats request 0's chain
    lv = level(input_lens=np.array([17, 40], np.int64), output_lens=np.array([5, 5], np.int64), requests=3)
    lv.warm_prompts = True
    kind, tr = C.replay_trace(lv)
    assert kind == "open_warm" and tr.hash_block_tokens == 16
    assert tr.hash_offsets.tolist() == [0, 1, 3, 4]
    assert tr.hash_values.tolist() == [1, (1 << 24) + 1, (1 << 24) + 2, 1]


def test_a_warm_cache_skips_the_prompt_by_hand():
    # one 1000-token prompt, 1 output token, its 62 whole blocks (999 // 16) as a hash chain. Cold: 0.01 + 1.000 =
    # 1.010 s. Warm: 62 x 16 = 992 tokens reused (below the 999-token cap), 8 computed: 0.01 + 0.008 = 0.018 s.
    tr = Trace(
        np.array([0.0]),
        np.array([1000], np.int64),
        np.array([1], np.int64),
        np.array([0, 62], np.int64),
        np.arange(1, 63, dtype=np.int64),
        16,
    )
    assert C.simulate(toy(), C.EngineLimits(), "open", tr).ttft_s.tolist() == pytest.approx([1.010], abs=1e-12)
    assert C.simulate(toy(), C.EngineLimits(), "open_warm", tr).ttft_s.tolist() == pytest.approx([0.018], abs=1e-12)
    # prefix caching off: the warm start has nothing to fill
    cold = engine.simulate_open(toy(), EngineConfig(enable_prefix_caching=False), tr, warm=True)
    assert cold.ttft_s.tolist() == pytest.approx([1.010], abs=1e-12)
    with pytest.raises(InputError, match="warm = True needs keep='arrays'"):
        engine.simulate_open(toy(), EngineConfig(), tr, keep="histogram", warm=True)


def test_prefix_caching_on_by_version_and_flag():
    assert C.prefix_caching_on({"engine": "vllm", "engine_version": "0.8.3"})  # V1: on by default
    assert C.prefix_caching_on({"engine": "vllm", "engine_version": "v0.11.0"})
    assert not C.prefix_caching_on({"engine": "vllm", "engine_version": "0.6.3.post2.dev308+gb489fc3c"})  # V0: off
    assert not C.prefix_caching_on({"engine": "vllm"})  # version unknown: not assumed
    assert not C.prefix_caching_on(
        {"engine": "vllm", "engine_version": "0.11.0", "notes": "--no-enable-prefix-caching"}
    )
    assert C.prefix_caching_on({"engine": "vllm", "engine_version": "0.6.3", "notes": "serve --enable-prefix-caching"})
    assert not C.prefix_caching_on({"engine": "sglang", "engine_version": "0.4.1"})


def test_every_run_but_the_first_of_the_same_prompts_is_warm():
    # four files of one deployment: a, b, c send the same prompts (c first by date, then a, then b); d other prompts
    same, other = [13, 25, 27], [13, 25, 28]
    cache = {
        "a.json": [{"input_lens": same, "date": "20250414-141621"}],
        "b.json": [{"input_lens": same, "date": "20250414-141706"}],
        "c.json": [{"input_lens": same, "date": "20250414-141505"}],
        "d.json": [{"input_lens": other, "date": "20250414-141800"}],
    }
    v1 = {"engine": "vllm", "engine_version": "0.8.3"}
    levels = {f: level(name=f"{f} (rate 1)") for f in cache}
    C.mark_warm_runs([("dep", f, levels[f], v1) for f in cache], cache)
    assert {f: lv.warm_prompts for f, lv in levels.items()} == {
        "a.json": True,
        "b.json": True,
        "c.json": False,
        "d.json": False,
    }
    assert any("prompts cached by an earlier run" in n for n in levels["a.json"].notes)
    # a V0 server (no prefix caching by default): nothing is warm; another deployment's files never pair up
    levels = {f: level(name=f) for f in cache}
    C.mark_warm_runs([("dep", f, levels[f], {"engine": "vllm", "engine_version": "0.6.3"}) for f in cache], cache)
    assert not any(lv.warm_prompts for lv in levels.values())
    levels = {f: level(name=f) for f in cache}
    C.mark_warm_runs([(f"dep-{f}", f, levels[f], v1) for f in cache], cache)
    assert not any(lv.warm_prompts for lv in levels.values())
    # closed-loop levels (no prefix hashes in the closed-loop replay) are never marked
    levels = {f: level(name=f, load_kind="concurrency", load=4.0) for f in cache}
    C.mark_warm_runs([("dep", f, levels[f], v1) for f in cache], cache)
    assert not any(lv.warm_prompts for lv in levels.values())


def test_a_queued_tail_replays_more_requests_by_hand():
    # p99 = 2 x p50 is not above QUEUE_TAIL (2): 2000 of the 10,000 measured requests are replayed; p99 = 2.1 x p50
    # is: 3 x 2000 = 6000; a level that measured only 500 replays its 500; no p50 stated: not queued
    assert C.QUEUE_TAIL == 2.0 and C.QUEUED_REPLAY == 3 and C.MAX_REPLAY_REQUESTS == 2000
    assert not level(ttft_s={"p50": 0.1, "p99": 0.2}).queued_tail()
    assert level(ttft_s={"p50": 0.1, "p99": 0.21}).queued_tail()
    assert not level(ttft_s={"mean": 0.1, "p99": 0.5}).queued_tail()
    for ttft, requests, replayed in ((0.2, 10_000, 2000), (0.21, 10_000, 6000), (0.21, 500, 500)):
        _, tr = C.replay_trace(level(ttft_s={"p50": 0.1, "p99": ttft}, requests=requests))
        assert len(tr) == replayed


# ------------------------------------------------------------------------------------ TTFT noise (fidelity.py)


_fidelity = load_fidelity  # tests/conftest.py


def test_bootstrap_of_two_values_by_hand():
    # resampling [1, 3] twice: mean 1, 2, 3 with probabilities 1/4, 1/2, 1/4: std sqrt(0.5) = 0.7071, over the mean
    # 2: 0.354; the 2.5% and 97.5% quantiles are 1 and 3: half-width (3 - 1) / 2 / 2 = 0.5
    got = _fidelity().bootstrap_rel(np.array([1.0, 3.0]), "mean", 4000)
    assert got["se_rel"] == pytest.approx(math.sqrt(0.5) / 2, rel=0.05)
    assert got["half_width_rel"] == pytest.approx(0.5, abs=1e-12)
    # identical requests: no noise, iid or in blocks
    flat = _fidelity().bootstrap_rel(np.full(100, 0.05), "p99", 200, block=10)
    assert flat == {"se_rel": 0.0, "half_width_rel": 0.0}


def test_quantile_draws_and_noise_floor_by_hand():
    fid = _fidelity()
    # a quantile function through (0, 1) and (1, 3): uniform on [1, 3]; its mean over many draws is 2
    draws = fid.quantile_draws([(0.0, 1.0), (1.0, 3.0)], 1000, 20)
    assert draws.shape == (20, 1000) and draws.min() >= 1.0 and draws.max() <= 3.0
    assert float(draws.mean()) == pytest.approx(2.0, abs=0.02)
    # floor = 0.674 x sqrt(max(0.3, 0.4)^2 + 0.3^2) = 0.674 x 0.5 = 0.337
    meas = {"se_rel": 0.3, "block_se_rel": 0.4}
    assert fid.noise_floor(meas, {"se_rel": 0.3}) == pytest.approx(0.5 * fid.HALF_NORMAL_MEDIAN, abs=1e-12)
    assert fid.noise_floor(None, {"se_rel": 0.3}) is None
    assert fid.noise_floor({"se_rel": 0.3, "block_se_rel": None}, None) == pytest.approx(0.3 * 0.67449, abs=1e-5)


def test_a_one_burst_closed_level_replays_as_one_burst():
    # 8 requests at concurrency 8: all sent at t = 0 and none replaced: an open-loop trace of 8 arrivals at 0;
    # 20 requests at concurrency 8: a closed loop of 8 (20 measured; at least 2 x 8)
    kind, tr = C.replay_trace(level(load_kind="concurrency", load=8.0, requests=8))
    assert kind == "open" and len(tr) == 8 and not tr.arrival_s.any()
    kind, job = C.replay_trace(level(load_kind="concurrency", load=8.0, requests=20))
    assert kind == "closed" and job[2:] == (8, 20)


def test_first_round_tail_by_hand():
    # 4 clients, 100 measured requests: the first round (4%) took 1.0 s each, the other 96 0.1 s. np.percentile's
    # p99 of the 100 sits at rank 98.01 of 0..99: among the four 1.0 s, so 1.0 s (+ h 0.02 = 1020 ms); without them
    # 0.1 s (120 ms): 8.5x, above FIRST_ROUND_TAIL (1.5). The file's 0.15 s is below the geometric midpoint
    # sqrt(1.02 x 0.12) = 0.35 s: it does not hold the tail; a file of 0.5 s does
    from types import SimpleNamespace

    assert C.FIRST_ROUND_SHARE == 0.01 and C.FIRST_ROUND_TAIL == 1.5
    run = SimpleNamespace(ttft_s=np.array([1.0] * 4 + [0.1] * 96))
    tail = C.first_round_tail(run, 4, 0.02, 0.15)
    assert tail == {
        "requests": 4,
        "share": 0.04,
        "ttft_p99_ms": 1020.0,
        "ttft_p99_without_ms": 120.0,
        "file_ttft_p99_ms": 150.0,
        "file_holds_it": False,
    }
    assert "likely started after a warm-up or a ramp" in C.first_round_note(tail)
    assert C.first_round_tail(run, 4, 0.02, 0.5)["file_holds_it"] is True
    assert C.first_round_tail(run, 4, 0.02)["file_holds_it"] is None
    # the share is the file's: the same 100 replayed requests of a file that measured 500 (4 of 500: 0.8%)
    assert C.first_round_tail(run, 4, 0.02, 0.15, file_requests=500) is None
    assert C.first_round_tail(run, 4, 0.02, 0.15, file_requests=200)["share"] == 0.02
    # none: one client; a first round under 1% of the measured (4 of 500); a tail of 1.4x only
    assert C.first_round_tail(run, 1) is None
    assert C.first_round_tail(SimpleNamespace(ttft_s=np.array([1.0] * 4 + [0.1] * 496)), 4) is None
    assert C.first_round_tail(SimpleNamespace(ttft_s=np.array([0.14] * 4 + [0.1] * 96)), 4) is None
