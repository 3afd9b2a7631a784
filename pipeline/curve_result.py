"""The curve step's data types: what it needs from the workload (Workload), every curve evaluated once
(Evaluated) and its result (CurveResult), written as metrics/operating_point.json through the typed
contract contracts.OperatingPointDoc. Pure: nothing is read or written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline import curve as cv
from pipeline import io
from pipeline.benchmarks import Sweep
from pipeline.contracts import OperatingPointDoc


@dataclass
class Workload:
    """What the selection and the recommendations need from metrics/workload.json."""

    input_p95: float | None = None
    output_p95: float | None = None
    input_p50: float | None = None
    input_mean: float | None = None
    output_mean: float | None = None
    sizing_rps: float | None = None
    prefix_reuse: float | None = None
    tier_prefix_reuse: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, p: dict[str, Any]) -> Workload:
        """From metrics/workload.json's profile (p95/p50/mean lengths, sizing rate, prefix reuse per tier)."""
        return cls(
            p["input_tokens"]["p95"],
            p["output_tokens"]["p95"],
            p["input_tokens"]["p50"],
            p["input_tokens"]["mean"],
            p["output_tokens"]["mean"],
            p["rps"]["sizing_rate"],
            (p.get("prefix_reuse") or {}).get("reuse_fraction"),
            {t: (v.get("prefix_reuse") or {}).get("reuse_fraction") for t, v in (p.get("tiers") or {}).items()},
        )


@dataclass
class Evaluated:
    """Every curve of every sweep, evaluated once: the levels, each curve's sweep, point or error, and lengths."""

    table: pd.DataFrame
    sweeps: list[Sweep]
    sweep_of: dict[str, str]
    points: dict[str, cv.OperatingPoint]
    errors: dict[str, str]
    lengths: dict[str, tuple[float | None, float | None]]


@dataclass
class CurveResult:
    """Everything the stage computed: levels, per-curve operating points, the pick and why."""

    sweeps: list[Sweep]
    table: pd.DataFrame
    points: dict[str, cv.OperatingPoint]
    errors: dict[str, str]
    chosen: cv.OperatingPoint
    capacities: dict[str, dict[str, Any]]
    selection: str
    sized_by: str
    manifest: dict[str, Any] | None
    sweep_of: dict[str, str]
    overlay: pd.DataFrame | None
    overlay_note: str
    recommendations: list[dict[str, Any]]
    settings: cv.Settings
    warnings: list[str] = field(default_factory=list)
    validation: list[Any] = field(default_factory=list)
    per_tier: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluated: Any = None  # Evaluated: every curve's point, lengths and sweep (the candidates' measured side)
    pooled_curves: list[str] = field(default_factory=list)
    workload: Any = None  # the pooled Workload
    sizing: dict[str, Any] = field(default_factory=dict)  # top level: sizing_basis, length_match, interval, ...
    curve_matches: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    length_mismatch: list[dict[str, Any]] = field(default_factory=list)
    candidates: dict[str, dict[str, Any]] | None = None  # op.candidates (the curve stage; None: not computed)
    candidate_levels: pd.DataFrame | None = None  # data/interim/candidate_curves.parquet
    seconds: float | None = None  # the stage's own time (pipeline/stages/curve.py run)

    def metrics(self) -> dict[str, Any]:
        """metrics/operating_point.json (contract keys first; the keys and their order: contracts.OperatingPointDoc)."""
        op = self.chosen
        used = set(op.percentile_used.values())
        sweep = next(s for s in self.sweeps if s.name == self.sweep_of[op.curve])
        files = sorted(set(self.table.loc[self.table["curve"] == op.curve, "file"]))
        doc = OperatingPointDoc(
            load_kind=op.load_kind,
            c_max=round(self.sizing.get("c_max", op.c_max), 4),
            usable_rps=round(self.sizing.get("usable_rps", op.usable_rps), 4),
            knee=op.knee,
            littles_law_ceiling_rps=round(op.ceiling_rps, 4),
            littles_law_gap=round(op.gap, 4),
            gap_flag=op.gap_flag,
            slo={"ttft_p99_ms": self.settings.ttft_p99_ms, "itl_p99_ms": self.settings.itl_p99_ms},
            percentile_used=used.pop()
            if len(used) == 1
            else ", ".join(f"{k} {v}" for k, v in op.percentile_used.items()),
            curve_source={
                "curve": op.curve,
                "sweep": sweep.name,
                "tool": sweep.tool,
                "files": files,
                "synthetic": bool((self.manifest or {}).get("synthetic", False)),
                "why": self.selection,
            },
            manifest=self.manifest,
            recommendations=self.recommendations,
            sized_by=self.sized_by,
            capacities=self.capacities,
            operating_point=io.rounded(op.as_dict()),
            curves={
                name: {
                    **(
                        {"error": self.errors[name]} if name in self.errors else io.rounded(self.points[name].as_dict())
                    ),
                    "basis": "measured",
                    "length_match": self.curve_matches.get(name),
                }
                for name in sorted(set(self.points) | set(self.errors))
            },
            predicted_vs_measured=overlay_summary(self.overlay, self.overlay_note),
            skipped_files={s.name: [f"{f}: {why}" for f, why in s.skipped] for s in self.sweeps if s.skipped},
            reader_notes={s.name: s.notes() for s in self.sweeps if s.notes()},
            per_tier=self.per_tier,
            warnings=self.warnings + op.warnings,
            formulas=cv.FORMULAS,
            sizing_basis=self.sizing.get("sizing_basis", "measured"),
            length_match=self.sizing.get("length_match"),
            interval=self.sizing.get("interval"),
            length_mismatch=self.length_mismatch,
            **{k: self.sizing[k] for k in OperatingPointDoc.SIZING_KEYS if k in self.sizing},
        )
        if self.candidates is not None:
            from pipeline.engine_curves import ANCHOR_RULE

            doc.candidates = self.candidates
            doc.anchor_rule = ANCHOR_RULE  # how the candidates are priced like for like (op.anchor, per_tier[t])
        return doc.to_dict()


def overlay_summary(overlay: pd.DataFrame | None, note: str) -> dict[str, Any]:
    """op.predicted_vs_measured: whether there is an overlay, its note, and the median absolute errors."""
    if overlay is None or overlay.empty:
        return {"available": False, "note": note}
    out: dict[str, Any] = {"available": True, "note": note}
    for col in ("ttft_error", "itl_error", "rps_error"):
        v = overlay[col].dropna() if col in overlay else pd.Series(dtype=float)
        out[f"{col}_median_abs"] = round(float(v.abs().median()), 4) if not v.empty else None
    return out
