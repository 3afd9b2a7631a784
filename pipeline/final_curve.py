"""Steps 7-10 (the curve stage's logic): the public names in one place.

Split by concern (issue 16); this module re-exports them for the curve stage, the CLI, the report views and
the tests:

- `curve_result.py`: the data types: Workload, Evaluated, CurveResult (metrics/operating_point.json).
- `contracts.py`: OperatingPointDoc, the typed document CurveResult.metrics writes, key for key.
- `curve_selection.py`: which curve sizes each fleet and why, length matching, each fleet's deployments.
- `curve_overlay.py`: the roofline of the benchmarked deployment against the measured levels.
- `curve_evidence.py`: the evidence for steps 8-9 (KV-cache and batching recommendations).
- `curve_analysis.py`: the glue: analyze (validate, evaluate, pick, overlay, recommend), apply_candidates.
"""

from __future__ import annotations

from pipeline.contracts import OperatingPointDoc
from pipeline.curve_analysis import MANIFEST_EXAMPLE, SECTIONS, analyze, apply_candidates, tier_point
from pipeline.curve_evidence import recommendations
from pipeline.curve_overlay import overlays, predicted_vs_measured
from pipeline.curve_result import CurveResult, Evaluated, Workload, overlay_summary
from pipeline.curve_selection import (
    Pick,
    choose_in_kind,
    deployment_of,
    fleet_curves,
    fleet_lengths,
    fleet_measured,
    manifest_of,
    match_lengths,
    pick_curve,
    same_gpu,
)

__all__ = [
    "MANIFEST_EXAMPLE",
    "SECTIONS",
    "CurveResult",
    "Evaluated",
    "OperatingPointDoc",
    "Pick",
    "Workload",
    "analyze",
    "apply_candidates",
    "choose_in_kind",
    "deployment_of",
    "fleet_curves",
    "fleet_lengths",
    "fleet_measured",
    "manifest_of",
    "match_lengths",
    "overlay_summary",
    "overlays",
    "pick_curve",
    "predicted_vs_measured",
    "recommendations",
    "same_gpu",
    "tier_point",
]
