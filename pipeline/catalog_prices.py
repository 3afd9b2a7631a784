"""The price catalog (data/catalog/prices.csv): one dated list price per GPU-hour and its source.

Read by step 12 (tco) and checked by params before any stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import paths
from pipeline.catalog_csv import read_csv_rows
from pipeline.errors import InputError

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
    if not path.exists():
        raise InputError(f"price catalog not found: {path}; expected a CSV with columns {', '.join(PRICE_COLUMNS)}")
    rows = read_csv_rows(path, PRICE_COLUMNS)  # UTF-8, every column, no short rows
    out, bad = [], []
    for i, r in enumerate(rows, start=2):
        try:
            price = float(r["usd_per_gpu_hour"])
        except ValueError:
            price = -1.0
        if not 0 < price < float("inf") or not r["source"].strip() or not r["gpu"].strip():
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
