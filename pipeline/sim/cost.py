"""Step 7b: the iteration-time model of a continuous-batching engine (method.md 7b).

One engine iteration takes

    t = b0 + b1*F/P + b2*W/B + b3*K/B + b4*n + b5*A            (all b >= 0)

- F: FLOPs of the iteration per GPU (linear layers for every scheduled token, plus causal
  attention over each token's context; sliding-window layers capped at the window);
- P: peak FLOPS of the compute dtype on one GPU;
- W: weight bytes read per GPU (MoE: the dense part always, the routed experts by the share
  a batch of `tokens` touches, 1 - (1 - k/E)^tokens);
- K: KV bytes attention reads per GPU (every sequence in the batch reads its whole context);
- B: HBM bandwidth per GPU;
- n: sequences in the batch;
- A: TP all-reduce seconds: 2 all-reduces per layer, each moving 2(TP-1)/TP x hidden x 2 B
  per token over the link (per direction: half the datasheet figure), plus a per-call latency.

The physics (F, P, W, K, B, A) come from the model config, the GPU and the deployment: the
`StepCost` constants. The coefficients b come from calibration (pipeline/sim/calibrate.py);
the uncalibrated prior is the roofline's efficiencies (basis `roofline`): b0 = 0,
b1 = 1 / prefill MFU, b2 = b3 = 1 / bandwidth efficiency, b4 = 0, b5 = 1.

PP: one iteration passes every stage in turn, so the iteration time is the sum over stages;
the constants describe the whole layer stack split over the TP group only.

The packed constant vector (`StepCost.packed()`) and `step_time` are what the numba engine
calls once per iteration; `StepCost.terms` is the same arithmetic in numpy for calibration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numba import njit

from pipeline.catalog import GPU, Model
from pipeline.memory import engine_weight_bytes, kv_shape, routed_expert_bytes

TERMS = ("fixed_s", "flops", "weight_bytes", "kv_bytes", "seqs", "allreduce")
"""The six terms of the iteration time, in the order of the coefficient vector b."""

N_CONST = 14
"""Length of the physics part of the packed vector; b0..b5 follow it."""

# Per-call all-reduce latency priors (s): NVLink-class fabric vs PCIe. Physics inputs, not fitted
# coefficients (b5 scales the whole all-reduce term). NCCL small-message latency on 8x H100 NVLink is
# ~10-20 us per all-reduce, PCIe Gen4/5 ~25-40 us (NCCL tests, nccl-tests all_reduce_perf).
ALLREDUCE_LATENCY_S = {"fast": 12e-6, "pcie": 30e-6}
FAST_FABRICS = ("nvlink", "infinity-fabric", "nvlink-bridge")
BIG_WINDOW = 1 << 40


@dataclass(frozen=True)
class Coefficients:
    """b0..b5 of the iteration time, with where they came from."""

    b: tuple[float, float, float, float, float, float]
    basis: str = "roofline"  # roofline | calibrated | transferred
    source: str = "prior: roofline efficiencies"

    def as_dict(self) -> dict[str, Any]:
        return {"b": dict(zip(TERMS, self.b, strict=True)), "basis": self.basis, "source": self.source}

    @classmethod
    def prior(cls, prefill_mfu: float = 0.45, bandwidth_efficiency: float = 0.8) -> Coefficients:
        """The uncalibrated roofline: b1 = 1/MFU, b2 = b3 = 1/bandwidth efficiency, b5 = 1."""
        return cls((0.0, 1 / prefill_mfu, 1 / bandwidth_efficiency, 1 / bandwidth_efficiency, 0.0, 1.0))


@dataclass(frozen=True)
class StepCost:
    """The physics of one deployment's iteration, per GPU of the TP group (SI units: FLOPs, bytes, s)."""

    linear_flops_per_token: float  # 2 x active params / TP
    attn_flops_full_per_pair: float  # FLOPs per (token, context token) pair over the full-attention layers / TP
    attn_flops_sliding_per_pair: float  # the same over the sliding-window layers / TP
    peak_flops: float  # per GPU at the compute dtype
    dense_weight_bytes: float  # read every iteration, per GPU
    routed_weight_bytes: float  # routed MoE experts per GPU (0 for dense models)
    expert_share: float  # experts_per_token / num_experts (0 for dense)
    kv_full_bytes_per_token: float  # per GPU, the growing (full-attention) layers
    kv_sliding_bytes_per_token: float  # per GPU, the window-capped layers
    hbm_bw: float  # bytes/s per GPU
    allreduce_bytes_per_token: float  # bytes over the link per scheduled token (all layers, ring factor)
    link_bw: float  # bytes/s per GPU and direction on the TP fabric (half the datasheet's bidirectional figure)
    allreduce_latency_s: float  # per iteration: calls x per-call latency (0 at TP 1)
    window: int  # sliding window in tokens (BIG_WINDOW when none)
    coeffs: Coefficients = field(default_factory=Coefficients.prior)
    deployment: str = ""

    def with_coeffs(self, coeffs: Coefficients) -> StepCost:
        return replace(self, coeffs=coeffs)

    def packed(self) -> np.ndarray:
        """The float64 vector `step_time` reads: N_CONST physics constants, then b0..b5."""
        phys = [
            self.linear_flops_per_token,
            self.attn_flops_full_per_pair,
            self.attn_flops_sliding_per_pair,
            self.peak_flops,
            self.dense_weight_bytes,
            self.routed_weight_bytes,
            self.expert_share,
            self.kv_full_bytes_per_token,
            self.kv_sliding_bytes_per_token,
            self.hbm_bw,
            self.allreduce_bytes_per_token,
            self.link_bw,
            self.allreduce_latency_s,
            float(self.window),
        ]
        return np.asarray(phys + list(self.coeffs.b), dtype=np.float64)

    def terms(
        self,
        tokens: np.ndarray | float,
        attn_pairs: np.ndarray | float,
        attn_pairs_windowed: np.ndarray | float,
        kv_tokens: np.ndarray | float,
        kv_tokens_windowed: np.ndarray | float,
        seqs: np.ndarray | float,
    ) -> np.ndarray:
        """The six terms (before b) of iterations described by their aggregates; shape (..., 6).

        tokens: tokens scheduled (prefill chunk tokens + one per decoding sequence);
        attn_pairs: sum over scheduled tokens of the context each attends to (itself included);
        attn_pairs_windowed: the same with each context capped at the window;
        kv_tokens: sum over the batch's sequences of the context whose KV is read;
        kv_tokens_windowed: the same capped at the window; seqs: sequences in the batch.
        """
        t, pairs, pairs_w, kv_t, kv_w, n = np.broadcast_arrays(
            *(
                np.asarray(x, dtype=np.float64)
                for x in (tokens, attn_pairs, attn_pairs_windowed, kv_tokens, kv_tokens_windowed, seqs)
            )
        )
        flops = (
            self.linear_flops_per_token * t
            + self.attn_flops_full_per_pair * pairs
            + self.attn_flops_sliding_per_pair * pairs_w
        )
        touched = np.where(t > 0, 1.0 - (1.0 - self.expert_share) ** t, 0.0) if self.expert_share > 0 else 0.0 * t
        weights = self.dense_weight_bytes + self.routed_weight_bytes * touched
        kv = self.kv_full_bytes_per_token * kv_t + self.kv_sliding_bytes_per_token * kv_w
        if self.link_bw > 0:
            allreduce = self.allreduce_bytes_per_token * t / self.link_bw + self.allreduce_latency_s
        else:
            allreduce = 0.0 * t
        cols = [np.ones_like(t), flops / self.peak_flops, weights / self.hbm_bw, kv / self.hbm_bw, n, allreduce]
        return np.stack(cols, axis=-1)

    def step_s(self, *aggregates: np.ndarray | float) -> np.ndarray:
        """Iteration seconds = terms . b (same arguments as `terms`)."""
        return self.terms(*aggregates) @ np.asarray(self.coeffs.b)

    def decode_step_s(self, batch: float, context: float) -> float:
        """One decode iteration of `batch` sequences at `context` tokens each (the ITL of a steady batch)."""
        w = min(context, self.window)
        return float(self.step_s(batch, batch * context, batch * w, batch * context, batch * w, batch))

    def prefill_s(self, input_tokens: int, chunk: int) -> float:
        """One prompt prefilled alone in chunks of `chunk` tokens: the sum of its iterations (TTFT at no load)."""
        total, start = 0.0, 0
        while start < input_tokens:
            c = min(chunk, input_tokens - start)
            full, win = pair_sums(start, c, self.window)
            end = start + c
            total += float(self.step_s(c, full, win, end, min(end, self.window), 1))
            start = end
        return total

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["coeffs"] = self.coeffs.as_dict()
        return d


def step_cost(
    model: Model,
    gpu: GPU,
    weight_dtype: str,
    kv_dtype: str,
    compute_dtype: str,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    coeffs: Coefficients | None = None,
) -> StepCost:
    """The physics constants of one deployment (model x GPU x dtypes x TP/PP/EP)."""
    width = (
        model.heads * (model.qk_nope_head_dim + model.qk_rope_head_dim + model.v_head_dim) / 2
        if model.is_mla
        else (model.heads * model.head_dim)
    )
    full = model.layer_kinds.count("full")
    sliding = model.layer_kinds.count("sliding")
    # QK^T and PV: 2 matmuls x 2 FLOPs per multiply-add x width per (token, context token) pair and layer.
    attn_full = 4.0 * width * full / tp
    attn_sliding = 4.0 * width * sliding / tp
    weights = engine_weight_bytes(model, weight_dtype, tp, pp, ep) * pp
    routed = 0.0
    share = 0.0
    if model.is_moe and model.num_experts:
        routed = routed_expert_bytes(model, weight_dtype, tp, pp, ep) * pp  # the share a batch touches varies
        weights -= routed
        share = model.experts_per_token / model.num_experts
    shape = kv_shape(model, kv_dtype, tp, 1)
    fast = gpu.interconnect in FAST_FABRICS and tp <= gpu.nvlink_domain
    link_gbs = gpu.interconnect_bw_gbs if fast else gpu.host_bw_gbs
    if tp > 1:
        ring = 2.0 * (tp - 1) / tp
        ar_bytes = 2 * model.layers * model.hidden * 2.0 * ring
        ar_latency = 2 * model.layers * ALLREDUCE_LATENCY_S["fast" if fast else "pcie"]
        link = link_gbs * 1e9 / 2  # datasheet NVLink/PCIe figures are both directions; a ring step uses one
    else:
        ar_bytes, ar_latency, link = 0.0, 0.0, 0.0
    return StepCost(
        linear_flops_per_token=2.0 * model.active_params / tp,
        attn_flops_full_per_pair=attn_full,
        attn_flops_sliding_per_pair=attn_sliding,
        peak_flops=gpu.peak(compute_dtype),
        dense_weight_bytes=weights,
        routed_weight_bytes=routed,
        expert_share=share,
        kv_full_bytes_per_token=shape.growing_bytes_per_token,
        kv_sliding_bytes_per_token=shape.sliding_bytes_per_token,
        hbm_bw=gpu.memory_bw_tbs * 1e12,
        allreduce_bytes_per_token=ar_bytes,
        link_bw=link,
        allreduce_latency_s=ar_latency,
        window=int(model.sliding_window) if model.sliding_window else BIG_WINDOW,
        coeffs=coeffs or Coefficients.prior(),
        deployment=f"{model.name} on {tp * pp}x {gpu.name} TP{tp} PP{pp} {weight_dtype}/{kv_dtype}",
    )


def pair_sums(start: int, chunk: int, window: int) -> tuple[float, float]:
    """Attention pairs of tokens start+1..start+chunk (token i attends to i tokens): full and window-capped."""
    return pair_sums_kernel(float(start), float(chunk), float(window))


@njit(cache=True)
def pair_sums_kernel(start: float, chunk: float, window: float) -> tuple[float, float]:
    """`pair_sums` for numba kernels (float arguments): the engine calls it once per prefill chunk."""
    end = start + chunk
    full = chunk * start + chunk * (chunk + 1.0) / 2.0
    if end <= window:
        return full, full
    if start >= window:
        return full, chunk * window
    below = window - start  # tokens start+1..window attend to their own position
    capped = below * start + below * (below + 1.0) / 2.0 + (chunk - below) * window
    return full, capped


@njit(cache=True)
def step_time(
    c: np.ndarray,
    tokens: float,
    attn_pairs: float,
    attn_pairs_windowed: float,
    kv_tokens: float,
    kv_tokens_windowed: float,
    seqs: float,
) -> float:
    """Iteration seconds from the packed vector `c` (StepCost.packed) and the iteration's aggregates."""
    flops = c[0] * tokens + c[1] * attn_pairs + c[2] * attn_pairs_windowed
    touched = 0.0
    if c[6] > 0.0 and tokens > 0.0:
        touched = 1.0 - (1.0 - c[6]) ** tokens
    weights = c[4] + c[5] * touched
    kv = c[7] * kv_tokens + c[8] * kv_tokens_windowed
    allreduce = 0.0
    if c[11] > 0.0:
        allreduce = c[10] * tokens / c[11] + c[12]
    b = N_CONST
    return (
        c[b]
        + c[b + 1] * flops / c[3]
        + c[b + 2] * weights / c[9]
        + c[b + 3] * kv / c[9]
        + c[b + 4] * seqs
        + c[b + 5] * allreduce
    )


def for_deployment(
    model: Model, gpu: GPU, weights: str, kv: str, tp: int, pp: int = 1, coeffs: Coefficients | None = None
) -> StepCost | str:
    """The step cost of a stated deployment (a manifest), or why the hardware rules refuse it."""
    from pipeline import parallelism, quantization

    problem = parallelism.tp_problem(model, tp)  # vLLM refuses a TP that does not divide the heads
    if problem is not None:
        return problem
    compat = quantization.check(gpu, weights, kv)
    if not compat.allowed:
        return "; ".join(compat.reasons)
    ep = parallelism.expert_parallel(model, tp)
    return step_cost(model, gpu, weights, kv, compat.compute, tp, pp, ep, coeffs)
