"""Step 12: total cost of ownership, utilization and cost per million tokens (method.md step 12).

cost per hour = GPUs x $/GPU-hour; a month is 730 h, a year 8760 h. utilization = average rate /
(instances x usable RPS per instance). cost per 1M output tokens = cost per hour / (output tokens
per hour / 1e6), at the planned utilization (the capacity the plan assumes is used) and at the
measured one (the traffic the log really brings): 40% utilization costs 2x what 80% does.
Prices in data/catalog/prices.csv are dated, sourced and illustrative; params may override them.

Split by concern (issue 16); this module re-exports the public names for the stages, scenarios, the
notebooks and the tests:

- `tco_pricing.py`: which provider's prices a comparison uses and one GPU's price on it (price_basis, lookup).
- `tco_cost.py`: cost, schedule and band arithmetic (cost, Cost, price_fleet, blend, interval_cost).
- `tco_candidates.py`: every candidate of a fleet sized and priced (Pricing, tier_rows, candidates).
- `tco_select.py`: the cheapest eligible candidate, what to benchmark next, the no-sweep stop (choose).
- `tco_plan.py`: metrics/tco.json, pooled vs routed, the adopted plan's totals (plan, with_tiers).
- `tco_choice.py` (eligibility and benchmark_next's score) and `tco_views.py` (report tables) as before.
"""

from __future__ import annotations

from pipeline.catalog import PRICE_COLUMNS, PRICES_CSV, Price, load_prices  # the price catalog lives in catalog
from pipeline.tco_candidates import (
    Pricing,
    candidates,
    compared_gpus,
    engine_candidates,
    predicted_capacity,
    tier_rows,
)
from pipeline.tco_cost import HOURS_PER_MONTH, HOURS_PER_YEAR, Cost, blend, cost, interval_cost, price_fleet
from pipeline.tco_plan import SECTIONS, plan, tier_candidates, with_tiers
from pipeline.tco_pricing import CHEAPEST_RULE, NO_LIKE_FOR_LIKE, lookup, price_basis, price_for
from pipeline.tco_select import FIRST_KEYS, NoSweepError, benchmark_first, benchmark_next, cheapest, choose

__all__ = [
    "CHEAPEST_RULE",
    "FIRST_KEYS",
    "HOURS_PER_MONTH",
    "HOURS_PER_YEAR",
    "NO_LIKE_FOR_LIKE",
    "PRICES_CSV",
    "PRICE_COLUMNS",
    "SECTIONS",
    "Cost",
    "NoSweepError",
    "Price",
    "Pricing",
    "benchmark_first",
    "benchmark_next",
    "blend",
    "candidates",
    "cheapest",
    "choose",
    "compared_gpus",
    "cost",
    "engine_candidates",
    "interval_cost",
    "load_prices",
    "lookup",
    "plan",
    "predicted_capacity",
    "price_basis",
    "price_fleet",
    "price_for",
    "tier_candidates",
    "tier_rows",
    "with_tiers",
]
