"""Load and validate params.yaml, one section per stage, before any stage computes a number.

A wrong key, a wrong type or a value out of range stops with a message that names the key
and the allowed values (DEVELOPERS.md: bad input gets a clear error, no traceback).
"""

from __future__ import annotations

import difflib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import runtime

if __name__ == "__main__":  # the dvc `params` stage: without the project's packages, rerun in .venv
    runtime.ensure_project_python("pipeline.params", sys.argv[1:])

import yaml

from pipeline import paths
from pipeline.errors import ParamsError

FORMATS = ("auto", "generic", "azure", "burstgpt", "mooncake")
TIMESTAMP_UNITS = ("auto", "s", "ms", "us", "ns", "datetime")
SIZING_RATES = (
    "mean",
    "per_second_p95",
    "per_second_p99",
    "per_minute_p95",
    "per_minute_p99",
    "peak_1s",
)
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


@dataclass(frozen=True)
class Spec:
    """One allowed key: its type(s), default, allowed choices and numeric bounds."""

    types: tuple[type, ...]
    default: Any
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    nullable: bool = False
    doc: str = ""


NUM = (int, float)

SCHEMAS: dict[str, dict[str, Spec]] = {
    "slo": {
        "ttft_p99_ms": Spec(NUM, 2000.0, minimum=0, exclusive_minimum=True, doc="time-to-first-token p99 target"),
        "itl_p99_ms": Spec(
            NUM,
            50.0,
            minimum=0,
            exclusive_minimum=True,
            nullable=True,
            doc="inter-token latency p99 target",
        ),
    },
    "workload": {
        "source": Spec(
            (str,),
            "data/raw/traffic",
            doc="a log file or a folder of log files, relative to the project root",
        ),
        "format": Spec((str,), "auto", choices=FORMATS),
        "pattern": Spec((str,), None, nullable=True, doc="glob inside a source folder, e.g. '**/*.parquet'"),
        "columns": Spec((dict,), {}, doc="generic layout: normalized name -> column name in the file"),
        "timestamp_unit": Spec((str,), "auto", choices=TIMESTAMP_UNITS),
        "sizing_rate": Spec((str,), "per_minute_p95", choices=SIZING_RATES),
        "max_failed_share": Spec(NUM, 0.05, minimum=0, maximum=1),
        "long_input_tokens": Spec((int,), 2048, minimum=1),
        "long_output_tokens": Spec((int,), 512, minimum=1),
        "agentic_min_calls_per_session": Spec(NUM, 3, minimum=1),
        "batch_jitter_s": Spec(
            NUM,
            0.05,
            minimum=0,
            exclusive_minimum=True,
            doc="arrivals this close together form one burst (batched-arrival detection, method.md step 1)",
        ),
        "cap_min_share": Spec(
            NUM,
            0.01,
            minimum=0,
            maximum=1,
            doc="share of rows at one exact maximum that signals a cap",
        ),
        "max_gap_s": Spec(
            NUM,
            600,
            minimum=0,
            exclusive_minimum=True,
            doc="inter-arrival gaps longer than this are reported",
        ),
        "max_span_days": Spec(
            NUM,
            400,
            minimum=0,
            exclusive_minimum=True,
            doc="a longer span means a wrong timestamp unit",
        ),
        "chunk_rows": Spec((int,), 1_000_000, minimum=1000, doc="unused since validation runs in DuckDB (kept so old params load)"),
        "memory_limit": Spec(
            (str,), "1GB", doc="DuckDB memory cap for ingest and validation, e.g. 1GB, 512MB (larger sorts spill to disk)"
        ),
        "tiers": Spec((dict,), {"column": "auto", "rules": [], "map": {}}),
    },
    "hardware": {
        "gpus": Spec(
            (list,),
            ["A100-80GB", "L40S", "H100-SXM", "H200", "B200", "MI300X"],
            doc="GPU names from data/catalog/gpus.csv",
        ),
    },
    "model": {
        "name": Spec((str,), "Llama-3.1-70B", doc="a data/catalog/models/NAME.json name or a path to a config.json"),
        "tiers": Spec((dict,), {}, doc="tier -> model for tiers that serve a different model"),
    },
    "quantization": {
        "weights": Spec((list,), ["bf16", "fp8", "int8"], doc="weight precisions to evaluate"),
        "kv": Spec((list,), ["bf16", "fp8"], doc="KV-cache precisions to evaluate"),
    },
    "memory": {
        "activation_frac": Spec(NUM, 0.2, minimum=0, maximum=1, doc="activations as a share of the 16-bit weight size"),
        "overhead_frac": Spec(
            NUM, 0.075, minimum=0, maximum=0.5, doc="framework overhead as a share of each GPU's VRAM"
        ),
        "overhead_gb": Spec(NUM, None, minimum=0, nullable=True, doc="a fixed overhead instead of overhead_frac"),
        "weight_alignment_tax": Spec(NUM, 0.0, minimum=0, maximum=0.5),
        "headroom": Spec(NUM, 0.5, minimum=0, maximum=5, doc="deployment headroom on the total (0.3-0.5)"),
        "concurrency": Spec(
            NUM, None, minimum=0, exclusive_minimum=True, nullable=True, doc="override the p95 concurrency"
        ),
        "context_tokens": Spec(
            NUM, None, minimum=0, exclusive_minimum=True, nullable=True, doc="override the p95 context"
        ),
    },
    "lora": {
        "max_adapters": Spec((int,), 0, minimum=0, doc="adapters resident at once"),
        "rank": Spec((int,), 16, minimum=1),
        "targets": Spec((list,), ["q_proj", "k_proj", "v_proj", "o_proj"]),
    },
    "engine": {
        "gpu_memory_utilization": Spec(NUM, 0.9, minimum=0, exclusive_minimum=True, maximum=1),
        "max_num_batched_tokens": Spec((int,), 8192, minimum=1),
        "max_num_seqs": Spec((int,), 256, minimum=1),
        "block_size": Spec((int,), 16, minimum=1),
        "non_torch_gib": Spec(NUM, 1.8, minimum=0, doc="memory outside torch with one GPU per replica"),
        "non_torch_gib_multi_gpu": Spec(NUM, 3.6, minimum=0, doc="the same with TP/PP > 1 (NCCL buffers)"),
        "visible_memory_gib": Spec((dict,), {}, doc="GPU -> total memory torch sees, to override the catalog"),
    },
    "parallelism": {
        "max_tp": Spec((int,), None, minimum=1, nullable=True, doc="cap on TP (default: GPUs per node)"),
        "allreduce_pcie": Spec((dict,), {2: 0.08, 4: 0.25, 8: 0.38}, doc="TP -> share of step time on PCIe"),
        "allreduce_nvlink": Spec((dict,), {2: 0.02, 4: 0.05, 8: 0.09}, doc="TP -> share of step time on NVLink"),
    },
    "roofline": {
        "bandwidth_efficiency": Spec(NUM, 0.8, minimum=0, exclusive_minimum=True, maximum=1),
        "prefill_mfu": Spec(NUM, 0.45, minimum=0, exclusive_minimum=True, maximum=1),
        "decode_mfu": Spec(NUM, 0.30, minimum=0, exclusive_minimum=True, maximum=1),
    },
    "curve": {
        "source": Spec(
            (str,), "data/raw/benchmarks", doc="folder of sweeps (one folder per sweep, each with manifest.yaml)"
        ),
        "knee_ratio": Spec(
            NUM, 2.0, minimum=1, exclusive_minimum=True, doc="knee: first load where TTFT p99 / p50 exceeds this"
        ),
        "gap_flag_ratio": Spec(
            NUM, 2.0, minimum=1, exclusive_minimum=True, doc="flag a Little's-law gap beyond this factor"
        ),
        "max_failed_share": Spec(NUM, 0.05, minimum=0, maximum=1, doc="failed requests allowed at a level up to C_max"),
        "length_tolerance": Spec(
            NUM, 0.25, minimum=0, doc="a curve matches the workload when both lengths are within this"
        ),
        "sizing_loop": Spec((str,), "conservative", choices=("conservative", "closed", "open")),
    },
    "routing": {
        "mode": Spec(
            (str,),
            "auto",
            choices=("auto", "route", "pooled", "cascade"),
            doc="auto: route tiers to their own fleets when the guide's rules say it pays; route: always; "
            "pooled: one fleet for all traffic; cascade: small model first, large model for the escalations",
        ),
        "min_large_fleet_gpus": Spec((int,), 8, minimum=0, doc="routing pays off beyond this many large-model GPUs"),
        "min_simple_share": Spec(
            NUM, 0.3, minimum=0, maximum=1, doc="measurable skew: this share of requests goes to a smaller model"
        ),
        "critical_tiers": Spec((list,), [], doc="tiers that get N+2 spares"),
        "cascade_small_model": Spec((str,), None, nullable=True, doc="cascade: the small model every request tries"),
        "escalation": Spec(NUM, 0.3, minimum=0, maximum=1, doc="cascade: share of requests the large model reruns"),
    },
    "fleet": {
        "safety_factor": Spec(NUM, 1.2, minimum=1, doc="1.2 predictable traffic, 1.5 new or high variance"),
        "expected_growth": Spec(NUM, 0.2, minimum=0, doc="traffic growth to provision for (0.2 = 20%)"),
        "burst_rate": Spec(
            (str,),
            "per_minute_p99",
            choices=("per_second_p95", "per_second_p99", "per_minute_p95", "per_minute_p99", "peak_1s"),
            doc="burst absorption = this rate / the sizing rate - 1",
        ),
        "critical": Spec((bool,), False, doc="N+2 spares instead of N+1"),
        "failure_domains": Spec((int,), 1, minimum=1),
        "min_warm_instances": Spec((int,), 1, minimum=1, doc="never scale below this (never from zero)"),
        "load_path": Spec((str,), "nvme", choices=("nvme", "network_10gbe", "object_store")),
        "init_s": Spec(NUM, 60.0, minimum=0, doc="engine start-up after the weights are loaded"),
        "max_input_factor": Spec(NUM, 2.5, minimum=1, doc="gateway max_input_tokens = this x p95 input (2-3)"),
        "circuit_breaker_factor": Spec(
            NUM, 0.8, minimum=0, maximum=1, doc="queue depth = this x TTFT SLO s x rate (0.8-0.9)"
        ),
    },
    "tco": {
        "pricing": Spec((str,), "on-demand", choices=("on-demand", "capacity-block"), doc="which list prices"),
        "provider": Spec((str,), None, nullable=True, doc="one provider's prices (default: the cheapest that lists every compared GPU)"),
        "prices": Spec((dict,), {}, doc="GPU -> $ per GPU-hour, overriding data/catalog/prices.csv"),
        "planned_utilization": Spec(NUM, 0.8, minimum=0, exclusive_minimum=True, maximum=1),
        "utilization_trap_below": Spec(
            NUM, 0.4, minimum=0, maximum=1, doc="average utilization under this is the trap"
        ),
    },
    "validation": {
        "source": Spec(
            (str,),
            "data/raw/production",
            nullable=True,
            doc="a folder: requests.* (with ttft_ms, e2e_ms) and/or scrapes/*.prom (null: no production window yet)",
        ),
        "tier": Spec((str,), "all", doc="the fleet the window comes from: all (the pooled one) or a routing tier"),
        "replicas": Spec(
            (int,), None, minimum=1, nullable=True, doc="replicas serving the window (null: from the scrapes)"
        ),
        "benchmark_gpu_util_pct": Spec(
            NUM, None, minimum=0, maximum=100, nullable=True, doc="DCGM GPU util % during the benchmark at this rate"
        ),
        "ttft_ratio": Spec(
            NUM, 1.3, minimum=1, doc="re-characterize when production TTFT p99 > this x the benchmark's"
        ),
        "util_drop_points": Spec(
            NUM, 20, minimum=0, doc="... or GPU utilization this many points below the benchmark's"
        ),
        "coarse_bucket_ratio": Spec(
            NUM, 2, minimum=1, exclusive_minimum=True, doc="a bucket wider than this ratio is coarse"
        ),
    },
    "report": {
        "previous": Spec((str,), None, nullable=True, doc="a previous review: a folder of metrics/*.json or a git tag"),
        "scenarios": Spec((dict,), {}, doc="NAME -> {traffic_scale, gpu, weights, kv, price_usd_per_gpu_hour}"),
    },
    "recommend": {
        "prefix_reuse_min": Spec(NUM, 0.2, minimum=0, maximum=1, doc="prefix caching pays off from this block reuse"),
        "itl_spike_ratio": Spec(NUM, 2.0, minimum=1, doc="ITL p99 / p50 above this is a spike"),
        "mixed_input_ratio": Spec(NUM, 3.0, minimum=1, doc="input p95 / p50 at or above this is mixed lengths"),
        "chunk_tokens": Spec((int,), 512, minimum=64, doc="chunked-prefill token budget (512-1024)"),
        "spec_decode_max_concurrency": Spec(NUM, 32.0, minimum=1, doc="speculative decoding up to this many in flight"),
        "spec_decode_min_acceptance": Spec(NUM, 0.6, minimum=0, maximum=1),
        "pd_min_prompt_tokens": Spec(
            NUM, 500.0, minimum=0, doc="P/D disaggregation is not worth it below this mean prompt"
        ),
        "kv_transfer_gbs": Spec(NUM, 50.0, minimum=0, exclusive_minimum=True, doc="prefill-to-decode KV link, GB/s"),
        "batch_work": Spec((bool,), False, doc="the workload is batch (KV offload to CPU allowed)"),
        "offload_pcie_gbs": Spec(NUM, 64.0, minimum=0, exclusive_minimum=True, doc="CPU offload link (PCIe 5), GB/s"),
    },
}

TIER_RULE_KEYS = (
    "name",
    "max_input_tokens",
    "min_input_tokens",
    "max_output_tokens",
    "min_output_tokens",
)


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


def suggest(name: Any, allowed: Any) -> str:
    """' (did you mean 'fleet'?)' for a misspelled key, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_value(section: str, key: str, spec: Spec, value: Any) -> Any:
    """One value against its Spec (type, choices, bounds); a ParamsError naming `section.key` otherwise."""
    where = f"params.yaml: {section}.{key}"
    check_finite(where, value)
    if value is None:
        if spec.nullable or spec.default is None:
            return None
        raise ParamsError(f"{where} is empty; expected {_expected(spec)}")
    if isinstance(value, bool) and bool not in spec.types:
        raise ParamsError(f"{where} = {value!r}; expected {_expected(spec)}")
    if not isinstance(value, spec.types):
        raise ParamsError(f"{where} = {value!r}; expected {_expected(spec)}")
    if spec.choices is not None and value not in spec.choices:
        raise ParamsError(f"{where} = {value!r}; allowed values: {', '.join(map(str, spec.choices))}")
    if spec.minimum is not None:
        bad = value <= spec.minimum if spec.exclusive_minimum else value < spec.minimum
        if bad:
            op = ">" if spec.exclusive_minimum else ">="
            raise ParamsError(f"{where} = {value!r}; expected a number {op} {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise ParamsError(f"{where} = {value!r}; expected a number <= {spec.maximum}")
    return value


def _expected(spec: Spec) -> str:
    if spec.choices:
        return "one of " + ", ".join(map(str, spec.choices))
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "a mapping",
        list: "a list",
        bool: "true/false",
    }
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in spec.types))


def validate_section(section: str, raw: dict[str, Any] | None) -> dict[str, Any]:
    """Check one section against its schema and fill defaults; unknown keys are errors."""
    schema = SCHEMAS[section]
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: '{section}' must be a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema), key=str)
    if unknown:
        raise ParamsError(
            f"params.yaml: unknown key {section}.{unknown[0]}{suggest(unknown[0], schema)}; "
            f"allowed keys in '{section}': {', '.join(schema)}"
        )
    check_finite(f"params.yaml: {section}", raw)
    out = {key: check_value(section, key, spec, raw.get(key, spec.default)) for key, spec in schema.items()}
    if section == "workload":
        _check_workload(out)
    if section == "report":
        out["scenarios"] = check_scenarios(out["scenarios"])
    for key, spec in schema.items():
        if spec.types == (list,) and out[key] is not None and (out[key] or spec.default != []):
            _check_str_list(section, key, out[key])
    if section in ("parallelism",):
        for key in ("allreduce_pcie", "allreduce_nvlink"):
            out[key] = _check_tp_table(section, key, out[key])
    if section == "model":
        for tier, name in out["tiers"].items():
            if not isinstance(name, str) or not name:
                raise ParamsError(
                    f"params.yaml: model.tiers.{tier} = {name!r}; expected a model name (data/catalog/models) or a "
                    "path to a config.json"
                )
    if section == "engine":
        for gpu, value in out["visible_memory_gib"].items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ParamsError(
                    f"params.yaml: engine.visible_memory_gib.{gpu} = {value!r}; expected a number of GiB > 0"
                )
    if section == "tco":
        for gpu, value in out["prices"].items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ParamsError(
                    f"params.yaml: tco.prices.{gpu} = {value!r}; expected a finite price in $ per GPU-hour > 0"
                )
    return out


# report.scenarios: one what-if each (pipeline/scenarios.py evaluates them); checked here, by params' own rules.
SCENARIO_SCHEMA = {
    "traffic_scale": Spec(NUM, None, minimum=0, exclusive_minimum=True, nullable=True),
    "gpu": Spec((str,), None, nullable=True),
    "weights": Spec((str,), None, nullable=True),
    "kv": Spec((str,), None, nullable=True),
    "price_usd_per_gpu_hour": Spec(NUM, None, minimum=0, exclusive_minimum=True, nullable=True),
}
SCENARIO_KEYS = tuple(SCENARIO_SCHEMA)


def check_scenarios(scenarios: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each scenario a mapping of known keys, each value checked by params' own rules; the message names the key."""
    out = {}
    for name, sc in (scenarios or {}).items():
        sc = sc or {}
        if not isinstance(sc, dict):
            raise ParamsError(f"params.yaml: scenarios.{name} must be a mapping of {', '.join(SCENARIO_KEYS)}")
        unknown = sorted(set(sc) - set(SCENARIO_KEYS))
        if unknown:
            raise ParamsError(
                f"params.yaml: unknown key scenarios.{name}.{unknown[0]}; allowed keys: {', '.join(SCENARIO_KEYS)}"
            )
        for key, value in sc.items():
            check_value(f"scenarios.{name}", key, SCENARIO_SCHEMA[key], value)
        out[str(name)] = sc
    return out


def _check_str_list(section: str, key: str, value: list[Any]) -> None:
    if not value:
        raise ParamsError(f"params.yaml: {section}.{key} is empty; expected a list of names")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ParamsError(f"params.yaml: {section}.{key}[{i}] = {item!r}; expected a name (a string)")


def _check_tp_table(section: str, key: str, value: dict[Any, Any]) -> dict[int, float]:
    out: dict[int, float] = {}
    for tp, share in value.items():
        try:
            tp_int = int(tp)
        except (TypeError, ValueError):
            tp_int = 0
        if tp_int < 1 or isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ParamsError(
                f"params.yaml: {section}.{key}.{tp} = {share!r}; expected TP degree -> a share between 0 and 1"
            )
        out[tp_int] = float(share)
    return out


def _check_workload(w: dict[str, Any]) -> None:
    bad = sorted(set(w["columns"]) - set(NORMALIZED_COLUMNS))
    if bad:
        raise ParamsError(
            f"params.yaml: workload.columns has unknown key '{bad[0]}'; allowed keys: {', '.join(NORMALIZED_COLUMNS)}"
        )
    for key, value in w["columns"].items():
        if not isinstance(value, str) or not value:
            raise ParamsError(f"params.yaml: workload.columns.{key} = {value!r}; expected a column name")
    tiers = {"column": "auto", "rules": [], "map": {}, **w["tiers"]}
    unknown = sorted(set(tiers) - {"column", "rules", "map"})
    if unknown:
        raise ParamsError(f"params.yaml: unknown key workload.tiers.{unknown[0]}; allowed keys: column, rules, map")
    if not isinstance(tiers["map"], dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in tiers["map"].items()
    ):
        raise ParamsError(
            "params.yaml: workload.tiers.map must map a value of the tier column to a tier name, "
            "e.g. {support-chat: small, doc-qa: large}"
        )
    if tiers["map"] and tiers["rules"]:
        raise ParamsError("params.yaml: workload.tiers.map and workload.tiers.rules are exclusive: use one")
    if tiers["column"] is not None and not isinstance(tiers["column"], str):
        raise ParamsError("params.yaml: workload.tiers.column must be 'auto', 'none' or a column name")
    if not isinstance(tiers["rules"], list):
        raise ParamsError("params.yaml: workload.tiers.rules must be a list of {name, max_input_tokens, ...}")
    for i, rule in enumerate(tiers["rules"]):
        if not isinstance(rule, dict) or "name" not in rule:
            raise ParamsError(
                f"params.yaml: workload.tiers.rules[{i}] needs a 'name'; allowed keys: {', '.join(TIER_RULE_KEYS)}"
            )
        for key, value in rule.items():
            if key not in TIER_RULE_KEYS:
                raise ParamsError(
                    f"params.yaml: unknown key workload.tiers.rules[{i}].{key}; allowed keys: {', '.join(TIER_RULE_KEYS)}"
                )
            if key != "name" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ParamsError(f"params.yaml: workload.tiers.rules[{i}].{key} = {value!r}; expected an integer >= 0")
    w["tiers"] = tiers


def validate_all(data: dict[str, Any], root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every section of params.yaml, and every GPU and model it names, checked before any stage computes.

    A stage runs only on its own sections, but a wrong key anywhere, a negative SLO or an unknown GPU
    stops the first stage that runs with a message naming the key and the allowed values.
    """
    from pipeline import catalog
    from pipeline.errors import InputError

    unknown = sorted(set(data) - set(SCHEMAS), key=str)
    if unknown:
        raise ParamsError(
            f"params.yaml: unknown section '{unknown[0]}'{suggest(unknown[0], SCHEMAS)}; "
            f"allowed sections: {', '.join(SCHEMAS)}"
        )
    out = {name: validate_section(name, data.get(name)) for name in SCHEMAS}
    gpus = catalog.load_gpus(root)
    named = [(f"hardware.gpus[{i}]", g) for i, g in enumerate(out["hardware"]["gpus"])]
    named += [(f"report.scenarios.{n}.gpu", sc["gpu"]) for n, sc in out["report"]["scenarios"].items() if sc.get("gpu")]
    for key, gpu in named:
        try:
            catalog.find_gpu(gpu, gpus)
        except InputError:
            raise ParamsError(
                f"params.yaml: {key} = {gpu!r} is not in data/catalog/gpus.csv; allowed values: {', '.join(gpus)}"
            ) from None
    models = [("model.name", out["model"]["name"])]
    models += [(f"model.tiers.{t}", m) for t, m in out["model"]["tiers"].items()]
    if out["routing"]["cascade_small_model"]:
        models.append(("routing.cascade_small_model", out["routing"]["cascade_small_model"]))
    for key, name in models:
        try:
            catalog.load_model(name, root)
        except InputError as exc:
            raise ParamsError(f"params.yaml: {key}: {exc}") from None
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


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.params [PATH]`: validate_all on the whole file (the DVC `params` stage).

    DVC reruns a stage only when a param it tracks changes, so a misspelled section (`fleets:`) would leave
    every stage "up to date". The `params` stage tracks the whole file and runs first: any edit reruns this
    check (about a second), and a bad key anywhere stops `dvc repro` with one line, exit status 1.
    """
    from pipeline.errors import InputError, one_line

    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else paths.PARAMS
    try:
        validate_all(load(path), path.resolve().parent)
    except InputError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
