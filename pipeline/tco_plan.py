"""Step 12 document: metrics/tco.json, the pooled and the routed plan compared, the adopted plan's totals.

`plan` prices every candidate (tco_candidates), chooses (tco_select), prices every fleet of the routed plan
(tco_cost) and reports the adopted plan once (`with_tiers`). Pure: the report stage writes the file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline import tco_choice
from pipeline.catalog import Price
from pipeline.contracts import TcoDoc
from pipeline.errors import InputError
from pipeline.tco_candidates import Pricing, compared_gpus, tier_rows
from pipeline.tco_cost import blend, price_fleet
from pipeline.tco_pricing import price_basis
from pipeline.tco_select import benchmark_next, cheapest, choose

SECTIONS = ("tco", "fleet", "slo")


def plan(pr: Pricing, op: dict[str, Any], fleet_json: dict[str, Any], tiers_json: dict[str, Any]) -> dict[str, Any]:
    """metrics/tco.json: every candidate fleet-sized and priced on its own curve; the cheapest eligible one chosen.

    With the curve stage's `candidates` (step 7b), every candidate's usable RPS, basis and band come
    from its engine-model curve; the chosen plan must be measured or calibrated (transferred too with
    tco.allow_transferred). Without them (an older operating point) the benchmarked deployment is
    measured and the others roofline estimates, never chosen. Every price comes from one provider
    (`price_basis`: tco.provider, else the cheapest that lists every compared GPU), or the
    comparison says it is not like-for-like.
    """
    if pr.basis is None:
        pr = replace(
            pr, basis=price_basis(compared_gpus(pr, fleet_json, op), pr.prices, pr.p["pricing"], pr.p["provider"])
        )
    assert pr.basis is not None
    allow = bool(pr.p.get("allow_transferred", False))
    rows = tier_rows("all", op, op, tiers_json["pooled"], fleet_json["pooled"], pr)
    pick = choose(rows, "all", allow)
    chosen = next(r for r in rows if r["candidate"] == pick["chosen"])
    basis = pr.basis
    pooled = {
        "per_candidate": rows,
        "allow_transferred": allow,
        "benchmark_next": [],  # against the adopted plan's cost, below
        "benchmark_next_rule": tco_choice.ASSUMPTION,
        "formula": "$/h = GPUs x $/GPU-h; month = 730 h, year = 8760 h; utilization = mean rate / (instances x usable RPS); "
        "$/1M output tokens = $/h / (mean rate x mean output tokens x 3600 / 1e6); cost interval: the fleet sized at the "
        "high and the low end of the usable-RPS band",
        "prices_note": "list prices from data/catalog/prices.csv are dated and illustrative: re-check before a budget decision",
        "price_basis": basis,
        "price_provider": basis["provider"],
        "like_for_like": basis["like_for_like"],
    }
    pooled["per_tier_candidates"] = tier_candidates(op, fleet_json, tiers_json, pr)
    out = with_tiers(pooled, chosen, fleet_json, tiers_json, pr.p, pr.prices, basis, pick=pick, op=op)
    # what to benchmark next: any one deployment serving all traffic against the adopted plan's monthly cost
    out["benchmark_next"] = benchmark_next(rows, out["monthly_usd"], exclude=set(out["chosen_candidates"].values()))
    out["benchmark_next_reference"] = {"plan": out["plan"], "monthly_usd": out["monthly_usd"]}
    return TcoDoc.from_dict(out).to_dict()  # contracts.TcoDoc: every key, in the document's one order


def tier_candidates(
    op: dict[str, Any], fleet_json: dict[str, Any], tiers_json: dict[str, Any], pr: Pricing
) -> dict[str, Any]:
    """Steps 4-12 per tier: each routing tier's candidates priced like the pooled ones, and what to benchmark next.

    Per tier: `candidates`, `measured` (the measured candidate, or None), `cheapest_eligible` (the one the
    tier could be served by: the reference of its `benchmark_next`, or None) and `benchmark_next`.
    """
    out: dict[str, Any] = {}
    allow = bool(pr.p.get("allow_transferred", False))
    for name, t in sorted((fleet_json.get("routed") or {}).items()):
        t_op = (op.get("per_tier") or {}).get(name) or {}
        try:
            rows = tier_rows(name, t_op, op, tiers_json["tiers"][name], t, pr)
        except (InputError, KeyError) as exc:
            out[name] = {"error": str(exc).strip("'")}
            continue
        measured = next((r for r in rows if r["basis"] == "measured" and "monthly_usd" in r), None)
        pool = {r["candidate"]: r["monthly_usd"] for r in rows if r.get("eligible") and "monthly_usd" in r}
        best = cheapest(pool)["chosen"] if pool else None
        ref = next((r for r in rows if r["candidate"] == best), None)
        out[name] = {
            "candidates": rows,
            "measured": measured["candidate"] if measured else None,
            "cheapest_eligible": best,
            "benchmark_next": benchmark_next(rows, ref["monthly_usd"], exclude={best}) if ref else [],
        }
        if not pool:
            out[name]["note"] = (
                f"no candidate of tier {name} may be chosen (measured or calibrated"
                + (" or transferred" if allow else "")
                + " with a price): nothing to compare against"
            )
    return out


def _same_deployment(row: dict[str, Any], t: dict[str, Any]) -> bool:
    """Is candidate `row` (tco) the deployment the fleet stage sized as fleet `t` (fleet.json)?"""
    return (row.get("gpu"), row.get("weights"), row.get("kv"), int(row.get("tp") or 0), int(row.get("pp") or 1)) == (
        t.get("gpu"),
        t.get("weight_dtype"),
        t.get("kv_dtype"),
        int(t.get("tp") or 0),
        int(t.get("pp") or 1),
    )


def _pooled_fleet(
    chosen: dict[str, Any],
    t: dict[str, Any],
    demand: dict[str, Any],
    p: dict[str, Any],
    prices: list[Price],
    basis: dict[str, Any] | None,
) -> dict[str, Any]:
    """The pooled plan's one fleet: fleet.json's when the chosen candidate is the deployment it sized, else the
    chosen candidate's own sizing (tco per_candidate), saying that the fleet stage sized another deployment."""
    if not chosen.get("gpu") or _same_deployment(chosen, t):
        return {**price_fleet(t, demand, p, prices, basis), "candidate": chosen["candidate"]}
    keep = [k for k in chosen if k not in ("eligible", "eligible_why", "length_match", "interval", "note")]
    row = {
        "tier": t["tier"],
        "role": t["role"],
        "model": t["model"],
        **{k: chosen[k] for k in keep},
        "mean_rps": demand["rps"]["mean"],
    }
    row["fleet_note"] = (
        f"fleet.json sized {t['gpu']} w-{t['weight_dtype']}/kv-{t['kv_dtype']} TP{t['tp']}; the cheapest eligible "
        f"candidate is {chosen['candidate']} ({chosen.get('basis')}), priced here on its own curve (fleet.json's "
        "guardrails, schedule and replay are of the deployment it sized)"
    )
    return row


def _plan_basis(
    out: dict[str, Any], fleet_json: dict[str, Any], op: dict[str, Any] | None
) -> tuple[dict[str, str], dict[str, str | None]]:
    """(candidate id per tier, basis per tier) of the adopted plan (out: with_tiers' document so far)."""
    ids: dict[str, str] = {}
    bases: dict[str, str | None] = {}
    if out["plan"] == "pooled":
        row = next((r for r in out.get("per_candidate") or [] if r["candidate"] == out["pooled"]["candidate"]), {})
        ids["all"] = out["pooled"]["candidate"]
        bases["all"] = row.get("basis", "measured")
        return ids, bases
    for name, t in sorted((fleet_json.get("routed") or {}).items()):
        rows = ((out.get("per_tier_candidates") or {}).get(name) or {}).get("candidates") or []
        row = next((r for r in rows if _same_deployment(r, t)), None)
        t_op = ((op or {}).get("per_tier") or {}).get(name) or {}
        ids[name] = row["candidate"] if row else f"{name}/{t['gpu']}/w-{t['weight_dtype']}/kv-{t['kv_dtype']}"
        # the fleet stage sizes a tier on op.per_tier[t].usable_rps: its sizing_basis (measured before issue 14)
        bases[name] = t_op.get("sizing_basis") or (row or {}).get("basis") or "measured"
    return ids, bases


def with_tiers(
    pooled: dict[str, Any],
    chosen: dict[str, Any],
    fleet_json: dict[str, Any],
    tiers_json: dict[str, Any],
    p: dict[str, Any],
    prices: list[Price],
    basis: dict[str, Any] | None = None,
    pick: dict[str, Any] | None = None,
    op: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Price every fleet of the routed plan, compare it with the pooled plan, and report the adopted plan's totals.

    The pooled plan is the cheapest eligible candidate (per_candidate; `pick`: tco.cheapest's verdict).
    When the fleet stage adopted routing (or a cascade), the adopted plan is the routed one, blended
    over its tiers, unless a tier's basis may not be chosen (transferred without tco.allow_transferred,
    or roofline). The top-level figures are computed once, from `totals` of the adopted plan; `chosen`
    is the plan id (`pooled`, `routed`, `cascade`) and `chosen_candidates` the deployment per tier.
    """
    allow = bool(p.get("allow_transferred", False))
    demands = {"all": tiers_json["pooled"], **tiers_json["tiers"]}
    routed_rows = [
        price_fleet(t, demands[n], p, prices, basis) for n, t in sorted((fleet_json.get("routed") or {}).items())
    ]
    routed = (
        blend(routed_rows, tiers_json["pooled"], p) if routed_rows and not fleet_json["routing"]["unsized"] else None
    )
    comparison: dict[str, Any] = {
        "adopted": fleet_json["plan"],
        "why": fleet_json["routing"]["why"],
        "pooled_monthly_usd": chosen["monthly_usd"],
        "pooled_usd_per_million_output_tokens": chosen["usd_per_million_output_tokens"],
        "routed_monthly_usd": routed["monthly_usd"] if routed else None,
        "blended_usd_per_million_output_tokens": routed["usd_per_million_output_tokens"] if routed else None,
        "routing_saves_usd_per_month": round(chosen["monthly_usd"] - routed["monthly_usd"], 2) if routed else None,
        "routing_saves_share": round(1 - routed["monthly_usd"] / chosen["monthly_usd"], 4)
        if routed and chosen["monthly_usd"]
        else None,
    }
    if routed is None:
        comparison["verdict"] = "routing not costed: " + (
            "; ".join(f"{k}: {v}" for k, v in sorted(fleet_json["routing"]["unsized"].items()))
            or "the workload has no tiers to route"
        )
    else:
        cheaper = routed["monthly_usd"] < chosen["monthly_usd"]
        comparison["cheaper"] = cheaper
        saving = abs(comparison["routing_saves_share"] or 0.0)
        comparison["verdict"] = (
            f"routing {'saves' if cheaper else 'costs'} {saving:.0%} a month against one pooled fleet "
            f"(USD {routed['monthly_usd']:,.0f} vs {chosen['monthly_usd']:,.0f})"
            + (
                ""
                if cheaper or not fleet_json["routing"]["adopted"]
                else ": the rules chose routing, the cost does not"
            )
        )
    out = dict(pooled)
    out["pooled"] = {k: chosen[k] for k in ("candidate", "gpus", "monthly_usd", "annual_usd", "utilization")}
    out["routing"] = comparison
    use_routed = fleet_json["plan"] != "pooled" and routed is not None
    if use_routed:
        out["plan"] = fleet_json["plan"]
        _, bases = _plan_basis(out, fleet_json, op)
        barred = {n: b for n, b in bases.items() if not tco_choice.eligibility(b or "roofline", True, 1.0, allow)[0]}
        if barred:
            use_routed = False
            comparison["verdict"] += (
                "; not adopted: "
                + ", ".join(f"tier {n} is sized on a {b} curve" for n, b in sorted(barred.items()))
                + (" (tco.allow_transferred is false)" if not allow else "")
            )
    if use_routed:
        out["per_tier"] = {r["tier"]: r for r in routed_rows}
        out["plan"] = fleet_json["plan"]
        out["totals"] = routed
        runner_up, saves = chosen["candidate"], comparison["routing_saves_usd_per_month"]
    else:
        t = (fleet_json.get("per_tier") or {}).get("all") or fleet_json["pooled"]
        out["per_tier"] = {"all": _pooled_fleet(chosen, t, tiers_json["pooled"], p, prices, basis)}
        out["plan"] = "pooled"
        out["totals"] = blend(list(out["per_tier"].values()), tiers_json["pooled"], p)
        runner_up = (pick or {}).get("runner_up")
        saves = (pick or {}).get("saves_usd_per_month")
        saves = round(saves, 2) if saves is not None else None
    ids, bases = _plan_basis(out, fleet_json, op)
    for name, row in out["per_tier"].items():  # each adopted fleet names its candidate, basis and cost band
        pool = ((out.get("per_tier_candidates") or {}).get(name) or {}).get("candidates") or []
        pool = pool if name != "all" else out.get("per_candidate") or []
        match = next((r for r in pool if r["candidate"] == ids.get(name)), {})
        row.setdefault("candidate", ids.get(name))
        row["basis"] = bases.get(name)
        row["interval"] = match.get("interval")
    totals = out["totals"] or {}
    out.update(
        chosen=out["plan"],
        chosen_candidates=ids,
        chosen_basis=tco_choice.weakest([b for b in bases.values() if b]),
        allow_transferred=allow,
        monthly_usd=totals.get("monthly_usd", chosen["monthly_usd"]),
        annual_usd=totals.get("annual_usd", chosen["annual_usd"]),
        usd_per_million_output_tokens=totals.get(
            "usd_per_million_output_tokens", chosen["usd_per_million_output_tokens"]
        ),
        utilization=totals.get("utilization", chosen["utilization"]),
        utilization_trap=totals.get("utilization_trap", chosen.get("utilization_trap", False)),
        runner_up=runner_up,
        saves_usd_per_month=saves,
    )
    return out
