"""Step 12's choice: which candidate may be the plan, and which to benchmark next (method.md 7b and 12).

Pure arithmetic over plain values (no file, no params): the report stage's tco.plan calls it.

- A curve's basis is one of BASES, strongest first. The chosen plan must be `measured` or
  `calibrated`; `transferred` only when tco.allow_transferred; `roofline` never.
- `benchmark_next` ranks the candidates that are not measured by the expected saving of
  benchmarking them: score = E[max(chosen - M, 0)] = P(M < chosen) x E[chosen - M | M < chosen],
  where M is the candidate's monthly cost. Distributional assumption (stated in tco.json): M is
  log-normal, fitted to its 80% band (monthly_usd_lo = p10, monthly_usd_hi = p90), so its median
  is the band's geometric mean and sigma = ln(hi / lo) / (2 x 1.2816). A band of zero width is a
  point mass. A candidate with no band (a roofline curve without residuals) has no probability:
  it ranks after every scored one, by its point saving.
"""

from __future__ import annotations

import math
from typing import Any

BASES = ("measured", "calibrated", "transferred", "roofline")
CHOOSABLE = ("measured", "calibrated")
Z80 = 1.2815515655446004  # the standard normal's 90th percentile: an 80% band is mu +- Z80 sigma

ASSUMPTION = (
    "monthly cost M of a candidate is log-normal, fitted to its 80% band (monthly_usd_lo = p10, monthly_usd_hi = p90): "
    "median = sqrt(lo x hi), sigma = ln(hi / lo) / (2 x 1.2816); p_beats_chosen = P(M < chosen), "
    "expected_saving_usd_per_month = E[chosen - M | M < chosen], score = their product = E[max(chosen - M, 0)]; "
    "a candidate without a band has no probability and ranks after the scored ones, by its point saving"
)


def weakest(bases: list[str]) -> str | None:
    """The weakest basis of several (roofline < transferred < calibrated < measured); None for none."""
    known = [b for b in bases if b in BASES]
    return max(known, key=BASES.index) if known else None


def eligibility(basis: str, priced: bool, usable_rps: float | None, allow_transferred: bool) -> tuple[bool, str]:
    """(may this candidate be the chosen plan, why) from its curve's basis, its usable RPS and its price."""
    if usable_rps is None or not (usable_rps > 0):
        return False, "no usable RPS on its curve: it never meets the SLO (or has no curve)"
    if basis == "transferred" and not allow_transferred:
        return False, "transferred curve (pooled coefficients): benchmark it, or set tco.allow_transferred: true"
    if basis == "roofline":
        return False, "roofline curve (no calibration): an estimate to rank what to benchmark, never chosen"
    if basis not in (*CHOOSABLE, "transferred"):
        return False, f"unknown basis {basis!r}"
    if not priced:
        return False, "no price for its GPU on the comparison's basis"
    if basis == "transferred":
        return True, "transferred curve (pooled coefficients), allowed by tco.allow_transferred"
    return True, f"{basis} curve"


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def lognormal_band(lo: float, hi: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal whose p10 is `lo` and p90 is `hi` (both > 0, lo <= hi)."""
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"an 80% band needs 0 < lo <= hi < inf, got lo={lo!r}, hi={hi!r}")
    return (math.log(lo) + math.log(hi)) / 2, (math.log(hi) - math.log(lo)) / (2 * Z80)


def p_below(threshold: float, lo: float, hi: float) -> float:
    """P(M < threshold) for M log-normal on the 80% band [lo, hi]; a zero-width band is a point mass (ties: 0.5)."""
    mu, sigma = lognormal_band(lo, hi)
    if threshold <= 0:
        return 0.0
    if sigma == 0:
        m = math.exp(mu)
        return 1.0 if m < threshold else 0.5 if m == threshold else 0.0
    return _phi((math.log(threshold) - mu) / sigma)


def expected_shortfall(threshold: float, lo: float, hi: float) -> float:
    """E[max(threshold - M, 0)] for M log-normal on the 80% band [lo, hi] (the put-option formula)."""
    mu, sigma = lognormal_band(lo, hi)
    if threshold <= 0:
        return 0.0
    if sigma == 0:
        return max(threshold - math.exp(mu), 0.0)
    d = (math.log(threshold) - mu) / sigma
    return threshold * _phi(d) - math.exp(mu + sigma**2 / 2) * _phi(d - sigma)


def score(reference_usd: float, monthly_usd: float, band: tuple[float, float] | None) -> dict[str, Any]:
    """p_beats_chosen, expected_saving_usd_per_month and score of one candidate against the chosen plan's cost.

    `band`: (monthly_usd_lo, monthly_usd_hi), the cost at the high and the low usable RPS of its 80% band;
    None: no band, so no probability (p_beats_chosen and score None; the saving is the point one).
    """
    if band is None or band[0] is None or band[1] is None or not (0 < band[0] <= band[1] < math.inf):
        return {
            "p_beats_chosen": None,
            "expected_saving_usd_per_month": round(reference_usd - monthly_usd, 2),
            "score": None,
        }
    lo, hi = band
    p = p_below(reference_usd, lo, hi)
    value = expected_shortfall(reference_usd, lo, hi)
    return {
        "p_beats_chosen": round(p, 4),
        "expected_saving_usd_per_month": round(value / p, 2) if p > 0 else 0.0,
        "score": round(value, 2),
    }


def rank(rows: list[dict[str, Any]], reference_usd: float, exclude: set[str], n: int = 3) -> list[dict[str, Any]]:
    """The `n` priced candidates not measured (and not in `exclude`) worth benchmarking, best score first.

    A row needs `candidate`, `basis`, `monthly_usd` and `interval` ({monthly_usd_lo, monthly_usd_hi} or None).
    Scored rows with score > 0 come first (score, then name); rows without a band follow when their
    point cost is under the reference (point saving, then name).
    """
    if not reference_usd or reference_usd <= 0:
        return []
    scored: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for r in rows:
        if r.get("basis") == "measured" or r["candidate"] in exclude or r.get("monthly_usd") is None:
            continue
        iv = r.get("interval") or {}
        band = (iv.get("monthly_usd_lo"), iv.get("monthly_usd_hi")) if iv else None
        s = score(reference_usd, r["monthly_usd"], band)
        if s["score"] is not None:
            if s["score"] <= 0:
                continue
            key: tuple[Any, ...] = (0, -s["score"], r["candidate"])
        else:
            if r["monthly_usd"] >= reference_usd:
                continue
            key = (1, r["monthly_usd"], r["candidate"])
        scored.append(
            (
                key,
                {
                    "candidate": r["candidate"],
                    "monthly_usd": r["monthly_usd"],
                    "estimated_saving_share": round(1 - r["monthly_usd"] / reference_usd, 4),
                    "basis": r.get("basis"),
                    "interval": r.get("interval"),
                    **s,
                },
            )
        )
    return [row for _, row in sorted(scored, key=lambda kv: kv[0])[:n]]
