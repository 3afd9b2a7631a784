"""The calibrate stage (step 7b): every sweep of curve.source -> metrics/calibration.json.

The engine model's coefficients (b0..b5 of `pipeline.sim.cost.TERMS`, plus the per-request overhead h)
fitted per deployment (the manifest identity: several sweeps of one deployment are fitted together) and
pooled over all of them with a scale per GPU family, by `pipeline.sim.calibrate`, with the residual
tables (in-sample, leave-one-level-out, leave-one-deployment-out) and a `targets` block that compares
the held-out figures with issue 13's targets. The document is `sizing calibrate --json`'s, plus the
units of the terms, the sweeps and levels each deployment was fitted on, and the targets; floats are
rounded to 6 significant digits and nothing in it depends on the clock, so the same sweeps give the
same bytes. A deployment whose levels cannot identify its coefficients falls back to the pooled ones
and says so (its `warning`); a missing manifest, a contradicting one or a NaN is an InputError naming
the file, raised before anything is written. A curve.source folder with no sweep at all gives a
document with no deployments and `pooled` null, and says so in `warnings` (add sweeps and rerun).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from pipeline import io, params, paths
from pipeline.contracts import CalibrationDoc
from pipeline.errors import InputError
from pipeline.layout import Layout
from pipeline.stages.no_sweep import no_sweep

SECTIONS = ("calibration", "curve", "roofline")  # curve: only `source` (dvc.yaml tracks curve.source alone)
# roofline: the prior the fits are pulled toward (b1 = 1 / prefill_mfu, b2 = b3 = 1 / bandwidth_efficiency)
CALIBRATION_JSON = "metrics/calibration.json"
DIGITS = 6  # significant digits of every float in the document

TERM_UNITS = {
    "fixed_s": "b0: seconds per iteration",
    "flops": "b1: x (FLOPs / peak FLOPS) seconds; 1 / MFU (roofline prior 1 / roofline.prefill_mfu)",
    "weight_bytes": "b2: x (weight bytes / HBM bandwidth) seconds; 1 / bandwidth efficiency",
    "kv_bytes": "b3: x (KV bytes read / HBM bandwidth) seconds; 1 / bandwidth efficiency",
    "seqs": "b4: seconds per sequence in the batch",
    "allreduce": "b5: x TP all-reduce seconds (bytes over link bandwidth + per-call latency)",
    "request_overhead_s": "h: seconds per request outside the engine (HTTP, tokenization, client), on TTFT and E2E",
}

# issue 13, "How good it must be": median absolute relative error of the held-out predictions
TARGETS: dict[str, dict[str, float]] = {
    "leave_one_level_out": {"throughput": 0.05, "itl_mean": 0.05, "ttft": 0.10},
    "leave_one_deployment_out": {"throughput": 0.15, "itl_mean": 0.15, "ttft": 0.15},
}
TARGET_NAMES = {"leave_one_level_out": "calibrated", "leave_one_deployment_out": "transferred"}


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in SECTIONS}


def significant(value: Any, digits: int = DIGITS) -> Any:
    """Floats rounded to `digits` significant digits, recursively (tiny coefficients such as b0 ~ 1e-6 survive)."""
    if isinstance(value, dict):
        return {k: significant(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [significant(v, digits) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0.0:
            return value if math.isfinite(value) else None
        return float(f"{value:.{digits}g}")
    return value


def _median(residuals: dict[str, Any], kind: str, metric: str) -> tuple[int, float | None]:
    s = (residuals.get(kind) or {}).get(metric) or {}
    n = int(s.get("n") or 0)
    return n, (s.get("median_abs_rel") if n else None)


def targets(pooled: dict[str, Any], per_deployment: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The held-out residuals against issue 13's targets: one row per (kind, metric, scope), pooled first.

    `pooled` and each of `per_deployment` are residual tables (kind -> metric -> {n, median_abs_rel, ...}).
    `met` is None where the kind was not measured (a single deployment has no leave-one-deployment-out).
    """
    rows = []
    scopes = [("pooled", pooled), *sorted(per_deployment.items())]
    for kind, metrics in TARGETS.items():
        for metric, target in metrics.items():
            for scope, res in scopes:
                n, value = _median(res, kind, metric)
                met = None if value is None else bool(value <= target)
                rows.append(
                    {
                        "kind": kind,
                        "basis": TARGET_NAMES[kind],
                        "metric": metric,
                        "scope": scope,
                        "n": n,
                        "median_abs_rel": value,
                        "target_median_abs_rel": target,
                        "met": met,
                        "missed_by": None if met is not False else value - target,  # type: ignore[operator]
                    }
                )
    return {
        "source": "issue 13 'How good it must be': median absolute relative error, held out",
        "met": sum(r["met"] is True for r in rows),
        "missed": sum(r["met"] is False for r in rows),
        "not_measured": sum(r["met"] is None for r in rows),
        "rows": rows,
    }


BAND_METRICS = ("throughput", "itl_mean")  # the metrics issue 14's bands on C_max / usable RPS take


def band_notes(deployments: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """Where a deployment's fit (the one its curves use) has an in-sample median residual outside its own
    leave-one-level-out p10..p90 band on throughput or ITL, while those refits are step 1 only (lolo_passes <= 1):
    then the band describes the step-1 fits, not the refined one, and understates the curve's error there. One
    note per (deployment, metric), in the order given."""
    lp = settings.get("lolo_passes")
    if lp is None or lp > 1:
        return []
    out = []
    for d in deployments:
        if d.get("basis") != "calibrated":
            continue
        res = d.get("residuals") or {}
        for metric in BAND_METRICS:
            ins = (res.get("in_sample") or {}).get(metric) or {}
            lolo = (res.get("leave_one_level_out") or {}).get(metric) or {}
            x, lo, hi = ins.get("p50_rel"), lolo.get("p10_rel"), lolo.get("p90_rel")
            if None in (x, lo, hi) or lo <= x <= hi:
                continue
            out.append(
                f"{d['key']}: the fit's in-sample median {metric} residual {100 * x:+.1f}% lies outside its "
                f"leave-one-level-out band {100 * lo:+.1f}..{100 * hi:+.1f}% (step-1 refits, calibration.lolo_passes "
                f"{lp}): the band describes the step-1 fits and understates the refined fit's {metric} error"
            )
    return out


def _relative(name: str, root: Path | None) -> str:
    p = Path(name)
    if root is not None and p.is_absolute() and p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    return p.as_posix()


def build(cal: Any, source: str, root: Path | None = None) -> dict[str, Any]:
    """metrics/calibration.json from a `pipeline.sim.calibrate.Calibration` (pure: reads and writes nothing).

    The Calibration's own document (`as_dict`, what `sizing calibrate --json` prints) with, per deployment,
    the sweeps (folders) and the levels it was fitted on and its warnings; the units of the terms; the
    source; and the targets block. Deployments in key order, floats to 6 significant digits.
    """
    doc = cal.as_dict()
    levels = {ds.deployment.key: [_relative(lv.name, root) for lv in ds.levels] for ds in cal.sets}
    by_key = {ds.deployment.key: ds for ds in cal.sets}
    cached = {ds.deployment.key: sum(lv.ttft_below_physics for lv in ds.levels) for ds in cal.sets}
    deployments = []
    for d in sorted(doc["deployments"], key=lambda d: d["key"]):
        files = sorted(_relative(f, root) for f in d.get("files") or [])
        warnings = [d["warning"]] if d.get("warning") else []
        if cached.get(d["key"]):
            warnings.append(
                f"{cached[d['key']]} of {len(levels.get(d['key'], []))} levels have a TTFT below a cold prefill at peak "
                "FLOPs (unstated prefix-cache hits likely): their TTFT residuals judge the measurement as much as the "
                "model (each level's notes)"
            )
        unheld = [
            r["first_round"]
            for r in d.get("level_residuals") or []
            if (r.get("first_round") or {}).get("file_holds_it") is False
        ]
        replayed = sum(lv.first_round_unmeasured for lv in by_key[d["key"]].levels) if d["key"] in by_key else 0
        worst = max(unheld, key=lambda t: t["ttft_p99_ms"] / t["file_ttft_p99_ms"]) if unheld else None
        ratio = f"{worst['ttft_p99_ms'] / worst['file_ttft_p99_ms']:.1f}x" if worst else ""
        if replayed:
            gap = (
                f"; at the fit, the replay's TTFT p99 with that round would be up to {ratio} the file's"
                if worst
                else ""
            )
            warnings.append(
                f"{replayed} of {len(levels.get(d['key'], []))} levels replayed without their first round: their "
                "files' TTFT p99 lacks the tail of every client's first request sent at t = 0 (as vllm bench serve "
                f"--max-concurrency starts), so those runs likely started after a warm-up or a ramp{gap} (each "
                "level's notes and first_round)"
            )
        elif unheld:
            warnings.append(
                f"{len(unheld)} of {len(levels.get(d['key'], []))} levels: the replay's TTFT p99 is set by its first "
                "round (every client's first request sent at t = 0, as vllm bench serve --max-concurrency starts) "
                f"and the file's is nearer the p99 without it (up to {ratio} below the replay's): those runs likely "
                "started after a warm-up or a ramp, and their TTFT residuals judge how the run started as much as "
                "the model (each level's first_round; calibration.first_round_replay replays them without it)"
            )
        deployments.append(
            {
                **d,
                "files": files,
                "sweeps": sorted({Path(f).parent.as_posix() for f in files}),
                "levels_used": levels.get(d["key"], []),
                "warnings": warnings,
            }
        )
    residuals = {d["key"]: d.get("residuals") or {} for d in deployments}
    settings = dict(doc.get("settings") or {})
    notes = []
    if settings.get("lolo_passes") is not None and settings["lolo_passes"] <= 1:
        notes.append(
            "leave-one-level-out refits are step 1 (the NNLS on per-level aggregates) without the simulator "
            "refinement (calibration.lolo_passes <= 1), for time; `sizing calibrate` refines them too"
        )
    notes += band_notes(deployments, settings)
    out = {
        **doc,
        "source": source,
        "settings": settings,
        "term_units": TERM_UNITS,
        "deployments": deployments,
        "calibrated_deployments": sum(d["basis"] == "calibrated" for d in deployments),
        "targets": targets((doc.get("pooled") or {}).get("residuals") or {}, residuals),
        "notes": notes,
    }
    return CalibrationDoc.from_dict(significant(io.clean_json(out))).to_dict()  # contracts: its keys, in order


def compute(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """The document without writing anything: read and check every sweep, fit, measure the residuals."""
    from pipeline.sim import calibrate

    layout = layout or Layout(paths.ROOT)
    sec = validated(sections)
    source = sec["curve"]["source"]
    folder = Path(source) if Path(source).is_absolute() else layout.root / source
    if not folder.exists():
        raise InputError(f"{source}: benchmarks folder not found (curve.source); put one folder per sweep there")
    c = sec["calibration"]
    if no_sweep(folder):
        return empty(source, c)
    # from the root: the sweeps' level names are root-relative (the same bytes in any checkout), and
    # pipeline.sim.calibrate reopens a result file by that name for its per-request lengths
    with contextlib.chdir(layout.root):
        cal = calibrate.calibrate(
            [folder],
            None,
            layout.root,
            max_nfev=int(c["refine_passes"]),
            lolo_nfev=int(c["lolo_passes"]),
            roofline=sec["roofline"],
            pool=str(c["pool"]),
            refine_pool=bool(c["refine_pool"]),
            first_round_replay=bool(c["first_round_replay"]),
        )
    return build(cal, source, layout.root)


NO_SWEEP_WARNING = (
    "{source}: no benchmark sweep at all (curve.source holds no manifest and no result file): no deployment is "
    "calibrated and there is no pooled fit, so every candidate's curve is the roofline prior; add one folder per "
    "sweep (manifest.yaml and the tool's result files) and rerun (dvc repro). The curve stage stops and writes "
    "the benchmark plan (data/benchmark_plan/): what to benchmark first"
)


def empty(source: str, settings: dict[str, Any]) -> dict[str, Any]:
    """metrics/calibration.json when curve.source holds no sweep at all: no deployments, `pooled` null, the
    warning saying so, the targets all not measured (pure; the same bytes every time)."""
    from pipeline.sim.cost import STEP_FORM, TERMS

    out = {
        "predictor": "simulator (pipeline/sim/engine.py)",
        "settings": {
            "refine_passes": int(settings["refine_passes"]),
            "lolo_passes": int(settings["lolo_passes"]),
            "pool": str(settings["pool"]),
            "first_round_replay": bool(settings.get("first_round_replay", False)),
            "step_form": STEP_FORM,
        },
        "terms": list(TERMS),
        "deployments": [],
        "pooled": None,
        "warnings": [NO_SWEEP_WARNING.format(source=source)],
        "source": source,
        "term_units": TERM_UNITS,
        "calibrated_deployments": 0,
        "targets": targets({}, {}),
        "notes": [],
    }
    return CalibrationDoc.from_dict(significant(io.clean_json(out))).to_dict()  # contracts: its keys, in order


def run(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """The stage: compute, then write metrics/calibration.json atomically; returns the document."""
    layout = layout or Layout(paths.ROOT)
    doc = compute(sections, layout)
    io.write_json(layout.metrics_json("calibration"), doc)
    return doc


def read(layout: Layout | None = None) -> dict[str, Any]:
    """metrics/calibration.json as the stage wrote it (the notebook shows it; a missing file says to run dvc repro)."""
    layout = layout or Layout(paths.ROOT)
    return io.read_metrics(layout.root, ("calibration",))["calibration"]
