"""The per-request figures of a set of requests (the whole log or one tier): lengths, caps, sessions, prefix reuse.

Also the figures the shared passes (workload_tiers.Groups) read off counts instead of every row: quantiles from the
rows at each distinct value (quantiles_from_counts), and each session's calls in every tier from one GROUP BY
session_id (packed_sessions, or filtered_sessions for sessions too long to pack).

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

SESSION_TIERS_PER_PASS = 16  # per-tier call counts per session in one GROUP BY (8 bytes each per session)
SESSION_PACK_BITS = 15  # bits of a tier's calls in a session (packed_sessions): exact below 2^15 calls
SESSION_TIERS_PER_SUM = 8  # tiers packed in one HUGEINT sum: 8 x 15 bits < 127

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


def quantiles_from_counts(
    con: duckdb.DuckDBPyConnection, runs: list[tuple[Any, Any]], qs: list[float], value: str = "x"
) -> list[list[float]]:
    """For each run (its distinct integers, ascending, and the rows at each, as numpy arrays), quantile_cont at each
    of `qs` over those rows: the very doubles DuckDB's quantile_cont (or median, its q = 0.5) gives over every row.
    `value`: SQL of what the rows hold, from the BIGINT x (monotone in it; "x": the integers themselves).

    quantile_cont interpolates linearly between the order statistics at ranks floor and ceil of (n - 1) x q.
    Those two values are read off the cumulative counts; the interpolation is DuckDB's own, run on the two of
    them (quantile_cont over [lo, hi] at the fraction (n - 1) x q - floor((n - 1) x q)), for every run in one query;
    so is the value at a whole rank, unless `value` is x (its double is the integer's).
    """
    import math

    import numpy as np

    out: list[list[float]] = []
    between: list[tuple[int, int, int, int, float]] = []  # run, q, lo, hi, fraction
    for r, (v, c) in enumerate(runs):
        cum = np.cumsum(c)
        n = int(cum[-1])
        figures = [0.0] * len(qs)
        for j, q in enumerate(qs):
            rank = (n - 1) * q
            lo_rank, hi_rank = math.floor(rank), math.ceil(rank)
            lo = int(v[int(np.searchsorted(cum, lo_rank, side="right"))])
            figures[j] = float(lo)
            if hi_rank != lo_rank:
                hi = int(v[int(np.searchsorted(cum, hi_rank, side="right"))])
                between.append((r, j, lo, hi, rank - lo_rank))
            elif value != "x":
                between.append((r, j, lo, lo, 0.0))
        out.append(figures)
    if between:
        values: dict[str, Any] = {f"d{i}": b[4] for i, b in enumerate(between)}
        values["ids"] = [i for i in range(len(between)) for _ in (0, 1)]
        values["xs"] = [x for b in between for x in (b[2], b[3])]
        aggs = ", ".join(f"quantile_cont(x, $d{i}) FILTER (WHERE i = {i})" for i in range(len(between)))
        row = con.execute(
            f"SELECT {aggs} FROM (SELECT i, {value} AS x FROM (SELECT unnest($ids) AS i, unnest($xs)::BIGINT AS x))",
            values,
        ).fetchall()[0]
        for (r, j, *_), got in zip(between, row, strict=True):
            out[r][j] = got
    return out


def packed_sessions(
    con: duckdb.DuckDBPyConnection, src: str, values: dict[str, Any], n_tiers: int
) -> dict[int | None, Any] | None:
    """Per group (None: the whole log; 0..n_tiers - 1: the tier g of each row of `src`, with `values` bound), the
    (count, median, mean, max) of calls per session, from one pass: per session, its calls n and, SESSION_TIERS_PER_SUM tiers a
    HUGEINT, sum(2^(SESSION_PACK_BITS x slot)) over its calls, which holds its calls in each tier exactly
    while n < 2^SESSION_PACK_BITS (each tier's calls are at most n: no slot carries into the next). Then, over
    the sessions: per group the sessions at each number of calls (a small table, for the median), max(n) (the
    check), and avg of the calls as BIGINT (DuckDB's avg over the numbers the FILTER counts give). None when
    some session has 2^SESSION_PACK_BITS calls or more."""
    import numpy as np

    bits, per, tiers = SESSION_PACK_BITS, SESSION_TIERS_PER_SUM, range(n_tiers)
    packs = range(0, len(tiers), per)
    # a pack's sum counts only its own tiers' calls: the CASE shifts only those rows (a negative shift is an error)
    sums = ", ".join(
        (
            f"coalesce(sum(CASE WHEN g >= {p} AND g < {p + per} THEN 1::HUGEINT << ({bits} * (g - {p})) END), 0)"
            if len(tiers) > per
            else f"coalesce(sum(1::HUGEINT << ({bits} * g)), 0)"
        )
        + f" AS p{p // per}"
        for p in packs
    )
    calls = ", ".join(f"((p{j // per} >> {bits * (j % per)}) & {2**bits - 1})::BIGINT AS c{j}" for j in tiers)
    which = " ".join(f"WHEN grouping(c{j}) = 0 THEN {j}" for j in tiers)
    value = ", ".join(f"CASE WHEN grouping(c{j}) = 0 THEN c{j} END" for j in tiers)
    means = ", ".join(["avg(n)", *(f"avg(c{j}) FILTER (WHERE c{j} > 0)" for j in tiers)])
    sets = ", ".join(["(n)", *(f"(c{j})" for j in tiers)])
    try:
        data = con.execute(
            f"WITH s AS MATERIALIZED (SELECT count(*) AS n, {sums} FROM {src} WHERE session_id IS NOT NULL "
            f"GROUP BY session_id), calls AS (SELECT n, {calls} FROM s), "
            f"h AS (SELECT CASE WHEN grouping(n) = 0 THEN -1 {which} END AS k, "
            f"coalesce(CASE WHEN grouping(n) = 0 THEN n END, {value}) AS v, count(*) AS c "
            f"FROM calls GROUP BY GROUPING SETS ({sets})), "
            f"a AS (SELECT max(n) AS top, [{means}] AS means FROM calls) "
            "SELECT k, v, h.c AS c, top, means FROM h, a WHERE v > 0 ORDER BY k, v",
            values,
        ).fetchall()
    except duckdb.OutOfRangeException:  # a session so long that its packed sum passes 127 bits
        return None
    if not data:
        return {}
    if data[0][3] >= 2**bits:
        return None
    k, v, c = (np.array([r[i] for r in data], dtype=np.int64) for i in range(3))
    avg = data[0][4]
    cuts = (np.flatnonzero(np.diff(k) != 0) + 1).tolist()
    spans = list(zip([0, *cuts], [*cuts, len(k)], strict=True))
    medians = quantiles_from_counts(con, [(v[a:b], c[a:b]) for a, b in spans], [0.5])
    out: dict[int | None, Any] = {}
    for (a, b), (median,) in zip(spans, medians, strict=True):
        key = None if k[a] == -1 else int(k[a])
        out[key] = (int(c[a:b].sum()), median, avg[0 if key is None else key + 1], int(v[b - 1]))
    return out


def filtered_sessions(
    con: duckdb.DuckDBPyConnection, src: str, values: dict[str, Any], n_tiers: int
) -> dict[int | None, Any]:
    """packed_sessions' figures with one FILTER count per tier, SESSION_TIERS_PER_PASS tiers a pass (for a
    log whose sessions are too long to pack); each figure is DuckDB's own aggregate over those numbers."""
    stats = "count(*), median({n}), avg({n}), max({n})"
    rows = {}
    tiers = list(range(n_tiers))
    for start in range(0, len(tiers), SESSION_TIERS_PER_PASS):
        part = tiers[start : start + SESSION_TIERS_PER_PASS]
        counts = ["count(*) AS n"] if start == 0 else []
        counts += [f"count(*) FILTER (WHERE g = {j}) AS c{j}" for j in part]
        figures = [stats.format(n="n")] if start == 0 else []
        figures += [
            ", ".join(f"{f} FILTER (WHERE c{j} > 0)" for f in stats.format(n=f"c{j}").split(", ")) for j in part
        ]
        row = con.execute(
            f"SELECT {', '.join(figures)} FROM (SELECT {', '.join(counts)} FROM {src} "
            "WHERE session_id IS NOT NULL GROUP BY session_id)",
            values,
        ).fetchall()[0]
        if start == 0:
            rows[None], row = row[:4], row[4:]
        for i, j in enumerate(part):
            if row[4 * i]:  # a tier without sessions has no row, as with a (tier, session) grouping
                rows[j] = row[4 * i : 4 * i + 4]
    return rows
