"""Step-1 definitions on tiny logs whose answers are computed by hand (method.md step 1)."""

from __future__ import annotations

import pytest

from pipeline import workload
from pipeline.workload import ProfileSettings
from tests.conftest import profile_of, write_csv, write_parquet

# Five requests, trace-relative seconds. Input rises while output falls, so the p95 of
# context (input + output per request) differs from p95(input) + p95(output).
TINY = ["0.2,10,5", "0.7,20,4", "1.1,30,3", "3.9,40,2", "4.0,50,1"]


@pytest.fixture
def tiny(tmp_path):
    path = write_csv(tmp_path / "tiny.csv", "arrival_s,input_tokens,output_tokens", TINY)
    return profile_of(path, tmp_path)[0]


def test_percentiles_are_linear_interpolation(tiny):
    # sorted input 10..50; p90 at rank 0.9*4 = 3.6 -> 40 + 0.6*10 = 46; p95 -> 48; p99 -> 49.6
    assert tiny["input_tokens"] == {"p50": 30, "p90": 46, "p95": 48, "p99": 49.6, "mean": 30, "max": 50}
    assert tiny["output_tokens"]["p95"] == 4.8


def test_context_percentiles_are_per_request_not_summed(tiny):
    # context = [15, 24, 33, 42, 51]; p95 at rank 3.8 -> 42 + 0.8*9 = 49.2 (summing p95s would give 52.8)
    assert tiny["context_tokens"]["p95"] == 49.2
    assert tiny["context_tokens"]["max"] == 51
    assert tiny["context_tokens"]["p95"] != tiny["input_tokens"]["p95"] + tiny["output_tokens"]["p95"]


def test_rps_buckets_count_empty_seconds(tiny):
    # 1-s buckets 0..4 hold [2, 1, 0, 1, 1]; sorted [0,1,1,1,2]: p95 = 1 + 0.8 = 1.8, p99 = 1.96
    rps = tiny["rps"]
    assert rps["per_second_p95"] == 1.8
    assert rps["per_second_p99"] == 1.96
    assert rps["peak_1s"] == 2
    assert rps["mean"] == round(5 / 3.8, 4)
    # one 60-s bucket holding all five: 5 / 60
    assert rps["per_minute_p95"] == round(5 / 60, 4)
    assert rps["sizing_rate"] == rps["per_minute_p95"]
    assert tiny["span_s"] == 3.8
    assert tiny["clock"] == "trace_relative"


def test_timestamp_resolution_and_coarse_warning(tiny, tmp_path):
    assert tiny["timestamp_resolution_s"] == 0.1
    rows = [f"{60 * i},{100 + i},{10 + i}" for i in range(30)]
    path = write_csv(tmp_path / "coarse.csv", "arrival_s,input_tokens,output_tokens", rows)
    prof = profile_of(path, tmp_path)[0]
    assert prof["timestamp_resolution_s"] == 60
    assert prof["rps"]["per_second_p95"] is None and prof["rps"]["peak_1s"] is None
    assert prof["rps"]["per_minute_p95"] == round(1 / 60, 4)
    assert [w["code"] for w in prof["warnings"]] == ["coarse_timestamps"]


def test_sparse_trace_with_fine_timestamps_is_not_coarse(tmp_path):
    # one request every ~7.3 s, timestamps with 0.1 ms jitter: the smallest gap is seconds, the tick is < 1 ms
    rows = [f"{7.3 * i + 0.0001 * (i % 7):.4f},{100 + i},{10 + i}" for i in range(40)]
    prof = profile_of(write_csv(tmp_path / "sparse.csv", "arrival_s,input_tokens,output_tokens", rows), tmp_path)[0]
    assert prof["timestamp_resolution_s"] == 0.001  # 1 ms or finer
    assert "coarse_timestamps" not in [w["code"] for w in prof["warnings"]]
    assert prof["rps"]["per_second_p95"] is not None


def test_sizing_rate_param_selects_series(tmp_path):
    path = write_csv(tmp_path / "tiny.csv", "arrival_s,input_tokens,output_tokens", TINY)
    prof = profile_of(path, tmp_path, ProfileSettings(sizing_rate="per_second_p99"))[0]
    assert prof["rps"]["sizing_rate"] == 1.96
    assert prof["sizing_rate_key"] == "per_second_p99"


def test_littles_law_from_slo_targets(tiny):
    # no latencies in the log: E2E = TTFT 2 s + mean output 3 tokens x 50 ms = 2.15 s
    ll = tiny["concurrency_littles_law"]
    assert ll["e2e_s"] == 2.15
    assert ll["p95"] == round(5 / 60 * 2.15, 2)
    assert ll["mean"] == round(5 / 3.8 * 2.15, 2)
    assert ll["e2e_source"].startswith("SLO targets")


def test_littles_law_from_measured_latency(tmp_path):
    rows = ["0,100,10,1000", "1,100,10,3000", "2,100,10,2000"]
    path = write_csv(tmp_path / "lat.csv", "arrival_s,input_tokens,output_tokens,e2e_ms", rows)
    ll = profile_of(path, tmp_path)[0]["concurrency_littles_law"]
    assert ll["e2e_s"] == 2.0  # mean of 1, 3, 2 s
    assert ll["mean"] == round(3 / 2 * 2.0, 2)
    assert ll["e2e_source"].startswith("measured")


@pytest.mark.parametrize(
    ("inp", "out", "expected"),
    [(500, 100, "chat"), (4000, 100, "rag"), (500, 900, "generation"), (4000, 900, "agentic")],
)
def test_archetype_from_p50(tmp_path, inp, out, expected):
    rows = [f"{i},{inp},{out}" for i in range(5)]
    path = write_csv(tmp_path / "a.csv", "arrival_s,input_tokens,output_tokens", rows)
    assert profile_of(path, tmp_path)[0]["archetype"] == expected


def test_agentic_from_sessions():
    sessions = {"sessions": 10, "calls_p50": 6, "calls_mean": 6, "calls_max": 9}
    s = ProfileSettings()
    assert workload.archetype(3000, 100, s, sessions)[0] == "agentic"
    assert workload.archetype(3000, 100, s, None)[0] == "rag"
    assert workload.archetype(500, 100, s, sessions)[0] == "chat"


def test_cap_and_gap_warnings(tmp_path):
    # 100 requests, 20 of them exactly at output 256 (a max_tokens cap); one 1000-s hole.
    rows = [f"{i},{100 + i},{256 if i % 5 == 0 else 10 + i}" for i in range(50)]
    rows += [f"{1049 + i},{100 + i},{256 if i % 5 == 0 else 10 + i}" for i in range(50)]
    path = write_csv(tmp_path / "cap.csv", "arrival_s,input_tokens,output_tokens", rows)
    prof = profile_of(path, tmp_path)[0]
    codes = {w["code"]: w["message"] for w in prof["warnings"]}
    assert "20 requests (20.0%) sit exactly at the maximum output_tokens = 256" in codes["capped_output_tokens"]
    assert codes["long_gaps"].startswith("1 gaps between arrivals exceed 600 s (longest 1,000 s)")
    assert "capped_input_tokens" not in codes


def test_prefix_reuse_from_hash_ids(tmp_path):
    path = write_parquet(
        tmp_path / "h.parquet",
        {
            "arrival_s": [0.0, 1.0, 2.0],
            "input_tokens": [1024, 1024, 1536],
            "output_tokens": [5, 5, 5],
            "hash_ids": [[1, 2], [1, 3], [1, 2, 4]],
        },
    )
    reuse = profile_of(path, tmp_path)[0]["prefix_reuse"]
    # 7 blocks, 4 distinct: 3 of 7 were seen before
    assert reuse["blocks_total"] == 7 and reuse["blocks_distinct"] == 4
    assert reuse["reuse_fraction"] == round(3 / 7, 4)


def test_tiers_from_column_and_rules(tmp_path):
    rows = ["0,100,10,small", "1,200,10,small", "2,5000,300,large", "3,300,10,small"]
    path = write_csv(tmp_path / "t.csv", "arrival_s,input_tokens,output_tokens,tier", rows)
    prof = profile_of(path, tmp_path)[0]
    assert list(prof["tiers"]) == ["large", "small"]
    assert prof["tiers"]["small"]["requests"] == 3
    assert prof["tiers"]["small"]["input_tokens"]["p50"] == 200
    assert prof["tiers"]["large"]["input_tokens"]["max"] == 5000
    rules = ({"name": "short", "max_input_tokens": 250}, {"name": "long"})
    prof = profile_of(path, tmp_path, ProfileSettings(tier_rules=rules))[0]
    assert {k: v["requests"] for k, v in prof["tiers"].items()} == {"long": 2, "short": 2}
    assert "tiers" not in profile_of(path, tmp_path, ProfileSettings(tier_column="none"))[0]


def test_tiers_mapped_from_column_values(tmp_path):
    rows = ["0,100,10,chat", "1,200,10,faq", "2,5000,300,code", "3,300,10,chat"]
    path = write_csv(tmp_path / "t.csv", "arrival_s,input_tokens,output_tokens,tenant", rows)
    prof = profile_of(path, tmp_path, ProfileSettings(tier_map=(("chat", "small"), ("faq", "small"))))[0]
    # chat + faq -> small (3 requests, inputs 100/200/300); code keeps its own name
    assert {k: v["requests"] for k, v in prof["tiers"].items()} == {"code": 1, "small": 3}
    assert prof["tiers"]["small"]["input_tokens"]["p50"] == 200
    assert "mapped by workload.tiers.map" in prof["tiers_from"]


def test_hourly_curve_in_utc(tmp_path):
    # 2026-01-05 00:00:10Z and 00:00:20Z, then 01:30:00Z; minutes 0..90 form the series.
    t0 = 1_767_571_200
    rows = [f"{t0 + 10},100,10", f"{t0 + 20},100,10", f"{t0 + 5400},100,10"]
    path = write_csv(tmp_path / "h.csv", "arrival_s,input_tokens,output_tokens", rows)
    prof = profile_of(path, tmp_path)[0]
    hourly = prof["hourly"]
    assert prof["clock"] == "epoch_utc"
    assert list(hourly) == ["00", "01"]
    assert hourly["00"]["requests"] == 2 and hourly["01"]["requests"] == 1
    # hour 00: 60 minutes, one holding 2 requests -> mean rate (2/60)/60; hour 01: 31 minutes (60..90)
    assert hourly["00"]["mean_rps"] == round(2 / 60 / 60, 4)
    assert hourly["01"]["peak_minute_rps"] == round(1 / 60, 4)
