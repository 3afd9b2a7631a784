"""The cheaper shared passes of the profile (issue 15, speed) give the same figures as profiling each tier on its
own, on the cases their shortcuts depend on: more tiers than one sessions pass holds, sessions spanning tiers,
a timestamp grid that the seconds table cannot refute, sessions packed or too long to pack; and the ingest's folded
checks (bad hash_ids counted in the first pass's stream, the GX suite's aggregate run before great-expectations has
loaded, the write made while it loads) find and write what they did."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from pipeline import quality, traffic, workload, workload_requests
from pipeline.errors import InputError
from pipeline.traffic import REQUIRED
from pipeline.workload import ProfileSettings
from pipeline.workload_tiers import SESSION_TIERS_PER_PASS
from tests.conftest import profile_of, write_parquet
from tests.test_profile_groups import _one_by_one

TIERS = SESSION_TIERS_PER_PASS + 4  # two sessions passes

# 40 tenants' worth of rows spread over TIERS tenants: session s<j> has calls in tenants j % TIERS and (j + 1) % TIERS
LOG = f"""
COPY (SELECT * FROM (
  SELECT 1000.0 + i * 0.25 AS arrival_s, 100 + (i % 37) AS input_tokens, 1 + (i % 23) AS output_tokens,
         't' || lpad(((i // 3 + i % 2) % {TIERS})::VARCHAR, 2, '0') AS tenant,
         's' || (i // 3) AS session_id, [i % 17, 100 + i % 5] AS hash_ids FROM range(2000) t(i)
  -- a tier whose seconds hold arrivals at .1 and .9 (on a 0.1 s grid from its first) and .55 between (off it)
  UNION ALL SELECT 5000.1 + k + [0.0, 0.45, 0.8][j + 1], 50, 5, 'grid', NULL, NULL
  FROM range(30) a(k), range(3) b(j)
) ORDER BY arrival_s) TO $path (FORMAT parquet)
"""


def test_more_tiers_than_a_sessions_pass_and_a_grid_the_seconds_cannot_refute(tmp_path):
    src = tmp_path / "log.parquet"
    duckdb.connect().execute(LOG, {"path": str(src)})
    profile_of(src, tmp_path)
    req = tmp_path / "out" / "requests.parquet"
    settings = ProfileSettings(tier_column="tenant")
    shared = workload.compute_profile(req, settings)
    expected = _one_by_one(req, settings)
    tiers = shared.pop("tiers")
    assert len(tiers) == TIERS + 1
    for key in ("tiers_from", "warnings"):
        shared.pop(key)
    assert shared == {k: v for k, v in expected["whole"].items() if k != "warnings"}
    assert tiers == expected["tiers"]
    # by hand: 2000 rows in sessions of 3 calls (s0..s666, the last with 2): 667 sessions, 3 calls at the median
    assert shared["sessions"] == {"sessions": 667, "calls_p50": 3, "calls_mean": 2.999, "calls_max": 3}
    # session s<j> has calls i = 3j, 3j+1, 3j+2 in tenants (j + 0), (j + 1), (j + 0) % TIERS: 2 calls in one, 1 in the other
    t00 = tiers["t00"]["sessions"]
    assert t00["calls_max"] == 2 and t00["sessions"] == len(
        {j for j in range(667) for i in range(3 * j, min(3 * j + 3, 2000)) if (j + i % 2) % TIERS == 0}
    )
    # hashes 0..16 and 100..104: 22 distinct over 4000 blocks (and the grid tier's rows have none)
    assert (shared["prefix_reuse"]["blocks_total"], shared["prefix_reuse"]["blocks_distinct"]) == (4000, 22)
    # the grid tier: first and last arrival of each second are on the 0.1 s grid, the middle one (+0.45) is not
    grid = tiers["grid"]
    assert grid["timestamp_resolution_s"] == 0.01 and grid["requests"] == 90
    assert tiers["t00"]["timestamp_resolution_s"] == 0.01  # arrivals 0.25 s apart, from a first on .0/.25/.5/.75


def test_bad_hash_ids_are_counted_in_the_first_pass(tmp_path):
    n = 1000
    hashes = [f"[{i}, {i + 1}]" for i in range(n)]
    hashes[617] = "[1, x]"
    path = write_parquet(
        tmp_path / "h.parquet",
        {
            "arrival_s": [1_767_571_200 + i * 0.5 for i in range(n)],
            "input_tokens": [100] * n,
            "output_tokens": [10] * n,
            "hash_ids": hashes,
        },
    )
    src = traffic.open_source(str(path))
    con = quality.ingest_connection()
    scan = src.scan_view(con)
    types = dict(traffic._describe(con, scan, src.label))
    mapping = {c: c for c in (*REQUIRED, "hash_ids")}
    first = traffic._first_pass(con, scan, mapping, types, "s", traffic.Progress(enabled=False))
    assert first is not None and first.bad_hash_ids == 1 and first.rows == n
    with pytest.raises(InputError, match=r"'hash_ids' \(hash_ids\): 1 rows are not lists of integers, e\.g\. row 618"):
        traffic.ingest(src, tmp_path / "out" / "requests.parquet", columns={"hash_ids": "hash_ids"})
    assert not (tmp_path / "out" / "requests.parquet").exists()


def test_prefetched_counts_stand_only_for_the_suites_own_sql(tmp_path):
    """The aggregate run before GX loads (prefetch_counts) is the one run_sql_suite derives from GX's expectation
    configurations; its counts are used for that very SQL and values only."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT 1767571200 + i AS arrival_s, CASE WHEN i = 3 THEN 0 ELSE 5 END AS input_tokens, "
        "7 AS output_tokens, CAST(CASE WHEN i = 3 THEN 0 ELSE 5 END AS VARCHAR) AS _raw_input_tokens, "
        "'7' AS _raw_output_tokens, '' AS _raw_arrival_s, 'f.csv' AS _file FROM range(10) r(i)"
    )
    query = "SELECT * FROM t"
    specs = quality.request_rule_specs({}, "s")
    pre = quality.prefetch_counts(con, query, specs)
    rules = quality.request_rules({}, "s")
    result, pairs = quality.run_sql_suite("requests", rules, con, query, ["_file"], pre)
    failed = {rule.name: res.result["unexpected_count"] for rule, res in pairs}
    assert failed["input_tokens_range"] == 1 and sum(failed.values()) == 1  # row 3 has 0 input tokens: by hand
    # counts that do not stand for the suite's SQL are not used: a forged row for another query is ignored
    forged = quality.prefetch_counts(con, "SELECT * FROM t WHERE arrival_s > 0", specs)
    forged.row = (10,) + (10, 0) * (len(specs))
    result, pairs = quality.run_sql_suite("requests", rules, con, query, ["_file"], forged)
    assert {rule.name: res.result["unexpected_count"] for rule, res in pairs} == failed
    # and the suite's own SQL: its row is what the results report (the proof that the prefetch is what is used)
    pre.row = (10,) + (10, 0) * (len(specs))
    result, pairs = quality.run_sql_suite("requests", rules, con, query, ["_file"], pre)
    assert result.success and all(res.result["unexpected_count"] == 0 for _, res in pairs)


def test_sessions_packed_in_few_bits_or_too_long_to_pack_give_the_same_figures(tmp_path, monkeypatch):
    """Packed per-tier calls (few bits a tier, several tiers a sum) and the FILTER-count fallback (a session with
    2^bits calls or more) give the figures of profiling each tier on its own."""
    src = tmp_path / "log.parquet"
    duckdb.connect().execute(LOG, {"path": str(src)})
    profile_of(src, tmp_path)
    req = tmp_path / "out" / "requests.parquet"
    settings = ProfileSettings(tier_column="tenant")
    expected = _one_by_one(req, settings)
    calls = []
    real_filtered = workload_requests.filtered_sessions
    monkeypatch.setattr("pipeline.workload_tiers.filtered_sessions", lambda *a: calls.append(a) or real_filtered(*a))
    # sessions of 3 calls: 2 bits a tier hold them (packed, 3 tiers a sum); 1 bit does not (the fallback)
    for bits, per, fallback in ((2, 3, False), (1, 8, True)):
        monkeypatch.setattr(workload_requests, "SESSION_PACK_BITS", bits)
        monkeypatch.setattr(workload_requests, "SESSION_TIERS_PER_SUM", per)
        calls.clear()
        shared = workload.compute_profile(req, settings)
        assert bool(calls) is fallback
        assert shared["sessions"] == expected["whole"]["sessions"]
        assert {t: p.get("sessions") for t, p in shared["tiers"].items()} == {
            t: p.get("sessions") for t, p in expected["tiers"].items()
        }


def test_quantiles_from_counts_are_duckdbs_own(tmp_path):
    """The median and rate quantiles read off counts are the doubles DuckDB's median / quantile_cont give over every
    row (odd and even counts, a value over a width)."""
    con = duckdb.connect()
    rows = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 0, 0, 7]
    for n in (len(rows), len(rows) - 1):
        xs = sorted(rows[:n])
        values = sorted(set(xs))
        runs = [(np.array(values), np.array([xs.count(v) for v in values]))]
        want = con.execute(
            "SELECT median(x), quantile_cont(x / 60, [0.95, 0.99]) FROM (SELECT unnest($xs)::HUGEINT AS x)",
            {"xs": xs},
        ).fetchall()[0]
        assert workload_requests.quantiles_from_counts(con, runs, [0.5]) == [[want[0]]]
        got = workload_requests.quantiles_from_counts(con, runs, [0.95, 0.99], "x::HUGEINT / 60")
        assert got == [list(want[1])]


def test_first_pass_order_across_batches(monkeypatch):
    """The order, ties and repeats the stream finds do not depend on where its batches end (here every 2 rows); the
    log has no written column beyond the three, so a repeat is in order."""
    con = duckdb.connect()
    cases = {
        # rows (arrival, input, output) -> (ordered, duplicates or None, zero outputs, first zero row)
        "in order, a tie and a repeat": ([(1, 5, 5), (2, 5, 5), (2, 6, 0), (2, 6, 0), (3, 1, 1)], (True, 1, 2, 2)),
        "a tie out of order at a batch end": ([(1, 5, 5), (2, 6, 5), (2, 5, 5), (3, 1, 1)], (False, None, 0, None)),
        "an arrival out of order inside a batch": (
            [(1, 5, 5), (3, 5, 5), (2, 5, 5), (4, 5, 5)],
            (False, None, 0, None),
        ),
    }
    for name, (rows, want) in cases.items():
        sql = (
            "SELECT * FROM (VALUES "
            + ", ".join(f"({a}.0, {i}.0, {o}.0)" for a, i, o in rows)
            + ") t(arrival_s, input_tokens, output_tokens)"
        )
        for batch in (2, 1000):
            monkeypatch.setattr(traffic, "STREAM_BATCH_ROWS", batch)
            bar = traffic.Progress(enabled=False).track("reading", len(rows))
            ordered, (_, _, zero, dupes), first_zero, _ = traffic._stream_order(con, sql, len(rows), False, bar)
            assert (ordered, dupes, zero, first_zero) == want, (name, batch)


def test_the_write_made_while_gx_loads_stands_only_if_every_check_passes(tmp_path, monkeypatch):
    """A clean log in order is written while great-expectations loads, with the bytes of the write after the
    checks; a check that fails afterwards leaves no requests.parquet and no temp file."""
    n = 3000
    path = write_parquet(
        tmp_path / "log.parquet",
        {
            "arrival_s": [1_767_571_200 + i * 0.5 for i in range(n)],
            "input_tokens": [100 + i % 7 for i in range(n)],
            "output_tokens": [10 + i % 3 for i in range(n)],
        },
    )
    src = traffic.open_source(str(path))
    early_calls = []
    real_passes = traffic._passes_early
    monkeypatch.setattr(traffic, "_passes_early", lambda *a: early_calls.append(real_passes(*a)) or early_calls[-1])
    out = tmp_path / "a" / "requests.parquet"
    assert traffic.ingest(src, out).written == "as read (already in order)" and early_calls == [True]
    monkeypatch.setattr(traffic, "_passes_early", lambda *a: False)
    late = tmp_path / "b" / "requests.parquet"
    traffic.ingest(src, late)
    assert out.read_bytes() == late.read_bytes()

    def fail(*a, **k):
        raise InputError("a check failed after the early write")

    monkeypatch.setattr(traffic, "_passes_early", real_passes)
    monkeypatch.setattr(traffic, "check_rate_possible", fail)
    failed = tmp_path / "c" / "requests.parquet"
    with pytest.raises(InputError, match="after the early write"):
        traffic.ingest(src, failed)
    assert not failed.parent.exists() or list(failed.parent.iterdir()) == []
