"""Report tables and the sentence for step 7b (notebooks/07b_calibration.ipynb), from metrics/calibration.json.

Pure: each function takes the document the calibrate stage wrote (`pipeline.stages.calibrate`) and
returns a pandas table or a string; nothing is read or computed beyond reshaping and percentages.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

KIND_LABELS = {
    "in_sample": "in-sample",
    "leave_one_level_out": "leave one level out",
    "leave_one_deployment_out": "leave one deployment out",
}


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100.0 * v, 1)


def coefficients_table(doc: dict[str, Any]) -> pd.DataFrame:
    """One row per deployment, then the pooled fit: basis, levels, b0..b5 and the overhead (ms), as numbers (the
    table layer, pipeline/tables.py, shows them to 3 significant digits; metrics/calibration.json holds them all)."""
    terms = list(doc["terms"])
    rows = []
    for d in doc["deployments"]:
        rows.append(
            {
                "deployment": d["key"],
                "basis": d["basis"],
                "levels": d["levels"],
                **{t: float(d["coefficients"][t]) for t in terms},
                "overhead (ms)": round(1e3 * d["request_overhead_s"], 2),
            }
        )
    p = doc["pooled"]
    if p is None:  # no sweep at all (the calibrate stage's warning): no pooled fit
        return pd.DataFrame(rows, columns=["deployment", "basis", "levels", *terms, "overhead (ms)"])
    scales = ", ".join(f"{a} x{s:g}" for a, s in sorted(p["gpu_arch_scale"].items()))
    rows.append(
        {
            "deployment": f"pooled ({scales})",
            "basis": "transferred",
            "levels": sum(d["levels"] for d in doc["deployments"]),
            **{t: float(p["coefficients"][t]) for t in terms},
            "overhead (ms)": round(1e3 * p["request_overhead_s"], 2),
        }
    )
    return pd.DataFrame(rows)


def warnings_table(doc: dict[str, Any]) -> pd.DataFrame:
    """Every warning of the document, one row each with the deployment it is about (empty for the document's own):
    each deployment's `warnings` (its fit's and the calibrate stage's), then the document's that no deployment
    carries (a sweep-less run's)."""
    rows = [(d["key"], w) for d in doc.get("deployments") or [] for w in d.get("warnings") or []]
    seen = {w for _, w in rows}
    rows += [("", w) for w in doc.get("warnings") or [] if w not in seen]
    return pd.DataFrame(rows, columns=["deployment", "warning"])


def residuals_table(doc: dict[str, Any]) -> pd.DataFrame:
    """Per deployment (and pooled), kind and metric: n, median |error| and the 10th-90th percentile interval (%)."""
    scopes = [(d["key"], d.get("residuals") or {}) for d in doc["deployments"]]
    scopes.append(("pooled", (doc["pooled"] or {}).get("residuals") or {}))
    rows = []
    for scope, res in scopes:
        for kind, label in KIND_LABELS.items():
            for metric, s in (res.get(kind) or {}).items():
                if not s or not s.get("n"):
                    continue
                rows.append(
                    {
                        "deployment": scope,
                        "residuals": label,
                        "metric": metric,
                        "n": s["n"],
                        "median |error| (%)": _pct(s["median_abs_rel"]),
                        "p10 (%)": _pct(s["p10_rel"]),
                        "p90 (%)": _pct(s["p90_rel"]),
                    }
                )
    return pd.DataFrame(rows)


def targets_table(doc: dict[str, Any]) -> pd.DataFrame:
    """The targets block: held-out median |error| against issue 13's target, met or missed."""
    rows = [
        {
            "basis": r["basis"],
            "residuals": KIND_LABELS[r["kind"]],
            "metric": r["metric"],
            "deployment": r["scope"],
            "median |error| (%)": _pct(r["median_abs_rel"]),
            "target (%)": _pct(r["target_median_abs_rel"]),
            "verdict": "not measured" if r["met"] is None else ("met" if r["met"] else "missed"),
        }
        for r in doc["targets"]["rows"]
    ]
    return pd.DataFrame(rows)


def sentence(doc: dict[str, Any]) -> str:
    """One paragraph: how many deployments were calibrated, the pooled held-out errors, targets met."""
    if doc["pooled"] is None and not doc["deployments"]:
        return "No benchmark sweep at all: nothing is calibrated and there is no pooled fit (see the warning)."
    lolo = ((doc["pooled"] or {}).get("residuals") or {}).get("leave_one_level_out") or {}

    def err(metric: str) -> str:
        v = (lolo.get(metric) or {}).get("median_abs_rel")
        return "not measured" if v is None else f"{100 * v:.1f}%"

    t = doc["targets"]
    n = len(doc["deployments"])
    fallback = n - doc["calibrated_deployments"]
    text = (
        f"{doc['calibrated_deployments']} of {n} deployment(s) calibrated on their own sweeps"
        + (f", {fallback} fell back to the pooled coefficients (see the warnings)" if fallback else "")
        + f". Held out one level at a time, the model's median error is {err('throughput')} on throughput, "
        f"{err('itl_mean')} on mean ITL and {err('ttft')} on TTFT; {t['met']} of "
        f"{t['met'] + t['missed']} measured targets are met."
    )
    return text


METRIC_LABELS = {"throughput": "throughput", "itl_mean": "mean ITL", "ttft": "TTFT (tail)", "ttft_p50": "TTFT p50"}
CLIP_PCT = 200.0


def level_residuals_frame(doc: dict[str, Any]) -> pd.DataFrame:
    """One row per deployment, level, metric and kind: the residual (%), clipped at +-CLIP_PCT for the chart
    (`clipped` says which), sorted so the chart data is byte-stable."""
    rows = []
    for d in doc["deployments"]:
        for lv in d.get("level_residuals") or []:
            for kind, label in KIND_LABELS.items():
                for metric, v in (lv.get(kind) or {}).items():
                    if v is None or metric not in METRIC_LABELS:
                        continue
                    pct = 100.0 * v
                    rows.append(
                        {
                            "deployment": d["key"],
                            "level": lv["level"].rsplit("/", 1)[-1],
                            "metric": METRIC_LABELS[metric],
                            "kind": label,
                            "error_pct": round(max(-CLIP_PCT, min(CLIP_PCT, pct)), 2),
                            "clipped": abs(pct) > CLIP_PCT,
                        }
                    )
    cols = ["deployment", "level", "metric", "kind", "error_pct", "clipped"]
    return pd.DataFrame(rows, columns=cols).sort_values(cols[:4], kind="stable").reset_index(drop=True)
