"""Tiers: which tier each request belongs to (tier_expression), and the whole log and every tier profiled in
shared passes (Groups, GroupRequests) rather than one pass per tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from pipeline.errors import InputError
from pipeline.traffic.sources import bound_view, sql_ident
from pipeline.workload_arrivals import (
    RESOLUTION_CANDIDATES_S,
    bursts_sql,
    off_grid_sql,
    rate_series_row,
)
from pipeline.workload_requests import (
    LENGTH_EXPRS,
    Requests,
    filtered_sessions,
    length_stats,
    packed_sessions,
    quantiles_from_counts,
    reuse_stats,
    session_stats,
)
from pipeline.workload_requests import SESSION_PACK_BITS as SESSION_PACK_BITS
from pipeline.workload_requests import SESSION_TIERS_PER_PASS as SESSION_TIERS_PER_PASS
from pipeline.workload_settings import PERCENTILES, ProfileSettings

TIER_COLUMNS = ("tier", "model", "tenant")
MAX_TIERS = 50


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


class Groups:
    """The whole log and each of its tiers, profiled together: every row-level figure of every group
    comes from one shared pass over requests.parquet (GROUP BY GROUPING SETS ((), (tier))), not one
    pass per tier, with the same SQL expressions as Requests' own queries, so every figure is the same.

    Passes: span (count, first/last arrival, largest lengths, mean e2e, mean lengths), the rows of each
    distinct length (quantiles, maxima, rows at each maximum), arrivals per 1-s bucket, timestamp-grid
    probes only where the seconds table cannot decide them, calls per session, prefix blocks. Where a
    figure of the whole log is an exact sum, minimum or maximum of the tiers' own, it is rolled up from
    them instead of grouped again. The figures of the seconds (gaps, bursts, rate series, grid candidates)
    come from one query each over every group's seconds (groups_sec), and quantiles and medians are read off
    counts where those are small tables (workload_requests.quantiles_from_counts). Group key None is the whole log, 0.. the tiers in
    name order.
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
        means = ", ".join(f"avg({e})" for e in LENGTH_EXPRS.values())  # the lengths' means ride in this pass
        span = f"count(*), min(arrival_s), max(arrival_s), max(input_tokens), max(output_tokens), {e2e}, {means}"
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
        self.means = {k: r[7:] for k, r in zip(self.keys, rows, strict=True)}
        self.tiered = False
        self._cache: dict[str, dict[int | None, Any]] = {}
        self._seconds: dict[int | None, str] = {}

    def use_tiers(self, enabled: bool = True) -> None:
        """Set what the passes group by: the whole log and each tier (once the caller has checked how many
        tiers there are), or the whole log alone.

        A row's tier g is the position of its tier name in the names' list (from 0; list_position: one lookup a
        row, a third of the CPU of a CASE of one WHEN per tier, in every pass)."""
        self.tiered = enabled and bool(self.names)
        if self.tiered:
            bound = ", ".join(f"$grp_{i}" for i in range(len(self.names)))  # the names, bound as parameters
            self.values.update({f"grp_{i}": name for i, name in enumerate(self.names)})
            self.src = f"(SELECT *, (list_position([{bound}], {self.expr}) - 1)::INTEGER AS g FROM read_parquet($path))"
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
        """Per group: the 9 length figures, the rows at each maximum, and the timestamp resolution.

        The percentiles, maxima and rows at each maximum come from the counts of each distinct length
        (_length_quantiles), the means from the span pass; a pass over every row probes only the timestamp ticks
        that the seconds table leaves open (none, on a log with ms or finer timestamps)."""
        if "lengths" not in self._cache:
            first = {k: str(float(s[1])) for k, s in self.spans.items()}
            f_all, f_grp = self._per_group_sql(first, "DOUBLE")
            # A tick that the first and last arrival of some second of a group miss is missed by the group: only
            # the ticks that every group's seconds table leaves open are probed over every row.
            open_ticks = self._grid_candidates(first)
            probed = [u for u in RESOLUTION_CANDIDATES_S if any(u in ticks for ticks in open_ticks.values())]
            sel = []
            for u in probed:
                sel += [f"bool_and(NOT ({off_grid_sql(u, f_all)}))", f"bool_and(NOT ({off_grid_sql(u, f_grp)}))"]
            quantiles, tops = self._length_quantiles()
            rows = self._grouped(", ".join(sel), self.src) if sel else {k: () for k in quantiles}
            out = {}
            for k, row in rows.items():
                pick = 0 if k is None else 1  # the whole log's column, or the tier's
                at_max = {"input_tokens": tops[k][0][1], "output_tokens": tops[k][1][1]}
                on_grid = {u: row[2 * j + pick] for j, u in enumerate(probed)}
                grid = [u in open_ticks[k] and bool(on_grid[u]) for u in RESOLUTION_CANDIDATES_S]
                n = self.spans[k][0]
                res = next((u for u, ok in zip(RESOLUTION_CANDIDATES_S, grid, strict=True) if ok), None)
                resolution = (res or RESOLUTION_CANDIDATES_S[-1]) if n > 1 else 0.0
                # the 9 figures of LENGTH_SELECT: (percentiles, mean, max) of each length
                nine = tuple(
                    x for i in range(len(LENGTH_EXPRS)) for x in (quantiles[k][i], self.means[k][i], tops[k][i][0])
                )
                out[k] = (nine, at_max, resolution)
            self._cache["lengths"] = out
        return self._cache["lengths"]

    def _grid_candidates(self, first: dict[int | None, str]) -> dict[int | None, set[float]]:
        """Per group, the ticks of RESOLUTION_CANDIDATES_S that the first and last arrival of each of its seconds
        (its seconds table: real arrivals of the group) all sit on, with the very test the full pass makes
        (off_grid_sql from the group's first arrival). A tick one of them misses is missed by the group, so
        the full pass needs to probe only the rest: on a log with ms or finer timestamps, none."""
        keys = self.keys if self.tiered else [None]
        firsts = ", ".join(f"({first[k]})::DOUBLE" for k in keys)  # the whole log's first (g = -1), then each tier's
        of_group = f"[{firsts}][g + 2]"
        checks = ", ".join(f"bool_and(NOT ({off_grid_sql(u, of_group)}))" for u in RESOLUTION_CANDIDATES_S)
        rows = self._per_group(
            "grid",
            f"SELECT g, {checks} FROM (SELECT g, lo AS arrival_s FROM groups_sec UNION ALL SELECT g, hi FROM groups_sec) "
            "GROUP BY g",
        )
        return {k: {u for u, ok in zip(RESOLUTION_CANDIDATES_S, rows[k], strict=True) if ok is not False} for k in keys}

    def _length_quantiles(self) -> tuple[dict[int | None, list[list[float]]], dict[int | None, list[tuple[int, int]]]]:
        """Per group, the PERCENTILES of each length (LENGTH_EXPRS), the very doubles DuckDB's quantile_cont gives,
        from one pass that counts the rows of each distinct length per group (a small table) instead of
        sorting every row once per group and length (quantiles_from_counts); and per group and length its maximum
        and the rows at it (the last of those counts).
        """
        import numpy as np

        cols = range(len(LENGTH_EXPRS))
        inner = ", ".join(f"{e} AS _l{i}" for i, e in zip(cols, LENGTH_EXPRS.values(), strict=True))
        which = " ".join(f"WHEN grouping(_l{i}) = 0 THEN {i}" for i in cols)
        value = f"coalesce({', '.join(f'_l{i}' for i in cols)})"  # the one length each grouping set keeps
        if self.tiered:
            # counted per tier only; the whole log's counts are their sums (exact), not a second pass of sets
            sets = [f"(g, _l{i})" for i in cols]
            data = self.con.execute(
                f"WITH t AS MATERIALIZED (SELECT CASE {which} END AS m, g AS k, {value} AS v, count(*) AS c "
                f"FROM (SELECT g, {inner} FROM {self.src}) GROUP BY GROUPING SETS ({', '.join(sets)})) "
                "SELECT m, k, v, c FROM t UNION ALL SELECT m, -1, v, sum(c)::BIGINT FROM t GROUP BY m, v "
                "ORDER BY m, k, v",
                self.values,
            ).fetchnumpy()
        else:
            sets = [f"(_l{i})" for i in cols]
            data = self.con.execute(
                f"SELECT CASE {which} END AS m, -1 AS k, {value} AS v, "
                f"count(*) AS c FROM (SELECT g, {inner} FROM {self.src}) GROUP BY GROUPING SETS ({', '.join(sets)}) "
                "ORDER BY m, k, v",
                self.values,
            ).fetchnumpy()
        m, k, v, c = (np.asarray(data[col]) for col in ("m", "k", "v", "c"))
        cuts = (np.flatnonzero((np.diff(m) != 0) | (np.diff(k) != 0)) + 1).tolist()
        out: dict[int | None, list[list[float]]] = {}
        tops: dict[int | None, list[tuple[int, int]]] = {}
        runs, where = [], []
        for start, end in zip([0, *cuts], [*cuts, len(m)], strict=True):
            group = None if int(k[start]) == -1 else int(k[start])
            length = int(m[start])
            out.setdefault(group, [[0.0] * len(PERCENTILES) for _ in cols])
            tops.setdefault(group, [(0, 0) for _ in cols])[length] = (int(v[end - 1]), int(c[end - 1]))
            runs.append((v[start:end], c[start:end]))
            where.append((group, length))
        figures = quantiles_from_counts(self.con, runs, list(PERCENTILES.values()))
        for (group, length), values in zip(where, figures, strict=True):
            out[group][length] = values
        return out, tops

    def seconds_table(self, key: int | None) -> str:
        """The arrivals-per-second table of one group (Requests.seconds_table), all groups built in one pass.

        All groups' seconds stay in one table too (groups_sec: g = -1 for the whole log), from which the
        per-group figures of the seconds (gaps, bursts, rate series) come in one query each (_per_group)."""
        if not self._seconds:
            k, per = "floor(arrival_s)::BIGINT", "count(*) AS n, min(arrival_s) AS lo, max(arrival_s) AS hi"
            if self.tiered:
                # per (tier, second) only; the whole log's seconds are their sums, minima and maxima (exact)
                sql = (
                    f"CREATE OR REPLACE TEMP TABLE groups_sec AS WITH t AS MATERIALIZED (SELECT g, {k} AS k, {per} "
                    f"FROM {self.src} GROUP BY g, {k}) SELECT g, k, n, lo, hi FROM t UNION ALL "
                    "SELECT -1, k, sum(n)::BIGINT, min(lo), max(hi) FROM t GROUP BY k"
                )
            else:
                sql = f"CREATE OR REPLACE TEMP TABLE groups_sec AS SELECT -1 AS g, {k} AS k, {per} FROM {self.src} GROUP BY 2"
            self.con.execute(sql, self.values)
            for k in self.keys if self.tiered else [None]:
                name = f"sec_{'all' if k is None else k}"
                self.con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {sql_ident(name)} AS SELECT k, n, lo, hi FROM groups_sec "
                    f"WHERE g = {-1 if k is None else int(k)}"
                )
                self._seconds[k] = sql_ident(name)
        return self._seconds[key]

    def _per_group(self, name: str, sql: str) -> dict[int | None, tuple]:
        """The rows of `sql` over groups_sec (first column g), by group key (None: the whole log), cached as `name`."""
        if name not in self._cache:
            self.seconds_table(None)
            rows = self.con.execute(sql).fetchall()
            self._cache[name] = {(None if r[0] == -1 else int(r[0])): r[1:] for r in rows}
        return self._cache[name]

    def gaps(self, max_gap_s: float) -> dict[int | None, tuple]:
        """Per group: the longest gap between arrivals of 1 s or more apart and how many exceed max_gap_s (>= 1),
        as ArrivalQueries.gaps reads them off each group's seconds table."""
        return self._per_group(
            f"gaps:{max_gap_s!r}",
            f"SELECT g, max(d), count(*) FILTER (WHERE d > {max_gap_s}) FROM "
            "(SELECT g, lo - lag(hi) OVER (PARTITION BY g ORDER BY k) AS d FROM groups_sec) GROUP BY g",
        )

    def bursts(self, jitter_s: float) -> dict[int | None, tuple]:
        """Per group: the bursts' row of ArrivalQueries.batches (bursts_sql, its windows partitioned by group)."""
        return self._per_group(f"bursts:{jitter_s!r}", bursts_sql("groups_sec", jitter_s, "g"))

    def rate_series(self, width_s: int) -> dict[int | None, tuple]:
        """Per group: the row of ArrivalQueries.rate_series_stats (RATE_SERIES_FIGURES over the group's buckets
        from floor(first) to floor(last), empty ones as 0), for every group in one query: the buckets of each
        arrival count (and the empty ones), whose quantiles are read off those counts (quantiles_from_counts, on
        the very value coalesce(n, 0) / width_s, a DOUBLE from the HUGEINT sum), not off a series of every bucket."""
        import numpy as np

        w = width_s
        if f"rates:{w!r}" not in self._cache:
            self.seconds_table(None)
            # buckets of 1 s are the seconds themselves (floor(k / 1) = k, one row each; the sum's type, HUGEINT)
            per_bucket = (
                "SELECT g, k, n::HUGEINT AS n FROM groups_sec"
                if w == 1
                else f"SELECT g, floor(k / {w})::BIGINT AS k, sum(n) AS n FROM groups_sec GROUP BY 1, 2"
            )
            data = self.con.execute(
                f"WITH e AS (SELECT g, floor(min(k) / {w})::BIGINT AS lo, floor(max(k) / {w})::BIGINT AS hi "
                f"FROM groups_sec GROUP BY g), b AS ({per_bucket}), h AS (SELECT g, n, count(*) AS c, max(n) OVER (PARTITION BY g) AS top FROM b GROUP BY g, n) "
                f"SELECT h.g, e.hi - e.lo + 1, h.n::BIGINT, h.c, h.top / {w} FROM h JOIN e USING (g) ORDER BY h.g, h.n"
            ).fetchall()
            runs, keys, tops = [], [], []
            for g in sorted({r[0] for r in data}):
                rows = [r for r in data if r[0] == g]
                empty = int(rows[0][1]) - sum(int(r[3]) for r in rows)
                v = np.array(([0] if empty else []) + [int(r[2]) for r in rows], dtype=np.int64)
                c = np.array(([empty] if empty else []) + [int(r[3]) for r in rows], dtype=np.int64)
                runs.append((v, c))
                keys.append((None if g == -1 else int(g), int(rows[0][1])))
                tops.append(rows[0][4])
            figures = quantiles_from_counts(self.con, runs, [0.95, 0.99], f"x::HUGEINT / {w}")
            self._cache[f"rates:{w!r}"] = {
                key: (tuple(qs), top, buckets) for (key, buckets), qs, top in zip(keys, figures, tops, strict=True)
            }
        return self._cache[f"rates:{w!r}"]

    def sessions(self) -> dict[int | None, Any]:
        """Per group: count(*), median, mean and max of calls per session (Requests.sessions).

        One GROUP BY session_id gives each session's calls in the whole log and in each tier: a tier's sessions are
        those with a call in it, and their calls there are the same numbers a (tier, session_id) grouping counts,
        with far fewer groups when sessions span tiers. The tiers' calls ride packed in a few HUGEINT sums
        (workload_requests.packed_sessions); a log with a session of 2^SESSION_PACK_BITS calls or more counts them one
        FILTER count per tier instead (filtered_sessions). Sessions, mean and max are DuckDB's own aggregates over those
        numbers, the median is read off their counts (quantiles_from_counts): the same figures."""
        if "sessions" not in self._cache:
            if not self.tiered:
                stats = "count(*), median(n), avg(n), max(n)"
                inner = f"(SELECT session_id, count(*) AS n FROM {self.src} WHERE session_id IS NOT NULL GROUP BY 1)"
                self._cache["sessions"] = {None: self.one(f"SELECT {stats} FROM {inner}")}
            else:
                args = (self.con, self.src, self.values, len(self.names))
                packed = packed_sessions(*args)
                self._cache["sessions"] = filtered_sessions(*args) if packed is None else packed
        return self._cache["sessions"]

    def prefix_reuse(self) -> dict[int | None, Any]:
        """Per group: count of all and of distinct hash_ids (Requests.prefix_reuse)."""
        if "reuse" not in self._cache:
            blocks = f"(SELECT g, unnest(hash_ids) AS h FROM {self.src})"
            if not self.tiered:
                # Blocks counted per hash once, then summed: count(DISTINCT) on the distinct hashes instead of on
                # every block of the log.
                per = f"(SELECT g, h, count(h) AS c FROM {blocks} GROUP BY g, h)"
                self._cache["reuse"] = self._grouped("sum(c), count(DISTINCT h)", per)
                return self._cache["reuse"]
            # One pass, two small groupings: each tier's blocks (count(h)), and each distinct hash with the tiers
            # it occurs in (bit g of a BIGINT; MAX_TIERS < 63): a tier's distinct hashes are those with its bit.
            tiers = range(len(self.names))
            has = ", ".join(f"count(*) FILTER (WHERE (m >> {j}) & 1 = 1)" for j in tiers)
            rows = self.con.execute(
                "WITH per AS MATERIALIZED (SELECT grouping(h) = 1 AS tier_total, g, h, count(h) AS c, "
                f"bit_or(1::BIGINT << g) AS m FROM {blocks} GROUP BY GROUPING SETS ((g), (h))), "
                f"d AS (SELECT count(*) AS n, {has} FROM per WHERE NOT tier_total AND h IS NOT NULL) "
                "SELECT g, c, d.* FROM per, d WHERE tier_total ORDER BY g",
                self.values,
            ).fetchall()
            out: dict[int | None, Any] = {}
            if rows:
                out[None] = (sum(int(r[1]) for r in rows), int(rows[0][2]))
            for g, c, _, *distinct in rows:
                out[g] = (int(c), int(distinct[g]))
            self._cache["reuse"] = out
        return self._cache["reuse"]

    def requests(self, key: int | None) -> GroupRequests:
        """The Requests view of one group, answering from the shared passes."""
        if key is None:
            return GroupRequests(self, None)
        return GroupRequests(self, key, f"{self.expr} = $tier", {**self.expr_values, "tier": self.names[key]})


class GroupRequests(Requests):
    """One group of a Groups (the whole log or one tier): its row-level figures come from the shared passes, and so
    do its gaps, bursts and rate series (one query over every group's seconds); its hourly figures (and a batched
    tier's tick) are Requests' own queries over its seconds table. Its view over requests.parquet is made only if
    a query needs the rows (gaps under 1 s)."""

    def __init__(self, groups: Groups, key: int | None, where: str = "TRUE", values: dict[str, Any] | None = None):
        self.con, self.path, self.where = groups.con, groups.path, where
        self._values = {"path": str(groups.path), **(values or {})}
        self._rel: str | None = None
        self._seconds = None
        self.columns = groups.columns
        self.groups, self.key = groups, key

    @property
    def rel(self) -> str:
        """The group's view over requests.parquet (Requests.rel), made on first use."""
        if self._rel is None:
            self._rel = bound_view(self.con, f"SELECT * FROM read_parquet($path) WHERE {self.where}", self._values)
        return self._rel

    def gaps(self, max_gap_s: float) -> tuple[float | None, int]:
        if max_gap_s < 1:
            return super().gaps(max_gap_s)
        longest, count = self.groups.gaps(max_gap_s)[self.key]
        return longest, int(count)

    def batches(self, jitter_s: float) -> dict[str, Any] | None:
        return self.batched(self.groups.bursts(jitter_s)[self.key], jitter_s)

    def rate_series_stats(self, width_s: int) -> dict[str, float]:
        return rate_series_row(self.groups.rate_series(width_s)[self.key])

    def span(self) -> tuple[int, float, float, int, int]:
        n, first, last, max_in, max_out = self.groups.spans[self.key]
        if not n:
            return 0, 0.0, 0.0, 0, 0
        return int(n), float(first), float(last), int(max_in), int(max_out)

    def lengths(self, max_in: int = 0, max_out: int = 0) -> dict[str, dict[str, Any]]:
        row, at_max, _ = self.groups.lengths()[self.key]
        self.at_max = dict(at_max)
        return length_stats(row)

    def resolution(self, n: int, first: float) -> float:
        return self.groups.lengths()[self.key][2]

    def seconds_table(self) -> str:
        return self.groups.seconds_table(self.key)

    def sessions(self) -> dict[str, Any] | None:
        if "session_id" not in self.columns:
            return None
        return session_stats(self.groups.sessions().get(self.key))

    def prefix_reuse(self) -> dict[str, Any] | None:
        if "hash_ids" not in self.columns:
            return None
        return reuse_stats(*(self.groups.prefix_reuse().get(self.key) or (0, 0)))

    def mean_e2e_s(self) -> float | None:
        if "e2e_ms" not in self.columns:
            return None
        v = self.groups.e2e_ms[self.key]
        return None if v is None else v / 1000.0
