"""The one params schema (issue 16): pydantic models in pipeline/params.py hold every default, bound and
description; params.schema.json is generated from them and must be current; unknown names suggest the nearest."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import yaml

from pipeline import params
from pipeline.errors import ParamsError
from tests.conftest import ROOT

FIX = "run `make schema` (or `.venv/bin/python -m pipeline.params --schema`) and commit params.schema.json"

# The defaults the code used before the models (the hand-written `Spec(...)` table of pipeline/params.py at
# commit time of issue 16), copied by hand, with their Python types: 2000.0 is a float, 600 an int. A key
# params.yaml leaves out gets exactly this value, so a model default that drifts changes a number. The nine
# integers below (curve knee/gap ratios, fleet.init_s, six recommend keys) were floats in that table but integers
# in the shipped params.yaml; since params.yaml stopped repeating them, the model default is the integer the
# committed outputs were computed with (fleet.json echoes `"init_s": 60`, the report hashes its sections).
DEFAULTS = {
    "slo": {"ttft_p99_ms": 2000.0, "itl_p99_ms": 50.0},
    "workload": {
        "source": "data/raw/traffic",
        "format": "auto",
        "pattern": None,
        "columns": {},
        "timestamp_unit": "auto",
        "sizing_rate": "per_minute_p95",
        "max_failed_share": 0.05,
        "long_input_tokens": 2048,
        "long_output_tokens": 512,
        "agentic_min_calls_per_session": 3,
        "batch_jitter_s": 0.05,
        "cap_min_share": 0.01,
        "max_gap_s": 600,
        "max_span_days": 400,
        "chunk_rows": 1_000_000,
        "memory_limit": "1GB",
        "tiers": {"column": "auto", "rules": [], "map": {}},
    },
    "hardware": {"gpus": ["A100-80GB", "L40S", "H100-SXM", "H200", "B200", "MI300X"]},
    "model": {"name": "Llama-3.1-70B", "tiers": {}},
    "quantization": {"weights": ["bf16", "fp8", "int8"], "kv": ["bf16", "fp8"]},
    "memory": {
        "activation_frac": 0.2,
        "overhead_frac": 0.075,
        "overhead_gb": None,
        "weight_alignment_tax": 0.0,
        "headroom": 0.5,
        "concurrency": None,
        "context_tokens": None,
    },
    "lora": {"max_adapters": 0, "rank": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "engine": {
        "gpu_memory_utilization": 0.9,
        "max_num_batched_tokens": 8192,
        "max_num_seqs": 256,
        "block_size": 16,
        "non_torch_gib": 1.8,
        "non_torch_gib_multi_gpu": 3.6,
        "visible_memory_gib": {},
        "max_model_len": None,
        "cuda_graph_gib": None,
        "cuda_graph_in_budget": True,
        "enforce_eager": False,
        "engine": "v1",
        "mxfp4_backend": None,
        "weight_slack_frac": None,
    },
    "parallelism": {
        "max_tp": None,
        "allreduce_pcie": {2: 0.08, 4: 0.25, 8: 0.38},
        "allreduce_nvlink": {2: 0.02, 4: 0.05, 8: 0.09},
    },
    "roofline": {"bandwidth_efficiency": 0.8, "prefill_mfu": 0.45, "decode_mfu": 0.30},
    "curve": {
        "source": "data/raw/benchmarks",
        "knee_ratio": 2,
        "gap_flag_ratio": 2,
        "max_failed_share": 0.05,
        "length_tolerance": 0.25,
        "sizing_loop": "conservative",
        "max_length_mismatch": 2.0,
    },
    "routing": {
        "mode": "auto",
        "min_large_fleet_gpus": 8,
        "min_simple_share": 0.3,
        "critical_tiers": [],
        "cascade_small_model": None,
        "escalation": 0.3,
    },
    "fleet": {
        "safety_factor": 1.2,
        "expected_growth": 0.2,
        "burst_rate": "per_minute_p99",
        "critical": False,
        "failure_domains": 1,
        "min_warm_instances": 1,
        "load_path": "nvme",
        "init_s": 60,
        "max_input_factor": 2.5,
        "circuit_breaker_factor": 0.8,
        "router": "least-outstanding",
        "replay_window": "busiest-hour",
    },
    "tco": {
        "pricing": "on-demand",
        "provider": None,
        "prices": {},
        "planned_utilization": 0.8,
        "utilization_trap_below": 0.4,
        "allow_transferred": False,
    },
    "validation": {
        "source": "data/raw/production",
        "tier": "all",
        "replicas": None,
        "benchmark_gpu_util_pct": None,
        "ttft_ratio": 1.3,
        "util_drop_points": 20,
        "coarse_bucket_ratio": 2,
    },
    "report": {"previous": None, "scenarios": {}, "budget_schedule_min_days": 7.0},
    "recommend": {
        "prefix_reuse_min": 0.2,
        "itl_spike_ratio": 2,
        "mixed_input_ratio": 3,
        "chunk_tokens": 512,
        "spec_decode_max_concurrency": 32,
        "spec_decode_min_acceptance": 0.6,
        "pd_min_prompt_tokens": 500,
        "kv_transfer_gbs": 50,
        "batch_work": False,
        "offload_pcie_gbs": 64,
    },
    "calibration": {
        "refine_passes": 24,
        "lolo_passes": 0,
        "pool": "median-of-fits",
        "refine_pool": False,
        "first_round_replay": False,
    },
}


def typed(value):
    """A value with the type of every leaf and the order of every mapping, so 600 != 600.0 and order counts."""
    if isinstance(value, dict):
        return [(typed(k), typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ["list", *(typed(v) for v in value)]
    return (type(value).__name__, value)


def committed_schema() -> str:
    path = ROOT / params.SCHEMA_FILE
    assert path.exists(), f"{params.SCHEMA_FILE} is missing: {FIX}"
    return path.read_text(encoding="utf-8")


def test_schema_file_is_current():
    """The committed params.schema.json is what the models generate now, byte for byte."""
    assert committed_schema() == params.schema_text(), f"{params.SCHEMA_FILE} is stale: {FIX}"


def test_schema_text_is_deterministic_sorted_and_ends_in_a_newline():
    text = params.schema_text()
    assert text == params.schema_text() and text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # sorted keys, 2-space indent


def test_write_schema_writes_the_same_bytes(tmp_path):
    out = params.write_schema(tmp_path / "s.json")
    assert out.read_text(encoding="utf-8") == committed_schema()
    assert params.main(["--schema", str(tmp_path / "t.json")]) == 0
    assert (tmp_path / "t.json").read_bytes() == out.read_bytes()


def test_params_yaml_points_editors_at_the_schema():
    first = (ROOT / "params.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# yaml-language-server: $schema={params.SCHEMA_FILE}"


def test_defaults_are_the_values_the_code_used():
    """Every section with nothing set equals the hand-copied table above: values, int/float types, key order."""
    got = {name: params.validate_section(name, None) for name in DEFAULTS}
    assert typed(got) == typed(DEFAULTS)
    assert list(params.SECTION_MODELS) == list(DEFAULTS), "a new section: add its defaults, checked by hand, above"
    assert typed(params.defaults()) == typed(DEFAULTS)


def test_schema_defaults_are_the_model_defaults():
    """The defaults an editor shows (params.schema.json) are the ones the code uses."""
    schema = json.loads(committed_schema())
    for name, section in DEFAULTS.items():
        ref = schema["properties"][name]["$ref"].rsplit("/", 1)[1]
        props = schema["$defs"][ref]["properties"]
        assert set(props) == set(section), name
        for key, value in section.items():
            if isinstance(value, dict) and key == "tiers":
                continue  # a nested model: its own $defs entry
            shown = props[key]["default"]
            assert shown == (json.loads(json.dumps(value)) if value is not None else None), f"{name}.{key}"


def test_every_key_has_a_description():
    """The explanation of each key lives in the models (params.yaml need not repeat it)."""
    missing = []
    for name, cls in params.SECTION_MODELS.items():
        assert cls.__doc__, name
        for key, field in cls.model_fields.items():
            if not field.description:
                missing.append(f"{name}.{key}")
    for cls in (params.Tiers, params.TierRule, params.Scenario):
        missing += [f"{cls.__name__}.{k}" for k, f in cls.model_fields.items() if not f.description]
    assert not missing


def test_shipped_params_yaml_validates_against_the_json_schema():
    """The generated JSON Schema accepts the shipped file (what an editor checks) ..."""
    schema = json.loads(committed_schema())
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    data["parallelism"] = {
        k: {str(tp): v for tp, v in t.items()} if isinstance(t, dict) else t for k, t in data["parallelism"].items()
    }  # JSON keys are strings
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"fleets": {}}, "fleets"),
        ({"tco": {"planned_utilisation": 0.7}}, "tco.planned_utilisation"),
        ({"slo": {"ttft_p99_ms": -5}}, "slo.ttft_p99_ms"),
        ({"workload": {"format": "csvv"}}, "workload.format"),
        ({"fleet": {"critical": "yes"}}, "fleet.critical"),
        ({"workload": {"columns": {"arrival": "ts"}}}, "workload.columns"),
        ({"workload": {"tiers": {"rules": [{"max_input_tokens": 5}]}}}, "workload.tiers.rules[0]"),
        ({"report": {"scenarios": {"x": {"traffic": 2}}}}, "report.scenarios.x.traffic"),
        ({"engine": {"gpu_memory_utilization": 1.5}}, "engine.gpu_memory_utilization"),
    ],
)
def test_bad_values_are_rejected_by_the_schema_and_by_the_models(change, path):
    """... and rejects what the models reject: an editor flags the same mistakes the pipeline stops on."""
    schema = json.loads(committed_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(change, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(ParamsError) as err:
        params.validate_schema(change)
    assert str(err.value).startswith("params.yaml: ") and path in str(err.value)


@pytest.mark.parametrize(
    ("section", "raw", "message"),
    [
        # nested unknown keys name the nearest valid key too (top-level keys and sections already did)
        (
            "workload",
            {"tiers": {"colum": "x"}},
            "params.yaml: unknown key workload.tiers.colum; allowed keys: column, rules, map; did you mean 'column'?",
        ),
        (
            "workload",
            {"columns": {"arrival": "ts"}},
            "params.yaml: workload.columns has unknown key 'arrival'; allowed keys: arrival_s, input_tokens, "
            "output_tokens, tenant, model, tier, session_id, hash_ids, ttft_ms, e2e_ms; did you mean 'arrival_s'?",
        ),
        (
            "report",
            {"scenarios": {"x": {"traffic": 2}}},
            "params.yaml: unknown key report.scenarios.x.traffic; allowed keys: traffic_scale, gpu, weights, kv, "
            "price_usd_per_gpu_hour; did you mean 'traffic_scale'?",
        ),
        (
            "fleet",
            {"load_path": "nvmee"},
            "params.yaml: fleet.load_path = 'nvmee'; allowed values: nvme, network_10gbe, object_store; "
            "did you mean 'nvme'?",
        ),
        # the rules the hand-written checks had, each naming the dotted key, the value and what was expected
        (
            "fleet",
            {"safety_factor": math.inf},  # only a lower bound: inf passes it, the finite rule does not
            "params.yaml: fleet.safety_factor = inf; expected a finite number (not NaN or infinity)",
        ),
        ("lora", {"rank": 0}, "params.yaml: lora.rank = 0; expected an integer >= 1"),
        ("lora", {"rank": 16.0}, "params.yaml: lora.rank = 16.0; expected an integer"),
        ("slo", {"ttft_p99_ms": "5"}, "params.yaml: slo.ttft_p99_ms = '5'; expected a number"),
        ("slo", {"ttft_p99_ms": None}, "params.yaml: slo.ttft_p99_ms is empty; expected a number"),
        ("hardware", {"gpus": []}, "params.yaml: hardware.gpus is empty; expected a list of names"),
        ("hardware", {"gpus": ["H100", 5]}, "params.yaml: hardware.gpus[1] = 5; expected a name (a string)"),
        (
            "engine",
            {"visible_memory_gib": {"H100-SXM": -1}},
            "params.yaml: engine.visible_memory_gib.H100-SXM = -1; expected a number of GiB > 0",
        ),
        (
            "tco",
            {"prices": {"H100-SXM": 0}},
            "params.yaml: tco.prices.H100-SXM = 0; expected a finite price in $ per GPU-hour > 0",
        ),
        (
            "parallelism",
            {"allreduce_pcie": {2: 1.5}},
            "params.yaml: parallelism.allreduce_pcie.2 = 1.5; expected TP degree -> a share between 0 and 1",
        ),
        (
            "workload",
            {"tiers": {"rules": [{"max_input_tokens": 5}]}},
            "params.yaml: workload.tiers.rules[0] needs a 'name'; allowed keys: name, max_input_tokens, "
            "min_input_tokens, max_output_tokens, min_output_tokens",
        ),
        (
            "workload",
            {"tiers": {"rules": [{"name": "a", "min_output_tokens": -1}]}},
            "params.yaml: workload.tiers.rules[0].min_output_tokens = -1; expected an integer >= 0",
        ),
        (
            "workload",
            {"tiers": {"map": {"a": "b"}, "rules": [{"name": "x"}]}},
            "params.yaml: workload.tiers.map and workload.tiers.rules are exclusive: use one",
        ),
        (
            "validation",
            {"benchmark_gpu_util_pct": 101},
            "params.yaml: validation.benchmark_gpu_util_pct = 101; expected a number <= 100",
        ),
        ("slo", "x", "params.yaml: 'slo' must be a mapping of keys, got str"),
    ],
)
def test_messages_name_the_file_the_key_the_value_and_what_was_expected(section, raw, message):
    with pytest.raises(ParamsError) as err:
        params.validate_section(section, raw)
    assert str(err.value) == message


def test_unknown_section_names_the_nearest_one():
    with pytest.raises(ParamsError) as err:
        params.validate_schema({"recomend": {}})
    assert str(err.value).startswith("params.yaml: unknown section 'recomend' (did you mean 'recommend'?); ")
    assert str(err.value).endswith("allowed sections: " + ", ".join(DEFAULTS))


def test_values_keep_the_type_they_were_written_with():
    """No coercion: an int stays an int and a float a float (outputs that echo a param keep their bytes), a
    string is never a number, and the TP tables read their keys as integers and their shares as floats."""
    slo = params.validate_section("slo", {"ttft_p99_ms": 2000, "itl_p99_ms": 50.5})
    assert typed(slo) == typed({"ttft_p99_ms": 2000, "itl_p99_ms": 50.5})
    assert typed(params.validate_section("workload", {"max_gap_s": 60.0})["max_gap_s"]) == ("float", 60.0)
    table = params.validate_section("parallelism", {"allreduce_pcie": {"4": 0, 2: 0.1}})["allreduce_pcie"]
    assert typed(table) == typed({4: 0.0, 2: 0.1})


def test_scenarios_and_tier_rules_keep_only_the_keys_written_in_their_order():
    """Unset scenario keys stay absent (the scenarios table echoes `changes`), in the order written."""
    sc = params.validate_section("report", {"scenarios": {2026: {"kv": "fp8", "traffic_scale": 2}, "empty": None}})
    assert typed(sc["scenarios"]) == typed({"2026": {"kv": "fp8", "traffic_scale": 2}, "empty": {}})
    rules = params.validate_section("workload", {"tiers": {"rules": [{"min_input_tokens": 9, "name": "long"}]}})
    assert typed(rules["tiers"]) == typed(
        {"column": "auto", "rules": [{"min_input_tokens": 9, "name": "long"}], "map": {}}
    )
    assert params.check_scenarios({"x": {"gpu": "H200"}}) == {"x": {"gpu": "H200"}}


def test_a_validated_section_validates_to_itself():
    """Callers re-validate merged sections (`{**section, **overrides}`): the output is a valid input."""
    every = params.validate_all(params.load(ROOT / "params.yaml"), ROOT)
    for name, section in every.items():
        assert typed(params.validate_section(name, section)) == typed(section), name
