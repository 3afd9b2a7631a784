"""The continuous-batching engine (pipeline/sim/engine.py) on cases worked by hand.

Most cases use a toy step cost whose iteration time is 10 ms + 1 ms per scheduled token
(b0 = 0.01 s, b1 = 1, 1 FLOP per token over a 1000 FLOP/s peak, every other term 0), so
each figure below is arithmetic on the scheduling rules of method.md 7b.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import catalog
from pipeline.errors import InputError
from pipeline.sim import cost, engine
from pipeline.sim.engine import EngineConfig, Trace, simulate_closed, simulate_open, simulate_open_stream
from tests.conftest import toy_step_cost

toy = toy_step_cost  # t = fixed_s + per_token_s x tokens (tests/conftest.py)


@pytest.fixture(scope="module")
def llama70b() -> cost.StepCost:
    gpus = catalog.load_gpus()
    s = cost.for_deployment(catalog.load_model("Llama-3.1-70B"), gpus["H100-SXM"], "fp8", "fp8", 4)
    assert not isinstance(s, str)
    return s


def one(arrival: float, inp: int, out: int) -> Trace:
    return Trace(np.array([arrival]), np.array([inp], np.int64), np.array([out], np.int64))


def test_one_request_alone_by_hand():
    # 1000 prompt tokens in chunks of 512: 512 + 488 -> (0.01 + 0.512) + (0.01 + 0.488) = 1.020 s to the first
    # token; then 4 decode iterations of one token, 0.011 s each: E2E 1.064 s, every gap 0.011 s.
    r = simulate_open(toy(), EngineConfig(max_num_batched_tokens=512), one(0.0, 1000, 5))
    assert r.ttft_s[0] == pytest.approx(1.020, abs=1e-12)
    assert r.e2e_s[0] == pytest.approx(1.064, abs=1e-12)
    assert r.itl_gaps_s is not None and len(r.itl_gaps_s) == 4
    assert np.allclose(r.itl_gaps_s, 0.011, atol=1e-12)
    assert r.itl_mean_s[0] == pytest.approx(0.011, abs=1e-12)
    assert r.iterations == 6 and r.preemptions_total == 0
    assert r.busy_s == pytest.approx(1.064, abs=1e-12)


def test_one_request_ttft_is_its_prefill_iterations_real_cost(llama70b):
    # the engine's TTFT of a lone request = the cost model's own sum over its prefill chunks (attention included)
    for inp, chunk in ((1000, 8192), (5000, 2048), (3000, 512)):
        r = simulate_open(llama70b, EngineConfig(max_num_batched_tokens=chunk), one(3.0, inp, 1))
        assert r.ttft_s[0] == pytest.approx(llama70b.prefill_s(inp, chunk), rel=1e-12)
        assert r.e2e_s[0] == r.ttft_s[0]
        assert math.isnan(r.itl_mean_s[0])


def test_arrival_time_and_rate_scale():
    # two lone requests 10 s apart; at rate scale 2 they arrive 5 s apart and still never overlap
    tr = Trace(np.array([0.0, 10.0]), np.array([100, 100]), np.array([2, 2]))
    for scale in (1.0, 2.0):
        r = simulate_open(toy(), EngineConfig(), tr, rate_scale=scale)
        assert np.allclose(r.ttft_s, 0.11) and np.allclose(r.e2e_s, 0.121)
        assert np.allclose(r.arrival_s, [0.0, 10.0 / scale])
        assert r.finish_s[1] == pytest.approx(10.0 / scale + 0.121)


def prefix_pair(second_hashes: list[int], caching: bool = True) -> np.ndarray:
    # A (t=0) and B (t=10, after A is done): 1100 prompt tokens, 2 hash blocks of 512 each, 1 output token
    tr = Trace(
        np.array([0.0, 10.0]),
        np.array([1100, 1100]),
        np.array([1, 1]),
        np.array([0, 2, 4]),
        np.array([7, 8, *second_hashes]),
        512,
    )
    return simulate_open(toy(), EngineConfig(enable_prefix_caching=caching), tr).ttft_s


def test_two_requests_sharing_a_prefix_by_hand():
    # A computes all 1100 tokens: 0.01 + 1.100 = 1.110 s. B's two blocks [7, 8] are resident: it reuses
    # 2 x 512 = 1024 tokens (a whole number of 16-token blocks, below its 1099-token cap) and computes 76:
    # 0.01 + 0.076 = 0.086 s.
    assert prefix_pair([7, 8]) == pytest.approx([1.110, 0.086], abs=1e-12)
    # only the first block matches: 512 reused, 588 computed -> 0.598 s
    assert prefix_pair([7, 5]) == pytest.approx([1.110, 0.598], abs=1e-12)
    # the chain breaks at the first block: nothing is reused even though block 8 is resident
    assert prefix_pair([9, 8]) == pytest.approx([1.110, 1.110], abs=1e-12)
    # prefix caching off: nothing is reused
    assert prefix_pair([7, 8], caching=False) == pytest.approx([1.110, 1.110], abs=1e-12)


def test_prefix_reuse_is_capped_below_the_whole_prompt():
    # B's prompt is exactly its two cached blocks (1024 tokens): vLLM still recomputes the last token, so the
    # reuse is 1023 rounded down to 16-token blocks = 1008; 16 tokens computed -> 0.026 s
    tr = Trace(
        np.array([0.0, 10.0]),
        np.array([1100, 1024]),
        np.array([1, 1]),
        np.array([0, 2, 4]),
        np.array([7, 8, 7, 8]),
        512,
    )
    assert simulate_open(toy(), EngineConfig(), tr).ttft_s == pytest.approx([1.110, 0.026], abs=1e-12)


def test_lru_evicts_the_least_recently_used_prefix():
    # KV capacity = 64 blocks x 16 = 1024 tokens = 2 hash blocks of 512. A [1, 2] then C [3, 4] fill it (A's
    # blocks are evicted); B [1, 2] arrives last and finds nothing: full 1100-token prefill.
    tr = Trace(
        np.array([0.0, 10.0, 20.0]),
        np.array([1000, 1000, 1000]),
        np.array([1, 1, 1]),
        np.array([0, 2, 4, 6]),
        np.array([1, 2, 3, 4, 1, 2]),
        512,
    )
    r = simulate_open(toy(), EngineConfig(kv_blocks=64), tr)
    assert r.ttft_s == pytest.approx([1.010, 1.010, 1.010], abs=1e-12)
    # with room for 4 hash blocks, B reuses both of A's: 1000 - 1024 -> capped at 999 -> 992 reused, 8 computed
    r = simulate_open(toy(), EngineConfig(kv_blocks=128), tr)
    assert r.ttft_s == pytest.approx([1.010, 1.010, 0.018], abs=1e-12)


def test_preemption_when_blocks_run_out_by_hand():
    # A and B: 20 prompt tokens, 30 output tokens, both at t = 0; 16-token blocks, 6 blocks in all.
    # Iteration 1: both prefill (2 blocks each, 4 used), 40 tokens: 0.050 s; first tokens at 0.050.
    # Decodes 1..28 run both (2 tokens, 0.012 s each); decode 13 (context 32 -> 33) takes a 3rd block each
    # (6 used). Decode 29: A's context reaches 49 and needs a 4th block, none is free: the most recently admitted
    # running request, B, is preempted (its 3 blocks freed); A decodes alone (0.011 s) and emits its 30th
    # token: E2E_A = 0.050 + 28 x 0.012 + 0.011 = 0.397 s. B (29 tokens generated) needs 49 tokens = 4 blocks
    # to recompute, and only 2 are free while A runs: it waits, then recomputes 20 + 29 = 49 tokens
    # (0.059 s), which emits its 30th and last token: E2E_B = 0.397 + 0.059 = 0.456 s.
    tr = Trace(np.array([0.0, 0.0]), np.array([20, 20]), np.array([30, 30]))
    r = simulate_open(toy(), EngineConfig(block_size=16, kv_blocks=6), tr)
    assert list(r.preemptions) == [0, 1] and r.preemptions_total == 1
    assert r.ttft_s == pytest.approx([0.050, 0.050], abs=1e-12)
    assert r.e2e_s == pytest.approx([0.397, 0.456], abs=1e-12)
    assert r.iterations == 1 + 29 + 1
    # B's last gap spans the preemption: 0.456 - (0.050 + 28 x 0.012) = 0.070 s
    assert r.itl_gaps_s is not None and max(r.itl_gaps_s) == pytest.approx(0.070, abs=1e-12)
    # with 8 blocks nothing is preempted: 0.050 + 29 x 0.012 = 0.398 s each
    r = simulate_open(toy(), EngineConfig(block_size=16, kv_blocks=8), tr)
    assert r.preemptions_total == 0 and r.e2e_s == pytest.approx([0.398, 0.398], abs=1e-12)


def test_request_longer_than_the_kv_cache_is_rejected():
    tr = Trace(np.array([0.0, 1.0]), np.array([20, 200]), np.array([5, 5]))
    r = simulate_open(toy(), EngineConfig(block_size=16, kv_blocks=4), tr)  # 204 tokens need 13 blocks > 4
    assert r.rejected == 1 and r.requests == 1 and len(r.ttft_s) == 1
    assert r.ttft_s[0] == pytest.approx(0.030)


def test_max_num_seqs_limits_the_batch():
    # 3 requests at t=0, max_num_seqs 2: the third waits for the first finish.
    # iter 1: A, B prefill 10 tokens each (0.030); iter 2: decodes (0.012) -> A, B done at 0.042 (2 tokens);
    # iter 3: C prefill 0.020 -> first token at 0.062, iter 4 decode 0.011 -> done 0.073
    tr = Trace(np.zeros(3), np.array([10, 10, 10]), np.array([2, 2, 2]))
    r = simulate_open(toy(), EngineConfig(max_num_seqs=2), tr)
    assert r.ttft_s == pytest.approx([0.030, 0.030, 0.062], abs=1e-12)
    assert r.e2e_s == pytest.approx([0.042, 0.042, 0.073], abs=1e-12)


def test_decode_first_then_chunked_prefill():
    # A (100 tokens, 3 out) at 0; B (300 tokens, 1 out) arrives at 0.05, during A's first iteration; budget 64.
    # it 1 [0, 0.074]: A's chunk of 64. it 2: A's last 36 + B's first 28 (FCFS fills the budget): 0.074 -> A's
    # first token at 0.148. it 3, 4: A's decode (first) + 63 of B: 0.074 each -> A's 3rd token, done at 0.296.
    # B has 28 + 63 + 63 = 154 of 300: chunks 64, 64, 18 -> 0.074 + 0.074 + 0.028 -> B done at 0.472.
    tr = Trace(np.array([0.0, 0.05]), np.array([100, 300]), np.array([3, 1]))
    r = simulate_open(toy(), EngineConfig(max_num_batched_tokens=64), tr)
    assert r.ttft_s[0] == pytest.approx(0.148, abs=1e-12)
    assert r.e2e_s[0] == pytest.approx(0.296, abs=1e-12)
    assert r.finish_s[1] == pytest.approx(0.472, abs=1e-12)
    assert r.iterations == 7


def test_closed_loop_n1_equals_the_single_request(llama70b):
    cfg = EngineConfig(max_num_batched_tokens=2048)
    alone = simulate_open(llama70b, cfg, one(0.0, 3000, 40))
    r = simulate_closed(llama70b, cfg, np.array([3000]), np.array([40]), concurrency=1, requests=5, warmup=2)
    assert r.requests == 5
    assert np.allclose(r.ttft_s, alone.ttft_s[0], rtol=1e-12)
    assert np.allclose(r.e2e_s, alone.e2e_s[0], rtol=1e-12)
    # back to back: throughput = 1 / E2E
    assert r.requests / r.duration_s == pytest.approx(1 / alone.e2e_s[0], rel=1e-9)
    assert r.summary()["rps"] == pytest.approx(1 / alone.e2e_s[0], rel=1e-6)


@pytest.mark.parametrize("concurrency", [1, 3, 16, 64])
def test_littles_law_on_every_closed_loop_run(llama70b, concurrency):
    # concurrency = throughput x mean E2E on the measured window. Without warm-up the N first requests start
    # together at t = 0 and every slot holds a measured request until the last measured one is released; after
    # that (within one E2E of the end) a slot may hold an unmeasured cool-down request, so
    # 0 <= N - sum(E2E)/T <= N x max(E2E) / T.
    ins = np.array([300, 2000, 800, 4000, 120])
    outs = np.array([50, 300, 120, 20, 400])
    cfg = EngineConfig(kv_blocks=20_000)
    r = simulate_closed(llama70b, cfg, ins, outs, concurrency=concurrency, requests=60 * concurrency + 40)
    T = r.duration_s
    littles = r.requests / T * float(np.mean(r.e2e_s))
    assert littles == pytest.approx(r.e2e_s.sum() / T, rel=1e-9)
    assert 0 <= concurrency - littles <= concurrency * float(np.max(r.e2e_s)) / T + 1e-9
    assert abs(littles / concurrency - 1) < 0.05


def test_littles_law_with_preemptions(llama70b):
    cfg = EngineConfig(kv_blocks=600)  # 9,600 tokens for 16 sequences of up to ~4,400: preemptions happen
    ins, outs = np.array([2000, 300, 1500]), np.array([400, 200, 300])
    r = simulate_closed(llama70b, cfg, ins, outs, concurrency=16, requests=800)
    assert r.preemptions_total > 0
    littles = r.requests / r.duration_s * float(np.mean(r.e2e_s))
    assert 0 <= 16 - littles <= 16 * float(np.max(r.e2e_s)) / r.duration_s + 1e-9


def test_closed_loop_sampled_lengths_depend_on_the_seed_only(llama70b):
    ins, outs = np.arange(100, 2100, 100), np.arange(10, 210, 10)
    a = simulate_closed(llama70b, EngineConfig(), ins, outs, 8, requests=100, sample=True, seed=3)
    b = simulate_closed(llama70b, EngineConfig(), ins, outs, 8, requests=100, sample=True, seed=3)
    c = simulate_closed(llama70b, EngineConfig(), ins, outs, 8, requests=100, sample=True, seed=4)
    assert a.e2e_s.tobytes() == b.e2e_s.tobytes()
    assert a.e2e_s.tobytes() != c.e2e_s.tobytes()


def busy_trace(n: int = 3000, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(0.05, n))
    inp = rng.integers(50, 6000, n)
    out = rng.integers(1, 600, n)
    # shared system prompts: a request's first 0-3 hash blocks come from 5 prefixes
    lens = inp // 512
    offs = np.concatenate([[0], np.cumsum(lens)])
    vals = np.concatenate(
        [
            np.where(np.arange(k) < 2, rng.integers(0, 5) * 1000 + np.arange(k), 10**6 + i * 100 + np.arange(k))
            for i, k in enumerate(lens)
        ]
    ).astype(np.int64)
    return Trace(arr - arr[0], inp, out, offs, vals, 512)


def test_determinism_same_bytes(llama70b):
    tr = busy_trace()
    cfg = EngineConfig(kv_blocks=3000)
    a = simulate_open(llama70b, cfg, tr)
    b = simulate_open(llama70b, cfg, tr)
    assert a.preemptions_total > 0  # the case exercises preemption and prefix reuse
    for k in ("ttft_s", "e2e_s", "itl_mean_s", "finish_s", "preemptions", "itl_gaps_s"):
        assert getattr(a, k).tobytes() == getattr(b, k).tobytes(), k


def test_streamed_chunks_give_the_same_result(llama70b):
    # the in-flight carry between chunks must not change a single iteration
    tr = busy_trace(1500)
    cfg = EngineConfig(kv_blocks=3000)
    whole = simulate_open(llama70b, cfg, tr)
    chunks = (tr.slice(s, min(s + 97, len(tr))) for s in range(0, len(tr), 97))
    streamed = simulate_open_stream(llama70b, cfg, chunks, keep="arrays", n=len(tr), known_hashes=len(tr.hash_values))
    for k in ("ttft_s", "e2e_s", "itl_mean_s", "finish_s", "preemptions"):
        assert getattr(whole, k).tobytes() == getattr(streamed, k).tobytes(), k
    assert whole.iterations == streamed.iterations


def test_histogram_mode_percentiles_within_one_bin(llama70b):
    tr = busy_trace(1500)
    cfg = EngineConfig(kv_blocks=3000)
    exact = simulate_open(llama70b, cfg, tr).summary()
    hist = simulate_open(llama70b, cfg, tr, keep="histogram").summary()
    for key in ("ttft_ms", "e2e_ms", "itl_ms", "tpot_ms"):
        for q in ("p50", "p95", "p99"):
            assert hist[key][q] == pytest.approx(exact[key][q], rel=2**-8 + 1e-3), (key, q)
        assert hist[key]["mean"] == pytest.approx(exact[key]["mean"], rel=1e-9)
    assert hist["requests"] == exact["requests"] and hist["preemptions"] == exact["preemptions"]


def test_hist_quantile_by_hand():
    counts = np.zeros(engine.HIST_BINS, np.int64)
    counts[engine._hbin(1.0)] = 1
    counts[engine._hbin(3.0)] = 1
    edges = engine.hist_edges()
    assert engine._hbin(1.0) == -engine.HIST_MIN_EXP * engine.HIST_SUB  # 1.0 = 2^0 starts its octave
    assert edges[engine._hbin(1.0)] == 1.0
    assert edges[engine._hbin(3.0)] <= 3.0 < edges[engine._hbin(3.0) + 1]
    assert engine.hist_quantile(counts, 0.0) == pytest.approx(1.0, rel=2**-8)
    assert engine.hist_quantile(counts, 1.0) == pytest.approx(3.0, rel=2**-8)


def test_bad_input():
    c = toy()
    tr = one(0.0, 10, 2)
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="rate-scale"):
            simulate_open(c, EngineConfig(), tr, rate_scale=scale)
    with pytest.raises(InputError, match="concurrency"):
        simulate_closed(c, EngineConfig(), np.array([10]), np.array([2]), concurrency=0)
    with pytest.raises(InputError, match="not sorted"):
        simulate_open(c, EngineConfig(), Trace(np.array([1.0, 0.0]), np.array([5, 5]), np.array([1, 1])))
    with pytest.raises(InputError, match="output_tokens"):
        simulate_open(c, EngineConfig(), Trace(np.array([0.0]), np.array([5]), np.array([0])))
    with pytest.raises(InputError, match="no requests"):
        simulate_open(c, EngineConfig(), Trace(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)))
    with pytest.raises(InputError, match="kv_blocks"):
        simulate_open(c, EngineConfig(kv_blocks=0), tr)
    with pytest.raises(InputError, match="KV blocks"):
        simulate_closed(c, EngineConfig(kv_blocks=1), np.array([100]), np.array([2]), concurrency=1)


def _two_requests() -> Trace:
    # A: 10 prompt tokens, 3 output tokens at t = 0; B: 10 prompt tokens, 2 output tokens at t = 0.025
    return Trace(np.array([0.0, 0.025]), np.array([10, 10], np.int64), np.array([3, 2], np.int64))


def test_mixed_prefill_vllm_by_hand():
    # vLLM V1 (mixed_prefill, the default). toy: 10 ms + 1 ms per token.
    # it1: A's prefill (10 tok) 0.020 -> A tok1 at 0.020; it2: B not yet arrived, A decodes (1 tok) 0.011 -> 0.031;
    # it3: A decodes + B's prefill (11 tok) 0.021 -> 0.052: A's 3rd token (E2E 0.052), B's first (TTFT 0.027);
    # it4: B decodes 0.011 -> 0.063 (B's E2E 0.038).
    r = simulate_open(toy(), EngineConfig(), _two_requests())
    assert r.ttft_s == pytest.approx([0.020, 0.027], abs=1e-12)
    assert r.e2e_s == pytest.approx([0.052, 0.038], abs=1e-12)
    assert r.iterations == 4


def test_separate_prefill_sglang_by_hand():
    # SGLang default (mixed_prefill False): a prefill batch runs alone, first.
    # it1: A's prefill 0.020; it2: nothing to prefill, A decodes 0.011 -> 0.031; it3: B waits, so B's prefill runs
    # alone (10 tok) 0.020 -> 0.051 (B's TTFT 0.026) and A gets no token; it4: A and B decode (2 tok) 0.012 -> 0.063:
    # A's 3rd token (E2E 0.063, its gaps 0.011 and 0.032), B's 2nd (E2E 0.038).
    cfg = EngineConfig(mixed_prefill=False)
    r = simulate_open(toy(), cfg, _two_requests())
    assert r.ttft_s == pytest.approx([0.020, 0.026], abs=1e-12)
    assert r.e2e_s == pytest.approx([0.063, 0.038], abs=1e-12)
    assert r.itl_mean_s[0] == pytest.approx((0.011 + 0.032) / 2, abs=1e-12)
    assert r.iterations == 4
    # the fleet kernel honours the same knob: one replica behind any router is the lone engine
    from pipeline.sim.router import simulate_fleet

    f = simulate_fleet(toy(), cfg, _two_requests(), 1, "round-robin")
    assert f.result.e2e_s == pytest.approx([0.063, 0.038], abs=1e-12)


def test_separate_prefill_closed_loop_by_hand():
    # closed loop, 2 clients, every request 10 in / 2 out, SGLang scheduling: it1 prefills both (20 tok, 0.030);
    # it2 decodes both (2 tok, 0.012) -> both finish at 0.042 and are replaced; it3 prefills the two new ones
    # (0.030 -> 0.072); it4 decodes them (0.084). E2E 0.042 each; vLLM gives the same here (no overlap to mix).
    ins = np.full(4, 10, np.int64)
    outs = np.full(4, 2, np.int64)
    for mixed in (False, True):
        r = simulate_closed(toy(), EngineConfig(mixed_prefill=mixed), ins, outs, concurrency=2, requests=4)
        assert r.e2e_s == pytest.approx([0.042] * 4, abs=1e-12)
        assert r.ttft_s == pytest.approx([0.030] * 4, abs=1e-12)


# ------------------------------------------------------------------ a client with a concurrency cap (max_inflight)


def test_a_client_cap_of_one_sends_each_request_when_the_last_finishes_by_hand():
    # three requests of 100 prompt / 3 output tokens arrive at 0, 0.05 and 0.06 s; the client holds one at a time.
    # Alone, one takes prefill 0.01 + 0.100 = 0.110 s to its first token, then 2 decodes of 0.011 s: E2E 0.132 s.
    # Request 0 runs 0-0.132; request 1 waited at the client and is sent at 0.132 (its clock starts there), runs
    # to 0.264; request 2 is sent at 0.264. Each is measured as if alone: TTFT 0.110, E2E 0.132.
    tr = Trace(np.array([0.0, 0.05, 0.06]), np.array([100, 100, 100], np.int64), np.array([3, 3, 3], np.int64))
    r = simulate_open(toy(), EngineConfig(), tr, max_inflight=1)
    assert np.allclose(r.ttft_s, 0.110, atol=1e-12)
    assert np.allclose(r.e2e_s, 0.132, atol=1e-12)
    assert r.duration_s == pytest.approx(3 * 0.132, abs=1e-12)
    # without the cap, request 1 queues at the server from 0.05 s and its wait counts in its TTFT
    free = simulate_open(toy(), EngineConfig(), tr)
    assert free.ttft_s[1] > 0.110 + 0.05


def test_a_client_cap_a_request_that_finds_a_slot_free_keeps_its_arrival_time_by_hand():
    # cap 2, arrivals at 0 and 0.05 s: the second finds a slot free and is sent at once. It waits at the server for
    # the iteration under way (0.110 s, request 0's prefill) and then prefills: first token at 0.110 + 0.111
    # (its 100 tokens plus request 0's decode token in one iteration: 0.01 + 0.101) = 0.221 s, TTFT 0.171 s from its
    # own arrival, exactly as without a cap.
    tr = Trace(np.array([0.0, 0.05]), np.array([100, 100], np.int64), np.array([3, 3], np.int64))
    capped = simulate_open(toy(), EngineConfig(), tr, max_inflight=2)
    free = simulate_open(toy(), EngineConfig(), tr)
    assert capped.ttft_s[1] == pytest.approx(0.221 - 0.05, abs=1e-12)
    assert np.array_equal(capped.ttft_s, free.ttft_s) and np.array_equal(capped.e2e_s, free.e2e_s)


def test_a_client_that_falls_behind_holds_its_cap_in_flight_littles_law(llama70b):
    # 2000 requests offered at 200 req/s, far above what one engine serves, by a client of 64 slots: once it falls
    # behind the server holds 64 requests, so throughput x mean E2E = 64 (Little's law, to the ramp and drain), and
    # every TTFT is below that of the same arrivals sent without a limit, whose queue grows through the run
    rng = np.random.default_rng(3)
    n = 2000
    tr = Trace(np.cumsum(rng.exponential(1 / 200.0, n)), np.full(n, 300, np.int64), np.full(n, 100, np.int64))
    cfg = EngineConfig(max_num_seqs=32, max_num_batched_tokens=2048)
    r = simulate_open(llama70b, cfg, tr, max_inflight=64)
    rps = n / r.duration_s
    assert rps < 150  # the engine, not the client, sets the pace
    assert rps * float(np.mean(r.e2e_s)) == pytest.approx(64, rel=0.03)
    free = simulate_open(llama70b, cfg, tr)
    assert float(np.percentile(r.ttft_s, 99)) < 0.2 * float(np.percentile(free.ttft_s, 99))
    # a cap no arrival ever reaches changes nothing
    wide = simulate_open(llama70b, cfg, tr, max_inflight=n)
    assert np.array_equal(wide.ttft_s, free.ttft_s) and np.array_equal(wide.e2e_s, free.e2e_s)


def test_max_inflight_is_checked():
    tr = one(0.0, 10, 2)
    with pytest.raises(InputError, match="max_inflight"):
        simulate_open(toy(), EngineConfig(), tr, max_inflight=-1)
    with pytest.raises(InputError, match="max_inflight needs keep='arrays'"):
        simulate_open(toy(), EngineConfig(), tr, keep="histogram", max_inflight=2)


# ------------------------------------------------------------------------------ closed-loop start (CLOSED_STARTS)


def test_closed_loop_burst_keeps_equal_prompts_in_lockstep_by_hand():
    # t = 10 ms + 1 ms per token (toy). Burst, 4 clients of 100 in / 3 out: iteration 1 prefills all four
    # (400 tokens: 0.41 s, every first token), two decode iterations of 4 tokens (0.014 s each) finish all four at
    # 0.438 s, and the four replacements repeat it: every TTFT is 0.41 s, every E2E 0.438 s (a lone one: 0.11 s)
    ins, outs = np.array([100]), np.array([3])
    r = simulate_closed(toy(), EngineConfig(), ins, outs, concurrency=4, requests=12)
    assert np.allclose(r.ttft_s, 0.41, atol=1e-12) and np.allclose(r.e2e_s, 0.438, atol=1e-12)


def test_closed_loop_staggered_start_breaks_the_cohorts():
    ins, outs = np.array([100]), np.array([3])
    # N = 1: one client, nothing to stagger: the same run, byte for byte
    a = simulate_closed(toy(), EngineConfig(), ins, outs, concurrency=1, requests=20, start="burst")
    b = simulate_closed(toy(), EngineConfig(), ins, outs, concurrency=1, requests=20, start="staggered")
    assert a.ttft_s.tobytes() == b.ttft_s.tobytes() and a.e2e_s.tobytes() == b.e2e_s.tobytes()
    # N = 4: the clients' first sends 33 ms apart (a lone E2E 0.11 + 2 x 0.011 = 0.132 s, / 4): r0 prefills alone
    # in [0, 0.11); r1-r3 arrive during it and prefill together beside r0's decode (300 + 1 tokens: 0.311 s). From
    # then on a cohort of 3 and a lone one alternate: the lone prompt rides with the 3 decodes (103 tokens, TTFT
    # 0.113 s), the 3 with the lone one's decode (0.311 s). The 4 ramp requests are not measured. Staggering breaks
    # a cohort only where a prefill iteration is short against the clients' spacing (docs/engine_model.md 17)
    r = simulate_closed(toy(), EngineConfig(), ins, outs, concurrency=4, requests=40, start="staggered")
    assert r.requests == 40
    assert np.allclose(np.sort(r.ttft_s), np.repeat([0.113, 0.311], [10, 30]), atol=1e-12)
    # Little's law on the measured window: 0 <= N - sum(E2E) / T <= N x max(E2E) / T
    littles = float(r.e2e_s.sum()) / r.duration_s
    assert 0 <= 4 - littles <= 4 * float(np.max(r.e2e_s)) / r.duration_s + 1e-9
    with pytest.raises(InputError, match="start = 'ramp'"):
        simulate_closed(toy(), EngineConfig(), ins, outs, concurrency=4, start="ramp")
