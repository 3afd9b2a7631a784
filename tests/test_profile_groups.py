"""The shared-pass profile (workload.Groups: whole log and every tier in one pass per figure) gives exactly
the figures of profiling each tier on its own (Requests: one filtered view per tier, its own queries)."""

from __future__ import annotations

import duckdb

from pipeline import workload
from pipeline.workload import ProfileSettings, Requests, profile_requests, tier_expression
from tests.conftest import profile_of

LOG = """
COPY (SELECT * FROM (
  SELECT 1000.0 + (i // 7) * 5 + (i % 7) * 0.001 AS arrival_s, 100 + (i % 50) AS input_tokens,
         least(40, 1 + i % 60) AS output_tokens, 'batch' AS model, 2000.0 + i % 300 AS e2e_ms,
         's' || (i // 3) AS session_id, [i % 11, i % 13] AS hash_ids FROM range(700) t(i)
  UNION ALL SELECT 1003.25 + i * 1.37 + CASE WHEN i > 200 THEN 900 ELSE 0 END, 3000 + i % 7, 200 + i % 3, 'steady',
         NULL, NULL, [i % 5] FROM range(300) t(i)
  UNION ALL SELECT 1500.0, 10, 10, 'single', 100.0, 'x', []
  UNION ALL SELECT 1600.0, 10, 12, 'instant', 100.0, 's1', [1] FROM range(5)
  UNION ALL SELECT 1700.0 + i * 0.3, 10 + i, 5, NULL, 50.0, 's2', NULL FROM range(40) t(i)
) ORDER BY arrival_s) TO $path (FORMAT parquet)
"""


def _one_by_one(path, settings: ProfileSettings) -> dict:
    """The per-tier profile as computed before the shared passes: one Requests view per tier."""
    con = duckdb.connect()
    whole = Requests(con, path)
    prof = profile_requests(whole, settings, None, "the log")
    expr, how, values = tier_expression(whole.columns, settings)
    names = [r[0] for r in con.execute(f"SELECT DISTINCT {expr} FROM {whole.rel} ORDER BY 1", values).fetchall()]
    tiers = {}
    for name in names:
        sub = Requests(con, path, f"{expr} = $tier", {**values, "tier": name})
        tiers[name] = profile_requests(sub, settings, None, f"tier {name!r} ({how})", max(prof["span_s"], 1.0))
    con.close()
    return {"whole": prof, "tiers": tiers}


def test_shared_passes_match_tier_by_tier(tmp_path):
    src = tmp_path / "log.parquet"
    duckdb.connect().execute(LOG, {"path": str(src)})
    profile_of(src, tmp_path)  # ingest: tmp_path/out/requests.parquet
    req = tmp_path / "out" / "requests.parquet"
    for settings in (
        ProfileSettings(tier_column="model"),
        ProfileSettings(tier_column="model", max_gap_s=0.5, sizing_rate="per_second_p99"),
        ProfileSettings(tier_rules=({"name": "short", "max_input_tokens": 200}, {"name": "long"})),
    ):
        shared = workload.compute_profile(req, settings)
        expected = _one_by_one(req, settings)
        tiers = shared.pop("tiers")
        shared.pop("tiers_from")
        whole = {k: v for k, v in shared.items() if k != "warnings"}
        assert whole == {k: v for k, v in expected["whole"].items() if k != "warnings"}
        assert tiers == expected["tiers"]
    # known by hand: the batched tier arrives in bursts of 7 every 5 s; 'single' is one request
    by_model = workload.compute_profile(req, ProfileSettings(tier_column="model"))["tiers"]
    assert by_model["batch"]["batched_arrivals"]["tick_s"] == 5
    assert by_model["batch"]["requests"] == 700 and by_model["single"]["requests"] == 1
    assert by_model["batch"]["sessions"]["sessions"] == 234  # sessions s0..s233, 3 calls each (the last 1)
    assert by_model["steady"]["timestamp_resolution_s"] == 0.01
