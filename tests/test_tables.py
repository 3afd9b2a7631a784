"""The one table formatting layer (pipeline.tables): values, headers, no index, escaping, splitting, the kernel hook."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from pipeline import tables


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        (91065.31, "money", "$91,065"),  # the quarter-over-quarter row that showed "91065.3100"
        (150136.91, "money", "$150,137"),
        (6.88, "money2", "$6.88"),
        (1.861, "money2", "$1.861"),  # a price keeps its third decimal
        (81.9446, "money2", "$81.94"),
        (0.1167, "fraction", "11.7%"),  # the row that showed "0.1167"
        (0.8, "fraction", "80%"),
        (44.125, "pct", "44.1%"),  # already in percent units
        (float("nan"), "money", "n/a"),
        (None, "number", "n/a"),
        (pd.NA, "fraction", "n/a"),
        (179175, "number", "179,175"),
        (1.0197, "number", "1.02"),
        (12.345, "number", "12.3"),
        (0.3016, "number", "0.302"),
        (1054.4756, "number", "1,054"),
        (True, "number", "yes"),
        (math.inf, "number", "unbounded"),
        ("large/H100-SXM", "money", "large/H100-SXM"),
    ],
)
def test_cell_values_by_hand(value, kind, shown):
    assert tables.cell(value, kind) == shown


@pytest.mark.parametrize(
    ("name", "header", "kind"),
    [
        ("monthly_usd", "monthly ($)", "money"),
        ("usd_per_gpu_hour", "$/GPU-hour", "money2"),
        ("ttft_p99_ms", "TTFT p99 (ms)", "number"),
        ("usable_rps", "usable (req/s)", "number"),
        ("utilization", "utilization (%)", "fraction"),
        ("output_tokens_per_s", "output (tokens/s)", "number"),
        ("gpus", "GPUs", "number"),
        ("USD / month", "USD / month", "money"),  # a header written for people is kept as it is
        ("share of requests", "share of requests", "fraction"),
        ("monthly_usd_with_schedule", "monthly ($, with schedule)", "money"),  # was "monthly usd with schedule"
        ("usd_per_million_output_tokens_planned", "$/1M output tokens, planned", "money2"),
    ],
)
def test_headers_carry_units(name, header, kind):
    assert tables.header(name) == header
    assert tables.kind_of(name) == kind


def test_html_has_no_index_formats_every_column_and_escapes():
    df = pd.DataFrame(
        {
            "candidate": ["<script>alert(1)</script>", "small/L40S"],
            "monthly_usd": [91065.31, float("nan")],
            "utilization": [0.1167, 0.5],
        }
    )
    html = tables.html(df)
    assert "row_heading" not in html and "blank" not in html  # no index column
    assert html.count("<th ") == 3  # one header per column, none for an index
    cells = re.findall(r"<td [^>]*>(.*?)</td>", html)
    assert cells == ["&lt;script&gt;alert(1)&lt;/script&gt;", "$91,065", "11.7%", "small/L40S", "n/a", "50%"]
    assert "monthly ($)" in html and "utilization (%)" in html
    assert "<script>" not in html
    assert tables.html(df) == html  # byte-stable: the Styler id is a content hash


def test_a_named_index_becomes_the_first_column_and_row_numbers_go():
    df = pd.DataFrame({"tier": ["large", "small"], "gpus": [28, 7]}).set_index("tier")
    html = tables.html(df)
    assert re.findall(r"<th [^>]*>(.*?)</th>", html) == ["tier", "GPUs"]
    filtered = pd.DataFrame({"x": [1, 2, 3]})[lambda d: d["x"] > 1]  # index 1, 2: row numbers, not data
    assert re.findall(r"<td [^>]*>(.*?)</td>", tables.html(filtered)) == ["2", "3"]


def test_highlighted_rows_get_the_adopted_class():
    df = pd.DataFrame({"candidate": ["a", "b", "c"], "monthly_usd": [3.0, 2.0, 1.0]})
    html = tables.html(df, highlight=lambda r: r["candidate"] == "b")
    rows = re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)[1:]
    assert ["sizing-adopted" in r for r in rows] == [False, True, False]


def test_a_table_wider_than_the_page_is_split_repeating_its_key_column():
    wide = pd.DataFrame({"candidate": ["x" * 30, "y"], **{f"column_{i}_ms": [1000.0 + i, 2.0] for i in range(20)}})
    frame = tables.display_frame(wide)
    assert tables.width_px(frame) > tables.MAX_WIDTH_PX
    parts = tables.split(frame)
    assert len(parts) >= 2
    assert all(p.columns[0] == "candidate" for p in parts)
    assert all(tables.width_px(p) <= tables.MAX_WIDTH_PX for p in parts)
    assert sum(p.shape[1] - 1 for p in parts) == 20  # every column once, besides the repeated key
    html = tables.html(wide)
    assert html.count("<table") == len(parts)


def test_long_words_get_break_opportunities_but_short_ones_do_not():
    assert tables.breakable("data/raw/traffic/sample_traffic.parquet") == (
        "data/<wbr>raw/<wbr>traffic/<wbr>sample_<wbr>traffic.<wbr>parquet"
    )
    assert tables.breakable("a < b") == "a &lt; b"
    assert tables.breakable("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_register_makes_it_the_html_of_every_dataframe_in_a_real_ipython_shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        assert tables.register()
        df = pd.DataFrame({"monthly_usd": [91065.31]})
        data, _ = shell.display_formatter.format(df)
        assert data["text/html"] == tables.html(df) and "$91,065" in data["text/html"]
    finally:
        shell.display_formatter.formatters["text/html"].pop(pd.DataFrame, None)
        InteractiveShell.clear_instance()


LEVELS = [
    {"concurrency": 8, "rps": 1.02, "output_tokens_per_s": 350.0, "ttft_p50_ms": 480.0, "ttft_p99_ms": 699.8,
     "itl_p50_ms": 12.5, "itl_p99_ms": 14.27, "e2e_p50_ms": 4200.0},
    {"concurrency": 16, "rps": 1.5, "output_tokens_per_s": 520.0, "ttft_p50_ms": 900.0, "ttft_p99_ms": 2400.0,
     "itl_p50_ms": 20.0, "itl_p99_ms": 30.0, "e2e_p50_ms": None},
]  # fmt: skip


def test_bench_summary_has_vllm_labels_per_gpu_throughput_and_the_slo_verdict():
    table = tables.bench_summary(LEVELS, gpus_per_instance=4, slo={"ttft_p99_ms": 2000, "itl_p99_ms": 50})
    assert list(table.columns[:3]) == [
        "Maximum request concurrency",
        "Request throughput (req/s)",
        "Output token throughput (tok/s)",
    ]
    assert table["Output token throughput per GPU (tok/s)"].tolist() == [87.5, 130.0]  # 350 / 4, 520 / 4
    assert table["Meets SLO"].tolist() == [True, False]  # 2,400 ms TTFT p99 > 2,000
    shown = tables.display_frame(table)
    assert shown["Median E2EL (ms)"].tolist() == ["4,200", "n/a"]
    text = tables.bench_summary_text(LEVELS[0])
    assert text.splitlines()[0] == "============ Serving Benchmark Result ============"
    assert "Median ITL (ms):                              12.5" in text and len(text.splitlines()[1]) == 50


def test_pareto_chart_plots_tokens_per_gpu_against_tokens_per_user_with_the_slo_region():
    from pipeline import charts

    levels = pd.DataFrame([{**lv, "candidate": "large/H100-SXM/w-fp8/kv-fp8", "gpus_per_instance": 4} for lv in LEVELS])
    spec = charts.pareto(levels, itl_slo_ms=25.0, adopted=["large/H100-SXM/w-fp8/kv-fp8"]).to_dict()
    datasets = spec["datasets"].values()
    points = next(d for d in datasets if d and "tokens_per_s_per_user" in d[0] and "candidate" in d[0])
    # by hand: 1000 / 12.5 ms = 80 tok/s per user, 350 / 4 GPUs = 87.5 tok/s per GPU; 1000 / 20 = 50, 520 / 4 = 130
    got = sorted((p["tokens_per_s_per_user"], p["tokens_per_s_per_gpu"], p["meets ITL SLO"]) for p in points)
    assert got == [(50.0, 130.0, False), (80.0, 87.5, True)]  # ITL p99 30 ms > 25 ms SLO: hollow
    assert {p["plan"] for p in points} == {"adopted"}
    region = next(d for d in datasets if d and set(d[0]) == {"x", "x2", "y", "y2"})
    assert region[0]["x"] == 40.0  # the SLO region starts at 1000 / 25 ms per user
    with pytest.raises(ValueError, match="gpus_per_instance"):
        charts.pareto(levels.drop(columns=["gpus_per_instance"]), 25.0)
