"""Steps 7-10 as one stage: read every sweep, validate it, find each curve's operating point,
pick the curve that sizes the fleet, overlay the roofline, and recommend KV/batching changes.

The curve that matches the workload's p95 prompt and output lengths (within
curve.length_tolerance) sizes the fleet; with no match, the most conservative curve does, and
the output says which and why. A sweep whose manifest says `phase: final` (re-benchmarked after
optimizations) outranks baseline sweeps. Closed- and open-loop capacities are both kept.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import curve as cv
from pipeline import io, recommend
from pipeline.benchmarks import LOAD_MODES, Sweep
from pipeline.errors import InputError
from pipeline.layout import display_path

SECTIONS = ("curve", "recommend", "slo", "roofline", "parallelism")
MANIFEST_EXAMPLE = (
    "model: Llama-3.1-70B\ngpu: H100-SXM\ngpu_count: 4\ntp: 4\nweight_dtype: fp8\nkv_dtype: fp8\nengine: vllm\n"
    "engine_version: 0.11.0\ninput_tokens: 6000\noutput_tokens: 1000\nload_mode: closed"
)


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
        """metrics/operating_point.json (contract keys first)."""
        op = self.chosen
        used = set(op.percentile_used.values())
        sweep = next(s for s in self.sweeps if s.name == self.sweep_of[op.curve])
        files = sorted(set(self.table.loc[self.table["curve"] == op.curve, "file"]))
        out: dict[str, Any] = {
            "load_kind": op.load_kind,
            "c_max": round(self.sizing.get("c_max", op.c_max), 4),
            "usable_rps": round(self.sizing.get("usable_rps", op.usable_rps), 4),
            "knee": op.knee,
            "littles_law_ceiling_rps": round(op.ceiling_rps, 4),
            "littles_law_gap": round(op.gap, 4),
            "gap_flag": op.gap_flag,
            "slo": {"ttft_p99_ms": self.settings.ttft_p99_ms, "itl_p99_ms": self.settings.itl_p99_ms},
            "percentile_used": used.pop()
            if len(used) == 1
            else ", ".join(f"{k} {v}" for k, v in op.percentile_used.items()),
            "curve_source": {
                "curve": op.curve,
                "sweep": sweep.name,
                "tool": sweep.tool,
                "files": files,
                "synthetic": bool((self.manifest or {}).get("synthetic", False)),
                "why": self.selection,
            },
            "manifest": self.manifest,
            "recommendations": self.recommendations,
            "sized_by": self.sized_by,
            "capacities": self.capacities,
            "operating_point": io.rounded(op.as_dict()),
            "curves": {
                name: {
                    **(
                        {"error": self.errors[name]} if name in self.errors else io.rounded(self.points[name].as_dict())
                    ),
                    "basis": "measured",
                    "length_match": self.curve_matches.get(name),
                }
                for name in sorted(set(self.points) | set(self.errors))
            },
            "predicted_vs_measured": _overlay_summary(self.overlay, self.overlay_note),
            "skipped_files": {s.name: [f"{f}: {why}" for f, why in s.skipped] for s in self.sweeps if s.skipped},
            "reader_notes": {s.name: s.notes() for s in self.sweeps if s.notes()},
            "per_tier": self.per_tier,
            "warnings": self.warnings + op.warnings,
            "formulas": cv.FORMULAS,
            "sizing_basis": self.sizing.get("sizing_basis", "measured"),
            "length_match": self.sizing.get("length_match"),
            "interval": self.sizing.get("interval"),
            "length_mismatch": self.length_mismatch,
        }
        for key in ("measured_usable_rps", "measured_c_max", "sizing_candidate", "sizing_note", "anchor", "carried"):
            if key in self.sizing:
                out[key] = self.sizing[key]
        if self.candidates is not None:
            from pipeline.engine_curves import ANCHOR_RULE

            out["candidates"] = self.candidates
            out["anchor_rule"] = ANCHOR_RULE  # how the candidates are priced like for like (op.anchor, per_tier[t])
        return out


def _overlay_summary(overlay: pd.DataFrame | None, note: str) -> dict[str, Any]:
    if overlay is None or overlay.empty:
        return {"available": False, "note": note}
    out: dict[str, Any] = {"available": True, "note": note}
    for col in ("ttft_error", "itl_error", "rps_error"):
        v = overlay[col].dropna() if col in overlay else pd.Series(dtype=float)
        out[f"{col}_median_abs"] = round(float(v.abs().median()), 4) if not v.empty else None
    return out


def predicted_vs_measured(
    levels: pd.DataFrame, manifest: dict[str, Any], sections: dict[str, Any], root: Path
) -> tuple[pd.DataFrame | None, str]:
    """The roofline of the benchmarked deployment at every measured level, against the measured medians.

    Closed loop: concurrency per replica = load / replicas. Open loop: Little's law on the measured
    figures, (RPS / replicas) x mean E2E. Context during decode = mean prompt + half the mean output.
    The roofline has no queueing, so it is compared with the medians; error = predicted / measured - 1.
    """
    from pipeline import catalog
    from pipeline.roofline import Efficiency, for_deployment

    try:
        model = catalog.load_model(str(manifest["model"]), root)
        gpu = catalog.find_gpu(str(manifest["gpu"]), catalog.load_gpus(root))
    except InputError as exc:
        return None, f"no roofline overlay: {str(exc).splitlines()[0]}"
    tp, pp = int(manifest["tp"]), int(manifest.get("pp", 1))
    par = sections["parallelism"]
    rf = for_deployment(
        model,
        gpu,
        manifest["weight_dtype"],
        manifest["kv_dtype"],
        tp,
        pp,
        Efficiency.from_params(sections["roofline"]),
        par["allreduce_pcie"],
        par["allreduce_nvlink"],
    )
    if isinstance(rf, str):
        return None, f"no roofline overlay: {rf}"
    replicas = int(manifest.get("replicas", 1))
    rows = []
    for r in levels.itertuples():
        if not math.isfinite(r.load):
            continue
        inp = (
            r.input_tokens_mean
            if r.input_tokens_mean == r.input_tokens_mean and r.input_tokens_mean
            else r.nominal_input_tokens
        )
        out = (
            r.output_tokens_mean
            if r.output_tokens_mean == r.output_tokens_mean and r.output_tokens_mean
            else r.nominal_output_tokens
        )
        if not inp or not out:
            continue
        if r.load_kind == "concurrency":
            conc = r.load / replicas
        elif r.rps == r.rps and r.e2e_mean_ms == r.e2e_mean_ms and r.e2e_mean_ms:
            conc = r.rps / replicas * r.e2e_mean_ms / 1e3
        else:
            continue
        pt = rf.point(max(conc, 1.0), inp, inp + out / 2, out)
        pred_rps = pt["rps"] * replicas if r.load_kind == "concurrency" else None
        rows.append(
            {
                "curve": r.curve,
                "load": r.load,
                "concurrency_per_replica": conc,
                "measured_ttft_p50_ms": r.ttft_p50_ms,
                "predicted_ttft_ms": pt["ttft_ms"],
                "measured_itl_p50_ms": r.itl_p50_ms,
                "predicted_itl_ms": pt["itl_ms"],
                "measured_rps": r.rps,
                "predicted_rps": pred_rps,
            }
        )
    if not rows:
        return None, "no roofline overlay: the levels give no lengths"
    df = pd.DataFrame(rows)
    df["ttft_error"] = df["predicted_ttft_ms"] / df["measured_ttft_p50_ms"] - 1
    df["itl_error"] = df["predicted_itl_ms"] / df["measured_itl_p50_ms"] - 1
    df["rps_error"] = df["predicted_rps"].astype(float) / df["measured_rps"] - 1
    note = (
        f"roofline of {model.name} on {replicas} x TP{tp} {gpu.name}, {manifest['weight_dtype']} weights, "
        f"{manifest['kv_dtype']} KV (params roofline.*); compared with measured medians (the roofline has no queueing)"
    )
    return df, note


def _choose(
    kind_points: dict[str, cv.OperatingPoint],
    kind_curves: list[str],
    errors: dict[str, str],
    lengths: dict[str, tuple[float | None, float | None]],
    w: Workload,
    s: cv.Settings,
) -> tuple[str, str]:
    """(curve, why) within one load kind: the length match, else the most conservative."""
    if w.input_p95 and w.output_p95:
        scored = []
        for name in kind_curves:
            ok, dist = cv.length_match(*lengths[name], w.input_p95, w.output_p95, s.length_tolerance)
            if ok:
                scored.append((dist, name))
        if scored:
            name = min(scored)[1]
            if name in errors:
                raise InputError(errors[name])
            cin, cout = lengths[name]
            return name, (
                f"matches the workload's p95 lengths ({w.input_p95:.0f} in / {w.output_p95:.0f} out) within "
                f"{s.length_tolerance:.0%}: curve lengths {cin:.0f} / {cout:.0f}"
            )
    usable = [n for n in kind_curves if n in kind_points]
    if not usable:
        raise InputError(errors[kind_curves[0]])
    name = min(usable, key=lambda n: (kind_points[n].usable_rps, n))
    skipped = [n for n in kind_curves if n in errors]
    why = (
        f"no curve matches the workload's p95 lengths within {s.length_tolerance:.0%}"
        if w.input_p95
        else "no workload lengths given (--input-tokens/--output-tokens)"
    )
    why += ": the most conservative curve (lowest usable RPS) sizes the fleet"
    if skipped:
        why += f"; {len(skipped)} curve(s) could not be evaluated and are listed under curves"
    return name, why


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
    pick = _pick(pooled_curves, evaluated, workload, s)
    warnings.extend(pick.warnings)
    name, why, sized_by, capacities = pick.curve, pick.why, pick.sized_by, pick.capacities
    chosen = points[name]
    per_tier = {
        tier: _tier_point(tier, d, evaluated, s, workload, sections, root)
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


def _fleet_lengths(result: CurveResult, tier: str, demands: dict[str, Any]) -> tuple[float | None, float | None]:
    """The p95 input and output lengths of a fleet (`all`: the pooled workload; else the tier's demand)."""
    if tier == "all":
        return result.workload.input_p95 if result.workload else None, (
            result.workload.output_p95 if result.workload else None
        )
    d = demands[tier]
    return d.input_tokens.get("p95"), d.output_tokens.get("p95")


def match_lengths(result: CurveResult, demands: dict[str, Any]) -> None:
    """LengthMatch of every curve (against the fleet that picks it, else the pooled workload), of each fleet's
    sizing curve (top level and per_tier), and the loud list of mismatches beyond curve.length_tolerance."""
    from pipeline import engine_curves as ec

    s = result.settings
    ev = result.evaluated
    picked_by: dict[str, str] = {}
    for tier, pt in sorted(result.per_tier.items()):
        if "curve" in pt:
            picked_by.setdefault(pt["curve"], tier)
    result.curve_matches = {}
    for name in sorted(set(result.points) | set(result.errors)):
        tier = picked_by.get(name, "all")
        w_in, w_out = _fleet_lengths(result, tier, demands)
        result.curve_matches[name] = ec.length_match(
            *ev.lengths[name], w_in, w_out, s.length_tolerance, s.max_length_mismatch
        )
    fleets = [("all", result.chosen.curve, None)] + [
        (t, pt["curve"], pt) for t, pt in sorted(result.per_tier.items()) if "curve" in pt
    ]
    for pt in result.per_tier.values():
        if "curve" not in pt:  # no sweep for the tier: nothing measured sizes it (its candidates are predicted)
            pt.update(sizing_basis=None, length_match=None, interval=None)
    result.length_mismatch = []
    for tier, curve, pt in fleets:
        w_in, w_out = _fleet_lengths(result, tier, demands)
        lm = ec.length_match(*ev.lengths[curve], w_in, w_out, s.length_tolerance, s.max_length_mismatch)
        info = {"sizing_basis": "measured", "length_match": lm, "interval": None}
        if pt is None:
            result.sizing.update(info)
        else:
            pt.update(info)
        if lm is not None and not lm["within_tolerance"]:
            msg = ec.mismatch_message(tier, curve, lm)
            result.length_mismatch.append(
                {
                    "tier": tier,
                    "curve": curve,
                    "input_ratio": lm["input_ratio"],
                    "output_ratio": lm["output_ratio"],
                    "within_tolerance": False,
                    "used_for_sizing": lm["used_for_sizing"],
                    "message": msg,
                }
            )


def deployment_of(manifest: dict[str, Any], gpus: dict[str, Any] | None = None) -> tuple[str, str, int, int, str, str]:
    """(model, gpu, tp, pp, weights, kv) of a sweep's manifest, the GPU by its catalog name when known."""
    from pipeline import catalog

    gpu = str(manifest.get("gpu"))
    if gpus:
        with contextlib.suppress(InputError):
            gpu = catalog.find_gpu(gpu, gpus).name
    return (
        str(manifest.get("model")),
        gpu,
        int(manifest.get("tp") or 1),
        int(manifest.get("pp") or 1),
        str(manifest.get("weight_dtype")),
        str(manifest.get("kv_dtype")),
    )


def fleet_measured(
    result: CurveResult, tier: str, model: str, demands: dict[str, Any], gpus: dict[str, Any] | None = None
) -> list[Any]:
    """Every benchmarked deployment among a fleet's sweeps (engine_curves.Measured): the fleet's sizing curve for
    its deployment, else final_curve's pick among that deployment's curves at the fleet's lengths."""
    from pipeline import engine_curves as ec

    ev = result.evaluated
    if ev is None:
        return []
    if tier == "all":
        curves, sizing = list(result.pooled_curves), result.chosen.curve
    else:
        curves, _ = _fleet_curves(tier, model, ev)
        sizing = (result.per_tier.get(tier) or {}).get("curve")
    manifests = {sw.name: sw.manifest or {} for sw in ev.sweeps}
    groups: dict[tuple[str, str, int, int, str, str], list[str]] = {}
    for c in curves:
        m = manifests[ev.sweep_of[c]]
        if m:
            groups.setdefault(deployment_of(m, gpus), []).append(c)
    w_in, w_out = _fleet_lengths(result, tier, demands)
    out = []
    for ident, cs in sorted(groups.items()):
        if sizing in cs:
            name, is_sizing = sizing, True
        else:
            try:
                name = _pick(cs, ev, Workload(w_in, w_out), result.settings).curve
            except InputError:
                name = cs[0]
            is_sizing = False
        m = manifests[ev.sweep_of[name]]
        tp, pp = ident[2], ident[3]
        replicas = max(int(m.get("gpu_count") or tp * pp) // (tp * pp), 1)
        out.append(
            ec.Measured(
                *ident[:2],
                tp,
                pp,
                ident[4],
                ident[5],
                curve=name,
                point=ev.points.get(name),
                error=ev.errors.get(name),
                levels=ev.table[ev.table["curve"] == name],
                curve_input_tokens=ev.lengths[name][0],
                curve_output_tokens=ev.lengths[name][1],
                replicas=int(m.get("replicas") or replicas),
                sizing=is_sizing,
            )
        )
    return out


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
                and _same_gpu(e["gpu"], ident[1])
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


def _same_gpu(a: str, b: str) -> bool:
    """Same GPU name, case and punctuation ignored (a manifest may spell the catalog's name differently)."""
    return "".join(ch for ch in a.lower() if ch.isalnum()) == "".join(ch for ch in b.lower() if ch.isalnum())


def manifest_of(result: CurveResult, curve: str) -> dict[str, Any]:
    """The manifest of the sweep a curve belongs to ({} without one)."""
    sweep = result.sweep_of.get(curve)
    return next((dict(sw.manifest or {}) for sw in result.sweeps if sw.name == sweep), {})


@dataclass
class Pick:
    """The curve that sizes one fleet, why, which loop, and both loops' capacities."""

    curve: str
    why: str
    sized_by: str
    capacities: dict[str, dict[str, Any]]
    warnings: list[str]


@dataclass
class Evaluated:
    """Every curve of every sweep, evaluated once: the levels, each curve's sweep, point or error, and lengths."""

    table: pd.DataFrame
    sweeps: list[Sweep]
    sweep_of: dict[str, str]
    points: dict[str, cv.OperatingPoint]
    errors: dict[str, str]
    lengths: dict[str, tuple[float | None, float | None]]


def _pick(curves: list[str], ev: Evaluated, workload: Workload, s: cv.Settings) -> Pick:
    """Among `curves`: final-phase sweeps first, the length match per loop, then the loop that sizes (curve.sizing_loop)."""
    table, sweeps, sweep_of, points, errors, lengths = (
        ev.table,
        ev.sweeps,
        ev.sweep_of,
        ev.points,
        ev.errors,
        ev.lengths,
    )
    phases = {sw.name: (sw.manifest or {}).get("phase", "baseline") for sw in sweeps}
    has_final = any(phases[sweep_of[c]] == "final" for c in curves)
    pool = [c for c in curves if not has_final or phases[sweep_of[c]] == "final"]
    by_kind: dict[str, list[str]] = {}
    for c in pool:
        kind = str(table.loc[table["curve"] == c, "load_kind"].iloc[0])
        by_kind.setdefault(kind, []).append(c)
    picks: dict[str, tuple[str, str]] = {}
    failed: dict[str, InputError] = {}
    for k, cs in sorted(by_kind.items()):
        try:
            picks[k] = _choose(points, cs, errors, lengths, workload, s)
        except InputError as exc:
            failed[k] = exc
    if not picks:
        raise next(iter(failed.values()))
    warnings = [  # e.g. a saturation-only run beside a closed-loop sweep: not a sweep of its own
        f"no usable {'closed' if k == 'concurrency' else 'open'}-loop curve: {str(exc).splitlines()[0]}"
        for k, exc in failed.items()
    ]
    capacities = {
        k: {
            "curve": name,
            "why": why,
            "c_max": round(points[name].c_max, 4),
            "usable_rps": round(points[name].usable_rps, 4),
        }
        for k, (name, why) in picks.items()
    }
    if len(picks) == 2:
        if s.sizing_loop == "conservative":
            kind = min(picks, key=lambda k: points[picks[k][0]].usable_rps)
            sized_by = f"{'closed' if kind == 'concurrency' else 'open'} loop: the more conservative of the two capacities (curve.sizing_loop = conservative)"
        else:
            kind = "concurrency" if s.sizing_loop == "closed" else "request_rate"
            sized_by = f"{s.sizing_loop} loop (curve.sizing_loop = {s.sizing_loop})"
    else:
        kind = next(iter(picks))
        sized_by = f"{'closed' if kind == 'concurrency' else 'open'} loop: the only kind of sweep given"
    name, why = picks[kind]
    if has_final:
        why += "; only sweeps with phase: final are considered (re-benchmarked after optimizations)"
    return Pick(name, why, sized_by, capacities, warnings)


def _fleet_curves(tier: str, model: str, ev: Evaluated) -> tuple[list[str], str]:
    """A tier's curves (sweeps tagged with it, else untagged sweeps of its model) and the rule that chose them."""
    manifests = {sw.name: sw.manifest or {} for sw in ev.sweeps}
    all_curves = sorted(ev.table["curve"].unique())
    own = [c for c in all_curves if manifests[ev.sweep_of[c]].get("tier") == tier]
    if own:
        return own, f"sweeps whose manifest says tier: {tier}"
    own = [
        c
        for c in all_curves
        if not manifests[ev.sweep_of[c]].get("tier") and manifests[ev.sweep_of[c]].get("model") == model
    ]
    return own, f"no sweep names tier {tier}: untagged sweeps of its model {model}"


def _tier_point(
    tier: str, d: Any, ev: Evaluated, s: cv.Settings, whole: Workload, sections: dict[str, Any], root: Path
) -> dict[str, Any]:
    """One routing tier's operating point (its own sweeps, else untagged sweeps of its model) and its steps 8-9.

    The recommendations use the tier's own lengths, rate and curve; prefix reuse is the tier's own
    rows' when the log's profile has that tier, else the whole log's (a cascade tier sees all of it).
    """
    sweeps, sweep_of, points = ev.sweeps, ev.sweep_of, ev.points
    own, basis = _fleet_curves(tier, d.model, ev)
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
        pick = _pick(own, ev, w, s)
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


def recommendations(
    levels: pd.DataFrame,
    op: cv.OperatingPoint,
    w: Workload,
    manifest: dict[str, Any] | None,
    sections: dict[str, Any],
    s: cv.Settings,
    root: Path,
    reuse_source: str = "metrics/workload.json prefix_reuse",
    rate_source: str = "the workload's sizing rate",
) -> list[dict[str, Any]]:
    """Steps 8-9 from the workload profile and the chosen curve (the sources name where reuse and rate came from)."""
    r = sections["recommend"]
    rate = w.sizing_rps if w.sizing_rps else op.usable_rps
    instances = max(1, math.ceil(rate / op.usable_rps)) if op.usable_rps > 0 else 1
    finite = levels[levels["load"].astype(float) < math.inf].sort_values("load")
    upto = finite[finite["load"] <= max(op.c_max, float(finite["load"].iloc[0]))]
    spike = spike_at = None
    if upto["itl_p99_ms"].notna().all() and upto["itl_p50_ms"].notna().all() and not upto.empty:
        ratios = upto["itl_p99_ms"] / upto["itl_p50_ms"]
        i = int(ratios.to_numpy().argmax())
        spike, spike_at = float(ratios.iloc[i]), float(upto["load"].iloc[i])
    in_ratio = (w.input_p95 / w.input_p50) if w.input_p95 and w.input_p50 else 1.0
    conc = op.c_max / op.replicas if op.load_kind == "concurrency" else op.usable_rps * op.e2e_s_at_c_max
    kv_per_token = None
    if manifest:
        from pipeline import catalog, memory

        try:
            model = catalog.load_model(str(manifest["model"]), root)
            kv_per_token = memory.kv_shape(model, manifest["kv_dtype"]).all_layers_bytes_per_token
        except InputError:
            kv_per_token = None
    low = finite.iloc[0]
    mean_in = w.input_mean or op.input_tokens or 0.0
    mean_out = w.output_mean or op.output_tokens or 0.0
    prefill_tps = (
        low["input_tokens_mean"] / (low["ttft_p50_ms"] / 1e3)
        if pd.notna(low["ttft_p50_ms"]) and pd.notna(low["input_tokens_mean"]) and low["ttft_p50_ms"] > 0
        else None
    )
    out_tps = cv.interp(op.c_max, finite["load"].astype(float).tolist(), finite["output_tps"].astype(float).tolist())
    decode_tps = out_tps / op.replicas if out_tps else None
    return [
        recommend.prefix_caching(w.prefix_reuse, instances, r["prefix_reuse_min"], reuse_source),
        recommend.chunked_prefill(
            spike, spike_at, in_ratio, r["itl_spike_ratio"], r["mixed_input_ratio"], r["chunk_tokens"]
        ),
        recommend.speculative_decoding(conc, r["spec_decode_max_concurrency"], r["spec_decode_min_acceptance"]),
        recommend.pd_disaggregation(
            rate,
            mean_in,
            mean_out,
            prefill_tps,
            decode_tps,
            kv_per_token,
            r["kv_transfer_gbs"],
            r["pd_min_prompt_tokens"],
            s.ttft_p99_ms,
            instances,
            basis=f"prefill tok/s = mean prompt / TTFT p50 at the lowest load ({low['load']:g}); decode tok/s = "
            f"output tok/s at C_max / {op.replicas} replica(s); rate = {rate_source}",
        ),
        recommend.kv_offload(
            r["batch_work"], kv_per_token * (mean_in + mean_out) if kv_per_token else None, r["offload_pcie_gbs"]
        ),
    ]


def overlays(result: CurveResult, sec: dict[str, Any], root: Path) -> dict[str, pd.DataFrame | None]:
    """Per curve, the roofline of its sweep's benchmarked deployment at each measured level (predicted_vs_measured).

    `sec`: the validated params sections (SECTIONS).
    """
    manifests = {s.name: s.manifest for s in result.sweeps}
    out: dict[str, pd.DataFrame | None] = {}
    for curve in sorted(result.table["curve"].unique()):
        manifest = manifests.get(result.sweep_of.get(curve, ""))
        levels = result.table[result.table["curve"] == curve]
        out[curve] = predicted_vs_measured(levels, dict(manifest), sec, root)[0] if manifest else None
    return out
