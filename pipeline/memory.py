"""Step 4: the memory floor (the guide's rule of thumb) and a calibrated vLLM engine profile.

Guide (method.md): total = weights + KV at peak + activations (20% of 16-bit weights)
+ framework overhead (share of VRAM per GPU, or a fixed figure) + LoRA adapters; min GPUs =
ceil(total / usable VRAM). Engine: vLLM reserves gpu_memory_utilization x visible memory and
gives what is left after weights, peak activations (on Hopper-class GPUs V1's sampler run over
max_num_seqs x vocabulary), non-torch memory (per engine and GPU family, plus NCCL buffers and V1's
allocator slack) and CUDA graphs (vLLM >= 0.21) to KV blocks, laid out as vLLM's
KV cache manager does (hybrid models: one block table per layer group). It refuses to start when
that is <= 0 or cannot hold one request of max_model_len (`fits` is false exactly then). The
capacity axis (6a) is how many sequences of the p95 context fit in those blocks. Constants are
calibrated on public start-up logs (tests/data/vllm_startup_logs, benchmarks/engine_memory.py).
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

# Calibration constants. They are fitted by benchmarks/engine_memory.py on the `fit` rows of the public
# start-up logs in tests/data/vllm_startup_logs (PROVENANCE.md quotes every line); the `holdout` rows only
# check them. Re-run that script after adding logs.
#
# Non-torch memory (CUDA context growth, cuBLAS/attention workspaces, NCCL) differs by engine and GPU family.
# `engine.non_torch_gib` (1.8) and `engine.non_torch_gib_multi_gpu` (3.6) are vLLM's V0 figures on an H100
# (PR #10511: 1.79 / 3.58 GiB) and the V0 profile uses them as they are. The V1 profile (vLLM >= 0.9) keeps far
# less outside torch: it is those figures times a per-family factor, fitted by benchmarks/engine_memory.py on the
# `fit` rows of the start-up logs: Hopper from the non-torch figure the H100 V1 fit rows log (0.13 GiB; 0.54 GiB
# with TP 2), Ampere from the A100 fit rows' KV shortfall. Ada, Blackwell and CDNA have no log that states the
# split and take the figure of the nearest family (Ada: Ampere; Blackwell, CDNA: Hopper).
NON_TORCH_ARCH_SCALE: dict[str, float] = {
    "hopper": 0.0722,
    "blackwell": 0.0722,
    "cdna3": 0.0722,
    "cdna4": 0.0722,
    "ampere": 0.0,
    "ada": 0.0,
}
# What a replica spanning GPUs adds under V1 (NCCL communicators, custom all-reduce buffers), as a share of
# engine.non_torch_gib_multi_gpu - engine.non_torch_gib: an H100 pair adds 0.41 GiB, an A100 pair without P2P
# (custom all-reduce off, vLLM 0.10.1) almost nothing.
NON_TORCH_MULTI_GPU_ARCH_SCALE: dict[str, float] = {
    "hopper": 0.2278,
    "blackwell": 0.2278,
    "cdna3": 0.2278,
    "cdna4": 0.2278,
    "ampere": 0.0406,
    "ada": 0.0406,
}
# V1's profile run samples max_num_seqs dummy requests over the whole vocabulary. On Hopper (vLLM 0.9-0.11, 1,024
# sequences by default) its peak is ~39 B per (sequence x vocabulary entry), whatever the model: 4.76 GiB for
# Llama-3.1-8B, 5.64 GiB for Qwen3-32B at TP 1 and 2, 7.38 GiB for gpt-oss-20b (llm-d H100 logs). The activation
# peak is the larger of that and the forward pass (activation_peak_bytes). Ampere logs show no such peak (the
# forward pass plus fp32 logits x 2 = 8 B per entry match them). Fitted on the Hopper V1 dense fit rows.
V1_SAMPLER_BYTES_PER_SEQ_VOCAB: dict[str, float] = {
    "hopper": 39.33,
    "blackwell": 39.33,
    "cdna3": 39.33,
    "cdna4": 39.33,
}
# vLLM V1 counts everything the CUDA driver holds beyond torch's live tensors as non-torch memory, which
# includes the caching allocator's slack after MoE experts are repacked and padded at load (a dense model
# shows none). A share of the routed-expert bytes per GPU: the mean over the MoE fit rows, which disagree (the
# gpt-oss-20b A100 log leaves 0.06 of its experts, the gpt-oss-120b H100 log of vLLM 0.10.1 none once the sampler
# peak is counted; that row keeps a -2 GiB residual). A model where the activation peak reuses the slack fits
# both but misses more held-out logs (median KV GiB error 2.5% against 0.9%), so the simple share stays.
V1_WEIGHT_SLACK_FRAC = 0.0307
# vLLM pads MXFP4 expert matrices to its kernels' tile sizes: (hidden, intermediate) alignment per backend.
# Marlin (chips without FP4 kernels, and vLLM <= 0.10 on Hopper) pads gpt-oss's 2880 x 2880 experts to
# 3072 x 2944 (w13 (32, 5888, 1536) / w2 (32, 3072, 1472) bytes in a public vLLM dump); the Triton kernels
# (Hopper, vLLM >= 0.11) round each GPU's intermediate size up to 256 and keep the hidden size.
MXFP4_ALIGN: dict[str, tuple[int, int]] = {"marlin": (256, 128), "triton": (1, 256)}
# CUDA-graph memory per GPU when no figure is given: the mean of the captured-graph sizes the fit rows log
# ("Graph capturing finished in N secs, took X GiB": 0.50 and 0.65 GiB, vLLM 0.10.1, A100); held-out logs run
# 0.50-1.88 GiB, and vLLM's own estimates elsewhere 0.17-0.65 GiB (PR #21489, gpustack/runner #251,
# club-3090 #127). vLLM >= 0.21 subtracts it from the KV budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS,
# on by default); older releases took it from the headroom above gpu_memory_utilization.
CUDA_GRAPH_GIB_PRIOR = 0.575


@dataclass(frozen=True)
class EngineSettings:
    """The vLLM knobs and calibration constants that decide how much memory is left for KV blocks.

    `max_model_len` None means the workload's context (the sizing target); `cuda_graph_gib` None means
    the prior; `engine` "v1" (current vLLM) or "v0" (the pre-2025 engine: whole-window KV for sliding
    layers, two logit copies in the profile); `mxfp4_backend` None picks Marlin on chips without FP4
    kernels (Ampere, Ada) and the Triton kernels elsewhere.
    """

    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    block_size: int = 16
    non_torch_gib: float = 1.8
    non_torch_gib_multi_gpu: float = 3.6
    visible_memory_gib: dict[str, float] | None = None
    max_model_len: int | None = None
    cuda_graph_gib: float | None = None
    cuda_graph_in_budget: bool = True
    enforce_eager: bool = False
    engine: str = "v1"
    mxfp4_backend: str | None = None
    weight_slack_frac: float | None = None

    @classmethod
    def from_params(cls, engine: dict[str, Any]) -> EngineSettings:
        """Settings from params.yaml's `engine` section (unknown keys are ignored; absent keys keep defaults)."""
        return cls(**{k: v for k, v in engine.items() if k in cls.__dataclass_fields__ and v is not None})

    @property
    def slack_frac(self) -> float:
        """Allocator slack as a share of the routed-expert weights (V1 default calibrated, V0 none)."""
        if self.weight_slack_frac is not None:
            return self.weight_slack_frac
        return V1_WEIGHT_SLACK_FRAC if self.engine == "v1" else 0.0


def _mxfp4_backend(gpu: GPU | None, settings: EngineSettings | None) -> str:
    if settings is not None and settings.mxfp4_backend:
        return settings.mxfp4_backend
    if gpu is not None and gpu.arch in ("ampere", "ada", "turing", "volta"):
        return "marlin"
    return "triton"


def _weight_parts(
    model: Model,
    weight_dtype: str,
    tp: int,
    pp: int,
    ep: int,
    gpu: GPU | None,
    settings: EngineSettings | None,
) -> tuple[float, float]:
    """(all resident weight bytes, routed-expert bytes) on the most loaded GPU."""
    p = model.params
    w = precision(weight_dtype)
    q = w.bytes + w.scale_bytes
    # gpt-oss ships only the experts in MXFP4; its attention stays 16-bit.
    mx = model.quant_method == "mxfp4" and weight_dtype == "mxfp4"
    dense_bytes = 2.0 if mx else q
    high = 2.0 if w.bytes < 2 else w.bytes
    expert_scale = 1.0
    if mx and model.moe_intermediate:
        # EP keeps whole experts on a GPU; TP splits each expert's intermediate size.
        inter = model.moe_intermediate if ep > 1 else model.moe_intermediate / tp
        h_align, i_align = MXFP4_ALIGN[_mxfp4_backend(gpu, settings)]
        hidden = math.ceil(model.hidden / h_align) * h_align
        expert_scale = (hidden * math.ceil(inter / i_align) * i_align) / (model.hidden * inter)
    routed = p.routed_experts * q * expert_scale / (ep if (model.is_moe and ep > 1) else tp)
    shared = p.shared_experts * q * (1 if (model.is_moe and ep > 1) else 1 / tp)
    split = (p.attention + p.dense_mlp) * dense_bytes / tp + (p.embedding + p.lm_head) * high / tp
    whole = p.attention_replicated * dense_bytes + (p.norms + p.router) * high
    return (split + routed + shared + whole) / pp, routed / pp


def engine_weight_bytes(
    model: Model,
    weight_dtype: str,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    gpu: GPU | None = None,
    settings: EngineSettings | None = None,
) -> float:
    """Resident weight bytes on the most loaded GPU, as vLLM loads them.

    Quantized recipes convert the linear layers only: embeddings, lm_head, norms and the MoE
    router stay 16-bit. TP splits attention, MLP and the vocabulary; EP splits routed experts
    (shared experts are whole on every GPU); PP splits layers. MXFP4 experts (gpt-oss) are padded
    the way vLLM's kernels lay them out (MXFP4_ALIGN: Marlin on chips without FP4 kernels, Triton
    elsewhere).
    """
    return _weight_parts(model, weight_dtype, tp, pp, ep, gpu, settings)[0]


def routed_expert_bytes(
    model: Model,
    weight_dtype: str,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    gpu: GPU | None = None,
    settings: EngineSettings | None = None,
) -> float:
    """The routed-expert share of engine_weight_bytes (0 for dense models)."""
    return _weight_parts(model, weight_dtype, tp, pp, ep, gpu, settings)[1]


def activation_peak_bytes(model: Model, settings: EngineSettings, gpu: GPU | None = None) -> float:
    """Peak activation memory of vLLM's profiling run (not split by TP: measured flat from TP1 to TP2).

    Forward: max_num_batched_tokens x 2 B x (4 x hidden + q/k/v width + 3 x MLP width) for the largest
    layer, plus fp32 logits and probabilities for min(max_num_seqs, max_num_batched_tokens) sequences.
    V1 on a GPU family in V1_SAMPLER_BYTES_PER_SEQ_VOCAB: the larger of that and the dummy sampler run's
    bytes per (sequence x vocabulary entry) x sequences x vocabulary.
    """
    t = settings.max_num_batched_tokens
    qkv = (model.heads + 2 * model.kv_heads) * model.head_dim
    mlp = max(
        model.intermediate if model.moe_layers < model.layers else 0, model.experts_per_token * model.moe_intermediate
    )
    per_token = (4 * model.hidden + qkv + 3 * mlp) * 2
    rows = min(settings.max_num_seqs, settings.max_num_batched_tokens)
    logits = rows * model.vocab * 4 * 2
    forward = t * per_token + logits
    sampler = V1_SAMPLER_BYTES_PER_SEQ_VOCAB.get(gpu.arch, 0.0) if gpu is not None and settings.engine == "v1" else 0.0
    return max(forward, sampler * rows * model.vocab)


def non_torch_gib(gpu: GPU, tp: int, pp: int, settings: EngineSettings, expert_gib: float = 0.0) -> float:
    """Memory outside torch on one GPU: the CUDA context and workspaces, NCCL and custom all-reduce buffers
    when the replica spans GPUs (engine.non_torch_gib_multi_gpu - non_torch_gib), and (V1) the allocator's
    slack after loading `expert_gib` of routed experts. V0 takes the engine figures as they are; V1 scales
    them by the GPU family's NON_TORCH_ARCH_SCALE and NON_TORCH_MULTI_GPU_ARCH_SCALE."""
    v0 = settings.engine == "v0"
    base = settings.non_torch_gib * (1.0 if v0 else NON_TORCH_ARCH_SCALE.get(gpu.arch, 1.0))
    multi = (
        max(0.0, settings.non_torch_gib_multi_gpu - settings.non_torch_gib)
        * (1.0 if v0 else NON_TORCH_MULTI_GPU_ARCH_SCALE.get(gpu.arch, 1.0))
        if tp * pp > 1
        else 0.0
    )
    return base + multi + settings.slack_frac * expert_gib


def cuda_graph_gib(settings: EngineSettings) -> float:
    """CUDA-graph memory per GPU (0 with enforce_eager): the given figure, else the prior."""
    if settings.enforce_eager:
        return 0.0
    return CUDA_GRAPH_GIB_PRIOR if settings.cuda_graph_gib is None else settings.cuda_graph_gib


# --------------------------------------------------------------------------- KV blocks as vLLM lays them out


@dataclass(frozen=True)
class KVLayout:
    """One GPU's attention layers as vLLM's KV cache manager groups them (v1/core/kv_cache_utils.py).

    Hybrid models (full + sliding layers) get one block table per group of `group_size` layers; every
    group's blocks share one pool, so a block costs group_size x page bytes and the logged token count
    is blocks // groups x block_size.
    """

    bytes_per_token_per_layer: float
    full_layers: int
    sliding_layers: int
    window: int | None
    group_size: int
    groups: int
    block_size: int

    @property
    def page_bytes(self) -> float:
        return self.bytes_per_token_per_layer * self.block_size

    def blocks(self, available_bytes: float) -> int:
        """Blocks vLLM allocates in `available_bytes` (0 when none)."""
        if available_bytes <= 0 or self.page_bytes <= 0 or self.group_size <= 0:
            return 0
        return int(available_bytes // self.page_bytes // self.group_size)

    def tokens(self, available_bytes: float) -> int:
        """vLLM's `GPU KV cache size: N tokens` for `available_bytes` of KV memory."""
        return self.blocks(available_bytes) // max(1, self.groups) * self.block_size

    def needed_bytes(self, max_model_len: int, max_num_batched_tokens: int) -> float:
        """KV bytes one request of max_model_len needs (vLLM's check before it starts)."""
        bs = self.block_size
        full_blocks = math.ceil(max_model_len / bs)
        if not self.sliding_layers:
            return self.page_bytes * full_blocks * self.group_size
        held = min((self.window or max_model_len) - 1 + max_num_batched_tokens, max_model_len)
        sliding_blocks = math.ceil(held / bs) + 1
        full_groups = math.ceil(self.full_layers / self.group_size) if self.full_layers else 0
        sliding_groups = self.groups - full_groups
        return self.page_bytes * self.group_size * (full_groups * full_blocks + sliding_groups * sliding_blocks)

    def max_model_len_for(self, available_bytes: float, max_num_batched_tokens: int, upper: int) -> int:
        """The longest max_model_len whose one request fits `available_bytes` (vLLM's estimate), 0 if none."""
        if available_bytes <= 0 or self.needed_bytes(1, max_num_batched_tokens) > available_bytes:
            return 0
        lo, hi = 1, max(1, upper)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.needed_bytes(mid, max_num_batched_tokens) <= available_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo


def kv_layout(model: Model, kv_dtype: str, tp: int, pp: int, settings: EngineSettings) -> KVLayout:
    """The KV layout of one GPU (TP splits KV heads, PP splits layers; MLA is whole on every rank)."""
    b = precision(kv_dtype, "kv").bytes
    if model.is_mla:
        per_layer = (model.kv_lora_rank + model.qk_rope_head_dim) * b
    else:
        heads = model.kv_heads if tp == 1 else max(1, math.ceil(model.kv_heads / tp))
        per_layer = 2 * heads * model.head_dim * b
    full = math.ceil(model.layer_kinds.count("full") / pp)
    sliding = math.ceil(model.layer_kinds.count("sliding") / pp)
    if settings.engine == "v0" or not sliding or not full:
        # One group of every layer (V0 keeps the whole context for sliding layers too).
        return KVLayout(per_layer, full + sliding, 0, None, full + sliding, 1, settings.block_size)
    lo, hi = min(full, sliding), max(full, sliding)
    group = hi if hi < lo * 1.5 else lo
    groups = math.ceil(full / group) + math.ceil(sliding / group)
    return KVLayout(per_layer, full, sliding, model.sliding_window, group, groups, settings.block_size)


def model_max_len(model: Model) -> int | None:
    """The model's own context limit (vLLM's default max_model_len)."""
    return model.max_position_embeddings


def check_max_model_len(model: Model, max_model_len: int | None, where: str = "--max-model-len") -> None:
    """max_model_len must be a whole number of tokens > 0 and at most the model's own limit."""
    if max_model_len is None:
        return
    if isinstance(max_model_len, bool) or not isinstance(max_model_len, int) or max_model_len <= 0:
        raise ParamsError(f"{where} = {max_model_len}; expected a whole number of tokens > 0")
    limit = model_max_len(model)
    if limit and max_model_len > limit:
        raise ParamsError(
            f"{where} = {max_model_len:,} is over {model.name}'s max_position_embeddings ({limit:,}); "
            f"expected at most {limit:,} (vLLM refuses a longer max_model_len)"
        )


@dataclass(frozen=True)
class EngineProfile:
    """Where one GPU's memory goes under vLLM, whether the engine starts, and the replica's KV capacity."""

    visible_memory_gib: float
    visible_memory_basis: str
    gpu_memory_utilization: float
    budget_gib: float
    weights_gib: float
    activation_peak_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    cuda_graph_in_budget: bool
    kv_cache_gib: float
    kv_bytes_per_token_per_gpu: float
    kv_cache_blocks: int
    kv_pool_blocks: int
    block_size: int
    kv_cache_tokens: int
    max_model_len: int
    kv_needed_gib: float
    estimated_max_model_len: int
    refusal: str | None
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
    """vLLM's accounting on one GPU and its start-up check.

    budget = visible x gpu_memory_utilization; KV = budget - weights - activation peak - non-torch
    (- CUDA graphs when vLLM >= 0.21 counts them). vLLM refuses to start when KV <= 0 ("No available
    memory for the cache blocks") or when one request of max_model_len needs more KV than that ("To serve
    at least one request with the models's max seq len ..."): `fits` is false exactly then.
    """
    visible = total_memory_gib or (settings.visible_memory_gib or {}).get(gpu.name) or gpu.visible_memory_gib
    basis = (
        "given"
        if total_memory_gib
        else ("params.yaml" if (settings.visible_memory_gib or {}).get(gpu.name) else gpu.visible_memory_basis)
    )
    budget = visible * settings.gpu_memory_utilization
    weight_bytes, expert_bytes = _weight_parts(model, weight_dtype, tp, pp, ep, gpu, settings)
    weights = weight_bytes / GIB
    act = activation_peak_bytes(model, settings, gpu) / GIB
    non_torch = non_torch_gib(gpu, tp, pp, settings, expert_bytes / GIB)
    graphs = cuda_graph_gib(settings)
    kv_gib = budget - weights - act - non_torch - (graphs if settings.cuda_graph_in_budget else 0.0)
    layout = kv_layout(model, kv_dtype, tp, pp, settings)
    shape = kv_shape(model, kv_dtype, tp, pp)
    kv_bytes = max(kv_gib, 0.0) * GIB
    blocks = layout.blocks(kv_bytes)
    tokens = layout.tokens(kv_bytes)
    mml = settings.max_model_len or max(1, math.ceil(context_tokens))
    if settings.engine == "v0":
        needed = math.ceil(mml / settings.block_size) * layout.page_bytes * layout.group_size
    else:
        needed = layout.needed_bytes(mml, settings.max_num_batched_tokens)
    upper = max(mml, model_max_len(model) or mml)
    est = layout.max_model_len_for(kv_bytes, settings.max_num_batched_tokens, upper)
    if kv_gib <= 0:
        refusal: str | None = "no_memory"
    elif (tokens < mml) if settings.engine == "v0" else (needed > kv_bytes):
        refusal = "max_model_len"
    else:
        refusal = None
    block = settings.block_size
    ctx_blocks = math.ceil(context_tokens / block) * block
    # Sliding layers keep the window plus the block being filled, in whole blocks.
    window_blocks = math.ceil((shape.window + block) / block) * block if shape.window else ctx_blocks
    seq_bytes = shape.growing_bytes_per_token * ctx_blocks + shape.sliding_bytes_per_token * min(
        ctx_blocks, window_blocks
    )
    max_conc = int(kv_bytes // seq_bytes) if seq_bytes > 0 and kv_gib > 0 else 0
    if refusal:
        max_conc = 0
    graph_text = (
        f"{graphs:g} GiB per GPU" + (" (prior)" if settings.cuda_graph_gib is None and graphs else "")
        if graphs
        else "0 (enforce_eager)"
    )
    return EngineProfile(
        visible_memory_gib=visible,
        visible_memory_basis=basis,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        budget_gib=budget,
        weights_gib=weights,
        activation_peak_gib=act,
        non_torch_gib=non_torch,
        cuda_graph_gib=graphs,
        cuda_graph_in_budget=settings.cuda_graph_in_budget,
        kv_cache_gib=kv_gib,
        kv_bytes_per_token_per_gpu=shape.all_layers_bytes_per_token,
        kv_cache_blocks=tokens // block,
        kv_pool_blocks=blocks,
        block_size=block,
        kv_cache_tokens=tokens,
        max_model_len=mml,
        kv_needed_gib=needed / GIB,
        estimated_max_model_len=est,
        refusal=refusal,
        context_tokens=context_tokens,
        max_concurrency_per_replica=max_conc,
        fits=refusal is None and max_conc >= 1,
        formula={
            "budget_gib": f"{visible:g} GiB visible ({basis}) x gpu_memory_utilization {settings.gpu_memory_utilization:g}",
            "weights_gib": f"{weight_dtype} linear layers, 16-bit embeddings/norms/router, split over TP {tp} x PP {pp}"
            + (f", experts over EP {ep}" if ep > 1 else ""),
            "activation_peak_gib": f"{settings.max_num_batched_tokens} batched tokens x (4h + qkv + 3 x MLP) x 2 B + "
            f"fp32 logits x 2 for {min(settings.max_num_seqs, settings.max_num_batched_tokens)} sequences"
            + (
                f", or {V1_SAMPLER_BYTES_PER_SEQ_VOCAB[gpu.arch]:g} B per sequence x vocabulary entry (V1 sampler run, "
                f"{gpu.arch}) if larger"
                if settings.engine == "v1" and gpu.arch in V1_SAMPLER_BYTES_PER_SEQ_VOCAB
                else ""
            ),
            "non_torch_gib": f"{settings.non_torch_gib:g} GiB"
            + ("" if settings.engine == "v0" else f" x {NON_TORCH_ARCH_SCALE.get(gpu.arch, 1.0):g} ({gpu.arch}, V1)")
            + (
                " + NCCL/all-reduce buffers (TP/PP > 1"
                + ("" if settings.engine == "v0" else f", x {NON_TORCH_MULTI_GPU_ARCH_SCALE.get(gpu.arch, 1.0):g}")
                + ")"
                if tp * pp > 1
                else ""
            )
            + (
                f" + {settings.slack_frac:g} x routed-expert weights (allocator slack, V1)"
                if settings.slack_frac and expert_bytes
                else ""
            )
            + "; calibrated on public vLLM logs",
            "cuda_graph_gib": graph_text
            + (
                "; subtracted from the KV budget (vLLM >= 0.21)"
                if settings.cuda_graph_in_budget
                else "; outside the budget"
            ),
            "kv_cache_gib": "budget - weights - activation peak - non-torch"
            + (" - CUDA graphs" if settings.cuda_graph_in_budget else "")
            + " (per GPU)",
            "kv_cache_tokens": f"whole {block}-token blocks of {layout.group_size} layers x "
            f"{layout.bytes_per_token_per_layer:g} B"
            + (f", {layout.groups} block tables (hybrid)" if layout.groups > 1 else ""),
            "fits": f"vLLM starts only if KV > 0 and one request of max_model_len {mml:,} fits "
            f"({needed / GIB:.2f} GiB needed)",
            "max_concurrency_per_replica": f"KV blocks ({block} tokens) / blocks per sequence at {context_tokens:,.0f} tokens",
        },
    )


def kv_capacity(
    model: Model,
    gpu: GPU,
    weight_dtype: str,
    kv_dtype: str,
    tp: int,
    pp: int,
    settings: EngineSettings,
    ep: int | None = None,
) -> dict[str, Any]:
    """The KV capacity a simulator needs for one replica: blocks, block size, tokens, and whether vLLM starts.

    `blocks` = tokens // block_size: the blocks of one block table (every TP/PP rank holds its share of each
    block, so the replica has as many as one GPU). For a hybrid model (full + sliding layers) vLLM's pool has
    `pool_blocks` shared by `groups` block tables and logs `tokens`; a single-table simulator uses `blocks`.
    Uses settings.max_model_len (default: the model's own limit).
    """
    from pipeline.parallelism import expert_parallel

    ep_ = ep if ep is not None else expert_parallel(model, tp)
    mml = settings.max_model_len or model_max_len(model) or 8192
    prof = engine_profile(model, gpu, weight_dtype, kv_dtype, tp, pp, ep_, mml, replace(settings, max_model_len=mml))
    layout = kv_layout(model, kv_dtype, tp, pp, settings)
    return {
        "blocks": prof.kv_cache_blocks,
        "pool_blocks": prof.kv_pool_blocks,
        "block_size": prof.block_size,
        "tokens": prof.kv_cache_tokens,
        "groups": layout.groups,
        "kv_cache_gib": prof.kv_cache_gib,
        "max_model_len": mml,
        "fits": prof.refusal is None,
        "refusal": prof.refusal,
    }


# --------------------------------------------------------------------------- published logs


def measurement_settings(m: dict[str, Any], settings: EngineSettings) -> EngineSettings:
    """The engine settings a logged run used: the log's figures where stated, vLLM's defaults otherwise."""
    version = str(m.get("vllm_version") or "")
    graphs_counted = _version_at_least(version, (0, 21)) if version else settings.cuda_graph_in_budget
    return replace(
        settings,
        gpu_memory_utilization=m.get("gpu_memory_utilization") or settings.gpu_memory_utilization,
        max_num_batched_tokens=int(m.get("max_num_batched_tokens") or settings.max_num_batched_tokens),
        max_num_seqs=int(m.get("max_num_seqs") or settings.max_num_seqs),
        block_size=int(m.get("block_size") or settings.block_size),
        max_model_len=int(m["max_model_len"]) if m.get("max_model_len") else settings.max_model_len,
        visible_memory_gib=None,
        engine=str(m.get("engine") or settings.engine),
        mxfp4_backend=(m.get("mxfp4_backend") or None) or settings.mxfp4_backend,
        cuda_graph_in_budget=graphs_counted,
    )


def _logged_ep(m: dict[str, Any], model: Model, tp: int) -> int:
    """The expert-parallel degree a logged run used: the log's `ep` column, else 1 for the engine rows (vLLM keeps
    experts tensor-parallel unless --enable-expert-parallel is given), else the sizing layout (older catalog rows)."""
    from pipeline.parallelism import expert_parallel

    if m.get("ep"):
        return int(m["ep"])
    if m.get("engine") in ("v0", "v1") and "log_id" in m:
        return 1
    return expert_parallel(model, tp)


def _version_at_least(version: str, floor: tuple[int, int]) -> bool:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 2:
        parts.append(0)
    return tuple(parts) >= floor


def compare_to_measurement(m: dict[str, Any], model: Model, gpu: GPU, settings: EngineSettings) -> list[dict[str, Any]]:
    """Predicted vs published vLLM figures for one logged run: one row per figure the log states.

    Rows: weights, non-torch and activation GiB (where logged), available KV GiB, KV tokens predicted end
    to end, KV tokens from the logged KV GiB (the block arithmetic alone), the KV one max_model_len request
    needs, the CUDA-graph prior against the logged graph pool, and whether the engine starts.
    """
    if "engine" not in m:
        # A row of the older catalog file (no engine column): PR #10511's V0 accounting, graphs outside.
        m = {**m, "engine": "v0", "vllm_version": "0.6"}
    s = measurement_settings(m, settings)
    tp = int(m.get("tp") or 1)
    ep = _logged_ep(m, model, tp)
    ctx = float(s.max_model_len or 1)
    prof = engine_profile(
        model, gpu, m["weights"], m["kv"], tp, 1, ep, ctx, s, total_memory_gib=m.get("total_gpu_memory_gib")
    )
    layout = kv_layout(model, m["kv"], tp, 1, s)
    checks = set(str(m.get("checks") or "").split(";")) - {""}
    legacy = not checks

    def wanted(name: str) -> bool:
        return legacy or name in checks

    rows: list[dict[str, Any]] = []

    def add(component: str, predicted: Any, measured: Any) -> None:
        if measured is None or measured == "":
            return
        rows.append({"component": component, "predicted": predicted, "measured": measured})

    logged_weights = m.get("logged_weights_gib", m.get("weights_gib"))
    if wanted("weights"):
        add("weights_gib", prof.weights_gib, logged_weights)
    if legacy:
        add("activation_peak_gib", prof.activation_peak_gib, m.get("activation_peak_gib"))
        add("non_torch_gib", prof.non_torch_gib, m.get("non_torch_gib"))
    logged_kv = m.get("logged_available_kv_gib", m.get("kv_cache_gib"))
    if (wanted("kv_gib") and not legacy) or (legacy and m.get("total_gpu_memory_gib")):
        add("kv_cache_gib", prof.kv_cache_gib, logged_kv)
    logged_tokens = m.get("logged_kv_tokens", m.get("kv_cache_tokens"))
    if wanted("kv_tokens") and not legacy:
        add("kv_cache_tokens", prof.kv_cache_tokens, logged_tokens)
    if logged_tokens and logged_kv and (legacy or "kv_tokens_from_logged_gib" in checks or "kv_tokens" in checks):
        add("kv_cache_tokens (from the logged KV GiB)", layout.tokens(float(logged_kv) * GIB), logged_tokens)
    if wanted("kv_needed") and not legacy:
        add("kv_needed_gib", prof.kv_needed_gib, m.get("logged_kv_needed_gib"))
    if wanted("cuda_graph") and not legacy:
        # The prior (the engine profile's figure when none is given) against the graph pool the log reports.
        add("cuda_graph_gib", cuda_graph_gib(replace(s, cuda_graph_gib=None)), m.get("logged_cuda_graph_gib"))
    for r in rows:
        r["error_pct"] = (r["predicted"] / r["measured"] - 1) * 100 if r["measured"] else None
    if "fits" in checks and m.get("outcome") in ("started", "refused"):
        rows.append(
            {
                "component": "fits",
                "predicted": "starts" if prof.fits else f"refuses ({prof.refusal})",
                "measured": "starts" if m["outcome"] == "started" else f"refuses ({m.get('refusal') or '?'})",
                "error_pct": None,
                "agrees": prof.fits == (m["outcome"] == "started"),
            }
        )
    for r in rows:
        r.update(
            measurement=m.get("measurement") or m.get("log_id"),
            model=model.name,
            gpu=gpu.name,
            tp=tp,
            source=m.get("source", ""),
        )
    return rows


def fit_calibration(logs: list[dict[str, Any]], models: dict[str, Model], gpus: dict[str, GPU]) -> dict[str, float]:
    """Fit the calibration constants on the `fit` rows of the start-up logs (closed form, in this order).

    Only V1 rows take part (the V0 rows check the engine figures as they are). "Gap" is the profile's available
    KV minus the logged one with the constants fitted so far (and the ones still to fit at 0).
    1. NON_TORCH_ARCH_SCALE[hopper]: the non-torch GiB single-GPU Hopper rows log, over engine.non_torch_gib.
    2. NON_TORCH_MULTI_GPU_ARCH_SCALE[hopper]: what multi-GPU Hopper rows log beyond that, over
       engine.non_torch_gib_multi_gpu - engine.non_torch_gib.
    3. V1_SAMPLER_BYTES_PER_SEQ_VOCAB[hopper]: on dense Hopper rows, what the logged KV leaves for the activation
       peak, per (max_num_seqs x vocabulary entry).
    4. NON_TORCH_ARCH_SCALE[ampere]: the gap of dense single-GPU Ampere rows, over engine.non_torch_gib.
    5. NON_TORCH_MULTI_GPU_ARCH_SCALE[ampere]: the gap of multi-GPU Ampere rows, over the multi-GPU difference.
    6. V1_WEIGHT_SLACK_FRAC: the gap of MoE rows, as a share of their routed-expert bytes per GPU.
    7. CUDA_GRAPH_GIB_PRIOR: the mean captured-graph GiB the fit rows log.
    Each constant is the mean over its rows (not below 0); a constant without rows keeps its current value.
    The tables are restored before returning.
    """
    base = EngineSettings()
    extra = base.non_torch_gib_multi_gpu - base.non_torch_gib
    fit = [m for m in logs if m.get("role") == "fit" and m.get("engine") == "v1"]
    with_kv = [m for m in fit if m.get("logged_available_kv_gib") not in (None, "")]
    tables = (NON_TORCH_ARCH_SCALE, NON_TORCH_MULTI_GPU_ARCH_SCALE, V1_SAMPLER_BYTES_PER_SEQ_VOCAB)
    saved = [dict(t) for t in tables]
    out = {
        "NON_TORCH_ARCH_SCALE[hopper]": NON_TORCH_ARCH_SCALE["hopper"],
        "NON_TORCH_MULTI_GPU_ARCH_SCALE[hopper]": NON_TORCH_MULTI_GPU_ARCH_SCALE["hopper"],
        "V1_SAMPLER_BYTES_PER_SEQ_VOCAB[hopper]": V1_SAMPLER_BYTES_PER_SEQ_VOCAB["hopper"],
        "NON_TORCH_ARCH_SCALE[ampere]": NON_TORCH_ARCH_SCALE["ampere"],
        "NON_TORCH_MULTI_GPU_ARCH_SCALE[ampere]": NON_TORCH_MULTI_GPU_ARCH_SCALE["ampere"],
        "V1_WEIGHT_SLACK_FRAC": V1_WEIGHT_SLACK_FRAC,
    }

    def arch(m: dict[str, Any]) -> str:
        return gpus[m["gpu"]].arch

    def tp_of(m: dict[str, Any]) -> int:
        return int(m.get("tp") or 1)

    def profile(m: dict[str, Any], slack: float) -> tuple[EngineProfile, float]:
        model, gpu = models[m["model"]], gpus[m["gpu"]]
        s = replace(measurement_settings(m, base), weight_slack_frac=slack)
        ep = _logged_ep(m, model, tp_of(m))
        prof = engine_profile(
            model,
            gpu,
            m["weights"],
            m["kv"],
            tp_of(m),
            1,
            ep,
            float(s.max_model_len or 1),
            s,
            total_memory_gib=m.get("total_gpu_memory_gib"),
        )
        return prof, routed_expert_bytes(model, m["weights"], tp_of(m), 1, ep, gpu, s) / GIB

    def gap(m: dict[str, Any], slack: float = 0.0) -> float:
        return profile(m, slack)[0].kv_cache_gib - float(m["logged_available_kv_gib"])

    def mean(vals: list[float], default: float) -> float:
        return max(0.0, sum(vals) / len(vals)) if vals else default

    def dense(m: dict[str, Any]) -> bool:
        return not models[m["model"]].is_moe

    try:
        for family in ("hopper", "ampere"):
            for t in tables:
                if family in t:
                    t[family] = 0.0
        # 1-2: Hopper non-torch from the logged figure.
        hop = [m for m in fit if arch(m) == "hopper" and m.get("logged_non_torch_gib") not in (None, "")]
        single = [float(m["logged_non_torch_gib"]) for m in hop if tp_of(m) == 1]
        scale = mean([v / base.non_torch_gib for v in single], out["NON_TORCH_ARCH_SCALE[hopper]"])
        NON_TORCH_ARCH_SCALE["hopper"] = out["NON_TORCH_ARCH_SCALE[hopper]"] = scale
        multi = [(float(m["logged_non_torch_gib"]) - scale * base.non_torch_gib) / extra for m in hop if tp_of(m) > 1]
        NON_TORCH_MULTI_GPU_ARCH_SCALE["hopper"] = out["NON_TORCH_MULTI_GPU_ARCH_SCALE[hopper]"] = mean(
            multi, out["NON_TORCH_MULTI_GPU_ARCH_SCALE[hopper]"]
        )
        # 3: the Hopper V1 sampler peak from what the logged KV leaves on dense rows.
        ks = []
        for m in (m for m in with_kv if arch(m) == "hopper" and dense(m)):
            prof, _ = profile(m, 0.0)
            model = models[m["model"]]
            s = measurement_settings(m, base)
            left = prof.activation_peak_gib + gap(m)
            ks.append(left * GIB / (min(s.max_num_seqs, s.max_num_batched_tokens) * model.vocab))
        V1_SAMPLER_BYTES_PER_SEQ_VOCAB["hopper"] = out["V1_SAMPLER_BYTES_PER_SEQ_VOCAB[hopper]"] = mean(
            ks, out["V1_SAMPLER_BYTES_PER_SEQ_VOCAB[hopper]"]
        )
        # 4-5: Ampere non-torch from the KV shortfall of dense rows.
        amp = [m for m in with_kv if arch(m) == "ampere" and dense(m)]
        NON_TORCH_ARCH_SCALE["ampere"] = out["NON_TORCH_ARCH_SCALE[ampere]"] = mean(
            [gap(m) / base.non_torch_gib for m in amp if tp_of(m) == 1], out["NON_TORCH_ARCH_SCALE[ampere]"]
        )
        NON_TORCH_MULTI_GPU_ARCH_SCALE["ampere"] = out["NON_TORCH_MULTI_GPU_ARCH_SCALE[ampere]"] = mean(
            [gap(m) / extra for m in amp if tp_of(m) > 1], out["NON_TORCH_MULTI_GPU_ARCH_SCALE[ampere]"]
        )
        # 6: allocator slack from the MoE rows.
        slacks = []
        for m in (m for m in with_kv if not dense(m)):
            _, experts = profile(m, 0.0)
            if experts > 0:
                slacks.append(gap(m, 0.0) / experts)
        out["V1_WEIGHT_SLACK_FRAC"] = mean(slacks, out["V1_WEIGHT_SLACK_FRAC"])
    finally:
        for t, old in zip(tables, saved, strict=True):
            t.clear()
            t.update(old)
    graphs = [
        float(m["logged_cuda_graph_gib"])
        for m in logs
        if m.get("role") == "fit" and m.get("logged_cuda_graph_gib") not in (None, "")
    ]
    out["CUDA_GRAPH_GIB_PRIOR"] = sum(graphs) / len(graphs) if graphs else CUDA_GRAPH_GIB_PRIOR
    return out
