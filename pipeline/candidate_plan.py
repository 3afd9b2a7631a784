"""Steps 2 and 4-6 together: every candidate (GPU x weight precision x KV precision) per tier, ranked.

Enumerates the params' GPUs and precisions for the whole workload and each tier (candidate_eval.evaluate
each), rejects the combinations a chip cannot run, picks the best per tier (rank_key) and holds the
result, metrics/memory.json (Plan.metrics) and the predicted curves that step 7 overlays on measured ones
(Plan.curve_rows). Pure: the memory stage hands in the GPU catalog and a model loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import catalog, io, memory, quantization, roofline
from pipeline.candidate_eval import FORMULAS, Candidate, Settings, candidate_id, evaluate
from pipeline.candidate_targets import Target, targets_from_profile
from pipeline.catalog import GPU, Model
from pipeline.contracts import MemoryDoc
from pipeline.errors import InputError, ParamsError

QUALITY_ORDER = ("fp32", "bf16", "fp16", "fp8", "int8", "mxfp4", "fp4", "int4")


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
        """metrics/memory.json (contracts.MemoryDoc: its keys in order)."""
        return MemoryDoc(
            model={t: m.name for t, m in sorted(self.model_by_tier.items())},
            targets={
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
            hardware_hint=self.hints,
            recommended=self.recommended,
            formulas=FORMULAS,
            roofline_efficiency=asdict(self.efficiency),
            candidates={c.id: io.rounded(c.entry) for c in self.candidates},
            rejected=self.rejected,
            models={
                m.name: {
                    "config": m.path,
                    "total_params_b": round(m.total_params / 1e9, 3),
                    "active_params_b": round(m.active_params / 1e9, 3),
                    "attention": m.attention_kind,
                    "kv_bytes_per_token_bf16": memory.kv_shape(m, "bf16").all_layers_bytes_per_token,
                }
                for m in {m.name: m for m in self.model_by_tier.values()}.values()
            },
        ).to_dict()

    def curve_rows(self) -> list[dict[str, Any]]:
        """data/interim/predicted_curve.parquet: every candidate's roofline curve, one row per point."""
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
