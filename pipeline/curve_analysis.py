"""Steps 7-10 together, the curve stage's logic: validate every sweep, find each curve's operating point,
pick the curve that sizes each fleet (curve_selection), overlay the roofline (curve_overlay), and recommend
KV/batching changes (curve_evidence); then put the engine-model candidates in the result (apply_candidates).

pipeline/stages/curve.py reads the files and writes metrics/operating_point.json (CurveResult.metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import curve as cv
from pipeline.benchmarks import LOAD_MODES, Sweep
from pipeline.curve_evidence import recommendations
from pipeline.curve_overlay import predicted_vs_measured
from pipeline.curve_result import CurveResult, Evaluated, Workload
from pipeline.curve_selection import deployment_of, fleet_curves, manifest_of, match_lengths, pick_curve, same_gpu
from pipeline.errors import InputError
from pipeline.layout import display_path

SECTIONS = ("curve", "recommend", "slo", "roofline", "parallelism")
MANIFEST_EXAMPLE = (
    "model: Llama-3.1-70B\ngpu: H100-SXM\ngpu_count: 4\ntp: 4\nweight_dtype: fp8\nkv_dtype: fp8\nengine: vllm\n"
    "engine_version: 0.11.0\ninput_tokens: 6000\noutput_tokens: 1000\nload_mode: closed"
)


def analyze(
    sweeps: list[Sweep],
    workload: Workload,
    s: cv.Settings,
    sections: dict[str, Any],
    root: Path,
    require_manifest: bool = True,
    validate: bool = True,
    tier_demands: dict[str, Any] | None = None,
) -> CurveResult:
    """Validate (great-expectations), compute every curve's operating point, pick one, overlay and recommend.

    The pooled pick uses sweeps whose manifest names no tier; each of `tier_demands` (routing.Demand,
    step 3) gets its own pick among the sweeps of its tier or, failing those, of its model.

    `validate=False` only for the step 8-10 notebooks, which recompute what the stage's first notebook
    (pipeline/stages/curve.py `run`) already validated and wrote.
    """
    from pipeline import quality

    frames = []
    sweep_of: dict[str, str] = {}
    replicas_of: dict[str, int] = {}
    warnings: list[str] = []
    validation = []
    for sw in sweeps:
        if sw.manifest is None:
            msg = (
                f"{display_path(sw.path, root)}: no manifest.yaml. Benchmark files rarely say which model, GPU, "
                f"TP and precision produced them, and sizing never guesses: add a manifest.yaml beside the results, "
                f"e.g.\n{MANIFEST_EXAMPLE}"
            )
            if require_manifest:
                raise InputError(msg)
            warnings.append(
                f"{sw.name}: no manifest: this operating point cannot size a fleet (model, GPU and TP unknown)"
            )
        else:
            expected = LOAD_MODES[sw.manifest["load_mode"]]
            kinds = {lv.row["load_kind"] for lv in sw.levels}
            if expected not in kinds:
                raise InputError(
                    f"{sw.manifest['file']}: load_mode {sw.manifest['load_mode']!r} but the result files hold "
                    f"{' and '.join(sorted(kinds))} levels; expected the manifest to describe these files"
                )
        for lv in sw.levels:
            if lv.row["goodput_rps"] is None and lv.requests is not None:
                g = cv.goodput(lv.requests, lv.row["rps"], s)
                if g is not None:
                    lv.row["goodput_rps"], lv.row["goodput_source"] = g, "per request vs the SLO"
        f = sw.frame()
        frames.append(f)
        for c in f["curve"].unique():
            sweep_of[c] = sw.name
            replicas_of[c] = int((sw.manifest or {}).get("replicas", 1))
    table = pd.concat(frames, ignore_index=True).sort_values(["curve", "load"], kind="stable").reset_index(drop=True)
    if validate:  # one suite run over every sweep: the examples name each offending file
        where = {display_path(sw.path, root) for sw in sweeps}
        label = where.pop() if len(where) == 1 else f"({len(sweeps)} sweeps: {', '.join(sw.name for sw in sweeps)})"
        validation.append(quality.validate_curve(table, label))
    points: dict[str, cv.OperatingPoint] = {}
    errors: dict[str, str] = {}
    lengths: dict[str, tuple[float | None, float | None]] = {}
    for c in sorted(table["curve"].unique()):
        df = table[table["curve"] == c]
        lengths[c] = cv.curve_lengths(df)
        try:
            points[c] = cv.operating_point(df, s, replicas_of[c])
        except InputError as exc:
            errors[c] = str(exc)
    tier_of = {sw.name: (sw.manifest or {}).get("tier") for sw in sweeps}
    pooled_curves = [c for c in sorted(table["curve"].unique()) if not tier_of[sweep_of[c]]]
    if not pooled_curves and tier_demands is None:  # `sizing curve PATH`: the files given are the question
        pooled_curves = sorted(table["curve"].unique())
    if not pooled_curves:
        raise InputError(
            "every sweep's manifest names a tier: the pooled fleet (all traffic on one deployment) needs at least one "
            "sweep without `tier:` to compare routing against"
        )
    evaluated = Evaluated(table, sweeps, sweep_of, points, errors, lengths)
    pick = pick_curve(pooled_curves, evaluated, workload, s)
    warnings.extend(pick.warnings)
    name, why, sized_by, capacities = pick.curve, pick.why, pick.sized_by, pick.capacities
    chosen = points[name]
    per_tier = {
        tier: tier_point(tier, d, evaluated, s, workload, sections, root)
        for tier, d in sorted((tier_demands or {}).items())
    }
    sweep = next(sw for sw in sweeps if sw.name == sweep_of[name])
    manifest = dict(sweep.manifest) if sweep.manifest else None
    overlay, note = (None, "no manifest: no roofline overlay")
    if manifest:
        overlay, note = predicted_vs_measured(table[table["curve"] == name], manifest, sections, root)
    recs = recommendations(table[table["curve"] == name], chosen, workload, manifest, sections, s, root)
    result = CurveResult(
        sweeps,
        table,
        points,
        errors,
        chosen,
        capacities,
        why,
        sized_by,
        manifest,
        sweep_of,
        overlay,
        note,
        recs,
        s,
        warnings,
        validation,
        per_tier,
        evaluated,
        pooled_curves,
        workload,
    )
    match_lengths(result, tier_demands or {})
    return result


def tier_point(
    tier: str, d: Any, ev: Evaluated, s: cv.Settings, whole: Workload, sections: dict[str, Any], root: Path
) -> dict[str, Any]:
    """One routing tier's operating point (its own sweeps, else untagged sweeps of its model) and its steps 8-9.

    The recommendations use the tier's own lengths, rate and curve; prefix reuse is the tier's own
    rows' when the log's profile has that tier, else the whole log's (a cascade tier sees all of it).
    """
    sweeps, sweep_of, points = ev.sweeps, ev.sweep_of, ev.points
    own, basis = fleet_curves(tier, d.model, ev)
    if not own:
        return {
            "model": d.model,
            "error": f"no benchmark sweep for model {d.model}: add one under curve.source with `model: {d.model}` "
            f"and `tier: {tier}` in its manifest.yaml",
        }
    w = Workload(
        d.input_tokens["p95"],
        d.output_tokens["p95"],
        d.input_tokens["p50"],
        d.input_tokens["mean"],
        d.output_tokens["mean"],
        d.rps["sizing_rate"],
        whole.tier_prefix_reuse.get(tier, whole.prefix_reuse),
    )
    reuse_source = (
        f"metrics/workload.json tiers.{tier}.prefix_reuse"
        if tier in whole.tier_prefix_reuse
        else f"metrics/workload.json prefix_reuse: the whole log, as tier {tier} is not a group of its rows"
    )
    try:
        pick = pick_curve(own, ev, w, s)
    except InputError as exc:
        return {"model": d.model, "error": str(exc).splitlines()[0]}
    op = points[pick.curve]
    sweep = next(sw for sw in sweeps if sw.name == sweep_of[pick.curve])
    m = dict(sweep.manifest or {})
    if m.get("model") != d.model:
        pick.warnings.append(f"the sweep benchmarked {m.get('model')}, but the tier is served by {d.model}")
    return {
        "model": d.model,
        "curve": pick.curve,
        "sweep": sweep.name,
        "basis": basis,
        "why": pick.why,
        "sized_by": pick.sized_by,
        "load_kind": op.load_kind,
        "c_max": round(op.c_max, 4),
        "usable_rps": round(op.usable_rps, 4),
        "knee": op.knee,
        "littles_law_gap": round(op.gap, 4),
        "gap_flag": op.gap_flag,
        "capacities": pick.capacities,
        "manifest": m,
        "synthetic": bool(m.get("synthetic", False)),
        "recommendations": recommendations(
            ev.table[ev.table["curve"] == pick.curve],
            op,
            w,
            m,
            sections,
            s,
            root,
            reuse_source,
            f"tier {tier}'s sizing rate (metrics/tiers.json)",
        ),
        "warnings": pick.warnings + op.warnings,
    }


def apply_candidates(
    result: CurveResult,
    candidates: dict[str, dict[str, Any]],
    demands: dict[str, Any],
    anchors: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Put op.candidates in the result, and each fleet's anchor (engine_curves.anchor) in per_tier[t] / the top
    level; where a fleet's sizing curve is beyond curve.max_length_mismatch, its usable RPS and C_max are the
    measured ones carried to the workload's p95 lengths with that deployment's engine model (engine_curves.carry:
    the `carried` block; the measured ones move to measured_usable_rps / measured_c_max), and the fleet's other
    candidates are anchored on the carried figure. Every length-mismatch message says how the figures relate."""
    result.candidates = candidates
    ev = result.evaluated
    for tier, a in sorted((anchors or {}).items()):
        if tier == "all":
            result.sizing["anchor"] = a
        elif tier in result.per_tier:
            result.per_tier[tier]["anchor"] = a
    for item in result.length_mismatch:
        tier, curve = item["tier"], item["curve"]
        if item["used_for_sizing"]:
            a = (anchors or {}).get(tier) or {}
            if a.get("factor") is not None:
                others = "".join(
                    f", {b} ones by {x['factor']:.3f}"
                    for b, x in sorted((a.get("by_basis") or {}).items())
                    if b != a.get("model_basis") and x.get("factor") is not None
                )
                item["message"] += (
                    f"; the measured curve at its lengths gives {a['measured_usable_rps']:.3f} req/s per instance, "
                    f"the engine model of the same deployment at the workload's lengths {a['model_usable_rps']:.3f}: "
                    f"every {a.get('model_basis')} model-based candidate is scaled by {a['factor']:.3f}{others}"
                )
            continue
        m = manifest_of(result, curve)
        ident = deployment_of(m) if m else None
        target = result.sizing if tier == "all" else result.per_tier[tier]
        cand = next(
            (
                (cid, e)
                for cid, e in sorted(candidates.items())
                if ident is not None
                and e["tier"] == tier
                and (e["model"], e["tp"], e["pp"], e["weights"], e["kv"]) == (ident[0], *ident[2:])
                and same_gpu(e["gpu"], ident[1])
                and e["basis"] != "measured"
            ),
            None,
        )
        point = ev.points[curve]
        carried = (cand[1].get("carried") or {}) if cand else {}
        if cand is None or cand[1].get("usable_rps") is None or carried.get("factor") is None:
            why = (
                carried.get("note")
                or (cand[1].get("basis_why") if cand else None)
                or "no engine-model candidate of this deployment"
            )
            note = (
                f"the measured curve cannot be carried to the workload's lengths with the engine model ({why}): "
                "the mismatched measured curve still sizes the fleet"
            )
            item["used_for_sizing"] = True
            item["message"] += f"; BUT {note}"
            target["sizing_note"] = note
            continue
        cid, e = cand
        item["message"] += (
            f"; carried like for like: {carried['measured_usable_rps']:.3f} req/s per instance measured x "
            f"{carried['model_at_workload_p95']:.3f} / {carried['model_at_sweep_lengths']:.3f} (the engine model of "
            f"the same deployment with every request at the workload's p95 vs at the sweep's lengths) = "
            f"{e['usable_rps']:.3f} (x{carried['factor']:.3f})"
        )
        target.update(
            sizing_basis=e["basis"],
            interval=e["interval"],
            measured_usable_rps=round(point.usable_rps, 4),
            measured_c_max=round(point.c_max, 4),
            usable_rps=e["usable_rps"],
            c_max=e["c_max"],
            sizing_candidate=cid,
            carried=carried,
        )
        if target.get("length_match"):
            target["length_match"]["used_for_sizing"] = False
        result.warnings.append(item["message"] + f" (candidate {cid}, basis {e['basis']})")
