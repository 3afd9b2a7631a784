"""Params validated once per run (issue 16): the stage runner validates params.yaml whole (validate_all) and
marks the sections it hands a stage's notebooks, in their kernel; the stage's own validate_section then
returns those sections as they are instead of validating them a second time. Anything else is validated."""

from __future__ import annotations

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from pipeline import params, run
from tests.conftest import ROOT


@pytest.fixture
def marks():
    """The module's marks as they were, restored after the test."""
    saved = dict(params._VALIDATED)
    params._VALIDATED.clear()
    yield params._VALIDATED
    params._VALIDATED.clear()
    params._VALIDATED.update(saved)


def test_a_marked_section_comes_back_as_a_copy_without_validation(marks):
    slo = params.validate_section("slo", {"ttft_p99_ms": 1500})
    assert slo["ttft_p99_ms"] == 1500
    params.mark_validated({"slo": slo})
    again = params.validate_section("slo", slo)
    assert again == slo and again is not slo
    # No validation ran: a value validation rejects (a negative SLO) comes back as it is once marked ...
    bad = {**slo, "ttft_p99_ms": -5.0}
    with pytest.raises(params.ParamsError, match="ttft_p99_ms"):
        params.validate_section("slo", bad)
    params.mark_validated({"slo": bad})
    assert params.validate_section("slo", bad) == bad
    # ... and anything that differs from the marked value, by a key, a value, a type or the order, is validated.
    with pytest.raises(params.ParamsError, match="ttft_p99_ms"):
        params.validate_section("slo", {**bad, "itl_p99_ms": 51.0})
    reordered = dict(reversed(list(bad.items())))
    with pytest.raises(params.ParamsError, match="ttft_p99_ms"):
        params.validate_section("slo", reordered)
    # a section left out (defaults) is never taken from a mark
    assert params.validate_section("slo", None) == params.validate_section("slo", {})


def test_only_the_runners_validated_sections_are_marked_and_the_mark_reaches_the_kernel(marks):
    """run.prelude is the cell before each notebook: under run() (validated=True) it marks the sections in the
    kernel itself; run.execute (parameters not validated by the runner) marks nothing."""
    every = params.validate_all(params.load(ROOT / "params.yaml"), ROOT)
    sections = {name: every[name] for name in run.STAGES["workload"].sections}
    assert "mark_validated" not in run.prelude(sections, validated=False)
    check = (
        "from pipeline import params\n"
        f"injected = {sections!r}\n"
        "print(sorted(params._VALIDATED), params.validate_section('slo', injected['slo']) == injected['slo'])"
    )
    nb = new_notebook(cells=[new_code_cell(run.prelude(sections, validated=True)), new_code_cell(check)])
    km = run.start_kernel(ROOT)
    try:
        client = run._client(nb, km, ROOT)
        client.execute()
        client.kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    out = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert out.strip() == "['slo', 'workload'] True", out
