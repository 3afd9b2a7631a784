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


def first_screen(m: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The figures finance reads first: (label, value, where it comes from)."""
    f, t, w = m["fleet"], m["tco"], m["workload"]
    tot = t["totals"]
    tiers = f["per_tier"]
    r = t["routing"]
    if f["plan"] == "pooled":
        plan = ("plan", "one pooled fleet", r["verdict"] if r.get("routed_monthly_usd") is not None else r["why"])
    else:
        plan = (
            "plan",
            f"{f['plan']}: {len(tiers)} fleets",
            f"{r['why']}; {r['verdict']}",
        )
    headroom = ", ".join(
        f"{name} {x['headroom']:.0%} + {x['spares']} spare"
        if len(tiers) > 1
        else f"{x['headroom']:.0%} + {x['spares']} spare"
        for name, x in tiers.items()
    )
    return [
        ("GPUs", gpus_text(f), "metrics/fleet.json total_gpus, gpus_by_type (step 11)"),
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
    pooled_row = next(r for r in t["per_candidate"] if r["candidate"] == t["pooled"]["candidate"])
    rows = [
        ("traffic log", w["provenance"]["source"], "params workload.source"),
        ("requests in the log", f"{w['requests']:,}", "metrics/workload.json requests"),
        (
            "sizing rate",
            f"{w['rps']['sizing_rate']:g} req/s",
            f"rps.{w['sizing_rate_key']} (params workload.sizing_rate)",
        ),
        ("mean rate", f"{w['rps']['mean']:g} req/s", "requests / (last - first arrival)"),
        (
            "p95 prompt / output tokens",
            f"{w['input_tokens']['p95']:g} / {w['output_tokens']['p95']:g}",
            "metrics/workload.json",
        ),
        ("TTFT p99 SLO", f"{sections['slo']['ttft_p99_ms']:g} ms", "params slo.ttft_p99_ms"),
        ("ITL p99 SLO", f"{sections['slo']['itl_p99_ms']} ms", "params slo.itl_p99_ms"),
        ("routing tiers", str(m["tiers"].get("tiers_from")), "params workload.tiers, routing.mode"),
        ("plan", fl["plan"], fl["routing"]["why"]),
    ]
    for name, f in fl["per_tier"].items():
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
            rows.append((f"{prefix}share of requests", f"{d['share']:.0%}", d["source"]))
            rows.append(
                (f"{prefix}sizing rate", f"{d['rps']['sizing_rate']:g} req/s", f"metrics/tiers.json tiers.{name}")
            )
        priced = t["per_tier"].get(name) or pooled_row
        rows += [
            (f"{prefix}benchmark sweep", sweep, f"{why} (params curve.source)"),
            (
                f"{prefix}deployment",
                f"{f['model']} on TP{f['tp']} {f['gpu']}, {f['weight_dtype']} weights, {f['kv_dtype']} KV",
                file,
            ),
            (f"{prefix}C_max", f"{c_max:g} ({kind})", "method.md step 7: interpolated SLO crossing"),
            (f"{prefix}usable RPS per instance", f"{usable:g} req/s", "metrics/operating_point.json"),
            (
                f"{prefix}burst absorption",
                f"{f['burst_absorption']:.1%}",
                f"rps.{sections['fleet']['burst_rate']} / sizing rate - 1",
            ),
            (f"{prefix}spares", f"{f['spares']}", "N+1 (N+2 if params fleet.critical or routing.critical_tiers)"),
            (f"{prefix}price per GPU-hour", f"USD {priced['usd_per_gpu_hour']:g}", priced.get("price_source") or ""),
        ]
    rows += [
        ("safety factor", f"{sections['fleet']['safety_factor']:g}", "params fleet.safety_factor"),
        ("expected growth", f"{sections['fleet']['expected_growth']:.0%}", "params fleet.expected_growth"),
        ("hours per month / year", "730 / 8760", "method.md step 12"),
        ("planned utilization", f"{sections['tco']['planned_utilization']:.0%}", "params tco.planned_utilization"),
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

    items = [
        ("sizing rate (req/s)", ("workload", "rps", "sizing_rate")),
        ("mean rate (req/s)", ("workload", "rps", "mean")),
        ("p95 prompt tokens", ("workload", "input_tokens", "p95")),
        ("p95 output tokens", ("workload", "output_tokens", "p95")),
        ("GPUs", ("fleet", "total_gpus")),
        ("monthly cost (USD)", ("tco", "monthly_usd")),
        ("cost per 1M output tokens (USD)", ("tco", "usd_per_million_output_tokens")),
        ("utilization", ("tco", "utilization")),
    ]
    rows = []
    for label, keys in items:
        a, b = get(old, *keys), get(new, *keys)
        change = (b / a - 1) if isinstance(a, int | float) and isinstance(b, int | float) and a else None
        rows.append({"figure": label, "previous": a, "now": b, "change": None if change is None else f"{change:+.1%}"})
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


def hourly_utilization(m: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per hour of day: the plan's mean rate over the capacity of its static fleets and of the scheduled ones."""
    tiers = m["fleet"]["per_tier"]
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
    """The plan, one row per fleet (names escaped by pandas): traffic, deployment, GPUs, cost and utilization."""
    f, t = m["fleet"], m["tco"]
    demands = {"all": m["tiers"]["pooled"], **m["tiers"]["tiers"]}
    rows = []
    for name, x in f["per_tier"].items():
        c = t["per_tier"].get(name) or {}
        d = demands[name]
        rows.append(
            {
                "fleet": name,
                "share of requests": f"{d['share']:.0%}",
                "sizing rate (req/s)": x["peak_rps"],
                "p95 prompt / output": f"{d['input_tokens']['p95']:g} / {d['output_tokens']['p95']:g}",
                "deployment": f"{x['model']} TP{x['tp']} {x['weight_dtype']}",
                "GPUs": f"{x['gpus']} x {x['gpu']}",
                "USD / month": round(c["monthly_usd"]) if "monthly_usd" in c else None,
                "utilization": f"{c['utilization']:.0%}" if "utilization" in c else None,
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
    if f["plan"] != "pooled":
        rows += [
            {"plan": f["plan"], "fleet": f"{n}: {x['gpu']}", "gpus": x["gpus"], "monthly_usd": x["monthly_usd"]}
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
