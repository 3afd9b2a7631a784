"""Steps 2 and 4-6 together: every candidate (GPU x weight precision x KV precision) per tier.

For each one: the guide's memory floor, the TP/PP/EP layout, the vLLM engine profile (how many
p95-context sequences one replica holds) and the roofline prediction (TTFT, ITL) checked
against the SLO. The stage writes metrics/memory.json and the predicted curves that step 7
overlays on measured ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import catalog, io, memory, parallelism, quantization, roofline
from pipeline.catalog import GPU, Model
from pipeline.errors import InputError, ParamsError

QUALITY_ORDER = ("fp32", "bf16", "fp16", "fp8", "int8", "mxfp4", "fp4", "int4")


@dataclass(frozen=True)
class Target:
    """What one tier needs: p95 concurrency and context, prompt and output lengths, archetype."""

    tier: str
    concurrency: float
    context_tokens: float
    input_tokens: float
    output_tokens: float
    archetype: str
    source: str

    @classmethod
    def from_profile(cls, tier: str, p: dict[str, Any], overrides: dict[str, Any] | None = None) -> Target:
        o = overrides or {}
        conc = o.get("concurrency") or p["concurrency_littles_law"]["p95"]
        ctx = o.get("context_tokens") or p["context_tokens"]["p95"]
        where = "metrics/workload.json" + (f" tiers.{tier}" if tier != "all" else "")
        return cls(
            tier=tier,
            concurrency=float(conc),
            context_tokens=float(ctx),
            input_tokens=float(p["input_tokens"]["p95"]),
            output_tokens=float(p["output_tokens"]["mean"]),
            archetype=str(p.get("archetype", "chat")),
            source=f"{where}: concurrency_littles_law.p95"
            + (" (overridden by memory.concurrency)" if o.get("concurrency") else "")
            + ", context_tokens.p95"
            + (" (overridden by memory.context_tokens)" if o.get("context_tokens") else ""),
        )


def targets_from_profile(profile: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[Target]:
    """The whole workload, then each tier when the profile has tiers (each is sized on its own)."""
    out = [Target.from_profile("all", profile, overrides)]
    for tier, p in sorted((profile.get("tiers") or {}).items()):
        out.append(Target.from_profile(tier, p, overrides))
    return out


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


def rank_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    """Fewest GPUs for the p95 concurrency, then the higher-quality precision, then more capacity, then name."""
    return (
        entry["gpus_for_p95_concurrency"],
        QUALITY_ORDER.index(entry["weights"]),
        QUALITY_ORDER.index(entry["kv"]),
        -entry["max_concurrency_per_replica"],
        entry["gpu"],
    )


def hardware_hint(archetype: str, gpus: list[GPU]) -> str:
    """Step 2: prefill-heavy (rag) favours FLOPS, decode-heavy (generation) favours HBM bandwidth."""
    by_flops = sorted(gpus, key=lambda g: -g.peak("bf16"))
    by_bw = sorted(gpus, key=lambda g: -g.memory_bw_tbs)
    flops = ", ".join(f"{g.name} {g.peak('bf16') / 1e12:g}" for g in by_flops[:3])
    bw = ", ".join(f"{g.name} {g.memory_bw_tbs:g}" for g in by_bw[:3])
    if archetype == "rag":
        return f"rag is prefill-heavy: favour FLOPS ({flops} dense BF16 TFLOPS)"
    if archetype in ("generation", "agentic"):
        return f"{archetype} is decode-heavy: favour HBM bandwidth ({bw} TB/s)"
    return f"chat is balanced: bandwidth sets ITL ({bw} TB/s), FLOPS set TTFT ({flops} dense BF16 TFLOPS)"


@dataclass
class Plan:
    """The memory stage's result: every candidate, the rejected ones, the pick per tier."""

    model_by_tier: dict[str, Model]
    targets: list[Target]
    candidates: list[Candidate]
    rejected: dict[str, str]
    recommended: dict[str, str | None]
    hints: dict[str, str]
    gpus: list[GPU]
    efficiency: roofline.Efficiency = field(default_factory=roofline.Efficiency)

    def metrics(self) -> dict[str, Any]:
        """metrics/memory.json."""
        return {
            "model": {t: m.name for t, m in sorted(self.model_by_tier.items())},
            "targets": {
                t.tier: {
                    "concurrency_p95": t.concurrency,
                    "context_tokens_p95": t.context_tokens,
                    "input_tokens_p95": t.input_tokens,
                    "output_tokens_mean": t.output_tokens,
                    "archetype": t.archetype,
                    "source": t.source,
                }
                for t in self.targets
            },
            "hardware_hint": self.hints,
            "recommended": self.recommended,
            "formulas": FORMULAS,
            "roofline_efficiency": asdict(self.efficiency),
            "candidates": {c.id: io.rounded(c.entry) for c in self.candidates},
            "rejected": self.rejected,
            "models": {
                m.name: {
                    "config": m.path,
                    "total_params_b": round(m.total_params / 1e9, 3),
                    "active_params_b": round(m.active_params / 1e9, 3),
                    "attention": m.attention_kind,
                    "kv_bytes_per_token_bf16": memory.kv_shape(m, "bf16").all_layers_bytes_per_token,
                }
                for m in {m.name: m for m in self.model_by_tier.values()}.values()
            },
        }

    def curve_rows(self) -> list[dict[str, Any]]:
        rows = []
        for c in self.candidates:
            for point in c.curve:
                rows.append(
                    {
                        "candidate": c.id,
                        "tier": c.entry["tier"],
                        "gpu": c.entry["gpu"],
                        "weights": c.entry["weights"],
                        "kv": c.entry["kv"],
                        "tp": c.entry["tp"],
                        **point,
                    }
                )
        return rows


def resolve_gpus(names: list[str], gpus: dict[str, GPU]) -> list[GPU]:
    """The params' GPU list against the catalog; an unknown one names the key and the valid names."""
    out = []
    for i, name in enumerate(names):
        try:
            out.append(catalog.find_gpu(name, gpus))
        except InputError as exc:
            raise ParamsError(
                f"params.yaml: hardware.gpus[{i}] = {name!r} is not in data/catalog/gpus.csv; allowed values: {', '.join(gpus)}"
            ) from exc
    return out


def plan(
    profile: dict[str, Any],
    sections: dict[str, dict[str, Any]],
    gpus: dict[str, GPU],
    load_model: Callable[[str], Model],
) -> Plan:
    """Evaluate every candidate for every target (whole workload and each tier).

    `sections`: the validated params sections (SECTIONS); `gpus`: the GPU catalog; `load_model(name)`:
    the catalog's model of that name (the memory stage reads both; this module reads no file).
    """
    settings = Settings.from_params(sections)
    chosen = resolve_gpus(sections["hardware"]["gpus"], gpus)
    for key, what in (("weights", "weights"), ("kv", "kv")):
        allowed = quantization.WEIGHT_DTYPES if what == "weights" else quantization.KV_DTYPES
        for i, name in enumerate(sections["quantization"][key]):
            if name not in allowed:
                raise ParamsError(
                    f"params.yaml: quantization.{key}[{i}] = {name!r}; allowed values: {', '.join(allowed)}"
                )
    overrides = {k: settings.memory[k] for k in ("concurrency", "context_tokens")}
    targets = targets_from_profile(profile, overrides)
    model_cfg = sections["model"]
    unknown = sorted(set(model_cfg["tiers"]) - {t.tier for t in targets})
    if unknown:
        raise ParamsError(
            f"params.yaml: model.tiers.{unknown[0]} is not a tier of the workload; tiers: {', '.join(t.tier for t in targets[1:]) or '(none)'}"
        )
    cache: dict[str, Model] = {}

    def model_for(tier: str) -> Model:
        name = model_cfg["tiers"].get(tier, model_cfg["name"])
        if name not in cache:
            cache[name] = load_model(name)
        return cache[name]

    model_by_tier = {t.tier: model_for(t.tier) for t in targets}
    candidates: list[Candidate] = []
    rejected: dict[str, str] = {}
    recommended: dict[str, str | None] = {}
    hints: dict[str, str] = {}
    for target in targets:
        model = model_by_tier[target.tier]
        hints[target.tier] = hardware_hint(target.archetype, chosen)
        evaluated = []
        for gpu in chosen:
            for w in sections["quantization"]["weights"]:
                for kv in sections["quantization"]["kv"]:
                    cand = evaluate(model, gpu, w, kv, target, settings, detail=False)
                    if not cand.allowed:
                        rejected[cand.id] = "; ".join(cand.entry["reasons"])
                        continue
                    candidates.append(cand)
                    evaluated.append(cand)
        good = [c.entry for c in evaluated if c.entry["fits"] and c.entry["meets_slo"]]
        best = min(good, key=rank_key) if good else None
        recommended[target.tier] = candidate_id(target.tier, best["gpu"], best["weights"], best["kv"]) if best else None
    return Plan(model_by_tier, targets, candidates, rejected, recommended, hints, chosen, settings.efficiency)


SECTIONS = ("hardware", "model", "quantization", "memory", "lora", "engine", "parallelism", "roofline", "slo")
