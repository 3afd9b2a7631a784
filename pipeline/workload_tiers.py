"""Tiers: which tier each request belongs to (tier_expression), and the whole log and every tier profiled in
shared passes (Groups, GroupRequests) rather than one pass per tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from pipeline.errors import InputError
from pipeline.traffic.sources import sql_ident
from pipeline.workload_arrivals import RESOLUTION_CANDIDATES_S, off_grid_sql
from pipeline.workload_requests import (
    LENGTH_EXPRS,
    MEANS_AND_MAXIMA,
    Requests,
    length_stats,
    reuse_stats,
    session_stats,
)
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
            sel = [MEANS_AND_MAXIMA]  # the percentiles come from _length_quantiles
            first = {k: str(float(s[1])) for k, s in self.spans.items()}
            f_all, f_grp = self._per_group_sql(first, "DOUBLE")
            cols = {}
            for col, i in (("input_tokens", 3), ("output_tokens", 4)):
                cols[col] = self._per_group_sql({k: str(int(s[i])) for k, s in self.spans.items()}, "BIGINT")
            for col, (m_all, m_grp) in cols.items():
                sel += [f"count(*) FILTER (WHERE {col} = {m_all})", f"count(*) FILTER (WHERE {col} = {m_grp})"]
            for u in RESOLUTION_CANDIDATES_S:
                sel += [f"bool_and(NOT ({off_grid_sql(u, f_all)}))", f"bool_and(NOT ({off_grid_sql(u, f_grp)}))"]
            rows = self._grouped(", ".join(sel), self.src)
            quantiles = self._length_quantiles()
            out = {}
            for k, row in rows.items():
                pick = 0 if k is None else 1  # the whole log's column, or the tier's
                at_max = {"input_tokens": int(row[6 + pick]), "output_tokens": int(row[8 + pick])}
                grid = [row[10 + 2 * j + pick] for j in range(len(RESOLUTION_CANDIDATES_S))]
                n = self.spans[k][0]
                res = next((u for u, ok in zip(RESOLUTION_CANDIDATES_S, grid, strict=True) if ok), None)
                resolution = (res or RESOLUTION_CANDIDATES_S[-1]) if n > 1 else 0.0
                # the 9 figures of LENGTH_SELECT: (percentiles, mean, max) of each length
                nine = tuple(x for i in range(len(LENGTH_EXPRS)) for x in (quantiles[k][i], row[2 * i], row[2 * i + 1]))
                out[k] = (nine, at_max, resolution)
            self._cache["lengths"] = out
        return self._cache["lengths"]

    def _length_quantiles(self) -> dict[int | None, list[list[float]]]:
        """Per group, the PERCENTILES of each length (LENGTH_EXPRS), the very doubles DuckDB's quantile_cont gives,
        from one pass that counts the rows of each distinct length per group (a small table) instead of
        sorting every row once per group and length.

        quantile_cont interpolates linearly between the order statistics at ranks floor and ceil of
        (n - 1) x q. Those two values are read off the cumulative counts; the interpolation is DuckDB's own,
        run on the two of them (quantile_cont over [lo, hi] at the fraction (n - 1) x q - floor((n - 1) x q)).
        """
        import math

        import numpy as np

        cols = range(len(LENGTH_EXPRS))
        inner = ", ".join(f"{e} AS _l{i}" for i, e in zip(cols, LENGTH_EXPRS.values(), strict=True))
        which = " ".join(f"WHEN grouping(_l{i}) = 0 THEN {i}" for i in cols)
        sets = [f"(_l{i})" for i in cols]
        key = "-1"
        if self.tiered:
            sets += [f"(g, _l{i})" for i in cols]
            key = "CASE WHEN grouping(g) = 1 THEN -1 ELSE g END"
        value = f"coalesce({', '.join(f'_l{i}' for i in cols)})"  # the one length each grouping set keeps
        data = self.con.execute(
            f"SELECT CASE {which} END AS m, {key} AS k, {value} AS v, "
            f"count(*) AS c FROM (SELECT g, {inner} FROM {self.src}) GROUP BY GROUPING SETS ({', '.join(sets)}) "
            "ORDER BY m, k, v",
            self.values,
        ).fetchnumpy()
        m, k, v, c = (np.asarray(data[col]) for col in ("m", "k", "v", "c"))
        cuts = (np.flatnonzero((np.diff(m) != 0) | (np.diff(k) != 0)) + 1).tolist()
        out: dict[int | None, list[list[float]]] = {}
        between: list[tuple[int | None, int, int, int, int, float]] = []  # group, length, q, lo, hi, fraction
        for start, end in zip([0, *cuts], [*cuts, len(m)], strict=True):
            group = None if int(k[start]) == -1 else int(k[start])
            length = int(m[start])
            cum = np.cumsum(c[start:end])
            n = int(cum[-1])
            figures = out.setdefault(group, [[0.0] * len(PERCENTILES) for _ in cols])
            for j, q in enumerate(PERCENTILES.values()):
                rank = (n - 1) * q
                lo_rank, hi_rank = math.floor(rank), math.ceil(rank)
                lo = int(v[start + int(np.searchsorted(cum, lo_rank, side="right"))])
                figures[length][j] = float(lo)
                if hi_rank != lo_rank:
                    hi = int(v[start + int(np.searchsorted(cum, hi_rank, side="right"))])
                    between.append((group, length, j, lo, hi, rank - lo_rank))
        if between:
            values: dict[str, Any] = {f"d{i}": b[5] for i, b in enumerate(between)}
            values["ids"] = [i for i in range(len(between)) for _ in (0, 1)]
            values["xs"] = [x for b in between for x in (b[3], b[4])]
            aggs = ", ".join(f"quantile_cont(x, $d{i}) FILTER (WHERE i = {i})" for i in range(len(between)))
            row = self.con.execute(
                f"SELECT {aggs} FROM (SELECT unnest($ids) AS i, unnest($xs)::BIGINT AS x)", values
            ).fetchall()[0]
            for (group, length, j, *_), value in zip(between, row, strict=True):
                out[group][length][j] = value
        return out

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
