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
    """The sizing operating point, one row per figure with its provenance."""
    op = res.chosen
    rows = [
        (
            "C_max",
            f"{op.c_max:.2f} {'concurrent requests' if op.load_kind == 'concurrency' else 'req/s offered'}",
            "linear interpolation between the last passing and first failing level (method.md step 7)",
        ),
        ("usable RPS per replica", f"{op.usable_rps:.3f} req/s", "achieved RPS at C_max / replicas in the benchmark"),
        ("binding SLO", op.binding.upper(), "the lower C_max of TTFT and ITL"),
        (
            "percentile used",
            ", ".join(f"{k} {v}" for k, v in op.percentile_used.items()),
            "highest percentile the files give at every level",
        ),
        ("knee", "none" if op.knee is None else f"{op.knee:g}", op.knee_note),
        ("Little's-law ceiling", f"{op.ceiling_rps:.3f} req/s", op.e2e_source),
        ("Little's-law gap", f"{op.gap:.2f}x" + (" FLAGGED" if op.gap_flag else ""), "ceiling / measured RPS at C_max"),
        (
            "goodput at C_max",
            "n/a" if op.goodput_rps_at_c_max is None else f"{op.goodput_rps_at_c_max:.3f} req/s",
            "per-request data or the tool's --goodput",
        ),
        ("curve", op.curve, res.selection),
        ("loop", res.sized_by, "curve.sizing_loop"),
    ]
    return pd.DataFrame(rows, columns=["figure", "value", "where it comes from"])


def itl_spike_levels(res: CurveResult) -> pd.DataFrame:
    """The sizing curve's levels with `ratio_ms` = ITL p99 / p50 (step 9's spike test), for the ratio chart."""
    lv = res.table[res.table["curve"] == res.chosen.curve].copy()
    lv["itl_ratio"] = lv["itl_p99_ms"] / lv["itl_p50_ms"]
    return lv.assign(ratio_ms=lv["itl_ratio"])
