"""Step 12: total cost of ownership, utilization and cost per million tokens (method.md step 12).

cost per hour = GPUs x $/GPU-hour; a month is 730 h, a year 8760 h. utilization = average rate /
(instances x usable RPS per instance). cost per 1M output tokens = cost per hour / (output tokens
per hour / 1e6), at the planned utilization (the capacity the plan assumes is used) and at the
measured one (the traffic the log really brings): 40% utilization costs 2x what 80% does.
Prices in data/catalog/prices.csv are dated, sourced and illustrative; params may override them.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import InputError

HOURS_PER_MONTH = 730
HOURS_PER_YEAR = 8760
PRICES_CSV = "prices.csv"
PRICE_COLUMNS = ("gpu", "provider", "instance", "pricing", "usd_per_gpu_hour", "as_of", "confidence", "source")


@dataclass(frozen=True)
class Price:
    """One dated list price per GPU-hour and where it came from."""

    gpu: str
    provider: str
    instance: str
    pricing: str
    usd_per_gpu_hour: float
    as_of: str
    confidence: str
    source: str


def load_prices(root: Path | None = None) -> list[Price]:
    """data/catalog/prices.csv, checked: every column present, a positive price and a source on every row."""
    path = (root or paths.ROOT) / "data" / "catalog" / PRICES_CSV
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in PRICE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(PRICE_COLUMNS)}")
        rows = list(reader)
    out, bad = [], []
    for i, r in enumerate(rows, start=2):
        try:
            price = float(r["usd_per_gpu_hour"])
        except ValueError:
            price = -1.0
        if price <= 0 or not r["source"].strip() or not r["gpu"].strip():
            bad.append(f"line {i}: {r['gpu']!r} {r['usd_per_gpu_hour']!r}")
            continue
        out.append(
            Price(
                r["gpu"].strip(),
                r["provider"],
                r["instance"],
                r["pricing"],
                price,
                r["as_of"],
                r["confidence"],
                r["source"],
            )
        )
    if bad:
        raise InputError(
            f"{path}: column 'usd_per_gpu_hour' or 'source': {len(bad)} of {len(rows)} rows lack a positive price, a GPU "
            f"or a source; expected $ per GPU-hour and where it came from. Examples: {'; '.join(bad[:5])}"
        )
    return out


def price_for(gpu: str, prices: list[Price], pricing: str = "on-demand", provider: str | None = None) -> Price | None:
    """The price of one GPU: the named provider's, else the lowest of that pricing kind; None when none is listed."""
    pool = [p for p in prices if p.gpu == gpu and p.pricing == pricing and (provider is None or p.provider == provider)]
    return min(pool, key=lambda p: (p.usd_per_gpu_hour, p.provider)) if pool else None


@dataclass(frozen=True)
class Cost:
    """The cost of one plan and what a million tokens costs at planned and measured utilization."""

    gpus: int
    usd_per_gpu_hour: float
    usd_per_hour: float
    monthly_usd: float
    annual_usd: float
    utilization: float
    planned_utilization: float
    usd_per_million_output_tokens: float
    usd_per_million_output_tokens_planned: float
    usd_per_million_input_tokens: float
    utilization_trap: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost(
    gpus: int,
    usd_per_gpu_hour: float,
    instances: int,
    usable_rps: float,
    average_rps: float,
    mean_output_tokens: float,
    mean_input_tokens: float,
    planned_utilization: float = 0.8,
    trap_below: float = 0.4,
) -> Cost:
    """Cost per hour/month/year, utilization and cost per 1M tokens (method.md step 12)."""
    per_hour = gpus * usd_per_gpu_hour
    capacity_rps = instances * usable_rps
    util = average_rps / capacity_rps if capacity_rps > 0 else 0.0
    out_per_hour = average_rps * mean_output_tokens * 3600
    in_per_hour = average_rps * mean_input_tokens * 3600
    planned_out = capacity_rps * planned_utilization * mean_output_tokens * 3600
    return Cost(
        gpus,
        usd_per_gpu_hour,
        per_hour,
        per_hour * HOURS_PER_MONTH,
        per_hour * HOURS_PER_YEAR,
        util,
        planned_utilization,
        per_hour / (out_per_hour / 1e6) if out_per_hour else float("inf"),
        per_hour / (planned_out / 1e6) if planned_out else float("inf"),
        per_hour / (in_per_hour / 1e6) if in_per_hour else float("inf"),
        round(util, 9) < trap_below,
    )


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
