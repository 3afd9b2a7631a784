"""Step 7b: the iteration-time model of a continuous-batching engine (method.md 7b).

One engine iteration takes, in the form the coefficients name (`STEP_FORMS`, default `STEP_FORM`),

    additive:       t = b0 + b1*F/P + b2*W/B + b3*K/B + b4*n + b5*A            (all b >= 0)
    overlap:        t = b0 + max(b1*F/P, b2*W/B + b3*K/B) + b4*n + b5*A
    overlap-phase:  t = b0 + max(b1*F_lin/P, b2*W/B) + max(b1*F_attn/P, b3*K/B) + b4*n + b5*A

(real kernels overlap their weight and KV reads with their FLOPs: a GEMM over a batch of tokens is bound by the
larger of the two, not their sum; F_lin = the linear layers' FLOPs, F_attn = attention's, F = F_lin + F_attn).

- F: FLOPs of the iteration per GPU (linear layers for every scheduled token, plus causal
  attention over each token's context; sliding-window layers capped at the window);
- P: peak FLOPS of the compute dtype on one GPU;
- W: weight bytes read per GPU (MoE: the dense part always, the routed experts by the share
  a batch of `tokens` touches, 1 - (1 - k/E)^tokens);
- K: KV bytes attention reads per GPU (every sequence in the batch reads its whole context);
- B: HBM bandwidth per GPU;
- n: sequences in the batch, each weighted by its vocabulary over REF_VOCAB (SEQ_TERM: the sampler's work per
  sequence is over its logits row);
- A: TP all-reduce seconds: 2 all-reduces per layer, each moving 2(TP-1)/TP x hidden x 2 B
  per token over the link (per direction: half the datasheet figure), plus a per-call latency.

The physics (F, P, W, K, B, A) come from the model config, the GPU and the deployment: the
`StepCost` constants. The coefficients b come from calibration (pipeline/sim/calibrate.py);
the uncalibrated prior is the roofline's efficiencies (basis `roofline`): b0 = 0,
b1 = 1 / prefill MFU, b2 = b3 = 1 / bandwidth efficiency, b4 = 0, b5 = 1.

PP: one iteration passes every stage in turn, so the iteration time is the sum over stages;
the constants describe the whole layer stack split over the TP group only.

The packed constant vector (`StepCost.packed()`: the physics, b0..b5, the form code) and `step_time` are what
the numba engine calls once per iteration; `StepCost.step_s` is the same arithmetic in numpy for calibration.
`StepCost.terms` gives the six raw terms (the additive form's columns); `StepCost.active_terms` the columns with
each max's losing side set to zero at given b, so that t = active_terms . b in every form (piecewise linear in b:
what calibration's NNLS fits, one active set at a time).
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

N_CONST = 15
"""Length of the physics part of the packed vector; b0..b5 follow it, then the form code (FORM_CODE)."""

STEP_FORMS = ("additive", "overlap", "overlap-phase")
"""How the FLOPs and the memory terms combine in one iteration:

- `additive` (method.md 7b as first written): b1 F/P + b2 W/B + b3 K/B, every term paid in turn;
- `overlap`: max(b1 F/P, b2 W/B + b3 K/B), the FLOPs overlapping the weight and KV reads (one roofline per
  iteration);
- `overlap-phase`: max(b1 F_lin/P, b2 W/B) + max(b1 F_attn/P, b3 K/B), a roofline per phase: the linear layers'
  GEMMs against their weight reads, attention against its KV reads (F = F_lin + F_attn).

b0, b4 n and b5 A are added in every form."""
FORM_CODE = {f: float(i) for i, f in enumerate(STEP_FORMS)}

STEP_FORM = "overlap-phase"
"""The form every new Coefficients takes unless it names one: the calibration fits and the prior use it.

Chosen on the dev deployments of benchmarks/fidelity.py only (never the holdout), by the sum over the six
LOLO/LODO target cells of median |error| / target, refinement and LOLO passes 60, cold LOLO starts: additive 9.25
(2 of 6 targets met), overlap 9.41 (2), overlap-phase 8.99 (3: LOLO mean ITL 10.0% -> 4.0%)."""

# Per-call all-reduce latency priors (s): NVLink-class fabric vs PCIe. Physics inputs, not fitted
# coefficients (b5 scales the whole all-reduce term). NCCL small-message latency on 8x H100 NVLink is
# ~10-20 us per all-reduce, PCIe Gen4/5 ~25-40 us (NCCL tests, nccl-tests all_reduce_perf).
ALLREDUCE_LATENCY_S = {"fast": 12e-6, "pcie": 30e-6}
FAST_FABRICS = ("nvlink", "infinity-fabric", "nvlink-bridge")
BIG_WINDOW = 1 << 40


def _default_form() -> str:
    return STEP_FORM


PRIOR_PREFILL_MFU = 0.45
"""params.yaml `roofline.prefill_mfu` default: the prior's b1 = 1 / this (pipeline/params.py Roofline)."""
PRIOR_BANDWIDTH_EFFICIENCY = 0.8
"""params.yaml `roofline.bandwidth_efficiency` default: the prior's b2 = b3 = 1 / this."""


@dataclass(frozen=True)
class Coefficients:
    """b0..b5 of the iteration time, with where they came from and the form they belong to (STEP_FORMS)."""

    b: tuple[float, float, float, float, float, float]
    basis: str = "roofline"  # roofline | calibrated | transferred
    source: str = "prior: roofline efficiencies"
    form: str = field(default_factory=_default_form)

    def __post_init__(self) -> None:
        if self.form not in FORM_CODE:
            raise ValueError(f"Coefficients.form = {self.form!r}; allowed: {', '.join(STEP_FORMS)}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "b": dict(zip(TERMS, self.b, strict=True)),
            "basis": self.basis,
            "source": self.source,
            "form": self.form,
        }

    @classmethod
    def prior(
        cls,
        prefill_mfu: float = PRIOR_PREFILL_MFU,
        bandwidth_efficiency: float = PRIOR_BANDWIDTH_EFFICIENCY,
        form: str | None = None,
    ) -> Coefficients:
        """The uncalibrated roofline: b1 = 1/MFU, b2 = b3 = 1/bandwidth efficiency, b5 = 1 (the efficiencies are
        params.yaml's `roofline` section where a caller passes them; `roofline_prior` reads them from a mapping)."""
        source = "prior: roofline efficiencies"
        if (prefill_mfu, bandwidth_efficiency) != (PRIOR_PREFILL_MFU, PRIOR_BANDWIDTH_EFFICIENCY):
            source += f" (prefill MFU {prefill_mfu:g}, bandwidth efficiency {bandwidth_efficiency:g})"
        return cls(
            (0.0, 1 / prefill_mfu, 1 / bandwidth_efficiency, 1 / bandwidth_efficiency, 0.0, 1.0),
            "roofline",
            source,
            form or STEP_FORM,
        )


def roofline_prior(roofline: Any = None) -> Coefficients:
    """Coefficients.prior from params.yaml's `roofline` section (a mapping or the pydantic section; None: the
    defaults): prefill_mfu and bandwidth_efficiency."""
    if roofline is None:
        return Coefficients.prior()

    def get(key: str, default: float) -> float:
        v = roofline.get(key, default) if isinstance(roofline, dict) else getattr(roofline, key, default)
        return float(default if v is None else v)

    return Coefficients.prior(
        get("prefill_mfu", PRIOR_PREFILL_MFU), get("bandwidth_efficiency", PRIOR_BANDWIDTH_EFFICIENCY)
    )


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
    seq_weight: float = 1.0  # what one sequence of the batch weighs in the per-sequence term (SEQ_TERM)
    coeffs: Coefficients = field(default_factory=Coefficients.prior)
    deployment: str = ""

    def with_coeffs(self, coeffs: Coefficients) -> StepCost:
        return replace(self, coeffs=coeffs)

    def packed(self) -> np.ndarray:
        """The float64 vector `step_time` reads: N_CONST physics constants, b0..b5, then the form code."""
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
            self.seq_weight,
            float(self.window),
        ]
        return np.asarray(phys + list(self.coeffs.b) + [FORM_CODE[self.coeffs.form]], dtype=np.float64)

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
        ones, lin, attn, weights, kv, n, allreduce = self._raw(
            tokens, attn_pairs, attn_pairs_windowed, kv_tokens, kv_tokens_windowed, seqs
        )
        return np.stack([ones, lin + attn, weights, kv, n, allreduce], axis=-1)

    def _raw(self, *aggregates: np.ndarray | float) -> tuple[np.ndarray, ...]:
        """The physics of iterations before b: 1, linear and attention FLOPs over peak, weight and KV bytes over
        the bandwidth (s), sequences, all-reduce seconds (broadcast arrays)."""
        t, pairs, pairs_w, kv_t, kv_w, n = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in aggregates))
        lin = self.linear_flops_per_token * t / self.peak_flops
        attn = (self.attn_flops_full_per_pair * pairs + self.attn_flops_sliding_per_pair * pairs_w) / self.peak_flops
        touched = np.where(t > 0, 1.0 - (1.0 - self.expert_share) ** t, 0.0) if self.expert_share > 0 else 0.0 * t
        weights = (self.dense_weight_bytes + self.routed_weight_bytes * touched) / self.hbm_bw
        kv = (self.kv_full_bytes_per_token * kv_t + self.kv_sliding_bytes_per_token * kv_w) / self.hbm_bw
        if self.link_bw > 0:
            allreduce = self.allreduce_bytes_per_token * t / self.link_bw + self.allreduce_latency_s
        else:
            allreduce = 0.0 * t
        return np.ones_like(t), lin, attn, weights, kv, n * self.seq_weight, allreduce

    def active_terms(
        self,
        tokens: np.ndarray | float,
        attn_pairs: np.ndarray | float,
        attn_pairs_windowed: np.ndarray | float,
        kv_tokens: np.ndarray | float,
        kv_tokens_windowed: np.ndarray | float,
        seqs: np.ndarray | float,
        b: Any = None,
        form: str | None = None,
    ) -> np.ndarray:
        """The six columns of `terms` with, in an overlap form, the side of each max that b does not make the
        larger set to zero, so that the iteration time is exactly active_terms . b (b: these coefficients by
        default; form: theirs). Additive: `terms` itself. Ties go to the FLOPs side."""
        form = form or self.coeffs.form
        bb = np.asarray(self.coeffs.b if b is None else b, dtype=np.float64)[:6]
        ones, lin, attn, weights, kv, n, allreduce = self._raw(
            tokens, attn_pairs, attn_pairs_windowed, kv_tokens, kv_tokens_windowed, seqs
        )
        zero = np.zeros_like(ones)
        if form == "additive":
            cols = [ones, lin + attn, weights, kv, n, allreduce]
        elif form == "overlap":
            compute = bb[1] * (lin + attn) >= bb[2] * weights + bb[3] * kv
            cols = [ones, np.where(compute, lin + attn, zero), np.where(compute, zero, weights)]
            cols += [np.where(compute, zero, kv), n, allreduce]
        elif form == "overlap-phase":
            lin_c = bb[1] * lin >= bb[2] * weights
            attn_c = bb[1] * attn >= bb[3] * kv
            flops = np.where(lin_c, lin, zero) + np.where(attn_c, attn, zero)
            cols = [ones, flops, np.where(lin_c, zero, weights), np.where(attn_c, zero, kv), n, allreduce]
        else:
            raise ValueError(f"form = {form!r}; allowed: {', '.join(STEP_FORMS)}")
        return np.stack(cols, axis=-1)

    def step_s(self, *aggregates: np.ndarray | float) -> np.ndarray:
        """Iteration seconds = active_terms . b (same arguments as `terms`), in the coefficients' form."""
        return self.active_terms(*aggregates) @ np.asarray(self.coeffs.b)

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
    roofline: Any = None,
) -> StepCost:
    """The physics constants of one deployment (model x GPU x dtypes x TP/PP/EP), with `coeffs`, else the roofline
    prior of params.yaml's `roofline` section when given (`roofline_prior`), else the default prior."""
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
        seq_weight=seq_weight(model),
        coeffs=coeffs or roofline_prior(roofline),
        deployment=f"{model.name} on {tp * pp}x {gpu.name} TP{tp} PP{pp} {weight_dtype}/{kv_dtype}",
    )


SEQ_TERMS = ("count", "vocab")
"""What one sequence of the batch weighs in the per-sequence term b4 n (`seq_weight`): "count", 1 each; "vocab",
its vocabulary over REF_VOCAB (the sampler's work per sequence is over its logits row: V1's sampler peaks at ~39 B
per sequence x vocabulary entry, pipeline/memory.py)."""

SEQ_TERM = "vocab"
"""The per-sequence weighting the step cost uses (SEQ_TERMS). Chosen on the dev deployments of
benchmarks/fidelity.py only (never the holdout): the refined fits' b4 split by vocabulary, 3.5e-5 to 8.6e-5 s per
sequence on the three 128k-152k-vocabulary models and 0 to 1.2e-5 s on the three 32k ones. Weighting by
vocabulary leaves every deployment's own fit the same in seconds per sequence (calibrate runs b4 in those units)
and changes only what the pool transfers: leave-one-deployment-out medians 3.8/29.0/47.3% -> 2.8/24.8/44.5%
(throughput/ITL/TTFT p99). `--ablate seq-vocab` in the benchmark switches it back to "count"."""

REF_VOCAB = 128256
"""The vocabulary at which a sequence weighs 1 in the "vocab" weighting (Llama 3's): b4 is seconds per sequence of a
128,256-entry vocabulary, the same number as before for Llama-3 models."""


def seq_weight(model: Model) -> float:
    """What one sequence of `model` weighs in the per-sequence term b4 n (SEQ_TERM)."""
    if SEQ_TERM not in SEQ_TERMS:
        raise ValueError(f"SEQ_TERM = {SEQ_TERM!r}; allowed: {', '.join(SEQ_TERMS)}")
    return model.vocab / REF_VOCAB if SEQ_TERM == "vocab" and model.vocab > 0 else 1.0


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
    """Iteration seconds from the packed vector `c` (StepCost.packed) and the iteration's aggregates, in the form
    its last entry codes (STEP_FORMS: 0 additive, 1 overlap, 2 overlap-phase), as StepCost.step_s computes it."""
    lin = c[0] * tokens
    attn = c[1] * attn_pairs + c[2] * attn_pairs_windowed
    touched = 0.0
    if c[6] > 0.0 and tokens > 0.0:
        touched = 1.0 - (1.0 - c[6]) ** tokens
    weights = c[4] + c[5] * touched
    kv = c[7] * kv_tokens + c[8] * kv_tokens_windowed
    allreduce = 0.0
    if c[11] > 0.0:
        allreduce = c[10] * tokens / c[11] + c[12]
    b = N_CONST
    form = c[b + 6]
    t_lin = c[b + 1] * lin / c[3]
    t_attn = c[b + 1] * attn / c[3]
    t_w = c[b + 2] * weights / c[9]
    t_kv = c[b + 3] * kv / c[9]
    if form == 0.0:
        core = t_lin + t_attn + t_w + t_kv
    elif form == 1.0:
        core = max(t_lin + t_attn, t_w + t_kv)
    else:
        core = max(t_lin, t_w) + max(t_attn, t_kv)
    return c[b] + core + c[b + 4] * seqs * c[13] + c[b + 5] * allreduce  # c[13]: seq_weight


def for_deployment(
    model: Model,
    gpu: GPU,
    weights: str,
    kv: str,
    tp: int,
    pp: int = 1,
    coeffs: Coefficients | None = None,
    roofline: Any = None,
) -> StepCost | str:
    """The step cost of a stated deployment (a manifest), or why the hardware rules refuse it. Without `coeffs` it
    carries the roofline prior: of `roofline` (params.yaml's section, a mapping or the pydantic model) when given,
    else the defaults (0.45 prefill MFU, 0.8 bandwidth efficiency)."""
    from pipeline import parallelism, quantization

    problem = parallelism.tp_problem(model, tp)  # vLLM refuses a TP that does not divide the heads
    if problem is not None:
        return problem
    compat = quantization.check(gpu, weights, kv)
    if not compat.allowed:
        return "; ".join(compat.reasons)
    ep = parallelism.expert_parallel(model, tp)
    return step_cost(model, gpu, weights, kv, compat.compute, tp, pp, ep, coeffs, roofline)
