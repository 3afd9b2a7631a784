"""The finance report: first-screen figures, quarter-over-quarter, and escaping of input strings (real kernel)."""

from __future__ import annotations

import copy
import json
import os
import shutil

import pytest

from pipeline import params, report, run
from tests.conftest import ROOT

METRICS = {name: json.loads((ROOT / "metrics" / f"{name}.json").read_text()) for name in report.METRIC_FILES}


def test_first_screen_repeats_the_metrics_files():
    screen = dict((label, value) for label, value, _ in report.first_screen(METRICS))
    by = METRICS["fleet"]["gpus_by_type"]
    assert screen["GPUs"] == f"{METRICS['fleet']['total_gpus']}: " + " + ".join(f"{n} {g}" for g, n in by.items())
    assert sum(by.values()) == METRICS["fleet"]["total_gpus"]
    assert screen["monthly cost"] == f"USD {METRICS['tco']['monthly_usd']:,.0f}"
    assert screen["utilization"] == f"{METRICS['tco']['utilization']:.0%}"


def test_quarter_over_quarter_from_a_metrics_folder(tmp_path):
    old = copy.deepcopy({k: METRICS[k] for k in ("workload", "fleet", "tco")})
    old["fleet"]["total_gpus"] = 24
    old["tco"]["monthly_usd"] = METRICS["tco"]["monthly_usd"] / 2
    for name, data in old.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    prev, where = report.previous_metrics(str(tmp_path), ROOT)
    table = report.quarter_over_quarter(prev, METRICS).set_index("figure")
    gpus = METRICS["fleet"]["total_gpus"]
    assert table.loc["GPUs", "change"] == f"{gpus / 24 - 1:+.1%}"
    assert table.loc["monthly cost (USD)", "change"] == "+100.0%"
    assert table.loc["sizing rate (req/s)", "change"] == "+0.0%"
    assert where == f"folder {tmp_path}"
    with pytest.raises(Exception, match="neither a folder"):
        report.previous_metrics("no-such-tag-or-folder", ROOT)


def test_strings_from_input_files_are_escaped_in_the_rendered_report(tmp_path):
    """A tenant named <script>alert(1)</script> shows as text: run the finance notebook for real on such metrics."""
    evil = "<script>alert(1)</script>"
    (tmp_path / "metrics").mkdir()
    for name, data in METRICS.items():
        data = copy.deepcopy(data)
        if name == "workload":
            data["tiers"] = {evil: next(iter(data["tiers"].values()))}
            data["warnings"] = [{"code": "x", "message": f"tenant {evil} has odd rows"}]
        # the routing tier 'small' renamed to the evil string everywhere (keys and values)
        text = json.dumps(data).replace('"small"', json.dumps(evil))
        (tmp_path / "metrics" / f"{name}.json").write_text(text)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    data = params.load(ROOT / "params.yaml")
    sections = {name: params.section(name, data) for name in run.STAGES["report"].sections}
    os.environ["SIZING_ROOT"] = str(tmp_path)
    try:
        run.execute("finance", sections, "finance", tmp_path)
    finally:
        os.environ.pop("SIZING_ROOT")
    html = (tmp_path / "reports" / "finance.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # plan table, assumptions, schedule, flags


def test_scenarios_by_hand():
    from pipeline import scenarios, tco

    sec = {name: params.section(name, params.load(ROOT / "params.yaml")) for name in ("fleet", "tco")}
    sc = {
        "more": {"traffic_scale": 1.3},
        "cheap": {"price_usd_per_gpu_hour": 2.5},
        "nope": {"gpu": "MI300X", "weights": "fp4"},
    }
    rows = {r["scenario"]: r for r in scenarios.table(METRICS, sc, sec["fleet"], sec["tco"], tco.load_prices(ROOT))}
    pooled, usable = METRICS["fleet"]["pooled"], METRICS["operating_point"]["usable_rps"]
    # traffic x 1.3 on the measured deployment: the step-11 chain by hand
    import math

    base = math.ceil(METRICS["workload"]["rps"]["sizing_rate"] * 1.3 / usable)
    total = math.ceil(round(math.ceil(round(base * 1.2, 9)) * (1 + pooled["headroom"]), 9)) + pooled["spares"]
    assert rows["more"]["gpus"] == total * 4 and rows["more"]["basis"] == "measured"
    # the reserved price: the pooled GPUs x 2.5 $/h x 730 h
    assert rows["cheap"]["monthly_usd"] == pytest.approx(pooled["gpus"] * 2.5 * 730)
    assert rows["nope"]["slo_status"] == "fails" and "was not evaluated" in rows["nope"]["why"]
    assert rows[f"the plan ({METRICS['fleet']['plan']})"]["monthly_usd"] == METRICS["tco"]["monthly_usd"]
    with pytest.raises(Exception, match=r"unknown key scenarios\.x\.traffic; allowed keys: traffic_scale"):
        scenarios.check({"x": {"traffic": 2}})
