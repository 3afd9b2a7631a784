"""The typed contracts (issue 16): metrics/operating_point.json as contracts.OperatingPointDoc, key for key.

Real components: the shipped sample sweeps through final_curve.analyze (the curve stage's logic); the
document of a whole `dvc repro` round-trips in tests/test_e2e_dvc.py. The key lists below are written out by hand
from the document, not read from the dataclass, so a renamed, dropped or reordered field fails here.
"""

from __future__ import annotations

import json

import pytest

from pipeline import curve as cv
from pipeline import final_curve, params
from pipeline.benchmarks import read_source
from pipeline.contracts import ABSENT, OperatingPointDoc
from pipeline.errors import InputError
from tests.conftest import ROOT

REQUIRED = (
    "load_kind",
    "c_max",
    "usable_rps",
    "knee",
    "littles_law_ceiling_rps",
    "littles_law_gap",
    "gap_flag",
    "slo",
    "percentile_used",
    "curve_source",
    "manifest",
    "recommendations",
    "sized_by",
    "capacities",
    "operating_point",
    "curves",
    "predicted_vs_measured",
    "skipped_files",
    "reader_notes",
    "per_tier",
    "warnings",
    "formulas",
    "sizing_basis",
    "length_match",
    "interval",
    "length_mismatch",
)
OPTIONAL = (
    "measured_usable_rps",
    "measured_c_max",
    "sizing_candidate",
    "sizing_note",
    "anchor",
    "carried",
    "candidates",
    "anchor_rule",
)


def test_the_contract_names_every_key_in_the_documents_order():
    assert OperatingPointDoc.keys() == REQUIRED + OPTIONAL
    assert OperatingPointDoc.required_keys() == REQUIRED
    assert OPTIONAL[:6] == OperatingPointDoc.SIZING_KEYS


@pytest.fixture(scope="module")
def result() -> final_curve.CurveResult:
    """The shipped sample sweeps through the curve stage's logic (no candidates, no carried sizing)."""
    sec = {
        name: params.validate_section(name, params.load(ROOT / "params.yaml").get(name))
        for name in final_curve.SECTIONS
    }
    settings = cv.Settings.from_params(sec["curve"], sec["slo"])
    sweeps = read_source(ROOT / "data" / "raw" / "benchmarks", ROOT)
    return final_curve.analyze(sweeps, final_curve.Workload(6018, 1001), settings, sec, ROOT, validate=False)


def test_the_curve_stage_logic_writes_exactly_the_contracts_keys_and_round_trips(result):
    doc = result.metrics()
    assert tuple(doc) == REQUIRED  # no candidates computed, no carried sizing: only the required keys, in order
    typed = OperatingPointDoc.from_dict(doc)
    assert typed.usable_rps == doc["usable_rps"] and typed.candidates is ABSENT
    assert json.dumps(typed.to_dict()) == json.dumps(doc)
    result.candidates, result.sizing["sizing_note"] = {}, "a note"  # the optional keys land in the document's order
    try:
        doc = result.metrics()
    finally:
        result.candidates = None
        del result.sizing["sizing_note"]
    assert tuple(doc) == (*REQUIRED, "sizing_note", "candidates", "anchor_rule")
    assert json.dumps(OperatingPointDoc.from_dict(doc).to_dict()) == json.dumps(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("usable_rps"), "metrics/operating_point.json: usable_rps: missing; expected every key of"),
        (
            lambda d: d.update(usable_rpss=1.0),
            "metrics/operating_point.json: usable_rpss: not a key of the operating point",
        ),
    ],
)
def test_a_missing_or_unknown_key_is_one_clear_line(result, change, message):
    doc = json.loads(json.dumps(result.metrics()))
    change(doc)
    with pytest.raises(InputError) as exc:
        OperatingPointDoc.from_dict(doc)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


# metrics/fleet.json and metrics/tco.json (contracts.FleetDoc, contracts.TcoDoc): the top-level keys written out
# by hand from the documents of a `dvc repro` of the sample, in their order.
FLEET_REQUIRED = (
    "per_tier",
    "total_gpus",
    "gpus_by_type",
    "plan",
    "guardrails",
    "routing",
    "pooled",
    "routed",
    "synthetic_curve",
    "schedule_rule",
    "warnings",
)
FLEET_OPTIONAL = ("replay", "replay_note")  # added by the fleet stage after fleet.plan
TCO_KEYS = (
    "per_candidate",
    "allow_transferred",
    "benchmark_next",
    "benchmark_next_rule",
    "formula",
    "prices_note",
    "price_basis",
    "price_provider",
    "like_for_like",
    "per_tier_candidates",
    "pooled",
    "routing",
    "plan",
    "per_tier",
    "totals",
    "chosen",
    "chosen_candidates",
    "chosen_basis",
    "monthly_usd",
    "annual_usd",
    "usd_per_million_output_tokens",
    "utilization",
    "utilization_trap",
    "runner_up",
    "saves_usd_per_month",
    "benchmark_next_reference",
)


def test_the_fleet_and_tco_contracts_name_every_key_in_the_documents_order():
    from pipeline.contracts import FleetDoc, TcoDoc

    assert FleetDoc.keys() == FLEET_REQUIRED + FLEET_OPTIONAL
    assert FleetDoc.required_keys() == FLEET_REQUIRED
    assert TcoDoc.keys() == TCO_KEYS == TcoDoc.required_keys()


@pytest.fixture(scope="module")
def priced():
    """fleet.plan and tco.plan on the test_pricing_basis profile (one pooled fleet, three candidate curves)."""
    from pipeline import tco
    from tests.test_pricing_basis import CANDIDATES, setup

    pr, op, fleet_json, tiers_json, _ = setup(CANDIDATES)
    return fleet_json, tco.plan(pr, op, fleet_json, tiers_json)


def test_fleet_plan_writes_the_contracts_keys_and_round_trips(priced):
    from pipeline.contracts import ABSENT, FleetDoc

    fleet_json, _ = priced
    assert tuple(fleet_json) == FLEET_REQUIRED
    typed = FleetDoc.from_dict(fleet_json)
    assert typed.plan == "pooled" and typed.total_gpus == fleet_json["per_tier"]["all"]["gpus"]
    assert typed.replay is ABSENT
    assert json.dumps(typed.to_dict()) == json.dumps(fleet_json)
    staged = {**fleet_json, "replay": None, "replay_note": "no replay"}  # what the fleet stage adds, in its order
    assert tuple(FleetDoc.from_dict(staged).to_dict()) == FLEET_REQUIRED + FLEET_OPTIONAL


def test_tco_plan_writes_the_contracts_keys_in_one_order_and_round_trips(priced):
    """A pooled plan from the start: `plan` comes before `per_tier`, as in a routed one (tco_plan.with_tiers set
    it after `per_tier` on this path before TcoDoc)."""
    from pipeline.contracts import TcoDoc

    _, out = priced
    assert tuple(out) == TCO_KEYS
    typed = TcoDoc.from_dict(out)
    assert typed.chosen == typed.plan == "pooled" and typed.chosen_candidates == {"all": typed.pooled["candidate"]}
    assert typed.monthly_usd == typed.totals["monthly_usd"]  # computed once, from the adopted plan's totals
    assert json.dumps(typed.to_dict()) == json.dumps(out)


@pytest.mark.parametrize(
    ("which", "change", "message"),
    [
        ("fleet", lambda d: d.pop("routed"), "metrics/fleet.json: routed: missing; expected every key of"),
        ("fleet", lambda d: d.update(gpus=1), "metrics/fleet.json: gpus: not a key of the fleet document"),
        ("tco", lambda d: d.pop("chosen"), "metrics/tco.json: chosen: missing; expected every key of"),
        ("tco", lambda d: d.update(monthly=1.0), "metrics/tco.json: monthly: not a key of the TCO document"),
    ],
)
def test_a_missing_or_unknown_fleet_or_tco_key_is_one_clear_line(priced, which, change, message):
    from pipeline.contracts import FleetDoc, TcoDoc

    doc = json.loads(json.dumps(priced[0] if which == "fleet" else priced[1]))
    change(doc)
    with pytest.raises(InputError) as exc:
        (FleetDoc if which == "fleet" else TcoDoc).from_dict(doc)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


# metrics/memory.json, metrics/tiers.json and metrics/calibration.json (contracts.MemoryDoc, TiersDoc,
# CalibrationDoc): the top-level keys written out by hand from the documents of a `dvc repro` of the sample.
MEMORY_KEYS = (
    "model",
    "targets",
    "hardware_hint",
    "recommended",
    "formulas",
    "roofline_efficiency",
    "candidates",
    "rejected",
    "models",
)
TIERS_KEYS = ("mode", "tiers_from", "pooled", "tiers", "critical_tiers", "params_b", "simple_share", "formulas")
CALIBRATION_REQUIRED = (
    "predictor",
    "settings",
    "terms",
    "deployments",
    "pooled",
    "warnings",
    "source",
    "term_units",
    "calibrated_deployments",
    "targets",
    "notes",
)
CALIBRATION_KEYS = (*CALIBRATION_REQUIRED[:6], "definitions", *CALIBRATION_REQUIRED[6:])  # absent with no sweep


def test_the_memory_tiers_and_calibration_contracts_name_every_key_in_the_documents_order():
    from pipeline.contracts import CalibrationDoc, MemoryDoc, TiersDoc

    assert MemoryDoc.keys() == MEMORY_KEYS == MemoryDoc.required_keys()
    assert TiersDoc.keys() == TIERS_KEYS == TiersDoc.required_keys()
    assert CalibrationDoc.keys() == CALIBRATION_KEYS
    assert CalibrationDoc.required_keys() == CALIBRATION_REQUIRED


@pytest.fixture(scope="module")
def sample_profile() -> dict:
    """The sample's workload profile (the frozen tests/data/metrics/workload.json)."""
    from tests.conftest import METRICS_FIXTURE

    return json.loads((METRICS_FIXTURE / "workload.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def memory_doc(sample_profile) -> dict:
    """The memory stage's logic (candidates.plan, Plan.metrics) on the sample profile, params.yaml's sections."""
    from pipeline import candidates, catalog
    from tests.conftest import catalog_model

    data = params.load(ROOT / "params.yaml")
    sec = {n: params.validate_section(n, data.get(n)) for n in candidates.SECTIONS}
    return candidates.plan(sample_profile, sec, catalog.load_gpus(ROOT), catalog_model).metrics()


@pytest.fixture(scope="module")
def tiers_doc(sample_profile) -> dict:
    """The routing stage's logic (routing.plan) on the sample profile, params.yaml's sections."""
    from pipeline import catalog, routing

    data = params.load(ROOT / "params.yaml")
    sec = {n: params.validate_section(n, data.get(n)) for n in routing.SECTIONS}
    return routing.plan(sample_profile, sec, lambda name: catalog.load_model(name, ROOT).total_params)


def test_the_memory_stage_logic_writes_the_contracts_keys_and_round_trips(memory_doc, sample_profile):
    from pipeline.contracts import MemoryDoc

    assert tuple(memory_doc) == MEMORY_KEYS
    typed = MemoryDoc.from_dict(memory_doc)
    assert set(typed.recommended) == {"all", *sample_profile["tiers"]}  # the pooled fleet and every tier
    assert typed.recommended["all"] in typed.candidates
    assert json.dumps(typed.to_dict()) == json.dumps(memory_doc)


def test_the_routing_stage_logic_writes_the_contracts_keys_and_round_trips(tiers_doc, sample_profile):
    from pipeline.contracts import TiersDoc

    assert tuple(tiers_doc) == TIERS_KEYS
    typed = TiersDoc.from_dict(tiers_doc)
    assert typed.tiers_from == sample_profile["tiers_from"] and sorted(typed.tiers) == sorted(sample_profile["tiers"])
    assert typed.pooled["tier"] == "all"
    assert json.dumps(typed.to_dict()) == json.dumps(tiers_doc)


def test_the_calibration_document_with_no_sweep_has_no_definitions_and_round_trips():
    """stages.calibrate.empty (curve.source without a sweep): every required key, `definitions` absent, in order.
    The document of real sweeps round-trips in tests/test_stage_calibrate.py (with `definitions`)."""
    from pipeline.contracts import CalibrationDoc
    from pipeline.stages import calibrate

    doc = calibrate.empty("data/raw/benchmarks", params.validate_section("calibration", {}))
    assert tuple(doc) == CALIBRATION_REQUIRED
    typed = CalibrationDoc.from_dict(doc)
    assert typed.definitions is ABSENT and typed.pooled is None and typed.deployments == []
    assert typed.calibrated_deployments == 0 and typed.source == "data/raw/benchmarks"
    assert json.dumps(typed.to_dict()) == json.dumps(doc)


@pytest.mark.parametrize(
    ("which", "change", "message"),
    [
        ("memory", lambda d: d.pop("rejected"), "metrics/memory.json: rejected: missing; expected every key of"),
        ("memory", lambda d: d.update(gpus={}), "metrics/memory.json: gpus: not a key of the memory document"),
        ("tiers", lambda d: d.pop("pooled"), "metrics/tiers.json: pooled: missing; expected every key of"),
        ("tiers", lambda d: d.update(tier={}), "metrics/tiers.json: tier: not a key of the tiers document"),
        ("calibration", lambda d: d.pop("notes"), "metrics/calibration.json: notes: missing; expected every key of"),
        (
            "calibration",
            lambda d: d.update(definition={}),
            "metrics/calibration.json: definition: not a key of the calibration document",
        ),
    ],
)
def test_a_missing_or_unknown_memory_tiers_or_calibration_key_is_one_clear_line(
    memory_doc, tiers_doc, which, change, message
):
    from pipeline.contracts import CalibrationDoc, MemoryDoc, TiersDoc
    from pipeline.stages import calibrate

    docs = {
        "memory": (memory_doc, MemoryDoc),
        "tiers": (tiers_doc, TiersDoc),
        "calibration": (
            calibrate.empty("data/raw/benchmarks", params.validate_section("calibration", {})),
            CalibrationDoc,
        ),
    }
    doc, cls = docs[which]
    doc = json.loads(json.dumps(doc))
    change(doc)
    with pytest.raises(InputError) as exc:
        cls.from_dict(doc)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


WORKLOAD_KEYS = [  # metrics/workload.json's top level, in its order (pipeline/workload.py profile_requests, build_profile)
    "requests",
    "span_s",
    "first_arrival_s",
    "clock",
    "timestamp_resolution_s",
    "arrival_tick_s",
    "input_tokens",
    "output_tokens",
    "context_tokens",
    "rps",
    "sizing_rate_key",
    "archetype",
    "archetype_basis",
    "concurrency_littles_law",
    "hourly",
    "batched_arrivals",  # optional
    "sessions",  # optional
    "prefix_reuse",  # optional
    "warnings",
    "tiers",  # optional
    "tiers_from",  # optional
    "failed_requests_excluded",
    "duplicate_rows",
    "validation",
    "provenance",
]


def test_the_workload_contract_names_every_key_in_the_documents_order():
    from pipeline.contracts import WorkloadDoc

    assert list(WorkloadDoc.keys()) == WORKLOAD_KEYS
    optional = {"batched_arrivals", "sessions", "prefix_reuse", "tiers", "tiers_from"}
    assert list(WorkloadDoc.required_keys()) == [k for k in WORKLOAD_KEYS if k not in optional]


@pytest.mark.parametrize("with_tiers", [False, True])
def test_the_workload_profile_round_trips_through_its_contract(tmp_path, with_tiers):
    """A log without tiers (no optional key) and one with a tier column and sessions (tiers, tiers_from and
    sessions present): the contract keeps every key, in the profile's own order."""
    from pipeline.contracts import WorkloadDoc
    from tests.conftest import profile_of, write_csv

    rows = [
        f"{i * 0.5:.1f},{100 + i},{20 + i % 7}" + (f",{'a' if i % 3 else 'b'},s{i % 4}" if with_tiers else "")
        for i in range(200)
    ]
    header = "arrival_s,input_tokens,output_tokens" + (",tier,session_id" if with_tiers else "")
    prof, _ = profile_of(write_csv(tmp_path / "log.csv", header, rows), tmp_path)
    assert ("tiers" in prof) is with_tiers and ("tiers_from" in prof) is with_tiers
    doc = WorkloadDoc.from_dict(prof).to_dict()
    assert list(doc) == list(prof) and doc == prof
    assert [k for k in WORKLOAD_KEYS if k in prof] == list(prof)


def test_a_workload_profile_missing_a_key_is_one_clear_line():
    from pipeline.contracts import WorkloadDoc

    prof = json.loads((ROOT / "tests" / "data" / "metrics" / "workload.json").read_text())
    del prof["provenance"]
    with pytest.raises(InputError) as err:
        WorkloadDoc.from_dict(prof)
    assert "metrics/workload.json" in str(err.value) and "provenance" in str(err.value)
    assert "\n" not in str(err.value)


VALIDATION_KEYS = [  # metrics/validation.json's top level, in its order (pipeline/validation.py compare, no_window)
    "status",
    "recharacterize",
    "reasons",
    "metrics",
    "revisit",
    "synthetic",
    "window",
    "benchmark_at_rate",
    "inputs",
    "warnings",
    "formulas",
]


def test_the_validation_contract_names_every_key_and_both_verdicts_round_trip():
    """The no-window document (validation.source null) and a compared window's (the frozen fixture of a run on the
    sample's production window) hold the same eleven keys, all required, in one order."""
    from pipeline import validation
    from pipeline.contracts import ValidationDoc

    assert list(ValidationDoc.keys()) == VALIDATION_KEYS == list(ValidationDoc.required_keys())
    empty = validation.no_window()
    assert ValidationDoc.from_dict(empty).to_dict() == empty and list(empty) == VALIDATION_KEYS
    compared = json.loads((ROOT / "tests" / "data" / "metrics" / "validation.json").read_text())
    assert compared["status"] == validation.COMPARED
    assert list(ValidationDoc.from_dict(compared).to_dict()) == list(compared) == VALIDATION_KEYS
    with pytest.raises(InputError, match=r"metrics/validation.json.*formulas"):
        ValidationDoc.from_dict({k: v for k, v in empty.items() if k != "formulas"})
