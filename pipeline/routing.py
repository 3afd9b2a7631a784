"""Step 3: routing tiers. Which fleets to size, what traffic each one sees, and whether routing pays.

method.md steps 2-3 and the guide's section 1.5: tiers come from a `tier` column or from rules
(workload.tiers); each tier is sized independently (steps 4-12 per tier) with its own model
(model.tiers), GPU and curve. Cascading sends 100% of the traffic to the small tier and only the
escalation fraction (20-40%) to the large one. Routing pays off when the large-model fleet would
exceed ~8 GPUs and traffic has a measurable skew toward requests a smaller model can serve; the
fleet stage applies that rule once the pooled fleet is sized, step 12 (TCO) adds the blended cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.contracts import TiersDoc
from pipeline.errors import ParamsError
from pipeline.rates import RATE_NAMES, SIZING_RATE_KEY

SECTIONS = ("routing", "model")
RATE_KEYS = (*RATE_NAMES, SIZING_RATE_KEY)
POOLED = "all"


@dataclass(frozen=True)
class Demand:
    """The traffic one fleet must serve: rates (req/s), the hourly curve and the lengths, with where they came from."""

    tier: str
    model: str
    role: str  # pooled | routed | cascade-small | cascade-large
    share: float  # of the log's requests this fleet serves
    requests: int
    rps: dict[str, float]
    hourly_p95_rps: dict[str, float]
    hourly_mean_rps: dict[str, float]
    input_tokens: dict[str, float]
    output_tokens: dict[str, float]
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Demand:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def demand(
    tier: str, part: dict[str, Any], total_requests: int, model: str, role: str, scale: float, source: str
) -> Demand:
    """A fleet's demand from one profile (metrics/workload.json or one of its tiers), rates x `scale`.

    Scaling a rate percentile by the escalation share treats escalations as a random thinning of
    the arrivals (their p95 rate is the share x the whole p95): an approximation the output says.
    """
    rps = {k: round(float(part["rps"][k]) * scale, 6) for k in RATE_KEYS if part["rps"].get(k) is not None}
    hourly = part.get("hourly") or {}
    return Demand(
        tier=tier,
        model=model,
        role=role,
        share=round(part["requests"] * scale / total_requests, 6) if total_requests else 0.0,
        requests=round(part["requests"] * scale),
        rps=rps,
        hourly_p95_rps={h: round(float(v["p95_rps"]) * scale, 6) for h, v in sorted(hourly.items())},
        hourly_mean_rps={h: round(float(v["mean_rps"]) * scale, 6) for h, v in sorted(hourly.items())},
        input_tokens=dict(part["input_tokens"]),
        output_tokens=dict(part["output_tokens"]),
        source=source,
    )


def tiers(profile: dict[str, Any], model_name: str, tier_models: dict[str, str], p: dict[str, Any]) -> dict[str, Any]:
    """The pooled demand and one demand per tier (routing) or the two cascade tiers, as plain dicts."""
    total = int(profile["requests"])
    pooled = demand(POOLED, profile, total, model_name, "pooled", 1.0, "metrics/workload.json (whole log)")
    profile_tiers = profile.get("tiers") or {}
    out: dict[str, Demand] = {}
    if p["mode"] == "cascade":
        small = p["cascade_small_model"]
        if not small:
            raise ParamsError(
                "params.yaml: routing.mode = cascade needs routing.cascade_small_model (the model every request tries "
                "first), e.g. Llama-3.1-8B"
            )
        e = float(p["escalation"])
        out["small"] = demand(
            "small", profile, total, small, "cascade-small", 1.0, "metrics/workload.json (whole log): every request"
        )
        out["large"] = demand(
            "large",
            profile,
            total,
            model_name,
            "cascade-large",
            e,
            f"metrics/workload.json (whole log) x routing.escalation {e:g}: escalated requests rerun from scratch",
        )
        how = (
            f"cascade: '{small}' serves 100% of the traffic, '{model_name}' reruns the escalated {e:.0%} "
            "(routing.cascade_small_model, routing.escalation)"
        )
    else:
        unknown = sorted(set(tier_models) - set(profile_tiers))
        if unknown:
            raise ParamsError(
                f"params.yaml: model.tiers.{unknown[0]} is not a tier of the workload; "
                f"tiers: {', '.join(sorted(profile_tiers)) or '(none: set workload.tiers)'}"
            )
        for name, part in sorted(profile_tiers.items()):
            model = tier_models.get(name, model_name)
            out[name] = demand(
                name,
                part,
                total,
                model,
                "routed",
                1.0,
                f"metrics/workload.json tiers.{name}; model from "
                + (f"model.tiers.{name}" if name in tier_models else "model.name"),
            )
        how = profile.get("tiers_from") or "no tiers in the workload (workload.tiers)"
    return {"pooled": pooled, "tiers": out, "how": how}


def simple_share(
    pooled_model: str, demands: dict[str, Demand], params_b: dict[str, float], mode: str
) -> dict[str, Any]:
    """The guide's 'measurable skew': the share of requests a smaller model than the pooled one serves to the end.

    Routing: requests of tiers whose model has fewer parameters. Cascade: 1 - escalation (the small
    model's answers that stand).
    """
    ref = params_b.get(pooled_model)
    if mode == "cascade":
        large = next((d for d in demands.values() if d.role == "cascade-large"), None)
        value = 1 - large.share if large else 0.0
        return {
            "value": round(value, 4),
            "tiers_on_smaller_model": ["small"],
            "formula": "1 - routing.escalation (every request tries the small model; the rest escalate)",
        }
    smaller = sorted(n for n, d in demands.items() if ref is not None and params_b.get(d.model, ref) < ref)
    value = sum(demands[n].share for n in smaller)
    return {
        "value": round(value, 4),
        "tiers_on_smaller_model": smaller,
        "formula": f"share of requests in tiers served by a model with fewer parameters than {pooled_model} "
        f"({ref:.1f} B)"
        if ref
        else "pooled model size unknown",
    }


def verdict(
    mode: str, pooled_gpus: int | None, share: float, unsized: dict[str, str], n_tiers: int, p: dict[str, Any]
) -> dict[str, Any]:
    """Route (one fleet per tier) or pool? The guide's rules, each with its value and threshold, and the decision."""
    rules = [
        {
            "rule": "the large-model fleet would exceed this many GPUs (guide 1.5: 8-10)",
            "value": pooled_gpus,
            "threshold": p["min_large_fleet_gpus"],
            "passed": pooled_gpus is not None and pooled_gpus > p["min_large_fleet_gpus"],
        },
        {
            "rule": "measurable skew: share of requests a smaller model serves",
            "value": share,
            "threshold": p["min_simple_share"],
            "passed": share >= p["min_simple_share"],
        },
    ]
    rules_pass = all(r["passed"] for r in rules)
    if n_tiers < 2 and mode != "cascade":
        adopt, why = False, "one fleet: the workload has fewer than two tiers (workload.tiers)"
    elif mode == "pooled":
        adopt, why = False, "one pooled fleet (routing.mode = pooled)"
    elif unsized:
        adopt = False
        first = sorted(unsized)[0]
        why = f"one pooled fleet: tier '{first}' cannot be sized on its own ({unsized[first]})"
    elif mode in ("route", "cascade"):
        adopt, why = True, f"{'cascade' if mode == 'cascade' else 'one fleet per tier'} (routing.mode = {mode})"
    elif rules_pass:
        adopt, why = True, "one fleet per tier: both of the guide's rules pass"
    else:
        failed = [r["rule"] for r in rules if not r["passed"]]
        adopt, why = False, "one pooled fleet: the guide's rule fails: " + "; ".join(failed)
    return {"mode": mode, "adopted": adopt, "why": why, "rules": rules, "rules_pass": rules_pass, "unsized": unsized}


def plan(profile: dict[str, Any], sections: dict[str, Any], total_params: Callable[[str], float]) -> dict[str, Any]:
    """metrics/tiers.json (contracts.TiersDoc): the pooled demand, the tier demands with their models, the skew.

    `sections`: the validated `routing` and `model` sections; `total_params(model name)`: the model's
    parameter count (the stage reads it from the catalog).
    """
    p, model_p = sections["routing"], sections["model"]
    t = tiers(profile, model_p["name"], model_p["tiers"], p)
    pooled, demands = t["pooled"], t["tiers"]
    names = sorted({pooled.model, *(d.model for d in demands.values())})
    params_b = {n: round(total_params(n) / 1e9, 3) for n in names}
    skew = simple_share(pooled.model, demands, params_b, p["mode"])
    critical = sorted(set(p["critical_tiers"]))
    unknown = [c for c in critical if c not in demands]
    if unknown:
        raise ParamsError(
            f"params.yaml: routing.critical_tiers names '{unknown[0]}', not a tier; tiers: {', '.join(demands) or '(none)'}"
        )
    return TiersDoc(
        mode=p["mode"],
        tiers_from=t["how"],
        pooled=pooled.as_dict(),
        tiers={n: d.as_dict() for n, d in sorted(demands.items())},
        critical_tiers=critical,
        params_b=params_b,
        simple_share=skew,
        formulas={
            "tier demand": "each tier's rates, hourly curve and lengths from its own rows of the log (step 1)",
            "cascade": "small tier: 100% of the traffic; large tier: routing.escalation x every rate",
            "worth it": "large-model fleet > routing.min_large_fleet_gpus and simple share >= routing.min_simple_share "
            "(decided in the fleet stage, costed in step 12)",
        },
    ).to_dict()


def demands(t: dict[str, Any]) -> dict[str, Any]:
    """metrics/tiers.json's document with Demand objects: {'pooled': Demand, 'tiers': {name: Demand}, ...}."""
    return {
        **t,
        "pooled": Demand.from_dict(t["pooled"]),
        "tiers": {n: Demand.from_dict(d) for n, d in t["tiers"].items()},
    }


def fleets_table(res: dict[str, Any]) -> Any:
    """Step 3's table: one row per fleet (the pooled one, then each tier), from the routing stage's result."""
    import pandas as pd

    fleets = {"all": res["pooled"], **res["tiers"]}
    return pd.DataFrame(
        [
            {
                "fleet": name,
                "role": d["role"],
                "model": d["model"],
                "model size (B params)": res["params_b"].get(d["model"]),
                "share of requests": d["share"],  # a fraction: pipeline/tables.py shows it as a percentage
                "sizing rate (req/s)": d["rps"]["sizing_rate"],
                "mean rate (req/s)": d["rps"]["mean"],
                "p95 prompt tokens": d["input_tokens"]["p95"],
                "p95 output tokens": d["output_tokens"]["p95"],
                "source": d["source"],
            }
            for name, d in fleets.items()
        ]
    )


def hourly_rates(res: dict[str, Any]) -> Any:
    """Long table (tier, hour, p95_rps) of every fleet's p95 rate per hour of day, for the tier-rates chart."""
    import pandas as pd

    fleets = {"all": res["pooled"], **res["tiers"]}
    return pd.DataFrame(
        [{"tier": name, "hour": h, "p95_rps": v} for name, d in fleets.items() for h, v in d["hourly_p95_rps"].items()]
    )
