"""Data shaping shared by reports 10, 12 and finance (issue 17): the Pareto view per tier, the adopted
deployment per tier, and the basis of each candidate in plain words. Cells call these; pandas lives here.

Inputs are the metrics documents as written: metrics/operating_point.json (`op`, its `candidates[id]`
with `levels`) and metrics/tco.json (`tco`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pipeline import charts, tables
from pipeline.curve import LEVEL_KEYS  # one level's figures, as the engine-model curves write them
from pipeline.text import txt

PARETO_COLUMNS = ["tier", "candidate", "basis", "gpus_per_instance", *LEVEL_KEYS]

BASIS_WORDS = {
    "measured": "benchmarked on that deployment at the workload's lengths",
    "calibrated": "benchmarked at other lengths; the engine model fitted to that benchmark predicts the workload's",
    "transferred": "never benchmarked; the engine model fitted on other deployments' benchmarks, scaled to its GPU",
    "roofline": "never benchmarked and no calibration: a hardware-limits (roofline) estimate only",
}
BASIS_ORDER = ("measured", "calibrated", "transferred", "roofline")


def gpus_per_instance(candidate: dict[str, Any]) -> int:
    """GPUs of one instance of a candidate: TP x PP (a missing or null TP/PP counts 1)."""
    return int(candidate.get("tp") or 1) * int(candidate.get("pp") or 1)


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


def anchor_factor(candidate: dict[str, Any]) -> float | None:
    """The like-for-like factor on a model-based candidate's throughput (its op.candidates `anchor.factor`, the
    one its priced usable RPS carries); None for a measured candidate or one without a factor."""
    if candidate.get("basis") == "measured":
        return None
    k = (candidate.get("anchor") or {}).get("factor")
    return float(k) if isinstance(k, int | float) and not isinstance(k, bool) and k > 0 else None


def pareto_levels(op: dict[str, Any], tier: str | None = None, anchored: bool = False) -> pd.DataFrame:
    """One row per candidate x load level of op.candidates (only `tier`'s when given), the columns
    charts.pareto and tables.bench_summary read plus tier, basis and gpus_per_instance (TP x PP).

    `anchored`: a model-based candidate's throughput (output_tokens_per_s and rps) is multiplied by its anchor
    factor (`anchor_factor`), the like-for-like scale its priced usable RPS carries, so that the chart matches
    the sizing; its latencies stay the engine model's (the anchor scales capacity only).
    A level without output_tokens_per_s or a positive itl_p50_ms cannot be placed on the trade-off
    and is left out. Rows are sorted by tier, candidate and concurrency (then rps) so reruns match.
    """
    rows = []
    for cid, c in (op.get("candidates") or {}).items():
        if tier is not None and c.get("tier") != tier:
            continue
        g = gpus_per_instance(c)
        k = anchor_factor(c) if anchored else None
        for lv in c.get("levels") or []:
            tps, itl = lv.get("output_tokens_per_s"), lv.get("itl_p50_ms")
            if not _known(tps) or not _known(itl) or float(itl) <= 0:
                continue
            row = {
                "tier": c.get("tier"),
                "candidate": cid,
                "basis": c.get("basis"),
                "gpus_per_instance": g,
                **{k: lv.get(k) for k in LEVEL_KEYS},
            }
            if k is not None:
                for col in ("output_tokens_per_s", "rps"):
                    if _known(row.get(col)):
                        row[col] = float(row[col]) * k
            rows.append(row)
    df = pd.DataFrame(rows, columns=PARETO_COLUMNS)
    if df.empty:
        return df
    sort = df.assign(_c=df["concurrency"].astype(float), _r=df["rps"].astype(float))
    return (
        sort.sort_values(["tier", "candidate", "_c", "_r"], kind="stable")
        .drop(columns=["_c", "_r"])
        .reset_index(drop=True)
    )


def adopted_by_tier(tco: dict[str, Any]) -> dict[str, str]:
    """The candidate id the ADOPTED plan (tco.json) runs on each of its tiers: {"all": id} for a pooled plan,
    {tier: id} per routing tier of a routed or cascade plan (charts.adopted_candidate)."""
    plan = tco.get("plan", tco.get("chosen"))
    tiers = sorted(tco.get("per_tier") or {}) if plan not in (None, "pooled") else ["all"]
    out = {}
    for t in tiers:
        cid = charts.adopted_candidate(tco, t)
        if cid:
            out[t] = cid
    return out


def sizing_by_tier(op: dict[str, Any]) -> dict[str, str]:
    """The candidate id that sizes each fleet in step 11, from operating_point.json alone (report 10 runs
    before step 12 picks a plan), for `all` (the top level) and each routing tier (`per_tier`):
    its `sizing_candidate` when the curve stage names one; else the tier's candidate with the deployment
    of the sizing sweep's manifest (GPU, TP, PP, weight and KV precision; a measured one first); else
    `anchor.deployment` (the measured deployment the model-based candidates are priced against)."""
    cands = op.get("candidates") or {}
    fleets = {"all": op, **{t: x for t, x in (op.get("per_tier") or {}).items() if isinstance(x, dict)}}
    out: dict[str, str] = {}
    for t, x in fleets.items():
        if x.get("sizing_candidate") in cands:
            out[t] = str(x["sizing_candidate"])
            continue
        man = x.get("manifest") or {}
        want = {
            "gpu": man.get("gpu"),
            "tp": man.get("tp"),
            "pp": man.get("pp") or 1,
            "weights": man.get("weight_dtype"),
            "kv": man.get("kv_dtype"),
        }
        hits = sorted(
            (c.get("basis") != "measured", cid)
            for cid, c in cands.items()
            if man
            and c.get("tier") == t
            and all(((c.get(k) or 1) if k == "pp" else c.get(k)) == v for k, v in want.items())
        )
        anchor = (x.get("anchor") or {}).get("deployment")
        if hits:
            out[t] = hits[0][1]
        elif anchor in cands:
            out[t] = str(anchor)
    return out


def pareto_sections(
    op: dict[str, Any],
    adopted: dict[str, str],
    label: str = "the adopted plan's deployment",
    absent: str = "not part of the adopted plan",
) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """Per tier of op.candidates: a heading (Markdown for md()), its Pareto rows (pareto_levels) and the
    highlighted ids.

    `adopted` maps tier -> candidate id (adopted_by_tier or sizing_by_tier); its tiers come first
    (sorted), then the other tiers (sorted). `label` names the highlighted deployment in the heading,
    `absent` says why a tier has none.
    A tier with no placeable level is left out. Model-based candidates' throughput is drawn scaled by their
    anchor (pareto_levels anchored=True: the like-for-like figure the sizing uses), and the heading says so.
    """
    tiers = sorted({c.get("tier") for c in (op.get("candidates") or {}).values() if c.get("tier") is not None})
    order = [t for t in tiers if t in adopted] + [t for t in tiers if t not in adopted]
    out = []
    for t in order:
        rows = pareto_levels(op, t, anchored=True)
        if rows.empty:
            continue
        n = rows["candidate"].nunique()
        name = "the pooled fleet (all traffic)" if t == "all" else f"tier {txt(t)}"
        head = f"**{name}**: {n} candidate{'s' if n != 1 else ''}, " + (
            f"{label} `{txt(adopted[t])}` in orange." if t in adopted else f"{absent}."
        )
        fleet = op if t == "all" else (op.get("per_tier") or {}).get(t) or {}
        anchor = fleet.get("anchor") if isinstance(fleet, dict) else None
        cands = op.get("candidates") or {}
        factors = sorted({round(k, 2) for cid in rows["candidate"].unique() if (k := anchor_factor(cands[cid]))})
        unscaled = sorted(
            cid
            for cid in rows["candidate"].unique()
            if cands[cid].get("basis") != "measured" and not anchor_factor(cands[cid])
        )
        if factors:
            head += (
                " Model-based curves are drawn like for like with the sizing: their throughput is the engine model's x "
                "their anchor ("
                + ", ".join(f"{k:.2f}" for k in factors)
                + (
                    f", anchored to the measured curve of `{txt(anchor.get('deployment'))}`"
                    if anchor and anchor.get("deployment")
                    else ""
                )
                + ", step 10), the figure their priced usable RPS carries; their ITL is the model's."
            )
        if unscaled:
            head += f" {len(unscaled)} model-based curve{'s' if len(unscaled) != 1 else ''} without an anchor drawn as the model predicts."
        out.append((head, rows, [adopted[t]] if t in adopted else []))
    return out


def basis_counts(rows: pd.DataFrame | list[dict[str, Any]]) -> dict[str, int]:
    """How many rows (candidates) carry each basis, in BASIS_ORDER; unknown values last, sorted."""
    df = pd.DataFrame(rows)
    if df.empty or "basis" not in df:
        return {}
    counts = df["basis"].fillna("unknown").astype(str).value_counts()
    known = [b for b in BASIS_ORDER if b in counts]
    return {b: int(counts[b]) for b in known + sorted(set(counts.index) - set(known))}


def basis_sentence(rows: pd.DataFrame | list[dict[str, Any]], adopted_basis: str | None = None) -> str:
    """The basis of the candidates' capacities in plain words: how many rest on each basis and what it means,
    and which basis the adopted plan stands on (Markdown for md(); values wrapped in txt())."""
    counts = basis_counts(rows)
    parts = [f"{n} {txt(b)} ({BASIS_WORDS.get(b, 'basis not recorded')})" for b, n in counts.items()]
    if not parts:
        return "No candidate is priced."
    text = "Where each capacity comes from: " + "; ".join(parts) + "."
    if adopted_basis:
        text += f" The adopted plan is {txt(adopted_basis)}: {BASIS_WORDS.get(adopted_basis, 'basis not recorded')}."
    return text


def pareto_charts(
    op: dict[str, Any],
    adopted: dict[str, str],
    itl_slo_ms: float | None,
    label: str = "the adopted plan's deployment",
    absent: str = "not part of the adopted plan",
    legend: str = "adopted",
) -> list[tuple[str, Any]]:
    """What a report shows for the Pareto view: (Markdown heading, charts.pareto chart) per tier of
    pareto_sections, or one (why, None) when there is nothing to draw (no ITL SLO, no placeable level).
    `legend` names the highlighted deployments in the chart's legend."""
    if itl_slo_ms is None:
        return [("No ITL SLO (`slo.itl_p99_ms` is null): the trade-off has no SLO region to draw.", None)]
    found = pareto_sections(op, adopted, label, absent)
    if not found:
        return [("No candidate curve has a level with throughput and ITL (operating_point.json `candidates`).", None)]
    return [(head, charts.pareto(rows, float(itl_slo_ms), adopted=ids, label=legend)) for head, rows, ids in found]


def plan_cost_note(tco: dict[str, Any]) -> str:
    """How to read the adopted plan's cost-by-candidate chart, with the basis of its candidates in plain words."""
    rows, _ = charts.adopted_plan_candidates(tco)
    scope = "each tier of the adopted plan" if tco.get("plan", tco.get("chosen")) != "pooled" else "the pooled fleet"
    return (
        f"Every priced deployment that could serve {scope}, as a static fleet; orange: the deployment the adopted "
        "plan runs on that tier. " + basis_sentence(rows, tco.get("chosen_basis"))
    )


def choice_line(tco: dict[str, Any]) -> str:
    """Why the pooled plan's deployment was chosen, with its basis in plain words (finance, pooled plan)."""
    rows = tco.get("per_candidate") or []
    eligible = sum(1 for r in rows if r.get("eligible", r.get("basis") == "measured"))
    basis = tco.get("chosen_basis") or "measured"
    rule = "measured or calibrated" + (" or transferred" if tco.get("allow_transferred") else "")
    return (
        f"It is the cheapest of the {eligible} candidates whose capacity may size the plan ({rule}), "
        f"out of {len(rows)} candidates; its capacity is {txt(basis)}: "
        f"{BASIS_WORDS.get(basis, 'basis not recorded')}."
    )


def benchmark_next_ids(tco: dict[str, Any]) -> list[str]:
    """What to benchmark next among the candidates the cost-by-candidate chart shows: per tier of a routed
    plan, each tier's `per_tier_candidates[t].benchmark_next` (tiers sorted); for a pooled plan (or when no
    tier lists any), the top-level `benchmark_next`."""
    per_tier = tco.get("per_tier_candidates") or {}
    routed = tco.get("plan", tco.get("chosen")) not in (None, "pooled")
    ids = [str(b["candidate"]) for t in sorted(per_tier) for b in (per_tier[t].get("benchmark_next") or []) if routed]
    return ids or [str(b["candidate"]) for b in tco.get("benchmark_next") or []]


def sizing_sections(op: dict[str, Any], slo: dict[str, Any]) -> list[tuple[str, pd.DataFrame | None, list[Any]]]:
    """Report 10 per fleet (`all`, then each routing tier): the curve that sizes it (sizing_by_tier), as a
    Markdown heading, its per-level table in `vllm bench serve` style (tables.bench_summary, per GPU = TP x PP,
    "Meets SLO" against slo's TTFT p99 and ITL p99; a null ITL SLO never fails) and its charts: TTFT p99 and,
    with an ITL SLO, ITL p99 against load, each with the SLO line and the candidate's C_max. Levels in load
    order; a curve with no level gets None and no chart."""
    cands = op.get("candidates") or {}
    itl_slo = slo.get("itl_p99_ms")
    bench_slo = {"ttft_p99_ms": slo["ttft_p99_ms"], "itl_p99_ms": float("inf") if itl_slo is None else itl_slo}
    picks = sizing_by_tier(op)
    out: list[tuple[str, pd.DataFrame | None, list[Any]]] = []
    for t in ["all", *sorted(k for k in picks if k != "all")]:
        if t not in picks:
            continue
        cid = picks[t]
        c = cands[cid]
        levels = sorted(
            c.get("levels") or [],
            key=lambda lv: (
                float(lv["concurrency"]) if _known(lv.get("concurrency")) else math.inf,
                float(lv["rps"]) if _known(lv.get("rps")) else math.inf,
            ),
        )
        g = gpus_per_instance(c)
        name = "The pooled fleet (all traffic)" if t == "all" else f"Tier {txt(t)}"
        rps = c.get("usable_rps")
        head = (
            f"**{name}**: `{txt(cid)}` ({txt(c.get('basis'))}, TP{int(c.get('tp') or 1)} x PP{int(c.get('pp') or 1)}"
            f" = {g} GPU{'s' if g != 1 else ''} per instance)"
            + (f", usable {float(rps):.3g} req/s per instance" if _known(rps) else "")
            + (f" at C_max {float(c['c_max']):.1f}" if _known(c.get("c_max")) else "")
            + ("." if levels else "; its curve has no load level to show.")
        )
        bench = tables.bench_summary(levels, gpus_per_instance=g, slo=bench_slo) if levels else None
        figs: list[Any] = []
        rows = [lv for lv in levels if _known(lv.get("concurrency")) or _known(lv.get("rps"))]
        if rows:
            closed = all(_known(lv.get("concurrency")) for lv in rows)
            data = pd.DataFrame(
                {
                    "curve": cid,
                    "load": [float(lv["concurrency"] if closed else lv["rps"]) for lv in rows],
                    "ttft_p99_ms": [lv.get("ttft_p99_ms") for lv in rows],
                    "itl_p99_ms": [lv.get("itl_p99_ms") for lv in rows],
                }
            )
            kind = "concurrency" if closed else "rps"
            c_max = float(c["c_max"]) if closed and _known(c.get("c_max")) else None
            figs.append(charts.slo_curve(data, "ttft_p99_ms", float(slo["ttft_p99_ms"]), c_max, "TTFT p99 (ms)", kind))
            if itl_slo is not None:
                figs.append(charts.slo_curve(data, "itl_p99_ms", float(itl_slo), c_max, "ITL p99 (ms)", kind))
        out.append((head, bench, figs))
    return out
