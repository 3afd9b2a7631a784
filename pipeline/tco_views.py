"""Tables and sentences of report 12 (TCO) and the scenarios report: pandas and wording live here, not in cells.

Every function reads metrics/tco.json's document (`res`, as the report stage returns it) or the
scenario rows (pipeline/scenarios.table) and returns a DataFrame or a markdown string.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline import tables
from pipeline.text import txt

BASIS_TEXT = {
    "measured": "a sweep of this deployment at the workload's lengths",
    "calibrated": "its own sweep at other lengths, predicted with its own engine-model coefficients",
    "transferred": "no sweep of it: pooled engine-model coefficients",
    "roofline": "no calibration: the roofline prior",
}


def plan_line(res: dict[str, Any]) -> str:
    """The adopted plan in one paragraph: GPUs, month, year, $/1M tokens at measured and planned utilization."""
    tot = res["totals"]
    ids = res.get("chosen_candidates") or {}
    what = (
        "one fleet per routing tier" if res["plan"] != "pooled" else txt(ids.get("all") or res["pooled"]["candidate"])
    )
    sched = (
        f"USD {tot['monthly_usd_with_schedule']:,.0f} a month with the hourly scaling schedules of step 11."
        if tot.get("monthly_usd_with_schedule") is not None
        else f"no scaling schedule ({txt(tot.get('schedule_note') or 'a fleet has none')})."
    )
    return (
        f"**Plan: {what}**: {int(tot['gpus'])} GPUs, **USD {res['monthly_usd']:,.0f} a month** "
        f"(USD {res['annual_usd']:,.0f} a year), USD {res['usd_per_million_output_tokens']:,.2f} per 1M output tokens "
        f"at the measured utilization of {res['utilization']:.0%} (USD {tot['usd_per_million_output_tokens_planned']:,.2f} "
        f"at the planned {tot['planned_utilization']:.0%}); " + sched
    )


def basis_line(res: dict[str, Any]) -> str:
    """Which curves the adopted plan stands on (chosen_basis) and the rule that allowed it."""
    b = res.get("chosen_basis") or "measured"
    allow = res.get("allow_transferred", False)
    per = ", ".join(f"{txt(t)}: `{txt(c)}`" for t, c in sorted((res.get("chosen_candidates") or {}).items()))
    return (
        f"**Basis of the plan: {txt(b)}** ({txt(BASIS_TEXT.get(b, b))}). Deployments: {per or 'none'}. "
        "Only a measured or calibrated candidate may be chosen"
        + (
            ", or a transferred one (`tco.allow_transferred: true`)."
            if allow
            else " (`tco.allow_transferred` is false)."
        )
    )


def trap_line(res: dict[str, Any], tco_p: dict[str, Any]) -> str | None:
    """The utilization-trap warning, or None."""
    if not res["utilization_trap"]:
        return None
    tot = res["totals"]
    return (
        f"**Utilization trap:** the fleet is sized for the peak but averages {res['utilization']:.0%} busy (under "
        f"{tco_p['utilization_trap_below']:.0%}): each token costs {tot['planned_utilization'] / res['utilization']:.1f}x "
        "what it would at the planned utilization. The scaling schedule, batch work off-peak, or a smaller reserved "
        "base plus on-demand burst are the levers."
    )


def _band(b: dict[str, Any]) -> str:
    iv = b.get("interval") or {}
    if iv.get("monthly_usd_lo") is None or iv.get("monthly_usd_hi") is None:
        return "no band"
    return f"80% band USD {iv['monthly_usd_lo']:,.0f}-{iv['monthly_usd_hi']:,.0f}"


def reference_label(res: dict[str, Any]) -> str:
    """What the pooled `benchmark_next` is compared against: the adopted plan and its monthly cost."""
    ref = res.get("benchmark_next_reference") or {"plan": res["plan"], "monthly_usd": res["monthly_usd"]}
    return f"the adopted {txt(ref['plan'])} plan (USD {ref['monthly_usd']:,.0f} a month)"


def benchmark_next_line(items: list[dict[str, Any]], against: str) -> str:
    """What to benchmark next, each with its basis, band, P(beats the chosen plan) and expected saving."""
    if not items:
        return f"Benchmark next: no unmeasured candidate is likely to beat {against}."
    parts = []
    for b in items:
        p = b.get("p_beats_chosen")
        odds = (
            f"beats it with probability {p:.0%}, saving USD {b['expected_saving_usd_per_month']:,.0f} a month if it does"
            if p is not None
            else f"no band, so no probability: point estimate {b['estimated_saving_share']:.0%} cheaper"
        )
        parts.append(f"**{txt(b['candidate'])}** ({txt(b.get('basis'))}, {_band(b)}; {odds})")
    return (
        f"Benchmark next, against {against}, ranked by expected saving x probability of beating it: "
        + "; ".join(parts)
        + "."
    )


CANDIDATE_COLUMNS = [
    "candidate",
    "basis",
    "eligible",
    "usable_rps",
    "usable_rps_lo",
    "usable_rps_hi",
    "instances",
    "gpus",
    "usd_per_gpu_hour",
    "like_for_like",
    "monthly_usd",
    "monthly_usd_lo",
    "monthly_usd_hi",
    "monthly_usd_with_schedule",
    "utilization",
    "usd_per_million_output_tokens",
    "input_ratio",
    "output_ratio",
    "eligible_why",
]


def candidate_table(rows: list[dict[str, Any]], top: int | None = None) -> pd.DataFrame:
    """Candidates with basis, eligibility, usable RPS and cost with their 80% bands and length match, cheapest first."""
    flat = []
    for r in rows:
        iv = r.get("interval") or {}
        lm = r.get("length_match") or {}
        flat.append(
            {
                **r,
                "usable_rps_lo": iv.get("usable_rps_lo"),
                "usable_rps_hi": iv.get("usable_rps_hi"),
                "monthly_usd_lo": iv.get("monthly_usd_lo"),
                "monthly_usd_hi": iv.get("monthly_usd_hi"),
                "input_ratio": lm.get("input_ratio"),
                "output_ratio": lm.get("output_ratio"),
            }
        )
    df = pd.DataFrame(flat)
    if df.empty:
        return df
    df = df[[c for c in CANDIDATE_COLUMNS if c in df]]
    df = df.sort_values(["monthly_usd", "candidate"], na_position="last").reset_index(drop=True)
    return df.head(top) if top else df


def candidates_note(res: dict[str, Any]) -> str:
    """How to read the candidate table, and which GPUs have no price."""
    unpriced = sorted({r["gpu"] for r in res["per_candidate"] if r.get("usd_per_gpu_hour") is None})
    return (
        "All traffic on one deployment, per GPU x precision x TP, each on its own curve at the workload's lengths "
        "(step 7b). Basis: `measured` (a sweep of it at matching lengths), `calibrated` (its own sweep at other "
        "lengths, engine model), `transferred` (pooled coefficients), `roofline` (no calibration). `usable_rps_lo/hi` "
        "and `monthly_usd_lo/hi`: the 80% band of its basis's residuals, through the same fleet sizing. `eligible`: "
        "may be the chosen plan. `input_ratio`/`output_ratio`: the measured curve's p95 lengths over the workload's."
        + (f" No price for {txt(', '.join(unpriced))}: set `tco.prices`." if unpriced else "")
    )


def tier_fleets(res: dict[str, Any]) -> pd.DataFrame:
    """The adopted plan's fleets, one row per tier."""
    tiers = pd.DataFrame(res["per_tier"].values())
    cols = [
        "tier",
        "role",
        "model",
        "candidate",
        "gpu",
        "tp",
        "instances",
        "gpus",
        "usd_per_gpu_hour",
        "monthly_usd",
        "monthly_usd_with_schedule",
        "utilization",
        "usd_per_million_output_tokens",
        "usd_per_million_output_tokens_planned",
    ]
    return tiers[[c for c in cols if c in tiers]]


def routing_bars(res: dict[str, Any]) -> pd.DataFrame | None:
    """The pooled and routed plans' fleets as chart data, or None when the plan is pooled or routing not costed."""
    r = res["routing"]
    if r["routed_monthly_usd"] is None or res["plan"] == "pooled":
        return None
    pooled = next(x for x in res["per_candidate"] if x["candidate"] == res["pooled"]["candidate"])
    bars = [
        {
            "plan": "pooled",
            "fleet": f"all: {pooled['gpu']}",
            "gpus": int(pooled["gpus"]),
            "monthly_usd": r["pooled_monthly_usd"],
        }
    ]
    bars += [
        {"plan": "routed", "fleet": f"{t['tier']}: {t['gpu']}", "gpus": t["gpus"], "monthly_usd": t["monthly_usd"]}
        for t in res["per_tier"].values()
    ]
    return pd.DataFrame(bars)


def routing_line(res: dict[str, Any]) -> str:
    """The routing verdict with the blended and pooled $/1M output tokens."""
    r = res["routing"]
    if r["routed_monthly_usd"] is None:
        return txt(r["verdict"]) + "."
    verdict = r["verdict"][0].upper() + r["verdict"][1:]
    return (
        f"{txt(verdict)}. Blended over the tiers, a million output tokens costs USD "
        f"{r['blended_usd_per_million_output_tokens']:,.2f} against USD {r['pooled_usd_per_million_output_tokens']:,.2f} "
        "on the pooled fleet (total $/h over the tokens users receive: a cascade's reruns cost GPUs but deliver no "
        f"extra tokens). Plan adopted: **{txt(res['plan'])}** ({txt(r['why'])})."
    )


def tier_sections(res: dict[str, Any]) -> list[tuple[str, pd.DataFrame | None, str | None]]:
    """Per routing tier: a heading line, its candidate table (top 8) and its benchmark-next line."""
    out: list[tuple[str, pd.DataFrame | None, str | None]] = []
    for name, x in res["per_tier_candidates"].items():
        if "error" in x:
            out.append((f"**{txt(name)}**: {txt(x['error'])}", None, None))
            continue
        head = (
            f"**{txt(name)}** (measured: `{txt(x['measured'] or 'none')}`; cheapest eligible: "
            f"`{txt(x.get('cheapest_eligible') or 'none')}`)"
        )
        ref = f"`{txt(x.get('cheapest_eligible'))}`" if x.get("cheapest_eligible") else "the tier's plan"
        out.append((head, candidate_table(x["candidates"], top=8), benchmark_next_line(x["benchmark_next"], ref)))
    return out


def price_sources(res: dict[str, Any]) -> pd.DataFrame:
    """Every GPU's $/GPU-hour and where it comes from."""
    rows = [*res["per_candidate"], *res["per_tier"].values()]
    df = pd.DataFrame([r for r in rows if r.get("price_source")])
    if df.empty:
        return df
    return df[["gpu", "usd_per_gpu_hour", "price_source"]].drop_duplicates().sort_values("gpu").reset_index(drop=True)


def price_basis_line(res: dict[str, Any]) -> str:
    """Which provider every price is (one provider, or: there is no like-for-like price)."""
    basis = res.get("price_basis") or {}
    if not basis:
        return "Price basis not recorded (rerun the report stage)."
    if basis["like_for_like"]:
        return (
            f"**Every price is {txt(basis['provider'])}'s** ({txt(basis['pricing'])}): {txt(basis['rule'])}. "
            f"Compared GPUs: {txt(', '.join(basis['compared_gpus']) or 'none')}."
        )
    return f"**No like-for-like price:** {txt(basis['rule'])}."


SCENARIO_COLUMNS = {
    "scenario": "scenario",
    "changes": "changes",
    "candidate": "deployment",
    "basis": "capacity basis",
    "gpus": "GPUs",
    "usd_per_gpu_hour": "USD / GPU-hour",
    "monthly_usd": "USD / month",
    "band": "USD / month, 80% band",
    "utilization": "utilization",
    "usd_per_million_output_tokens": "USD / 1M output tokens",
    "slo_status": "SLO",
    "price_basis": "price basis",
    "price_source": "price source",
    "why": "why",
}


def scenario_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The scenarios side by side: numbers kept as numbers, so the table layer (pipeline.tables) shows $,
    thousands separators, percentages and "n/a"; the 80% cost band as one "$lo-$hi" text (n/a when none)."""
    table = pd.DataFrame(rows)
    table["changes"] = table["changes"].map(lambda c: ", ".join(f"{k}={v}" for k, v in c.items()) or "none")
    table["band"] = [
        f"{tables.money(iv['monthly_usd_lo'])}-{tables.money(iv['monthly_usd_hi'])}"
        if isinstance(iv, dict) and iv.get("monthly_usd_lo") is not None and iv.get("monthly_usd_hi") is not None
        else None
        for iv in (table["interval"] if "interval" in table else [None] * len(table))
    ]
    return table[[c for c in SCENARIO_COLUMNS if c in table]].rename(columns=SCENARIO_COLUMNS)


def scenario_costs_data(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Chart data: the priced scenarios' monthly cost and SLO status."""
    table = pd.DataFrame(rows)
    if "monthly_usd" not in table:
        return pd.DataFrame(columns=["scenario", "monthly_usd", "slo_status"])
    return table.dropna(subset=["monthly_usd"])[["scenario", "monthly_usd", "slo_status"]]


def scenario_lines(rows: list[dict[str, Any]]) -> str:
    """One sentence per scenario against the pooled baseline (cost delta, basis, SLO status), or why it has none."""
    base = next(r for r in rows if r["scenario"] == "pooled baseline")
    lines = []
    for r in rows[2:]:
        if "monthly_usd" in r and "monthly_usd" in base:
            delta = r["monthly_usd"] / base["monthly_usd"] - 1
            lines.append(
                f"**{txt(r['scenario'])}**: {r['gpus']} GPUs, USD {r['monthly_usd']:,.0f} a month ({delta:+.0%} against "
                f"the pooled baseline), {txt(r['slo_status'])}; prices: {txt(r.get('price_basis'))}."
            )
        else:
            lines.append(f"**{txt(r['scenario'])}**: {txt(r.get('why', r['slo_status']))}.")
    return "\n\n".join(lines) or "No scenarios in params.yaml (`report.scenarios`)."


def scenario_price_line(t: dict[str, Any]) -> str:
    """Which provider the scenarios' prices come from (metrics/tco.json price_basis), or that there is none."""
    basis = t.get("price_basis") or {}
    if not basis:
        return "Price basis not recorded (rerun the report stage)."
    return (
        ("Prices: " if basis["like_for_like"] else "**No like-for-like price** (no one provider lists every GPU). ")
        + txt(basis["rule"])
        + (f" Provider: **{txt(basis['provider'])}**." if basis["provider"] else "")
        + " A scenario with its own `price_usd_per_gpu_hour` says `scenario price` instead."
    )
