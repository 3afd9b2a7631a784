"""The benchmark plan (issue 14, step 7's input side): trace, commands, manifest, writer and `sizing bench-plan`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import bench_plan, bench_plan_io, cli, traffic
from pipeline.benchmarks import read_manifest
from pipeline.errors import InputError
from tests.conftest import ROOT, profile_of

FROZEN = ROOT / "tests" / "data" / "metrics"
SLO = {"ttft_p99_ms": 2000, "itl_p99_ms": 50}


def _candidate(**kw) -> bench_plan.Candidate:
    base = dict(
        id="large/H200/w-fp8/kv-fp8",
        tier="large",
        model="Llama-3.1-70B",
        gpu="H200",
        tp=2,
        weight_dtype="fp8",
        kv_dtype="fp8",
        hf_repo="meta-llama/Llama-3.1-70B-Instruct",
    )
    base.update(kw)
    return bench_plan.Candidate(**base)


@pytest.fixture(scope="module")
def sample_requests(tmp_path_factory) -> pd.DataFrame:
    """The shipped sample log through the project's reader (what the ingest stage writes)."""
    out = tmp_path_factory.mktemp("sample") / "requests.parquet"
    src = traffic.open_source(str(ROOT / "data" / "raw" / "traffic" / "sample_traffic.parquet"), None, ROOT)
    traffic.ingest(src, out, progress=None)
    return pd.read_parquet(out)


def _tier(df: pd.DataFrame, tier: str) -> pd.DataFrame:
    """Rows of a tier, by params.yaml's map (support-chat -> small; code-assist, doc-qa -> large)."""
    if tier == "all":
        return df
    return df[df["tenant"] == "support-chat"] if tier == "small" else df[df["tenant"] != "support-chat"]


def _pcts(records: list[dict], key: str) -> tuple[float, float]:
    v = np.array([r[key] for r in records], dtype=float)
    return float(np.quantile(v, 0.5)), float(np.quantile(v, 0.95))


def _assert_within_2pct(records: list[dict], expected: dict[str, dict[str, float]]) -> None:
    for key, name in (("input_length", "input_tokens"), ("output_length", "output_tokens")):
        p50, p95 = _pcts(records, key)
        for got, want in ((p50, expected[name]["p50"]), (p95, expected[name]["p95"])):
            assert abs(got - want) <= 0.02 * want, (key, got, want)


def _assert_mooncake_format(records: list[dict], with_hash: bool) -> None:
    ts = [r["timestamp"] for r in records]
    assert all(type(t) is int for t in ts) and ts[0] == 0 and ts == sorted(ts)
    for r in records:
        assert list(r) == (["timestamp", "input_length", "output_length", "hash_ids"] if with_hash else list(r)[:3])
        assert type(r["input_length"]) is int and r["input_length"] >= 1 and r["output_length"] >= 1
        if with_hash:
            h = r["hash_ids"]
            assert isinstance(h, list) and all(type(x) is int for x in h)
            # AIPerf's rule (prompt.py _build_token_sequence): 0 < final block <= block size
            final = r["input_length"] - (len(h) - 1) * bench_plan.HASH_BLOCK_TOKENS
            assert 0 < final <= bench_plan.HASH_BLOCK_TOKENS
        else:
            assert "hash_ids" not in r


# --- the trace: hand-worked cases -------------------------------------------------------------------------------


def test_quantile_mapping_is_the_identity_when_the_window_is_the_whole_log():
    table = {"arrival_s": [10.0, 10.5, 11.0, 12.0, 12.25], "input_tokens": [5, 300, 40, 7, 2000],
             "output_tokens": [9, 1, 50, 20, 3]}  # fmt: skip
    tr = bench_plan.build_trace(table, min_requests=1)
    assert [r["input_length"] for r in tr.records] == [5, 300, 40, 7, 2000]
    assert [r["output_length"] for r in tr.records] == [9, 1, 50, 20, 3]
    assert [r["timestamp"] for r in tr.records] == [0, 500, 1000, 2000, 2250]


def test_every_nth_arrival_takes_the_log_quantile_at_its_rank():
    # rows 0, 2, 4 are picked (replicas 2); their inputs 50, 10, 30 rank 2, 0, 1 among themselves, so they take
    # the log's quantiles at 1, 0 and 0.5: max 50, min 10, median of [50, 20, 10, 40, 30] = 30
    table = {"arrival_s": [0.0, 1.0, 2.0, 3.0, 4.0], "input_tokens": [50, 20, 10, 40, 30],
             "output_tokens": [1, 2, 3, 4, 5]}  # fmt: skip
    tr = bench_plan.build_trace(table, replicas=2, min_requests=1)
    assert [r["input_length"] for r in tr.records] == [50, 10, 30]
    assert [r["output_length"] for r in tr.records] == [1, 3, 5]  # outputs 1, 3, 5 -> quantiles 0, .5, 1: 1, 3, 5
    assert [r["timestamp"] for r in tr.records] == [0, 2000, 4000]


def test_integer_milliseconds():
    arr = [0.0, 10.0, 20.0, 120.0, 120.0004, 120.0016, 130.0, 140.0, 150.0]
    table = {"arrival_s": arr, "input_tokens": [100] * 9, "output_tokens": [10] * 9}
    tr = bench_plan.build_trace(table, min_requests=1)  # under an hour: the whole log
    assert tr.window_start_s == 0.0 and tr.window_requests == 9
    assert [r["timestamp"] for r in tr.records] == [0, 10000, 20000, 120000, 120000, 120002, 130000, 140000, 150000]


def _per_minute(counts: dict[int, int], minutes: int) -> list[float]:
    """Arrivals spread evenly inside each minute: counts[m] in minute m (1 where not given, 0 for minutes 60-119)."""
    arr = []
    for m in range(minutes):
        n = counts.get(m, 0 if 60 <= m < 120 else 1)
        arr += [60.0 * m + k * 60.0 / n for k in range(n)]
    return arr


def test_busiest_window_is_the_fleet_replays_hour_of_the_per_minute_p99_peak():
    # hour 0: 10 arrivals every minute (600, p99 10); minutes 60-119 empty; minutes 120-179 one each and 50 in
    # minute 150 (109 arrivals). Every hour holding minute 150 has p99 = 1 + 0.41 x 49 = 21.09 (numpy linear, rank
    # 0.99 x 59 = 58.41); of those the one starting at minute 120 has the most arrivals. The old rule (most
    # arrivals in the window) took hour 0.
    arr = _per_minute({**{m: 10 for m in range(60)}, 150: 50}, 180)
    table = {"arrival_s": arr, "input_tokens": [100] * len(arr), "output_tokens": [10] * len(arr)}
    tr = bench_plan.build_trace(table, min_requests=1)
    from pipeline.sim.trace import busiest_hour

    assert busiest_hour(np.asarray(arr)) == (7200.0, 10800.0)
    assert tr.window_start_s == 7200.0 and tr.window_requests == 109
    assert "per-minute p99" in tr.how


def test_sample_window_is_the_replay_window(sample_requests):
    from pipeline.sim.trace import busiest_hour

    arr = np.sort(sample_requests["arrival_s"].to_numpy())
    lo, hi = busiest_hour(arr)
    tr = bench_plan.build_trace(sample_requests, min_requests=1)
    inside = arr[(arr >= lo) & (arr < hi)]
    assert tr.window_requests == len(inside) and tr.window_start_s == round(inside[0] - arr[0], 3)


def test_hash_ids_keep_the_logged_prefix_and_pad_with_fresh_ids():
    table = {"arrival_s": [0.0, 1.0, 2.0], "input_tokens": [1025, 512, 100], "output_tokens": [5, 5, 5],
             "hash_ids": [[7], [3, 4, 9], []]}  # fmt: skip
    tr = bench_plan.build_trace(table, min_requests=1)
    # 1025 tokens = 3 blocks of 512: [7] + two fresh ids above the log's largest (9); 512 = 1 block: [3]; 100: fresh
    assert [r["hash_ids"] for r in tr.records] == [[7, 10, 11], [3], [12]]
    assert tr.fresh_hash_blocks == 3
    _assert_mooncake_format(tr.records, with_hash=True)


def test_concurrency_levels_go_past_the_knee_and_c_max():
    # knee 32, C_max 61.63 (the sample's pooled curve): 1.5 x 32 = 48, ceil(1.5 x 61.63) = 93
    assert bench_plan.concurrency_levels(32.0, 61.6261) == [1, 2, 4, 8, 16, 32, 48, 64, 93]
    assert bench_plan.concurrency_levels(None, 4.0) == [1, 2, 4, 6]
    with pytest.raises(InputError, match="knee and C_max"):
        bench_plan.concurrency_levels(None, None)


def test_the_burst_steps_to_the_multiple_and_back():
    tr = bench_plan.build_trace({"arrival_s": [0.0, 1.0], "input_tokens": [10, 20], "output_tokens": [1, 2]})
    rec = bench_plan.burst_records(tr, peak_rps=10.0, multiplier=2.5, seed=0)
    t = np.array([r["timestamp"] for r in rec]) / 1000
    counts = [np.sum(t < 120), np.sum((t >= 120) & (t < 180)), np.sum(t >= 180)]
    # Poisson counts: 1200 +- 4 x sqrt(1200), 1500 +- 4 x sqrt(1500), 1200 +- 4 x sqrt(1200)
    for got, want in zip(counts, (1200, 1500, 1200), strict=True):
        assert abs(got - want) <= 4 * want**0.5, counts
    assert rec == bench_plan.burst_records(tr, peak_rps=10.0, multiplier=2.5, seed=0)
    with pytest.raises(InputError, match="2 to 3"):
        bench_plan.burst_records(tr, peak_rps=10.0, multiplier=4.0)


@pytest.mark.parametrize(
    "table, match",
    [
        ({"arrival_s": [], "input_tokens": [], "output_tokens": []}, "no requests"),
        ({"arrival_s": [0.0, 1.0], "input_tokens": [0, 5], "output_tokens": [1, 1]}, "input_tokens: rows 0"),
        ({"arrival_s": [0.0, float("nan")], "input_tokens": [1, 5], "output_tokens": [1, 1]}, "arrival_s: rows 1"),
        ({"arrival_s": [0.0], "output_tokens": [1]}, "input_tokens: column missing"),
        ({"arrival_s": [0.0], "input_tokens": [3], "output_tokens": [1], "hash_ids": [["a"]]}, "hash_ids: row 0"),
    ],
)
def test_bad_tables_are_one_line_errors(table, match):
    with pytest.raises(InputError, match=match) as exc:
        bench_plan.build_trace(table)
    assert "\n" not in str(exc.value)


# --- the trace on real logs: the length mix within 2% -----------------------------------------------------------


@pytest.mark.parametrize("tier, replicas", [("all", 1), ("large", 7), ("small", 7)])
def test_sample_trace_lengths_match_the_log_within_2pct(sample_requests, tier, replicas):
    wl = json.loads((FROZEN / "workload.json").read_text())
    expected = wl if tier == "all" else wl["tiers"][tier]  # DuckDB quantile_cont over the whole log
    tr = bench_plan.build_trace(_tier(sample_requests, tier), replicas=replicas)
    assert len(tr.records) >= 200
    _assert_within_2pct(tr.records, expected)
    _assert_mooncake_format(tr.records, with_hash=True)


@pytest.mark.parametrize("name, with_hash", [("azure2023_conv.csv", False), ("mooncake_synthetic.jsonl", True)])
def test_real_trace_lengths_match_the_log_within_2pct(shared_fixtures, tmp_path, name, with_hash):
    prof, _ = profile_of(shared_fixtures / "traces" / name, tmp_path)
    df = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    for replicas in (1, 3):
        tr = bench_plan.build_trace(df, replicas=replicas, min_requests=200)
        _assert_within_2pct(tr.records, prof)
        _assert_mooncake_format(tr.records, with_hash=with_hash)


# --- commands, manifest, writer ----------------------------------------------------------------------------------


def _plan(sample_requests, **kw) -> bench_plan.Plan:
    return bench_plan.build_plan(
        kw.pop("candidate", _candidate(instances=8)),
        _tier(sample_requests, "large"),
        knee=32.0,
        c_max=61.6261,
        peak_rps=2.25,
        slo=SLO,
        **kw,
    )


def test_commands_carry_the_exact_flags(sample_requests):
    plan = _plan(sample_requests)
    cmd = plan.commands
    for flag in (
        'vllm serve "$MODEL" --tensor-parallel-size 2 --quantization fp8 --kv-cache-dtype fp8',
        'MODEL="${MODEL:-meta-llama/Llama-3.1-70B-Instruct}"',
        "--num-warmups 1000",
        "--percentile-metrics ttft,tpot,itl,e2el",
        "--metric-percentiles 50,90,95,99",
        "--save-result",
        "--goodput ttft:2000 tpot:50",
        "for C in 1 2 4 8 16 32 48 64 93; do",
        '--max-concurrency "$C"',
        '--input-file "$HERE/trace.jsonl"',
        '--input-file "$HERE/burst.jsonl"',
        "--custom-dataset-type mooncake_trace --fixed-schedule",
        '--result-filename "vllm-${C}concurrency.json"',
    ):
        assert flag in cmd, flag
    assert cmd.count("aiperf profile") == 2
    # the sweep runs at the log's p95 lengths (large tier: 7766.3 in / 1583 out, metrics/workload.json)
    assert "--random-input-len 7767 --random-output-len 1583" in cmd
    # one replica of 8 sees 2.25 / 8 = 0.28125 req/s; the burst runs at 2.5 x that
    assert plan.facts["peak_rps"] == 0.2812 and "2.5 x (0.703125 req/s)" in cmd


def test_one_replica_sees_the_peak_over_the_serving_instances(sample_requests):
    # frozen fleet.json, large tier: 2.25 req/s peak, usable 1.0197: ceil(2.2065) = 3, x safety 1.2 -> 4 serving;
    # headroom takes it to 6 and the spare to 7. One replica sees 2.25 / 4 = 0.5625 req/s, not 2.25 / 7.
    serving = bench_plan_io.serving_instances(2.25, 1.0197, 4, 1, 1.2)
    assert serving == 4
    plan = _plan(sample_requests, candidate=_candidate(instances=7, serving_instances=serving))
    assert plan.facts["peak_rps"] == 0.5625 and plan.facts["serving_instances"] == 4
    assert "2.5 x (1.40625 req/s)" in plan.commands
    assert plan.trace.replicas == 4  # the trace thinned to every 4th arrival
    assert bench_plan_io.serving_instances(2.25, None, 4, 1, 1.2) is None


def test_pp_and_bf16_reach_the_server_line(sample_requests):
    plan = _plan(sample_requests, candidate=_candidate(tp=4, pp=2, weight_dtype="bf16", kv_dtype="bf16"))
    assert "--tensor-parallel-size 4 --pipeline-parallel-size 2 --dtype bfloat16 --kv-cache-dtype auto" in plan.commands
    assert plan.manifest["gpu_count"] == 8 and plan.manifest["pp"] == 2


def test_written_plan_reads_back_and_is_byte_identical(sample_requests, tmp_path):
    plan = _plan(sample_requests)
    (a,) = bench_plan_io.write_plans([plan], tmp_path / "a")
    (b,) = bench_plan_io.write_plans([_plan(sample_requests)], tmp_path / "b")
    assert a.name == "large__H200__w-fp8__kv-fp8"
    assert sorted(p.name for p in a.iterdir()) == sorted(bench_plan_io.FILES)
    for name in bench_plan_io.FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    before = {n: (a / n).read_bytes() for n in bench_plan_io.FILES}
    bench_plan_io.write_plans([plan], tmp_path / "a")  # rerun in place
    assert before == {n: (a / n).read_bytes() for n in bench_plan_io.FILES}
    m = read_manifest(a / "manifest.yaml")
    assert (m["model"], m["gpu"], m["tp"], m["pp"], m["replicas"], m["tier"]) == (
        "Llama-3.1-70B",
        "H200",
        2,
        1,
        1,
        "large",
    )
    assert (m["weight_dtype"], m["kv_dtype"], m["engine"], m["load_mode"]) == ("fp8", "fp8", "vllm", "closed")
    assert (m["input_tokens"], m["output_tokens"]) == (7767, 1583)
    lines = (a / "trace.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert records == plan.trace.records
    _assert_mooncake_format(records, with_hash=True)


# --- sizing bench-plan -------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, sample_requests) -> Path:
    """A project folder with the frozen metrics, params.yaml, the model catalog and the ingested sample."""
    root = tmp_path / "proj"
    shutil.copytree(FROZEN, root / "metrics")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "data" / "catalog").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "catalog" / "models.csv", root / "data" / "catalog" / "models.csv")
    (root / "data" / "interim").mkdir(parents=True)
    sample_requests.to_parquet(root / "data" / "interim" / "requests.parquet")
    return root


def test_cli_writes_the_chosen_and_the_top_benchmark_next(project, capsys):
    assert cli.main(["bench-plan", "--root", str(project)]) == 0
    out = project / "data" / "benchmark_plan"
    # frozen tco.json: routed plan, large H100-SXM and small L40S chosen; the large tier's benchmark_next, less
    # H200 w-int8/kv-fp8: TP2, 0.7173 usable RPS, USD 92,412.16 a month like H200 w-fp8/kv-fp8 (its twin)
    assert sorted(p.name for p in out.iterdir()) == [
        "large__B200__w-fp8__kv-fp8",
        "large__H100-SXM__w-fp8__kv-fp8",
        "large__H200__w-fp8__kv-fp8",
        "small__L40S__w-fp8__kv-fp8",
    ]
    chosen = read_manifest(out / "large__H100-SXM__w-fp8__kv-fp8" / "manifest.yaml")
    assert (chosen["gpu"], chosen["tp"], chosen["engine_version"], chosen["tier"]) == ("H100-SXM", 4, "0.11.0", "large")
    small = read_manifest(out / "small__L40S__w-fp8__kv-fp8" / "manifest.yaml")
    assert (small["model"], small["gpu"], small["tp"]) == ("Llama-3.1-8B", "L40S", 1)
    cmd = (out / "large__H100-SXM__w-fp8__kv-fp8" / "commands.sh").read_text()
    # measured: knee 32 and C_max 64.36 of the large tier's curve -> 48 and ceil(96.54) = 97
    assert "for C in 1 2 4 8 16 32 48 64 97; do" in cmd and "--tensor-parallel-size 4" in cmd
    assert "meta-llama/Llama-3.1-8B-Instruct" in (out / "small__L40S__w-fp8__kv-fp8" / "commands.sh").read_text()
    assert "large/H100-SXM/w-fp8/kv-fp8 (chosen)" in capsys.readouterr().out


def test_cli_one_candidate_to_a_chosen_folder(project, tmp_path):
    out = tmp_path / "plan"
    assert (
        cli.main(["bench-plan", "--root", str(project), "--candidate", "all/H100-SXM/w-fp8/kv-fp8", "--out", str(out)])
        == 0
    )
    assert [p.name for p in out.iterdir()] == ["all__H100-SXM__w-fp8__kv-fp8"]
    m = read_manifest(out / "all__H100-SXM__w-fp8__kv-fp8" / "manifest.yaml")
    assert "tier" not in m and m["tp"] == 4


def test_cli_unknown_candidate_lists_the_valid_ids(project, tmp_path, capsys):
    out = tmp_path / "plan"
    assert (
        cli.main(["bench-plan", "--root", str(project), "--candidate", "all/H900/w-fp8/kv-fp8", "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("sizing: error: --candidate 'all/H900/w-fp8/kv-fp8'")
    assert "valid ids:" in err and "all/H100-SXM/w-fp8/kv-fp8" in err and "large/H200/w-fp8/kv-fp8" in err
    assert not out.exists()


def test_cli_bad_input_writes_nothing(project, tmp_path, capsys):
    out = tmp_path / "plan"
    df = pd.read_parquet(project / "data" / "interim" / "requests.parquet")
    df.loc[df.index[-1], "input_tokens"] = 0  # the last row, seen only after the first tier's plan is built
    df.to_parquet(project / "data" / "interim" / "requests.parquet")
    assert cli.main(["bench-plan", "--root", str(project), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "input_tokens" in err and "expected whole token counts >= 1" in err
    assert not out.exists()
    (project / "data" / "interim" / "requests.parquet").unlink()
    assert cli.main(["bench-plan", "--root", str(project), "--out", str(out)]) == 1
    assert "requests.parquet: not found" in capsys.readouterr().err
    assert not out.exists()


# --- the bench_plan stage and the report stage's stop ---------------------------------------------------------------


def test_stage_writes_the_plans_and_drops_stale_ones(project):
    from pipeline.layout import Layout
    from pipeline.stages import bench_plan as bench_plan_stage

    out = project / "data" / "benchmark_plan"
    stale = out / "large__A100-80GB__w-bf16__kv-bf16"
    stale.mkdir(parents=True)
    (stale / "README.md").write_text("# Benchmark plan: large/A100-80GB/w-bf16/kv-bf16\n")
    mine = out / "notes"  # not a plan folder: kept
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    res = bench_plan_stage.run(Layout(project))
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "large__B200__w-fp8__kv-fp8",
        "large__H100-SXM__w-fp8__kv-fp8",
        "large__H200__w-fp8__kv-fp8",
        "notes",
        "small__L40S__w-fp8__kv-fp8",
    ]
    assert res["removed"] == ["data/benchmark_plan/large__A100-80GB__w-bf16__kv-bf16"]
    chosen = {p["candidate"]: p for p in res["plans"] if p["role"] == "chosen"}
    # frozen fleet/tco: large H100 TP4, 2.25 req/s peak over 4 serving instances (7 with headroom and the spare)
    big = chosen["large/H100-SXM/w-fp8/kv-fp8"]
    assert (big["serving_instances"], big["instances"], big["peak_rps"]) == (4, 7, 0.5625)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bench_plan_stage.run(Layout(project))
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_write_for_stop_plans_candidates_without_a_tco(project, tmp_path):
    (project / "metrics" / "tco.json").unlink()  # the report stage stopped: no tco.json
    out = tmp_path / "stop"
    rows = [
        {"candidate": "large/H200/w-fp8/kv-fp8", "gpu": "H200", "weights": "fp8", "kv": "fp8", "tp": 2,
         "usable_rps": 1.5, "c_max": 40.0},
        {"id": "small/L40S/w-fp8/kv-fp8", "gpu": "L40S", "weights": "fp8", "kv": "fp8", "tp": 1,
         "max_concurrency_per_replica": 90},
    ]  # fmt: skip
    folders = bench_plan_io.write_for_stop(project, rows, out)
    assert [f.name for f in folders] == ["large__H200__w-fp8__kv-fp8", "small__L40S__w-fp8__kv-fp8"]
    m = read_manifest(folders[0] / "manifest.yaml")
    assert (m["model"], m["gpu"], m["tp"]) == ("Llama-3.1-70B", "H200", 2)
    cmd = (folders[0] / "commands.sh").read_text()
    # 2.25 req/s / 1.5 usable = 2 (ceil 1.5), x 1.2 -> ceil(2.4) = 3 serving: 0.75 req/s each; C_max 40 -> 60;
    # the large tier's measured knee 32 scaled by 40 / 64.3612 (its C_max) = 19.89 -> 1.5 x = 30
    assert "for C in 1 2 4 8 16 30 32 60; do" in cmd and "2.5 x (1.875 req/s)" in cmd
    # no operating point at all (no sweep): the KV-bound concurrency 90 -> ceil(1.5 x 90) = 135
    (project / "metrics" / "operating_point.json").unlink()
    (folder,) = bench_plan_io.write_for_stop(project, rows[1:], tmp_path / "stop2")
    assert "for C in 1 2 4 8 16 32 64 128 135; do" in (folder / "commands.sh").read_text()
    with pytest.raises(InputError, match=r"candidates\[0\]: candidate = None"):
        bench_plan_io.write_for_stop(project, [{"gpu": "H200"}], tmp_path / "bad")
    with pytest.raises(InputError, match="tp: missing"):
        bench_plan_io.write_for_stop(project, [{"candidate": "large/H200/w-fp8/kv-fp8", "gpu": "H200",
                                               "weights": "fp8", "kv": "fp8"}], tmp_path / "bad")  # fmt: skip
    assert not (tmp_path / "bad").exists()


# --- review: the adopted deployment's own id (/tpN), cascade plans, the tco row's basis, identical twins ----------


def _tco(plan: str, **over) -> dict:
    tco = {
        "plan": plan,
        "chosen": plan,
        "pooled": {"candidate": "all/H100-SXM/w-fp8/kv-fp8"},
        "benchmark_next": [{"candidate": "all/H200/w-fp8/kv-fp8"}],
        "per_tier": {
            "large": {"gpu": "H100-SXM", "weights": "fp8", "kv": "fp8", "tp": 4},
            "small": {"gpu": "L40S", "weights": "fp8", "kv": "fp8", "tp": 1},
        },
        "per_tier_candidates": {
            "large": {"benchmark_next": [{"candidate": "large/H200/w-fp8/kv-fp8"}]},
            "small": {"benchmark_next": [{"candidate": "small/L40S/w-int8/kv-fp8"}]},
        },
    }
    tco.update(over)
    return tco


def test_chosen_ids_keep_the_tp_suffix_of_the_adopted_deployment():
    # memory.json sized large/H100-SXM/w-fp8/kv-fp8 at TP8; the fleet runs the measured TP4: tco names it /tp4
    ids = {"large": "large/H100-SXM/w-fp8/kv-fp8/tp4", "small": "small/L40S/w-fp8/kv-fp8"}
    assert bench_plan_io.chosen_ids(_tco("routed", chosen_candidates=ids)) == [
        "large/H100-SXM/w-fp8/kv-fp8/tp4",
        "small/L40S/w-fp8/kv-fp8",
    ]
    # without chosen_candidates: each per_tier row's own candidate id
    tco = _tco("routed")
    tco["per_tier"]["large"]["candidate"] = "large/H100-SXM/w-fp8/kv-fp8/tp4"
    assert bench_plan_io.chosen_ids(tco)[0] == "large/H100-SXM/w-fp8/kv-fp8/tp4"


def test_a_cascade_plan_plans_its_tiers_not_the_pooled_candidate():
    tco = _tco("cascade")
    assert bench_plan_io.chosen_ids(tco) == ["large/H100-SXM/w-fp8/kv-fp8", "small/L40S/w-fp8/kv-fp8"]
    assert bench_plan_io.next_ids(tco, 3) == ["large/H200/w-fp8/kv-fp8", "small/L40S/w-int8/kv-fp8"]
    pooled = _tco("pooled", chosen_candidates={"all": "all/H100-SXM/w-fp8/kv-fp8"})
    assert bench_plan_io.chosen_ids(pooled) == ["all/H100-SXM/w-fp8/kv-fp8"]
    assert bench_plan_io.next_ids(pooled, 3) == ["all/H200/w-fp8/kv-fp8"]


def test_identical_twins_are_planned_once():
    rows = {
        "large/H200/w-fp8/kv-fp8": {"gpu": "H200", "tp": 2, "usable_rps": 0.7173, "monthly_usd": 92412.16},
        "large/H200/w-int8/kv-fp8": {"gpu": "H200", "tp": 2, "pp": 1, "usable_rps": 0.7173, "monthly_usd": 92412.16},
        "large/H200/w-int8/kv-bf16": {"gpu": "H200", "tp": 2, "usable_rps": 0.7, "monthly_usd": 92412.16},
        "small/H200/w-int8/kv-fp8": {"gpu": "H200", "tp": 2, "usable_rps": 0.7173, "monthly_usd": 92412.16},
    }
    kept, same = bench_plan_io.drop_twins(list(rows), rows, chosen=[])
    assert kept == ["large/H200/w-fp8/kv-fp8", "large/H200/w-int8/kv-bf16", "small/H200/w-int8/kv-fp8"]
    assert same == {"large/H200/w-int8/kv-fp8": "large/H200/w-fp8/kv-fp8"}
    # a chosen deployment is always planned, even when a benchmark_next twin came first
    kept, same = bench_plan_io.drop_twins(list(rows)[:2], rows, chosen=["large/H200/w-int8/kv-fp8"])
    assert kept == list(rows)[:2] and same == {}


def test_stage_plans_the_adopted_tp_with_the_tco_rows_basis_and_names_twins(project):
    from pipeline.layout import Layout
    from pipeline.stages import bench_plan as bench_plan_stage

    path = project / "metrics" / "tco.json"
    tco = json.loads(path.read_text())
    large = tco["per_tier_candidates"]["large"]["candidates"]
    h100 = next(r for r in large if r["candidate"] == "large/H100-SXM/w-fp8/kv-fp8")
    # the memory stage's TP8 row, and the measured TP4 fleet the plan adopted (tco.py names it /tp4)
    large.append({**h100, "candidate": "large/H100-SXM/w-fp8/kv-fp8/tp4"})
    h100.update(tp=8, basis="roofline", usable_rps=0.9, monthly_usd=281254.4)
    tco["chosen_candidates"] = {"large": "large/H100-SXM/w-fp8/kv-fp8/tp4", "small": "small/L40S/w-fp8/kv-fp8"}
    tco["per_tier"]["large"].update(candidate="large/H100-SXM/w-fp8/kv-fp8/tp4", basis="measured")
    path.write_text(json.dumps(tco))
    res = bench_plan_stage.run(Layout(project))
    chosen = {p["candidate"]: p for p in res["plans"] if p["role"] == "chosen"}
    assert sorted(chosen) == ["large/H100-SXM/w-fp8/kv-fp8/tp4", "small/L40S/w-fp8/kv-fp8"]
    big = chosen["large/H100-SXM/w-fp8/kv-fp8/tp4"]
    assert (big["tp"], big["basis"], big["usable_rps"]) == (4, "measured", 1.0197)
    assert big["monthly_usd"] == tco["per_tier"]["large"]["monthly_usd"]
    assert "--tensor-parallel-size 4" in big["commands"]
    doc = json.loads((project / "metrics" / "benchmark_plan.json").read_text())
    assert doc["same_as"] == {"large/H200/w-int8/kv-fp8": "large/H200/w-fp8/kv-fp8"}
    h200 = next(p for p in doc["plans"] if p["candidate"] == "large/H200/w-fp8/kv-fp8")
    assert h200["same_as"] == ["large/H200/w-int8/kv-fp8"] and h200["basis"] is not None
    readme = (project / "data" / "benchmark_plan" / "large__H200__w-fp8__kv-fp8" / "README.md").read_text()
    assert "Same benchmark as `large/H200/w-int8/kv-fp8`" in readme
    assert not (project / "data" / "benchmark_plan" / "large__H200__w-int8__kv-fp8").exists()
