"""The per-request figures of a set of requests (the whole log or one tier): lengths, caps, sessions, prefix reuse.

Requests is a view over requests.parquet (a WHERE clause whose values are bound parameters) with the
profile's queries; its arrival-time queries come from workload_arrivals.ArrivalQueries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pipeline.traffic.sources import bound_view
from pipeline.workload_arrivals import ArrivalQueries
from pipeline.workload_settings import PERCENTILES, rounded

if TYPE_CHECKING:
    import pandas as pd

LENGTH_EXPRS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "context_tokens": "input_tokens + output_tokens",
}
LENGTH_SELECT = ", ".join(
    f"quantile_cont({e}, [{', '.join(str(q) for q in PERCENTILES.values())}]), avg({e}), max({e})"
    for e in LENGTH_EXPRS.values()
)
MEANS_AND_MAXIMA = ", ".join(f"avg({e}), max({e})" for e in LENGTH_EXPRS.values())  # LENGTH_SELECT less percentiles


def length_stats(row: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    """p50..p99, mean and max of each length from the 9 values of LENGTH_SELECT."""
    out = {}
    for i, name in enumerate(LENGTH_EXPRS):
        qv, mean, mx = row[3 * i : 3 * i + 3]
        stats = {k: rounded(v, 2) for k, v in zip(PERCENTILES, qv, strict=True)}
        stats["mean"] = rounded(mean, 2)
        stats["max"] = int(mx)
        out[name] = stats
    return out


def session_stats(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    """Sessions, and calls per session (p50, mean, max), from count(*), median(n), avg(n), max(n)."""
    if not row or not row[0]:
        return None
    return {
        "sessions": int(row[0]),
        "calls_p50": rounded(row[1], 2),
        "calls_mean": rounded(row[2], 3),
        "calls_max": int(row[3]),
    }


def reuse_stats(total: Any, distinct: Any) -> dict[str, Any] | None:
    """Prefix reuse from the count of all and of distinct hash_ids."""
    if not total:
        return None
    return {
        "blocks_total": int(total),
        "blocks_distinct": int(distinct),
        "reuse_fraction": rounded(1 - distinct / total, 4),
        "formula": "1 - distinct hash_ids / all hash_ids, over the whole log",
    }


class Requests(ArrivalQueries):
    """A view over requests.parquet (optionally one tier of it) with the profile's queries."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, path: Path, where: str = "TRUE", values: dict[str, Any] | None = None
    ) -> None:
        self.con = con
        self.path = path
        self.where = where
        # A view whose file path (and tier name, in `values`) are bound parameters, never SQL text.
        self.rel = bound_view(
            con, f"SELECT * FROM read_parquet($path) WHERE {where}", {"path": str(path), **(values or {})}
        )
        self._seconds: str | None = None
        self.columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {self.rel}").fetchall()]

    def lengths(self, max_in: int = 0, max_out: int = 0) -> dict[str, dict[str, Any]]:
        """p50/p90/p95/p99, mean and max of input, output and context (= input + output, per request).

        The same scan counts rows at each column's maximum (kept in self.at_max for caps()).
        """
        sel = LENGTH_SELECT
        extra = f"count(*) FILTER (WHERE input_tokens = {max_in}), count(*) FILTER (WHERE output_tokens = {max_out})"
        row = self.one(f"SELECT {sel}, {extra} FROM {self.rel}")
        self.at_max = {"input_tokens": int(row[9]), "output_tokens": int(row[10])}
        return length_stats(row[:9])

    def span(self) -> tuple[int, float, float, int, int]:
        """Count, first and last arrival, and the largest input and output (Parquet statistics make this cheap)."""
        n, first, last, max_in, max_out = self.one(
            f"SELECT count(*), min(arrival_s), max(arrival_s), max(input_tokens), max(output_tokens) FROM {self.rel}"
        )
        return int(n), float(first), float(last), int(max_in), int(max_out)

    def caps(self, n: int, maxima: dict[str, int], min_share: float) -> list[dict[str, Any]]:
        """Columns where many rows sit exactly at the maximum: the sign of a max_tokens cap."""
        out = []
        for col in ("input_tokens", "output_tokens"):
            at_max = self.at_max[col]
            if at_max >= 10 and at_max / n >= min_share:
                out.append({"column": col, "max": maxima[col], "rows_at_max": at_max, "share": at_max / n})
        return out

    def sessions(self) -> dict[str, Any] | None:
        if "session_id" not in self.columns:
            return None
        row = self.one(
            f"SELECT count(*), median(n), avg(n), max(n) FROM (SELECT session_id, count(*) AS n FROM {self.rel} "
            "WHERE session_id IS NOT NULL GROUP BY 1)"
        )
        return session_stats(row)

    def prefix_reuse(self) -> dict[str, Any] | None:
        """Share of prefix blocks (hash_ids) already seen in an earlier block: 1 - distinct / total."""
        if "hash_ids" not in self.columns:
            return None
        total, distinct = self.one(
            f"SELECT count(h), count(DISTINCT h) FROM (SELECT unnest(hash_ids) AS h FROM {self.rel})"
        )
        return reuse_stats(total, distinct)

    def mean_e2e_s(self) -> float | None:
        if "e2e_ms" not in self.columns:
            return None
        v = self.one(f"SELECT avg(e2e_ms) FROM {self.rel} WHERE e2e_ms IS NOT NULL")[0]
        return None if v is None else v / 1000.0

    def length_cdf(self, points: int = 200) -> pd.DataFrame:
        """Quantile curves of input, output and context tokens (for CDF charts), in long form."""
        qs = "[" + ", ".join(f"{i / points:.6f}" for i in range(points + 1)) + "]"
        row = self.one(
            f"SELECT quantile_cont(input_tokens, {qs}), quantile_cont(output_tokens, {qs}), "
            f"quantile_cont(input_tokens + output_tokens, {qs}) FROM {self.rel}"
        )
        import pandas as pd

        levels = [i / points for i in range(points + 1)]
        frames = [
            pd.DataFrame({"metric": name, "tokens": vals, "cumulative_share": levels})
            for name, vals in zip(("input_tokens", "output_tokens", "context_tokens"), row, strict=True)
        ]
        return pd.concat(frames, ignore_index=True)
