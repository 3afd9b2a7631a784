"""Step 4: the memory floor (the guide's rule of thumb) and a calibrated vLLM engine profile.

Guide (method.md): total = weights + KV at peak + activations (20% of 16-bit weights)
+ framework overhead (share of VRAM per GPU, or a fixed figure) + LoRA adapters; min GPUs =
ceil(total / usable VRAM). Engine: vLLM reserves gpu_memory_utilization x visible memory and
gives what is left after weights, peak activations and non-torch memory to KV blocks; the
capacity axis (6a) is how many sequences of the p95 context fit in those blocks.
Units: *_gb are 1e9 bytes (the guide's and the datasheets' GB); *_gib are 2**30 bytes (what
vLLM and nvidia-smi print).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline.catalog import GPU, Model
from pipeline.errors import ParamsError
from pipeline.quantization import bytes_per_param, precision

GB = 1e9
GIB = 2**30
FLOOR_KEYS = (
    "weights_gb",
    "kv_gb",
    "activations_gb",
    "overhead_gb",
    "lora_gb",
    "total_gb",
    "min_gpus",
    "gpus_with_headroom",
)


# --------------------------------------------------------------------------- KV cache


@dataclass(frozen=True)
class KVShape:
    """KV bytes per token for a model at a KV precision: the growing part and the window-capped part."""

    growing_bytes_per_token: float
    sliding_bytes_per_token: float
    window: int | None
    formula: str

    def bytes_per_sequence(self, tokens: float) -> float:
        """KV a sequence of `tokens` holds: full layers grow, sliding layers stop at the window."""
        capped = min(tokens, self.window) if self.window else tokens
        return self.growing_bytes_per_token * tokens + self.sliding_bytes_per_token * capped

    def bytes_per_token_at(self, tokens: float) -> float:
        """Average KV bytes per token at a context length (equals the per-layer sum when no layer slides)."""
        return (
            self.bytes_per_sequence(tokens) / tokens
            if tokens > 0
            else self.growing_bytes_per_token + self.sliding_bytes_per_token
        )

    @property
    def all_layers_bytes_per_token(self) -> float:
        return self.growing_bytes_per_token + self.sliding_bytes_per_token


def kv_shape(model: Model, kv_dtype: str = "bf16", tp: int = 1, pp: int = 1) -> KVShape:
    """KV bytes per token, per replica (tp = pp = 1) or per GPU (KV heads split by TP, layers by PP).

    MHA/GQA: 2 x kv_heads x head_dim x bytes per layer; MLA: (kv_lora_rank + qk_rope_head_dim)
    x bytes per layer, whole on every TP rank; sliding layers cap at the window; linear layers
    hold a constant state (not counted here, said in the formula).
    """
    b = precision(kv_dtype, "kv").bytes
    full = model.layer_kinds.count("full")
    sliding = model.layer_kinds.count("sliding")
    linear = model.layer_kinds.count("linear")
    if model.is_mla:
        per_layer = (model.kv_lora_rank + model.qk_rope_head_dim) * b
        formula = (
            f"MLA: layers x (kv_lora_rank {model.kv_lora_rank} + qk_rope_head_dim {model.qk_rope_head_dim}) x {b:g} B"
        )
    else:
        heads = model.kv_heads if tp == 1 else max(1, math.ceil(model.kv_heads / tp))
        per_layer = 2 * heads * model.head_dim * b
        what = f"{model.kv_heads} KV heads" if tp == 1 else f"{heads} of {model.kv_heads} KV heads per GPU"
        formula = f"2 (K,V) x layers x {what} x head_dim {model.head_dim} x {b:g} B"
    frac = 1.0 / pp
    if sliding:
        formula += f"; {full} full layers grow, {sliding} sliding layers capped at {model.sliding_window} tokens"
    if linear:
        formula += f"; {linear} linear-attention layers hold a constant state (not counted)"
    return KVShape(per_layer * full * frac, per_layer * sliding * frac, model.sliding_window, formula)


# --------------------------------------------------------------------------- LoRA


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_adapter_bytes(model: Model, rank: int, targets: tuple[str, ...] | list[str], dtype: str = "bf16") -> float:
    """One adapter: rank x sum over adapted matrices of (d_in + d_out) x layers x bytes (method.md)."""
    h, q, kv = model.hidden, model.heads * model.head_dim, model.kv_heads * model.head_dim
    inter = model.intermediate or model.moe_intermediate
    dims = {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }
    unknown = [t for t in targets if t not in dims]
    if unknown:
        raise ParamsError(f"params.yaml: lora.targets has {unknown[0]!r}; allowed values: {', '.join(LORA_TARGETS)}")
    total = sum(sum(dims[t]) for t in targets)
    return rank * total * model.layers * precision(dtype).bytes


# --------------------------------------------------------------------------- the guide's floor


@dataclass(frozen=True)
class MemoryFloor:
    """The guide's memory floor for one candidate (GB = 1e9 bytes)."""

    weights_gb: float
    kv_gb: float
    activations_gb: float
    overhead_gb: float
    lora_gb: float
    total_gb: float
    min_gpus: int
    gpus_with_headroom: int
    formula: dict[str, str]


def memory_floor(
    params: float,
    weight_dtype: str,
    kv_bytes_per_sequence: float,
    concurrency: float,
    gpu_memory_gb: float,
    *,
    activation_frac: float = 0.2,
    overhead_frac: float = 0.075,
    overhead_gb: float | None = None,
    lora_gb: float = 0.0,
    headroom: float = 0.5,
    weight_alignment_tax: float = 0.0,
) -> MemoryFloor:
    """The four components plus LoRA, min GPUs, and GPUs with headroom (method.md steps 4-5).

    Overhead is `overhead_frac` of each GPU's VRAM (so usable VRAM per GPU is the rest) unless
    a fixed `overhead_gb` is given, as in the guide's worked example (15 GB).
    """
    b = bytes_per_param(weight_dtype)
    weights = params * b * (1 + weight_alignment_tax) / GB
    kv = kv_bytes_per_sequence * concurrency / GB
    activations = activation_frac * params * 2 / GB
    variable = weights + kv + activations + lora_gb
    if overhead_gb is None:
        usable = gpu_memory_gb * (1 - overhead_frac)
        min_gpus = max(1, math.ceil(variable / usable - 1e-9))
        overhead = min_gpus * gpu_memory_gb * overhead_frac
        with_headroom = max(1, math.ceil(variable * (1 + headroom) / usable - 1e-9))
        over_text = f"{overhead_frac:.1%} of {gpu_memory_gb:g} GB per GPU x {min_gpus} GPUs"
        gpus_text = f"ceil({variable:.1f} / ({gpu_memory_gb:g} x (1 - {overhead_frac:g})))"
    else:
        overhead = overhead_gb
        total = variable + overhead
        min_gpus = max(1, math.ceil(total / gpu_memory_gb - 1e-9))
        with_headroom = max(1, math.ceil(total * (1 + headroom) / gpu_memory_gb - 1e-9))
        over_text = f"fixed {overhead_gb:g} GB"
        gpus_text = f"ceil({total:.1f} / {gpu_memory_gb:g})"
    total = variable + overhead
    return MemoryFloor(
        weights_gb=weights,
        kv_gb=kv,
        activations_gb=activations,
        overhead_gb=overhead,
        lora_gb=lora_gb,
        total_gb=total,
        min_gpus=min_gpus,
        gpus_with_headroom=with_headroom,
        formula={
            "weights_gb": f"{params / 1e9:.3f}B params x {b:g} B ({weight_dtype})"
            + (f" x (1 + {weight_alignment_tax:g} alignment)" if weight_alignment_tax else ""),
            "kv_gb": f"{kv_bytes_per_sequence:,.0f} B per sequence at the p95 context x {concurrency:g} concurrent",
            "activations_gb": f"{activation_frac:g} x 16-bit weights ({params / 1e9:.3f}B x 2 B)",
            "overhead_gb": over_text,
            "min_gpus": gpus_text,
            "gpus_with_headroom": f"min GPUs with {headroom:.0%} headroom on the total",
        },
    )


# --------------------------------------------------------------------------- the engine profile


@dataclass(frozen=True)
class EngineSettings:
    """The vLLM knobs and calibration constants that decide how much memory is left for KV blocks."""

    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    block_size: int = 16
    non_torch_gib: float = 1.8
    non_torch_gib_multi_gpu: float = 3.6
    visible_memory_gib: dict[str, float] | None = None

    @classmethod
    def from_params(cls, engine: dict[str, Any]) -> EngineSettings:
        return cls(**{k: v for k, v in engine.items() if k in cls.__dataclass_fields__})


def engine_weight_bytes(model: Model, weight_dtype: str, tp: int = 1, pp: int = 1, ep: int = 1) -> float:
    """Resident weight bytes on the most loaded GPU, as vLLM loads them.

    Quantized recipes convert the linear layers only: embeddings, lm_head, norms and the MoE
    router stay 16-bit. TP splits attention, MLP and the vocabulary; EP splits routed experts
    (shared experts are whole on every GPU); PP splits layers.
    """
    p = model.params
    w = precision(weight_dtype)
    q = w.bytes + w.scale_bytes
    # gpt-oss ships only the experts in MXFP4; its attention stays 16-bit.
    dense_bytes = 2.0 if model.quant_method == "mxfp4" and weight_dtype == "mxfp4" else q
    high = 2.0 if w.bytes < 2 else w.bytes
    if model.is_moe and ep > 1:
        experts = p.routed_experts * q / ep + p.shared_experts * q
    else:
        experts = (p.routed_experts + p.shared_experts) * q / tp
    split = (p.attention + p.dense_mlp) * dense_bytes / tp + (p.embedding + p.lm_head) * high / tp
    whole = p.attention_replicated * dense_bytes + (p.norms + p.router) * high
    return (split + experts + whole) / pp


def activation_peak_bytes(model: Model, settings: EngineSettings) -> float:
    """Peak activation memory of vLLM's profiling forward pass (not split by TP: measured flat from TP1 to TP2).

    max_num_batched_tokens x 2 B x (4 x hidden + q/k/v width + 3 x MLP width) for the largest
    layer, plus fp32 logits and probabilities for max_num_seqs sequences.
    """
    t = settings.max_num_batched_tokens
    qkv = (model.heads + 2 * model.kv_heads) * model.head_dim
    mlp = max(
        model.intermediate if model.moe_layers < model.layers else 0, model.experts_per_token * model.moe_intermediate
    )
    per_token = (4 * model.hidden + qkv + 3 * mlp) * 2
    logits = settings.max_num_seqs * model.vocab * 4 * 2
    return t * per_token + logits


@dataclass(frozen=True)
class EngineProfile:
    """Where one GPU's memory goes under vLLM, and the replica's KV capacity at the p95 context."""

    visible_memory_gib: float
    visible_memory_basis: str
    gpu_memory_utilization: float
    budget_gib: float
    weights_gib: float
    activation_peak_gib: float
    non_torch_gib: float
    kv_cache_gib: float
    kv_bytes_per_token_per_gpu: float
    kv_cache_tokens: int
    context_tokens: float
    max_concurrency_per_replica: int
    fits: bool
    formula: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def engine_profile(
    model: Model,
    gpu: GPU,
    weight_dtype: str,
    kv_dtype: str,
    tp: int,
    pp: int,
    ep: int,
    context_tokens: float,
    settings: EngineSettings,
    total_memory_gib: float | None = None,
) -> EngineProfile:
    """vLLM's accounting: budget = visible x utilization; KV = budget - weights - activations - non-torch."""
    visible = total_memory_gib or (settings.visible_memory_gib or {}).get(gpu.name) or gpu.visible_memory_gib
    basis = (
        "given"
        if total_memory_gib
        else ("params.yaml" if (settings.visible_memory_gib or {}).get(gpu.name) else gpu.visible_memory_basis)
    )
    budget = visible * settings.gpu_memory_utilization
    weights = engine_weight_bytes(model, weight_dtype, tp, pp, ep) / GIB
    act = activation_peak_bytes(model, settings) / GIB
    non_torch = settings.non_torch_gib if tp * pp == 1 else settings.non_torch_gib_multi_gpu
    kv_gib = budget - weights - act - non_torch
    shape = kv_shape(model, kv_dtype, tp, pp)
    per_token = shape.all_layers_bytes_per_token
    kv_bytes = max(kv_gib, 0.0) * GIB
    blocks = int(kv_bytes // (per_token * settings.block_size)) if per_token else 0
    tokens = blocks * settings.block_size
    block = settings.block_size
    ctx_blocks = math.ceil(context_tokens / block) * block
    # Sliding layers keep the window plus the block being filled, in whole blocks.
    window_blocks = math.ceil((shape.window + block) / block) * block if shape.window else ctx_blocks
    seq_bytes = shape.growing_bytes_per_token * ctx_blocks + shape.sliding_bytes_per_token * min(
        ctx_blocks, window_blocks
    )
    max_conc = int(kv_bytes // seq_bytes) if seq_bytes > 0 and kv_gib > 0 else 0
    return EngineProfile(
        visible_memory_gib=visible,
        visible_memory_basis=basis,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        budget_gib=budget,
        weights_gib=weights,
        activation_peak_gib=act,
        non_torch_gib=non_torch,
        kv_cache_gib=kv_gib,
        kv_bytes_per_token_per_gpu=per_token,
        kv_cache_tokens=tokens,
        context_tokens=context_tokens,
        max_concurrency_per_replica=max_conc,
        fits=max_conc >= 1,
        formula={
            "budget_gib": f"{visible:g} GiB visible ({basis}) x gpu_memory_utilization {settings.gpu_memory_utilization:g}",
            "weights_gib": f"{weight_dtype} linear layers, 16-bit embeddings/norms/router, split over TP {tp} x PP {pp}"
            + (f", experts over EP {ep}" if ep > 1 else ""),
            "activation_peak_gib": f"{settings.max_num_batched_tokens} batched tokens x (4h + qkv + 3 x MLP) x 2 B + fp32 logits for {settings.max_num_seqs} sequences",
            "non_torch_gib": "calibrated to vLLM's published profile (PR #10511): CUDA context extras, cuBLAS, NCCL",
            "kv_cache_gib": "budget - weights - activation peak - non-torch (per GPU)",
            "max_concurrency_per_replica": f"KV blocks ({settings.block_size} tokens) / blocks per sequence at {context_tokens:,.0f} tokens",
        },
    )


def compare_to_measurement(m: dict[str, Any], model: Model, gpu: GPU, settings: EngineSettings) -> list[dict[str, Any]]:
    """Predicted vs published vLLM figures for one logged run: one row per component the log states."""
    s = replace(
        settings,
        gpu_memory_utilization=m.get("gpu_memory_utilization") or settings.gpu_memory_utilization,
        max_num_batched_tokens=int(m.get("max_num_batched_tokens") or settings.max_num_batched_tokens),
        max_num_seqs=int(m.get("max_num_seqs") or settings.max_num_seqs),
        visible_memory_gib=None,
    )
    from pipeline.parallelism import expert_parallel

    tp = int(m.get("tp") or 1)
    ep = expert_parallel(model, tp)
    prof = engine_profile(
        model, gpu, m["weights"], m["kv"], tp, 1, ep, 1.0, s, total_memory_gib=m.get("total_gpu_memory_gib")
    )
    rows = []
    per_token = kv_shape(model, m["kv"], tp).all_layers_bytes_per_token
    predicted = {
        "weights_gib": prof.weights_gib,
        "activation_peak_gib": prof.activation_peak_gib,
        "non_torch_gib": prof.non_torch_gib,
        "kv_cache_gib": prof.kv_cache_gib,
    }
    for key, value in predicted.items():
        if key == "kv_cache_gib" and not m.get("total_gpu_memory_gib"):
            continue
        if m.get(key) is not None:
            rows.append({"component": key, "predicted": value, "measured": m[key]})
    if m.get("kv_cache_tokens") and m.get("kv_cache_gib"):
        tokens = int(m["kv_cache_gib"] * GIB // (per_token * s.block_size)) * s.block_size
        rows.append(
            {
                "component": "kv_cache_tokens (from the logged KV GiB)",
                "predicted": tokens,
                "measured": m["kv_cache_tokens"],
            }
        )
    for r in rows:
        r["error_pct"] = (r["predicted"] / r["measured"] - 1) * 100 if r["measured"] else None
        r.update(measurement=m["measurement"], model=model.name, gpu=gpu.name, tp=tp, source=m["source"])
    return rows
