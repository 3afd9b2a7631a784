"""pipeline/report_views.py on hand-built metrics documents (answers worked out by hand in the comments)."""

from __future__ import annotations

import pandas as pd

from pipeline import charts, report_views, tables
from pipeline.text import to_html


def _lv(c: int, tps: float | None, itl50: float | None, itl99: float = 40.0) -> dict:
    return {
        "concurrency": c,
        "rps": c / 2,
        "output_tokens_per_s": tps,
        "ttft_p50_ms": 100.0,
        "ttft_p99_ms": 300.0,
        "itl_p50_ms": itl50,
        "itl_p99_ms": itl99,
        "e2e_p50_ms": 5000.0,
    }


OP = {
    "candidates": {
        # listed out of order: rows come back sorted by tier, candidate, concurrency
        "small/L40S/w-fp8/kv-fp8": {
            "tier": "small",
            "gpu": "L40S",
            "weights": "fp8",
            "kv": "fp8",
            "tp": 1,
            "pp": None,
            "basis": "transferred",
            "levels": [_lv(8, 800.0, 20.0), _lv(2, 300.0, 10.0)],
        },
        "large/H100-SXM/w-bf16/kv-bf16": {
            "tier": "large",
            "gpu": "H100-SXM",
            "weights": "bf16",
            "kv": "bf16",
            "tp": 4,
            "pp": 1,
            "basis": "measured",
            "levels": [_lv(1, 400.0, 8.0), _lv(4, None, 9.0), _lv(16, 1600.0, 0.0), _lv(8, 2400.0, 16.0, 60.0)],
        },
        "large/H100-SXM/w-bf16/kv-bf16/tp2-pp2": {
            "tier": "large",
            "gpu": "H100-SXM",
            "weights": "bf16",
            "kv": "bf16",
            "tp": 2,
            "pp": 2,
            "basis": "calibrated",
            "levels": [_lv(4, 1000.0, 12.5)],
        },
        "all/H100-SXM/w-bf16/kv-bf16": {"tier": "all", "gpu": "H100-SXM", "tp": 4, "basis": "measured", "levels": []},
    },
    "per_tier": {
        "large": {"manifest": {"gpu": "H100-SXM", "tp": 4, "pp": 1, "weight_dtype": "bf16", "kv_dtype": "bf16"}},
        "small": {"sizing_candidate": "small/L40S/w-fp8/kv-fp8"},
    },
    "manifest": {"gpu": "H100-SXM", "tp": 2, "pp": 2, "weight_dtype": "fp8", "kv_dtype": "fp8"},  # no such candidate
    "anchor": {"deployment": "all/H100-SXM/w-bf16/kv-bf16"},
}
OP["per_tier"]["large"]["anchor"] = {"deployment": "large/H100-SXM/w-bf16/kv-bf16", "factor": 0.3352}


def test_gpus_per_instance_is_tp_times_pp() -> None:
    assert report_views.gpus_per_instance({"tp": 2, "pp": 2}) == 4
    assert report_views.gpus_per_instance({"tp": 8, "pp": None}) == 8
    assert report_views.gpus_per_instance({}) == 1


def test_pareto_levels_keeps_placeable_levels_sorted() -> None:
    df = report_views.pareto_levels(OP, "large")
    # large/...: concurrency 4 has no throughput, 16 has ITL p50 0 -> dropped; 1 and 8 kept, in order; tp2-pp2 after
    assert list(zip(df["candidate"], df["concurrency"], strict=True)) == [
        ("large/H100-SXM/w-bf16/kv-bf16", 1),
        ("large/H100-SXM/w-bf16/kv-bf16", 8),
        ("large/H100-SXM/w-bf16/kv-bf16/tp2-pp2", 4),
    ]
    assert df["gpus_per_instance"].tolist() == [4, 4, 4]
    assert df["basis"].tolist() == ["measured", "measured", "calibrated"]
    small = report_views.pareto_levels(OP, "small")
    assert small["concurrency"].tolist() == [2, 8]
    assert len(report_views.pareto_levels(OP)) == 5  # every tier: 3 + 2, tier all has no level
    assert report_views.pareto_levels({"candidates": {}}).columns.tolist() == report_views.PARETO_COLUMNS


def test_pareto_levels_feed_charts_pareto_per_gpu_and_per_user() -> None:
    df = report_views.pareto_levels(OP, "large")
    spec = charts.pareto(df, 50.0, adopted=["large/H100-SXM/w-bf16/kv-bf16"]).to_dict()
    rows = [r for d in spec["datasets"].values() for r in d if "tokens_per_s_per_gpu" in r and "candidate" in r]
    got = {(r["candidate"], r["concurrency"]): (r["tokens_per_s_per_user"], r["tokens_per_s_per_gpu"]) for r in rows}
    # 1000 / 8 ms = 125 tok/s per user, 400 / 4 GPUs = 100; 1000 / 16 = 62.5, 2400 / 4 = 600; 1000 / 12.5 = 80, 1000 / 4
    assert got[("large/H100-SXM/w-bf16/kv-bf16", 1)] == (125.0, 100.0)
    assert got[("large/H100-SXM/w-bf16/kv-bf16", 8)] == (62.5, 600.0)
    assert got[("large/H100-SXM/w-bf16/kv-bf16/tp2-pp2", 4)] == (80.0, 250.0)


def test_bench_summary_on_pareto_rows_per_gpu() -> None:
    rows = report_views.pareto_levels(OP, "small")
    table = tables.bench_summary(rows, gpus_per_instance=1, slo={"ttft_p99_ms": 2000, "itl_p99_ms": 50})
    assert table["Output token throughput per GPU (tok/s)"].tolist() == [300.0, 800.0]
    assert table["Meets SLO"].tolist() == [True, True]


def test_adopted_by_tier_pooled_and_routed() -> None:
    pooled = {"plan": "pooled", "pooled": {"candidate": "all/H100-SXM/w-bf16/kv-bf16"}, "per_tier": {}}
    assert report_views.adopted_by_tier(pooled) == {"all": "all/H100-SXM/w-bf16/kv-bf16"}
    routed = {
        "plan": "routed",
        "pooled": {"candidate": "all/H100-SXM/w-bf16/kv-bf16"},
        "per_tier": {
            "small": {"candidate": "small/L40S/w-fp8/kv-fp8"},
            "large": {"candidate": "large/H100-SXM/w-bf16/kv-bf16"},
        },
    }
    # the pooled candidate is not part of a routed plan
    assert report_views.adopted_by_tier(routed) == {
        "large": "large/H100-SXM/w-bf16/kv-bf16",
        "small": "small/L40S/w-fp8/kv-fp8",
    }


def test_sizing_by_tier_from_operating_point_alone() -> None:
    # small: its sizing_candidate; large: the manifest's H100-SXM TP4 x PP1 bf16 (not the calibrated TP2 x PP2);
    # all: no candidate has the top-level manifest's fp8 TP2 x PP2 deployment, so the anchor
    assert report_views.sizing_by_tier(OP) == {
        "all": "all/H100-SXM/w-bf16/kv-bf16",
        "large": "large/H100-SXM/w-bf16/kv-bf16",
        "small": "small/L40S/w-fp8/kv-fp8",
    }


def test_pareto_sections_adopted_tiers_first() -> None:
    secs = report_views.pareto_sections(OP, {"small": "small/L40S/w-fp8/kv-fp8"})
    # tier all has no placeable level: left out; small (adopted) before large
    assert [rows["tier"].iloc[0] for _, rows, _ in secs] == ["small", "large"]
    assert [ids for _, _, ids in secs] == [["small/L40S/w-fp8/kv-fp8"], []]
    head_small, head_large = (to_html(h) for h, _, _ in secs)
    assert "tier small" in head_small and "1 candidate," in head_small and "small/L40S/w-fp8/kv-fp8" in head_small
    assert "2 candidates" in head_large and "not part of the adopted plan" in head_large
    # large's calibrated candidate carries no anchor factor of its own here: drawn as the model predicts, said so
    assert "1 model-based curve without an anchor drawn as the model predicts" in head_large
    assert "x their anchor" not in head_small and "without an anchor" in head_small  # small's transferred one too


def test_pareto_draws_model_curves_scaled_by_their_anchor() -> None:
    """Like for like with the sizing (issue 14): a model-based candidate's throughput on the chart is the model's
    x its own anchor factor (op.candidates[id].anchor.factor), its ITL untouched; a measured one is as measured."""
    import copy

    op = copy.deepcopy(OP)
    cal = op["candidates"]["large/H100-SXM/w-bf16/kv-bf16/tp2-pp2"]
    cal["anchor"] = {"deployment": "large/H100-SXM/w-bf16/kv-bf16", "factor": 0.5}
    op["candidates"]["large/H100-SXM/w-bf16/kv-bf16"]["anchor"] = {"factor": 0.5}  # measured: never scaled
    raw = report_views.pareto_levels(op, "large")
    scaled = report_views.pareto_levels(op, "large", anchored=True)
    by = lambda df, cid: df[df["candidate"] == cid].reset_index(drop=True)  # noqa: E731
    # the calibrated level: 1000 tokens/s x 0.5 = 500 by hand, ITL p50 12.5 ms unchanged
    c = by(scaled, "large/H100-SXM/w-bf16/kv-bf16/tp2-pp2")
    assert c["output_tokens_per_s"].tolist() == [500.0] and c["itl_p50_ms"].tolist() == [12.5]
    assert by(raw, "large/H100-SXM/w-bf16/kv-bf16/tp2-pp2")["output_tokens_per_s"].tolist() == [1000.0]
    m = "large/H100-SXM/w-bf16/kv-bf16"
    assert by(scaled, m)["output_tokens_per_s"].tolist() == by(raw, m)["output_tokens_per_s"].tolist()
    (head, rows, _), *_ = report_views.pareto_sections(op, {"large": m})
    assert rows["output_tokens_per_s"].max() == 2400.0 and 500.0 in rows["output_tokens_per_s"].tolist()
    assert "throughput is the engine model's x their anchor (0.50" in to_html(head)


def test_basis_sentence_counts_each_basis_in_plain_words() -> None:
    rows = pd.DataFrame({"basis": ["transferred", "measured", "transferred", "roofline", None]})
    assert report_views.basis_counts(rows) == {"measured": 1, "transferred": 2, "roofline": 1, "unknown": 1}
    text = to_html(report_views.basis_sentence(rows, "measured"))
    assert "1 measured (benchmarked on that deployment at the workload" in text
    assert "2 transferred (never benchmarked" in text
    assert "1 roofline (never benchmarked and no calibration" in text
    assert "The adopted plan is measured" in text
    assert "roofline-scaled" not in text
    assert report_views.basis_sentence([]) == "No candidate is priced."


def test_pareto_charts_one_per_tier_or_why_not() -> None:
    out = report_views.pareto_charts(OP, {"large": "large/H100-SXM/w-bf16/kv-bf16"}, 50)
    assert len(out) == 2 and all(chart is not None for _, chart in out)
    assert "tier large" in to_html(out[0][0])
    (why, chart), *rest = report_views.pareto_charts(OP, {}, None)
    assert chart is None and not rest and "No ITL SLO" in why
    (why, chart), *rest = report_views.pareto_charts({"candidates": {}}, {}, 50)
    assert chart is None and not rest and "No candidate curve" in why


def test_plan_cost_note_pooled_counts_priced_candidates_only() -> None:
    tco = {
        "plan": "pooled",
        "chosen_basis": "calibrated",
        "pooled": {"candidate": "all/a"},
        "per_tier": {},
        "per_candidate": [
            {"candidate": "all/a", "monthly_usd": 100.0, "basis": "calibrated"},
            {"candidate": "all/b", "monthly_usd": 80.0, "basis": "transferred"},
            {"candidate": "all/c", "monthly_usd": None, "basis": "roofline"},  # not priced: not counted
        ],
    }
    text = to_html(report_views.plan_cost_note(tco))
    assert "could serve the pooled fleet" in text
    assert "1 calibrated (benchmarked at other lengths" in text and "1 transferred" in text
    assert "roofline" not in text.split("The adopted plan")[0]
    assert "The adopted plan is calibrated" in text


def test_choice_line_says_the_basis_not_measured_by_default() -> None:
    tco = {
        "chosen_basis": "calibrated",
        "allow_transferred": False,
        "per_candidate": [
            {"candidate": "a", "basis": "calibrated", "eligible": True},
            {"candidate": "b", "basis": "measured", "eligible": True},
            {"candidate": "c", "basis": "transferred", "eligible": False},
        ],
    }
    text = to_html(report_views.choice_line(tco))
    assert "cheapest of the 2 candidates whose capacity may size the plan (measured or calibrated)" in text
    assert "out of 3 candidates; its capacity" in text
    assert "its capacity is calibrated: benchmarked at other lengths" in text
    assert "or transferred" in to_html(report_views.choice_line({**tco, "allow_transferred": True}))


def test_scenario_table_keeps_numbers_for_the_table_layer() -> None:
    from pipeline import tco_views

    rows = [
        {
            "scenario": "the plan (routed)",
            "changes": {},
            "candidate": "large/a + small/b",
            "basis": "measured",
            "gpus": 35,
            "monthly_usd": 150137.2,
            "utilization": 0.1234,
            "usd_per_million_output_tokens": 81.944,
            "slo_status": "meets (measured)",
        },
        {
            "scenario": "H200 instead of H100",
            "changes": {"gpu": "H200"},
            "candidate": "all/H200/w-fp8/kv-fp8",
            "basis": "transferred",
            "gpus": 40,
            "usd_per_gpu_hour": 7.912,
            "monthly_usd": 231030.0,
            "interval": {"monthly_usd_lo": 161721.4, "monthly_usd_hi": 311891.0},
            "utilization": 0.2,
            "usd_per_million_output_tokens": 126.1,
            "slo_status": "meets on a transferred curve",
        },
    ]
    shown = tables.display_frame(tco_views.scenario_table(rows))
    assert shown.columns.tolist() == [
        "scenario",
        "changes",
        "deployment",
        "capacity basis",
        "GPUs",
        "USD / GPU-hour",
        "USD / month",
        "USD / month, 80% band",
        "utilization (%)",
        "USD / 1M output tokens",
        "SLO",
    ]
    plan, h200 = shown.to_dict("records")
    assert (plan["changes"], plan["USD / GPU-hour"], plan["USD / month, 80% band"]) == ("none", "n/a", "n/a")
    assert (plan["USD / month"], plan["utilization (%)"], plan["USD / 1M output tokens"]) == (
        "$150,137",
        "12.3%",
        "$81.94",
    )
    assert (h200["changes"], h200["USD / GPU-hour"], h200["USD / month"]) == ("gpu=H200", "$7.912", "$231,030")
    assert h200["USD / month, 80% band"] == "$161,721-$311,891"
    assert h200["utilization (%)"] == "20%"


def test_benchmark_next_ids_follow_the_chart() -> None:
    tco = {
        "plan": "routed",
        "benchmark_next": [{"candidate": "all/H200"}],
        "per_tier_candidates": {
            "small": {"benchmark_next": [{"candidate": "small/L40S/int8"}]},
            "large": {"benchmark_next": [{"candidate": "large/B200"}, {"candidate": "large/H200"}]},
        },
    }
    assert report_views.benchmark_next_ids(tco) == ["large/B200", "large/H200", "small/L40S/int8"]
    assert report_views.benchmark_next_ids({**tco, "plan": "pooled"}) == ["all/H200"]
    empty = {**tco, "per_tier_candidates": {"small": {"benchmark_next": []}}}
    assert report_views.benchmark_next_ids(empty) == ["all/H200"]


def test_sizing_sections_bench_table_and_slo_charts_per_fleet() -> None:
    secs = report_views.sizing_sections(OP, {"ttft_p99_ms": 2000, "itl_p99_ms": 50})
    heads = [to_html(h) for h, _, _ in secs]
    # all first (its anchor candidate has no level), then the tiers sorted
    assert [h.split("</strong>")[0] for h in heads] == [
        "<p><strong>The pooled fleet (all traffic)",
        "<p><strong>Tier large",
        "<p><strong>Tier small",
    ]
    assert "no load level" in heads[0] and secs[0][1] is None and secs[0][2] == []
    _, large, figs = secs[1]
    assert "TP4 x PP1 = 4 GPUs per instance" in heads[1]
    # load order 1, 4, 8, 16; per GPU = output tok/s / 4: 100, n/a (no throughput), 600, 400
    assert large["Maximum request concurrency"].tolist() == [1, 4, 8, 16]
    per_gpu = large["Output token throughput per GPU (tok/s)"].tolist()
    assert per_gpu[0] == 100.0 and pd.isna(per_gpu[1]) and per_gpu[2:] == [600.0, 400.0]
    # ITL p99 60 ms > 50 at concurrency 8 -> fails; the others are at 40 ms and TTFT p99 300 ms
    assert large["Meets SLO"].tolist() == [True, True, False, True]
    assert len(figs) == 2  # TTFT and ITL against concurrency
    _, small, figs = secs[2]
    assert "TP1 x PP1 = 1 GPU per instance" in heads[2] and small["Maximum request concurrency"].tolist() == [2, 8]
    # no ITL SLO: one chart, and ITL never fails the table's SLO column
    no_itl = report_views.sizing_sections(OP, {"ttft_p99_ms": 2000, "itl_p99_ms": None})
    assert len(no_itl[1][2]) == 1 and no_itl[1][1]["Meets SLO"].tolist() == [True, True, True, True]


def test_pareto_legend_names_the_highlight() -> None:
    (_, chart), *_ = report_views.pareto_charts(
        OP, {"large": "large/H100-SXM/w-bf16/kv-bf16"}, 50, legend="sizes the fleet"
    )
    spec = chart.to_dict()
    domains = [
        enc["color"]["scale"]["domain"]
        for layer in spec["layer"]
        for enc in [layer.get("encoding") or {}]
        if "scale" in (enc.get("color") or {})
    ]
    assert domains and all(d == ["sizes the fleet", "candidate"] for d in domains)
    plans = {r["plan"] for d in spec["datasets"].values() for r in d if "plan" in r}
    assert plans == {"sizes the fleet", "candidate"}
