"""The iteration-time model (pipeline/sim/cost.py) against figures worked by hand from config.json and datasheets.

Llama-3.1-8B (config.json): 32 layers, hidden 4096, 32 heads, 8 KV heads, head_dim 128, MLP 14336,
vocab 128256, untied embeddings. Parameters: attention 32 x (2 x 4096^2 + 2 x 4096 x 1024) =
1,342,177,280; MLP 32 x 3 x 4096 x 14336 = 5,637,144,576; embedding = lm_head = 128256 x 4096 =
525,336,576; norms 65 x 4096 = 266,240; total 8,030,261,248 (vLLM logs 14.96 GiB of bf16 weights:
8,030,261,248 x 2 B / 2^30 = 14.96). H100-SXM: 989.4 dense bf16 TFLOPS, 3.35 TB/s, NVLink 900 GB/s.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import catalog
from pipeline.sim import cost

PARAMS_8B = 8_030_261_248
KV_8B_BF16 = 2 * 32 * 8 * 128 * 2  # 131,072 B per token
ATTN_PAIR_8B = 4 * 32 * 128 * 32  # QK^T + PV, 2 FLOPs per MAC, 32 layers: 524,288 FLOPs per (token, context) pair
PEAK = 989.4e12
BW = 3.35e12


@pytest.fixture(scope="module")
def h100() -> catalog.GPU:
    return catalog.load_gpus()["H100-SXM"]


def test_llama8b_constants_by_hand(h100):
    m = catalog.load_model("Llama-3.1-8B")
    s = cost.for_deployment(m, h100, "bf16", "bf16", 1)
    assert s.linear_flops_per_token == 2 * PARAMS_8B
    assert s.attn_flops_full_per_pair == ATTN_PAIR_8B
    assert s.attn_flops_sliding_per_pair == 0
    assert s.dense_weight_bytes == PARAMS_8B * 2
    assert s.routed_weight_bytes == 0 and s.expert_share == 0
    assert s.kv_full_bytes_per_token == KV_8B_BF16
    assert s.peak_flops == PEAK and s.hbm_bw == BW
    assert s.allreduce_bytes_per_token == 0 and s.allreduce_latency_s == 0 and s.link_bw == 0
    assert s.window == cost.BIG_WINDOW


def additive(s: cost.StepCost) -> cost.StepCost:
    """The same deployment at the roofline prior in the additive form (method.md 7b as first written)."""
    return s.with_coeffs(cost.Coefficients.prior(form="additive"))


def test_prior_decode_step_by_hand(h100):
    """One sequence at 1000 tokens: weights + KV over 0.8 x bandwidth, FLOPs over 0.45 x peak, summed (additive);
    the overlap-phase form (the default) keeps the larger side of each phase: weights (5.99273e-3 s, against
    3.6074e-5 s of linear FLOPs) and KV (4.8907e-5 s, against 1.1776e-6 s of attention FLOPs)."""
    default = cost.for_deployment(catalog.load_model("Llama-3.1-8B"), h100, "bf16", "bf16", 1)
    assert not isinstance(default, str)
    s = additive(default)
    flops = 2 * PARAMS_8B + ATTN_PAIR_8B * 1000  # 16,584,810,496
    expected = flops / PEAK / 0.45 + (PARAMS_8B * 2) / BW / 0.8 + KV_8B_BF16 * 1000 / BW / 0.8
    assert s.decode_step_s(1, 1000) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(
        5.99273e-3 + 3.7250e-5 + 4.8907e-5, rel=1e-4
    )  # weights + FLOPs + KV, worked on paper
    # A second sequence adds its token's FLOPs and its KV, not the weights again.
    extra = (2 * PARAMS_8B + ATTN_PAIR_8B * 1000) / PEAK / 0.45 + KV_8B_BF16 * 1000 / BW / 0.8
    assert s.decode_step_s(2, 1000) - s.decode_step_s(1, 1000) == pytest.approx(extra, rel=1e-9)
    if cost.STEP_FORM == "overlap-phase":
        assert default.decode_step_s(1, 1000) == pytest.approx(
            (PARAMS_8B * 2) / BW / 0.8 + KV_8B_BF16 * 1000 / BW / 0.8, rel=1e-12
        )
        assert default.decode_step_s(1, 1000) == pytest.approx(5.99273e-3 + 4.8907e-5, rel=1e-4)


def test_numba_step_time_equals_numpy_terms(h100):
    for name, tp, w, kv in (
        ("Llama-3.1-70B", 4, "fp8", "fp8"),
        ("gpt-oss-120b", 1, "mxfp4", "bf16"),
        ("Gemma-2-9B", 1, "bf16", "bf16"),
    ):
        s = cost.for_deployment(catalog.load_model(name), h100, w, kv, tp)
        for form in cost.STEP_FORMS:
            s = s.with_coeffs(cost.Coefficients((1e-3, 1.7, 1.2, 1.4, 2e-5, 1.1), "calibrated", "test", form))
            packed = s.packed()
            for agg in (
                (1, 1000, 1000, 1000, 1000, 1),
                (300, 5e5, 4e5, 2e6, 1e6, 40),
                (8192, 3e7, 1e7, 8192, 4096, 1),
            ):
                assert cost.step_time(packed, *map(float, agg)) == pytest.approx(float(s.step_s(*agg)), rel=1e-12)


def test_terms_vectorized_shape_and_coefficients(h100):
    s = cost.for_deployment(catalog.load_model("Llama-3.1-8B"), h100, "bf16", "bf16", 1)
    t = s.terms(np.array([1.0, 2.0]), np.array([10.0, 20.0]), np.array([10.0, 20.0]), 5.0, 5.0, np.array([1.0, 2.0]))
    assert t.shape == (2, len(cost.TERMS))
    assert list(t[:, 0]) == [1.0, 1.0]  # the fixed term is one per iteration (b0 in seconds)
    assert list(t[:, 4]) == [1.0, 2.0]  # sequences
    assert cost.Coefficients.prior(0.5, 0.8).b == (0.0, 2.0, 1.25, 1.25, 0.0, 1.0)
    assert cost.Coefficients.prior().form == cost.STEP_FORM


def test_pair_sums_by_hand():
    # tokens 1..10 attend to 1..10 tokens: 55 pairs; with a window of 4: 1+2+3+4 + 6 x 4 = 34.
    assert cost.pair_sums(0, 10, 4) == (55.0, 34.0)
    assert cost.pair_sums(2, 3, 100) == (12.0, 12.0)  # positions 3, 4, 5
    assert cost.pair_sums(10, 2, 4) == (23.0, 8.0)  # past the window every token sees 4
    assert cost.pair_sums(0, 0, 4) == (0.0, 0.0)


def test_prefill_in_chunks_sums_its_iterations(h100):
    s = additive(cost.for_deployment(catalog.load_model("Llama-3.1-8B"), h100, "bf16", "bf16", 1))
    whole = s.prefill_s(3000, 8192)
    chunks = s.prefill_s(3000, 1024)
    # Three chunks read the weights three times (memory-bound part x3); the FLOPs are the same.
    weights = PARAMS_8B * 2 / BW / 0.8
    assert chunks - whole == pytest.approx(2 * weights + 0.0, rel=0.05)
    flops = 2 * PARAMS_8B * 3000 + ATTN_PAIR_8B * 3000 * 3001 / 2
    kv = KV_8B_BF16 * 3000
    assert whole == pytest.approx(flops / PEAK / 0.45 + weights + kv / BW / 0.8, rel=1e-12)


def test_moe_touched_share_and_tp_allreduce(h100):
    m = catalog.load_model("gpt-oss-120b")
    s = cost.for_deployment(m, h100, "mxfp4", "bf16", 1)
    assert s.expert_share == pytest.approx(m.experts_per_token / m.num_experts)
    # One token touches k of E experts; many tokens touch almost all of them.
    one = s.terms(1, 1, 1, 1, 1, 1)[2] * BW
    many = s.terms(4096, 1, 1, 1, 1, 1)[2] * BW
    assert one == pytest.approx(s.dense_weight_bytes + s.routed_weight_bytes * s.expert_share, rel=1e-9)
    assert many == pytest.approx(s.dense_weight_bytes + s.routed_weight_bytes, rel=1e-6)
    s70 = cost.for_deployment(catalog.load_model("Llama-3.1-70B"), h100, "fp8", "fp8", 4)
    # 2 all-reduces per layer x 80 layers x hidden 8192 x 2 B x ring 2(4-1)/4 = 3,932,160 B per token.
    assert s70.allreduce_bytes_per_token == 2 * 80 * 8192 * 2 * 1.5
    assert s70.link_bw == 450e9  # NVLink 4: 900 GB/s both directions, 450 each way
    assert s70.allreduce_latency_s == pytest.approx(2 * 80 * cost.ALLREDUCE_LATENCY_S["fast"])


def test_hardware_refusal_is_a_reason():
    a100 = catalog.load_gpus()["A100-80GB"]
    why = cost.for_deployment(catalog.load_model("Llama-3.1-8B"), a100, "fp8", "bf16", 1)
    assert isinstance(why, str) and "FP8" in why
