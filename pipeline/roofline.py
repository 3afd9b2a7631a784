"""Step 6b: the roofline sanity check. Predicted TTFT and ITL from peak FLOPS and HBM bandwidth.

Prefill is compute-bound: 2 x active params x tokens FLOPs (+ causal attention, 2 x layers x
S x min(S, window) x heads x head_dim). A decode step moves the weights it touches plus the
batch's KV once: step_s = max(bytes / (bw x eff_bw), flops / (peak x eff_mfu)) x (1 + TP
all-reduce share). Efficiencies are params (method.md: bandwidth 0.8, prefill MFU 0.45,
decode MFU 0.30). No queueing: this is the floor a measured curve (step 7) must sit above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipeline.catalog import GPU, Model
from pipeline.memory import engine_weight_bytes, kv_shape


@dataclass(frozen=True)
class Efficiency:
    """Achievable fractions of peak (params.yaml roofline section)."""

    bandwidth: float = 0.8
    prefill_mfu: float = 0.45
    decode_mfu: float = 0.30

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> Efficiency:
        return cls(p["bandwidth_efficiency"], p["prefill_mfu"], p["decode_mfu"])


@dataclass(frozen=True)
class Roofline:
    """Everything the roofline needs about one deployment (per GPU figures)."""

    model: Model
    gpu: GPU
    weight_dtype: str
    kv_dtype: str
    compute_dtype: str
    tp: int
    pp: int
    ep: int
    allreduce: float
    eff: Efficiency

    @property
    def peak_flops(self) -> float:
        return self.gpu.peak(self.compute_dtype)

    @property
    def bandwidth(self) -> float:
        return self.gpu.memory_bw_tbs * 1e12

    @property
    def ridge(self) -> float:
        """FLOPs per byte at which the chip turns from bandwidth- to compute-bound."""
        return self.peak_flops / self.bandwidth

    def _attention_flops(self, tokens: float, context: float) -> float:
        """QK^T and PV FLOPs for `tokens` new tokens attending to `context` tokens each (all layers)."""
        m = self.model
        width = (
            m.heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) / 2 if m.is_mla else m.heads * m.head_dim
        )
        full = m.layer_kinds.count("full")
        sliding = m.layer_kinds.count("sliding")
        ctx_sliding = min(context, m.sliding_window) if m.sliding_window else context
        return 4 * tokens * width * (full * context + sliding * ctx_sliding)

    def prefill_s(self, input_tokens: float) -> float:
        """Time to prefill one prompt alone: max(compute, reading the weights once), with TP all-reduce."""
        m = self.model
        flops = 2 * m.active_params * input_tokens + self._attention_flops(input_tokens, input_tokens / 2)
        compute = flops / (self.tp * self.peak_flops * self.eff.prefill_mfu)  # PP stages run one after another
        weights = engine_weight_bytes(m, self.weight_dtype, self.tp, 1, self.ep)
        memory = weights / (self.bandwidth * self.eff.bandwidth)
        return max(compute, memory) * (1 + self.allreduce)

    def decode_parts(self, batch: float, context: float) -> dict[str, float]:
        """Bytes and FLOPs per GPU for one decode step of `batch` sequences at `context` tokens."""
        m = self.model
        p = m.params
        weights = engine_weight_bytes(m, self.weight_dtype, self.tp, self.pp, self.ep) * self.pp
        if m.is_moe and batch >= 1:
            touched = 1 - (1 - m.experts_per_token / m.num_experts) ** batch
            routed_only = weights - _without_routed(m, self.weight_dtype, self.tp, self.ep)
            weights = weights - routed_only * (1 - touched)
        kv = kv_shape(m, self.kv_dtype, self.tp, 1).bytes_per_sequence(context) * batch
        flops = (2 * p.active * batch + self._attention_flops(batch, context)) / self.tp
        return {"weight_bytes": weights, "kv_bytes": kv, "flops": flops}

    def decode_step_s(self, batch: float, context: float) -> float:
        """One decode step (= ITL) for `batch` sequences at `context` tokens each."""
        parts = self.decode_parts(batch, context)
        memory = (parts["weight_bytes"] + parts["kv_bytes"]) / (self.bandwidth * self.eff.bandwidth)
        compute = parts["flops"] / (self.peak_flops * self.eff.decode_mfu)
        return max(memory, compute) * (1 + self.allreduce)

    def point(
        self, concurrency: float, input_tokens: float, context_tokens: float, output_tokens: float
    ) -> dict[str, float]:
        """Predicted TTFT (no queueing), ITL, E2E and throughput at one concurrency."""
        itl = self.decode_step_s(concurrency, context_tokens)
        ttft = self.prefill_s(input_tokens) + itl
        e2e = ttft + output_tokens * itl
        parts = self.decode_parts(concurrency, context_tokens)
        intensity = parts["flops"] / max(parts["weight_bytes"] + parts["kv_bytes"], 1.0)
        return {
            "concurrency": concurrency,
            "ttft_ms": ttft * 1e3,
            "itl_ms": itl * 1e3,
            "e2e_s": e2e,
            "rps": concurrency / e2e,
            "output_tokens_per_s": concurrency / itl,
            "decode_intensity_flops_per_byte": intensity,
            "decode_bound": "compute"
            if intensity * self.eff.decode_mfu > self.ridge * self.eff.bandwidth
            else "bandwidth",
        }

    def curve(
        self,
        max_concurrency: int,
        input_tokens: float,
        context_tokens: float,
        output_tokens: float,
        extra: tuple[int, ...] = (),
    ) -> list[dict[str, float]]:
        """The predicted curve at 1, 2, 4, ... up to max_concurrency (plus any extra levels)."""
        levels = {1}
        c = 1
        while c * 2 <= max_concurrency:
            c *= 2
            levels.add(c)
        levels.update(x for x in (max_concurrency, *extra) if 1 <= x <= max(max_concurrency, 1))
        return [self.point(c, input_tokens, context_tokens, output_tokens) for c in sorted(levels)]


def for_deployment(
    model: Model,
    gpu: GPU,
    weights: str,
    kv: str,
    tp: int,
    pp: int = 1,
    eff: Efficiency | None = None,
    pcie: dict[int, float] | None = None,
    nvlink: dict[int, float] | None = None,
) -> Roofline | str:
    """The roofline of one stated deployment (a benchmark manifest), or why it cannot run (the hardware rules)."""
    from pipeline import parallelism, quantization

    compat = quantization.check(gpu, weights, kv)
    if not compat.allowed:
        return "; ".join(compat.reasons)
    overhead, _ = parallelism.allreduce_overhead(gpu, tp, pcie, nvlink)
    ep = parallelism.expert_parallel(model, tp)
    return Roofline(model, gpu, weights, kv, compat.compute, tp, pp, ep, overhead, eff or Efficiency())


def _without_routed(model: Model, weight_dtype: str, tp: int, ep: int) -> float:
    """Per-GPU weight bytes with the routed experts removed (to scale them by the share a batch touches)."""
    stripped = replace(model, params=replace(model.params, routed_experts=0, routed_experts_active=0))
    return engine_weight_bytes(stripped, weight_dtype, tp, 1, ep)
