"""Steps 2 and 4-6: every candidate (GPU x weight precision x KV precision) per tier; the public names in one place.

Split by concern (issue 16); this module re-exports them for the CLI, the memory stage, the notebooks and
the tests:

- `candidate_targets.py`: what each tier needs from the workload profile (Target).
- `candidate_eval.py`: one candidate's memory floor, layout, engine profile and roofline (evaluate).
- `candidate_plan.py`: every candidate of every tier, ranked, and metrics/memory.json (plan, Plan).
"""

from __future__ import annotations

from pipeline.candidate_eval import FORMULAS, Candidate, Settings, candidate_id, evaluate
from pipeline.candidate_plan import QUALITY_ORDER, SECTIONS, Plan, hardware_hint, plan, rank_key, resolve_gpus
from pipeline.candidate_targets import Target, targets_from_profile

__all__ = [
    "FORMULAS",
    "QUALITY_ORDER",
    "SECTIONS",
    "Candidate",
    "Plan",
    "Settings",
    "Target",
    "candidate_id",
    "evaluate",
    "hardware_hint",
    "plan",
    "rank_key",
    "resolve_gpus",
    "targets_from_profile",
]
