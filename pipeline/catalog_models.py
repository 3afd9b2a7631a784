"""The model catalog: Hugging Face config.json files (data/catalog/models/), model cards (models.csv) and
published vLLM memory measurements (vllm_memory_measurements.csv).

Parameter counts are computed from the config (embeddings, attention, MLP or experts, norms), never read
from a name, so a user's own config.json works the same as the shipped ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.catalog_csv import norm_name, parse_number, read_csv_rows
from pipeline.errors import InputError

MODELS_CSV = "models.csv"
MODELS_DIR = "models"
MEASUREMENTS_CSV = "vllm_memory_measurements.csv"


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by part, so weights can be quantized part by part (embeddings stay 16-bit)."""

    embedding: int
    lm_head: int
    attention: int
    attention_replicated: int
    dense_mlp: int
    routed_experts: int
    routed_experts_active: int
    shared_experts: int
    router: int
    norms: int

    @property
    def total(self) -> int:
        return (
            self.embedding
            + self.lm_head
            + self.attention
            + self.attention_replicated
            + self.dense_mlp
            + self.routed_experts
            + self.shared_experts
            + self.router
            + self.norms
        )

    @property
    def active(self) -> int:
        return self.total - self.routed_experts + self.routed_experts_active

    @property
    def linear(self) -> int:
        """Parameters in the linear layers a weight-quantization recipe converts."""
        return self.attention + self.attention_replicated + self.dense_mlp + self.routed_experts + self.shared_experts


@dataclass(frozen=True)
class Model:
    """A model as the sizing math needs it, read from a Hugging Face config.json."""

    name: str
    path: str
    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    tie_embeddings: bool
    layer_kinds: tuple[str, ...]
    sliding_window: int | None
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_experts: int = 0
    moe_layers: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    q_lora_rank: int = 0
    native_dtype: str = "bf16"
    quant_method: str | None = None
    max_position_embeddings: int | None = None
    params: ParamBreakdown = field(default=None)  # type: ignore[assignment]

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def total_params(self) -> int:
        return self.params.total

    @property
    def active_params(self) -> int:
        return self.params.active

    @property
    def attention_kind(self) -> str:
        if self.is_mla:
            return "MLA"
        n_sliding = self.layer_kinds.count("sliding")
        base = "MHA" if self.kv_heads == self.heads else "GQA"
        if n_sliding:
            return f"{base}, {n_sliding} of {self.layers} layers sliding-window {self.sliding_window}"
        return base

    def describe(self) -> str:
        """One line: architecture, parameter counts, attention."""
        moe = (
            f", MoE {self.num_experts} experts top-{self.experts_per_token}"
            + (f" + {self.shared_experts} shared" if self.shared_experts else "")
            if self.is_moe
            else ""
        )
        return (
            f"{self.name}: {self.total_params / 1e9:.2f}B params ({self.active_params / 1e9:.2f}B active){moe}, "
            f"{self.layers} layers, {self.attention_kind}"
        )


DTYPE_NAMES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "float": "fp32",
}


MAX_COUNT = 10**9  # no config count is larger (vocab 262k, hidden 16k, experts 256): 1e12 is a typo
MAX_LAYERS = 10_000  # the layer pattern is built per layer


def _whole(value: Any, path: str, key: str, needed_for: str, minimum: int) -> int:
    """A count from a config.json field: a finite whole JSON number >= minimum (no strings, no NaN/Infinity),
    and a plausible one (at most MAX_COUNT, MAX_LAYERS layers)."""
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and value.is_integer()
    limit = MAX_LAYERS if key == "num_hidden_layers" else MAX_COUNT
    if not ok or not minimum <= value <= limit:
        raise InputError(
            f"{path}: field '{key}' = {value!r}; expected a whole number from {minimum} to {limit:,} ({needed_for})"
        )
    return int(value)


def _get(
    cfg: dict[str, Any], path: str, key: str, needed_for: str, default: Any = ..., minimum: int | None = None
) -> Any:
    """A count field of config.json; a missing one takes `default` or is an error naming the field.

    The minimum is 1 for a field without a default or with a non-zero one (layers, heads, sizes) and 0 for
    the optional features that default to 0 (experts, MLA ranks): 0 heads or -80 layers is an error here,
    not a ZeroDivisionError or a negative memory floor later.
    """
    if minimum is None:
        minimum = 0 if default == 0 else 1
    if key in cfg and cfg[key] is not None:
        return _whole(cfg[key], path, key, needed_for, minimum)
    if default is not ...:
        return default
    raise InputError(f"{path}: config.json has no field '{key}' (needed for {needed_for})")


def _layer_kinds(cfg: dict[str, Any], layers: int, path: str) -> tuple[tuple[str, ...], int | None]:
    """Which layers are full attention, sliding-window or linear (constant state), from the real pattern."""
    window = cfg.get("sliding_window")
    if cfg.get("use_sliding_window") is False:
        window = None
    if window is not None:
        window = _whole(window, path, "sliding_window", "sliding-window KV cache", 1)
    pattern = cfg.get("sliding_window_pattern")
    if pattern is not None:
        pattern = _whole(pattern, path, "sliding_window_pattern", "which layers are sliding", 1)
    types = cfg.get("layer_types")
    if types is not None and not isinstance(types, list):
        raise InputError(f"{path}: field 'layer_types' = {types!r}; expected a list of layer kinds, one per layer")
    if isinstance(types, list) and types:
        if len(types) != layers:
            raise InputError(f"{path}: 'layer_types' has {len(types)} entries but num_hidden_layers is {layers}")
        kinds = []
        for t in types:
            t = str(t)
            if "linear" in t or "mamba" in t:
                kinds.append("linear")
            elif "sliding" in t or "local" in t or "chunked" in t:
                kinds.append("sliding")
            else:
                kinds.append("full")
        if "sliding" in kinds and not window:
            raise InputError(f"{path}: 'layer_types' names sliding layers but 'sliding_window' is missing")
        return tuple(kinds), int(window) if window else None
    if not window:
        return ("full",) * layers, None
    model_type = str(cfg.get("model_type", ""))
    if model_type.startswith("gemma2"):
        # HF Gemma2: is_sliding = not bool(layer_idx % 2): even layers are local.
        return tuple("sliding" if i % 2 == 0 else "full" for i in range(layers)), int(window)
    if pattern is not None and pattern > 1:
        # Gemma 3: layer i is global when (i + 1) % pattern == 0.
        return tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(layers)), int(window)
    max_pos = cfg.get("max_position_embeddings")
    if isinstance(max_pos, int) and not isinstance(max_pos, bool) and window >= max_pos:
        return ("full",) * layers, None  # a window as long as the context has no effect
    return ("sliding",) * layers, int(window)


def parse_config(cfg: dict[str, Any], name: str, path: str = "config.json") -> Model:
    """Build a Model from a config.json mapping (multimodal configs: the text_config is used)."""
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a JSON object (a Hugging Face config.json)")
    top = cfg
    if isinstance(cfg.get("text_config"), dict):
        cfg = {**{k: v for k, v in cfg.items() if k != "text_config"}, **cfg["text_config"]}
    model_type = str(top.get("model_type") or cfg.get("model_type") or "unknown")
    layers = _get(cfg, path, "num_hidden_layers", "layer count")
    hidden = _get(cfg, path, "hidden_size", "weights and activations")
    heads = _get(cfg, path, "num_attention_heads", "attention and TP divisibility")
    kv_heads = _get(cfg, path, "num_key_value_heads", "KV cache size", default=heads)
    vocab_default = 262208 if model_type.startswith("gemma3") else ...
    vocab = _get(cfg, path, "vocab_size", "embedding size", default=vocab_default)
    if kv_heads > heads or heads % kv_heads:
        raise InputError(
            f"{path}: field 'num_key_value_heads' = {kv_heads}; expected a divisor of num_attention_heads ({heads})"
        )
    head_dim = _get(cfg, path, "head_dim", "KV cache size", default=0) or hidden // heads
    if not head_dim:
        raise InputError(
            f"{path}: field 'hidden_size' = {hidden} is smaller than num_attention_heads ({heads}) and there is no "
            "'head_dim'; expected hidden_size / heads >= 1"
        )
    num_experts = _get(cfg, path, "num_local_experts", "MoE", default=0) or _get(
        cfg, path, "num_experts", "MoE", default=0
    )
    num_experts = num_experts or _get(cfg, path, "n_routed_experts", "MoE", default=0)
    is_moe = num_experts > 0
    intermediate = _get(cfg, path, "intermediate_size", "MLP weights", default=0 if is_moe else ...)
    top_k = _get(cfg, path, "num_experts_per_tok", "MoE active parameters", default=0) if is_moe else 0
    top_k = top_k or (_get(cfg, path, "experts_per_token", "MoE active parameters", default=0) if is_moe else 0)
    if is_moe and not top_k:
        raise InputError(f"{path}: MoE config has no field 'num_experts_per_tok' (needed for active parameters)")
    moe_inter = _get(cfg, path, "moe_intermediate_size", "expert size", default=intermediate) if is_moe else 0
    shared = _get(cfg, path, "n_shared_experts", "shared experts", default=0) if is_moe else 0
    first_dense = _get(cfg, path, "first_k_dense_replace", "dense layers", default=0) if is_moe else 0
    mlp_only = cfg.get("mlp_only_layers") or []
    if not isinstance(mlp_only, list):
        raise InputError(f"{path}: field 'mlp_only_layers' = {mlp_only!r}; expected a list of layer indices")
    moe_layers = max(layers - first_dense - len(mlp_only), 0) if is_moe else 0
    kv_lora = _get(cfg, path, "kv_lora_rank", "MLA KV cache", default=0)
    rope = nope = v_dim = q_lora = 0
    if kv_lora:
        rope = _get(cfg, path, "qk_rope_head_dim", "MLA KV cache")
        nope = _get(cfg, path, "qk_nope_head_dim", "MLA attention weights")
        v_dim = _get(cfg, path, "v_head_dim", "MLA attention weights")
        q_lora = _get(cfg, path, "q_lora_rank", "MLA attention weights", default=0)
    kinds, window = _layer_kinds(cfg, layers, path)
    tie = bool(cfg.get("tie_word_embeddings", model_type.startswith("gemma")))
    dtype = DTYPE_NAMES.get(str(top.get("torch_dtype") or cfg.get("torch_dtype") or "bfloat16"), "bf16")
    quant = top.get("quantization_config") or cfg.get("quantization_config") or {}
    quant_method = str(quant.get("quant_method")) if isinstance(quant, dict) and quant.get("quant_method") else None
    max_pos = cfg.get("max_position_embeddings") if isinstance(cfg.get("max_position_embeddings"), int) else None

    # ---- parameter counts (shared/reference NOTES.md section 4)
    attn_bias = bool(cfg.get("attention_bias", False)) or model_type.startswith("qwen2")
    qk_norm = model_type.startswith(("qwen3", "gemma3"))
    norms_per_layer = 4 if model_type.startswith(("gemma2", "gemma3")) else 2
    replicated = 0
    if kv_lora:
        q_up = q_lora * heads * (nope + rope) if q_lora else hidden * heads * (nope + rope)
        per_layer_attn = q_up + kv_lora * heads * (nope + v_dim) + heads * v_dim * hidden
        # vLLM keeps the low-rank down-projections (q_a, kv_a) and their norms whole on every TP rank.
        per_layer_repl = (hidden * q_lora + q_lora if q_lora else 0) + hidden * (kv_lora + rope) + kv_lora
        replicated = per_layer_repl * layers
    else:
        per_layer_attn = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
        if attn_bias:
            per_layer_attn += heads * head_dim + 2 * kv_heads * head_dim
            if model_type.startswith("gpt_oss"):
                per_layer_attn += hidden + heads  # o_proj bias and the learned attention sinks
        if qk_norm:
            per_layer_attn += 2 * head_dim
    attention = per_layer_attn * layers
    gpt_oss = model_type.startswith("gpt_oss")
    expert = (3 * hidden * moe_inter + (2 * moe_inter + hidden if gpt_oss else 0)) if is_moe else 0
    dense_layers = layers - moe_layers
    dense_mlp = dense_layers * 3 * hidden * intermediate
    routed = moe_layers * num_experts * expert
    routed_active = moe_layers * top_k * expert
    shared_params = moe_layers * shared * 3 * hidden * moe_inter
    router = moe_layers * (
        hidden * num_experts + (num_experts if (gpt_oss or model_type.startswith("deepseek")) else 0)
    )
    norms = layers * norms_per_layer * hidden + hidden
    embedding = vocab * hidden
    params = ParamBreakdown(
        embedding=embedding,
        lm_head=0 if tie else vocab * hidden,
        attention=attention,
        attention_replicated=replicated,
        dense_mlp=dense_mlp,
        routed_experts=routed,
        routed_experts_active=routed_active,
        shared_experts=shared_params,
        router=router,
        norms=norms,
    )
    return Model(
        name=name,
        path=path,
        model_type=model_type,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=vocab,
        intermediate=intermediate,
        tie_embeddings=tie,
        layer_kinds=kinds,
        sliding_window=window,
        num_experts=num_experts,
        experts_per_token=top_k,
        moe_intermediate=moe_inter,
        shared_experts=shared,
        moe_layers=moe_layers,
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=rope,
        qk_nope_head_dim=nope,
        v_head_dim=v_dim,
        q_lora_rank=q_lora,
        native_dtype=dtype,
        quant_method=quant_method,
        max_position_embeddings=max_pos,
        params=params,
    )


def read_config(path: Path, name: str | None = None) -> Model:
    """Read one config.json file into a Model; bad JSON or a missing field names the file and the field."""
    from pipeline import io

    try:
        cfg = json.loads(io.read_text(path))
    except FileNotFoundError as exc:
        raise InputError(f"model config not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected a Hugging Face config.json"
        ) from exc
    label = name or (path.parent.name if path.name == "config.json" else path.stem)
    return parse_config(cfg, label, paths.display_path(path))


def model_files(root: Path | None = None) -> dict[str, Path]:
    """Every config in data/catalog/models/: NAME.json or NAME/config.json."""
    folder = (root or paths.ROOT) / "data" / "catalog" / MODELS_DIR
    found: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.glob("*.json")):
            found[p.stem] = p
        for p in sorted(folder.glob("*/config.json")):
            found[p.parent.name] = p
    return found


def load_model(name_or_path: str, root: Path | None = None) -> Model:
    """A model by catalog name (case-insensitive) or by a path to a config.json; unknown names list the valid ones."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.is_dir() or candidate.exists():
        path = candidate / "config.json" if candidate.is_dir() else candidate
        if not path.is_absolute():
            path = (root or paths.ROOT) / path if not path.exists() else path
        return read_config(path)
    files = model_files(root)
    key = norm_name(name_or_path)
    for name, path in files.items():
        if norm_name(name) == key:
            return read_config(path, name)
    raise InputError(
        f"unknown model '{name_or_path}'; valid names: {', '.join(files) or '(none)'} "
        "(data/catalog/models/NAME.json), or give a path to a config.json"
    )


@dataclass(frozen=True)
class ModelCard:
    """What a model card states, to check computed parameter counts against."""

    model: str
    config: str
    hf_repo: str
    stated_total_params_b: float | None
    stated_active_params_b: float | None
    active_excludes_input_embedding: bool
    card_source: str


def load_model_cards(root: Path | None = None) -> dict[str, ModelCard]:
    """data/catalog/models.csv: stated parameter counts and sources for the shipped configs."""
    path = (root or paths.ROOT) / "data" / "catalog" / MODELS_CSV
    if not path.exists():
        return {}
    cards = {}
    for i, row in enumerate(read_csv_rows(path, ("model", "config")), start=2):
        cards[row["model"]] = ModelCard(
            model=row["model"],
            config=row["config"],
            hf_repo=row.get("hf_repo", ""),
            stated_total_params_b=parse_number(
                path, i, "stated_total_params_b", row.get("stated_total_params_b", ""), False
            ),
            stated_active_params_b=parse_number(
                path, i, "stated_active_params_b", row.get("stated_active_params_b", ""), False
            ),
            active_excludes_input_embedding=row.get("active_excludes_input_embedding", "").lower() == "true",
            card_source=row.get("card_source", ""),
        )
    return cards


def load_measurements(root: Path | None = None) -> list[dict[str, Any]]:
    """Published vLLM memory-profile logs (data/catalog/vllm_memory_measurements.csv), numbers parsed."""
    path = (root or paths.ROOT) / "data" / "catalog" / MEASUREMENTS_CSV
    if not path.exists():
        return []
    text_cols = {"measurement", "model", "gpu", "weights", "kv", "source"}
    out = []
    for i, row in enumerate(read_csv_rows(path, ("measurement", "model", "gpu")), start=2):
        out.append({k: (v if k in text_cols else parse_number(path, i, k, v, False)) for k, v in row.items()})
    return out
