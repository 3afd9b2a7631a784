"""Typed contracts between stages, written as the same JSON files and keys (issue 16).

`OperatingPointDoc` is metrics/operating_point.json, the curve stage's document; `FleetDoc`
metrics/fleet.json (step 11); `TcoDoc` metrics/tco.json (step 12); `MemoryDoc` metrics/memory.json
(steps 2 and 4-6); `TiersDoc` metrics/tiers.json (step 3); `CalibrationDoc` metrics/calibration.json (step 7b); `WorkloadDoc` metrics/workload.json (step 1); `ValidationDoc`
metrics/validation.json (step 13):
one field per top-level key, in the file's key order. The nested blocks stay the dicts they are (their keys are the documents'
own). Pure: only pipeline.errors is imported; nothing is read or written here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Self

from pipeline.errors import InputError


class Absent:
    """The value of an optional key the document does not hold (distinct from a JSON null)."""

    _instance: ClassVar[Absent | None] = None

    def __new__(cls) -> Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent()


class _Document:
    """What every typed document shares: its keys in order, to_dict and a checked from_dict (see OperatingPointDoc)."""

    SOURCE: ClassVar[str]
    WHAT: ClassVar[str]

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every key the document may hold, in its order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        """The keys every document holds."""
        return tuple(f.name for f in fields(cls) if f.default is not ABSENT)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: every set field under its own name, in field order (the values as they are, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not ABSENT}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str | None = None) -> Self:
        """The typed document from its JSON (`source` names the file in errors): a missing or unknown key is an error."""
        source = source or cls.SOURCE
        if not isinstance(doc, dict):
            raise InputError(f"{source}: top level is {type(doc).__name__}; expected a JSON object")
        known = set(cls.keys())
        unknown = [k for k in doc if k not in known]
        if unknown:
            raise InputError(
                f"{source}: {unknown[0]}: not a key of {cls.WHAT}; expected one of {', '.join(cls.keys())}"
            )
        missing = [k for k in cls.required_keys() if k not in doc]
        if missing:
            raise InputError(f"{source}: {missing[0]}: missing; expected every key of {', '.join(cls.required_keys())}")
        return cls(**doc)


@dataclass
class OperatingPointDoc(_Document):
    """metrics/operating_point.json, key for key: the sizing fleet's operating point, every curve, the pick and why.

    The fields from `measured_usable_rps` on are written only when set: the first six where a fleet's sizing
    curve is carried to the workload's lengths by the engine model (the curve stage's `sizing` block),
    `candidates` and `anchor_rule` when the stage computed every candidate's curve.
    """

    load_kind: str
    c_max: float
    usable_rps: float
    knee: float | None
    littles_law_ceiling_rps: float
    littles_law_gap: float
    gap_flag: bool
    slo: dict[str, float | None]
    percentile_used: str
    curve_source: dict[str, Any]
    manifest: dict[str, Any] | None
    recommendations: list[dict[str, Any]]
    sized_by: str
    capacities: dict[str, dict[str, Any]]
    operating_point: dict[str, Any]
    curves: dict[str, dict[str, Any]]
    predicted_vs_measured: dict[str, Any]
    skipped_files: dict[str, list[str]]
    reader_notes: dict[str, Any]
    per_tier: dict[str, dict[str, Any]]
    warnings: list[str]
    formulas: dict[str, str]
    sizing_basis: str | None
    length_match: dict[str, Any] | None
    interval: dict[str, Any] | None
    length_mismatch: list[dict[str, Any]]
    measured_usable_rps: float | Absent = ABSENT
    measured_c_max: float | Absent = ABSENT
    sizing_candidate: str | Absent = ABSENT
    sizing_note: str | Absent = ABSENT
    anchor: dict[str, Any] | Absent = ABSENT
    carried: dict[str, Any] | Absent = ABSENT
    candidates: dict[str, dict[str, Any]] | Absent = ABSENT
    anchor_rule: str | Absent = ABSENT

    SOURCE: ClassVar[str] = "metrics/operating_point.json"
    WHAT: ClassVar[str] = "the operating point"

    SIZING_KEYS: ClassVar[tuple[str, ...]] = (
        "measured_usable_rps",
        "measured_c_max",
        "sizing_candidate",
        "sizing_note",
        "anchor",
        "carried",
    )  # optional keys copied from the curve stage's top-level sizing block when it holds them


@dataclass
class FleetDoc(_Document):
    """metrics/fleet.json, key for key: the adopted fleets, the pooled and routed plans, and the rules applied.

    `fleet.plan` builds every key but the last two; the fleet stage adds `replay` and `replay_note` (the
    adopted plan replayed through the engine model) before it writes the file.
    """

    SOURCE: ClassVar[str] = "metrics/fleet.json"
    WHAT: ClassVar[str] = "the fleet document"

    per_tier: dict[str, dict[str, Any]]
    total_gpus: int
    gpus_by_type: dict[str, int]
    plan: str
    guardrails: dict[str, Any]
    routing: dict[str, Any]
    pooled: dict[str, Any]
    routed: dict[str, dict[str, Any]]
    synthetic_curve: bool
    schedule_rule: dict[str, Any]
    warnings: list[str]
    replay: dict[str, Any] | Absent | None = ABSENT
    replay_note: str | Absent | None = ABSENT


@dataclass
class TcoDoc(_Document):
    """metrics/tco.json, key for key: every candidate priced, the pooled vs routed comparison, the adopted plan.

    `chosen` is the adopted plan's id (`pooled`, `routed`, `cascade`; the same as `plan`) and `chosen_candidates`
    the deployment per tier; `monthly_usd` and the figures after it are computed once, from `totals`.
    """

    SOURCE: ClassVar[str] = "metrics/tco.json"
    WHAT: ClassVar[str] = "the TCO document"

    per_candidate: list[dict[str, Any]]
    allow_transferred: bool
    benchmark_next: list[dict[str, Any]]
    benchmark_next_rule: str
    formula: str
    prices_note: str
    price_basis: dict[str, Any]
    price_provider: str | None
    like_for_like: bool
    per_tier_candidates: dict[str, dict[str, Any]]
    pooled: dict[str, Any]
    routing: dict[str, Any]
    plan: str
    per_tier: dict[str, dict[str, Any]]
    totals: dict[str, Any] | None
    chosen: str
    chosen_candidates: dict[str, str]
    chosen_basis: str | None
    monthly_usd: float
    annual_usd: float
    usd_per_million_output_tokens: float
    utilization: float
    utilization_trap: bool
    runner_up: str | None
    saves_usd_per_month: float | None
    benchmark_next_reference: dict[str, Any]


@dataclass
class MemoryDoc(_Document):
    """metrics/memory.json, key for key (steps 2 and 4-6): the model per tier, each tier's targets, every
    candidate (GPU x weight x KV precision) and the rejected ones, the pick per tier, the models' shapes.

    Built by `candidate_plan.Plan.metrics`; the memory stage writes it.
    """

    SOURCE: ClassVar[str] = "metrics/memory.json"
    WHAT: ClassVar[str] = "the memory document"

    model: dict[str, str]
    targets: dict[str, dict[str, Any]]
    hardware_hint: dict[str, str]
    recommended: dict[str, str | None]
    formulas: dict[str, str]
    roofline_efficiency: dict[str, Any]
    candidates: dict[str, dict[str, Any]]
    rejected: dict[str, str]
    models: dict[str, dict[str, Any]]


@dataclass
class TiersDoc(_Document):
    """metrics/tiers.json, key for key (step 3): the pooled demand, each tier's demand with its model, and the
    simple-share skew measure (`routing.plan` builds it; the routing stage writes it; `routing.demands` reads
    `pooled` and `tiers` back as Demand objects)."""

    SOURCE: ClassVar[str] = "metrics/tiers.json"
    WHAT: ClassVar[str] = "the tiers document"

    mode: str
    tiers_from: str
    pooled: dict[str, Any]
    tiers: dict[str, dict[str, Any]]
    critical_tiers: list[str]
    params_b: dict[str, float]
    simple_share: dict[str, Any]
    formulas: dict[str, str]


@dataclass(kw_only=True)
class CalibrationDoc(_Document):
    """metrics/calibration.json, key for key (step 7b): the engine model's fits per deployment and pooled.

    The first seven keys are `pipeline.sim.calibrate.Calibration.as_dict`'s (`sizing calibrate --json`);
    `definitions` is absent when curve.source holds no sweep (`stages.calibrate.empty`: no deployment, `pooled`
    null). The calibrate stage adds the rest (`stages.calibrate.build`). Keyword-only: an optional key sits
    between required ones.
    """

    SOURCE: ClassVar[str] = "metrics/calibration.json"
    WHAT: ClassVar[str] = "the calibration document"

    predictor: str
    settings: dict[str, Any]
    terms: list[str]
    deployments: list[dict[str, Any]]
    pooled: dict[str, Any] | None
    warnings: list[str]
    definitions: dict[str, Any] | Absent = ABSENT
    source: str
    term_units: dict[str, str]
    calibrated_deployments: int
    targets: dict[str, Any]
    notes: list[str]


@dataclass(kw_only=True)
class WorkloadDoc(_Document):
    """metrics/workload.json, key for key (step 1): the log's lengths, rates, archetype, hours, sessions and
    prefix reuse, its tiers' own profiles, the ingest's exclusions, the validation summary and provenance.

    `pipeline.workload.profile_requests` builds the keys up to `warnings` (`batched_arrivals`, `sessions` and
    `prefix_reuse` only when the log has them), `compute_profile` adds `tiers` and `tiers_from` when the log has
    tiers, and `build_profile` the last four; the workload stage writes it."""

    SOURCE: ClassVar[str] = "metrics/workload.json"
    WHAT: ClassVar[str] = "the workload profile"

    requests: int
    span_s: float
    first_arrival_s: float
    clock: str
    timestamp_resolution_s: float | None
    arrival_tick_s: float | None
    input_tokens: dict[str, Any]
    output_tokens: dict[str, Any]
    context_tokens: dict[str, Any]
    rps: dict[str, Any]
    sizing_rate_key: str
    archetype: str
    archetype_basis: Any
    concurrency_littles_law: Any
    hourly: Any
    batched_arrivals: dict[str, Any] | Absent = ABSENT
    sessions: dict[str, Any] | Absent = ABSENT
    prefix_reuse: dict[str, Any] | Absent = ABSENT
    warnings: list[Any]
    tiers: dict[str, dict[str, Any]] | Absent = ABSENT
    tiers_from: str | Absent = ABSENT
    failed_requests_excluded: int
    duplicate_rows: int
    validation: dict[str, Any]
    provenance: dict[str, Any]


@dataclass
class ValidationDoc(_Document):
    """metrics/validation.json, key for key (step 13): the production window against the benchmark at the same
    rate, the re-characterize verdict and its reasons. `pipeline.validation.compare` builds a compared window's,
    `no_window` the same keys, empty, when validation.source is null; the validation stage writes it and the
    report stage (finance, scenarios) reads it."""

    SOURCE: ClassVar[str] = "metrics/validation.json"
    WHAT: ClassVar[str] = "the validation document"

    status: str
    recharacterize: bool
    reasons: list[str]
    metrics: dict[str, Any]
    revisit: list[str]
    synthetic: bool
    window: dict[str, Any] | None
    benchmark_at_rate: dict[str, Any] | None
    inputs: dict[str, Any]
    warnings: list[str]
    formulas: dict[str, Any]
