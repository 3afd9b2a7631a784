"""Steps 4-6 for one candidate (GPU x weight precision x KV precision) of one tier.

The guide's memory floor, the TP/PP/EP layout, the vLLM engine profile (how many p95-context sequences
one replica holds) and the roofline prediction (TTFT, ITL) checked against the SLO, with the formulas
metrics/memory.json states once. Pure: the model and GPU come from the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipeline import io, memory, parallelism, quantization, roofline
from pipeline.candidate_targets import Target
from pipeline.catalog import GPU, Model


@dataclass
class Settings:
    """The params sections the memory stage reads, validated."""

    memory: dict[str, Any]
    lora: dict[str, Any]
    engine: memory.EngineSettings
    parallelism: dict[str, Any]
    efficiency: roofline.Efficiency
    slo: dict[str, Any]

    @classmethod
    def from_params(cls, sections: dict[str, dict[str, Any]]) -> Settings:
        """From the validated params sections (memory, lora, engine, parallelism, roofline, slo)."""
        return cls(
            memory=sections["memory"],
            lora=sections["lora"],
            engine=memory.EngineSettings.from_params(sections["engine"]),
            parallelism=sections["parallelism"],
            efficiency=roofline.Efficiency.from_params(sections["roofline"]),
            slo=sections["slo"],
        )


@dataclass
class Candidate:
    """One evaluated candidate: the metrics entry plus its predicted curve."""

    id: str
    entry: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)
    allowed: bool = True


def candidate_id(tier: str, gpu: str, weights: str, kv: str) -> str:
    """The candidate's id in metrics/memory.json: `<tier>/<gpu>/w-<weights>/kv-<kv>`."""
    return f"{tier}/{gpu}/w-{weights}/kv-{kv}"


def evaluate(
    model: Model,
    gpu: GPU,
    weights: str,
    kv: str,
    target: Target,
    settings: Settings,
    tp: int | None = None,
    detail: bool = True,
) -> Candidate:
    """Floor, layout, engine profile and roofline for one candidate; `tp` forces a TP degree.

    `detail=False` leaves out the per-candidate formula strings (metrics/memory.json states them once).
    """
    cid = candidate_id(target.tier, gpu.name, weights, kv)
    compat = quantization.check(gpu, weights, kv)
    reasons = list(compat.reasons)
    shape = memory.kv_shape(model, kv)
    seq_bytes = shape.bytes_per_sequence(target.context_tokens)
    m = settings.memory
    lora_cfg = settings.lora
    lora_gb = 0.0
    if lora_cfg["max_adapters"]:
        lora_gb = (
            lora_cfg["max_adapters"]
            * memory.lora_adapter_bytes(model, lora_cfg["rank"], lora_cfg["targets"])
            / memory.GB
        )
    floor = memory.memory_floor(
        model.total_params,
        weights,
        seq_bytes,
        target.concurrency,
        gpu.memory_gb,
        activation_frac=m["activation_frac"],
        overhead_frac=m["overhead_frac"],
        overhead_gb=m["overhead_gb"],
        lora_gb=lora_gb,
        headroom=m["headroom"],
        weight_alignment_tax=m["weight_alignment_tax"],
    )
    entry: dict[str, Any] = {
        "tier": target.tier,
        "model": model.name,
        "gpu": gpu.name,
        "weights": weights,
        "kv": kv,
        "compute": compat.compute,
        "concurrency_p95": target.concurrency,
        "context_tokens_p95": target.context_tokens,
        **{k: getattr(floor, k) for k in memory.FLOOR_KEYS},
        "kv_bytes_per_token": shape.bytes_per_token_at(target.context_tokens),
        "kv_bytes_per_token_full_layers": shape.all_layers_bytes_per_token,
        "tp": None,
        "pp": None,
        "ep": None,
        "max_concurrency_per_replica": 0,
        "replicas_for_p95_concurrency": None,
        "gpus_for_p95_concurrency": None,
        "predicted_ttft_ms": None,
        "predicted_itl_ms": None,
        "fits": False,
        "meets_slo": False,
        "reasons": reasons,
        "formula": floor.formula,
    }
    if not detail:
        entry.pop("formula")
    if not compat.allowed:
        return Candidate(cid, entry, allowed=False)
    pcie, nvlink = settings.parallelism["allreduce_pcie"], settings.parallelism["allreduce_nvlink"]

    def profile(tp_: int, pp_: int) -> memory.EngineProfile:
        ep_ = parallelism.expert_parallel(model, tp_)
        return memory.engine_profile(model, gpu, weights, kv, tp_, pp_, ep_, target.context_tokens, settings.engine)

    if tp is not None:
        problem = parallelism.tp_problem(model, tp)
        if problem:
            reasons.append(problem)
            return Candidate(cid, entry)
        overhead, fabric = parallelism.allreduce_overhead(gpu, tp, pcie, nvlink)
        ep = parallelism.expert_parallel(model, tp)
        layout: parallelism.Parallelism | str = parallelism.Parallelism(tp, 1, ep, tp, overhead, fabric, ())
    else:
        layout = parallelism.choose(
            model,
            gpu,
            floor.min_gpus,
            lambda t, p: profile(t, p).fits,
            settings.parallelism["max_tp"],
            pcie,
            nvlink,
        )
    if isinstance(layout, str):
        reasons.append(layout)
        return Candidate(cid, entry)
    overhead, fabric = layout.allreduce_overhead, layout.fabric
    reasons.extend(layout.flags)
    eng = profile(layout.tp, layout.pp)
    eng_dict = eng.as_dict()
    if not detail:
        eng_dict.pop("formula")
    entry.update(
        tp=layout.tp, pp=layout.pp, ep=layout.ep, gpus_per_replica=layout.tp * layout.pp, engine=io.rounded(eng_dict)
    )
    if not eng.fits:
        reasons.append(
            f"one replica of TP {layout.tp} leaves {eng.kv_cache_gib:.1f} GiB per GPU for KV: not one sequence of "
            f"{target.context_tokens:,.0f} tokens fits"
        )
        return Candidate(cid, entry)
    replicas = math.ceil(target.concurrency / eng.max_concurrency_per_replica)
    entry.update(
        fits=True,
        max_concurrency_per_replica=eng.max_concurrency_per_replica,
        replicas_for_p95_concurrency=replicas,
        gpus_for_p95_concurrency=replicas * layout.tp * layout.pp,
    )
    rf = roofline.Roofline(
        model, gpu, weights, kv, compat.compute, layout.tp, layout.pp, layout.ep, overhead, settings.efficiency
    )
    at = min(target.concurrency, eng.max_concurrency_per_replica)
    point = rf.point(at, target.input_tokens, target.context_tokens, target.output_tokens)
    ttft_slo = settings.slo["ttft_p99_ms"]
    itl_slo = settings.slo["itl_p99_ms"]
    meets_ttft = point["ttft_ms"] <= ttft_slo
    meets_itl = itl_slo is None or point["itl_ms"] <= itl_slo
    if not meets_ttft:
        reasons.append(f"predicted TTFT {point['ttft_ms']:,.0f} ms > SLO {ttft_slo:,.0f} ms even without queueing")
    if not meets_itl:
        reasons.append(f"predicted ITL {point['itl_ms']:,.1f} ms at {at:,.0f} concurrent > SLO {itl_slo:,.0f} ms")
    entry.update(
        predicted_ttft_ms=point["ttft_ms"],
        predicted_itl_ms=point["itl_ms"],
        predicted_at_concurrency=at,
        meets_slo=bool(meets_ttft and meets_itl),
        roofline={
            "compute_dtype": compat.compute,
            "ridge_flops_per_byte": rf.ridge,
            "prefill_ms_p95_input": rf.prefill_s(target.input_tokens) * 1e3,
            "decode_step_ms_batch1": rf.decode_step_s(1, target.context_tokens) * 1e3,
            "decode_bound_at_concurrency": point["decode_bound"],
            "allreduce_overhead": overhead,
            "fabric": fabric,
        },
    )
    curve = rf.curve(
        eng.max_concurrency_per_replica,
        target.input_tokens,
        target.context_tokens,
        target.output_tokens,
        extra=(round(at),),
    )
    return Candidate(cid, entry, curve)


FORMULAS = {
    "weights_gb": "params x bytes per weight (fp32 4, bf16 2, fp8/int8 1, int4/fp4 0.5) x (1 + memory.weight_alignment_tax)",
    "kv_gb": "KV bytes per sequence at the p95 context x p95 concurrency (full layers grow, sliding layers stop at the window)",
    "activations_gb": "memory.activation_frac x 16-bit weight size",
    "overhead_gb": "memory.overhead_frac x VRAM per GPU x min_gpus (or memory.overhead_gb)",
    "min_gpus": "ceil((weights + kv + activations + lora) / (VRAM x (1 - overhead_frac)))",
    "gpus_with_headroom": "the same with the total x (1 + memory.headroom)",
    "max_concurrency_per_replica": "vLLM KV blocks per replica / blocks per p95-context sequence (engine profile)",
    "predicted_ttft_ms": "roofline prefill of the p95 prompt + one decode step, no queueing",
    "predicted_itl_ms": "roofline decode step at min(p95 concurrency, max_concurrency_per_replica)",
}
