"""The finance report's content: the first screen, risk flags, assumptions with sources, and the
quarter-over-quarter comparison, built from the metrics files only (no stage reads a notebook).

Every string that came from an input file (tenant, tier, model, GPU, file names) passes through
`esc` before it reaches HTML; tables go through pandas, which escapes cell text.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from pipeline.previous import previous_metrics as previous_metrics  # report.previous_metrics: the name kept for callers

METRIC_FILES = ("workload", "tiers", "memory", "operating_point", "fleet", "tco", "validation")
SECTIONS = ("report", "slo", "fleet", "tco", "curve", "routing")


def _n(value: Any) -> str:
    """A number as the tables show it (pipeline.tables.number: thousands separators, about 3 significant digits)."""
    from pipeline import tables

    return tables.cell(value)


def esc(value: Any) -> str:
    """HTML-escape anything shown in the report (quotes too)."""
    return escape(str(value), quote=True)


def gpus_text(fleet: dict[str, Any]) -> str:
    """'35: 28 H100-SXM + 7 L40S', or '32 x H100-SXM' for one GPU type."""
    by = fleet.get("gpus_by_type") or {}
    if len(by) == 1:
        gpu, n = next(iter(by.items()))
        return f"{n} x {gpu}"
    return f"{fleet['total_gpus']}: " + " + ".join(f"{n} {gpu}" for gpu, n in by.items())


def adopted_plan(m: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The plan as metrics/tco.json prices it (which may not be the fleet fleet.json sized, pipeline.risk.plan_differs):
    `plan` (tco.plan), `label` ('one pooled fleet' / 'routed, 2 fleets'), `fleets` {name: gpu, gpus, instances,
    tp, pp}, `gpus_by_type`, `total_gpus`, `differs` (True when tco's plan is not fleet.json's).

    The GPU counts are tco.per_tier's (gpus, gpu) when the two differ; when they agree they are the same
    fleets and fleet.json's are read (total_gpus, gpus_by_type, as before), as they are when tco.per_tier
    has no GPU counts (an older file)."""
    from pipeline import risk

    t, f = m.get("tco") or {}, m.get("fleet") or {}
    sized = f.get("per_tier") or {}
    priced = {
        n: r
        for n, r in (t.get("per_tier") or {}).items()
        if isinstance(r, dict) and r.get("gpu") and isinstance(r.get("gpus"), int)
    }
    differs = bool(risk.plan_differs(m))
    if priced and (differs or not sized):
        fleets = {
            n: {
                "gpu": r["gpu"],
                "gpus": r["gpus"],
                "instances": r.get("instances"),
                "tp": r.get("tp"),
                "pp": r.get("pp") or (sized.get(n) or {}).get("pp") or 1,
            }
            for n, r in priced.items()
        }
        by: dict[str, int] = {}
        for x in fleets.values():
            by[x["gpu"]] = by.get(x["gpu"], 0) + x["gpus"]
        total = sum(by.values())
    else:
        fleets = {
            n: {
                "gpu": x.get("gpu"),
                "gpus": x.get("gpus"),
                "instances": x.get("total_instances"),
                "tp": x.get("tp"),
                "pp": x.get("pp") or 1,
            }
            for n, x in sized.items()
        }
        by = dict(f.get("gpus_by_type") or {})
        total = f.get("total_gpus", sum(by.values()))
    plan = t.get("plan") or f.get("plan") or "pooled"
    return {
        "plan": plan,
        "label": "one pooled fleet" if plan == "pooled" else f"{plan}, {len(fleets)} fleets",
        "fleets": fleets,
        "gpus_by_type": by,
        "total_gpus": total,
        "differs": differs,
    }


def plan_paragraph(m: dict[str, dict[str, Any]]) -> str:
    """Finance's "The plan" sentence (Markdown, input strings escaped): the plan metrics/tco.json PRICES (`plan`,
    `per_tier`, `monthly_usd`, `annual_usd`: the budget card's figures), never the fleet metrics/fleet.json sized
    when the two differ (pipeline.report.adopted_plan). A pooled plan names its deployment and why it was chosen;
    a routed one its fleets and GPUs by kind."""
    from pipeline.report_views import choice_line
    from pipeline.text import txt

    t = m["tco"]
    a = adopted_plan(m)
    money = f"**USD {float(t['monthly_usd']):,.0f} a month**, USD {float(t['annual_usd']):,.0f} a year"
    if a["plan"] == "pooled":
        name, x = next(iter(a["fleets"].items()))
        priced = (t.get("per_tier") or {}).get(name) or {}
        sized = m["fleet"].get("pooled") or {}  # the pooled fleet serves model.name whichever deployment is priced
        model = priced.get("model") or sized.get("model")
        weights = priced.get("weights") or (None if a["differs"] else sized.get("weight_dtype"))
        what = ", ".join(
            part
            for part in (
                f"{x['instances']} instances of TP{x['tp']}" if x.get("instances") is not None else "",
                txt(model) if model else "",
                f"{txt(weights)} weights" if weights else "",
            )
            if part
        )
        return (
            f"Serve the whole workload with **{a['total_gpus']} {txt(x['gpu'])} GPUs**"
            + (f" ({what})" if what else "")
            + f": {money}. "
            + choice_line(t)
        )
    gpus = gpus_text({"gpus_by_type": a["gpus_by_type"], "total_gpus": a["total_gpus"]})
    return (
        f"Route the traffic to **{len(a['fleets'])} fleets** ({txt(a['plan'])}), **{txt(gpus)} GPUs**: "
        f"{money}, one row per fleet below."
    )


def first_screen(m: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The figures finance reads first: (label, value, where it comes from)."""
    f, t, w = m["fleet"], m["tco"], m["workload"]
    tot = t["totals"]
    tiers = f["per_tier"]
    r = t["routing"]
    a = adopted_plan(m)
    if a["plan"] == "pooled":
        plan = ("plan", "one pooled fleet", r["verdict"] if r.get("routed_monthly_usd") is not None else r["why"])
    else:
        plan = (
            "plan",
            f"{a['plan']}: {len(a['fleets'])} fleets",
            f"{r['why']}; {r['verdict']}",
        )
    if a["differs"]:
        gpus = (
            "GPUs",
            gpus_text({"gpus_by_type": a["gpus_by_type"], "total_gpus": a["total_gpus"]}),
            "metrics/tco.json per_tier (the priced plan; metrics/fleet.json sized another fleet)",
        )
    else:
        gpus = ("GPUs", gpus_text(f), "metrics/fleet.json total_gpus, gpus_by_type (step 11)")
    headroom = ", ".join(
        f"{name} {x['headroom']:.0%} + {x['spares']} spare"
        if len(tiers) > 1
        else f"{x['headroom']:.0%} + {x['spares']} spare"
        for name, x in tiers.items()
    )
    return [
        gpus,
        plan,
        ("monthly cost", f"USD {t['monthly_usd']:,.0f}", "GPUs x $/GPU-hour x 730 h (metrics/tco.json)"),
        ("annual cost", f"USD {t['annual_usd']:,.0f}", "x 8760 h"),
        (
            "monthly cost with the scaling schedule",
            f"USD {tot['monthly_usd_with_schedule']:,.0f}"
            if tot.get("monthly_usd_with_schedule") is not None
            else "no schedule",
            "instance-hours of the hourly schedule (step 11)"
            + (f": {tot['schedule_note']}" if tot.get("schedule_note") else ""),
        ),
        (
            "cost per 1M output tokens",
            f"USD {t['usd_per_million_output_tokens']:,.2f}",
            "at the measured average utilization" + (", blended over the tiers" if len(tiers) > 1 else ""),
        ),
        (
            "cost per 1M output tokens, planned",
            f"USD {tot['usd_per_million_output_tokens_planned']:,.2f}",
            f"at {tot['planned_utilization']:.0%} utilization",
        ),
        ("utilization", f"{t['utilization']:.0%}", "mean rate / (instances x usable RPS)"),
        ("headroom", headroom, "max(growth, burst) + N+1 (fleet params)"),
        (
            "traffic sized for",
            f"{w['rps']['sizing_rate']:g} req/s",
            f"metrics/workload.json rps.sizing_rate ({w.get('sizing_rate_key')})"
            + (": " + ", ".join(f"{n} {x['peak_rps']:g}" for n, x in tiers.items()) if len(tiers) > 1 else ""),
        ),
    ]


def first_screen_table(m: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The first screen's figures (`first_screen`) as a table of numbers, each unit in the figure's name
    ("monthly cost ($)", "utilization (%)"), for pipeline/tables.py to format; the text figures stay text."""
    t, w = m["tco"], m["workload"]
    tot = t["totals"]
    numbers = {
        "monthly cost": ("monthly cost ($)", t["monthly_usd"]),
        "annual cost": ("annual cost ($)", t["annual_usd"]),
        "monthly cost with the scaling schedule": (
            "monthly cost with the scaling schedule ($)",
            tot.get("monthly_usd_with_schedule"),
        ),
        "cost per 1M output tokens": ("cost per 1M output tokens ($)", t["usd_per_million_output_tokens"]),
        "cost per 1M output tokens, planned": (
            "cost per 1M output tokens, planned ($)",
            tot["usd_per_million_output_tokens_planned"],
        ),
        "utilization": ("utilization (%)", 100.0 * t["utilization"]),
        "traffic sized for": ("traffic sized for (req/s)", w["rps"]["sizing_rate"]),
    }
    rows = [(*numbers.get(label, (label, value)), src) for label, value, src in first_screen(m)]
    return pd.DataFrame(rows, columns=["figure", "value", "where it comes from"])


def risk_flags(m: dict[str, dict[str, Any]], trap_below: float = 0.4) -> list[str]:
    """Everything that makes the figures less certain, in plain words."""
    op, t, w, f = m["operating_point"], m["tco"], m["workload"], m["fleet"]
    flags = []
    if f.get("synthetic_curve"):
        flags.append(
            "A benchmark curve that sized the fleet is SYNTHETIC sample data: replace data/raw/benchmarks/ with measured sweeps."
        )
    if op.get("gap_flag"):
        flags.append(
            f"Little's-law gap {op['littles_law_gap']:.2f}x: the benchmark does not behave like production (step 10)."
        )
    if f["plan"] != "pooled":
        for name, x in sorted((op.get("per_tier") or {}).items()):
            if x.get("gap_flag"):
                flags.append(f"Tier {name}: Little's-law gap {x['littles_law_gap']:.2f}x on its benchmark curve.")
            for warn in x.get("warnings") or []:
                flags.append(f"Tier {name} benchmark: {warn}")
    if t.get("utilization_trap"):
        flags.append(
            f"Utilization trap: average utilization {t['utilization']:.0%} (under {trap_below:.0%}): tokens cost more than planned."
        )
    if (t.get("price_basis") or {}).get("like_for_like") is False:
        flags.append("Prices are not like-for-like: " + str(t["price_basis"]["rule"]) + ".")
    if (t.get("totals") or {}).get("schedule_note"):
        flags.append("Scaling schedule: " + str(t["totals"]["schedule_note"]) + ".")
    r = t.get("routing") or {}
    if f["plan"] != "pooled" and r.get("cheaper") is False:
        flags.append(f"Routing was chosen by the guide's rules but costs more than one pooled fleet: {r['verdict']}.")
    for name, why in sorted(((f.get("routing") or {}).get("unsized") or {}).items()):
        flags.append(f"Tier {name} could not be sized on its own: {why}")
    v = m.get("validation") or {}
    if v.get("recharacterize"):
        flags.append(
            "Production does not behave like the benchmark (step 13): "
            + "; ".join(v.get("reasons") or [])
            + ". Re-characterize the workload before trusting this plan; revisit "
            + "; ".join(v.get("revisit") or [])
            + "."
        )
    if op.get("percentile_used") not in ("p99", None):
        flags.append(f"The SLO was checked at {op['percentile_used']}, not p99: C_max is optimistic.")
    for warn in op.get("warnings") or []:
        flags.append("Benchmark: " + str(warn))
    for warn in w.get("warnings") or []:
        flags.append("Traffic log: " + str(warn.get("message", warn)))
    if not m["memory"].get("recommended", {}).get("all"):
        flags.append("No candidate meets the SLO on the roofline (step 6).")
    return flags


def assumptions(m: dict[str, dict[str, Any]], sections: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every number the plan rests on, with the input, param or formula it comes from."""
    w, op, fl, t = m["workload"], m["operating_point"], m["fleet"], m["tco"]
    plan = adopted_plan(m)
    pooled_row = next(r for r in t["per_candidate"] if r["candidate"] == t["pooled"]["candidate"])
    rows = [
        ("traffic log", w["provenance"]["source"], "params workload.source"),
        ("requests in the log", w["requests"], "metrics/workload.json requests"),
        ("sizing rate (req/s)", w["rps"]["sizing_rate"], f"rps.{w['sizing_rate_key']} (params workload.sizing_rate)"),
        ("mean rate (req/s)", w["rps"]["mean"], "requests / (last - first arrival)"),
        ("p95 prompt tokens", w["input_tokens"]["p95"], "metrics/workload.json input_tokens.p95"),
        ("p95 output tokens", w["output_tokens"]["p95"], "metrics/workload.json output_tokens.p95"),
        ("TTFT p99 SLO (ms)", sections["slo"]["ttft_p99_ms"], "params slo.ttft_p99_ms"),
        ("ITL p99 SLO (ms)", sections["slo"]["itl_p99_ms"], "params slo.itl_p99_ms"),
        ("routing tiers", str(m["tiers"].get("tiers_from")), "params workload.tiers, routing.mode"),
        ("plan", plan["plan"], (t.get("routing") or {}).get("why") or fl["routing"]["why"]),
    ]
    for name in plan["fleets"]:  # the fleets of the plan tco.json priced (adopted_plan), not only the sized ones
        f = fl["per_tier"].get(name) or (fl.get("pooled") if name == "all" else None)
        if not f:
            continue
        prefix = "" if name == "all" else f"{name}: "
        if name == "all":
            sweep, why, usable, file = (
                op["curve_source"]["sweep"],
                op["curve_source"]["why"],
                op["usable_rps"],
                (op.get("manifest") or {}).get("file", ""),
            )
            c_max, kind = op["c_max"], op["load_kind"]
        else:
            x = op["per_tier"][name]
            sweep, why, usable, file = x["sweep"], x["why"], x["usable_rps"], x["manifest"].get("file", "")
            c_max, kind = x["c_max"], x["load_kind"]
            d = m["tiers"]["tiers"][name]
            rows.append((f"{prefix}share of requests (%)", 100.0 * d["share"], d["source"]))
            rows.append((f"{prefix}sizing rate (req/s)", d["rps"]["sizing_rate"], f"metrics/tiers.json tiers.{name}"))
        priced = t["per_tier"].get(name) or pooled_row
        rows += [
            (f"{prefix}benchmark sweep", sweep, f"{why} (params curve.source)"),
            (
                f"{prefix}deployment",
                f"{f['model']} on TP{priced.get('tp', f['tp'])} {priced.get('gpu', f['gpu'])}, "
                f"{priced.get('weights', f['weight_dtype'])} weights, {priced.get('kv', f['kv_dtype'])} KV",
                file,
            ),
            (
                f"{prefix}C_max ({'concurrent requests' if kind == 'concurrency' else 'req/s offered'})",
                c_max,
                "method.md step 7: interpolated SLO crossing",
            ),
            (f"{prefix}usable RPS per instance (req/s)", usable, "metrics/operating_point.json"),
            (
                f"{prefix}burst absorption (%)",
                100.0 * f["burst_absorption"],
                f"rps.{sections['fleet']['burst_rate']} / sizing rate - 1",
            ),
            (
                f"{prefix}spares (instances)",
                f["spares"],
                "N+1 (N+2 if params fleet.critical or routing.critical_tiers)",
            ),
            (f"{prefix}price per GPU-hour ($)", priced.get("usd_per_gpu_hour"), priced.get("price_source") or ""),
        ]
    rows += [
        ("safety factor (x)", sections["fleet"]["safety_factor"], "params fleet.safety_factor"),
        ("expected growth (%)", 100.0 * sections["fleet"]["expected_growth"], "params fleet.expected_growth"),
        ("hours per month", 730, "method.md step 12"),
        ("hours per year", 8760, "method.md step 12"),
        ("planned utilization (%)", 100.0 * sections["tco"]["planned_utilization"], "params tco.planned_utilization"),
    ]
    basis = t.get("price_basis")
    if basis:
        rows.append(
            (
                "price provider",
                basis["provider"] or "none: not like-for-like",
                f"{basis['rule']} (params tco.provider)",
            )
        )
    return pd.DataFrame(rows, columns=["assumption", "value", "source"])


def quarter_over_quarter(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Traffic, plan and cost then and now, with the change."""

    def get(d: dict[str, Any] | None, *keys: str) -> Any:
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    from pipeline import tables

    items = [  # (label, keys, how the value is shown: tables.cell kind)
        ("sizing rate (req/s)", ("workload", "rps", "sizing_rate"), "number"),
        ("mean rate (req/s)", ("workload", "rps", "mean"), "number"),
        ("p95 prompt tokens", ("workload", "input_tokens", "p95"), "number"),
        ("p95 output tokens", ("workload", "output_tokens", "p95"), "number"),
        ("GPUs", ("tco", "totals", "gpus"), "number"),  # the priced plan's (fleet.json total_gpus in older files)
        ("monthly cost (USD)", ("tco", "monthly_usd"), "money"),
        ("cost per 1M output tokens (USD)", ("tco", "usd_per_million_output_tokens"), "money2"),
        ("utilization", ("tco", "utilization"), "fraction"),
    ]
    rows = []
    for label, keys, kind in items:
        a, b = get(old, *keys), get(new, *keys)
        if label == "GPUs":
            a = get(old, "fleet", "total_gpus") if a is None else a
            b = get(new, "fleet", "total_gpus") if b is None else b
        change = (b / a - 1) if isinstance(a, int | float) and isinstance(b, int | float) and a else None
        rows.append(
            {
                "figure": label,
                "previous": tables.cell(a, kind),
                "now": tables.cell(b, kind),
                "change": None if change is None else f"{change:+.1%}",  # signed: the layer shows no sign
            }
        )
    return pd.DataFrame(rows)


def headline_html(screen: list[tuple[str, str, str]], flags: list[str]) -> str:
    """The first screen as escaped HTML tiles plus the risk flags."""
    tiles = "".join(
        f'<div style="display:inline-block;min-width:200px;margin:6px;padding:10px;border:1px solid #ccc;border-radius:6px">'
        f'<div style="font-size:12px;color:#555">{esc(label)}</div><div style="font-size:22px;font-weight:600">{esc(value)}</div>'
        f'<div style="font-size:11px;color:#777">{esc(src)}</div></div>'
        for label, value, src in screen
    )
    items = "".join(f"<li>{esc(f)}</li>" for f in flags) or "<li>none</li>"
    return f'<div>{tiles}</div><h3>Risk flags</h3><ul style="color:#b00">{items}</ul>'


def adopted_fleets(m: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """metrics/fleet.json's entry (schedule, usable RPS, ...) of each fleet of the plan tco.json prices
    (`adopted_plan`): `per_tier[name]`, or `pooled` for a pooled plan fleet.json did not adopt. A fleet fleet.json
    has no entry for is left out (the finance report flags a priced plan that differs from the sized one)."""
    f = m["fleet"]
    out = {}
    for name in adopted_plan(m)["fleets"]:
        x = (f.get("per_tier") or {}).get(name) or (f.get("pooled") if name == "all" else None)
        if x:
            out[name] = x
    return out or dict(f.get("per_tier") or {})


def hourly_utilization(m: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per hour of day: the adopted plan's mean rate over the capacity of its static fleets and of the scheduled ones."""
    tiers = adopted_fleets(m)
    demands = {"all": m["tiers"]["pooled"], **m["tiers"]["tiers"]}
    if any(t.get("schedule") is None for t in tiers.values()):  # a log under an hour: no schedule to chart
        return pd.DataFrame(columns=["hour", "fleet", "utilization"])
    hours = [h["hour"] for h in next(iter(tiers.values()))["schedule"]["hours"]]  # the observed hours only
    rows = []
    for i, hour in enumerate(hours):
        mean = sum(demands[n]["hourly_mean_rps"].get(hour, 0.0) for n in tiers)
        static = sum(t["schedule"]["static_instances"] * t["usable_rps"] for t in tiers.values())
        sched = sum(t["schedule"]["hours"][i]["instances"] * t["usable_rps"] for t in tiers.values())
        rows.append({"hour": hour, "fleet": "static", "utilization": mean / static})
        rows.append({"hour": hour, "fleet": "scheduled", "utilization": mean / sched})
    return pd.DataFrame(rows)


def tiers_table(m: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The ADOPTED plan (the one metrics/tco.json prices, `adopted_plan`), one row per fleet: traffic, deployment,
    GPUs, cost and utilization, as numbers (pipeline/tables.py formats them; names escaped there)."""
    f, t = m["fleet"], m["tco"]
    demands = {"all": m["tiers"]["pooled"], **m["tiers"]["tiers"]}
    rows = []
    for name, a in adopted_plan(m)["fleets"].items():
        c = t["per_tier"].get(name) or {}
        x = f["per_tier"].get(name) or (f.get("pooled") if name == "all" else None) or {}
        d = demands.get(name) or {}
        model = c.get("model") or x.get("model")
        weights = c.get("weights") or x.get("weight_dtype")
        rows.append(
            {
                "fleet": name,
                "share of requests": d.get("share"),
                "sizing rate (req/s)": x.get("peak_rps", (d.get("rps") or {}).get("sizing_rate")),
                "p95 prompt tokens": (d.get("input_tokens") or {}).get("p95"),
                "p95 output tokens": (d.get("output_tokens") or {}).get("p95"),
                "deployment": " ".join(str(v) for v in (model, f"TP{a.get('tp')}", weights) if v is not None),
                "GPU": a.get("gpu"),
                "GPUs": a.get("gpus"),
                "USD / month": c.get("monthly_usd"),
                "utilization": c.get("utilization"),
                "USD / 1M output tokens": c.get("usd_per_million_output_tokens"),
            }
        )
    return pd.DataFrame(rows)


def plan_costs(m: dict[str, dict[str, Any]]) -> pd.DataFrame | None:
    """Pooled vs routed monthly cost, one bar segment per fleet, when both plans were costed."""
    t, f = m["tco"], m["fleet"]
    r = t["routing"]
    if r.get("routed_monthly_usd") is None:
        return None
    pooled = f["pooled"]
    rows = [
        {
            "plan": "pooled",
            "fleet": f"all: {pooled['gpu']}",
            "gpus": pooled["gpus"],
            "monthly_usd": r["pooled_monthly_usd"],
        }
    ]
    if t.get("plan", f["plan"]) != "pooled":  # the plan tco.json priced (adopted_plan), not the sized one
        rows += [
            {
                "plan": t.get("plan", f["plan"]),
                "fleet": f"{n}: {x['gpu']}",
                "gpus": x["gpus"],
                "monthly_usd": x["monthly_usd"],
            }
            for n, x in t["per_tier"].items()
        ]
    else:
        rows.append(
            {
                "plan": "routed",
                "fleet": "all tiers",
                "gpus": f["routing"]["routed_gpus"],
                "monthly_usd": r["routed_monthly_usd"],
            }
        )
    return pd.DataFrame(rows)


# --- the first screen (issue 17): one budget figure, a confidence badge, the top risks, "as of" -----------------

HOURS_PER_MONTH, HOURS_PER_YEAR = 730, 8760
SCHEDULE_MIN_DAYS = 7.0  # default of params report.budget_schedule_min_days
PRICE_CAVEAT = "List prices are illustrative"


def budget(m: dict[str, dict[str, Any]], min_days: float = SCHEDULE_MIN_DAYS) -> dict[str, Any]:
    """The ONE figure to budget for the adopted plan: the static fleet or the hourly schedule, and why.

    The scheduled cost is budgeted only when (1) a schedule exists (a log of an hour or more), (2) the prices
    are on-demand (a reserved or committed GPU is paid every hour, used or not) and (3) the log covers at
    least `min_days` days (a shorter one has not seen every weekday's peak, so the hourly fleet may be too
    small on another day). Otherwise the static, peak-sized fleet is the budget and the schedule is shown
    beside it as what autoscaling could save. Returns {kind, monthly_usd, annual_usd, why, other_kind,
    other_monthly_usd, other_annual_usd} (other_* None when there is no schedule).
    """
    t, w = m.get("tco") or {}, m.get("workload") or {}
    totals = t.get("totals") or {}
    static = float(t.get("monthly_usd") or totals.get("monthly_usd") or 0.0)
    static_year = float(t.get("annual_usd") or static * HOURS_PER_YEAR / HOURS_PER_MONTH)
    sched = totals.get("monthly_usd_with_schedule")
    pricing = (t.get("price_basis") or {}).get("pricing") or "on-demand"
    days = float(w.get("span_s") or 0.0) / 86400.0
    out: dict[str, Any] = {"static_monthly_usd": static, "scheduled_monthly_usd": sched, "log_days": days}
    if sched is None:
        note = totals.get("schedule_note") or "no hourly schedule"
        kind, why = "static", f"Static fleet: there is no scaling schedule ({note})."
    elif pricing != "on-demand":
        kind, why = (
            "static",
            f"Static fleet: {pricing} prices are paid for every hour, used or not, so scaling down saves nothing.",
        )
    elif days < min_days:
        kind = "static"
        why = (
            f"Static fleet: the hourly schedule rests on {days:.1f} day{'s' if days >= 1.05 else ''} of traffic "
            f"(under {min_days:g}), too short to trust every day's peak; budget the fleet sized for the peak."
        )
    else:
        kind = "scheduled"
        why = (
            f"Scheduled: on-demand GPUs follow the hourly schedule, drawn from {days:.0f} days of traffic "
            f"(at least {min_days:g}); the static fleet is the ceiling if autoscaling is not deployed."
        )
    if kind == "static":
        out.update(kind="static", monthly_usd=static, annual_usd=static_year, why=why)
        if sched is not None:
            out.update(other_kind="scheduled", other_monthly_usd=float(sched), other_annual_usd=float(sched) * 12)
        else:
            out.update(other_kind=None, other_monthly_usd=None, other_annual_usd=None)
    else:
        out.update(kind="scheduled", monthly_usd=float(sched), annual_usd=float(sched) * 12, why=why)
        out.update(other_kind="static", other_monthly_usd=static, other_annual_usd=static_year)
    return out


def traffic_window(w: dict[str, Any]) -> str:
    """The log's first and last arrival as dates (UTC), or its length for a trace-relative clock."""
    first, span = w.get("first_arrival_s"), w.get("span_s")
    if not isinstance(first, int | float) or not isinstance(span, int | float):
        return "traffic window unknown (metrics/workload.json has no first_arrival_s/span_s)"
    if w.get("clock") == "epoch_utc":
        from datetime import UTC, datetime

        a = datetime.fromtimestamp(float(first), UTC)
        b = datetime.fromtimestamp(float(first) + float(span), UTC)
        fmt = "%Y-%m-%d %H:%M"
        return f"traffic {a.strftime(fmt)} to {b.strftime(fmt)} UTC ({span / 86400:.1f} days, {w.get('requests', 0):,} requests)"
    return f"traffic: {span / 3600:.1f} h of a trace-relative clock (no calendar dates in the log; {w.get('requests', 0):,} requests)"


def inputs_id(root: Any, sections: dict[str, Any] | None = None) -> str:
    """A content hash of what the report was computed from: every metrics document it reads, the price list
    and the report's params sections (sha256, first 12 hex digits).

    Used as the "commit of the inputs": a git commit would change when the reports themselves are
    committed (and is absent from a copy without git), breaking byte-identical reruns; this hash changes
    exactly when an input that changes a figure changes, and `report.inputs_id(root)` recomputes it.
    """
    import hashlib
    import json
    from pathlib import Path

    h = hashlib.sha256()
    base = Path(root)
    for name in sorted(METRIC_FILES):
        p = base / "metrics" / f"{name}.json"
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.exists() else b"") + b"\0")
    prices = base / "data" / "catalog" / "prices.csv"
    h.update(prices.read_bytes() if prices.exists() else b"")
    h.update(json.dumps(sections or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def price_dates(m: dict[str, dict[str, Any]], prices: list[Any]) -> str:
    """The dates (prices.csv `as_of`) of the prices the adopted plan uses, e.g. 'AWS on-demand: H100-SXM after 2025-06'."""
    t = m.get("tco") or {}
    provider = t.get("price_provider") or (t.get("price_basis") or {}).get("provider")
    pricing = (t.get("price_basis") or {}).get("pricing") or "on-demand"
    gpus = sorted({x.get("gpu") for x in (t.get("per_tier") or {}).values() if isinstance(x, dict) and x.get("gpu")})
    if not gpus:
        gpus = sorted((m.get("fleet") or {}).get("gpus_by_type") or {})
    parts = []
    for gpu in gpus:
        dates = sorted(
            {
                p.as_of
                for p in prices
                if p.gpu == gpu and p.pricing == pricing and (provider is None or p.provider == provider)
            }
        )
        parts.append(f"{gpu} {', '.join(dates) if dates else 'undated (params tco.prices)'}")
    return f"{provider or 'mixed providers'} {pricing} prices as of: " + "; ".join(parts)


def _delta_html(now: float | None, then: float | None, money_fmt: bool = True, unit: str = "") -> str:
    if not isinstance(now, int | float) or not isinstance(then, int | float):
        return ""
    if then == 0:
        return ""
    change = now / then - 1
    cls = "up" if change > 0.0005 else "down" if change < -0.0005 else ""
    shown = f"${then:,.0f}" if money_fmt else f"{then:,.0f}{unit}"
    return f'<div class="fin-delta {cls}">{change:+.1%} since last quarter (was {esc(shown)})</div>'


def first_screen_html(
    d: dict[str, Any],
    samples: list[str] | None = None,
    prices: list[Any] | None = None,
    inputs: str | None = None,
    trap_below: float = 0.4,
    min_days: float = SCHEDULE_MIN_DAYS,
) -> str:
    """The first screen (fits 1366 x 768 with no scrolling): the budget, the confidence badge with the top
    three risks by cost impact, GPUs by kind, each with the change since last quarter when `report.previous`
    is set, the "as of" line and the price caveat. `d`: pipeline.stages.report.load(); element ids `budget`,
    `badge`, `as-of`, `risk-flags`, `gpus`, `price-caveat` are stable (the browser tests find them)."""
    from pipeline import risk

    m, prev = d["metrics"], d.get("previous")
    t, w = m["tco"], m["workload"]
    b = budget(m, min_days)
    a = adopted_plan(m)  # the plan tco.json prices (the budget's), not necessarily the fleet fleet.json sized
    plan = a["label"]
    prev_b = budget({"tco": prev.get("tco") or {}, "workload": prev.get("workload") or {}}, min_days) if prev else None
    other = ""
    if b.get("other_monthly_usd") is not None:
        other = (
            f'<div class="fin-small">{esc(b["other_kind"]).capitalize()} instead: <b>${b["other_monthly_usd"]:,.0f}</b> a month '
            f"(${b['other_annual_usd']:,.0f} a year)"
            + (" if autoscaling follows the hourly schedule" if b["other_kind"] == "scheduled" else ", the ceiling")
            + ".</div>"
        )
    budget_card = (
        f'<div class="fin-card" id="budget"><h4>Budget &middot; the adopted plan ({esc(plan)})</h4>'
        f'<div class="fin-big">${b["monthly_usd"]:,.0f} <span class="fin-mid">a month</span></div>'
        f'<div class="fin-mid">${b["annual_usd"]:,.0f} a year &middot; {esc(b["kind"])}</div>'
        f'<div class="fin-small">{esc(b["why"])}</div>{other}'
        + (_delta_html(b["monthly_usd"], prev_b["monthly_usd"]) if prev_b and prev_b.get("monthly_usd") else "")
        + "</div>"
    )
    basis, basis_where = risk.basis_of(m)
    found = risk.flags(m, samples, trap_below)
    level = risk.confidence(basis, found)
    items = (
        "".join(
            f"<li><b>{esc(fl.title)}</b> "
            + (
                f"<span class='cost'>~${fl.impact_usd_per_month:,.0f}/month at stake</span>"
                if fl.impact_usd_per_month is not None
                else "<span class='cost'>no cost figure</span>"
            )
            + "</li>"
            for fl in found[:3]
        )
        or "<li>No risk flag raised.</li>"
    )
    prev_basis = ((prev or {}).get("tco") or {}).get("chosen_basis") if prev else None
    badge_card = (
        f'<div class="fin-card" id="confidence"><h4>Confidence</h4>'
        f'<span class="fin-badge conf-{esc(level)}" id="badge">{esc(basis)} &middot; {esc(level)} confidence</span>'
        f'<div class="fin-small">Basis read from {esc(basis_where)}. Top risks by cost impact:</div>'
        f'<ol class="fin-flags" id="risk-flags">{items}</ol>'
        + (f'<div class="fin-delta">basis last quarter: {esc(prev_basis)}</div>' if prev_basis else "")
        + "</div>"
    )
    by = a["gpus_by_type"]
    kinds = " + ".join(f"{n} {gpu}" for gpu, n in by.items())
    fleets = "; ".join(
        f"{name}: {x['instances']} x TP{x['tp']}{'' if (x.get('pp') or 1) == 1 else ' PP' + str(x['pp'])} {x['gpu']}"
        for name, x in a["fleets"].items()
    )
    prev_gpus = (
        adopted_plan({"tco": prev.get("tco") or {}, "fleet": prev.get("fleet") or {}})["total_gpus"] if prev else None
    )
    gpu_card = (
        f'<div class="fin-card" id="gpus"><h4>GPUs by kind</h4>'
        f'<div class="fin-mid">{esc(kinds)}</div><div class="fin-small">{a["total_gpus"]} GPUs in all; {esc(fleets)}.</div>'
        f'<div class="fin-small">${t["usd_per_million_output_tokens"]:,.2f} per 1M output tokens at '
        f"{t['utilization']:.0%} utilization (${(t.get('totals') or {}).get('usd_per_million_output_tokens_planned', 0):,.2f} at the planned "
        f"{(t.get('totals') or {}).get('planned_utilization', 0):.0%}).</div>"
        + (_delta_html(a["total_gpus"], prev_gpus, money_fmt=False, unit=" GPUs") if prev_gpus else "")
        + "</div>"
    )
    since = (
        f" &middot; compared with {esc(d.get('previous_where'))}"
        if prev
        else " &middot; no previous review named (params report.previous)"
    )
    asof = (
        f'<div class="fin-asof" id="as-of"><b>As of:</b> {esc(traffic_window(w))} &middot; inputs sha256 '
        f"<code>{esc(inputs or 'n/a')}</code> &middot; {esc(price_dates(m, prices or []))}{since}</div>"
    )
    caveat = (
        f'<div class="fin-caveat" id="price-caveat"><b>{PRICE_CAVEAT}</b>: {esc(t.get("prices_note") or "re-check before a budget decision")}; '
        "set negotiated prices in params tco.prices.</div>"
    )
    return (
        f'<div id="first-screen">{asof}<div class="fin-screen">{budget_card}{badge_card}{gpu_card}</div>{caveat}</div>'
    )


def flags_table(
    m: dict[str, dict[str, Any]], samples: list[str] | None = None, trap_below: float = 0.4
) -> pd.DataFrame:
    """Every ranked risk flag (pipeline.risk) with its detail, cost impact and how it was estimated."""
    from pipeline import risk

    rows = [
        {
            "rank": i,
            "risk": fl.title,
            "what it means": fl.detail,
            "at stake ($/month)": fl.impact_usd_per_month,
            "how estimated (read from)": f"{fl.impact_why} ({fl.source})",
        }
        for i, fl in enumerate(risk.flags(m, samples, trap_below), start=1)
    ]
    return pd.DataFrame(
        rows, columns=["rank", "risk", "what it means", "at stake ($/month)", "how estimated (read from)"]
    )


def candidate_costs(m: dict[str, dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """Cost per candidate of the ADOPTED plan: per tier of a routed plan (the pooled candidates when pooled):
    a table of tier, candidate, monthly_usd, basis and the adopted candidate id of each tier."""
    from pipeline import charts

    return charts.adopted_plan_candidates(m["tco"])
