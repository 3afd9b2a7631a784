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
