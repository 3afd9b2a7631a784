"""The finance report: first-screen figures, quarter-over-quarter, and escaping of input strings (real kernel)."""

from __future__ import annotations

import copy
import json
import os
import re
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
    old["tco"]["totals"]["gpus"] = 24  # the GPUs row is the priced plan's (tco.json), fleet.json's in older files
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
    shutil.copytree(ROOT / "data" / "catalog", tmp_path / "data" / "catalog")  # the price list's dates (as of)
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


def test_the_budget_is_the_static_fleet_for_a_one_day_log_with_the_schedule_beside_it():
    b = report.budget(METRICS)  # the sample log spans 86,390.8 s = 1.0 day, under the default 7
    assert (b["kind"], b["monthly_usd"], b["annual_usd"]) == ("static", 150_136.91, 1_801_642.92)
    assert b["other_kind"] == "scheduled" and b["other_monthly_usd"] == pytest.approx(65_415.35)
    assert b["other_annual_usd"] == pytest.approx(784_984.20)  # 65,415.35 x 12 (8760 / 730)
    assert "1.0 day of traffic" in b["why"] and "under 7" in b["why"]
    sched = report.budget(METRICS, min_days=0.5)  # on-demand prices and a long enough log: the schedule
    assert (sched["kind"], sched["monthly_usd"], sched["other_monthly_usd"]) == ("scheduled", 65_415.35, 150_136.91)
    reserved = copy.deepcopy(METRICS)
    reserved["tco"]["price_basis"]["pricing"] = "reserved-1y"
    assert report.budget(reserved, min_days=0.5)["kind"] == "static"  # paid every hour, used or not
    none = copy.deepcopy(METRICS)
    none["tco"]["totals"]["monthly_usd_with_schedule"] = None
    assert report.budget(none, min_days=0.5)["other_monthly_usd"] is None


def test_the_traffic_window_comes_from_the_log_not_the_clock():
    # first arrival 1,767,571,204.383 s = 2026-01-05 00:00:04 UTC (1,767,225,600 = 2026-01-01, + 4 days);
    # + span 86,390.839 s = 2026-01-05 23:59:55 UTC
    assert report.traffic_window(METRICS["workload"]) == (
        "traffic 2026-01-05 00:00 to 2026-01-05 23:59 UTC (1.0 days, 179,175 requests)"
    )
    relative = {**METRICS["workload"], "clock": "trace_relative", "span_s": 7200.0}
    assert report.traffic_window(relative).startswith("traffic: 2.0 h of a trace-relative clock")


def test_quarter_over_quarter_is_formatted(tmp_path):
    old = copy.deepcopy({k: METRICS[k] for k in ("workload", "fleet", "tco")})
    old["tco"]["monthly_usd"] = 91065.31
    table = report.quarter_over_quarter(old, METRICS).set_index("figure")
    assert table.loc["monthly cost (USD)", "previous"] == "$91,065"  # was "91065.3100"
    assert table.loc["monthly cost (USD)", "now"] == "$150,137"
    assert table.loc["utilization", "now"] == "11.7%"  # was "0.1167"
    assert table.loc["GPUs", "now"] == "35"
    assert table.loc["cost per 1M output tokens (USD)", "now"] == "$81.94"


def test_the_inputs_id_is_a_content_hash_of_the_inputs(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "data" / "catalog").mkdir(parents=True)
    for name in report.METRIC_FILES:
        shutil.copy(METRICS_FIXTURE / f"{name}.json", tmp_path / "metrics" / f"{name}.json")
    shutil.copy(ROOT / "data" / "catalog" / "prices.csv", tmp_path / "data" / "catalog" / "prices.csv")
    first = report.inputs_id(tmp_path, {"report": {"previous": None}})
    assert re.fullmatch(r"[0-9a-f]{12}", first) and first == report.inputs_id(tmp_path, {"report": {"previous": None}})
    prices = tmp_path / "data" / "catalog" / "prices.csv"
    prices.write_text(prices.read_text().replace("6.88", "6.89"))
    assert report.inputs_id(tmp_path, {"report": {"previous": None}}) != first  # a price change is a new input


@pytest.fixture(scope="module")
def finance_runs(tmp_path_factory):
    """finance.ipynb run twice for real (the stage runner's kernel, nbconvert) on the frozen sample metrics,
    with last quarter's review set to a folder whose monthly cost is half today's."""
    root = tmp_path_factory.mktemp("finance")
    (root / "metrics").mkdir()
    for name in report.METRIC_FILES:
        shutil.copy(METRICS_FIXTURE / f"{name}.json", root / "metrics" / f"{name}.json")
    prev = root / "q3"
    prev.mkdir()
    for name in ("workload", "fleet", "tco"):
        data = copy.deepcopy(METRICS[name])
        if name == "tco":
            data["monthly_usd"] /= 2
            data["totals"]["monthly_usd"] /= 2
        if name == "fleet":
            data["total_gpus"] = 24
        (prev / f"{name}.json").write_text(json.dumps(data))
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "data" / "catalog", root / "data" / "catalog")
    data = params.load(ROOT / "params.yaml")
    sections = {name: params.section(name, data) for name in run.STAGES["report"].sections}
    sections["report"] = {**(sections["report"] or {}), "previous": str(prev)}
    os.environ["SIZING_ROOT"] = str(root)
    try:
        run.execute("finance", sections, "finance", root)
        first = (root / "reports" / "finance.html").read_bytes()
        run.execute("finance", sections, "finance", root)
        second = (root / "reports" / "finance.html").read_bytes()
    finally:
        os.environ.pop("SIZING_ROOT")
    return root, sections, first, second


def _element(html: str, ident: str) -> str:
    """The text of the element with id `ident` (up to its closing tag, tags stripped)."""
    start = html.index(f'id="{ident}"')
    tag = html.rfind("<", 0, start)
    name = re.match(r"<(\w+)", html[tag:])[1]
    depth, pos = 0, tag
    for m in re.finditer(rf"<(/?){name}\b[^>]*>", html[tag:]):
        depth += -1 if m[1] else 1
        if depth == 0:
            pos = tag + m.end()
            break
    return re.sub(r"<[^>]+>", "", html[tag:pos])


@pytest.mark.e2e
def test_finance_first_screen_has_the_budget_badge_and_as_of_line(finance_runs):
    root, sections, html_bytes, _ = finance_runs
    html = html_bytes.decode()
    budget = _element(html, "budget")
    # ONE budget figure: the static fleet (the sample log is one day), the schedule beside it, and why
    assert "$150,137 a month" in budget and "$1,801,643 a year" in budget and "static" in budget
    assert "Scheduled instead: $65,415 a month" in budget and "1.0 day of traffic" in budget
    assert "+100.0% since last quarter (was $75,068)" in budget  # 150,136.91 against 75,068.455
    assert "measured" in _element(html, "badge") and "confidence" in _element(html, "badge")
    flags = _element(html, "risk-flags")
    # top three by cost impact, by hand: synthetic inputs (the whole $150,137), the utilization trap
    # (150,136.91 - 65,415.35 = $84,722), re-characterize (large $140,627.20 x (1,054.4756 / 699.8004 - 1) = $71,273)
    assert re.findall(r"~\$([\d,]+)/month", flags) == ["150,137", "84,722", "71,273"]
    assert flags.index("Synthetic inputs") < flags.index("idle") < flags.index("benchmark")
    asof = _element(html, "as-of")
    assert "traffic 2026-01-05 00:00 to 2026-01-05 23:59 UTC" in asof
    assert f"inputs sha256 {report.inputs_id(root, report_sections(sections))}" in asof
    assert "H100-SXM after 2025-06 price cut" in asof and "L40S 2024-2026" in asof  # prices.csv as_of
    assert "List prices are illustrative" in _element(html, "price-caveat")
    assert "28 H100-SXM + 7 L40S" in _element(html, "gpus") and "+45.8% since last quarter" in _element(html, "gpus")
    # the first screen comes before everything else; the rest below it
    assert (
        html.index('id="budget"')
        < html.index("Risk flags, ranked")
        < html.index("The plan")
        < html.index("Quarter over quarter")
    )


@pytest.mark.e2e
def test_finance_tables_are_formatted_and_reruns_are_byte_identical(finance_runs):
    _, _, first, second = finance_runs
    html = first.decode()
    assert first == second  # same inputs, byte-identical report (no wall clock, no random ids)
    cells = re.findall(r"<td [^>]*>(.*?)</td>", html)
    assert cells and not [c for c in cells if re.fullmatch(r"-?\d+\.\d{4,}", c)]  # no raw floats like 91065.3100
    assert "row_heading" not in html and ">nan<" not in html.lower() and ">None<" not in html
    qoq = html[html.index("Quarter over quarter") :]
    assert "$75,068" in qoq and "$150,137" in qoq and "11.7%" in qoq
    css = html.index('id="sizing-css"')
    assert css > html.rindex("jp-RenderedHTMLCommon table {", 0, css)  # the project's CSS after nbconvert's


def report_sections(sections):
    """The validated sections the notebook hashes (pipeline.stages.report.load)."""
    from pipeline.stages import report as report_stage

    return report_stage.validated(report.SECTIONS, sections)


def _priced_pooled(m: dict, fleet_note: bool) -> dict:
    """METRICS with tco.json pricing a pooled plan: the fleet.json pooled deployment (8 x TP4 H100-SXM = 32 GPUs),
    or with `fleet_note` a cheaper candidate fleet.json did not size (5 x TP2 H200 = 10 GPUs)."""
    out = copy.deepcopy(m)
    t = out["tco"]
    t["plan"] = t["chosen"] = "pooled"
    row = {"candidate": "all/H100-SXM/w-fp8/kv-fp8", "gpu": "H100-SXM", "weights": "fp8", "kv": "fp8", "tp": 4}
    row |= {"instances": 8, "gpus": 32, "monthly_usd": 160_716.8}
    if fleet_note:
        row = {"candidate": "all/H200/w-fp8/kv-fp8", "gpu": "H200", "weights": "fp8", "kv": "fp8", "tp": 2, "pp": 1}
        row |= {"instances": 5, "gpus": 10, "monthly_usd": 60_000.0}
        row["fleet_note"] = "fleet.json sized H100-SXM w-fp8/kv-fp8 TP4; the cheapest eligible candidate is H200"
    t["per_tier"] = {"all": {"tier": "all", **row}}
    t["chosen_candidates"] = {"all": row["candidate"]}
    return out


def test_the_first_screen_follows_the_plan_tco_prices_not_the_fleet_json_sized():
    from pipeline import scenarios, tco

    # fleet.json sized routing (28 H100-SXM + 7 L40S); tco.json fell back to the pooled plan (a tier barred)
    m = _priced_pooled(METRICS, fleet_note=False)
    html = report.first_screen_html({"metrics": m, "previous": None})
    assert "the adopted plan (one pooled fleet)" in _element(html, "budget")
    gpus = _element(html, "gpus")
    assert gpus.startswith("GPUs by kind32 H100-SXM32 GPUs in all; all: 8 x TP4 H100-SXM.")
    assert "L40S" not in gpus
    differs = "The priced plan differs from the sized fleet (deployment sheet and replay describe fleet.json's)"
    assert differs in report.flags_table(m)["risk"].tolist()
    screen = dict((label, value) for label, value, _ in report.first_screen(m))
    assert (screen["plan"], screen["GPUs"]) == ("one pooled fleet", "32 x H100-SXM")
    sec = {name: params.section(name, params.load(ROOT / "params.yaml")) for name in ("fleet", "tco")}
    first = scenarios.table(m, {}, sec["fleet"], sec["tco"], tco.load_prices(ROOT))[0]
    assert (first["scenario"], first["gpu"]) == ("the plan (pooled)", "32 H100-SXM")

    # the pooled plan on a cheaper candidate than fleet.json sized (fleet_note): its GPUs, not fleet.json's
    m = _priced_pooled(METRICS, fleet_note=True)
    m["fleet"]["plan"], m["fleet"]["per_tier"] = "pooled", {"all": METRICS["fleet"]["pooled"]}
    gpus = _element(report.first_screen_html({"metrics": m, "previous": None}), "gpus")
    assert gpus.startswith("GPUs by kind10 H20010 GPUs in all; all: 5 x TP2 H200.")
    assert differs in report.flags_table(m)["risk"].tolist()
    # the sample: tco.json prices the routed plan fleet.json sized; no flag
    assert differs not in report.flags_table(METRICS)["risk"].tolist()


def test_the_badge_is_coloured_by_confidence_not_by_basis():
    """A measured plan on synthetic inputs is low confidence: the badge must not be green (the basis's colour)."""
    from pipeline import risk

    m = _priced_pooled(METRICS, fleet_note=False)
    html = report.first_screen_html({"metrics": m, "previous": None})
    level = risk.confidence(m["tco"].get("chosen_basis") or "measured", risk.flags(m))
    badge = html[html.index('id="badge"') - 60 : html.index('id="badge"')]
    assert f'class="fin-badge conf-{level}"' in badge
    assert 'class="fin-badge measured"' not in html


def test_the_plan_paragraph_and_tables_read_the_priced_plan_not_the_sized_fleet():
    """Issue 17 (b): finance's "The plan" sentence, the per-fleet table, the assumptions and the schedules follow
    metrics/tco.json (the plan the budget card prices), not metrics/fleet.json when the two differ."""
    from pipeline import text

    # fleet.json sized routing (28 H100-SXM + 7 L40S); tco.json priced a pooled plan on 5 x TP2 H200 = 10 GPUs
    m = _priced_pooled(METRICS, fleet_note=True)
    m["tco"]["monthly_usd"], m["tco"]["annual_usd"] = 60_000.0, 720_000.0
    html = text.to_html(report.plan_paragraph(m))
    assert "Serve the whole workload with <strong>10 H200 GPUs</strong> (5 instances of TP2, Llama-3.1-70B" in html
    assert "<strong>USD 60,000 a month</strong>, USD 720,000 a year" in html
    assert "L40S" not in html and "35" not in html and "Route the traffic" not in html
    rows = report.tiers_table(m).to_dict("records")
    assert [(r["fleet"], r["GPU"], r["GPUs"], r["USD / month"]) for r in rows] == [("all", "H200", 10, 60_000.0)]
    sec = {
        "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 50},
        "fleet": {"burst_rate": "per_minute_p99", "safety_factor": 1.2, "expected_growth": 0.2},
        "tco": {"planned_utilization": 0.8},
    }
    values = dict(zip(*(report.assumptions(m, sec)[c] for c in ("assumption", "value")), strict=True))
    assert values["plan"] == "pooled" and "large: deployment" not in values
    assert values["deployment"] == "Llama-3.1-70B on TP2 H200, fp8 weights, fp8 KV"
    assert set(report.adopted_fleets(m)) == {"all"}  # the pooled fleet's schedule, not the two tiers'
    # the sample: tco.json prices the routed plan fleet.json sized, 28 H100-SXM + 7 L40S at USD 150,136.91
    html = text.to_html(report.plan_paragraph(METRICS))
    assert "<strong>2 fleets</strong> (routed), <strong>35: 28 H100-SXM + 7 L40S GPUs</strong>" in html
    assert "<strong>USD 150,137 a month</strong>, USD 1,801,643 a year" in html
    assert [r["GPUs"] for r in report.tiers_table(METRICS).to_dict("records")] == [28, 7]


def test_finance_tables_hold_numbers_with_units_in_the_names():
    """The assumptions and first-screen tables pass numbers (the table layer formats them), units in the labels."""
    sec = {
        "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 50},
        "fleet": {"burst_rate": "per_minute_p99", "safety_factor": 1.2, "expected_growth": 0.2},
        "tco": {"planned_utilization": 0.8},
    }
    a = report.assumptions(METRICS, sec).set_index("assumption")["value"]
    assert a["sizing rate (req/s)"] == 5.535 and a["TTFT p99 SLO (ms)"] == 2000 and a["hours per year"] == 8760
    assert a["large: price per GPU-hour ($)"] == 6.88 and a["small: share of requests (%)"] == pytest.approx(60.0195)
    screen = report.first_screen_table(METRICS).set_index("figure")["value"]
    assert screen["monthly cost ($)"] == 150_136.91 and screen["utilization (%)"] == pytest.approx(11.67)
    assert screen["GPUs"] == "35: 28 H100-SXM + 7 L40S"  # text stays text
