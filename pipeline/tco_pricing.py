"""Step 12: which provider's list prices a comparison uses, and one GPU's $/GPU-hour on that basis.

`price_basis` picks the provider (params tco.provider, else the cheapest that lists every compared GPU, else
not like-for-like); `lookup` prices one GPU on it (a tco.prices override first). Pure: no file is read here.
"""

from __future__ import annotations

from typing import Any

from pipeline.catalog import Price
from pipeline.errors import InputError


def price_for(gpu: str, prices: list[Price], pricing: str = "on-demand", provider: str | None = None) -> Price | None:
    """The price of one GPU: the named provider's, else the lowest of that pricing kind; None when none is listed."""
    pool = [p for p in prices if p.gpu == gpu and p.pricing == pricing and (provider is None or p.provider == provider)]
    return min(pool, key=lambda p: (p.usd_per_gpu_hour, p.provider)) if pool else None


CHEAPEST_RULE = (
    "the cheapest provider that lists every compared GPU (lowest sum of their {pricing} $/GPU-hour, then the name); "
    "compared GPUs: those of every candidate that fits and meets the SLO, and of the plan, that any provider lists"
)


NO_LIKE_FOR_LIKE = (
    "no provider lists every compared GPU ({gpus}): each GPU takes its lowest {pricing} price from whichever provider "
    "lists it, so the comparison is NOT like-for-like (set tco.provider, or tco.prices for the missing GPUs)"
)


def price_basis(gpus: list[str], prices: list[Price], pricing: str, provider: str | None) -> dict[str, Any]:
    """Which provider's list prices every candidate is compared on, so no Lambda H100 meets an AWS H200.

    `provider` (params tco.provider) names one. None: the cheapest provider that lists every compared
    GPU (the given GPUs that any provider lists at `pricing`), by the sum of their $/GPU-hour. When no
    provider lists them all there is no like-for-like price: each GPU takes its lowest listed price,
    flagged `like_for_like: false`. GPUs no provider lists stay unpriced (tco.prices) either way.
    """
    table: dict[str, dict[str, float]] = {}
    for x in prices:
        if x.pricing == pricing:
            row = table.setdefault(x.provider, {})
            row[x.gpu] = min(row.get(x.gpu, float("inf")), x.usd_per_gpu_hour)
    listed = {g for row in table.values() for g in row}
    compared = sorted({g for g in gpus if g in listed})
    out: dict[str, Any] = {
        "pricing": pricing,
        "compared_gpus": compared,
        "not_listed": sorted({g for g in gpus if g not in listed}),
    }
    if provider is not None:
        if provider not in table:
            raise InputError(
                f"params.yaml: tco.provider = {provider!r} lists no {pricing} price in data/catalog/prices.csv; "
                f"providers with {pricing} prices: {', '.join(sorted(table)) or '(none)'}"
            )
        missing = [g for g in compared if g not in table[provider]]
        return {
            **out,
            "provider": provider,
            "like_for_like": True,
            "rule": f"params tco.provider: {provider}'s {pricing} prices only"
            + (f"; it does not list {', '.join(missing)} (unpriced: set tco.prices)" if missing else ""),
            "unpriced_by_provider": missing,
        }
    full = {n: sum(row[g] for g in compared) for n, row in table.items() if all(g in row for g in compared)}
    if compared and full:
        name = min(full, key=lambda n: (full[n], n))
        return {
            **out,
            "provider": name,
            "like_for_like": True,
            "rule": CHEAPEST_RULE.format(pricing=pricing),
            "listing_every_compared_gpu": {n: round(v, 4) for n, v in sorted(full.items())},
            "unpriced_by_provider": [],
        }
    return {
        **out,
        "provider": None,
        "like_for_like": False,
        "rule": NO_LIKE_FOR_LIKE.format(gpus=", ".join(compared) or "none listed", pricing=pricing),
        "listing_every_compared_gpu": {},
        "unpriced_by_provider": [],
    }


def lookup(gpu: str, prices: list[Price], p: dict[str, Any], basis: dict[str, Any] | None) -> dict[str, Any]:
    """One GPU's $/GPU-hour on the comparison's basis: a tco.prices override, else the basis provider's list price.

    Returns usd_per_gpu_hour (None when unpriced), price_source, like_for_like and, when unpriced, a note.
    """
    override = (p["prices"] or {}).get(gpu)
    if override is not None:
        return {"usd_per_gpu_hour": float(override), "price_source": "params tco.prices", "like_for_like": True}
    provider = (basis or {}).get("provider") if basis is not None else p["provider"]
    price = price_for(gpu, prices, p["pricing"], provider)
    like = bool((basis or {}).get("like_for_like", provider is not None))
    if price is None:
        where = f"{provider} lists no {p['pricing']} price" if provider else f"no {p['pricing']} price"
        return {
            "usd_per_gpu_hour": None,
            "price_source": None,
            "like_for_like": like,
            "note": f"{where} for {gpu} in data/catalog/prices.csv: set tco.prices.{gpu}",
        }
    src = f"{price.provider} {price.instance} ({price.as_of}): {price.source}"
    if not like:
        src += " [lowest listed price of any provider: not like-for-like]"
    return {"usd_per_gpu_hour": price.usd_per_gpu_hour, "price_source": src, "like_for_like": like}
