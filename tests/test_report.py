"""The finance report: first-screen figures, quarter-over-quarter, and escaping of input strings (real kernel)."""

from __future__ import annotations

import copy
import json
import os
import shutil

import pytest

from pipeline import params, report, run
from tests.conftest import METRICS_FIXTURE, ROOT

# the frozen sample metrics (tests/data/metrics), not the committed metrics/ that a rerun rewrites
METRICS = {name: json.loads((METRICS_FIXTURE / f"{name}.json").read_text()) for name in report.METRIC_FILES}


def test_first_screen_repeats_the_metrics_files():
    screen = dict((label, value) for label, value, _ in report.first_screen(METRICS))
    # by hand from the sample's routed plan: large 7 x TP4 H100-SXM = 28 GPUs, small 7 x TP1 L40S = 7
    assert screen["GPUs"] == "35: 28 H100-SXM + 7 L40S"
    assert screen["plan"] == "routed: 2 fleets"
    # AWS: 28 x 6.88 + 7 x 1.861 = 192.64 + 13.027 = 205.667 $/h; x 730 h = 150,136.91; x 8760 h = 1,801,642.92
    assert screen["monthly cost"] == "USD 150,137"
    assert screen["annual cost"] == "USD 1,801,643"
    assert screen["utilization"] == "12%"  # tco utilization 0.1167
    assert screen["traffic sized for"] == "5.535 req/s"


def test_quarter_over_quarter_from_a_metrics_folder(tmp_path):
    old = copy.deepcopy({k: METRICS[k] for k in ("workload", "fleet", "tco")})
    old["fleet"]["total_gpus"] = 24
    old["tco"]["monthly_usd"] = METRICS["tco"]["monthly_usd"] / 2
    for name, data in old.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    prev, where = report.previous_metrics(str(tmp_path), ROOT)
    table = report.quarter_over_quarter(prev, METRICS).set_index("figure")
    assert table.loc["GPUs", "change"] == "+45.8%"  # 35 GPUs now against 24: 35 / 24 = 1.4583
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
    # traffic x 1.3 on the measured deployment (H100-SXM TP4, usable 1.5627 req/s), step 11 by hand:
    # 5.535 x 1.3 = 7.1955 req/s; / 1.5627 = 4.60 -> 5 instances; x safety 1.2 = 6; x (1 + headroom 0.2988) = 7.79 -> 8;
    # + 1 spare = 9 instances x 4 = 36 GPUs; x 6.88 $/h x 730 h = 180,806.40
    assert (rows["more"]["gpus"], rows["more"]["basis"]) == (36, "measured")
    assert rows["more"]["monthly_usd"] == pytest.approx(180_806.40)
    # the pooled baseline: 8 instances x 4 = 32 GPUs x 6.88 x 730 = 160,716.80; at a reserved 2.5 $/h: 32 x 2.5 x 730
    assert rows["pooled baseline"]["monthly_usd"] == pytest.approx(160_716.80)
    assert (rows["cheap"]["gpus"], rows["cheap"]["monthly_usd"]) == (32, pytest.approx(58_400.0))
    assert rows["nope"]["slo_status"] == "fails" and "was not evaluated" in rows["nope"]["why"]
    assert rows["the plan (routed)"]["monthly_usd"] == pytest.approx(150_136.91)  # 205.667 $/h x 730
    with pytest.raises(Exception, match=r"unknown key scenarios\.x\.traffic; allowed keys: traffic_scale"):
        scenarios.check({"x": {"traffic": 2}})
