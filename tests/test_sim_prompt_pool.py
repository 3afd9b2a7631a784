"""The finite prompt pool of inference-perf's shared_prefix workload (pipeline/sim/calibrate.py PROMPT_POOL,
pool_trace): groups x users prompts cycled, cold at a run's first stage, resident in the server's prefix cache in
its later stages. Every expected value is worked by hand in the comments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.sim import calibrate as C
from tests.conftest import ROOT, calibration_level, toy_step_cost

level = calibration_level  # tests/conftest.py: a measured open-loop level (rate 2, 547/50 tokens), fields overridable
toy = toy_step_cost  # t = 10 ms + 1 ms per scheduled token

NOTES = (
    "inference-perf 'general' profile: shared_prefix data, system prompt 100 + question 447 tokens,\n  output 248 "
    "(ignore_eos), 9 system prompts x\n  5 users, multi-turn chat True;"
)
BLIS_7B = ROOT / "benchmarks" / "fidelity" / "measured" / "blis_llama-2-7b_1xh100_tp1"


def test_the_prompt_pool_is_read_from_the_notes():
    # "9 system prompts x 5 users", folded across lines as the manifests write it; users unstated -> 0
    assert C.shared_prefix_workload(NOTES) == (100, 9, 5)
    assert C.shared_prefix_workload("shared_prefix data, system prompt 150 tokens, 10 system prompts x") == (150, 10, 0)
    assert C.shared_prefix_workload("random dataset") is None
    assert C.shared_prefix(NOTES) == (100, 9)


def test_the_stage_number_is_read_from_the_file_name():
    assert C.inference_perf_stage("a/b/stage_1_lifecycle_metrics.json") == 1
    assert C.inference_perf_stage("stage_0_lifecycle_metrics.json") == 0
    assert C.inference_perf_stage("a/stage_1_summary.json") is None


def pool_level(**over):
    # 2 groups x 2 users = 4 prompts, a 32-token system prompt, 65-token prompts (4 whole blocks below the last
    # token), one output token, 6 requests at 0.01 req/s (gaps of ~100 s, far longer than any prefill here)
    base = dict(
        prefix_tokens=32,
        prefix_groups=2,
        pool_users=2,
        input_lens=np.full(8, 65, np.int64),
        output_lens=np.full(8, 1, np.int64),
        requests=6,
        load=0.01,
        rps=0.01,
    )
    base.update(over)
    return level(**base)


def test_pool_lengths_are_evenly_spaced_quantiles():
    # 8 lengths 10..80, a pool of 4: sorted positions (k + 0.5) x 8 / 4 = 1, 3, 5, 7 -> 20, 40, 60, 80 (shuffled)
    lv = pool_level(input_lens=np.arange(10, 90, 10, dtype=np.int64))
    assert lv.pool_prompts() == 4
    assert sorted(lv.pool_lengths().tolist()) == [20, 40, 60, 80]
    assert level(prefix_tokens=32, prefix_groups=2).pool_prompts() == 0  # no users stated: no finite pool


def test_pool_trace_shares_the_system_prompt_blocks_by_hand():
    # prompts 0, 1, 2, 3, 0, 1 in turn; prompts 0 and 1 are group 0, prompts 2 and 3 group 1. Each prompt: 4
    # blocks; blocks 1-2 (32 // 16) are the group's (chain = group), blocks 3-4 the prompt's own (chain = 2 + p);
    # value = chain x 2^24 + block number
    kind, tr = C.replay_trace(pool_level())
    assert kind == "open" and tr.hash_block_tokens == 16
    assert tr.hash_offsets.tolist() == [0, 4, 8, 12, 16, 20, 24]
    m = 1 << 24
    p0, p1 = [1, 2, 2 * m + 3, 2 * m + 4], [1, 2, 3 * m + 3, 3 * m + 4]
    p2, p3 = [m + 1, m + 2, 4 * m + 3, 4 * m + 4], [m + 1, m + 2, 5 * m + 3, 5 * m + 4]
    assert tr.hash_values.tolist() == p0 + p1 + p2 + p3 + p0 + p1
    assert tr.input_tokens.tolist() == [65] * 6


def test_a_cold_pool_prefills_each_prompt_once_by_hand():
    # toy 10 ms + 1 ms/token. Request 0 (group 0's first): 65 tokens cold, 0.075 s. Request 1 (group 0's other
    # user): its 32-token system prompt cached, 33 computed, 0.043 s. Requests 2 and 3 (group 1) the same: 0.075,
    # 0.043. Requests 4 and 5 repeat prompts 0 and 1: 64 tokens cached, 1 computed, 0.011 s.
    kind, tr = C.replay_trace(pool_level())
    res = C.simulate(toy(), C.EngineLimits(), kind, tr)
    assert res.ttft_s.tolist() == pytest.approx([0.075, 0.043, 0.075, 0.043, 0.011, 0.011], abs=1e-12)


def test_a_later_stage_finds_every_prompt_resident_by_hand():
    # stage >= 1 of the run (warm_prompts): every prompt's 4 blocks resident before the first arrival, so every
    # request computes its last token only: 0.010 + 0.001 = 0.011 s
    kind, tr = C.replay_trace(pool_level(warm_prompts=True))
    assert kind == "open_warm"
    res = C.simulate(toy(), C.EngineLimits(), kind, tr)
    assert res.ttft_s.tolist() == pytest.approx([0.011] * 6, abs=1e-12)


def test_cached_tokens_of_a_cold_pool_by_hand():
    # 8 grid lengths of 547 tokens, 100-token prefix (-> 96), pool 2 x 2 = 4 prompts, 16 measured requests: the
    # 2 groups' first requests are 2/16 of the run -> round(8 x 2 / 16) = 1 grid entry with nothing cached; the
    # pool's first pass 4/16 -> round(8 x 4 / 16) = 2 entries, the second with the prefix (96); the repeats every
    # whole block below the last token: 546 // 16 x 16 = 544
    lv = level(prefix_tokens=100, prefix_groups=2, pool_users=2, requests=16)
    assert lv.cached_tokens(16).tolist() == [0, 96] + [544] * 6
    lv.warm_prompts = True  # a later stage: every entry's whole blocks
    assert lv.cached_tokens(16).tolist() == [544] * 8


def test_the_blis_stages_are_read_as_one_runs_pool(monkeypatch):
    # the Llama-2-7B codegen profile: 11 system prompts x 4 users = 44 prompts; stage 0 cold, stage 1 resident;
    # the cold stage replayed whole (3000 requests: its 44 cold prompts' share sets the TTFT tail)
    monkeypatch.setattr(C, "PROMPT_POOL", True)
    got = {
        Path(lv.name.split(" (")[0]).parent.name + "/" + Path(lv.name.split(" (")[0]).name: lv
        for ds in C.deployment_sets([BLIS_7B])
        for lv in ds.levels
    }
    cold = got["llama-2-7b_1xh100_tp1_codegen/stage_0_lifecycle_metrics.json"]
    warm = got["llama-2-7b_1xh100_tp1_codegen/stage_1_lifecycle_metrics.json"]
    assert (cold.pool_prompts(), cold.warm_prompts, warm.pool_prompts(), warm.warm_prompts) == (44, False, 44, True)
    assert any("44 prompts cycled" in n for n in cold.notes)
    kind, tr = C.replay_trace(cold)
    assert (kind, len(tr)) == ("open", 3000)
    monkeypatch.setattr(C, "PROMPT_POOL", False)  # off (the default): the stated shared prefix only, every stage cold
    off = [lv for ds in C.deployment_sets([BLIS_7B]) for lv in ds.levels]
    assert not any(lv.pool_prompts() or lv.warm_prompts for lv in off)
    assert all(C.replay_trace(lv)[1].hash_block_tokens == 100 for lv in off if "codegen" in lv.name)


def test_the_prompt_pool_is_off_by_default():
    # on the fidelity figures it degrades the dev leave-one-deployment-out errors (calibrate.PROMPT_POOL docstring)
    assert C.PROMPT_POOL is False
