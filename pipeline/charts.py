"""Altair charts for the reports: one theme, SVG output (no CDN, renders offline, byte-stable)."""

from __future__ import annotations

import math
import os
from typing import Any

import altair as alt
import pandas as pd

from pipeline.runtime import CHART_SPECS_ENV

ORANGE = "#e8710a"
RED = "#d62728"
BLUE = "#1f77b4"
GREY = "#7f7f7f"


def spec_bundle(spec: dict[str, Any], **_: Any) -> dict[str, Any]:
    """A chart's display output: its Vega-Lite spec under the `+json` mimetype nbformat accepts as JSON."""
    return {f"application/vnd.vegalite.{alt.SCHEMA_VERSION.split('.')[0]}+json": spec}


THEME = "sizing"


def theme() -> dict[str, Any]:
    """The reports' chart config: labels that never collide (greedy overlap removal with a gap, a
    bounded tick count), legends shown in full (no label or symbol limit), titles never cut."""
    axis = {
        "labelOverlap": "greedy",
        "labelSeparation": 8,
        "labelFlush": True,
        "labelLimit": 260,
        "tickCount": 6,
        "titleLimit": 600,
        "labelFontSize": 11,
        "titleFontSize": 12,
    }
    return {
        "config": {
            "view": {"continuousWidth": 520, "continuousHeight": 240},
            "axis": axis,
            "axisX": {"labelAngle": 0},
            "legend": {"labelLimit": 0, "symbolLimit": 0, "titleLimit": 0, "labelFontSize": 11},
            "title": {"limit": 0, "anchor": "start", "fontSize": 13},
            "header": {"labelLimit": 0, "titleLimit": 0},
        }
    }


def enable() -> None:
    """How charts and tables leave the kernel, and no row limit for tables.

    Under the stage runner: as Vega-Lite specs, which the runner turns into SVG, keeping vl-convert's
    engine start-up (about a second) off the kernel's path (it warms the engine while the kernel boots).
    Anywhere else (a notebook opened in Jupyter): as SVG rendered here, offline, as before.
    Every DataFrame displayed afterwards renders through the one table layer (pipeline.tables), and
    every chart gets the reports' theme (`theme()`).
    """
    from pipeline import tables

    alt.renderers.register("spec", spec_bundle)
    alt.renderers.enable("spec" if os.environ.get(CHART_SPECS_ENV) == "1" else "svg")
    alt.data_transformers.disable_max_rows()
    alt.theme.register(THEME, enable=True)(theme)
    pd.set_option("display.max_colwidth", None)
    tables.register()


def _rule(
    axis: str,
    field: str,
    value: float,
    color: str = RED,
    dashed: bool = True,
    label: str | None = None,
) -> alt.LayerChart:
    """One threshold line (an SLO, a floor, a static fleet) across a chart: red and dashed unless told.

    The axis's domain is stretched 12% past the line (an invisible point), so the line never lies on the
    chart's frame; `label` is written just above (a y line, at the left) or beside (an x line, at the top).
    """
    mark = {"color": color, "strokeDash": [4, 3], "strokeWidth": 2} if dashed else {"color": color, "strokeWidth": 2}
    data = pd.DataFrame({field: [value]})
    layers: list[Any] = [alt.Chart(data).mark_rule(**mark).encode(**{axis: f"{field}:Q"})]
    pad = pd.DataFrame({field: [value * 1.12 if value > 0 else value - 1]})
    layers.append(alt.Chart(pad).mark_point(opacity=0).encode(**{axis: f"{field}:Q"}))
    if label:
        text = pd.DataFrame({field: [value], "label": [label]})
        if axis == "y":
            enc = {"y": f"{field}:Q", "x": alt.value(4)}
            opts = {"align": "left", "baseline": "bottom", "dy": -3}
        else:
            enc = {"x": f"{field}:Q", "y": alt.value(2)}
            opts = {"align": "left", "baseline": "top", "dx": 4}
        layers.append(alt.Chart(text).mark_text(color=color, fontSize=11, **opts).encode(text="label:N", **enc))
    return alt.layer(*layers)


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:g} ms"


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


COMPONENTS = ["weights_gb", "kv_gb", "activations_gb", "overhead_gb", "lora_gb"]
COMPONENT_COLORS = [BLUE, ORANGE, "#2ca02c", GREY, "#9467bd"]


def memory_stack(entries: list[dict[str, Any]]) -> alt.Chart:
    """The guide's figure 2.1: memory components per candidate, stacked, with the GPUs-with-headroom label."""
    rows = []
    for e in entries:
        label = f"{e['gpu']} w-{e['weights']} kv-{e['kv']}"
        for comp in COMPONENTS:
            rows.append(
                {
                    "candidate": label,
                    "component": comp.removesuffix("_gb"),
                    "GB": e[comp],
                    "order": COMPONENTS.index(comp),
                }
            )
    data = pd.DataFrame(rows)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("candidate:N", sort=None, title=None),
            x=alt.X("GB:Q", title="memory at p95 concurrency and context (GB, 1e9 bytes)"),
            color=alt.Color(
                "component:N",
                scale=alt.Scale(domain=[c.removesuffix("_gb") for c in COMPONENTS], range=COMPONENT_COLORS),
            ),
            order="order:Q",
            tooltip=["candidate", "component", alt.Tooltip("GB:Q", format=".1f")],
        )
        .properties(width=520, height=max(120, 16 * len(entries)))
    )


def kv_vs_concurrency(data: pd.DataFrame, concurrency_p95: float) -> alt.Chart:
    """The guide's figure 2.2: KV cache (GB) against concurrency, one line per context length."""
    lines = (
        alt.Chart(data)
        .mark_line()
        .encode(
            x=alt.X("concurrency:Q", title="concurrent sequences"),
            y=alt.Y("kv_gb:Q", title="KV cache (GB)"),
            color=alt.Color("context:N", sort=None, title="context"),
        )
    )
    rule = _rule("x", "concurrency", concurrency_p95, label=f"p95 concurrency {concurrency_p95:,.0f}")
    return alt.layer(lines, rule).properties(width=520, height=260)


def roofline(roofs: pd.DataFrame, points: pd.DataFrame) -> alt.Chart:
    """The guide's figure 3.3.2: attainable TFLOPS against arithmetic intensity (log-log), prefill and decode points."""
    roof = (
        alt.Chart(roofs)
        .mark_line()
        .encode(
            x=alt.X("intensity:Q", scale=alt.Scale(type="log"), title="arithmetic intensity (FLOPs per byte, log)"),
            y=alt.Y("tflops:Q", scale=alt.Scale(type="log"), title="attainable TFLOPS (log)"),
            color=alt.Color("gpu:N", title="GPU roof"),
        )
    )
    pts = (
        alt.Chart(points)
        .mark_point(filled=True, size=80)
        .encode(
            x="intensity:Q",
            y="tflops:Q",
            shape=alt.Shape("phase:N", title="phase"),
            color=alt.Color("gpu:N"),
            tooltip=["gpu", "phase", alt.Tooltip("intensity:Q", format=".1f"), alt.Tooltip("tflops:Q", format=".1f")],
        )
    )
    return alt.layer(roof, pts).properties(width=520, height=300)


def predicted_curve(curve: pd.DataFrame, slo_ms: float, y: str, title: str) -> alt.Chart:
    """Predicted latency against concurrency per candidate, with the SLO as a red line."""
    lines = (
        alt.Chart(curve)
        .mark_line(point=True)
        .encode(
            x=alt.X("concurrency:Q", scale=alt.Scale(type="log", base=2), title="concurrency per replica (log2)"),
            y=alt.Y(f"{y}:Q", title=title),
            color=alt.Color("label:N", title="candidate"),
        )
    )
    rule = _rule("y", y, slo_ms, label=f"SLO {_ms(slo_ms)}")
    return alt.layer(lines, rule).properties(width=520, height=260)


def _load_axis(kind: str) -> alt.X:
    title = "concurrency (closed loop, log2)" if kind == "concurrency" else "request rate, req/s (open loop, log2)"
    return alt.X("load:Q", scale=alt.Scale(type="log", base=2), title=title)


def slo_curve(
    levels: pd.DataFrame,
    column: str,
    slo_ms: float,
    c_max: float | None,
    title: str,
    kind: str,
    predicted: pd.DataFrame | None = None,
    predicted_column: str | None = None,
) -> alt.Chart:
    """A latency column against load with the SLO (red dashed), C_max (orange rule) and the roofline (grey dashed)."""
    data = levels[["curve", "load", column]].rename(columns={column: "ms"})
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=_load_axis(kind),
            y=alt.Y("ms:Q", title=title),
            color=alt.Color("curve:N", title="curve", legend=alt.Legend(orient="bottom", columns=1)),
        )
    )
    layers: list[Any] = [
        lines,
        _rule("y", "ms", slo_ms, label=f"SLO {_ms(slo_ms)}"),
    ]
    if c_max is not None:
        layers.append(_rule("x", "load", c_max, ORANGE, dashed=False, label=f"C_max {c_max:,.1f}"))
    if predicted is not None and predicted_column is not None and not predicted.empty:
        pred = predicted[["load", predicted_column]].rename(columns={predicted_column: "ms"})
        layers.append(alt.Chart(pred).mark_line(color=GREY, strokeDash=[6, 3]).encode(x="load:Q", y="ms:Q"))
    return alt.layer(*layers).properties(width=520, height=240)


def throughput_curve(
    levels: pd.DataFrame,
    c_max: float | None,
    usable_rps: float | None,
    kind: str,
    predicted: pd.DataFrame | None = None,
) -> alt.Chart:
    """Achieved RPS against load; the usable RPS at C_max is the orange point (never the curve's peak)."""
    lines = (
        alt.Chart(levels[["curve", "load", "rps"]])
        .mark_line(point=True)
        .encode(
            x=_load_axis(kind),
            y=alt.Y("rps:Q", title="achieved requests / s"),
            color=alt.Color("curve:N", legend=alt.Legend(orient="bottom", columns=1)),
        )
    )
    layers: list[Any] = [lines]
    if c_max is not None and usable_rps is not None:
        pt = pd.DataFrame(
            {
                "load": [c_max],
                "rps": [usable_rps],
                "label": [f"\u25cf usable {usable_rps:.2f} req/s at C_max {c_max:.1f}"],
            }
        )
        layers.append(
            alt.Chart(pt)
            .mark_point(color=ORANGE, size=140, filled=True)
            .encode(x="load:Q", y="rps:Q", tooltip=["label:N"])
        )
        layers.append(  # in the plot's top-left corner, where a rising throughput curve never is
            alt.Chart(pt)
            .mark_text(align="left", baseline="top", color=ORANGE, fontSize=12, fontWeight="bold")
            .encode(x=alt.value(6), y=alt.value(4), text=alt.Text("label:N"))
        )
    if predicted is not None and "predicted_rps" in predicted and predicted["predicted_rps"].notna().any():
        layers.append(
            alt.Chart(predicted[["load", "predicted_rps"]])
            .mark_line(color=GREY, strokeDash=[6, 3])
            .encode(x="load:Q", y="predicted_rps:Q")
        )
    return alt.layer(*layers).properties(width=520, height=240)


def schedule(hours: pd.DataFrame, static_instances: int) -> alt.Chart:
    """Instances per hour of day (bars) against the static peak-sized fleet (red dashed line)."""
    bars = (
        alt.Chart(hours[["hour", "instances", "rps"]])
        .mark_bar(color=BLUE)
        .encode(
            x=alt.X("hour:O", title="hour of day"),
            y=alt.Y("instances:Q", title="instances"),
            tooltip=["hour", "instances", alt.Tooltip("rps:Q", format=".2f", title="p95 req/s")],
        )
    )
    rule = _rule("y", "instances", static_instances, label=f"static fleet {static_instances}")
    return alt.layer(bars, rule).properties(width=520, height=220)


USD_AXIS = alt.Axis(format="$~s", tickCount=5)  # "$90k", "$100k": short labels that never run together


def cost_by_candidate(table: pd.DataFrame, chosen: str | list[str], label: str = "chosen") -> alt.Chart:
    """Monthly cost per priced candidate (horizontal bars), the chosen one(s) in orange, named `label` in the legend.

    With a `tier` column of more than one value (the adopted routed plan), one panel per tier, each with
    its own axes: the candidates that could serve that tier, its adopted deployment in orange.
    """
    picked = [chosen] if isinstance(chosen, str) else list(chosen)
    cols = ["candidate", "monthly_usd", "basis"] + (["tier"] if "tier" in table.columns else [])
    data = table[cols].assign(plan=lambda d: d["candidate"].map(lambda c: label if c in picked else "alternative"))
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            # labelFlush off: the theme's flush pushes the first and last bar's names onto their neighbours
            y=alt.Y(
                "candidate:N", sort="x", title=None, axis=alt.Axis(labelLimit=0, labelOverlap=False, labelFlush=False)
            ),
            x=alt.X("monthly_usd:Q", title="$ per month (static fleet)", axis=USD_AXIS),
            color=alt.Color(
                "plan:N",
                scale=alt.Scale(domain=[label, "alternative"], range=[ORANGE, BLUE]),
                title=None,
                legend=alt.Legend(orient="top"),
            ),
            tooltip=["candidate", alt.Tooltip("monthly_usd:Q", format="$,.0f"), "basis"],
        )
        .properties(width=460, height=alt.Step(18))
    )
    if "tier" in data.columns and data["tier"].nunique() > 1:
        header = alt.Header(
            labelAngle=0,
            labelAlign="left",
            labelAnchor="start",
            labelOrient="top",
            labelFontSize=13,
            labelFontWeight="bold",
            labelExpr="'tier ' + datum.value",
        )
        return chart.facet(row=alt.Row("tier:N", title=None, header=header)).resolve_scale(
            y="independent", x="independent"
        )
    return chart


def adopted_candidate(tco: dict[str, Any], tier: str) -> str | None:
    """The candidate id the adopted plan runs on tier `tier` (tco.json per_tier, or the pooled candidate)."""
    t = (tco.get("per_tier") or {}).get(tier)
    if t and t.get("candidate"):
        return str(t["candidate"])
    if t and t.get("gpu"):
        base = f"{tier}/{t['gpu']}/w-{t['weights']}/kv-{t['kv']}"
        cands = ((tco.get("per_tier_candidates") or {}).get(tier) or {}).get("candidates") or []
        ids = {c.get("candidate") for c in cands}
        if base not in ids:  # benchmarked at another TP x PP: `<id>/tp<N>` (issue-14 interface)
            alt_id = f"{base}/tp{t.get('tp')}" + (f"-pp{t['pp']}" if (t.get("pp") or 1) > 1 else "")
            if alt_id in ids:
                return alt_id
        return base
    pooled = tco.get("pooled") or {}
    return pooled.get("candidate")


def plan_cost_by_candidate(tco: dict[str, Any]) -> alt.Chart | None:
    """Cost per candidate of the ADOPTED plan, one panel per tier (the pooled fleet's candidates when the
    plan is pooled), the adopted deployment of each tier in orange. None when nothing is priced."""
    table, chosen = adopted_plan_candidates(tco)
    return None if table.empty else cost_by_candidate(table, chosen, label="adopted plan")


def adopted_plan_candidates(tco: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """The priced candidates of the adopted plan's tiers (columns tier, candidate, monthly_usd, basis) and the
    adopted candidate of each tier: per tier of a routed plan (tco.json per_tier_candidates), else the pooled
    fleet's (per_candidate, tier `all`)."""
    per_tier = tco.get("per_tier_candidates") or {}
    routed = tco.get("plan", tco.get("chosen")) not in (None, "pooled") and bool(per_tier)
    rows, chosen = [], []
    for tier in sorted(per_tier) if routed else ["all"]:
        found = (per_tier[tier].get("candidates") or []) if routed else (tco.get("per_candidate") or [])
        rows += [
            {"tier": tier, "candidate": r["candidate"], "monthly_usd": r["monthly_usd"], "basis": r.get("basis")}
            for r in found
            if r.get("monthly_usd") is not None
        ]
        pick = adopted_candidate(tco, tier)
        if pick:
            chosen.append(pick)
    return pd.DataFrame(rows, columns=["tier", "candidate", "monthly_usd", "basis"]), chosen


def pareto(
    levels: pd.DataFrame,
    itl_slo_ms: float,
    adopted: list[str] | tuple[str, ...] = (),
    frontier: bool = True,
    label: str = "adopted",
) -> alt.Chart:
    """The latency-throughput trade-off: tokens/s per GPU (y) against tokens/s per user (x), every candidate.

    `levels`: one row per candidate x load level with columns `candidate`, `output_tokens_per_s`
    (the level's total), `itl_p50_ms`, `gpus_per_instance` (TP x PP), optionally `rps`, `concurrency`
    and `itl_p99_ms` (then a level that breaks the ITL SLO is drawn hollow). tokens/s per user =
    1000 / itl_p50_ms; tokens/s per GPU = output_tokens_per_s / gpus_per_instance. The SLO region is
    x >= 1000 / itl_slo_ms (users decode at least as fast as the ITL SLO allows), shaded green; the grey
    line is the upper-right Pareto frontier over all levels; `adopted` candidates are drawn thicker, in orange,
    named `label` in the legend.
    """
    need = {"candidate", "output_tokens_per_s", "itl_p50_ms", "gpus_per_instance"}
    missing = need - set(levels.columns)
    if missing:
        raise ValueError(f"pareto(): levels lacks columns {sorted(missing)}")
    d = levels[levels["itl_p50_ms"].astype(float) > 0].copy()
    d["tokens_per_s_per_user"] = 1000.0 / d["itl_p50_ms"].astype(float)
    d["tokens_per_s_per_gpu"] = d["output_tokens_per_s"].astype(float) / d["gpus_per_instance"].astype(float)
    if "itl_p99_ms" in d:
        d["meets ITL SLO"] = d["itl_p99_ms"].astype(float) <= itl_slo_ms
    else:
        d["meets ITL SLO"] = d["tokens_per_s_per_user"] >= 1000.0 / itl_slo_ms
    d["plan"] = d["candidate"].map(lambda c: label if c in adopted else "candidate")
    d = d.sort_values(["candidate", "tokens_per_s_per_user"], kind="stable")
    slo_x = 1000.0 / itl_slo_ms
    x_max = max(float(d["tokens_per_s_per_user"].max()) if len(d) else slo_x, slo_x) * 1.1
    y_max = (float(d["tokens_per_s_per_gpu"].max()) if len(d) else 1.0) * 1.1
    region = (
        alt.Chart(pd.DataFrame({"x": [slo_x], "x2": [x_max], "y": [0.0], "y2": [y_max]}))
        .mark_rect(color="#2ca02c", opacity=0.08)
        .encode(x="x:Q", x2="x2:Q", y="y:Q", y2="y2:Q")
    )
    x = alt.X("tokens_per_s_per_user:Q", title="output tokens/s per user (1000 / ITL p50)", scale=alt.Scale(zero=False))
    y = alt.Y("tokens_per_s_per_gpu:Q", title="output tokens/s per GPU")
    tooltip = [
        "candidate",
        alt.Tooltip("tokens_per_s_per_user:Q", format=".1f"),
        alt.Tooltip("tokens_per_s_per_gpu:Q", format=",.0f"),
    ] + [alt.Tooltip(f"{c}:Q", format=",.3g") for c in ("concurrency", "rps", "itl_p99_ms") if c in d]
    plan_color = alt.Color(
        "plan:N",
        scale=alt.Scale(domain=[label, "candidate"], range=[ORANGE, "#8fb0cc"]),
        title=None,
        legend=alt.Legend(orient="top"),
    )
    plan_fill = alt.Color(
        "plan:N", scale=alt.Scale(domain=[label, "candidate"], range=[ORANGE, "#8fb0cc"]), legend=None
    )

    def marks(part: pd.DataFrame, width: float, size: float) -> list[alt.Chart]:
        line = (
            alt.Chart(part)
            .mark_line(opacity=0.8, strokeWidth=width)
            .encode(x=x, y=y, detail="candidate:N", color=plan_color)
        )
        pts = (
            alt.Chart(part)
            .mark_point(size=size, strokeWidth=1.5, opacity=1)
            .encode(
                x=x,
                y=y,
                color=plan_color,
                fill=alt.condition(alt.datum["meets ITL SLO"], plan_fill, alt.value("white")),
                tooltip=tooltip,
            )
        )
        return [line, pts]

    lines, points = marks(d[d["plan"] == "candidate"], 1.0, 30)
    top = marks(d[d["plan"] == label], 3.0, 60) if (d["plan"] == label).any() else []
    layers: list[Any] = [
        region,
        lines,
        points,
        *top,
        _rule(
            "x",
            "tokens_per_s_per_user",
            slo_x,
            color="#2ca02c",
            label=f"ITL SLO {_ms(itl_slo_ms)}: {slo_x:.0f} tok/s per user",
        ),
    ]
    if frontier and len(d) > 1:
        pts = d.sort_values("tokens_per_s_per_user", ascending=False, kind="stable")
        best, keep = -math.inf, []
        for _, r in pts.iterrows():
            if r["tokens_per_s_per_gpu"] > best:
                best = r["tokens_per_s_per_gpu"]
                keep.append({"tokens_per_s_per_user": r["tokens_per_s_per_user"], "tokens_per_s_per_gpu": best})
        front = pd.DataFrame(keep)
        layers.insert(1, alt.Chart(front).mark_line(color=GREY, strokeDash=[2, 2]).encode(x=x, y=y))
    title = alt.TitleParams(
        "Latency-throughput trade-off per candidate",
        subtitle="filled: meets the ITL SLO, hollow: breaks it; green: the SLO region; grey dashes: the Pareto frontier",
    )
    return alt.layer(*layers).properties(width=560, height=320, title=title)


def calibration_residuals(data: pd.DataFrame, clip_pct: float) -> alt.Chart:
    """Predicted / measured - 1 per level (points), per metric (rows) and deployment (columns), coloured by
    in-sample / leave-one-level-out / leave-one-deployment-out; 0 and the +-5% / +-15% bands as rules."""
    base = alt.Chart().encode(  # no data of its own: the facet's rows, split per deployment
        x=alt.X("error_pct:Q", title=f"predicted / measured - 1 (%, clipped at +-{clip_pct:g})"),
        y=alt.Y("metric:N", title=None),
    )
    points = base.mark_point(filled=True, opacity=0.7, size=40).encode(
        color=alt.Color("kind:N", title=None, legend=alt.Legend(orient="bottom")),
        shape=alt.Shape("kind:N", title=None),
        tooltip=["deployment", "level", "metric", "kind", alt.Tooltip("error_pct:Q", format="+.1f"), "clipped"],
    )
    bands = (
        alt.Chart(pd.DataFrame({"x": [-15.0, -5.0, 0.0, 5.0, 15.0]}))
        .mark_rule(color=GREY, strokeDash=[2, 3])
        .encode(x="x:Q")
    )
    return (
        alt.layer(bands, points)
        .properties(width=260, height=110)
        .facet(column=alt.Column("deployment:N", title=None, header=alt.Header(labelLimit=260)), data=data)
    )


def utilization(data: pd.DataFrame, trap_below: float) -> alt.Chart:
    """Hourly utilization of the static and the scheduled fleet, with the utilization-trap line."""
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("hour:O", title="hour of day"),
            y=alt.Y("utilization:Q", axis=alt.Axis(format="%"), title="utilization"),
            color=alt.Color("fleet:N", scale=alt.Scale(domain=["static", "scheduled"], range=[GREY, BLUE])),
        )
    )
    rule = _rule("y", "utilization", trap_below, label=f"utilization trap {trap_below:.0%}")
    return alt.layer(lines, rule).properties(width=520, height=220)


def tier_rates(data: pd.DataFrame) -> alt.Chart:
    """p95 request rate per hour of day, one line per fleet (the pooled workload dashed)."""
    return (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("hour:O", title="hour of day"),
            y=alt.Y("p95_rps:Q", title="p95 req/s in the hour"),
            color=alt.Color("tier:N", title="fleet"),
            strokeDash=alt.condition(alt.datum.tier == "all", alt.value([4, 3]), alt.value([1, 0])),
            tooltip=["tier", "hour", alt.Tooltip("p95_rps:Q", format=".3f")],
        )
        .properties(width=520, height=220)
    )


def plan_costs(data: pd.DataFrame) -> alt.Chart:
    """Monthly cost of each plan (pooled, routed), stacked by fleet."""
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("plan:N", title=None),
            x=alt.X("monthly_usd:Q", title="$ per month (static fleets)", stack="zero", axis=USD_AXIS),
            color=alt.Color("fleet:N", title="fleet"),
            tooltip=["plan", "fleet", "gpus", alt.Tooltip("monthly_usd:Q", format=",.0f")],
        )
        .properties(width=520, height=110)
    )


def production_vs_benchmark(levels: pd.DataFrame, production: pd.DataFrame, slo_ms: float) -> alt.Chart:
    """The benchmark's TTFT p99 against RPS per replica (line), production's point at its rate, the SLO (red)."""
    line = (
        alt.Chart(levels)
        .mark_line(point=True, color=BLUE)
        .encode(
            x=alt.X("rps:Q", title="requests/s per replica"),
            y=alt.Y("ttft_p99_ms:Q", title="TTFT p99 (ms)"),
            tooltip=["load", alt.Tooltip("rps:Q", format=".3f"), alt.Tooltip("ttft_p99_ms:Q", format=",.0f")],
        )
    )
    point = (
        alt.Chart(production)
        .mark_point(color=ORANGE, size=160, filled=True, shape="diamond")
        .encode(x="rps:Q", y="ttft_p99_ms:Q", tooltip=["what", alt.Tooltip("ttft_p99_ms:Q", format=",.0f")])
    )
    slo = _rule("y", "ttft_p99_ms", slo_ms, label=f"SLO {_ms(slo_ms)}")
    return alt.layer(line, point, slo).properties(width=520, height=240)


def scenario_costs(data: pd.DataFrame) -> alt.Chart:
    """Monthly cost per scenario (bars), coloured by whether the capacity is measured or estimated."""
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("scenario:N", sort=None, title=None),
            x=alt.X("monthly_usd:Q", title="$ per month (static fleet)", axis=USD_AXIS),
            color=alt.Color("slo_status:N", title="SLO status"),
            tooltip=["scenario", alt.Tooltip("monthly_usd:Q", format=",.0f"), "slo_status"],
        )
        .properties(width=520, height=alt.Step(24))
    )


def gpu_landscape(gpus: pd.DataFrame) -> alt.Chart:
    """Each candidate GPU by HBM bandwidth (x) and dense BF16 TFLOPS (y), point size = visible memory.

    Decode-heavy traffic is paid for along x (bandwidth sets ITL), prefill-heavy traffic along y.
    """
    base = alt.Chart(gpus).encode(
        x=alt.X("memory_bw_tbs:Q", title="HBM bandwidth (TB/s)", scale=alt.Scale(zero=False, padding=30)),
        y=alt.Y("bf16_tflops_dense:Q", title="dense BF16 TFLOPS", scale=alt.Scale(zero=False, padding=30)),
    )
    points = base.mark_circle(opacity=0.7).encode(
        size=alt.Size("visible_memory_gib:Q", title="visible memory (GiB)", scale=alt.Scale(range=[60, 600])),
        color=alt.Color("vendor:N", title="vendor"),
        tooltip=["gpu", "memory_bw_tbs", "bf16_tflops_dense", "visible_memory_gib"],
    )
    labels = base.mark_text(align="left", dx=9, dy=-6, fontSize=11).encode(text="gpu:N")
    return alt.layer(points, labels).properties(width=520, height=300)


def prefix_hit_rate(reuse: float, replicas: int, min_reuse: float) -> alt.Chart:
    """Prefix-cache hit rate against fleet size: kept by prefix-aware routing, about reuse / N without it."""
    top = max(2 * replicas, 8)
    rows = [
        {"replicas": n, "routing": "prefix-aware (consistent hashing)", "hit_rate": reuse} for n in range(1, top + 1)
    ]
    rows += [{"replicas": n, "routing": "round-robin", "hit_rate": reuse / n} for n in range(1, top + 1)]
    lines = (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("replicas:Q", title="replicas in the fleet", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("hit_rate:Q", title="prefix-cache hit rate", axis=alt.Axis(format="%")),
            color=alt.Color("routing:N", scale=alt.Scale(range=[BLUE, ORANGE]), title=None),
        )
    )
    floor = _rule("y", "hit_rate", min_reuse, label=f"pays off from {min_reuse:.0%}")
    fleet = _rule("x", "replicas", replicas, GREY, dashed=False, label=f"fleet {replicas}")
    return alt.layer(lines, floor, fleet).properties(width=520, height=240)
