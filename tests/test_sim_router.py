"""Replicas behind a router (pipeline/sim/router.py), the trace windows (pipeline/sim/trace.py) and
`sizing simulate`, on cases worked by hand. Toy cost: 10 ms + 1 ms per scheduled token per iteration."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_sim_engine import busy_trace, toy

from pipeline import cli
from pipeline.errors import InputError
from pipeline.sim.engine import EngineConfig, Trace, simulate_open
from pipeline.sim.router import simulate_fleet
from pipeline.sim.trace import busiest_hour, load_trace


def trace(arrivals: list[float], inp: list[int], out: list[int], hashes: list[list[int]] | None = None) -> Trace:
    if hashes is None:
        return Trace(np.array(arrivals, float), np.array(inp, np.int64), np.array(out, np.int64))
    offs = np.concatenate([[0], np.cumsum([len(h) for h in hashes])]).astype(np.int64)
    vals = np.array([x for h in hashes for x in h], np.int64)
    return Trace(np.array(arrivals, float), np.array(inp, np.int64), np.array(out, np.int64), offs, vals, 512)


def test_round_robin_by_hand():
    tr = trace([0.0, 0.0, 0.1, 0.2, 0.3], [10] * 5, [2] * 5)
    f = simulate_fleet(toy(), EngineConfig(), tr, 2, "round-robin")
    assert list(f.assignment) == [0, 1, 0, 1, 0]
    assert f.routed == [3, 2]
    # every request alone on its replica except the first two (t = 0, one each): TTFT 0.020, E2E 0.031
    assert f.result.ttft_s == pytest.approx([0.020] * 5, abs=1e-12)
    assert f.result.e2e_s == pytest.approx([0.031] * 5, abs=1e-12)


def test_least_outstanding_by_hand():
    # r0 (t=0, 1000 output tokens: ~11 s) -> replica 0. r1 at 0.5 -> replica 1 (0 outstanding); its single
    # iteration (0.01 + 0.01) ends at 0.52. r2 at 0.51: replica 1's request is not finished at 0.51, so both
    # have 1 outstanding -> the lower number, replica 0. r3 at 1.0: replica 0 holds 2, replica 1 none -> 1.
    # r4 at 1.0 (same instant): replica 1 now holds r3 -> 1 vs 2 -> replica 1.
    tr = trace([0.0, 0.5, 0.51, 1.0, 1.0], [10, 10, 10, 10, 10], [1000, 1, 50, 5, 5])
    f = simulate_fleet(toy(), EngineConfig(), tr, 2, "least-outstanding")
    assert list(f.assignment) == [0, 1, 0, 1, 1]
    rr = simulate_fleet(toy(), EngineConfig(), tr, 2, "round-robin")
    assert list(rr.assignment) == [0, 1, 0, 1, 0]


def test_prefix_affinity_keeps_a_prefix_on_one_replica():
    # 40 requests over 4 system prompts, and 10 without hashes (least-outstanding)
    rng = np.random.default_rng(0)
    n = 50
    heads = rng.integers(0, 4, n)
    hashes = [[int(h) * 100, int(h) * 100 + 1] if i < 40 else [] for i, h in enumerate(heads)]
    tr = trace(list(np.sort(rng.uniform(0, 5, n))), [1100] * n, [20] * n, hashes)
    f = simulate_fleet(toy(), EngineConfig(), tr, 3, "prefix-affinity")
    for h in range(4):
        where = {int(f.assignment[i]) for i in range(40) if heads[i] == h}
        assert len(where) <= 1, h
    # no hashes at all: the same as least-outstanding
    plain = trace(list(tr.arrival_s), [1100] * n, [20] * n)
    a = simulate_fleet(toy(), EngineConfig(), plain, 3, "prefix-affinity")
    b = simulate_fleet(toy(), EngineConfig(), plain, 3, "least-outstanding")
    assert list(a.assignment) == list(b.assignment)


def test_one_replica_fleet_is_the_engine(llama70b_cost):
    tr = busy_trace(1200)
    cfg = EngineConfig(kv_blocks=3000)
    alone = simulate_open(llama70b_cost, cfg, tr)
    for router in ("round-robin", "least-outstanding", "prefix-affinity"):
        f = simulate_fleet(llama70b_cost, cfg, tr, 1, router)
        for k in ("ttft_s", "e2e_s", "itl_mean_s", "finish_s", "preemptions"):
            assert getattr(f.result, k).tobytes() == getattr(alone, k).tobytes(), (router, k)
        assert f.preemptions == [alone.preemptions_total]


def test_busy_share_and_preemptions_per_replica():
    # round-robin over 3 replicas: A and B (the preemption case of test_sim_engine: 6 blocks) both on replica 0
    # (requests 0 and 3), C, D short on replicas 1 and 2. Replica 0 runs from 0 to 0.456 (busy all the time),
    # preempts once; replica 1 serves C (10 in, 1 out: 0.020 s), replica 2 D the same.
    tr = trace([0.0, 0.0, 0.0, 0.0], [20, 10, 10, 20], [30, 1, 1, 30])
    f = simulate_fleet(toy(), EngineConfig(block_size=16, kv_blocks=6), tr, 3, "round-robin")
    assert list(f.assignment) == [0, 1, 2, 0]
    assert f.preemptions == [1, 0, 0]
    assert f.busy_share == pytest.approx([1.0, 0.020 / 0.456, 0.020 / 0.456], abs=1e-9)
    assert f.result.e2e_s == pytest.approx([0.397, 0.020, 0.020, 0.456], abs=1e-12)
    s = f.summary()
    assert [r["routed"] for r in s["replicas"]] == [2, 1, 1] and s["preemptions"] == 1


def test_fleet_deterministic(llama70b_cost):
    tr = busy_trace(1000)
    a = simulate_fleet(llama70b_cost, EngineConfig(kv_blocks=2000), tr, 3, "prefix-affinity", rate_scale=2.0)
    b = simulate_fleet(llama70b_cost, EngineConfig(kv_blocks=2000), tr, 3, "prefix-affinity", rate_scale=2.0)
    assert a.result.e2e_s.tobytes() == b.result.e2e_s.tobytes()
    assert a.assignment.tobytes() == b.assignment.tobytes()


def test_fleet_bad_input():
    tr = trace([0.0], [10], [2])
    with pytest.raises(InputError, match="router"):
        simulate_fleet(toy(), EngineConfig(), tr, 2, "random")
    for bad in (0, -1, 1.5):
        with pytest.raises(InputError, match="replicas"):
            simulate_fleet(toy(), EngineConfig(), tr, bad)  # type: ignore[arg-type]
    for scale in (0.0, float("nan"), -2.0):
        with pytest.raises(InputError, match="rate-scale"):
            simulate_fleet(toy(), EngineConfig(), tr, 1, rate_scale=scale)


# ----------------------------------------------------------------------------------------------- windows


def write_log(path, arrivals: np.ndarray, with_hashes: bool = False) -> None:
    n = len(arrivals)
    cols = {
        "arrival_s": pa.array(1.7e9 + arrivals, pa.float64()),
        "input_tokens": pa.array(np.full(n, 600), pa.int64()),
        "output_tokens": pa.array(np.full(n, 20), pa.int64()),
    }
    if with_hashes:
        cols["hash_ids"] = pa.array([[7] for _ in range(n)], pa.list_(pa.int64()))
    pq.write_table(pa.table(cols), path)


def window_arrivals() -> np.ndarray:
    # 180 minutes, 1 arrival a minute; 30 extra in minute 100 and in minute 101, 10 extra in minute 150
    base = np.arange(180) * 60.0 + 1.0
    extra = [100 * 60 + 2 + np.arange(30) * 0.5, 101 * 60 + 2 + np.arange(30) * 0.5, 150 * 60 + 2 + np.arange(10)]
    return np.sort(np.concatenate([base, *extra]))


def test_busiest_hour_by_hand():
    # per-minute counts: 1 everywhere, 31 in minutes 100 and 101, 11 in minute 150. The p99 of a window's 60
    # minutes is 31 for every window holding both minutes 100 and 101 (starts 42..100); the most arrivals among
    # them (the 10 extra of minute 150 too) are in starts 91..100; the earliest is minute 91.
    a = window_arrivals()
    lo, hi = busiest_hour(a)
    assert lo == pytest.approx(a[0] + 91 * 60)  # minutes count from the first arrival
    assert hi - lo == 3600.0


def test_load_trace_windows(tmp_path):
    log = tmp_path / "requests.parquet"
    a = window_arrivals()
    write_log(log, a, with_hashes=True)
    tr, w = load_trace(log, "busiest-hour")
    start = a[0] + 91 * 60
    expected = int(((a >= start) & (a < start + 3600)).sum())
    assert len(tr) == w.requests == expected == 60 + 30 + 30 + 10 and w.kind == "busiest-hour"
    assert tr.arrival_s[0] >= 0 and tr.arrival_s[-1] < 3600
    assert tr.hash_offsets is not None and list(tr.hash_values[:2]) == [7, 7]
    tr, w = load_trace(log, "all")
    assert len(tr) == len(a) and tr.arrival_s[0] == 0.0
    tr, w = load_trace(log, "0:600")  # 10 minutes from the first arrival: one arrival a minute
    assert len(tr) == 10
    with pytest.raises(InputError, match="no arrivals"):
        load_trace(log, "20000:30000")


# ------------------------------------------------------------------------------------------------ the CLI


SIM = ["--model", "Llama-3.1-70B", "--gpu", "H100-SXM", "--tp", "4", "--weights", "fp8", "--kv", "fp8"]


def test_cli_simulate_json(tmp_path, capsys):
    log = tmp_path / "requests.parquet"
    write_log(log, window_arrivals(), with_hashes=True)
    assert cli.main(["simulate", str(log), *SIM, "--replicas", "2", "--router", "round-robin", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["requests"] == 130 and res["replica_count"] == 2 and res["router"] == "round-robin"
    assert [r["routed"] for r in res["replicas"]] == [65, 65]
    assert res["engine"]["kv_blocks"] > 0 and res["basis"] == "roofline"
    assert set(res["slo"]) >= {"met", "attainment", "ttft_p99_ms", "itl_p99_ms"}
    assert res["ttft_ms"]["p99"] >= res["ttft_ms"]["p50"] > 0
    assert cli.main(["simulate", str(log), *SIM, "--replicas", "1", "--window", "all"]) == 0
    text = capsys.readouterr().out
    assert "TTFT" in text and "replica 0" in text and "SLO" in text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--replicas", "0"], "--replicas"),
        (["--replicas", "2", "--router", "random"], "--router"),
        (["--replicas", "2", "--rate-scale", "0"], "--rate-scale"),
        (["--replicas", "2", "--rate-scale", "nan"], "--rate-scale"),
        (["--replicas", "2", "--rate-scale", "-3"], "--rate-scale"),
        (["--replicas", "2", "--window", "20000:30000"], "no arrivals"),
        (["--replicas", "2", "--window", "later"], "--window"),
    ],
)
def test_cli_simulate_bad_input(tmp_path, capsys, extra, message):
    log = tmp_path / "requests.parquet"
    write_log(log, window_arrivals())
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["simulate", str(log), *SIM, *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.fixture(scope="module")
def llama70b_cost():
    from pipeline import catalog
    from pipeline.sim import cost

    gpus = catalog.load_gpus()
    s = cost.for_deployment(catalog.load_model("Llama-3.1-70B"), gpus["H100-SXM"], "fp8", "fp8", 4)
    assert not isinstance(s, str)
    return s
