"""The cheaper shared passes of the profile (issue 15, speed) give the same figures as profiling each tier on its
own, on the cases their shortcuts depend on: more tiers than one sessions pass holds, sessions spanning tiers,
a timestamp grid that the seconds table cannot refute; and the ingest's folded checks (bad hash_ids counted in
the first pass's stream, the GX suite's aggregate run before great-expectations has loaded) find what they did."""

from __future__ import annotations

import duckdb
import pytest

from pipeline import quality, traffic, workload
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
    assert t00["calls_max"] == 2 and t00["sessions"] == len({j for j in range(667) for i in range(3 * j, min(3 * j + 3, 2000)) if (j + i % 2) % TIERS == 0})
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
