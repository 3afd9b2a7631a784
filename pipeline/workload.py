"""Step 1: the workload profile, computed in DuckDB over the normalized request table.

Definitions (method.md step 1): linear-interpolation percentiles (quantile_cont); context =
input + output per request; RPS series over every 1-s (and 60-s) bucket from floor(first) to
floor(last) with empty buckets as 0; mean = requests / (last - first); peak, not average,
feeds sizing (param sizing_rate); archetype from the p50 lengths; concurrency by Little's law.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pipeline.errors import InputError
from pipeline.rates import RATE_DEFINITIONS, RATE_NAMES, SIZING_RATE_KEY
from pipeline.traffic.sources import bound_view, connect, sql_ident

if TYPE_CHECKING:
    import pandas as pd

PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
RESOLUTION_CANDIDATES_S = (3600.0, 60.0, 1.0, 0.1, 0.01, 0.001)
EPOCH_2000_S = 946_684_800.0
TIER_COLUMNS = ("tier", "model", "tenant")
MAX_TIERS = 50
RATE_KEYS = RATE_NAMES  # pipeline.rates.RateName: the one list of rate names
MOONCAKE_BLOCK_TOKENS = 512
PER_MINUTE_BUCKETS = (
    "clock minutes: each bucket is [hh:mm:00, hh:mm+1:00) UTC (for a trace-relative clock, [60k, 60k + 60) s "
    "of the trace's own clock), not 60-s windows counted from the first arrival; the first and last minutes "
    "may be partly covered by the log and still count as whole minutes (requests / 60)"
)
BATCHED_DEFINITION = (
    "bursts (arrivals within workload.batch_jitter_s of each other) on a regular tick coarser than 1 s: at least "
    "10 bursts of 2+ requests on average, 90% of requests in bursts no wider than 2 x jitter, 90% of burst "
    "intervals whole multiples of the median interval; series finer than the tick are null and sizing uses a "
    "coarser one"
)


@dataclass(frozen=True)
class ProfileSettings:
    """The params that shape a profile (workload section plus the SLO)."""

    sizing_rate: str = "per_minute_p95"
    long_input_tokens: int = 2048
    long_output_tokens: int = 512
    agentic_min_calls_per_session: float = 3
    cap_min_share: float = 0.01
    max_gap_s: float = 600
    batch_jitter_s: float = 0.05
    ttft_p99_ms: float = 2000.0
    itl_p99_ms: float | None = 50.0
    tier_column: str | None = "auto"
    tier_rules: tuple[dict[str, Any], ...] = ()
    tier_map: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_params(cls, workload: dict[str, Any], slo: dict[str, Any]) -> ProfileSettings:
        """Build from validated params sections."""
        tiers = workload.get("tiers") or {}
        return cls(
            sizing_rate=workload["sizing_rate"],
            long_input_tokens=workload["long_input_tokens"],
            long_output_tokens=workload["long_output_tokens"],
            agentic_min_calls_per_session=workload["agentic_min_calls_per_session"],
            cap_min_share=workload["cap_min_share"],
            max_gap_s=workload["max_gap_s"],
            batch_jitter_s=workload.get("batch_jitter_s", 0.05),
            ttft_p99_ms=slo["ttft_p99_ms"],
            itl_p99_ms=slo.get("itl_p99_ms"),
            tier_column=tiers.get("column", "auto"),
            tier_rules=tuple(tiers.get("rules") or ()),
            tier_map=tuple(sorted((tiers.get("map") or {}).items())),
        )


def _r(value: Any, digits: int = 4) -> Any:
    """Round for stable metrics; whole numbers print as integers."""
    if value is None:
        return None
    v = round(float(value), digits)
    return int(v) if v.is_integer() else v


_connect = connect  # traffic.sources.connect (validation uses it too), under this module's old name


_LENGTH_EXPRS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "context_tokens": "input_tokens + output_tokens",
}
_LENGTH_SELECT = ", ".join(
    f"quantile_cont({e}, [{', '.join(str(q) for q in PERCENTILES.values())}]), avg({e}), max({e})"
    for e in _LENGTH_EXPRS.values()
)


def _length_stats(row: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    """p50..p99, mean and max of each length from the 9 values of _LENGTH_SELECT."""
    out = {}
    for i, name in enumerate(_LENGTH_EXPRS):
        qv, mean, mx = row[3 * i : 3 * i + 3]
        stats = {k: _r(v, 2) for k, v in zip(PERCENTILES, qv, strict=True)}
        stats["mean"] = _r(mean, 2)
        stats["max"] = int(mx)
        out[name] = stats
    return out


def _session_stats(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    """Sessions, and calls per session (p50, mean, max), from count(*), median(n), avg(n), max(n)."""
    if not row or not row[0]:
        return None
    return {
        "sessions": int(row[0]),
        "calls_p50": _r(row[1], 2),
        "calls_mean": _r(row[2], 3),
        "calls_max": int(row[3]),
    }


def _reuse_stats(total: Any, distinct: Any) -> dict[str, Any] | None:
    """Prefix reuse from the count of all and of distinct hash_ids."""
    if not total:
        return None
    return {
        "blocks_total": int(total),
        "blocks_distinct": int(distinct),
        "reuse_fraction": _r(1 - distinct / total, 4),
        "formula": "1 - distinct hash_ids / all hash_ids, over the whole log",
    }


def _off_grid_sql(u: float, first: str) -> str:
    """SQL true for an arrival off the tick of u seconds counted from `first` (a DOUBLE expression)."""
    tol = min(1e-3, 1e-4 / u)
    return f"abs((arrival_s - {first}) / {u} - round((arrival_s - {first}) / {u})) > {tol}"


class Requests:
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

    def seconds_table(self) -> str:
        """Arrivals per 1-s bucket (one GROUP BY over the log), kept as a small temp table.

        Every rate series (1 s, 60 s, hour of day) is summed from it, and the first and last arrival
        of each second give every inter-arrival gap of 1 s or more exactly, so the log is scanned once.
        """
        if self._seconds is None:
            name = f"sec_{len(self.con.execute('SELECT * FROM duckdb_tables()').fetchall())}"
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {sql_ident(name)} AS SELECT floor(arrival_s)::BIGINT AS k, count(*) AS n, "
                f"min(arrival_s) AS lo, max(arrival_s) AS hi FROM {self.rel} GROUP BY 1"
            )
            self._seconds = name
        return self._seconds

    def one(self, sql: str) -> tuple[Any, ...]:
        return self.con.execute(sql).fetchall()[0]

    def lengths(self, max_in: int = 0, max_out: int = 0) -> dict[str, dict[str, Any]]:
        """p50/p90/p95/p99, mean and max of input, output and context (= input + output, per request).

        The same scan counts rows at each column's maximum (kept in self.at_max for caps()).
        """
        sel = _LENGTH_SELECT
        extra = f"count(*) FILTER (WHERE input_tokens = {max_in}), count(*) FILTER (WHERE output_tokens = {max_out})"
        row = self.one(f"SELECT {sel}, {extra} FROM {self.rel}")
        self.at_max = {"input_tokens": int(row[9]), "output_tokens": int(row[10])}
        return _length_stats(row[:9])

    def span(self) -> tuple[int, float, float, int, int]:
        """Count, first and last arrival, and the largest input and output (Parquet statistics make this cheap)."""
        n, first, last, max_in, max_out = self.one(
            f"SELECT count(*), min(arrival_s), max(arrival_s), max(input_tokens), max(output_tokens) FROM {self.rel}"
        )
        return int(n), float(first), float(last), int(max_in), int(max_out)

    def rate_series_stats(self, width_s: int) -> dict[str, float]:
        """Quantiles of the arrival-rate series in buckets of width_s seconds (empty buckets count as 0)."""
        sec = self.seconds_table()
        lo, hi = self.one(f"SELECT floor(min(k) / {width_s})::BIGINT, floor(max(k) / {width_s})::BIGINT FROM {sec}")
        row = self.one(
            f"WITH b AS (SELECT floor(k / {width_s})::BIGINT AS k, sum(n) AS n FROM {sec} GROUP BY 1) "
            f"SELECT quantile_cont(coalesce(n, 0) / {width_s}, [0.95, 0.99]), max(coalesce(n, 0)) / {width_s}, count(*) "
            f"FROM range({lo}, {hi} + 1) r(k) LEFT JOIN b USING (k)"
        )
        (p95, p99), peak, buckets = row
        return {"p95": p95, "p99": p99, "peak": peak, "buckets": buckets}

    def per_minute_series(self) -> pd.DataFrame:
        """Requests per second averaged over each minute (the figure 1.3 series), empty minutes as 0."""
        sec = self.seconds_table()
        lo, hi = self.one(f"SELECT floor(min(k) / 60)::BIGINT, floor(max(k) / 60)::BIGINT FROM {sec}")
        return self.con.execute(
            f"WITH b AS (SELECT floor(k / 60)::BIGINT AS k, sum(n) AS n FROM {sec} GROUP BY 1) "
            f"SELECT range * 60.0 AS minute_start_s, coalesce(n, 0) AS requests, coalesce(n, 0) / 60.0 AS rps "
            f"FROM range({lo}, {hi} + 1) LEFT JOIN b ON b.k = range ORDER BY 1"
        ).df()

    def hourly(self, epoch_clock: bool, first: float) -> dict[str, dict[str, Any]]:
        """Per hour of day (UTC, or hours since the trace start): mean and p95 of the per-minute rate."""
        sec = self.seconds_table()
        lo, hi = self.one(f"SELECT floor(min(k) / 60)::BIGINT, floor(max(k) / 60)::BIGINT FROM {sec}")
        hour = (
            "(floor(range * 60 / 3600)::BIGINT % 24)"
            if epoch_clock
            else f"(floor((range * 60 - {first}) / 3600)::BIGINT % 24)"
        )
        rows = self.con.execute(
            f"WITH b AS (SELECT floor(k / 60)::BIGINT AS k, sum(n) AS n FROM {sec} GROUP BY 1), "
            f"s AS (SELECT {hour} AS hour, coalesce(n, 0) AS n FROM range({lo}, {hi} + 1) LEFT JOIN b ON b.k = range) "
            "SELECT hour, avg(n / 60.0), quantile_cont(n / 60.0, 0.95), max(n / 60.0), sum(n) FROM s GROUP BY hour ORDER BY hour"
        ).fetchall()
        return {
            f"{int(h):02d}": {
                "mean_rps": _r(m),
                "p95_rps": _r(p),
                "peak_minute_rps": _r(pk),
                "requests": int(n),
            }
            for h, m, p, pk, n in rows
        }

    def gaps(self, max_gap_s: float) -> tuple[float | None, int]:
        """The longest inter-arrival gap and how many exceed max_gap_s.

        Gaps of 1 s or more always cross a second boundary, so they are exactly the distance from
        one non-empty second's last arrival to the next one's first (read from the seconds table);
        only a threshold under 1 s needs the row-level pass.
        """
        if max_gap_s < 1:
            row = self.one(
                f"SELECT max(d), count(*) FILTER (WHERE d > {max_gap_s}) FROM "
                f"(SELECT arrival_s - lag(arrival_s) OVER (ORDER BY arrival_s) AS d FROM {self.rel})"
            )
            return row[0], int(row[1])
        sec = self.seconds_table()
        row = self.one(
            f"SELECT max(g), count(*) FILTER (WHERE g > {max_gap_s}) FROM "
            f"(SELECT lo - lag(hi) OVER (ORDER BY k) AS g FROM {sec})"
        )
        return row[0], int(row[1])

    def on_grid(self, u: float, first: float) -> bool:
        """True when every timestamp sits on a tick of u seconds from the first arrival; stops at the first miss.

        The tolerance is 0.1% of the tick, at most 0.1 ms: a log whose arrivals all fall within a few
        seconds must not read as sitting on an hourly grid.
        """
        off = _off_grid_sql(u, str(first))
        return not self.con.execute(f"SELECT 1 FROM {self.rel} WHERE {off} LIMIT 1").fetchall()

    def resolution(self, n: int, first: float) -> float:
        """The largest tick (1 h, 1 min, 1 s, 100 ms, 10 ms, 1 ms) that every timestamp sits on; 0.001 = 1 ms or finer.

        The grids are nested, so probing from the coarsest stops at the first that holds; a probe
        that fails stops at its first off-grid row. Finer than 1 ms never makes a rate bucket
        coarse, so the profile stops there (the smallest inter-arrival gap is not a tick: a sparse
        trace with ms timestamps has gaps of seconds, and must not read as coarse).
        """
        if n > 1:
            for u in RESOLUTION_CANDIDATES_S:
                if self.on_grid(u, first):
                    return u
            return RESOLUTION_CANDIDATES_S[-1]
        return 0.0

    def batches(self, jitter_s: float) -> dict[str, Any] | None:
        """Batched arrivals: requests that arrive in bursts on a regular tick coarser than 1 s (method.md step 1).

        From the seconds table: consecutive non-empty seconds whose arrivals lie within jitter_s of each
        other form one burst. The log is batched when there are at least 10 bursts, they average 2 or more
        requests, 90% of requests sit in bursts no wider than 2 x jitter_s, the median burst-to-burst
        interval (the tick) exceeds 1 s, and 90% of the intervals are whole multiples of the tick (within
        2 x jitter_s; a tick with no arrivals is allowed). Returns None when the log is not batched.
        """
        sec = self.seconds_table()
        tol = 2 * jitter_s
        row = self.one(
            f"WITH s AS (SELECT k, n, lo, hi, lo - lag(hi) OVER (ORDER BY k) AS gap FROM {sec}), "
            f"g AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap > {jitter_s} THEN 1 ELSE 0 END) OVER (ORDER BY k) AS b FROM s), "
            "u AS (SELECT b, min(lo) AS start, max(hi) - min(lo) AS width, sum(n) AS n FROM g GROUP BY b), "
            "d AS (SELECT start - lag(start) OVER (ORDER BY start) AS d, width, n FROM u) "
            f"SELECT count(*), sum(n), sum(n) FILTER (WHERE width <= {tol}), median(d) FROM d"
        )
        bursts, requests, tight, tick = int(row[0]), int(row[1] or 0), int(row[2] or 0), row[3]
        if bursts < 10 or requests < 2 * bursts or tight < 0.9 * requests or tick is None or tick <= 1.0 + tol:
            return None
        on_tick, intervals, refined = self.one(
            f"WITH s AS (SELECT k, n, lo, hi, lo - lag(hi) OVER (ORDER BY k) AS gap FROM {sec}), "
            f"g AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap > {jitter_s} THEN 1 ELSE 0 END) OVER (ORDER BY k) AS b FROM s), "
            "u AS (SELECT b, min(lo) AS start FROM g GROUP BY b), "
            "d AS (SELECT start - lag(start) OVER (ORDER BY start) AS d FROM u), "
            f"m AS (SELECT d, greatest(round(d / {tick}), 1) AS m FROM d WHERE d IS NOT NULL) "
            f"SELECT count(*) FILTER (WHERE abs(d - m * {tick}) <= {tol}), count(*), "
            f"median(d / m) FILTER (WHERE abs(d - m * {tick}) <= {tol}) FROM m"
        )
        if not intervals or on_tick < 0.9 * intervals:
            return None
        return {
            "tick_s": _r(refined, 3),
            "batches": bursts,
            "requests_per_batch_mean": _r(requests / bursts, 2),
            "share_of_intervals_on_tick": _r(on_tick / intervals, 4),
            "share_of_requests_in_tight_batches": _r(tight / requests, 4),
            "jitter_s": jitter_s,
        }

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
        return _session_stats(row)

    def prefix_reuse(self) -> dict[str, Any] | None:
        """Share of prefix blocks (hash_ids) already seen in an earlier block: 1 - distinct / total."""
        if "hash_ids" not in self.columns:
            return None
        total, distinct = self.one(
            f"SELECT count(h), count(DISTINCT h) FROM (SELECT unnest(hash_ids) AS h FROM {self.rel})"
        )
        return _reuse_stats(total, distinct)

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


class Groups:
    """The whole log and each of its tiers, profiled together: every row-level figure of every group
    comes from one shared pass over requests.parquet (GROUP BY GROUPING SETS ((), (tier))), not one
    pass per tier, with the same SQL expressions as Requests' own queries, so every figure is the same.

    Passes: span (count, first/last arrival, largest lengths, mean e2e), lengths (quantiles, means,
    rows at each maximum) together with the timestamp-grid probes, arrivals per 1-s bucket, calls per
    session, prefix blocks. Group key None is the whole log, 0.. the tiers in name order.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, path: Path, expr: str | None = None, values: dict[str, Any] | None = None
    ) -> None:
        self.con, self.path = con, path
        self.columns = [
            r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(path)}).fetchall()
        ]
        self.expr_values = dict(values or {})
        self.values: dict[str, Any] = {"path": str(path), **self.expr_values}
        self.expr = expr
        e2e = "avg(e2e_ms)" if "e2e_ms" in self.columns else "NULL"
        span = f"count(*), min(arrival_s), max(arrival_s), max(input_tokens), max(output_tokens), {e2e}"
        if expr is None:
            self.names: list[str] = []
            rows = [(None, *self.one(f"SELECT {span} FROM read_parquet($path)"))]
        else:
            rows = con.execute(
                f"SELECT t, {span} FROM (SELECT *, {expr} AS t FROM read_parquet($path)) "
                "GROUP BY GROUPING SETS ((), (t)) ORDER BY grouping(t) DESC, t",
                self.values,
            ).fetchall()
            self.names = [r[0] for r in rows[1:]]
        self.keys: list[int | None] = [None, *range(len(self.names))]
        self.spans = {k: r[1:6] for k, r in zip(self.keys, rows, strict=True)}
        self.e2e_ms = {k: r[6] for k, r in zip(self.keys, rows, strict=True)}
        self.tiered = False
        self._cache: dict[str, dict[int | None, Any]] = {}
        self._seconds: dict[int | None, str] = {}

    def use_tiers(self, enabled: bool = True) -> None:
        """Set what the passes group by: the whole log and each tier (once the caller has checked how many
        tiers there are), or the whole log alone."""
        self.tiered = enabled and bool(self.names)
        if self.tiered:
            cases = " ".join(f"WHEN $grp_{i} THEN {i}" for i in range(len(self.names)))
            self.values.update({f"grp_{i}": name for i, name in enumerate(self.names)})
            self.src = f"(SELECT *, CASE {self.expr} {cases} END AS g FROM read_parquet($path))"
        else:
            self.src = "(SELECT *, NULL::INTEGER AS g FROM read_parquet($path))"

    def one(self, sql: str) -> tuple[Any, ...]:
        return self.con.execute(sql, self.values).fetchall()[0]

    def _grouped(self, select: str, src: str) -> dict[int | None, tuple]:
        """`select` per group (key None: every row of `src`; else its tier g); groups without rows are absent."""
        if not self.tiered:
            sql = f"SELECT NULL, {select} FROM {src}"
        else:
            sql = (
                f"SELECT CASE WHEN grouping(g) = 1 THEN NULL ELSE g END, {select} FROM {src} "
                "GROUP BY GROUPING SETS ((), (g))"
            )
        return {r[0]: r[1:] for r in self.con.execute(sql, self.values).fetchall()}

    def _per_group_sql(self, values: dict[int | None, str], sql_type: str) -> tuple[str, str]:
        """SQL of the whole log's value and of each row's tier value (a list indexed by g); same literal text."""
        whole = f"({values[None]})::{sql_type}"
        tiers = [f"({values[k]})::{sql_type}" for k in self.keys[1:]] or ["NULL"]
        return whole, f"[{', '.join(tiers)}][g + 1]"

    def lengths(self) -> dict[int | None, Any]:
        """Per group: the 9 length figures, the rows at each maximum, and the timestamp resolution."""
        if "lengths" not in self._cache:
            sel = [_LENGTH_SELECT]
            first = {k: str(float(s[1])) for k, s in self.spans.items()}
            f_all, f_grp = self._per_group_sql(first, "DOUBLE")
            cols = {}
            for col, i in (("input_tokens", 3), ("output_tokens", 4)):
                cols[col] = self._per_group_sql({k: str(int(s[i])) for k, s in self.spans.items()}, "BIGINT")
            for col, (m_all, m_grp) in cols.items():
                sel += [f"count(*) FILTER (WHERE {col} = {m_all})", f"count(*) FILTER (WHERE {col} = {m_grp})"]
            for u in RESOLUTION_CANDIDATES_S:
                sel += [f"bool_and(NOT ({_off_grid_sql(u, f_all)}))", f"bool_and(NOT ({_off_grid_sql(u, f_grp)}))"]
            rows = self._grouped(", ".join(sel), self.src)
            out = {}
            for k, row in rows.items():
                pick = 0 if k is None else 1  # the whole log's column, or the tier's
                at_max = {"input_tokens": int(row[9 + pick]), "output_tokens": int(row[11 + pick])}
                grid = [row[13 + 2 * j + pick] for j in range(len(RESOLUTION_CANDIDATES_S))]
                n = self.spans[k][0]
                res = next((u for u, ok in zip(RESOLUTION_CANDIDATES_S, grid, strict=True) if ok), None)
                resolution = (res or RESOLUTION_CANDIDATES_S[-1]) if n > 1 else 0.0
                out[k] = (row[:9], at_max, resolution)
            self._cache["lengths"] = out
        return self._cache["lengths"]

    def seconds_table(self, key: int | None) -> str:
        """The arrivals-per-second table of one group (Requests.seconds_table), all groups built in one pass."""
        if not self._seconds:
            k, per = "floor(arrival_s)::BIGINT", "count(*) AS n, min(arrival_s) AS lo, max(arrival_s) AS hi"
            if self.tiered:
                sql = (
                    f"CREATE OR REPLACE TEMP TABLE groups_sec AS SELECT CASE WHEN grouping(g) = 1 THEN NULL ELSE g END "
                    f"AS g, {k} AS k, {per} FROM {self.src} GROUP BY GROUPING SETS (({k}), (g, {k}))"
                )
            else:
                sql = f"CREATE OR REPLACE TEMP TABLE groups_sec AS SELECT NULL::INTEGER AS g, {k} AS k, {per} FROM {self.src} GROUP BY 2"
            self.con.execute(sql, self.values)
            for k in self.keys if self.tiered else [None]:
                name = f"sec_{'all' if k is None else k}"
                where = "g IS NULL" if k is None else f"g = {int(k)}"
                self.con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {sql_ident(name)} AS SELECT k, n, lo, hi FROM groups_sec WHERE {where}"
                )
                self._seconds[k] = sql_ident(name)
            self.con.execute("DROP TABLE groups_sec")
        return self._seconds[key]

    def sessions(self) -> dict[int | None, Any]:
        """Per group: count(*), median, mean and max of calls per session (Requests.sessions)."""
        if "sessions" not in self._cache:
            if not self.tiered:
                inner = f"(SELECT session_id, count(*) AS n FROM {self.src} WHERE session_id IS NOT NULL GROUP BY 1)"
                rows = {None: self.one(f"SELECT count(*), median(n), avg(n), max(n) FROM {inner}")}
            else:
                inner = (
                    f"(SELECT CASE WHEN grouping(g) = 1 THEN NULL ELSE g END AS g, count(*) AS n FROM {self.src} "
                    "WHERE session_id IS NOT NULL GROUP BY GROUPING SETS ((session_id), (g, session_id)))"
                )
                rows = {
                    r[0]: r[1:]
                    for r in self.con.execute(
                        f"SELECT g, count(*), median(n), avg(n), max(n) FROM {inner} GROUP BY g", self.values
                    ).fetchall()
                }
            self._cache["sessions"] = rows
        return self._cache["sessions"]

    def prefix_reuse(self) -> dict[int | None, Any]:
        """Per group: count of all and of distinct hash_ids (Requests.prefix_reuse)."""
        if "reuse" not in self._cache:
            # Blocks counted per (tier, hash) once, then summed: count(DISTINCT) on a few hundred thousand
            # (tier, hash) rows instead of on every block of the log twice.
            per = f"(SELECT g, h, count(h) AS c FROM (SELECT g, unnest(hash_ids) AS h FROM {self.src}) GROUP BY g, h)"
            self._cache["reuse"] = self._grouped("sum(c), count(DISTINCT h)", per)
        return self._cache["reuse"]

    def requests(self, key: int | None) -> GroupRequests:
        """The Requests view of one group, answering from the shared passes."""
        if key is None:
            return GroupRequests(self, None)
        return GroupRequests(self, key, f"{self.expr} = $tier", {**self.expr_values, "tier": self.names[key]})


class GroupRequests(Requests):
    """One group of a Groups (the whole log or one tier): its row-level figures come from the shared passes;
    the rest (rate series, gaps, batches, hourly) are Requests' own queries over its seconds table."""

    def __init__(self, groups: Groups, key: int | None, where: str = "TRUE", values: dict[str, Any] | None = None):
        super().__init__(groups.con, groups.path, where, values)
        self.groups, self.key = groups, key

    def span(self) -> tuple[int, float, float, int, int]:
        n, first, last, max_in, max_out = self.groups.spans[self.key]
        if not n:
            return 0, 0.0, 0.0, 0, 0
        return int(n), float(first), float(last), int(max_in), int(max_out)

    def lengths(self, max_in: int = 0, max_out: int = 0) -> dict[str, dict[str, Any]]:
        row, at_max, _ = self.groups.lengths()[self.key]
        self.at_max = dict(at_max)
        return _length_stats(row)

    def resolution(self, n: int, first: float) -> float:
        return self.groups.lengths()[self.key][2]

    def seconds_table(self) -> str:
        return self.groups.seconds_table(self.key)

    def sessions(self) -> dict[str, Any] | None:
        if "session_id" not in self.columns:
            return None
        return _session_stats(self.groups.sessions().get(self.key))

    def prefix_reuse(self) -> dict[str, Any] | None:
        if "hash_ids" not in self.columns:
            return None
        return _reuse_stats(*(self.groups.prefix_reuse().get(self.key) or (0, 0)))

    def mean_e2e_s(self) -> float | None:
        if "e2e_ms" not in self.columns:
            return None
        v = self.groups.e2e_ms[self.key]
        return None if v is None else v / 1000.0


def archetype(
    input_p50: float, output_p50: float, settings: ProfileSettings, sessions: dict[str, Any] | None
) -> tuple[str, str]:
    """chat / rag / generation / agentic from p50 lengths (and multi-call sessions), with the reason."""
    long_in = input_p50 >= settings.long_input_tokens
    long_out = output_p50 >= settings.long_output_tokens
    many_calls = bool(sessions) and sessions["calls_p50"] >= settings.agentic_min_calls_per_session
    basis = (
        f"input p50 {input_p50:g} {'>=' if long_in else '<'} {settings.long_input_tokens}, "
        f"output p50 {output_p50:g} {'>=' if long_out else '<'} {settings.long_output_tokens}"
    )
    if sessions:
        basis += f", {sessions['calls_p50']:g} calls per session (p50)"
    if long_in and (long_out or many_calls):
        return "agentic", basis
    if long_in:
        return "rag", basis
    if long_out:
        return "generation", basis
    return "chat", basis


def _rates(
    req: Requests, n: int, first: float, last: float, resolution: float
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The rate figures; series whose bucket is finer than `resolution` (the arrival tick) are null.

    Also returns the figures as measured before nulling, for the warning that explains them.
    """
    span = last - first
    notes: list[str] = []
    sec = req.rate_series_stats(1)
    minute = req.rate_series_stats(60)
    rps: dict[str, Any] = {
        "mean": _r(n / span) if span > 0 else None,
        "per_second_p95": _r(sec["p95"]),
        "per_second_p99": _r(sec["p99"]),
        "per_minute_p95": _r(minute["p95"]),
        "per_minute_p99": _r(minute["p99"]),
        "peak_1s": _r(sec["peak"]),
    }
    measured = dict(rps)
    if resolution > 1.0:
        for key in ("per_second_p95", "per_second_p99", "peak_1s"):
            rps[key] = None
        notes.append("per-second")
    if resolution > 60.0:
        for key in ("per_minute_p95", "per_minute_p99"):
            rps[key] = None
        notes.append("per-minute")
    return rps, notes, measured


def _littles_law(
    rps: dict[str, Any],
    sizing_key: str,
    output_mean: float,
    req: Requests,
    settings: ProfileSettings,
) -> dict[str, Any]:
    measured = req.mean_e2e_s()
    if measured is not None:
        e2e_s, source = measured, "measured: mean e2e_ms in the log"
    else:
        itl_ms = settings.itl_p99_ms or 0.0
        e2e_s = settings.ttft_p99_ms / 1000 + output_mean * itl_ms / 1000
        source = (
            f"SLO targets: TTFT {settings.ttft_p99_ms:g} ms + mean output {output_mean:g} tokens x ITL {itl_ms:g} ms"
        )
    rate = rps.get(sizing_key)
    return {
        "p95": _r(rate * e2e_s, 2) if rate is not None else None,
        "mean": _r(rps["mean"] * e2e_s, 2) if rps.get("mean") is not None else None,
        "e2e_s": _r(e2e_s, 4),
        "rate_used": sizing_key,
        "e2e_source": source,
        "formula": "L = rate x E2E (Little's law); p95 uses the sizing rate, mean the mean rate",
    }


def profile_requests(
    req: Requests,
    settings: ProfileSettings,
    block_tokens: int | None = None,
    what: str = "the log",
    log_span_s: float | None = None,
) -> dict[str, Any]:
    """Every step-1 figure for one set of requests (the whole log, or one tier when log_span_s is given).

    A whole log of fewer than 2 requests, or all at one instant, has no arrival rate: an InputError naming
    `what`. A tier like that is a warning (code tier_without_rate): its mean is its requests over the whole
    log's span (log_span_s).
    """
    n, first, last, max_in, max_out = req.span()
    if n == 0:
        raise InputError(f"{what}: no requests left to profile (every row was excluded)")
    no_span = n < 2 or last <= first
    described = "a single request" if n < 2 else f"all {n:,} requests arrive at the same instant"
    if no_span and log_span_s is None:
        stamp = f"{first:,.3f} s" if first < EPOCH_2000_S else f"epoch {first:,.3f} s"
        raise InputError(
            f"{what}: {described} (arrival_s = {stamp}); expected at least 2 requests at different times, "
            "since an arrival rate needs a time span. No outputs were written."
        )
    lengths = req.lengths(max_in, max_out)
    longest, long_count = req.gaps(settings.max_gap_s)
    resolution = req.resolution(n, first)
    batched = req.batches(settings.batch_jitter_s)
    tick = max(resolution, batched["tick_s"]) if batched else resolution
    rps, coarse, measured = _rates(req, n, first, last, tick)
    warnings: list[dict[str, Any]] = []
    if no_span and log_span_s:
        rps["mean"] = _r(n / log_span_s)
        warnings.append(
            {
                "code": "tier_without_rate",
                "message": f"{what}: {described}, so it has no arrival rate of its own: its mean is its requests "
                f"over the whole log's {log_span_s:,.4g} s, and its rate quantiles count one busy bucket. It is "
                "sized as a fleet of its own: map it onto another tier (workload.tiers.map) or set "
                "workload.tiers.column: none.",
            }
        )
    if batched:
        hidden = ", ".join(
            f"{k.replace('_', ' ')} {measured[k]:,.4g}"
            for k in ("per_second_p95", "peak_1s")
            if measured.get(k) is not None
        )
        warnings.append(
            {
                "code": "batched_arrivals",
                "message": f"arrivals come in batches every {batched['tick_s']:g} s "
                f"({batched['batches']:,} batches of {batched['requests_per_batch_mean']:g} requests on average, "
                f"{batched['share_of_intervals_on_tick']:.0%} of batch intervals on the tick, jitter within "
                f"{2 * settings.batch_jitter_s:g} s), although timestamps are written to {resolution:g} s: the log "
                "was recorded or replayed in batches. "
                + (
                    f"The {' and '.join(coarse)} series would measure the batching, not the traffic ({hidden}), "
                    "so they are not reported (null); sizing uses a coarser series."
                    if coarse
                    else ""
                ),
            }
        )
    elif coarse:
        warnings.append(
            {
                "code": "coarse_timestamps",
                "message": f"timestamps tick every {resolution:g} s, coarser than the {' and '.join(coarse)} buckets: "
                f"those rates would be noise and are not reported (null).",
            }
        )
    if last - first < 60 and log_span_s is None:
        warnings.append(
            {
                "code": "short_log",
                "message": f"the log spans only {last - first:,.3g} s ({n:,} requests): its per-minute series has "
                f"{int(last // 60 - first // 60) + 1} bucket(s), so no rate quantile describes real traffic; "
                "size from a log of at least an hour.",
            }
        )
    sizing_key = settings.sizing_rate
    if rps.get(sizing_key) is None:
        fallback = next(k for k in ("per_minute_p95", "mean") if rps.get(k) is not None)
        warnings.append(
            {
                "code": "sizing_rate_fallback",
                "message": f"sizing rate {sizing_key} is not available for this log; using {fallback} instead.",
            }
        )
        sizing_key = fallback
    if not rps[sizing_key]:
        fallback = next((k for k in ("per_minute_p99", "mean") if rps.get(k)), None)
        if fallback:
            warnings.append(
                {
                    "code": "zero_sizing_rate",
                    "message": f"the sizing rate {sizing_key} is 0 req/s: most minutes of the log have no arrival "
                    f"(mean {rps['mean']:.4g} req/s over {(last - first) / 86400:,.2f} days). Is the timestamp unit "
                    f"right (workload.timestamp_unit)? Using {fallback} = {rps[fallback]:.4g} req/s instead.",
                }
            )
            sizing_key = fallback
    rps["sizing_rate"] = rps[sizing_key]
    for cap in req.caps(n, {"input_tokens": max_in, "output_tokens": max_out}, settings.cap_min_share):
        warnings.append(
            {
                "code": f"capped_{cap['column']}",
                "message": f"{cap['rows_at_max']:,} requests ({cap['share']:.1%}) sit exactly at the maximum "
                f"{cap['column']} = {cap['max']:,}: the log looks capped (max_tokens or truncation), "
                "so the true tail is longer than measured.",
            }
        )
    if long_count:
        warnings.append(
            {
                "code": "long_gaps",
                "message": f"{long_count:,} gaps between arrivals exceed {settings.max_gap_s:g} s (longest {longest:,.0f} s): "
                "the log may have missing periods, which lowers the mean and the per-second quantiles.",
            }
        )
    sessions = req.sessions()
    kind, basis = archetype(lengths["input_tokens"]["p50"], lengths["output_tokens"]["p50"], settings, sessions)
    epoch_clock = first >= EPOCH_2000_S
    out: dict[str, Any] = {
        "requests": n,
        "span_s": _r(last - first, 3),
        "first_arrival_s": _r(first, 3),
        "clock": "epoch_utc" if epoch_clock else "trace_relative",
        "timestamp_resolution_s": resolution,
        "arrival_tick_s": tick,
        **lengths,
        "rps": rps,
        "sizing_rate_key": sizing_key,
        "archetype": kind,
        "archetype_basis": basis,
        "concurrency_littles_law": _littles_law(rps, sizing_key, lengths["output_tokens"]["mean"], req, settings),
        "hourly": req.hourly(epoch_clock, first),
    }
    if batched:
        out["batched_arrivals"] = batched
    if sessions:
        out["sessions"] = sessions
    reuse = req.prefix_reuse()
    if reuse:
        reuse["block_tokens"] = block_tokens
        out["prefix_reuse"] = reuse
    out["warnings"] = warnings
    return out


def tier_expression(columns: list[str], settings: ProfileSettings) -> tuple[str | None, str | None, dict[str, Any]]:
    """SQL that names each request's tier (from rules or a column), a sentence saying how, and its bound values.

    Tier names and map keys from params are `$tier_N` / `$value_N` parameters of the SQL, never literals in it.
    """
    values: dict[str, Any] = {}
    if settings.tier_rules:
        cases = []
        for i, rule in enumerate(settings.tier_rules):
            conds = []
            for key, op in (
                ("max_input_tokens", "<="),
                ("min_input_tokens", ">="),
                ("max_output_tokens", "<="),
                ("min_output_tokens", ">="),
            ):
                if key in rule:
                    conds.append(f"{key.split('_', 1)[1]} {op} {int(rule[key])}")
            cases.append(f"WHEN {' AND '.join(conds) or 'TRUE'} THEN $tier_{i}")
            values[f"tier_{i}"] = str(rule["name"])
        return (
            f"CASE {' '.join(cases)} ELSE 'unmatched' END",
            "tier rules in params (workload.tiers.rules), first match wins",
            values,
        )
    col = settings.tier_column
    if col in (None, "none", ""):
        return None, None, values
    if col == "auto":
        col = next((c for c in TIER_COLUMNS if c in columns), None)
        if col is None:
            return None, None, values
    elif col not in columns:
        raise InputError(
            f"workload.tiers.column = '{col}' is not a column of the request table; "
            f"available: {', '.join(c for c in columns if c in (*TIER_COLUMNS, 'session_id')) or 'none'} (or auto, none)"
        )
    value = f"coalesce(CAST({sql_ident(col)} AS VARCHAR), '(none)')"
    if settings.tier_map:
        cases = " ".join(f"WHEN $value_{i} THEN $tier_{i}" for i in range(len(settings.tier_map)))
        for i, (k, v) in enumerate(settings.tier_map):
            values[f"value_{i}"], values[f"tier_{i}"] = str(k), str(v)
        mapped = ", ".join(f"{k} -> {v}" for k, v in settings.tier_map)
        return (
            f"CASE {value} {cases} ELSE {value} END",
            f"column '{col}' of the log, mapped by workload.tiers.map ({mapped})",
            values,
        )
    return value, f"column '{col}' of the log", values


def compute_profile(
    requests_path: Path, settings: ProfileSettings, block_tokens: int | None = None, label: str | None = None
) -> dict[str, Any]:
    """The whole-log profile plus one per tier when tiers exist (`label` names the log in errors)."""
    con = _connect()
    label = label or str(requests_path)
    described = con.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(requests_path)}).fetchall()
    columns = [r[0] for r in described]
    expr, how, values = tier_expression(columns, settings)
    # One pass per figure for the whole log and every tier together (Groups), not one per tier.
    groups = Groups(con, requests_path, expr, values)
    names = groups.names
    groups.use_tiers(len(names) <= MAX_TIERS)
    profile = profile_requests(groups.requests(None), settings, block_tokens, label)
    if expr:
        if len(names) > MAX_TIERS:
            raise InputError(
                f"the tier source ({how}) has {len(names):,} distinct values; expected a few routing tiers "
                f"(at most {MAX_TIERS}). Set workload.tiers.column to another column or 'none'."
            )
        tiers = {}
        for i, name in enumerate(names):
            sub = groups.requests(i)
            span = max(profile["span_s"], 1.0)
            tiers[name] = profile_requests(sub, settings, block_tokens, f"tier {name!r} ({how})", span)
        profile["tiers"] = tiers
        profile["tiers_from"] = how
        profile["warnings"] += [w for t in tiers.values() for w in t["warnings"] if w["code"] == "tier_without_rate"]
    con.close()
    return profile


def chart_data(requests_path: Path) -> dict[str, pd.DataFrame]:
    """Small tables for the report's charts: the per-minute rate series and the length quantile curves."""
    con = _connect()
    req = Requests(con, requests_path)
    data = {"per_minute": req.per_minute_series(), "cdf": req.length_cdf()}
    con.close()
    return data


def build_profile(
    ingested: Any, requests_path: Path, settings: ProfileSettings, root: Path | None = None
) -> dict[str, Any]:
    """The profile of an ingested log, with ingest warnings, the validation summary and provenance."""
    block_tokens = MOONCAKE_BLOCK_TOKENS if ingested.layout.name == "mooncake" else None
    label = ingested.source.label
    if ingested.rows_written == 0:
        raise InputError(
            f"{label}: column '{ingested.columns['output_tokens']}' (output_tokens): all {ingested.rows_read:,} rows "
            "have 0 output tokens (failed requests, excluded), so no request is left to profile; expected a log "
            "of served requests. No outputs were written."
        )
    prof = compute_profile(requests_path, settings, block_tokens, label)
    prof["failed_requests_excluded"] = ingested.failed_rows
    prof["duplicate_rows"] = ingested.duplicate_rows
    prof["warnings"] = ingested.warnings + prof["warnings"]
    prof["validation"] = ingested.validation.as_dict()
    from pipeline import sample

    prof["provenance"] = {
        **ingested.provenance(root),
        "sample": sample.is_sample(ingested.source.files, root),
        "percentiles": "DuckDB quantile_cont (linear interpolation) over every request",
        "context_tokens": "input_tokens + output_tokens of each request, then percentiles",
        "rps": "arrivals per 1-s / 60-s bucket from floor(first) to floor(last), empty buckets = 0; "
        "mean = requests / (last - first)",
        "per_minute_buckets": PER_MINUTE_BUCKETS,
        "batched_arrivals": BATCHED_DEFINITION,
        "sizing_rate": f"rps.{prof['sizing_rate_key']} (param workload.sizing_rate = {settings.sizing_rate})",
        "timestamp_resolution": "largest tick of 1 h, 1 min, 1 s, 100 ms, 10 ms, 1 ms that every timestamp sits on "
        "(0.001 means 1 ms or finer)",
        "archetype": f"p50 lengths vs workload.long_input_tokens = {settings.long_input_tokens}, "
        f"workload.long_output_tokens = {settings.long_output_tokens}",
        "hourly": "per-minute arrival rate grouped by hour of day (UTC, or hours since the trace start)",
    }
    return prof


def describe(profile: dict[str, Any]) -> str:
    """A short human summary of a profile (the CLI's default output and the report's headline)."""
    lines = []
    span_min = profile["span_s"] / 60
    batched = profile.get("batched_arrivals")
    lines.append(
        f"Workload profile: {profile['requests']:,} requests over {span_min:,.1f} min "
        f"({profile['clock']}, timestamps every {profile['timestamp_resolution_s']:g} s"
        + (f", arrivals in batches every {batched['tick_s']:g} s" if batched else "")
        + ")"
    )
    lines.append(f"{'':16}{'p50':>10}{'p90':>10}{'p95':>10}{'p99':>10}{'mean':>10}{'max':>10}")
    for key in ("input_tokens", "output_tokens", "context_tokens"):
        s = profile[key]
        lines.append(
            f"{key.replace('_', ' '):16}"
            + "".join(f"{s[k]:>10,.6g}" for k in ("p50", "p90", "p95", "p99", "mean", "max"))
        )
    r = profile["rps"]

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:,.4g}"

    lines.append(
        f"Arrival rate (req/s): mean {f(r['mean'])}; per-second p95 {f(r['per_second_p95'])}, p99 {f(r['per_second_p99'])}; "
        f"per-minute p95 {f(r['per_minute_p95'])}, p99 {f(r['per_minute_p99'])}; peak 1 s {f(r['peak_1s'])}"
    )
    lines.append(f"Sizing rate: {f(r['sizing_rate'])} req/s ({profile['sizing_rate_key']})")
    lines.append(f"Archetype: {profile['archetype']} ({profile['archetype_basis']})")
    c = profile["concurrency_littles_law"]
    lines.append(
        f"Concurrency (Little's law): {f(c['p95'])} at the sizing rate, {f(c['mean'])} at the mean rate "
        f"(E2E {c['e2e_s']:g} s; {c['e2e_source']})"
    )
    if "prefix_reuse" in profile:
        lines.append(f"Prefix reuse: {profile['prefix_reuse']['reuse_fraction']:.1%} of prefix blocks were seen before")
    for name, t in (profile.get("tiers") or {}).items():
        lines.append(
            f"  tier {name}: {t['requests']:,} requests, {t['archetype']}, input p95 {t['input_tokens']['p95']:,.6g}, "
            f"output p95 {t['output_tokens']['p95']:,.6g}, sizing rate {f(t['rps']['sizing_rate'])} req/s"
        )
    for w in profile.get("warnings") or []:
        lines.append(f"warning: {w['message']}")
    return "\n".join(lines)


@dataclass
class StageResult:
    """What the workload stage produced, for the notebook to show."""

    profile: dict[str, Any]
    ingested: Any
    charts: dict[str, pd.DataFrame]


def lengths_table(profile: dict[str, Any]) -> pd.DataFrame:
    """Token-length percentiles, one row per measure."""
    import pandas as pd

    rows = []
    for key in ("input_tokens", "output_tokens", "context_tokens"):
        rows.append({"measure": key, **profile[key]})
    return pd.DataFrame(rows).set_index("measure")


def rates_table(profile: dict[str, Any]) -> pd.DataFrame:
    """Arrival-rate figures (req/s) with how each is defined."""
    import pandas as pd

    defs = {**RATE_DEFINITIONS, SIZING_RATE_KEY: f"the rate sizing uses: {profile['sizing_rate_key']}"}
    return pd.DataFrame(
        [{"rate": k, "req_per_s": profile["rps"].get(k), "definition": v} for k, v in defs.items()]
    ).set_index("rate")


def tiers_table(profile: dict[str, Any]) -> pd.DataFrame | None:
    """One row per tier: traffic share, lengths at p95, sizing rate, archetype, concurrency."""
    import pandas as pd

    tiers = profile.get("tiers")
    if not tiers:
        return None
    total = profile["requests"]
    rows = [
        {
            "tier": name,
            "requests": t["requests"],
            "share": f"{t['requests'] / total:.1%}",
            "input_p95": t["input_tokens"]["p95"],
            "output_p95": t["output_tokens"]["p95"],
            "context_p95": t["context_tokens"]["p95"],
            "sizing_rate_rps": t["rps"]["sizing_rate"],
            "archetype": t["archetype"],
            "concurrency_p95": t["concurrency_littles_law"]["p95"],
        }
        for name, t in tiers.items()
    ]
    return pd.DataFrame(rows).set_index("tier")


def provenance_table(profile: dict[str, Any]) -> pd.DataFrame:
    """Where each figure came from: input files, layout, mapping, formulas."""
    import pandas as pd

    prov = profile["provenance"]
    rows = []
    for key, value in prov.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} <- {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        rows.append({"item": key, "value": value})
    return pd.DataFrame(rows).set_index("item")


def time_axis(series: pd.DataFrame, profile: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """Per-minute series with an `hours` axis: hours since 00:00 UTC of the first day, or since the trace start."""
    import datetime as dt

    first = profile["first_arrival_s"]
    if profile["clock"] == "epoch_utc":
        day0 = (first // 86400) * 86400
        label = dt.datetime.fromtimestamp(day0, tz=dt.UTC).strftime("%Y-%m-%d 00:00 UTC")
    else:
        day0, label = first, "the trace start"
    out = series.assign(hours=(series["minute_start_s"] - day0) / 3600.0)
    return out, label
