"""The arrival pattern of a set of requests (method.md step 1): rate series, gaps, timestamp tick, batches.

Every rate series (1 s, 60 s, hour of day) is summed from one arrivals-per-second table, so the log is
scanned once for them. ArrivalQueries holds those queries (Requests in workload_requests inherits them);
rate_figures turns the series into the profile's `rps` figures, nulling those finer than the arrival tick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.traffic.sources import sql_ident
from pipeline.workload_settings import rounded

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

RESOLUTION_CANDIDATES_S = (3600.0, 60.0, 1.0, 0.1, 0.01, 0.001)
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


def off_grid_sql(u: float, first: str) -> str:
    """SQL true for an arrival off the tick of u seconds counted from `first` (a DOUBLE expression)."""
    tol = min(1e-3, 1e-4 / u)
    return f"abs((arrival_s - {first}) / {u} - round((arrival_s - {first}) / {u})) > {tol}"


RATE_SERIES_FIGURES = "quantile_cont(coalesce(n, 0) / {w}, [0.95, 0.99]), max(coalesce(n, 0)) / {w}, count(*)"


def rate_series_row(row: tuple[Any, ...]) -> dict[str, float]:
    """rate_series_stats' figures from the row of RATE_SERIES_FIGURES."""
    (p95, p99), peak, buckets = row
    return {"p95": p95, "p99": p99, "peak": peak, "buckets": buckets}


def bursts_sql(sec: str, jitter_s: float, group: str | None = None) -> str:
    """The bursts of a seconds table `sec` (ArrivalQueries.batches): count, requests, requests in bursts no wider
    than 2 x jitter_s, median burst-to-burst interval. With `group` (a column of `sec`), the same per value of it,
    that value first: every window partitioned by it, so each group's figures are its own table's."""
    tol = 2 * jitter_s
    key, part, by = (f"{group} AS grp, ", "PARTITION BY grp ", "grp, ") if group else ("", "", "")
    return (
        f"WITH s AS (SELECT {key}k, n, lo, hi, lo - lag(hi) OVER ({part}ORDER BY k) AS gap FROM {sec}), "
        f"g AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap > {jitter_s} THEN 1 ELSE 0 END) OVER ({part}ORDER BY k) AS b "
        f"FROM s), u AS (SELECT {by}b, min(lo) AS start, max(hi) - min(lo) AS width, sum(n) AS n FROM g GROUP BY {by}b), "
        f"d AS (SELECT {by}start - lag(start) OVER ({part}ORDER BY start) AS d, width, n FROM u) "
        f"SELECT {by}count(*), sum(n), sum(n) FILTER (WHERE width <= {tol}), median(d) FROM d"
        + (" GROUP BY grp" if group else "")
    )


class ArrivalQueries:
    """The arrival-time queries of a view of requests (`self.rel`, on connection `self.con`)."""

    con: duckdb.DuckDBPyConnection
    rel: str
    _seconds: str | None

    def one(self, sql: str) -> tuple[Any, ...]:
        return self.con.execute(sql).fetchall()[0]

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

    def rate_series_stats(self, width_s: int) -> dict[str, float]:
        """Quantiles of the arrival-rate series in buckets of width_s seconds (empty buckets count as 0)."""
        sec = self.seconds_table()
        lo, hi = self.one(f"SELECT floor(min(k) / {width_s})::BIGINT, floor(max(k) / {width_s})::BIGINT FROM {sec}")
        row = self.one(
            f"WITH b AS (SELECT floor(k / {width_s})::BIGINT AS k, sum(n) AS n FROM {sec} GROUP BY 1) "
            f"SELECT {RATE_SERIES_FIGURES.format(w=width_s)} FROM range({lo}, {hi} + 1) r(k) LEFT JOIN b USING (k)"
        )
        return rate_series_row(row)

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
                "mean_rps": rounded(m),
                "p95_rps": rounded(p),
                "peak_minute_rps": rounded(pk),
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
        off = off_grid_sql(u, str(first))
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
        return self.batched(self.one(bursts_sql(self.seconds_table(), jitter_s)), jitter_s)

    def batched(self, row: tuple[Any, ...], jitter_s: float) -> dict[str, Any] | None:
        """batches() from the bursts' row of bursts_sql (count, requests, requests in tight bursts, median interval)."""
        sec = self.seconds_table()
        tol = 2 * jitter_s
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
            "tick_s": rounded(refined, 3),
            "batches": bursts,
            "requests_per_batch_mean": rounded(requests / bursts, 2),
            "share_of_intervals_on_tick": rounded(on_tick / intervals, 4),
            "share_of_requests_in_tight_batches": rounded(tight / requests, 4),
            "jitter_s": jitter_s,
        }


def rate_figures(
    req: ArrivalQueries, n: int, first: float, last: float, resolution: float
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The rate figures; series whose bucket is finer than `resolution` (the arrival tick) are null.

    Also returns the figures as measured before nulling, for the warning that explains them.
    """
    span = last - first
    notes: list[str] = []
    sec = req.rate_series_stats(1)
    minute = req.rate_series_stats(60)
    rps: dict[str, Any] = {
        "mean": rounded(n / span) if span > 0 else None,
        "per_second_p95": rounded(sec["p95"]),
        "per_second_p99": rounded(sec["p99"]),
        "per_minute_p95": rounded(minute["p95"]),
        "per_minute_p99": rounded(minute["p99"]),
        "peak_1s": rounded(sec["peak"]),
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
