"""Risk flags of the adopted plan, in plain words, ranked by their cost impact (the finance first screen).

Each flag reads keys other stages wrote (the ones issue 14 adds to metrics/operating_point.json, tco.json and
fleet.json) and never recomputes them; a key that is absent (an older metrics file) simply raises no flag. The cost impact is an
order-of-magnitude estimate in $ per month, so that the three that matter most come first:

| flag | raised when | cost impact ($/month) |
|---|---|---|
| synthetic inputs | any input is a shipped sample (sample.sample_inputs(), fleet.synthetic_curve, validation.synthetic) | the whole budget: every figure rests on made-up data |
| re-characterize | validation.json recharacterize | the window tier's cost x (production TTFT p99 / benchmark's - 1), else x 0.3 |
| replay failure | fleet.replay.passes is false | per failing tier: (min_replicas_meeting_slo - formula_replicas) x its $/instance; none meeting: the tier's cost |
| length mismatch | op.length_mismatch rows not within tolerance | the tier's cost x (worst of curve/workload length ratio, either way - 1); when the curve was not used for sizing (engine model instead): the basis interval's high end - cost, else x 0.15 |
| utilization trap | tco.utilization_trap | static - scheduled monthly cost when a schedule exists (the saving left on the table), else cost x (1 - utilization / planned) |
| weak basis | tco.chosen_basis transferred or roofline (or a tier's sizing_basis) | the interval's monthly_usd_hi - cost when given, else cost x 0.25 (transferred) / 0.5 (roofline) |

| plan differs | tco.json's plan is not fleet.json's (another plan id, other fleets, a `fleet_note`) | none (the budget is tco.json's) |

Only the fleets of the adopted plan as tco.json prices it count (`adopted_tiers`: tco.per_tier keys): a length
mismatch of a curve the plan does not deploy (the pooled `all` under a routed plan, a tier under a pooled one)
raises no flag, and such a tier costs 0 (`tier_cost`).
Flags without a cost impact (price basis, gap flags, warnings) come after the ranked ones, in the order found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BASIS_ORDER = ("measured", "calibrated", "transferred", "roofline")  # strongest first
NO_INTERVAL_SHARE = {"transferred": 0.25, "roofline": 0.5}  # assumed spread of a basis without an interval
RECHARACTERIZE_SHARE = 0.3  # a re-characterize verdict with no TTFT ratio to scale by
LENGTH_NOT_USED_SHARE = 0.15  # the measured curve was replaced by the engine model: the model's usual error band
RANKED = ("synthetic_inputs", "recharacterize", "replay_failure", "length_mismatch", "utilization_trap", "weak_basis")


@dataclass(frozen=True)
class Flag:
    """One risk: `key` (stable id), `title` and `detail` in plain words, its estimated cost impact."""

    key: str
    title: str
    detail: str
    impact_usd_per_month: float | None
    impact_why: str
    source: str


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def adopted_tiers(m: dict[str, dict[str, Any]]) -> list[str] | None:
    """The fleets of the adopted plan as metrics/tco.json prices it (per_tier keys, else chosen_candidates keys):
    `["all"]` for a pooled plan, the tier names for a routed one; None when tco.json names neither (older file)."""
    t = m.get("tco") or {}
    for key in ("per_tier", "chosen_candidates"):
        if isinstance(t.get(key), dict) and t[key]:
            return list(t[key])
    return None


def tier_cost(m: dict[str, dict[str, Any]], tier: str | None) -> float:
    """Monthly static cost of one fleet of the adopted plan: the whole plan for None; 0.0 for a named tier that
    is not a fleet of the adopted plan (the pooled `all` under a routed plan, a tier under a pooled one); the
    whole plan when tco.json does not say which fleets it adopted (an older file)."""
    t = m.get("tco") or {}
    row = (t.get("per_tier") or {}).get(tier or "")
    if isinstance(row, dict) and _num(row.get("monthly_usd")) is not None:
        return float(row["monthly_usd"])
    adopted = adopted_tiers(m)
    if tier is not None and adopted is not None and tier not in adopted:
        return 0.0
    return float(_num(t.get("monthly_usd")) or 0.0)


def plan_differs(m: dict[str, dict[str, Any]]) -> list[str]:
    """How the plan tco.json prices differs from the fleet fleet.json sized (empty when they agree or either
    file does not say): another plan id, other fleets, or a fleet priced on another deployment (`fleet_note`)."""
    t, f = m.get("tco") or {}, m.get("fleet") or {}
    out: list[str] = []
    if t.get("plan") and f.get("plan") and t["plan"] != f["plan"]:
        out.append(f"tco.json prices a {t['plan']} plan, fleet.json sized a {f['plan']} one")
    priced, sized = t.get("per_tier") or {}, f.get("per_tier") or {}
    if not out and priced and sized and set(priced) != set(sized):
        out.append(f"tco.json prices fleets {', '.join(sorted(priced))}, fleet.json sized {', '.join(sorted(sized))}")
    for name, row in sorted(priced.items()):
        if not isinstance(row, dict):
            continue
        x = sized.get(name) if isinstance(sized.get(name), dict) else {}
        if row.get("fleet_note"):
            out.append(f"{name}: {row['fleet_note']}")
        elif (
            x and row.get("gpu") and x.get("gpu") and (row.get("gpu"), row.get("gpus")) != (x.get("gpu"), x.get("gpus"))
        ):
            out.append(
                f"{name}: tco.json prices {row.get('gpus')} {row['gpu']}, fleet.json sized {x.get('gpus')} {x['gpu']}"
            )
    return out


def basis_of(m: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The plan's basis (measured / calibrated / transferred / roofline) and where it was read.

    tco.json `chosen_basis` when present (issue 14); else the weakest `sizing_basis` of the adopted tiers in
    operating_point.json; else the basis of the adopted candidates' tco rows ("roofline-scaled" = roofline);
    else "measured" when the plan was sized from benchmark sweeps (the only way before issue 14).
    """
    t, op, f = m.get("tco") or {}, m.get("operating_point") or {}, m.get("fleet") or {}
    if t.get("chosen_basis") in BASIS_ORDER:
        return str(t["chosen_basis"]), "metrics/tco.json chosen_basis"
    tiers = adopted_tiers(m) or list((f.get("per_tier") or {}).keys()) or ["all"]
    found = []
    for name in tiers:
        b = _get(op, "per_tier", name, "sizing_basis") if name != "all" else op.get("sizing_basis")
        if b in BASIS_ORDER:
            found.append(b)
    if found:
        return max(
            found, key=BASIS_ORDER.index
        ), "metrics/operating_point.json (sizing_basis, the weakest adopted tier)"
    rows = []
    for name in tiers:
        row = _get(t, "per_tier", name) or {}
        cid = row.get("candidate") or (
            f"{name}/{row['gpu']}/w-{row['weights']}/kv-{row['kv']}"
            if row.get("gpu")
            else _get(t, "pooled", "candidate")
        )
        pool = (_get(t, "per_tier_candidates", name, "candidates") or []) + (t.get("per_candidate") or [])
        rows += [r.get("basis") for r in pool if r.get("candidate") == cid]
    mapped = [("roofline" if str(b).startswith("roofline") else b) for b in rows if b]
    mapped = [b for b in mapped if b in BASIS_ORDER]
    if mapped:
        return max(mapped, key=BASIS_ORDER.index), "metrics/tco.json (the basis of the adopted candidates)"
    return "measured", "the plan is sized from benchmark sweeps (metrics/operating_point.json curve_source)"


def _worst_ratio(row: dict[str, Any]) -> float | None:
    ratios = [_num(row.get(k)) for k in ("input_ratio", "output_ratio")]
    ratios = [r for r in ratios if r and r > 0]
    return max(max(r, 1 / r) for r in ratios) if ratios else None


def _interval_excess(m: dict[str, dict[str, Any]], tier: str) -> float | None:
    """monthly_usd_hi - monthly_usd of the adopted candidate's tco row on `tier`, when it has an interval."""
    t = m.get("tco") or {}
    row = _get(t, "per_tier", tier) or {}
    interval = row.get("interval")
    if not isinstance(interval, dict):
        cid = row.get("candidate") or (
            f"{tier}/{row['gpu']}/w-{row['weights']}/kv-{row['kv']}" if row.get("gpu") else None
        )
        for r in (_get(t, "per_tier_candidates", tier, "candidates") or []) + (t.get("per_candidate") or []):
            if cid and r.get("candidate") == cid and isinstance(r.get("interval"), dict):
                interval = r["interval"]
                break
    hi = _num((interval or {}).get("monthly_usd_hi"))
    return max(0.0, hi - tier_cost(m, tier)) if hi is not None else None


def flags(
    m: dict[str, dict[str, Any]],
    samples: list[str] | None = None,
    trap_below: float = 0.4,
) -> list[Flag]:
    """Every risk of the adopted plan, ranked: by cost impact (largest first), then those without one.

    `m`: the metrics documents by name (workload, fleet, tco, operating_point, validation, ...);
    `samples`: sample.sample_inputs() (the inputs that are shipped samples, in words).
    """
    op, t, f, v = (m.get(k) or {} for k in ("operating_point", "tco", "fleet", "validation"))
    budget = float(_num(t.get("monthly_usd")) or 0.0)
    out: list[Flag] = []

    synthetic = list(samples or [])
    if f.get("synthetic_curve") and not any("benchmark" in s for s in synthetic):
        synthetic.append("a benchmark curve that sized the fleet")
    if v.get("synthetic") and not any("production" in s for s in synthetic):
        synthetic.append("the production window")
    if synthetic:
        out.append(
            Flag(
                "synthetic_inputs",
                "Synthetic inputs",
                "The figures rest on sample data, not yours: "
                + "; ".join(synthetic)
                + ". Replace them before budgeting.",
                budget,
                "the whole budget: every figure depends on the inputs",
                "sample.sample_inputs(), fleet.synthetic_curve, validation.synthetic",
            )
        )

    if v.get("recharacterize"):
        tier = _get(v, "window", "tier")
        prod, bench = (
            _num(_get(v, "metrics", "ttft_p99_ms", "production")),
            _num(_get(v, "metrics", "ttft_p99_ms", "benchmark")),
        )
        ratio = prod / bench if prod and bench else None
        adopted = adopted_tiers(m)
        cost = tier_cost(m, tier if adopted is None or tier in adopted else None)  # else the plan serves it
        impact = cost * (ratio - 1) if ratio and ratio > 1 else cost * RECHARACTERIZE_SHARE
        why = (
            f"tier cost x (TTFT p99 {ratio:.2f}x the benchmark - 1)"
            if ratio and ratio > 1
            else f"tier cost x {RECHARACTERIZE_SHARE:g} (no TTFT ratio)"
        )
        out.append(
            Flag(
                "recharacterize",
                "Production does not match the benchmark",
                "Step 13 says re-characterize: " + "; ".join(v.get("reasons") or []) + ".",
                impact,
                why,
                "metrics/validation.json recharacterize",
            )
        )

    replay = f.get("replay")
    if isinstance(replay, dict) and replay.get("passes") is False:
        per = replay.get("per_tier") or {}
        failing = {n: x for n, x in per.items() if isinstance(x, dict) and x.get("passes") is False} or {"all": replay}
        impact, parts = 0.0, []
        for name, x in sorted(failing.items()):
            cost = tier_cost(m, name if x is not replay else None)
            n_formula = _num(x.get("formula_replicas")) or _num(x.get("replicas"))
            n_min = _num(x.get("min_replicas_meeting_slo"))
            if n_min is not None and n_formula:
                extra = max(0.0, n_min - n_formula)
                impact += extra * cost / n_formula
                parts.append(f"{name}: {extra:g} more replicas needed than the formula's {n_formula:g}")
            else:
                impact += cost
                parts.append(f"{name}: no replica count tried met the SLO")
        att = _num(replay.get("slo_attainment"))
        corrected = []
        for name, x in sorted(failing.items()):
            cc = x.get("capacity_correction") if isinstance(x, dict) else None
            if isinstance(cc, dict) and cc.get("applied") and _num(cc.get("step_time_scale")) is not None:
                corrected.append(
                    f"{name}: every engine step x {_num(cc.get('step_time_scale')):.2f}, so that the model gives "
                    f"the {_num(cc.get('measured_usable_rps')) or 0:.2f} req/s the benchmark measured at its own lengths"
                )
        out.append(
            Flag(
                "replay_failure",
                "Replay of the real traffic misses the SLO",
                "Replaying the log against the planned fleet"
                + (f" meets the SLO for {att:.0%} of requests" if att is not None else " misses the SLO")
                + " ("
                + "; ".join(parts)
                + ")."
                + (
                    " The simulated capacity is corrected to the benchmark ("
                    + "; ".join(corrected)
                    + "); the log's own request lengths are kept."
                    if corrected
                    else " The simulated capacity is the engine model's, not corrected to a benchmark."
                ),
                impact,
                "extra replicas x $ per replica of the tier (the whole tier when none met the SLO)",
                "metrics/fleet.json replay.passes",
            )
        )

    adopted = adopted_tiers(m)
    for row in op.get("length_mismatch") or []:
        if not isinstance(row, dict) or row.get("within_tolerance", False):
            continue
        tier = row.get("tier")
        if adopted is not None and tier not in adopted:
            continue  # a curve of a fleet the adopted plan does not deploy
        cost = tier_cost(m, tier)
        worst = _worst_ratio(row)
        if row.get("used_for_sizing") is False:
            excess = _interval_excess(m, str(tier))
            impact = excess if excess is not None else cost * LENGTH_NOT_USED_SHARE
            why = (
                "the engine model's interval at the workload's lengths"
                if excess is not None
                else (f"tier cost x {LENGTH_NOT_USED_SHARE:g} (engine model in place of the curve)")
            )
        else:
            impact = cost * (worst - 1) if worst else cost * LENGTH_NOT_USED_SHARE
            why = f"tier cost x (length ratio {worst:.2f} - 1)" if worst else "tier cost x 0.15"
        ratios = ", ".join(
            f"{k.split('_')[0]} {row[k]:.2f}x" for k in ("input_ratio", "output_ratio") if _num(row.get(k)) is not None
        )
        out.append(
            Flag(
                "length_mismatch",
                f"Benchmark lengths differ from the traffic (tier {tier})",
                (row.get("message") or f"the benchmark curve {row.get('curve')} ran at other request lengths")
                + (f" (curve / workload: {ratios})" if ratios else "")
                + ".",
                impact,
                why,
                "metrics/operating_point.json length_mismatch",
            )
        )

    totals = t.get("totals") or {}
    if t.get("utilization_trap"):
        util = _num(t.get("utilization")) or 0.0
        planned = _num(totals.get("planned_utilization")) or 0.8
        sched = _num(totals.get("monthly_usd_with_schedule"))
        if sched is not None:
            impact, why = budget - sched, "static - scheduled monthly cost"
            tail = f" Scaling with the hour of day would save about ${budget - sched:,.0f} a month."
        else:
            impact, why = budget * max(0.0, 1 - util / planned), f"cost x (1 - utilization / planned {planned:.0%})"
            tail = ""
        if util > 0:
            detail = (
                f"Average utilization is {util:.0%}, under the {trap_below:.0%} trap line: each token costs "
                f"{planned / util:.1f}x what it would at the planned {planned:.0%}."
            )
        else:
            detail = f"Average utilization is under the {trap_below:.0%} trap line."
        out.append(
            Flag(
                "utilization_trap",
                "Most of the GPUs sit idle",
                detail + tail,
                max(0.0, impact),
                why,
                "metrics/tco.json utilization_trap",
            )
        )

    basis, _where = basis_of(m)
    if basis in ("transferred", "roofline"):
        tiers = adopted_tiers(m) or list((f.get("per_tier") or {}).keys()) or ["all"]
        impact, used_interval = 0.0, False
        for name in tiers:
            excess = _interval_excess(m, name)
            if excess is not None:
                impact += excess
                used_interval = True
            else:
                impact += tier_cost(m, name) * NO_INTERVAL_SHARE[basis]
        words = {
            "transferred": "carried over from another deployment's calibration (no benchmark of this one)",
            "roofline": "a roofline estimate (no benchmark and no calibrated engine model)",
        }[basis]
        out.append(
            Flag(
                "weak_basis",
                f"Capacity is {basis}, not measured",
                f"The adopted plan's capacity per replica is {words}: benchmark it before committing.",
                impact,
                "the interval's high end - cost"
                if used_interval
                else f"cost x {NO_INTERVAL_SHARE[basis]:g} (no interval)",
                "metrics/tco.json chosen_basis",
            )
        )
    differs = plan_differs(m)
    if differs:
        out.append(
            Flag(
                "plan_differs",
                "The priced plan differs from the sized fleet (deployment sheet and replay describe fleet.json's)",
                "The budget prices metrics/tco.json's plan; the deployment sheet, guardrails and replay describe "
                "the fleet metrics/fleet.json sized: " + "; ".join(differs) + ".",
                None,
                "no cost impact: the budget is tco.json's",
                "metrics/tco.json plan, per_tier (fleet_note) against metrics/fleet.json plan, per_tier",
            )
        )
    return rank(out)


def rank(found: list[Flag]) -> list[Flag]:
    """Largest cost impact first; equal impacts in the table's order (synthetic inputs, re-characterize, ...)."""

    def key(fl: Flag) -> tuple[int, float, int, str]:
        order = RANKED.index(fl.key) if fl.key in RANKED else len(RANKED)
        if fl.impact_usd_per_month is None:
            return (1, 0.0, order, fl.title)
        return (0, -fl.impact_usd_per_month, order, fl.title)

    return sorted(found, key=key)


def confidence(basis: str, found: list[Flag]) -> str:
    """high / medium / low: low with synthetic inputs, a re-characterize verdict, a failed replay or a roofline
    basis; medium with a length mismatch or a calibrated/transferred basis; high otherwise."""
    keys = {f.key for f in found}
    if keys & {"synthetic_inputs", "recharacterize", "replay_failure"} or basis == "roofline":
        return "low"
    if "length_mismatch" in keys or basis in ("calibrated", "transferred"):
        return "medium"
    return "high"
