"""Step 1 on logs as real users bring them (issue 15): batched arrivals, clock-minute buckets,
relative-millisecond timestamps, and bad input that used to give a traceback or blame every row.

Expected figures are computed here independently with numpy/pandas, never read back from the profile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import cli, sample, workload
from pipeline.errors import InputError
from pipeline.workload import ProfileSettings
from tests.conftest import ROOT, profile_of, write_csv, write_jsonl

HEADER = "arrival_s,input_tokens,output_tokens"


def _fails(tmp_path, path, **kw) -> str:
    with pytest.raises(InputError) as err:
        profile_of(path, tmp_path, **kw)
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), "a failed ingest left files behind"
    msg = str(err.value)
    assert "Traceback" not in msg
    return msg


def _pct(values, q: float) -> float:
    """Linear-interpolation percentile (numpy's default = DuckDB quantile_cont)."""
    return float(np.percentile(np.asarray(values, dtype=float), q * 100))


def _clock_minute_rates(arrival_s: np.ndarray) -> np.ndarray:
    """Requests per second in each clock minute floor(t / 60), empty minutes as 0 (pandas, by hand)."""
    minute = np.floor(arrival_s / 60).astype(np.int64)
    counts = pd.Series(minute).value_counts()
    full = counts.reindex(range(minute.min(), minute.max() + 1), fill_value=0)
    return full.to_numpy() / 60.0


def _batched_log(rng: np.random.Generator, ticks: int, tick_s: float, jitter_s: float, start_s: float) -> np.ndarray:
    """Arrivals in batches every tick_s seconds (+- jitter_s), a Poisson(10) count per batch, in ms."""
    times = []
    for b in range(ticks):
        t = start_s + b * tick_s + rng.uniform(-jitter_s, jitter_s)
        times += [t] * int(rng.poisson(10))
    return np.round(np.array(times) * 1000)


# -- 1. batched arrivals ------------------------------------------------------------------------------------


def test_batched_arrivals_every_3s_are_detected_and_sized_per_minute(tmp_path):
    rng = np.random.default_rng(20261201)
    ms = _batched_log(rng, ticks=1200, tick_s=3.0, jitter_s=0.003, start_s=0.0)  # 1 h, ~3.3 req/s
    rows = [{"timestamp": int(t), "input_length": 100 + i % 50, "output_length": 10 + i % 7} for i, t in enumerate(ms)]
    path = write_jsonl(tmp_path / "conv_trace.jsonl", rows)
    prof, ing = profile_of(path, tmp_path, ProfileSettings(sizing_rate="per_second_p95"))
    assert ing.layout.name == "mooncake" and prof["timestamp_resolution_s"] == 0.001

    b = prof["batched_arrivals"]
    assert abs(b["tick_s"] - 3.0) <= 0.003
    assert prof["arrival_tick_s"] == b["tick_s"]
    assert b["batches"] == len(np.unique(ms))  # each batch has one timestamp here
    codes = [w["code"] for w in prof["warnings"]]
    assert "batched_arrivals" in codes
    # the per-second series measures the batching: not reported, sizing falls back to per-minute, visibly
    assert prof["rps"]["per_second_p95"] is None and prof["rps"]["peak_1s"] is None
    assert prof["sizing_rate_key"] == "per_minute_p95" and "sizing_rate_fallback" in codes
    s = ms / 1000
    assert prof["rps"]["sizing_rate"] == pytest.approx(_pct(_clock_minute_rates(s), 0.95), abs=1e-4)
    # the warning names what the per-second series would have said (a batch's size, not a rate)
    per_second = pd.Series(np.floor(s).astype(int)).value_counts()
    per_second = per_second.reindex(range(int(s.min()), int(s.max()) + 1), fill_value=0)
    msg = next(w["message"] for w in prof["warnings"] if w["code"] == "batched_arrivals")
    assert "batches every 3 s" in msg and f"peak 1s {per_second.max():,.4g}" in msg
    assert "batches every 3 s" in workload.describe(prof)


def test_batched_on_whole_seconds_is_detected_although_the_resolution_is_1s(tmp_path):
    # exactly every 3 s, integer-second timestamps: the 1-s grid holds, the batching must still show
    rng = np.random.default_rng(7)
    t0 = 1_767_571_200
    rows = [f"{t0 + 3 * b},{100 + k},20" for b in range(200) for k in range(int(rng.poisson(6)) + 1)]
    prof, _ = profile_of(write_csv(tmp_path / "b.csv", HEADER, rows), tmp_path)
    assert prof["timestamp_resolution_s"] == 1.0
    assert prof["batched_arrivals"]["tick_s"] == 3.0
    assert prof["rps"]["per_second_p95"] is None and prof["sizing_rate_key"] == "per_minute_p95"


def test_poisson_arrivals_are_not_batched(tmp_path):
    rng = np.random.default_rng(11)
    t = 1_767_571_200 + np.cumsum(rng.exponential(1 / 3.3, 12_000))  # same mean rate, no batching
    rows = [f"{x:.3f},100,10" for x in t]
    prof, _ = profile_of(write_csv(tmp_path / "p.csv", HEADER, rows), tmp_path)
    assert "batched_arrivals" not in prof
    assert prof["rps"]["per_second_p95"] is not None and prof["sizing_rate_key"] == "per_minute_p95"


def test_real_traces_are_not_batched(shared_fixtures, tmp_path):
    # mooncake_synthetic: Poisson arrivals (inter-arrival CV 1.01, 3.5% of gaps <= 10 ms, measured by hand)
    for name in ("mooncake_synthetic.jsonl", "azure2023_conv.csv"):
        prof, _ = profile_of(shared_fixtures / "traces" / name, tmp_path / name)
        assert "batched_arrivals" not in prof, name
        assert "batched_arrivals" not in [w["code"] for w in prof["warnings"]]
        assert prof["rps"]["per_second_p95"] is not None


# -- 2. per-minute buckets start on the clock minute ----------------------------------------------------------


def test_per_minute_buckets_are_clock_minutes_not_first_arrival_windows(tmp_path):
    # first arrival at 00:00:30; each minute's first half is quiet, its second half busy, except two minutes
    t0 = 1_767_571_200 + 30
    rng = np.random.default_rng(3)
    t = []
    for m in range(40):
        n = 30 if m in (10, 25) else 4
        t += list(t0 + 60 * m + rng.uniform(0, 29.9, n))  # lands in [mm:30, mm+1:00): clock minute m
        t += list(t0 + 60 * m + 30 + rng.uniform(0, 29.9, 2))  # [mm+1:00, mm+1:30): clock minute m + 1
    t = np.sort(np.round(np.array(t), 3))
    prof, _ = profile_of(write_csv(tmp_path / "m.csv", HEADER, [f"{x:.3f},100,10" for x in t]), tmp_path)
    clock = _clock_minute_rates(t)
    k = np.floor((t - t.min()) / 60).astype(int)  # windows counted from the first arrival
    from_first = np.bincount(k) / 60.0
    assert _pct(clock, 0.95) != pytest.approx(_pct(from_first, 0.95), abs=1e-3)
    assert prof["rps"]["per_minute_p95"] == pytest.approx(_pct(clock, 0.95), abs=1e-4)
    assert prof["rps"]["per_minute_p99"] == pytest.approx(_pct(clock, 0.99), abs=1e-4)
    assert "clock minutes" in prof["provenance"]["per_minute_buckets"]
    assert "not 60-s windows counted from the first arrival" in prof["provenance"]["per_minute_buckets"]


# -- 3. relative-millisecond timestamps, all arrivals in one second ------------------------------------------


def _relative_ms_log(tmp_path, column: str = "ts", gap_ms: float = 200.0):
    rng = np.random.default_rng(5)
    t = np.cumsum(rng.exponential(gap_ms, int(3_600_000 / gap_ms)))  # ms since the trace start, ~1 h
    t = t[t < 3_600_000]
    rows = [f"{int(x)},{100 + i % 30},{10 + i % 5}" for i, x in enumerate(t)]
    return write_csv(tmp_path / "rel.csv", f"{column},input_tokens,output_tokens", rows), np.floor(t) / 1000


def test_relative_milliseconds_are_detected_and_reported(tmp_path):
    path, s = _relative_ms_log(tmp_path)
    prof, ing = profile_of(path, tmp_path, columns={"arrival_s": "ts"})
    assert ing.timestamp_unit == "ms"
    assert prof["clock"] == "trace_relative"
    assert prof["span_s"] == pytest.approx(s.max() - s.min(), abs=1e-3)
    assert prof["rps"]["mean"] == pytest.approx(len(s) / (s.max() - s.min()), rel=1e-4)
    assert prof["rps"]["sizing_rate"] == pytest.approx(_pct(_clock_minute_rates(s), 0.95), abs=1e-4)
    assert prof["rps"]["sizing_rate"] > 4
    w = next(w for w in prof["warnings"] if w["code"] == "timestamp_unit_inferred")
    assert "MILLISECONDS" in w["message"] and "workload.timestamp_unit: s" in w["message"]


def test_unit_from_column_name_needs_no_guess(tmp_path):
    path, _ = _relative_ms_log(tmp_path, column="arrival_ms")
    prof, ing = profile_of(path, tmp_path, columns={"arrival_s": "arrival_ms"})
    assert ing.timestamp_unit == "ms"
    assert "timestamp_unit_inferred" not in [w["code"] for w in prof["warnings"]]


def test_sparse_fractional_seconds_stay_seconds(tmp_path):
    # 200 requests over ~3 days of trace-relative seconds with decimals: seconds, not ms
    rng = np.random.default_rng(9)
    t = np.cumsum(rng.exponential(1300.0, 200))
    rows = [f"{x:.3f},100,10" for x in t]
    _, ing = profile_of(write_csv(tmp_path / "s.csv", HEADER, rows), tmp_path)
    assert ing.timestamp_unit == "s"


def test_ms_forced_read_as_seconds_never_silently_sizes_for_zero(tmp_path):
    path, s = _relative_ms_log(tmp_path, gap_ms=2000.0)
    prof, _ = profile_of(path, tmp_path, columns={"arrival_s": "ts"}, timestamp_unit="s")
    # ~0.5 req/s read as seconds: 41 days, ~97% of minutes empty, a per-minute p95 of 0 req/s
    as_s = s * 1000
    assert _pct(_clock_minute_rates(as_s), 0.95) == 0
    assert prof["rps"]["per_minute_p95"] == 0
    assert prof["sizing_rate_key"] != "per_minute_p95" and prof["rps"]["sizing_rate"] > 0
    w = next(w for w in prof["warnings"] if w["code"] == "zero_sizing_rate")
    assert "timestamp unit" in w["message"]


def test_all_arrivals_in_one_second(tmp_path):
    rows = [f"1700000000.{i:02d},100,10" for i in range(50)]
    prof, _ = profile_of(write_csv(tmp_path / "one.csv", HEADER, rows), tmp_path)
    # the old 1-h grid test passed any log shorter than 3.6 s: the resolution is 10 ms
    assert prof["timestamp_resolution_s"] == 0.01
    assert prof["rps"]["mean"] == pytest.approx(50 / 0.49, rel=1e-4)
    assert prof["rps"]["per_minute_p95"] == pytest.approx(50 / 60, abs=1e-4)
    assert "short_log" in [w["code"] for w in prof["warnings"]]
    same = [f"1700000000,{100 + i},10" for i in range(5)]
    msg = _fails(tmp_path / "same", write_csv(tmp_path / "same.csv", HEADER, same))
    assert "same.csv" in msg and "all 5 requests arrive at the same instant" in msg and "expected at least 2" in msg


# -- 4. no tracebacks, the right rows blamed ------------------------------------------------------------------


def test_csv_with_a_quoted_newline_is_read(tmp_path):
    rows = ['1700000000,100,10,"two\nlines"', "1700000001,120,12,plain", "1700000003,90,9,plain"]
    prof, ing = profile_of(write_csv(tmp_path / "q.csv", HEADER + ",note", rows), tmp_path)
    assert ing.rows_read == 3 and prof["requests"] == 3
    assert prof["input_tokens"]["max"] == 120


def test_string_in_hash_ids_names_column_and_rows(tmp_path):
    rows = [{"timestamp": 1000 * i, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]} for i in range(10)]
    rows[3]["hash_ids"] = ["x", 2]
    rows[7]["hash_ids"] = "abc"
    msg = _fails(tmp_path, write_jsonl(tmp_path / "h.jsonl", rows))
    assert "h.jsonl" in msg and "column 'hash_ids'" in msg and "2 rows are not lists of integers" in msg
    assert "row 4" in msg and "row 8" in msg and "expected a list of integer" in msg
    assert "\n" not in msg


def test_all_rows_failed_with_max_failed_share_1(tmp_path):
    rows = [f"{1700000000 + i},100,0" for i in range(10)]
    msg = _fails(tmp_path, write_csv(tmp_path / "f.csv", HEADER, rows), max_failed_share=1.0)
    assert "f.csv" in msg and "'output_tokens'" in msg and "all 10 rows have 0 output tokens" in msg
    assert "expected a log of served requests" in msg


def test_non_utf8_bytes_in_csv_and_jsonl(tmp_path):
    csv = tmp_path / "latin.csv"
    csv.write_bytes(b"arrival_s,input_tokens,output_tokens,tenant\n1700000000,100,10,a\n1700000001,100,10,caf\xe9\n")
    msg = _fails(tmp_path, csv)
    assert msg.startswith(f"{csv}: cannot be read: line 3, field 'tenant' (bytes e9)")
    assert "expected a UTF-8 encoded log" in msg and "\n" not in msg
    js = tmp_path / "latin.jsonl"
    js.write_bytes(
        b'{"timestamp":1,"input_length":5,"output_length":5}\n{"timestamp":2,"input_length":5,"output_length":5,"t":"\xe9"}\n'
    )
    msg = _fails(tmp_path, js)
    assert msg.startswith(f"{js}: cannot be read: line 2 (bytes e9)") and "UTF-8" in msg and "\n" not in msg


def test_three_bad_timestamps_in_3000_rows_blame_three(tmp_path):
    rows = [f"{1700000000 + i * 0.5},100,10" for i in range(3000)]
    for i in (5, 100, 2000):
        rows[i] = f"n/a{i},100,10"
    msg = _fails(tmp_path, write_csv(tmp_path / "t.csv", HEADER, rows))
    assert "3 of 3,000 rows are empty or cannot be parsed as seconds" in msg
    assert "'n/a5', 'n/a100', 'n/a2000'" in msg


def test_single_row_log_is_a_clear_error(tmp_path):
    msg = _fails(tmp_path, write_csv(tmp_path / "one.csv", HEADER, ["1700000000,100,10"]))
    assert "one.csv" in msg and "a single request" in msg and "expected at least 2 requests" in msg


def test_one_request_tier_is_a_documented_warning(tmp_path):
    rows = [f"{1700000000 + i},100,10,{'chat' if i else 'rare'}" for i in range(100)]
    prof, _ = profile_of(write_csv(tmp_path / "t.csv", HEADER + ",tier", rows), tmp_path)
    rare = prof["tiers"]["rare"]
    assert rare["requests"] == 1
    assert rare["rps"]["mean"] == pytest.approx(1 / 99, abs=1e-4)  # 1 request over the log's 99 s
    w = [w for w in prof["warnings"] if w["code"] == "tier_without_rate"]
    assert len(w) == 1 and "tier 'rare'" in w[0]["message"] and "workload.tiers.map" in w[0]["message"]


def test_cli_profile_bad_hash_ids_is_one_line(tmp_path, capsys):
    rows = [{"timestamp": 1000 * i, "input_length": 600, "output_length": 10, "hash_ids": "oops"} for i in range(3)]
    path = write_jsonl(tmp_path / "h.jsonl", rows)
    assert cli.main(["profile", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sizing: error:") and err.count("\n") == 1 and "Traceback" not in err


# -- 5. the SAMPLE flag ---------------------------------------------------------------------------------------


def test_sample_flag_in_provenance(tmp_path):
    assert sample.is_sample([sample.SAMPLE_PATH])
    assert sample.is_sample([tmp_path / "data/raw/traffic/sample_traffic.parquet"], tmp_path)
    rows = [f"{1700000000 + i},100,10" for i in range(5)]
    prof, _ = profile_of(write_csv(tmp_path / "own.csv", HEADER, rows), tmp_path)
    assert prof["provenance"]["sample"] is False
    # the shipped project: all three sample inputs; a project pointed at its own log: none
    found = sample.sample_inputs(ROOT)
    assert [f.split(" (")[0] for f in found] == ["the traffic log", "benchmark sweeps", "the production window"]
    assert "SAMPLE DATA" in sample.banner_html(found) and sample.banner_html([]) == ""
    mine = {"workload": {"source": "own.csv"}, "curve": {"source": "none"}, "validation": {"source": None}}
    assert sample.sample_inputs(tmp_path, mine) == []
    assert "&lt;svg" in sample.banner_html(["benchmark sweeps (<svg onload=alert(2)>: SYNTHETIC)"])
