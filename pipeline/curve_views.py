"""Tables the step 7-10 reports show, built from a CurveResult (no computation of their own)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pipeline.final_curve import CurveResult


def _r(v: Any, digits: int = 2) -> Any:
    return round(v, digits) if isinstance(v, float) and math.isfinite(v) else v


def sweeps_table(res: CurveResult) -> pd.DataFrame:
    """One row per sweep: tool, levels, curves, what the manifest says, skipped files."""
    rows = []
    for s in res.sweeps:
        m = s.manifest or {}
        rows.append(
            {
                "sweep": s.name,
                "tool": s.tool,
                "levels": len(s.levels),
                "curves": len({lv.row["curve"] for lv in s.levels}),
                "deployment": f"{m.get('model')} on {m.get('gpu_count')} x {m.get('gpu')}, TP {m.get('tp')} PP {m.get('pp')}, "
                f"w-{m.get('weight_dtype')} kv-{m.get('kv_dtype')}, {m.get('engine')} {m.get('engine_version') or ''}".strip()
                if m
                else "NO MANIFEST",
                "loop": m.get("load_mode"),
                "phase": m.get("phase"),
                "synthetic": bool(m.get("synthetic", False)),
                "files skipped": len(s.skipped),
            }
        )
    return pd.DataFrame(rows)


LEVEL_COLUMNS = {
    "curve": "curve",
    "load": "load",
    "ttft_p50_ms": "TTFT p50 ms",
    "ttft_p99_ms": "TTFT p99 ms",
    "itl_p50_ms": "ITL p50 ms",
    "itl_p99_ms": "ITL p99 ms",
    "itl_kind": "ITL kind",
    "e2e_mean_ms": "E2E mean ms",
    "rps": "req/s",
    "output_tps": "output tok/s",
    "goodput_rps": "goodput req/s",
    "completed": "completed",
    "failed": "failed",
}


def levels_table(res: CurveResult, curve: str | None = None) -> pd.DataFrame:
    """The normalized levels (all curves, or one), rounded for reading."""
    df = res.table if curve is None else res.table[res.table["curve"] == curve]
    out = df[list(LEVEL_COLUMNS)].rename(columns=LEVEL_COLUMNS)
    return out.map(_r).reset_index(drop=True)


def operating_table(res: CurveResult) -> pd.DataFrame:
    """Every curve's operating point (or why it has none), the sizing one first."""
    rows = []
    for name in sorted(set(res.points) | set(res.errors), key=lambda n: (n != res.chosen.curve, n)):
        if name in res.errors:
            rows.append({"curve": name, "sizes the fleet": "", "status": res.errors[name].split(";")[0]})
            continue
        op = res.points[name]
        rows.append(
            {
                "curve": name,
                "sizes the fleet": "yes" if name == res.chosen.curve else "",
                "status": "ok",
                "C_max": _r(op.c_max),
                "usable req/s per replica": _r(op.usable_rps, 3),
                "binding SLO": op.binding.upper(),
                "percentile": ", ".join(f"{k} {v}" for k, v in op.percentile_used.items()),
                "knee": op.knee,
                "Little gap": _r(op.gap),
                "gap flag": "FLAG" if op.gap_flag else "",
            }
        )
    return pd.DataFrame(rows)


def tier_table(per_tier: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per routing tier: its model, the sweep and curve that size it, and its operating point (or why none)."""
    rows = []
    for name, x in sorted(per_tier.items()):
        if "error" in x:
            rows.append({"tier": name, "model": x["model"], "status": x["error"]})
            continue
        m = x["manifest"]
        rows.append(
            {
                "tier": name,
                "model": x["model"],
                "deployment": f"{m.get('gpu_count')} x {m.get('gpu')} TP{m.get('tp')} {m.get('weight_dtype')}",
                "curve": x["curve"],
                "status": "ok",
                "C_max": _r(x["c_max"]),
                "usable req/s per replica": _r(x["usable_rps"], 3),
                "knee": x["knee"],
                "Little gap": _r(x["littles_law_gap"]),
                "why this curve": x["why"],
            }
        )
    return pd.DataFrame(rows)


def recommendations_table(res: CurveResult, names: tuple[str, ...]) -> pd.DataFrame:
    """The chosen recommendations with verdict, value, threshold, evidence and action."""
    rows = [
        {k: r[k] for k in ("name", "verdict", "value", "threshold", "evidence", "action")}
        for r in res.recommendations
        if r["name"] in names
    ]
    return pd.DataFrame(rows)


def tier_recommendations_table(res: CurveResult, names: tuple[str, ...]) -> pd.DataFrame | None:
    """The same recommendations per routing tier (each on its own curve, lengths and rate); None without tiers."""
    rows = [
        {"tier": tier, **{k: r[k] for k in ("name", "verdict", "value", "action")}}
        for tier, point in sorted(res.per_tier.items())
        for r in point.get("recommendations", [])
        if r["name"] in names
    ]
    return pd.DataFrame(rows) if rows else None


def overlay_table(res: CurveResult) -> pd.DataFrame | None:
    """Predicted (roofline) vs measured per level of the sizing curve, errors in %."""
    if res.overlay is None:
        return None
    df = res.overlay.copy()
    for col in ("ttft_error", "itl_error", "rps_error"):
        df[col] = (df[col] * 100).round(1)
    keep = {
        "load": "load",
        "concurrency_per_replica": "concurrency / replica",
        "measured_ttft_p50_ms": "TTFT p50 measured ms",
        "predicted_ttft_ms": "TTFT roofline ms",
        "ttft_error": "TTFT error %",
        "measured_itl_p50_ms": "ITL p50 measured ms",
        "predicted_itl_ms": "ITL roofline ms",
        "itl_error": "ITL error %",
        "measured_rps": "req/s measured",
        "predicted_rps": "req/s roofline",
        "rps_error": "req/s error %",
    }
    return df[list(keep)].rename(columns=keep).map(_r)


def point_table(res: CurveResult) -> pd.DataFrame:
    """The sizing operating point, one row per figure (its unit in the name) with its provenance; the values are
    numbers or words, never formatted here (pipeline/tables.py formats them)."""
    op = res.chosen
    load_unit = "concurrent requests" if op.load_kind == "concurrency" else "req/s offered"
    rows = [
        (
            f"C_max ({load_unit})",
            op.c_max,
            "linear interpolation between the last passing and first failing level (method.md step 7)",
        ),
        ("usable RPS per replica (req/s)", op.usable_rps, "achieved RPS at C_max / replicas in the benchmark"),
        ("binding SLO", op.binding.upper(), "the lower C_max of TTFT and ITL"),
        (
            "percentile used",
            ", ".join(f"{k} {v}" for k, v in op.percentile_used.items()),
            "highest percentile the files give at every level",
        ),
        (f"knee ({load_unit})", "none" if op.knee is None else op.knee, op.knee_note),
        ("Little's-law ceiling (req/s)", op.ceiling_rps, op.e2e_source),
        (
            "Little's-law gap (ceiling / measured, x)",
            op.gap,
            ("FLAGGED: " if op.gap_flag else "") + "ceiling / measured RPS at C_max",
        ),
        ("goodput at C_max (req/s)", op.goodput_rps_at_c_max, "per-request data or the tool's --goodput"),
        ("curve", op.curve, res.selection),
        ("loop", res.sized_by, "curve.sizing_loop"),
    ]
    return pd.DataFrame(rows, columns=["figure", "value", "where it comes from"])


def itl_spike_levels(res: CurveResult) -> pd.DataFrame:
    """The sizing curve's levels with `ratio_ms` = ITL p99 / p50 (step 9's spike test), for the ratio chart."""
    lv = res.table[res.table["curve"] == res.chosen.curve].copy()
    lv["itl_ratio"] = lv["itl_p99_ms"] / lv["itl_p50_ms"]
    return lv.assign(ratio_ms=lv["itl_ratio"])


# ------------------------------------------------------------------ step 7b: every candidate (report 10)


def _band(lo: Any, hi: Any, digits: int = 2) -> tuple[Any, Any]:
    """An 80% band as (low, high) numbers for two table columns; (None, None) ("n/a") when there is none."""
    if lo is None or hi is None:
        return None, None
    return _r(float(lo), digits), _r(float(hi), digits)


def length_warnings(doc: dict[str, Any]) -> list[str]:
    """The loud length-mismatch sentences of metrics/operating_point.json (plain text: escape before rendering)."""
    return [str(m["message"]) for m in doc.get("length_mismatch") or []]


def sizing_table(doc: dict[str, Any]) -> pd.DataFrame:
    """One row per fleet: the curve that sizes it, its basis, usable RPS and C_max (with the measured figures
    when a mismatched one was carried to the workload's p95 lengths, and the carry factor), the length ratios and
    the interval (the band and carry columns only when some fleet has one)."""
    fleets = [("all (pooled)", doc, (doc.get("curve_source") or {}).get("curve"))]
    fleets += [(t, pt, pt.get("curve")) for t, pt in sorted((doc.get("per_tier") or {}).items())]
    rows = []
    for name, d, curve in fleets:
        lm = d.get("length_match") or {}
        iv = d.get("interval") or {}
        rows.append(
            {
                "fleet": name,
                "measured curve": curve or d.get("error"),
                "sizing basis": d.get("sizing_basis"),
                "usable req/s": _r(d.get("usable_rps"), 3),
                **dict(
                    zip(
                        ("req/s 80% band, low", "req/s 80% band, high"),
                        _band(iv.get("usable_rps_lo"), iv.get("usable_rps_hi"), 3),
                        strict=True,
                    )
                ),
                "C_max": _r(d.get("c_max"), 1),
                "measured req/s": _r(d.get("measured_usable_rps", d.get("usable_rps")), 3),
                "engine model req/s (mix)": _r((d.get("anchor") or {}).get("model_usable_rps"), 3),
                "anchor factor": _r((d.get("anchor") or {}).get("factor"), 3),
                "anchor factor, transferred": _r(
                    (((d.get("anchor") or {}).get("by_basis") or {}).get("transferred") or {}).get("factor"), 3
                ),
                "carried x (beyond max mismatch)": _r((d.get("carried") or {}).get("factor"), 3),
                "input length ratio": lm.get("input_ratio"),
                "output length ratio": lm.get("output_ratio"),
                "within tolerance": lm.get("within_tolerance") if lm else None,
                "used for sizing": lm.get("used_for_sizing") if lm else None,
            }
        )
    table = pd.DataFrame(rows)
    # a band or a carry no fleet has (measured curves within tolerance: the sample) is a column of "n/a": left out
    optional = ("req/s 80% band, low", "req/s 80% band, high", "carried x (beyond max mismatch)")
    return table.drop(columns=[c for c in optional if table[c].isna().all()])


def candidates_table(doc: dict[str, Any]) -> pd.DataFrame:
    """Every candidate of op.candidates: basis, C_max and usable RPS per instance with their 80% bands (anchored:
    priced like for like with the fleet's measured curve), the raw engine-model req/s at the length mix and the
    anchor factor applied."""
    rows = []
    for cid, e in sorted((doc.get("candidates") or {}).items()):
        iv = e.get("interval") or {}
        rows.append(
            {
                "candidate": cid,
                "TP x PP": f"{e['tp']} x {e['pp']}",
                "basis": e.get("basis"),
                "C_max": _r(e.get("c_max"), 1),
                **dict(
                    zip(
                        ("C_max 80% band, low", "C_max 80% band, high"),
                        _band(iv.get("c_max_lo"), iv.get("c_max_hi"), 1),
                        strict=True,
                    )
                ),
                "usable req/s": _r(e.get("usable_rps"), 3),
                **dict(
                    zip(
                        ("req/s 80% band, low", "req/s 80% band, high"),
                        _band(iv.get("usable_rps_lo"), iv.get("usable_rps_hi"), 3),
                        strict=True,
                    )
                ),
                "engine model req/s (mix)": _r(e.get("usable_rps_model"), 3),
                "anchor factor": _r((e.get("anchor") or {}).get("factor"), 3) if e.get("basis") != "measured" else None,
                "binds": e.get("binding_slo"),
                "levels": len(e.get("levels") or []),
                "memory stage": e.get("memory_rejected") or "takes it",
                "why this basis": e.get("basis_why"),
            }
        )
    return pd.DataFrame(rows)


def basis_summary(doc: dict[str, Any]) -> str:
    """`N candidates: a measured, b calibrated, ...` (plain text)."""
    from pipeline.engine_curves import basis_counts

    cands = doc.get("candidates") or {}
    counts = basis_counts(cands)
    parts = ", ".join(f"{n} {b}" for b, n in counts.items())
    no_cmax = sum(1 for e in cands.values() if e.get("c_max") is None)
    return f"{len(cands)} candidate(s): {parts}; {no_cmax} without a C_max (the reason is in the last column)"


def anchor_paragraphs(doc: dict[str, Any]) -> list[str]:
    """One plain sentence per fleet: how its model-based candidates are priced like for like with its measured curve
    (the anchor of engine_curves.anchor), or why they are not (plain text: escape before rendering)."""
    fleets = [("The pooled fleet", doc.get("anchor"))]
    fleets += [(f"Tier {t}", pt.get("anchor")) for t, pt in sorted((doc.get("per_tier") or {}).items())]
    out = []
    for label, a in fleets:
        if not a:
            continue
        note = str(a.get("note") or "")
        out.append(f"{label}: {note}." if a.get("factor") is not None else f"{label}: not anchored: {note}.")
    return out
