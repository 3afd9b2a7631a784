"""The calibrate stage (pipeline/stages/calibrate.py): metrics/calibration.json from a tiny synthetic sweep set.

The sweeps are written by the simulator itself (tests/test_sim_calibrate.write_sweep) as vLLM result files
with manifests, in a temporary project: two sweeps of one deployment (Llama-3.1-8B on H100, levels c=1, c=4,
c=16 in one folder and c=64 plus 5 req/s in the other) and one single-level sweep of another (H200), which
cannot identify its coefficients. So the structure is known by hand: two deployments in key order, the
first calibrated on both folders' five levels, the second transferred (the pooled fit) with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import io, summary
from pipeline.errors import InputError
from pipeline.layout import Layout
from pipeline.sim.cost import TERMS
from pipeline.stages import calibrate as stage
from tests.test_sim_calibrate import LOADS, TRUE_B, write_sweep
from tests.test_summary_and_plots import _docs

SECTIONS = {"calibration": {"refine_passes": 2, "lolo_passes": 0}, "curve": {"source": "data/raw/benchmarks"}}
H100 = "Llama-3.1-8B/H100-SXM/tp1-pp1/w-bf16/kv-bf16/c-bf16/vllm"
H200 = "Llama-3.1-8B/H200/tp1-pp1/w-bf16/kv-bf16/c-bf16/vllm"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder holding only data/raw/benchmarks with the three sweeps, and the stage's document of it."""
    root = tmp_path_factory.mktemp("calibrate")
    bench = root / "data" / "raw" / "benchmarks"
    write_sweep(bench / "h100_a", LOADS[:3])
    write_sweep(bench / "h100_b", LOADS[3:])
    write_sweep(bench / "h200_single", [("concurrency", 8)], gpu="H200")
    return root


@pytest.fixture(scope="module")
def doc(project: Path) -> dict:
    return stage.run(SECTIONS, Layout(project))


def test_the_document_has_the_deployments_the_sweeps_make(doc: dict) -> None:
    deps = doc["deployments"]
    assert [d["key"] for d in deps] == [H100, H200]  # one per manifest identity, in key order
    a, b = deps
    assert a["basis"] == "calibrated" and a["warnings"] == [] and a["warning"] is None
    assert a["sweeps"] == ["data/raw/benchmarks/h100_a", "data/raw/benchmarks/h100_b"]  # two folders, one fit
    assert a["levels"] == 5 and len(a["levels_used"]) == 5
    assert len(a["files"]) == 5 and all(f.startswith("data/raw/benchmarks/h100_") for f in a["files"])  # relative
    assert sorted(name.split(" (")[0] for name in a["levels_used"]) == a["files"]  # one level per result file
    # the files hold input_lens/output_lens: replayed per request, whatever the working directory (a root-relative
    # file name reopened from elsewhere silently fell back to the mean lengths)
    assert [x.startswith("per-request lengths") for x in a["lengths"]] == [True], a["lengths"]
    assert b["basis"] == "transferred" and b["levels"] == 1 and len(b["levels_used"]) == 1
    assert len(b["warnings"]) == 1 and b["warnings"][0].startswith(f"unidentifiable: deployment {H200}: only 1 level")
    # both hopper: the pooled fit (family scale 1) times the one scale its own level fixes; the level was generated
    # with the H100 sweeps' coefficients, so that scale is close to 1
    assert b["pool_scale"] == pytest.approx(1.0, abs=0.1) and a["pool_scale"] is None
    lower = dict(zip(b["coefficients"], (0.0, 1.0, 1.0, 1.0, 0.0, 0.0), strict=True))
    for term, value in b["coefficients"].items():
        want = max(doc["pooled"]["coefficients"][term] * b["pool_scale"], lower[term])
        assert value == pytest.approx(want, rel=1e-5, abs=1e-9), term
    assert doc["warnings"] == b["warnings"]
    # c=64 of 200 measured requests, every length drawn from 100-2000 tokens: the 64 first prompts sent at t = 0
    # set the TTFT p99 of the replay and of the file alike (the simulator wrote it with the same start, at the true
    # coefficients; the replay is at this 2-pass fit's), so the level says so and the deployment has no warning;
    # c = 1 has no first round to speak of
    rows = {r["level"].split("/")[-1]: r for r in a["level_residuals"]}
    c64 = rows["c_64.json (c 64)"]["first_round"]
    assert c64["requests"] == 64 and c64["share"] == pytest.approx(64 / 200) and c64["file_holds_it"] is True
    assert c64["ttft_p99_ms"] > 1.5 * c64["ttft_p99_without_ms"]
    assert "first_round" not in rows["c_1.json (c 1)"]
    assert doc["calibrated_deployments"] == 1
    assert doc["source"] == "data/raw/benchmarks"
    assert doc["settings"]["refine_passes"] == 2 and doc["settings"]["lolo_passes"] == 0
    assert doc["notes"] and "step 1" in doc["notes"][0]


def test_the_document_is_the_typed_contract_key_for_key(doc: dict) -> None:
    """contracts.CalibrationDoc (issue 16): every key, `definitions` included, in the hand-written order."""
    from pipeline.contracts import CalibrationDoc
    from tests.test_contracts import CALIBRATION_KEYS

    assert tuple(doc) == CALIBRATION_KEYS
    typed = CalibrationDoc.from_dict(doc)
    assert typed.calibrated_deployments == 1 and [d["key"] for d in typed.deployments] == [H100, H200]
    assert json.dumps(typed.to_dict()) == json.dumps(doc)


def test_coefficients_carry_term_names_and_units(doc: dict) -> None:
    assert doc["terms"] == list(TERMS)
    assert list(doc["term_units"]) == [*TERMS, "request_overhead_s"]
    assert all(u.startswith(f"b{i}:") for i, u in enumerate(list(doc["term_units"].values())[:6]))
    for d in doc["deployments"]:
        assert list(d["coefficients"]) == list(TERMS) and d["request_overhead_s"] >= 0
    assert doc["pooled"]["gpu_arch_scale"] == {"hopper": 1.0}  # H100 and H200: one family, the anchor
    # generated at b = TRUE_B: the bandwidth terms (decode-dominated, identified by step 1's NNLS alone; two
    # refinement passes barely move it) of the calibrated deployment come back within 30%
    got = doc["deployments"][0]["coefficients"]
    for i in (2, 3):
        assert got[TERMS[i]] == pytest.approx(TRUE_B[i], rel=0.3), TERMS[i]


def test_residual_tables_per_kind_and_metric(doc: dict) -> None:
    a, b = doc["deployments"]
    for kind in ("in_sample", "leave_one_level_out", "leave_one_deployment_out"):
        for metric in ("throughput", "itl_mean", "ttft"):
            s = a["residuals"][kind][metric]
            assert s["n"] == 5, (kind, metric)
            assert s["p10_rel"] <= s["p50_rel"] <= s["p90_rel"] and s["median_abs_rel"] >= 0
    # a transferred deployment has no leave-one-level-out: nothing was fitted on its own levels
    assert b["residuals"]["leave_one_level_out"]["throughput"]["n"] == 0
    assert doc["pooled"]["residuals"]["in_sample"]["throughput"]["n"] == 6  # every level of both deployments


def test_targets_rows_on_the_real_document(doc: dict) -> None:
    t = doc["targets"]
    assert len(t["rows"]) == 2 * 3 * 3  # (LOLO, LODO) x 3 metrics x (pooled, 2 deployments)
    assert [r["scope"] for r in t["rows"][:3]] == ["pooled", H100, H200]
    h200_lolo = [r for r in t["rows"] if r["scope"] == H200 and r["kind"] == "leave_one_level_out"]
    assert [r["met"] for r in h200_lolo] == [None, None, None] and all(r["n"] == 0 for r in h200_lolo)
    assert t["met"] + t["missed"] + t["not_measured"] == 18 and t["not_measured"] >= 3


def test_targets_by_hand() -> None:
    """LOLO throughput 4% (target 5%: met), ITL 6% (missed by 1 point), TTFT unmeasured; LODO 20% (missed by 5)."""

    def table(lolo: dict, lodo: dict) -> dict:
        def kind(vals: dict) -> dict:
            return {m: {"n": 0 if v is None else 3, "median_abs_rel": v} for m, v in vals.items()}

        return {"leave_one_level_out": kind(lolo), "leave_one_deployment_out": kind(lodo)}

    pooled = table({"throughput": 0.04, "itl_mean": 0.06, "ttft": None}, {"throughput": 0.2, "itl_mean": 0.15})
    t = stage.targets(pooled, {})
    rows = {(r["kind"], r["metric"]): r for r in t["rows"]}
    assert rows[("leave_one_level_out", "throughput")]["met"] is True
    assert rows[("leave_one_level_out", "throughput")]["missed_by"] is None
    assert rows[("leave_one_level_out", "itl_mean")]["met"] is False
    assert rows[("leave_one_level_out", "itl_mean")]["missed_by"] == pytest.approx(0.01)
    assert rows[("leave_one_level_out", "ttft")]["met"] is None
    assert rows[("leave_one_level_out", "ttft")]["target_median_abs_rel"] == 0.10
    assert rows[("leave_one_deployment_out", "throughput")]["missed_by"] == pytest.approx(0.05)
    assert rows[("leave_one_deployment_out", "itl_mean")]["met"] is True  # 15% is within 15%
    assert rows[("leave_one_deployment_out", "ttft")]["met"] is None  # absent from the table
    assert (t["met"], t["missed"], t["not_measured"]) == (2, 2, 2)
    assert {r["basis"] for r in t["rows"] if r["kind"] == "leave_one_deployment_out"} == {"transferred"}


def test_significant_digits() -> None:
    assert stage.significant(2.621345678e-06) == 2.62135e-06
    assert stage.significant({"a": [1234567.89, 3, True, None, 0.0]}) == {"a": [1234570.0, 3, True, None, 0.0]}


def test_written_file_is_the_document_and_rerun_is_byte_identical(project: Path, doc: dict) -> None:
    path = project / "metrics" / "calibration.json"
    first = path.read_bytes()
    assert first.decode() == io.dumps(doc) and json.loads(first) == doc
    assert '"seconds"' not in first.decode() and "time" not in json.loads(first)  # no timings: same bytes
    stage.run(SECTIONS, Layout(project))
    assert path.read_bytes() == first


def test_missing_source_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^data/raw/nowhere: benchmarks folder not found \(curve.source\)"):
        stage.run({**SECTIONS, "curve": {"source": "data/raw/nowhere"}}, Layout(tmp_path))
    assert not (tmp_path / "metrics").exists()


def test_summary_carries_the_calibration_figures(doc: dict) -> None:
    base = summary.build(_docs())
    s = summary.build({**_docs(), "calibration": doc})
    lolo = doc["pooled"]["residuals"]["leave_one_level_out"]
    assert set(s) - set(base) == {
        "calibrated_deployments",
        "calibration_lolo_throughput_error_pct",
        "calibration_lolo_itl_error_pct",
        "calibration_lolo_ttft_error_pct",
    }
    assert s["calibrated_deployments"] == 1
    assert s["calibration_lolo_itl_error_pct"] == round(100 * lolo["itl_mean"]["median_abs_rel"], 4)
    assert {k: s[k] for k in base} == base  # every existing key kept, unchanged


def test_sizing_calibrate_json_prints_the_stage_document(project: Path, doc: dict, monkeypatch, capsys) -> None:
    """`sizing calibrate PATH --json` with the stage's budgets prints what the stage wrote (its source aside)."""
    from pipeline import cli

    monkeypatch.chdir(project)
    assert cli.main(["calibrate", "data/raw/benchmarks", "--json", "--refine-passes", "2", "--lolo-passes", "0"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_level_residuals_frame_for_the_chart_by_hand() -> None:
    """Two levels of one deployment: residuals become percentages, +-200% clips (and says so), rows are sorted."""
    from pipeline import calibration_views as views

    doc = {
        "deployments": [
            {
                "key": "M/G/tp1",
                "level_residuals": [
                    {
                        "level": "sweeps/a/vllm-8concurrency.json (c 8)",
                        "in_sample": {"throughput": 0.0123, "ttft": 3.5},
                        "leave_one_level_out": {"throughput": -0.05, "itl_mean": None},
                    },
                    {"level": "sweeps/a/vllm-1concurrency.json (c 1)", "in_sample": {"itl_mean": -0.1}},
                ],
            }
        ]
    }
    f = views.level_residuals_frame(doc)
    assert f.to_dict("records") == [
        {
            "deployment": "M/G/tp1",
            "level": "vllm-1concurrency.json (c 1)",
            "metric": "mean ITL",
            "kind": "in-sample",
            "error_pct": -10.0,
            "clipped": False,
        },
        {
            "deployment": "M/G/tp1",
            "level": "vllm-8concurrency.json (c 8)",
            "metric": "TTFT (tail)",
            "kind": "in-sample",
            "error_pct": 200.0,
            "clipped": True,
        },
        {
            "deployment": "M/G/tp1",
            "level": "vllm-8concurrency.json (c 8)",
            "metric": "throughput",
            "kind": "in-sample",
            "error_pct": 1.23,
            "clipped": False,
        },
        {
            "deployment": "M/G/tp1",
            "level": "vllm-8concurrency.json (c 8)",
            "metric": "throughput",
            "kind": "leave one level out",
            "error_pct": -5.0,
            "clipped": False,
        },
    ]


def test_warnings_table_names_each_warnings_deployment_by_hand(doc: dict) -> None:
    """The report's warnings: each deployment's (its fit's and the stage's), then the document's that none carries."""
    from pipeline import calibration_views as views

    hand = {
        "deployments": [
            {"key": "A", "warnings": ["a fit warning", "a stage warning"]},
            {"key": "B", "warnings": []},
            {"key": "C"},
        ],
        "warnings": ["a fit warning", "no sweep at all"],
    }
    t = views.warnings_table(hand)
    assert t.to_dict("records") == [
        {"deployment": "A", "warning": "a fit warning"},
        {"deployment": "A", "warning": "a stage warning"},
        {"deployment": "", "warning": "no sweep at all"},
    ]
    # the stage's document: the H200 fit's one warning, under its deployment, once
    t = views.warnings_table(doc)
    assert list(t["deployment"]) == [H200] and t["warning"][0].startswith("unidentifiable")
    assert views.warnings_table({"deployments": [], "warnings": []}).empty


def test_sizing_calibrate_first_round_replay(tmp_path: Path, monkeypatch, capsys) -> None:
    """`sizing calibrate --first-round-replay`: a sweep whose levels left out their first round (each client's first
    request) is replayed so, and the document says which levels and why; without the flag the setting is false."""
    from pipeline import cli

    write_sweep(tmp_path / "warm", LOADS, warm_round=True)
    monkeypatch.chdir(tmp_path)
    args = ["calibrate", "warm", "--json", "--refine-passes", "2", "--lolo-passes", "0"]
    assert cli.main([*args, "--first-round-replay"]) == 0
    on = json.loads(capsys.readouterr().out)
    assert on["settings"]["first_round_replay"] is True
    (dep,) = on["deployments"]
    replayed = [r["level"] for r in dep["level_residuals"] if any("replayed without" in n for n in r["notes"])]
    assert sorted(replayed) == ["warm/c_16.json (c 16)", "warm/c_4.json (c 4)", "warm/c_64.json (c 64)"]
    assert any(w.startswith("3 of 5 levels replayed without their first round") for w in dep["warnings"])
    assert cli.main(args) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["settings"]["first_round_replay"] is False
    assert not any("replayed without" in n for r in off["deployments"][0]["level_residuals"] for n in r["notes"])
