"""Step 12 choice: the cheapest eligible candidate, what to benchmark next, and the no-sweep stop.

`choose` picks a fleet's plan among its priced rows (`cheapest`), or raises one clear line; `NoSweepError`
names what to benchmark first when no candidate has a sweep. The rules (basis, score) are tco_choice's.
"""

from __future__ import annotations

from typing import Any

from pipeline import tco_choice
from pipeline.errors import InputError
from pipeline.tco_candidates import finite_positive


def cheapest(plans: dict[str, float]) -> dict[str, Any]:
    """The cheapest plan (by $/month) among those that meet the SLO, and by how much it beats the runner-up."""
    if not plans:
        raise InputError("no candidate meets the SLO: nothing to price")
    ranked = sorted(plans.items(), key=lambda kv: (kv[1], kv[0]))
    best, best_usd = ranked[0]
    out: dict[str, Any] = {
        "chosen": best,
        "monthly_usd": best_usd,
        "runner_up": None,
        "saves_usd_per_month": None,
        "saves_share": None,
    }
    if len(ranked) > 1:
        name, usd = ranked[1]
        out.update(
            runner_up=name, saves_usd_per_month=usd - best_usd, saves_share=(usd - best_usd) / usd if usd else None
        )
    return out


class NoSweepError(InputError):
    """No candidate of a fleet has a measured or calibrated curve (no sweep) and tco.allow_transferred is false.

    `candidates`: the rows to benchmark first (`benchmark_first`); `document`: a metrics/tco.json-shaped dict
    (no plan; `per_candidate` every row, `benchmark_next` those first), for the benchmark plan writer
    (pipeline/bench_plan_io reads those two keys). Nothing is written when it is raised.
    """

    def __init__(
        self, message: str, candidates: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.candidates = candidates
        self.document: dict[str, Any] = {
            "plan": None,
            "chosen": None,
            "chosen_candidates": {},
            "per_candidate": rows or [],
            "per_tier_candidates": {},
            "benchmark_next": candidates,
            "stopped": message,
        }


FIRST_KEYS = (
    "candidate",
    "gpu",
    "weights",
    "kv",
    "tp",
    "pp",
    "basis",
    "usable_rps",
    "c_max",
    "monthly_usd",
    "interval",
)


def benchmark_first(rows: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """With no measured or calibrated curve: the `n` candidates to benchmark first.

    Those with a usable RPS on their curve, priced ones first by their point monthly cost, then the
    stronger basis (transferred before roofline), then the name. Each: FIRST_KEYS plus `tier`.
    """
    usable = [r for r in rows if finite_positive(r.get("usable_rps"))]
    ranked = sorted(
        usable,
        key=lambda r: (
            r.get("monthly_usd") is None,
            r.get("monthly_usd") or 0.0,
            tco_choice.BASES.index(r["basis"]) if r.get("basis") in tco_choice.BASES else 9,
            r["candidate"],
        ),
    )
    return [{"tier": r["candidate"].split("/", 1)[0], **{k: r.get(k) for k in FIRST_KEYS}} for r in ranked[:n]]


def choose(rows: list[dict[str, Any]], tier_name: str, allow_transferred: bool) -> dict[str, Any]:
    """The cheapest eligible candidate of one fleet (`cheapest`), or one clear line saying why there is none.

    Eligible: a measured or calibrated curve (transferred too when `allow_transferred`) and a price.
    No measured or calibrated curve at all (no sweep): NoSweepError naming what to benchmark first.
    """
    priced = {r["candidate"]: r["monthly_usd"] for r in rows if r.get("eligible") and "monthly_usd" in r}
    if priced:
        return cheapest(priced)
    swept = sorted(
        (r for r in rows if r.get("basis") in tco_choice.CHOOSABLE),
        key=lambda r: (tco_choice.BASES.index(r["basis"]), r["candidate"]),
    )
    if swept:
        r = swept[0]
        raise InputError(f"the benchmarked deployment {r['candidate']} cannot be priced: {r.get('note')}")
    first = benchmark_first(rows)
    names = ", ".join(
        f"{r['candidate']} ({r['basis']}"
        + (f", about USD {r['monthly_usd']:,.0f} a month" if r.get("monthly_usd") is not None else "")
        + ")"
        for r in first
    )
    where = "metrics/operating_point.json: candidates"
    if allow_transferred:
        raise InputError(
            f"{where}: no candidate of fleet {tier_name} has a measured, calibrated or transferred curve with a "
            f"usable RPS and a price ({len(rows)} candidates); expected at least one (benchmark {names or 'one'})"
        )
    raise NoSweepError(
        f"{where}: no measured or calibrated curve for any candidate of fleet {tier_name} (no benchmark sweep of "
        f"its deployments); expected a sweep: benchmark {names or 'a candidate'} first (`sizing bench-plan` writes "
        "their traces and commands), or set tco.allow_transferred: true to price on transferred curves",
        first,
        rows,
    )


def benchmark_next(
    rows: list[dict[str, Any]], reference_usd: float, n: int = 3, exclude: set[str] | None = None
) -> list[dict[str, Any]]:
    """The `n` unmeasured candidates most worth benchmarking against the reference (chosen) plan's $/month.

    Ranked by score = expected saving x P(beats the chosen plan), from each candidate's cost interval
    under a log-normal fitted to its 80% band (tco_choice.ASSUMPTION); a candidate without a band
    follows, cheapest first, when its point cost beats the reference.
    """
    return tco_choice.rank(rows, reference_usd, exclude or set(), n)
