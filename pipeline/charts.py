"""Altair charts for the reports: one theme, SVG output (no CDN, renders offline, byte-stable)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

ORANGE = "#e8710a"
RED = "#d62728"
BLUE = "#1f77b4"
GREY = "#7f7f7f"


def enable() -> None:
    """SVG renderer (vl-convert, no JavaScript in the report) and no row limit for small tables."""
    alt.renderers.enable("svg")
    alt.data_transformers.disable_max_rows()
    pd.set_option("display.max_colwidth", None)


def length_cdf(cdf: pd.DataFrame, stats: dict[str, dict[str, Any]]) -> alt.Chart:
    """CDF of input, output and context tokens (log x), with p50/p95/p99 marks."""
    marks = pd.DataFrame(
        [
            {"metric": metric, "percentile": label, "tokens": stats[metric][label]}
            for metric in ("input_tokens", "output_tokens", "context_tokens")
            for label in ("p50", "p95", "p99")
        ]
    )
    data = cdf[cdf["tokens"] > 0]
    base = (
        alt.Chart(data)
        .mark_line(color=BLUE)
        .encode(
            x=alt.X("tokens:Q", scale=alt.Scale(type="log"), title="tokens (log scale)"),
            y=alt.Y("cumulative_share:Q", title="share of requests", axis=alt.Axis(format="%")),
        )
    )
    rules = (
        alt.Chart(marks)
        .mark_rule(strokeDash=[4, 3])
        .encode(
            x="tokens:Q",
            color=alt.Color(
                "percentile:N",
                scale=alt.Scale(domain=["p50", "p95", "p99"], range=[GREY, ORANGE, RED]),
                title="percentile",
            ),
        )
    )
    panels = [
        alt.layer(
            base.transform_filter(alt.datum.metric == metric),
            rules.transform_filter(alt.datum.metric == metric),
        ).properties(width=230, height=200, title=metric.replace("_", " "))
        for metric in ("input_tokens", "output_tokens", "context_tokens")
    ]
    return alt.hconcat(*panels)


def rps_over_time(
    series: pd.DataFrame, mean_rps: float, p95_rps: float, p95_label: str, origin_label: str
) -> alt.Chart:
    """Requests per second (per-minute average) over time with mean and p95 lines (guide figure 1.3)."""
    lines = pd.DataFrame(
        [
            {"line": f"mean {mean_rps:.2f} req/s", "rps": mean_rps},
            {"line": f"{p95_label} {p95_rps:.2f} req/s", "rps": p95_rps},
        ]
    )
    area = (
        alt.Chart(series)
        .mark_line(color=BLUE, strokeWidth=1)
        .encode(
            x=alt.X("hours:Q", title=f"hours since {origin_label}"),
            y=alt.Y("rps:Q", title="requests per second (1-min average)"),
        )
    )
    rules = (
        alt.Chart(lines)
        .mark_rule(strokeWidth=2)
        .encode(
            y="rps:Q",
            color=alt.Color("line:N", scale=alt.Scale(range=[ORANGE, RED]), title=None),
        )
    )
    return alt.layer(area, rules).properties(width=760, height=260)


def hourly(hourly_rates: dict[str, dict[str, Any]], clock_label: str) -> alt.Chart:
    """Mean and p95 arrival rate per hour of day (the input of the scaling schedule)."""
    rows = [{"hour": int(h), "rate": v["mean_rps"], "statistic": "mean"} for h, v in hourly_rates.items()] + [
        {"hour": int(h), "rate": v["p95_rps"], "statistic": "p95 (per-minute)"} for h, v in hourly_rates.items()
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X("hour:O", title=clock_label),
            xOffset="statistic:N",
            y=alt.Y("rate:Q", title="requests per second"),
            color=alt.Color("statistic:N", scale=alt.Scale(range=[BLUE, RED]), title=None),
        )
        .properties(width=760, height=220)
    )
