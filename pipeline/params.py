"""Load and validate params.yaml, one section per stage, before any stage computes a number.

The pydantic models below are the one params schema: every section, key, default, bound and
description of params.yaml is declared here once (params.yaml sets values; a key it leaves out
gets the default here, and its comments are a reader's summary; `sizing params --defaults` prints every key
with its effective value, default and description, pipeline/params_doc.py). `params.schema.json` (the
editor's completion and hover text, `# yaml-language-server: $schema=params.schema.json`) is
generated from them: `python -m pipeline.params --schema` (or `make schema`), and
tests/test_params_schema.py fails while the committed file is stale.

A wrong key, a wrong type or a value out of range stops with one line that names the file, the
dotted key, the value and what was expected; an unknown section or key also names the nearest
valid one (`unknown key tco.planned_utilisation (did you mean 'planned_utilization'?)`). Values
keep the type they were written with (`max_gap_s: 600` stays the integer 600, the default 2000.0
stays a float), so outputs that echo a param keep their bytes. Callers get plain dicts
(`validate_section`, `section`, `validate_all`), every default filled in.

Adding a section (e.g. `sim:` for the engine simulator) is one class in this module, above
`Params`:

    @register("sim")
    class Sim(Section):
        "The engine simulator (issue 13): ..."  # the docstring is the section's description

        step_ms: Num = Field(1.0, gt=0, description="simulated scheduler step (ms)")
        seed: int = Field(0, ge=0, description="...")

then `make schema`, add `sim:` to params.yaml (dvc.yaml's `params: [sim]` needs the section there;
list only the keys a reader should see) and the section to its stage's `sections` in
pipeline/run.py. `validate_schema(data)` checks every section, `validate_all(data, root)` also
the GPUs, models and catalogs they name (what the runner calls). Building blocks:
`Num` (an int or a float, kept as written; bounds via `Field(ge=, gt=, le=, lt=)`), `Name` (a
non-empty string), `Literal[...]` for choices, `X | None` for a key that may be null, a nested
`Strict` model for a mapping with fixed keys, `Sparse` for one whose unset keys stay absent.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from pipeline import runtime

if __name__ == "__main__":  # the dvc `params` stage: without the project's packages, rerun in .venv
    runtime.ensure_project_python("pipeline.params", sys.argv[1:])

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline import paths
from pipeline.errors import ParamsError
from pipeline.rates import BURST_RATES, RATE_NAMES

FILE = "params.yaml"  # how every message names the file
SCHEMA_FILE = "params.schema.json"  # at the project root, generated from the models below

FORMATS = ("auto", "generic", "azure", "burstgpt", "mooncake")
TIMESTAMP_UNITS = ("auto", "s", "ms", "us", "ns", "datetime")
SIZING_RATES = RATE_NAMES  # pipeline.rates.RateName: the one list of rate names
NORMALIZED_COLUMNS = (
    "arrival_s",
    "input_tokens",
    "output_tokens",
    "tenant",
    "model",
    "tier",
    "session_id",
    "hash_ids",
    "ttft_ms",
    "e2e_ms",
)

# --------------------------------------------------------------------------- building blocks


def _as_written(value: Any, handler: Callable[[Any], Any]) -> Any:
    """Check an int or float (not a bool) and its bounds, then return it as written: 50 stays an int."""
    handler(value)
    return value


def expect(text: str) -> WrapValidator:
    """Any failure of the value it annotates reads `KEY = VALUE; expected <text>` (a leaf value only)."""

    def wrap(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("params_expected", "expected {expected}", {"expected": text}) from None

    return WrapValidator(wrap)


# An int or a float (never a bool), kept as written; bounds on the field: `x: Num = Field(1.0, gt=0)`.
Num = Annotated[float, WrapValidator(_as_written)]


def num(**bounds: float) -> Any:
    """Num with its bounds inside, for a key that may be null: `x: num(gt=0) | None = None`."""
    return Annotated[float, Field(**bounds), WrapValidator(_as_written)]


Name = Annotated[str, Field(min_length=1), expect("a name (a string)")]


def names(*default: str, description: str, allow_empty: bool = False) -> Any:
    """A list of names (GPUs, precisions, modules): non-empty unless `allow_empty`."""
    return Field(list(default), min_length=None if allow_empty else 1, description=description)


class Strict(BaseModel):
    """A mapping with fixed keys: unknown keys are errors and no value is coerced ('5' is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _absent_not_null(schema: dict[str, Any]) -> None:
    """A Sparse model's JSON Schema: a key that is not set is absent, so it shows no `default: null`."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class Sparse(Strict):
    """A Strict mapping whose unset keys stay absent when dumped, in the order written (tier rules, scenarios)."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        obj = handler(data)
        if isinstance(data, dict):
            obj._order = tuple(data)
        return obj

    @model_serializer(mode="wrap")
    def _only_given(self, handler: Callable[[Any], Any]) -> dict[str, Any]:
        data = handler(self)
        return {key: data[key] for key in self._order if key in data}


class Section(Strict):
    """One top-level section of params.yaml (register it with `@register(name)`)."""

    section_name: ClassVar[str] = ""


SECTION_MODELS: dict[str, type[Section]] = {}  # section name -> model, in params.yaml's order

S = TypeVar("S", bound=type[Section])


def register(name: str) -> Callable[[S], S]:
    """Class decorator: `@register("fleet")` makes the model the schema of params.yaml's `fleet:` section."""

    def add(cls: S) -> S:
        cls.section_name = name
        SECTION_MODELS[name] = cls
        return cls

    return add


def rule_error(text: str) -> PydanticCustomError:
    """A rule across keys; `{where}` in the text becomes the dotted key of the mapping that breaks it."""
    return PydanticCustomError("params_rule", "{text}", {"text": text})


# --------------------------------------------------------------------------- the sections


@register("slo")
class Slo(Section):
    """The service-level objectives every deployment must meet (p99 targets)."""

    ttft_p99_ms: Num = Field(2000.0, gt=0, description="time to first token, p99 target (ms)")
    itl_p99_ms: num(gt=0) | None = Field(50.0, description="inter-token latency, p99 target (ms); null: no ITL SLO")


TokenBound = Annotated[int, Field(ge=0), expect("an integer >= 0")]


class TierRule(Sparse):
    """One tier rule: requests within the bounds get this tier; the first rule that matches wins."""

    # a bound that is set is an integer >= 0 (null is not a bound); one that is not set stays absent
    name: Name = Field(description="the tier these requests get")
    max_input_tokens: TokenBound = Field(None, description="input tokens at most")
    min_input_tokens: TokenBound = Field(None, description="input tokens at least")
    max_output_tokens: TokenBound = Field(None, description="output tokens at most")
    min_output_tokens: TokenBound = Field(None, description="output tokens at least")


TIER_RULE_KEYS = tuple(TierRule.model_fields)


class Tiers(Strict):
    """How each request gets its tier: a column of the log (optionally renamed by `map`) or `rules`."""

    column: Annotated[str, expect("'auto', 'none' or a column name")] | None = Field(
        "auto", description="auto (tier, else model, else tenant) | none | a column name"
    )
    rules: list[TierRule] = Field(
        [], description="e.g. [{name: short, max_input_tokens: 2048}, {name: long}]; exclusive with map"
    )
    map: Annotated[
        dict[str, Name],
        expect("a mapping of a tier-column value to a tier name, e.g. {support-chat: small, doc-qa: large}"),
    ] = Field({}, description="column value -> tier (unlisted values keep their own); exclusive with rules")

    @model_validator(mode="after")
    def _map_or_rules(self) -> Tiers:
        if self.map and self.rules:
            raise rule_error("{where}.map and {where}.rules are exclusive: use one")
        return self


ColumnName = Annotated[str, Field(min_length=1), expect("a column name")]


@register("workload")
class Workload(Section):
    """Step 1: the traffic log and how to read it."""

    source: str = Field(
        "data/raw/traffic", description="a log file or a folder of log files, relative to the project root"
    )
    format: Literal[FORMATS] = Field("auto", description="the log's layout (auto: detected from its columns)")
    pattern: str | None = Field(None, description="glob inside a source folder, e.g. 'year=*/**/*.parquet'")
    columns: dict[Literal[NORMALIZED_COLUMNS], ColumnName] = Field(
        {},
        description="generic layout: normalized name -> your column, e.g. {arrival_s: ts, input_tokens: prompt_tokens}",
    )
    timestamp_unit: Literal[TIMESTAMP_UNITS] = Field("auto", description="unit of the arrival timestamps")
    sizing_rate: Literal[SIZING_RATES] = Field("per_minute_p95", description="the arrival rate the fleet is sized for")
    max_failed_share: Num = Field(
        0.05, ge=0, le=1, description="rows with 0 output tokens are excluded; more than this share is an error"
    )
    long_input_tokens: int = Field(2048, ge=1, description="archetype: p50 input at or above this is 'long'")
    long_output_tokens: int = Field(512, ge=1, description="archetype: p50 output at or above this is 'long'")
    agentic_min_calls_per_session: Num = Field(
        3, ge=1, description="archetype: sessions with at least this many calls on average read as agentic"
    )
    batch_jitter_s: Num = Field(
        0.05,
        gt=0,
        description="arrivals this close together form one burst (batched-arrival detection, method.md step 1)",
    )
    cap_min_share: Num = Field(
        0.01, ge=0, le=1, description="this share of rows at one exact maximum reads as a cap (truncated lengths)"
    )
    max_gap_s: Num = Field(600, gt=0, description="inter-arrival gaps longer than this are reported")
    max_span_days: Num = Field(400, gt=0, description="a longer span means the timestamp unit is wrong")
    chunk_rows: int = Field(
        1_000_000, ge=1000, description="unused (validation runs in DuckDB over the whole log); kept so old params load"
    )
    memory_limit: str = Field(
        "1GB",
        description="DuckDB memory cap while reading, validating and sorting the log, e.g. 1GB, 512MB "
        "(larger sorts spill to disk)",
    )
    tiers: Tiers = Field(default_factory=Tiers, description="how each request gets its tier")


@register("hardware")
class Hardware(Section):
    """Step 2: the GPUs to evaluate."""

    gpus: list[Name] = names(
        "A100-80GB",
        "L40S",
        "H100-SXM",
        "H200",
        "B200",
        "MI300X",
        description="GPU names or aliases from data/catalog/gpus.csv",
    )


ModelName = Annotated[str, Field(min_length=1), expect("a model name (data/catalog/models) or a path to a config.json")]


@register("model")
class Model(Section):
    """The model served."""

    name: str = Field("Llama-3.1-70B", description="a data/catalog/models/NAME.json name, or a path to a config.json")
    tiers: dict[str, ModelName] = Field(
        {}, description="tier -> model for tiers served by another model (the rest serve model.name)"
    )


@register("quantization")
class Quantization(Section):
    """Step 5: the precisions to evaluate (quantize before choosing parallelism)."""

    weights: list[Name] = names(
        "bf16", "fp8", "int8", description="weight precisions to evaluate: fp32 bf16 fp16 fp8 int8 int4 fp4 mxfp4"
    )
    kv: list[Name] = names("bf16", "fp8", description="KV-cache precisions to evaluate: fp32 bf16 fp16 fp8")


@register("memory")
class Memory(Section):
    """Step 4: the guide's memory floor (GB = 1e9 bytes)."""

    activation_frac: Num = Field(0.2, ge=0, le=1, description="activations = this x the 16-bit weight size")
    overhead_frac: Num = Field(0.075, ge=0, le=0.5, description="framework overhead: 5-10% of each GPU's VRAM")
    overhead_gb: num(ge=0) | None = Field(
        None, description="a fixed overhead in GB instead of overhead_frac (the guide's worked example uses 15)"
    )
    weight_alignment_tax: Num = Field(
        0.0, ge=0, le=0.5, description="resident weights above params x bytes (vLLM BF16 loads within 0.2%)"
    )
    headroom: Num = Field(0.5, ge=0, le=5, description="deployment headroom on the total (deploy with 30-50%)")
    concurrency: num(gt=0) | None = Field(None, description="override the p95 concurrency from metrics/workload.json")
    context_tokens: num(gt=0) | None = Field(None, description="override the p95 context from metrics/workload.json")


@register("lora")
class Lora(Section):
    """LoRA adapters resident at once (0: none)."""

    max_adapters: int = Field(0, ge=0, description="adapters resident at once (0: none)")
    rank: int = Field(16, ge=1, description="adapter rank")
    targets: list[Name] = names("q_proj", "k_proj", "v_proj", "o_proj", description="modules the adapters target")


GiB = Annotated[float, Field(gt=0), WrapValidator(_as_written), expect("a number of GiB > 0")]


@register("engine")
class Engine(Section):
    """The calibrated vLLM engine profile (capacity axis, step 6a)."""

    gpu_memory_utilization: Num = Field(0.9, gt=0, le=1, description="share of GPU memory vLLM may use")
    max_num_batched_tokens: int = Field(8192, ge=1, description="tokens per scheduler step")
    max_num_seqs: int = Field(256, ge=1, description="sequences in flight per replica")
    block_size: int = Field(16, ge=1, description="KV-cache block size (tokens)")
    non_torch_gib: Num = Field(
        1.8,
        ge=0,
        description="memory outside torch, 1 GPU per replica, vLLM V0 on an H100 (PR #10511: 1.79 GiB); the V1 engine scales it per GPU family, fitted on tests/data/vllm_startup_logs",
    )
    non_torch_gib_multi_gpu: Num = Field(
        3.6,
        ge=0,
        description="the same with TP/PP > 1, NCCL buffers, V0 on an H100 (PR #10511, TP 2: 3.58 GiB); V1 scales it per GPU family",
    )
    visible_memory_gib: dict[str, GiB] = Field(
        {}, description="GPU -> total memory torch reports (GiB), to override data/catalog/gpus.csv"
    )
    max_model_len: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="vLLM --max-model-len; the engine refuses to start unless one request this long fits its KV "
        "memory (null: the workload's p95 context)",
    )
    cuda_graph_gib: num(ge=0) | None = Field(
        None, description="CUDA-graph memory per GPU in GiB (null: the 0.5 GiB prior; no public log fits it yet)"
    )
    cuda_graph_in_budget: bool = Field(True, description="vLLM >= 0.21 subtracts CUDA-graph memory from the KV budget")
    enforce_eager: bool = Field(False, description="vLLM --enforce-eager: no CUDA graphs, no graph memory")
    engine: Literal["v1", "v0"] = Field("v1", description="which vLLM engine's memory accounting (v0: pre-2025)")
    mxfp4_backend: Literal["marlin", "triton"] | None = Field(
        None, description="MXFP4 kernel path (null: Marlin on Ampere/Ada, Triton elsewhere)"
    )
    weight_slack_frac: num(ge=0, le=1) | None = Field(
        None, description="allocator slack as a share of routed-expert weights (null: 0.0563 fitted for v1, 0 for v0)"
    )


def _tp_table(value: Any, handler: Callable[[Any], Any]) -> dict[int, float]:
    """TP degree -> share of step time: keys read as integers (2 or '2'), shares as floats in [0, 1)."""
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "params_expected", "expected {expected}", {"expected": "a mapping of TP degree -> share"}
        )
    out: dict[int, float] = {}
    for tp, share in value.items():
        try:
            tp_int = int(tp)
        except (TypeError, ValueError):
            tp_int = 0
        if tp_int < 1 or isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise PydanticCustomError(
                "params_item",
                "expected {expected}",
                {"key": str(tp), "value": share, "expected": "TP degree -> a share between 0 and 1"},
            )
        out[tp_int] = float(share)
    return out


TpTable = Annotated[dict[int, Annotated[float, Field(ge=0, lt=1)]], WrapValidator(_tp_table)]


@register("parallelism")
class Parallelism(Section):
    """Step 6: TP within a node, PP across nodes, EP for MoE."""

    max_tp: Annotated[int, Field(ge=1)] | None = Field(None, description="cap on TP (default: GPUs per node)")
    allreduce_pcie: TpTable = Field(
        {2: 0.08, 4: 0.25, 8: 0.38}, description="TP -> share of step time in all-reduce on PCIe (method.md)"
    )
    allreduce_nvlink: TpTable = Field(
        {2: 0.02, 4: 0.05, 8: 0.09}, description="TP -> share of step time in all-reduce on NVLink (method.md)"
    )


@register("roofline")
class Roofline(Section):
    """Step 6b: achievable fractions of peak."""

    bandwidth_efficiency: Num = Field(
        0.8,
        gt=0,
        le=1,
        description="achievable share of peak memory bandwidth (also the engine model's prior: b2 = b3 = 1 / this)",
    )
    prefill_mfu: Num = Field(
        0.45,
        gt=0,
        le=1,
        description="achievable model FLOPs utilization in prefill (also the engine model's prior: b1 = 1 / this)",
    )
    decode_mfu: Num = Field(0.30, gt=0, le=1, description="achievable model FLOPs utilization in decode")


@register("curve")
class Curve(Section):
    """Steps 7 and 10: the measured curves and the SLO-constrained operating point."""

    source: str = Field(
        "data/raw/benchmarks",
        description="one folder per sweep; each holds manifest.yaml and the tool's result files",
    )
    knee_ratio: Num = Field(2, gt=1, description="knee = first load where TTFT p99 / p50 exceeds this")
    gap_flag_ratio: Num = Field(
        2, gt=1, description="Little's-law ceiling / usable RPS beyond this (or below 1/this) is flagged"
    )
    max_failed_share: Num = Field(
        0.05, ge=0, le=1, description="more failed requests than this at a level up to C_max is an error"
    )
    length_tolerance: Num = Field(
        0.25, ge=0, description="a curve matches the workload when both p95 lengths are within this share (25%)"
    )
    sizing_loop: Literal["conservative", "closed", "open"] = Field(
        "conservative", description="which capacity sizes the fleet when both closed- and open-loop curves exist"
    )
    max_length_mismatch: Num = Field(
        2.0,
        gt=1,
        description="a measured curve whose p95 input or output length differs from the workload's by more than this "
        "ratio (either way) does not size the fleet as measured: its usable RPS and C_max are carried to the workload's "
        "p95 lengths with the engine model of the same deployment (both at one fixed length, as a sweep runs)",
    )


@register("routing")
class Routing(Section):
    """Step 3: one pooled fleet, one fleet per tier, or a small -> large cascade."""

    mode: Literal["auto", "route", "pooled", "cascade"] = Field(
        "auto",
        description="auto: route tiers to their own fleets when the guide's rules say it pays; route: always; "
        "pooled: one fleet for all traffic; cascade: small model first, large model for the escalations",
    )
    min_large_fleet_gpus: int = Field(
        8, ge=0, description="routing pays off when the pooled large-model fleet exceeds this (guide 1.5: 8-10)"
    )
    min_simple_share: Num = Field(
        0.3, ge=0, le=1, description="... and at least this share of requests goes to a smaller model (measurable skew)"
    )
    critical_tiers: list[Name] = names(description="tiers that get N+2 spares", allow_empty=True)
    cascade_small_model: str | None = Field(
        None, description="cascade: the model every request tries first, e.g. Llama-3.1-8B"
    )
    escalation: Num = Field(0.3, ge=0, le=1, description="cascade: share of requests the large model reruns (20-40%)")


def _replay_window(value: Any) -> str:
    """fleet.replay_window: busiest-hour, all, or START:END seconds with 0 <= START < END."""
    if isinstance(value, str):
        t = value.strip()
        if t in ("busiest-hour", "all"):
            return t
        a, sep, b = t.partition(":")
        try:
            ok = bool(sep) and 0 <= float(a) < float(b) < float("inf")
        except ValueError:
            ok = False
        if ok:
            return t
    raise PydanticCustomError(
        "params_expected",
        "expected {expected}",
        {"expected": "busiest-hour, all, or START:END in seconds from the log's first arrival, 0 <= START < END"},
    )


ReplayWindow = Annotated[str, BeforeValidator(_replay_window)]


@register("fleet")
class Fleet(Section):
    """Step 11: instances, headroom, spares, schedule, guardrails."""

    safety_factor: Num = Field(1.2, ge=1, description="1.2 predictable traffic, 1.5 new or high variance")
    expected_growth: Num = Field(
        0.2, ge=0, description="traffic growth to provision for (0.2 = 20%); headroom = max(growth, burst absorption)"
    )
    burst_rate: Literal[BURST_RATES] = Field(
        "per_minute_p99", description="burst absorption = this rate / the sizing rate - 1"
    )
    critical: bool = Field(False, description="true: N+2 spare instances instead of N+1")
    failure_domains: int = Field(1, ge=1, description="spares per failure domain")
    min_warm_instances: int = Field(1, ge=1, description="the schedule never goes below this (never scale from zero)")
    load_path: Literal["nvme", "network_10gbe", "object_store"] = Field(
        "nvme",
        description="where weights load from: nvme (12.5 GB/s), network_10gbe (1.1 GB/s), object_store (0.75 GB/s)",
    )
    init_s: Num = Field(60, ge=0, description="engine start-up after the weights are loaded (s)")
    max_input_factor: Num = Field(2.5, ge=1, description="gateway max_input_tokens = this x p95 input (2-3)")
    circuit_breaker_factor: Num = Field(
        0.8, ge=0, le=1, description="queued requests allowed = this x TTFT SLO (s) x arrival rate (0.8-0.9)"
    )
    router: Literal["round-robin", "least-outstanding", "prefix-affinity"] = Field(
        "least-outstanding",
        description="the fleet replay's router in front of the N replicas (method.md 7b): round-robin, "
        "least-outstanding requests, or prefix-affinity (by the first prefix block's hash)",
    )
    replay_window: ReplayWindow = Field(
        "busiest-hour",
        description="the fleet replay's window of the log: busiest-hour (the minute-aligned hour holding the "
        "per-minute p99 peak), all, or START:END in seconds from the log's first arrival (e.g. 3600:7200; "
        "an explicit window with no arrivals is an error)",
    )


Price = Annotated[float, Field(gt=0), WrapValidator(_as_written), expect("a finite price in $ per GPU-hour > 0")]


@register("tco")
class Tco(Section):
    """Step 12: cost (list prices are dated and illustrative; re-check before use)."""

    pricing: Literal["on-demand", "capacity-block"] = Field(
        "on-demand", description="which list prices of data/catalog/prices.csv"
    )
    provider: str | None = Field(
        None, description="one provider's prices, e.g. AWS (default: the cheapest provider listing every compared GPU)"
    )
    prices: dict[str, Price] = Field(
        {}, description="GPU -> $ per GPU-hour, overriding data/catalog/prices.csv, e.g. {MI300X: 3.5}"
    )
    planned_utilization: Num = Field(0.8, gt=0, le=1, description="cost per token 'at planned utilization'")
    utilization_trap_below: Num = Field(
        0.4, ge=0, le=1, description="average utilization under this is called out (the utilization trap)"
    )
    allow_transferred: bool = Field(
        False,
        description="true: a candidate on a transferred curve (pooled engine-model coefficients, no sweep of it) may "
        "be the chosen plan; false: only measured or calibrated ones (with no sweep at all the run stops)",
    )


@register("validation")
class Validation(Section):
    """Step 13: production against the benchmark at the same rate (closes the loop)."""

    source: str | None = Field(
        "data/raw/production",
        description="a folder: requests.* (with ttft_ms, e2e_ms) and/or scrapes/*.prom (2+ per server); "
        "null: no production window yet",
    )
    tier: str = Field("all", description="the fleet the window comes from: all (the pooled one) or a routing tier")
    replicas: Annotated[int, Field(ge=1)] | None = Field(
        None, description="replicas serving the window (null: distinct servers in the scrapes, else the plan's)"
    )
    benchmark_gpu_util_pct: num(ge=0, le=100) | None = Field(
        None, description="DCGM GPU util % measured during the benchmark at this rate (null: not compared)"
    )
    ttft_ratio: Num = Field(1.3, ge=1, description="re-characterize when production TTFT p99 > this x the benchmark's")
    util_drop_points: Num = Field(
        20, ge=0, description="... or GPU utilization is this many points below the benchmark's"
    )
    coarse_bucket_ratio: Num = Field(
        2, gt=1, description="a histogram bucket wider than this (upper / lower) cannot resolve a percentile"
    )


class Scenario(Sparse):
    """One what-if on the pooled fleet (pipeline/scenarios.py evaluates it); unset keys keep the plan's."""

    traffic_scale: num(gt=0) | None = Field(None, description="multiply the sizing rate by this")
    gpu: str | None = Field(None, description="the GPU (data/catalog/gpus.csv)")
    weights: str | None = Field(None, description="the weight precision")
    kv: str | None = Field(None, description="the KV-cache precision")
    price_usd_per_gpu_hour: num(gt=0) | None = Field(None, description="the price in $ per GPU-hour")


def _scenario_names(value: Any) -> Any:
    """Scenario names as strings (`2026: {...}` is the scenario '2026'), an empty scenario as {}."""
    if isinstance(value, dict):
        return {str(name): ({} if sc is None else sc) for name, sc in value.items()}
    return value


Scenarios = Annotated[dict[str, Scenario], BeforeValidator(_scenario_names)]


@register("report")
class Report(Section):
    """The finance report (reports/finance.html) and the what-ifs beside it (reports/scenarios.html)."""

    previous: str | None = Field(
        None, description="last quarter's review: a folder holding its metrics/*.json, or a git tag/commit"
    )
    scenarios: Scenarios = Field(
        {}, description="NAME -> {traffic_scale, gpu, weights, kv, price_usd_per_gpu_hour}, side by side"
    )
    budget_schedule_min_days: Num = Field(
        7.0,
        ge=0,
        description="the finance budget is the scaled (hourly schedule) cost only when the log covers at least this "
        "many days and prices are on-demand; otherwise the static, peak-sized fleet",
    )


@register("recommend")
class Recommend(Section):
    """Steps 8-9: KV-cache and batching recommendations."""

    prefix_reuse_min: Num = Field(
        0.2, ge=0, le=1, description="prefix caching pays off from this share of repeated prefix blocks"
    )
    itl_spike_ratio: Num = Field(2, ge=1, description="ITL p99 / p50 above this is a spike (chunked prefill)")
    mixed_input_ratio: Num = Field(3, ge=1, description="input p95 / p50 at or above this means mixed prompt lengths")
    chunk_tokens: int = Field(512, ge=64, description="chunked-prefill token budget (512-1024)")
    spec_decode_max_concurrency: Num = Field(
        32, ge=1, description="speculative decoding up to this many requests in flight (low-medium concurrency)"
    )
    spec_decode_min_acceptance: Num = Field(
        0.6, ge=0, le=1, description="keep speculative decoding only above this draft acceptance"
    )
    pd_min_prompt_tokens: Num = Field(
        500, ge=0, description="P/D disaggregation is not worth it below this mean prompt"
    )
    kv_transfer_gbs: Num = Field(50, gt=0, description="prefill -> decode KV link, GB/s (400 Gb/s RDMA = 50 GB/s)")
    batch_work: bool = Field(False, description="the workload is batch work (KV offload to CPU only then)")
    offload_pcie_gbs: Num = Field(64, gt=0, description="CPU offload link, GB/s (PCIe 5 x16)")


@register("calibration")
class Calibration(Section):
    """Step 7b: the engine model's coefficients fitted on every sweep of curve.source (metrics/calibration.json)."""

    refine_passes: int = Field(
        24,
        ge=0,
        description="simulator passes of each deployment's step-2 refinement (0 or 1: the step-1 fit alone; "
        "`sizing calibrate` uses 60)",
    )
    lolo_passes: int = Field(
        0,
        ge=0,
        description="refinement passes of each leave-one-level-out refit (0: its step-1 fit alone, ~0.1 s a level; "
        "`sizing calibrate` uses 12). On the sample (32 levels) 4 passes added ~45 s to the stage and 8 minutes, and "
        "their refits, warm-started from the full fit, gave back its in-sample residuals: 0 keeps the bands held out",
    )
    pool: Literal["step1", "median-of-fits"] = Field(
        "median-of-fits",
        description="the pooled fit (deployments without a sweep; leave-one-deployment-out): step1 = one NNLS over "
        "every deployment's aggregates; median-of-fits = the per-parameter median of the deployments' own refined "
        "fits, with a scale per GPU family",
    )
    refine_pool: bool = Field(
        False,
        description="with pool step1: refine that pool through the simulator (~4x the time of the fits; the "
        "fidelity benchmark's --refine-pool)",
    )
    first_round_replay: bool = Field(
        False,
        description="replay a closed-loop sweep without its first round (each client's first request, all sent at "
        "t = 0) where its files' TTFT p99 lacks the tail the replay's has: a run that started after a warm-up or a "
        "ramp (docs/engine_model.md 17; off: every closed level replays as vllm bench serve starts, a burst)",
    )


def params_model() -> type[BaseModel]:
    """The whole file as one model: every registered section (SECTION_MODELS), each defaulting to its defaults."""
    return create_model(
        "Params",
        __config__=ConfigDict(extra="forbid", strict=True, title=FILE),
        __doc__="params.yaml: every threshold of the sizing method (method.md). Generated from pipeline/params.py.",
        **{name: (cls, Field(default_factory=cls, description=cls.__doc__)) for name, cls in SECTION_MODELS.items()},
    )


Params = params_model()

SCENARIO_SCHEMA = Scenario
SCENARIO_KEYS = tuple(Scenario.model_fields)

# --------------------------------------------------------------------------- messages


def check_finite(where: str, value: Any) -> None:
    """The generic rule: every number in params is finite. NaN (`.nan`) or infinity (`.inf`), at any depth
    (scenario scales, price overrides, TP tables), is a ParamsError naming the key; NaN would pass every
    bound check silently (NaN < 0 and NaN > 1 are both false)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ParamsError(f"{where} = {value!r}; expected a finite number (not NaN or infinity)")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(f"{where}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(f"{where}[{i}]", v)


def suggest(name: Any, allowed: Iterable[Any]) -> str:
    """' (did you mean 'fleet'?)' for a misspelled key, or '' when nothing is close."""
    close = _closest(name, allowed)
    return f" (did you mean '{close}'?)" if close else ""


def _closest(name: Any, allowed: Iterable[Any]) -> str | None:
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return close[0] if close else None


def _tail(name: Any, allowed: Iterable[Any]) -> str:
    """'; did you mean 'x'?' after a list of allowed names, or ''."""
    close = _closest(name, allowed)
    return f"; did you mean '{close}'?" if close else ""


def _unwrap(tp: Any) -> Any:
    """The type under Annotated[...] and `X | None`."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType) and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _type_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The declared type at a pydantic error location under `model`, or None when the walk leaves the schema."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[0 if part == "[key]" else 1]
        else:
            return None
    return _unwrap(tp)


def _kind(tp: Any) -> str:
    """What a value of this type reads as in a message: 'an integer', 'a number', 'one of a, b'."""
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping of " + ", ".join(tp.model_fields)
    words = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        dict: "a mapping",
        list: "a list",
    }
    return words.get(get_origin(tp) or tp, "a value")


def _bound(value: Any) -> str:
    """A bound as written in the schema: 0, 1, 0.5 (pydantic hands some back as floats: 0.0)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _dotted(where: str, loc: Iterable[Any]) -> str:
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _message(model: Any, where: str, err: Any) -> str:
    """One pydantic error as the project's one line (without the file), e.g. `slo.ttft_p99_ms = -5; expected ...`."""
    kind, loc, value, ctx = err["type"], tuple(err["loc"]), err.get("input"), err.get("ctx") or {}
    if loc and loc[-1] == "[key]":  # a mapping key outside its allowed names: workload.columns
        parent, key = _dotted(where, loc[:-2]), loc[-2]
        mapping = _type_at(model, loc[:-2])
        allowed = get_args(_unwrap(get_args(mapping)[0])) if get_origin(mapping) is dict else ()
        return f"{parent} has unknown key {key!r}; allowed keys: {', '.join(map(str, allowed))}{_tail(key, allowed)}"
    at = _dotted(where, loc)
    if kind == "extra_forbidden":
        holder = _type_at(model, loc[:-1])
        allowed = list(holder.model_fields) if isinstance(holder, type) and issubclass(holder, BaseModel) else []
        if len(loc) == 1:
            return f"unknown key {at}{suggest(loc[-1], allowed)}; allowed keys in '{where}': {', '.join(allowed)}"
        return f"unknown key {at}; allowed keys: {', '.join(allowed)}{_tail(loc[-1], allowed)}"
    if kind == "missing":
        holder = _type_at(model, loc[:-1])
        allowed = list(holder.model_fields) if isinstance(holder, type) and issubclass(holder, BaseModel) else []
        return f"{_dotted(where, loc[:-1])} needs a '{loc[-1]}'; allowed keys: {', '.join(allowed)}"
    if kind == "params_rule":
        return str(ctx["text"]).replace("{where}", at)
    if kind == "params_item":
        return f"{at}.{ctx['key']} = {ctx['value']!r}; expected {ctx['expected']}"
    if kind == "params_expected":
        return f"{at} = {value!r}; expected {ctx['expected']}"
    if kind == "literal_error":
        choices = get_args(_type_at(model, loc))
        if value is None:
            return f"{at} is empty; expected one of {', '.join(map(str, choices))}"
        return f"{at} = {value!r}; allowed values: {', '.join(map(str, choices))}{_tail(value, choices)}"
    if kind in _BOUNDS:
        number = "an integer" if _type_at(model, loc) is int else "a number"
        return f"{at} = {value!r}; expected {number} {_BOUNDS[kind]} {_bound(next(iter(ctx.values())))}"
    if kind == "too_short":
        return f"{at} is empty; expected a list of names"
    expected = _kind(_type_at(model, loc))
    if value is None:
        return f"{at} is empty; expected {expected}"
    if kind.endswith("_type") or kind in ("model_attributes_type", "dict_type"):
        return f"{at} = {value!r}; expected {expected}"
    return f"{at} = {value!r}; {err['msg']}"


def _validated(schema: Any, where: str, raw: Any, validate: Callable[[Any], Any]) -> Any:
    """`validate(raw)`, `schema` the type it checks: an unknown key first, then any NaN or infinity, then the
    first other error in declaration order, as one ParamsError naming the file and the dotted key."""
    try:
        value, errors = validate(raw), []
    except ValidationError as exc:
        value, errors = None, exc.errors()
    unknown = sorted(
        (e for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1), key=lambda e: str(e["loc"][0])
    )
    if unknown:
        raise ParamsError(f"{FILE}: {_message(schema, where, unknown[0])}")
    check_finite(f"{FILE}: {where}", raw)
    if errors:
        raise ParamsError(f"{FILE}: {_message(schema, where, errors[0])}")
    return value


# --------------------------------------------------------------------------- the public functions


# Validated once per run: the stage runner validates the whole params.yaml (validate_all), then marks the
# sections it hands the notebooks (mark_validated, in the kernel); a stage's validate_section on exactly
# such a section returns a copy instead of validating it again. Any other value is validated as usual.
_VALIDATED: dict[str, str] = {}


def _fingerprint(value: Any) -> str | None:
    """The repr of a section's value, key order and key types included (None when it is not plain JSON: validated
    as usual). Not its JSON text: papermill's injection turns `{1: 0.05}` into `{"1": 0.05}`, which JSON cannot
    tell apart, and such a section must be validated again (pydantic turns the keys back into numbers)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return repr(value)


def mark_validated(sections: dict[str, dict[str, Any]]) -> None:
    """Record sections as validated (each the output of validate_section): validate_section then returns an
    equal section as it is (a copy), without validating it a second time in this process."""
    for name, value in sections.items():
        text = _fingerprint(value)
        if name in SECTION_MODELS and text is not None:
            _VALIDATED[name] = text


def validate_section(section: str, raw: dict[str, Any] | None) -> dict[str, Any]:
    """Check one section against its model and fill defaults; unknown keys are errors. A plain dict comes back
    (a validated section validates again to itself). A section the runner marked (mark_validated) is not
    validated again: an equal value comes back as a copy."""
    model = SECTION_MODELS[section]
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{FILE}: '{section}' must be a mapping of keys, got {type(raw).__name__}")
    marked = _VALIDATED.get(section)
    if marked is not None and raw and _fingerprint(raw) == marked:
        return copy.deepcopy(raw)
    return _validated(model, section, raw, model.model_validate).model_dump()


_SCENARIOS = TypeAdapter(Scenarios)


def check_scenarios(scenarios: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each scenario a mapping of known keys (SCENARIO_KEYS), each value checked by the Scenario model; the
    message names the key (`scenarios.NAME.KEY`). Only the keys a scenario sets come back."""
    return _SCENARIOS.dump_python(_validated(Scenarios, "scenarios", scenarios or {}, _SCENARIOS.validate_python))


def validate_schema(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every section of params.yaml against its model (no catalog look-ups): an unknown section is an error naming
    the nearest valid one; a missing section is all defaults."""
    unknown = sorted(set(data) - set(SECTION_MODELS), key=str)
    if unknown:
        raise ParamsError(
            f"{FILE}: unknown section '{unknown[0]}'{suggest(unknown[0], SECTION_MODELS)}; "
            f"allowed sections: {', '.join(SECTION_MODELS)}"
        )
    return {name: validate_section(name, data.get(name)) for name in SECTION_MODELS}


def validate_all(data: dict[str, Any], root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every section of params.yaml, and every GPU and model it names, checked before any stage computes.

    A stage runs only on its own sections, but a wrong key anywhere, a negative SLO or an unknown GPU
    stops the first stage that runs with a message naming the key and the allowed values.
    """
    from pipeline import catalog
    from pipeline.errors import InputError

    out = validate_schema(data)
    gpus = catalog.load_gpus(root)
    named = [(f"hardware.gpus[{i}]", g) for i, g in enumerate(out["hardware"]["gpus"])]
    named += [(f"report.scenarios.{n}.gpu", sc["gpu"]) for n, sc in out["report"]["scenarios"].items() if sc.get("gpu")]
    for key, gpu in named:
        try:
            catalog.find_gpu(gpu, gpus)
        except InputError:
            raise ParamsError(
                f"{FILE}: {key} = {gpu!r} is not in data/catalog/gpus.csv; allowed values: {', '.join(gpus)}"
            ) from None
    models = [("model.name", out["model"]["name"])]
    models += [(f"model.tiers.{t}", m) for t, m in out["model"]["tiers"].items()]
    if out["routing"]["cascade_small_model"]:
        models.append(("routing.cascade_small_model", out["routing"]["cascade_small_model"]))
    for key, name in models:
        try:
            catalog.load_model(name, root)
        except InputError as exc:
            raise ParamsError(f"{FILE}: {key}: {exc}") from None
    _check_catalogs(root or paths.ROOT)
    if out["report"]["previous"]:  # a bad ref or a malformed previous JSON stops the first stage, not the report
        from pipeline import previous

        previous.previous_metrics(out["report"]["previous"], root or paths.ROOT)
    return out


def _check_catalogs(root: Path) -> None:
    """The other catalog files the stages read (models.csv, the vLLM measurements, prices.csv), read once here so
    a short row, a non-UTF-8 byte or a bad number stops the first stage, not the memory or report stage later."""
    from pipeline import catalog

    catalog.load_model_cards(root)
    catalog.load_measurements(root)
    if (root / "data" / "catalog" / catalog.PRICES_CSV).exists():
        catalog.load_prices(root)


def defaults() -> dict[str, dict[str, Any]]:
    """Every section with nothing set: the values the pipeline uses for keys params.yaml leaves out."""
    return {name: cls().model_dump() for name, cls in SECTION_MODELS.items()}


def load(path: str | Path | None = None) -> dict[str, Any]:
    """Read params.yaml as a plain mapping (no validation)."""
    from pipeline import io

    path = Path(path) if path else paths.PARAMS
    try:
        data = yaml.safe_load(io.read_text(path, paths.display_path(path))) or {}
    except FileNotFoundError as exc:
        raise ParamsError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must be a mapping of sections (workload, slo, ...)")
    return data


def section(name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """One validated section of params.yaml, defaults filled in."""
    data = load() if data is None else data
    return validate_section(name, data.get(name))


# --------------------------------------------------------------------------- params.schema.json


def json_schema() -> dict[str, Any]:
    """The JSON Schema of params.yaml (draft 2020-12), generated from the models: editors complete keys, show each
    description and default, and flag unknown keys and values out of bounds."""
    schema = params_model().model_json_schema()  # sections registered since import included
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """params.schema.json's exact bytes: sorted keys, 2-space indent, a trailing newline (same models, same bytes)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def write_schema(path: str | Path | None = None) -> Path:
    """Write params.schema.json (default: at the project root) from the models; returns its path."""
    from pipeline import io

    out = Path(path) if path else paths.ROOT / SCHEMA_FILE
    io.write_text(out, schema_text())
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.params [PATH]`: validate_all on the whole file (the DVC `params` stage).
    `python -m pipeline.params --schema [OUT]`: write params.schema.json from the models (`make schema`).

    DVC reruns a stage only when a param it tracks changes, so a misspelled section (`fleets:`) would leave
    every stage "up to date". The `params` stage tracks the whole file and runs first: any edit reruns this
    check (about a second), and a bad key anywhere stops `dvc repro` with one line, exit status 1.
    """
    from pipeline.errors import InputError, one_line

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--schema"]:
        print(f"wrote {write_schema(argv[1] if len(argv) > 1 else None)}")
        return 0
    path = Path(argv[0]) if argv else paths.PARAMS
    try:
        validate_all(load(path), path.resolve().parent)
    except InputError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
