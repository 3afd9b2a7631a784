"""Step 7's selection: which curve sizes each fleet, and how its lengths match the fleet's workload.

Within one load kind the curve that matches the workload's p95 prompt and output lengths (within
curve.length_tolerance) sizes the fleet; with no match, the most conservative curve does, and the result says
which and why. A sweep whose manifest says `phase: final` (re-benchmarked after optimizations) outranks baseline
sweeps; curve.sizing_loop picks between the closed- and open-loop capacities, both kept. Also each fleet's
curves and benchmarked deployments (fleet_measured, for the engine-model candidates) and every curve's length
match (match_lengths). Pure: nothing is read or written here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from pipeline import curve as cv
from pipeline.curve_result import CurveResult, Evaluated, Workload
from pipeline.errors import InputError


@dataclass
class Pick:
    """The curve that sizes one fleet, why, which loop, and both loops' capacities."""

    curve: str
    why: str
    sized_by: str
    capacities: dict[str, dict[str, Any]]
    warnings: list[str]


def choose_in_kind(
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


def pick_curve(curves: list[str], ev: Evaluated, workload: Workload, s: cv.Settings) -> Pick:
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
            picks[k] = choose_in_kind(points, cs, errors, lengths, workload, s)
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


def fleet_curves(tier: str, model: str, ev: Evaluated) -> tuple[list[str], str]:
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


def fleet_lengths(result: CurveResult, tier: str, demands: dict[str, Any]) -> tuple[float | None, float | None]:
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
        w_in, w_out = fleet_lengths(result, tier, demands)
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
        w_in, w_out = fleet_lengths(result, tier, demands)
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
        curves, _ = fleet_curves(tier, model, ev)
        sizing = (result.per_tier.get(tier) or {}).get("curve")
    manifests = {sw.name: sw.manifest or {} for sw in ev.sweeps}
    groups: dict[tuple[str, str, int, int, str, str], list[str]] = {}
    for c in curves:
        m = manifests[ev.sweep_of[c]]
        if m:
            groups.setdefault(deployment_of(m, gpus), []).append(c)
    w_in, w_out = fleet_lengths(result, tier, demands)
    out = []
    for ident, cs in sorted(groups.items()):
        if sizing in cs:
            name, is_sizing = sizing, True
        else:
            try:
                name = pick_curve(cs, ev, Workload(w_in, w_out), result.settings).curve
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


def same_gpu(a: str, b: str) -> bool:
    """Same GPU name, case and punctuation ignored (a manifest may spell the catalog's name differently)."""
    return "".join(ch for ch in a.lower() if ch.isalnum()) == "".join(ch for ch in b.lower() if ch.isalnum())


def manifest_of(result: CurveResult, curve: str) -> dict[str, Any]:
    """The manifest of the sweep a curve belongs to ({} without one)."""
    sweep = result.sweep_of.get(curve)
    return next((dict(sw.manifest or {}) for sw in result.sweeps if sw.name == sweep), {})
