"""metrics/summary.json (the one dvc metrics file) and the dvc plot data files: pure functions, values by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from pipeline import plots, summary
from tests.conftest import ROOT


def _docs(recharacterize=True, status="compared", plan="routed"):
    """Hand-made stage documents: a routed plan of two tiers, numbers chosen to be told apart."""
    return {
        "workload": {
            "rps": {"mean": 2.0, "sizing_rate": 5.5},
            "sizing_rate_key": "per_minute_p95",
            "input_tokens": {"p95": 6000},
            "output_tokens": {"p95": 1000},
        },
        "operating_point": {
            "c_max": 61.62614,
            "usable_rps": 1.56,
            "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 50},
            "per_tier": {"large": {"c_max": 64.0, "usable_rps": 1.02}, "small": {"c_max": 36.5, "usable_rps": 1.52}},
        },
        "fleet": {
            "total_gpus": 35,
            "pooled": {"total_instances": 8, "gpus": 32},
            "per_tier": {
                "small": {"gpus": 7, "total_instances": 7, "peak_rps": 3.35},
                "large": {"gpus": 28, "total_instances": 7, "peak_rps": 2.25},
            },
        },
        "tco": {
            "plan": plan,
            "monthly_usd": 150000.0,
            "annual_usd": 1800000.0,
            "usd_per_million_output_tokens": 81.9,
            "utilization": 0.1167,
            "utilization_trap": True,
            "price_provider": "AWS",
            "like_for_like": False,
            "totals": {
                "monthly_usd_with_schedule": 65000.0,
                "usd_per_million_output_tokens_planned": 11.9,
                "planned_utilization": 0.8,
            },
            "routing": {"routing_saves_usd_per_month": 10000.0},
            "pooled": {"candidate": "all/H100", "monthly_usd": 160000.0},
            "per_candidate": [
                {"candidate": "all/B200", "basis": "roofline-scaled"},
                {"candidate": "all/H100", "basis": "measured"},
            ],
            "per_tier": {"large": {"monthly_usd": 140000.0}, "small": {"monthly_usd": 10000.0}},
            "per_tier_candidates": {
                "large": {"measured": "large/H100", "candidates": [{"candidate": "large/H100", "basis": "measured"}]},
                "small": {
                    "measured": "small/L40S",
                    "candidates": [{"candidate": "small/L40S", "basis": "roofline-scaled"}],
                },
            },
        },
        "validation": {"status": status, "recharacterize": recharacterize},
    }


def test_summary_is_flat_named_and_holds_the_headline_figures():
    s = summary.build(_docs())
    assert all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in s.values())
    assert len(s) <= 45
    assert s["total_gpus"] == 35 and s["monthly_usd"] == 150000.0 and s["annual_usd"] == 1800000.0
    assert s["monthly_usd_with_schedule"] == 65000.0 and s["usd_per_million_output_tokens"] == 81.9
    assert s["sizing_rate_rps"] == 5.5 and s["mean_rps"] == 2.0 and s["ttft_p99_slo_ms"] == 2000
    assert s["input_tokens_p95"] == 6000 and s["output_tokens_p95"] == 1000
    assert s["pooled_c_max"] == 61.6261  # rounded to 4 decimals
    assert (s["tier_large_gpus"], s["tier_small_gpus"]) == (28, 7)
    assert (s["tier_large_replicas"], s["tier_large_c_max"], s["tier_large_usable_rps"]) == (7, 64.0, 1.02)
    assert s["tier_small_monthly_usd"] == 10000.0 and s["tier_small_sizing_rate_rps"] == 3.35
    # flags as numbers: measured vs roofline-scaled, like-for-like prices, the trap, the verdict
    assert s["pooled_basis_measured"] == 1 and s["tier_large_basis_measured"] == 1
    assert s["tier_small_basis_measured"] == 0
    assert s["price_like_for_like"] == 0 and s["utilization_trap"] == 1 and s["validation_recharacterize"] == 1
    assert s["plan"] == "routed" and s["price_provider"] == "AWS"
    # tiers in name order, after the pooled figures
    keys = list(s)
    assert keys.index("pooled_monthly_usd") < keys.index("tier_large_gpus") < keys.index("tier_small_gpus")


def test_summary_verdict_codes_and_a_pooled_plan():
    assert summary.build(_docs(recharacterize=False))["validation_recharacterize"] == 0
    assert summary.build(_docs(status="no production window", recharacterize=None))["validation_recharacterize"] == -1
    docs = _docs(plan="pooled")
    docs["fleet"]["per_tier"] = {}
    s = summary.build(docs)
    assert s["plan"] == "pooled" and not any(k.startswith("tier_") for k in s)


def test_summary_write_goes_through_the_atomic_writer(tmp_path):
    (tmp_path / "metrics").mkdir()
    for name, doc in _docs().items():
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(doc))
    written = summary.write(tmp_path)
    text = (tmp_path / "metrics" / "summary.json").read_text()
    assert json.loads(text) == written and text.endswith("}\n") and text.startswith('{\n  "plan": "routed"')


def test_downsample_keeps_each_groups_first_row_and_its_peak():
    series = pd.DataFrame({"hours": [float(i) for i in range(10)], "rps": [1, 5, 2, 2, 9, 1, 0, 0, 3, 4]})
    out = plots.downsample_max(series, "rps", max_rows=4)  # k = ceil(10 / 4) = 3: groups 0-2, 3-5, 6-8, 9
    assert out["hours"].tolist() == [0.0, 3.0, 6.0, 9.0]
    assert out["rps"].tolist() == [5, 9, 3, 4]
    assert plots.downsample_max(series, "rps", max_rows=10).equals(series)


def test_rps_over_time_hours_from_midnight_utc_and_bounded():
    day = 20458 * 86400  # 2026-01-05 00:00 UTC
    per_minute = pd.DataFrame(
        {"minute_start_s": [day + 3600.0 + 60 * i for i in range(5000)], "rps": [i % 7 / 60 for i in range(5000)]}
    )
    profile = {"first_arrival_s": day + 3600.5, "clock": "epoch_utc", "rps": {"mean": 0.05, "sizing_rate": 0.1}}
    out = plots.rps_over_time(per_minute, profile)
    assert len(out) == 1667 and out["hours"].iloc[0] == 1.0  # ceil(5000 / 2000) = 3 minutes a row
    assert out["rps"].iloc[0] == pytest.approx(2 / 60)  # max of 0/60, 1/60, 2/60
    assert out["mean_rps"].unique().tolist() == [0.05] and out["sizing_rate_rps"].unique().tolist() == [0.1]
    text = plots.to_csv(out.head(2))
    assert text == "hours,rps,mean_rps,sizing_rate_rps\n1,0.0333,0.05,0.1\n1.05,0.0833,0.05,0.1\n"


def test_latency_vs_load_per_curve_with_prediction_and_slo():
    levels = pd.DataFrame(
        {
            "curve": ["b (closed loop)", "b (closed loop)", "a/x", "b (closed loop)"],
            "load": [8.0, 1.0, 4.0, float("inf")],
            "ttft_p99_ms": [300.0, 100.0, 50.0, 1.0],
            "itl_p99_ms": [30.0, 10.0, 5.0, 1.0],
        }
    )
    overlay = pd.DataFrame({"load": [1.0, 8.0], "predicted_ttft_ms": [60.0, 70.0], "predicted_itl_ms": [6.0, 7.0]})
    out = plots.latency_vs_load(
        levels, {"b (closed loop)": overlay, "a/x": None}, {"ttft_p99_ms": 2000, "itl_p99_ms": 50}
    )
    assert sorted(out) == ["a_x", "b_closed_loop"]
    assert plots.to_csv(out["b_closed_loop"]["ttft"]) == (
        "load,measured_p99_ms,predicted_ms,slo_ms\n1,100,60,2000\n8,300,70,2000\n"
    )
    assert plots.to_csv(out["a_x"]["itl"]) == "load,measured_p99_ms,predicted_ms,slo_ms\n4,5,,50\n"


def test_cost_per_candidate_skips_unpriced_and_sorts():
    rows = [
        {"candidate": "all/H100", "monthly_usd": 100.5, "gpus": 8, "basis": "measured"},
        {"candidate": "all/A100", "monthly_usd": None, "gpus": 16},
        {"candidate": "all/B200", "monthly_usd": 90.0, "gpus": 4, "basis": "roofline-scaled"},
    ]
    assert plots.to_csv(plots.cost_per_candidate(rows)) == (
        "candidate,monthly_usd,gpus,basis\nall/B200,90,4,roofline-scaled\nall/H100,100.5,8,measured\n"
    )


def test_write_folder_removes_curves_no_longer_present(tmp_path):
    table = pd.DataFrame({"load": [1.0], "measured_p99_ms": [2.0], "predicted_ms": [None], "slo_ms": [3]})
    plots.write_folder(tmp_path, "p", {"old": table, "kept": table})
    plots.write_folder(tmp_path, "p", {"kept": table})
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["kept.csv"]


def test_dvc_yaml_declares_one_metrics_file_and_every_plot_file_as_an_output():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared = {
        next(iter(m)) if isinstance(m, dict) else m: (name, key)
        for name, st in dvc["stages"].items()
        for key in ("outs", "metrics")
        for m in st.get(key) or []
    }
    assert [p for p, (_, key) in declared.items() if key == "metrics"] == ["metrics/summary.json"]
    assert declared["metrics/summary.json"][0] == "report"
    for doc in ("workload", "tiers", "memory", "operating_point", "fleet", "validation", "tco"):
        assert declared[f"metrics/{doc}.json"][1] == "outs", doc  # the documents: outputs, every key kept
    owners = {
        plots.RPS_OVER_TIME: "workload",
        plots.INPUT_CDF: "workload",
        plots.OUTPUT_CDF: "workload",
        plots.TTFT_VS_LOAD: "curve",
        plots.ITL_VS_LOAD: "curve",
        plots.COST_PER_CANDIDATE: "report",
    }
    for path, stage in owners.items():
        assert declared[path] == (stage, "outs"), path
    for st in dvc["stages"].values():  # git-tracked, never cached, never deleted before a run
        for m in (st.get("outs") or []) + (st.get("metrics") or []):
            if isinstance(m, dict) and next(iter(m)).startswith("metrics/"):
                assert m[next(iter(m))] == {"cache": False, "persist": True}, m
    plotted = set()
    for entry in dvc["plots"]:
        ((plot_id, props),) = entry.items()
        assert props["title"] and props["template"] in ("linear", "simple", "scatter", "bar_horizontal")
        plotted |= set(props["x"]) if isinstance(props["x"], dict) else {plot_id}
    assert plotted == set(owners)
