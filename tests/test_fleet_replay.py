"""The chosen fleet replayed on the busiest window (issue 14, method.md 7b fleet replay; pipeline.fleet_replay)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import fleet_replay, params, traffic
from pipeline.errors import InputError
from pipeline.layout import Layout
from pipeline.sim import engine
from pipeline.sim.cost import Coefficients
from pipeline.sim.engine import EngineConfig, Trace
from pipeline.sim.trace import busiest_hour
from tests.conftest import ROOT, toy_step_cost

FROZEN = ROOT / "tests" / "data" / "metrics"
SLO = {"ttft_p99_ms": 2000.0, "itl_p99_ms": 50.0}


def _poisson(rate: float, n: int, seed: int, inp: int = 1, out: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1.0 / rate, n))
    return Trace(arr - arr[0], np.full(n, inp, np.int64), np.full(n, out, np.int64))


def _mixed(n: int = 3000, rate: float = 6.0, seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1.0 / rate, n))
    return Trace(arr - arr[0], rng.integers(50, 3000, n).astype(np.int64), rng.integers(1, 400, n).astype(np.int64))


# --- the simulator pieces: N = 1 and a closed form ----------------------------------------------------------------


def test_one_replica_is_the_single_engine_simulation():
    cost = toy_step_cost(0.004, 2e-6)
    cfg = EngineConfig(max_num_seqs=64, max_num_batched_tokens=2048, kv_blocks=20_000, enable_prefix_caching=False)
    trace = _mixed()
    single = engine.simulate_open(cost, cfg, trace)
    for router in ("round-robin", "least-outstanding", "prefix-affinity"):
        fleet = fleet_replay.replay_once(cost, cfg, trace, 1, router, 1.0, 0.0)
        np.testing.assert_array_equal(fleet.ttft_s, single.ttft_s)
        np.testing.assert_array_equal(fleet.e2e_s, single.e2e_s)
        np.testing.assert_array_equal(fleet.itl_gaps_s, single.itl_gaps_s)
        assert fleet_replay.figures(fleet, SLO) == fleet_replay.figures(single, SLO)
    # the overhead h lands on every TTFT, exactly
    shifted = fleet_replay.replay_once(cost, cfg, trace, 1, "least-outstanding", 1.0, 0.03)
    np.testing.assert_allclose(shifted.ttft_s - single.ttft_s, 0.03, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_constant_service_poisson_arrivals_match_pollaczek_khinchine(rho):
    """M/D/1: one replica running one sequence at a time (max_num_seqs 1), every request one iteration of
    S = 0.1 s (1 input token, 1 output token: t = b0 + 1e-9 s x 1 token). Pollaczek-Khinchine for deterministic
    service: mean wait Wq = rho x S / (2 (1 - rho)); rho 0.3 -> 21.43 ms, 0.6 -> 75.0 ms. TTFT = wait + S.
    Tolerance 4% on the mean wait over 200,000 requests (the sample mean's standard error is ~1%)."""
    s = 0.1 + 1e-9
    cost = toy_step_cost(0.1, 1e-9)
    cfg = EngineConfig(max_num_seqs=1, max_num_batched_tokens=16, kv_blocks=1000, enable_prefix_caching=False)
    trace = _poisson(rho / s, 200_000, seed=7)
    res = fleet_replay.replay_once(cost, cfg, trace, 1, "least-outstanding", 1.0, 0.0)
    wait = res.ttft_s - s
    assert wait.min() >= -1e-9  # nobody is served faster than S
    pk = rho * s / (2 * (1 - rho))
    assert abs(wait.mean() - pk) <= 0.04 * pk, (wait.mean(), pk)
    # P(no wait) = 1 - rho for M/D/1 (arrivals that find the server idle)
    assert abs(np.mean(wait < 1e-9) - (1 - rho)) <= 0.01


# --- the search for the smallest N ---------------------------------------------------------------------------------


@pytest.mark.parametrize("formula, need", [(6, 2), (6, 6), (6, 1), (3, 7), (1, 1), (2, 15), (2, 18)])
def test_min_replicas_finds_the_threshold_from_either_side(formula, need):
    calls: list[int] = []

    def meets(n: int) -> bool:
        calls.append(n)
        return n >= need

    best, tried = fleet_replay.min_replicas(meets, formula)
    assert best == need
    assert len(calls) == len(set(calls)) == len(tried)  # each N replayed once
    assert len(calls) <= 2 * math.ceil(math.log2(max(formula, need) + 1)) + 2


def test_min_replicas_stops_at_the_cap_and_says_none():
    best, tried = fleet_replay.min_replicas(lambda n: False, 5)
    assert best is None and max(tried) == fleet_replay.search_cap(5) == 21  # max(4 x 5, 5 + 16)
    assert fleet_replay.search_cap(100) == 400 and fleet_replay.search_cap(200) == fleet_replay.SEARCH_LIMIT == 512
    with pytest.raises(InputError, match="expected an integer >= 1"):
        fleet_replay.min_replicas(lambda n: True, 0)


def _tier(trace: Trace, formula: int, scale: float, name: str = "all") -> fleet_replay.TierInput:
    cfg = EngineConfig(max_num_seqs=32, max_num_batched_tokens=2048, kv_blocks=20_000, enable_prefix_caching=False)
    return fleet_replay.TierInput(
        tier=name, cost=toy_step_cost(0.004, 2e-6), cfg=cfg, trace=trace, formula_replicas=formula, rate_scale=scale,
        overhead_s=0.0, basis="calibrated", coefficients_source="test", deployment="toy", kv_source="test",
        window={"kind": "all", "requests": len(trace)},
    )  # fmt: skip


def test_slo_is_monotone_in_n_and_min_n_in_the_rate():
    trace = _mixed(4000, rate=100.0)
    slo = {"ttft_p99_ms": 1000.0, "itl_p99_ms": 10.0}
    met = [
        fleet_replay.figures(fleet_replay.replay_once(t.cost, t.cfg, t.trace, n, "least-outstanding", 1.0, 0.0), slo)[
            "met"
        ]
        for t in [_tier(trace, 1, 1.0)]
        for n in range(1, 9)
    ]
    assert met == sorted(met) and not met[0] and met[-1]  # fails with few replicas, then passes for good
    mins = []
    for scale in (0.5, 1.0, 2.0, 4.0):
        r, _ = fleet_replay.replay_tier(_tier(trace, 4, scale), "least-outstanding", slo)
        mins.append(r["min_replicas_meeting_slo"])
        assert r["passes"] == (r["min_replicas_meeting_slo"] <= 4)
        assert r["saves_instances"] == (4 - r["min_replicas_meeting_slo"] if r["passes"] else 0)
    assert mins == sorted(mins) and mins[0] < mins[-1], mins


# --- the fleet document ---------------------------------------------------------------------------------------------


def test_unknown_router_is_one_line_listing_the_valid_ones():
    with pytest.raises(InputError) as exc:
        fleet_replay.replay_fleet([_tier(_mixed(50), 1, 1.0)], "random", SLO, {})
    msg = str(exc.value)
    assert "\n" not in msg and "'random'" in msg
    assert all(r in msg for r in ("round-robin", "least-outstanding", "prefix-affinity"))
    with pytest.raises(params.ParamsError, match=r"fleet.router = 'random'; allowed values: round-robin"):
        params.validate_section("fleet", {"router": "random"})
    assert params.validate_section("fleet", None)["router"] == "least-outstanding"
    assert params.validate_section("fleet", None)["replay_window"] == "busiest-hour"
    for bad in ("7200:3600", "hour", "1:x", 5):
        with pytest.raises(params.ParamsError, match=r"fleet\.replay_window"):
            params.validate_section("fleet", {"replay_window": bad})


def test_a_tier_without_requests_is_listed_and_the_rest_replayed():
    empty = Trace(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    busy = _tier(_mixed(800), 3, 1.2, "large")
    rep = fleet_replay.replay_fleet([busy, _tier(empty, 2, 1.2, "small")], "round-robin", SLO, {"kind": "all"})
    small, large = rep["per_tier"]["small"], rep["per_tier"]["large"]
    assert small["passes"] is None and small["ttft_p99_ms"] is None and "no request" in small["note"]
    assert large["passes"] is not None and rep["passes"] == large["passes"]
    assert rep["formula_replicas"] == rep["replicas"] == 5
    # the fleet's figures are the large tier's alone
    assert rep["ttft_p99_ms"] == large["ttft_p99_ms"] and rep["itl_p99_ms"] == large["itl_p99_ms"]
    assert rep["min_replicas_meeting_slo"] == large["min_replicas_meeting_slo"] + 2  # the empty tier keeps its N
    with pytest.raises(InputError, match="no tier has a request"):
        fleet_replay.replay_fleet([_tier(empty, 2, 1.2)], "round-robin", SLO, {})
    assert any("Tier small:" in line for line in fleet_replay.describe(rep))


def test_merged_figures_are_over_every_request_of_every_tier():
    a, b = _tier(_mixed(600, seed=3), 2, 1.0, "a"), _tier(_mixed(900, rate=9.0, seed=4), 2, 1.0, "b")
    rep = fleet_replay.replay_fleet([a, b], "least-outstanding", SLO, {})
    ra = fleet_replay.replay_once(a.cost, a.cfg, a.trace, 2, "least-outstanding", 1.0, 0.0)
    rb = fleet_replay.replay_once(b.cost, b.cfg, b.trace, 2, "least-outstanding", 1.0, 0.0)
    ttft = np.concatenate([ra.ttft_s, rb.ttft_s])
    gaps = np.concatenate([ra.itl_gaps_s, rb.itl_gaps_s])
    tpot = np.concatenate([ra.itl_mean_s, rb.itl_mean_s])
    tpot = tpot[np.isfinite(tpot)]  # one output token: no ITL
    assert rep["as_logged"]["ttft_p99_ms"] == round(float(np.percentile(ttft, 99)) * 1e3, 6)
    # ITL p99 is over requests' mean ITL (TPOT), as the curves judge it (was: over every gap, issue 14 round 5);
    # the p99 over every gap is kept beside it, not judged
    assert rep["as_logged"]["itl_p99_ms"] == round(float(np.percentile(tpot, 99)) * 1e3, 6)
    assert rep["as_logged"]["itl_gap_p99_ms"] == round(float(np.percentile(gaps, 99)) * 1e3, 6)


# --- ITL: one definition, the curves' ----------------------------------------------------------------------------


def test_itl_p99_is_over_each_requests_mean_itl_not_every_gap():
    """A long prompt stalls one running decode: request A (1 in, 100 out) decodes alone at t = 4 ms + 20 us x 1
    token = 4.02 ms a step; B (8000 in, 2 out) arrives at 0.1 s and is prefilled in 2047-token chunks beside A's
    decode token (budget 2048): three steps of 4 + 0.02 x 2048 = 44.96 ms and one of 4 + 0.02 x 1860 = 41.2 ms;
    B's second token rides with A (4.04 ms). By hand: A's 99 gaps sum to 3 x 44.96 + 41.2 + 4.04 + 94 x 4.02 =
    558.0 ms, a mean ITL of 5.6364 ms; B's one gap 4.04 ms. Per-request ITL p99 (numpy linear) = 4.04 + 0.99 x
    (5.6364 - 4.04) = 5.6204 ms: within a 10 ms SLO. Over every gap (100: four stalls) the p99 is 44.96 ms, which
    the curves never judge (their ITL p99 is over requests' TPOT): the old replay failed this fleet on it."""
    cost = toy_step_cost(0.004, 2e-5)
    cfg = EngineConfig(max_num_seqs=8, max_num_batched_tokens=2048, kv_blocks=100_000, enable_prefix_caching=False)
    trace = Trace(np.array([0.0, 0.1]), np.array([1, 8000], np.int64), np.array([100, 2], np.int64))
    res = fleet_replay.replay_once(cost, cfg, trace, 1, "round-robin", 1.0, 0.0)
    f = fleet_replay.figures(res, {"ttft_p99_ms": 2000.0, "itl_p99_ms": 10.0})
    assert f["itl_p99_ms"] == pytest.approx(4.04 + 0.99 * (558.0 / 99 - 4.04), abs=1e-6)
    assert f["itl_gap_p99_ms"] == pytest.approx(44.96, abs=1e-6)
    assert f["met"] is True and f["slo_attainment"] == 1.0
    assert (
        "TPOT" in fleet_replay.DEFINITIONS["itl_p99_ms"] and "not judged" in fleet_replay.DEFINITIONS["itl_gap_p99_ms"]
    )


# --- the capacity correction: like for like with the measured point -------------------------------------------------


def _md1_point(usable_rps: float, overhead_s: float = 0.0, c_max: float = 1.0) -> fleet_replay.MeasuredPoint:
    """One replica running one sequence at a time, every request (1 in, 1 out) one step of S = 0.1 s (+1e-9):
    closed loop at concurrency 1, the model serves 1 / S = 10 req/s."""
    cfg = EngineConfig(max_num_seqs=1, max_num_batched_tokens=16, kv_blocks=1000, enable_prefix_caching=False)
    return fleet_replay.MeasuredPoint(
        deployment="toy", curve="toy sweep", usable_rps=usable_rps, c_max=c_max, input_tokens=1, output_tokens=1,
        cost=toy_step_cost(0.1, 1e-9), cfg=cfg, overhead_s=overhead_s, coefficients="toy", same_deployment=True,
    )  # fmt: skip


def test_a_model_twice_too_fast_at_its_measured_point_replays_with_half_the_capacity():
    """The sweep measured 5 req/s where the model gives 1 / S = 10 (closed loop, concurrency 1 = C_max): the
    correction doubles every step (s = 10 / 5 = 2), re-simulated at the sweep's point it gives 5 req/s. Replayed
    open loop at Poisson 3 req/s, the corrected replica is M/D/1 with service 2S = 0.2 s, rho = 0.6:
    Pollaczek-Khinchine Wq = 0.6 x 0.2 / (2 x 0.4) = 150 ms (the raw model: rho 0.3, 21.4 ms)."""
    p = _md1_point(5.0)
    cc = fleet_replay.capacity_correction(p)
    assert cc["applied"] is True and cc["step_time_scale"] == 2.0 and cc["capacity_factor"] == 0.5
    assert cc["model_rps_at_measured_c_max"] == pytest.approx(10.0, rel=1e-7)
    assert cc["reproduced_usable_rps"] == pytest.approx(5.0, rel=1e-6)
    assert "too fast there by 2.00x" in cc["note"] and "log's own request lengths" in cc["note"]
    scaled = fleet_replay.scaled_cost(p.cost, cc["step_time_scale"])
    assert float(scaled.step_s(7.0, 0.0, 0.0, 0.0, 0.0, 1.0)) == pytest.approx(2 * (0.1 + 7e-9), rel=1e-12)
    s2 = 2 * (0.1 + 1e-9)
    trace = _poisson(3.0, 200_000, seed=11)
    res = fleet_replay.replay_once(scaled, p.cfg, trace, 1, "least-outstanding", 1.0, 0.0)
    wait = res.ttft_s - s2
    rho = 3.0 * s2
    pk = rho * s2 / (2 * (1 - rho))
    assert abs(pk - 0.150) < 1e-6 and abs(wait.mean() - pk) <= 0.04 * pk, (wait.mean(), pk)
    raw = fleet_replay.replay_once(p.cost, p.cfg, trace, 1, "least-outstanding", 1.0, 0.0)
    assert (raw.ttft_s - 0.1).mean() < 0.03  # uncorrected: ~21 ms, seven times less


def test_the_correction_accounts_for_the_request_overhead():
    """With h = 50 ms outside the engine, the closed loop at concurrency 1 serves 1 / (S x s + h): the measured
    4 req/s gives s = (1 / 4 - 0.05) / 0.1 = 2.0 by hand (the model's own: 1 / 0.15 = 6.667 req/s)."""
    cc = fleet_replay.capacity_correction(_md1_point(4.0, overhead_s=0.05))
    assert cc["step_time_scale"] == pytest.approx(2.0, abs=1e-5)
    assert cc["model_rps_at_measured_c_max"] == pytest.approx(1 / 0.15, rel=1e-6)
    assert cc["reproduced_usable_rps"] == pytest.approx(4.0, rel=1e-5)
    # a measured point no step-time scale can reach (more than h alone allows: 1 / h = 20 req/s) is not corrected
    bad = fleet_replay.capacity_correction(_md1_point(25.0, overhead_s=0.05))
    assert bad["applied"] is False and bad["step_time_scale"] == 1.0 and "not corrected" in bad["note"]


def test_the_closed_loop_protocol_is_the_curve_stages():
    from pipeline import engine_curves

    assert (fleet_replay.CLOSED_MIN_REQUESTS, fleet_replay.CLOSED_REQUESTS_PER_SLOT, fleet_replay.CLOSED_MAX_REQUESTS) == (
        engine_curves.MIN_REQUESTS, engine_curves.REQUESTS_PER_SLOT, engine_curves.MAX_REQUESTS,
    )  # fmt: skip


def test_describe_states_the_correction_in_plain_words():
    t = _tier(_mixed(300), 2, 1.0)
    cc = fleet_replay.capacity_correction(_md1_point(5.0))
    r, _ = fleet_replay.replay_tier(fleet_replay.TierInput(**{**t.__dict__, "correction": cc}), "round-robin", SLO)
    assert r["capacity_correction"] == cc
    text = " ".join(fleet_replay.describe({"per_tier": {"all": r}}))
    assert "corrected to the benchmark" in text and "takes 2.000x the model's time" in text
    assert "capacity x 0.500" in text


def test_coefficients_come_from_calibration_json_without_refitting():
    cal = {
        "deployments": [
            {"key": "k70", "model": "M", "gpu": "H100-SXM", "tp": 4, "pp": 1, "weight_dtype": "fp8", "kv_dtype": "fp8",
             "basis": "calibrated", "request_overhead_s": 0.02,
             "coefficients": {"fixed_s": 1e-5, "flops": 2.0, "weight_bytes": 1.5, "kv_bytes": 1.25, "seqs": 0.0,
                              "allreduce": 0.5}},
        ],
        "pooled": {"coefficients": {"fixed_s": 0.0, "flops": 2.0, "weight_bytes": 1.2, "kv_bytes": 1.1, "seqs": 0.0,
                                    "allreduce": 1.0}, "request_overhead_s": 0.01, "gpu_arch_scale": {"ada": 0.8}},
    }  # fmt: skip
    c, h, key = fleet_replay.resolve_coefficients(cal, "M", "H100-SXM", "hopper", 4, 1, "fp8", "fp8")
    assert (c.b, c.basis, h, key) == ((1e-5, 2.0, 1.5, 1.25, 0.0, 0.5), "calibrated", 0.02, "k70")
    c, h, key = fleet_replay.resolve_coefficients(cal, "M", "H100-SXM", "hopper", 8, 1, "fp8", "fp8")  # other TP
    assert (c.b, c.basis, h, key) == ((0.0, 2.0, 1.2, 1.1, 0.0, 1.0), "transferred", 0.01, None)
    c, _, _ = fleet_replay.resolve_coefficients(cal, "M", "L40S", "ada", 1, 1, "fp8", "fp8")
    # x 0.8 the pooled b, then the physical bounds (b1, b2, b3 >= 1): 1.6, max(0.96, 1) = 1, max(0.88, 1) = 1, 0.8
    assert c.b == pytest.approx((0.0, 1.6, 1.0, 1.0, 0.0, 0.8)) and c.basis == "transferred"
    c, h, key = fleet_replay.resolve_coefficients(None, "M", "L40S", "ada", 1, 1, "fp8", "fp8")
    assert (c.basis, h, key, c.b) == ("roofline", 0.0, None, Coefficients.prior().b)


# --- the fleet stage on the shipped sample -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder: the frozen metrics (no calibration.json: roofline), params.yaml, the catalog and the
    ingested sample log."""
    root = tmp_path_factory.mktemp("fleet") / "proj"
    shutil.copytree(FROZEN, root / "metrics")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(ROOT / "data" / "catalog", root / "data" / "catalog")
    (root / "data" / "interim").mkdir(parents=True)
    src = traffic.open_source(str(ROOT / "data" / "raw" / "traffic" / "sample_traffic.parquet"), None, ROOT)
    traffic.ingest(src, root / "data" / "interim" / "requests.parquet", progress=None)
    return root


def _sections(root: Path, **fleet: str) -> dict:
    from pipeline.stages import fleet as fleet_stage

    data = params.load(root / "params.yaml")
    sec = {n: params.section(n, data) for n in ("fleet", "routing", "slo", "engine", "workload")}
    sec["fleet"] = {**sec["fleet"], **fleet}
    return fleet_stage.validated(sec)


def test_stage_replays_the_busiest_hour_of_the_sample(project):
    from pipeline.stages import fleet as fleet_stage

    sec = _sections(project)
    res = fleet_stage.run(sec, Layout(project))
    rep = res["replay"]
    assert res["replay_note"] is None and rep is not None
    # the window: each tier's fleet on its own busiest hour, the hour holding the tier's per-minute p99 peak
    # (sim.trace.busiest_hour over the tier's rows), seconds from the log's first arrival
    table = fleet_stage.tier_table(Layout(project), sec["workload"], sec["slo"])
    arr = table.column("arrival_s").to_numpy()
    tiers = np.asarray(table.column("tier").to_pylist())
    for name, r in rep["per_tier"].items():
        mine = arr[tiers == name]
        lo, hi = busiest_hour(mine)
        assert r["window"]["kind"] == "busiest-hour"
        assert r["window"]["start_s"] == round(lo - arr[0], 6) and r["window"]["end_s"] == round(hi - arr[0], 6)
        assert r["window"]["requests"] == int(np.count_nonzero((mine >= lo) & (mine < hi)))
        assert r["window"]["first_arrival"].endswith("Z")
    assert rep["window"]["per_tier"] is True
    assert rep["window"]["requests"] == sum(r["window"]["requests"] for r in rep["per_tier"].values())
    # every interface key, and the tiers of the adopted plan with the formula's serving N
    keys = {"window", "router", "rate_scale", "replicas", "ttft_p99_ms", "itl_p99_ms", "slo_attainment",
            "min_replicas_meeting_slo", "formula_replicas", "saves_instances", "passes", "as_logged", "scaled",
            "basis", "per_tier"}  # fmt: skip
    assert keys <= set(rep)
    assert set(rep["per_tier"]) == set(res["per_tier"])
    for name, r in rep["per_tier"].items():
        t = res["per_tier"][name]
        assert keys - {"per_tier"} <= set(r)
        assert r["formula_replicas"] == t["instances_with_headroom"]
        assert r["rate_scale"] == round(1 + t["headroom"], 6)
        assert r["basis"] == "roofline"  # the frozen metrics have no calibration.json
        # nor candidate curves with an anchor: nothing measured to correct the replay to, said so
        assert r["capacity_correction"]["applied"] is False and r["capacity_correction"]["step_time_scale"] == 1.0
        assert "no measured curve to correct the replay against" in r["capacity_correction"]["note"]
        assert r["passes"] == (
            r["min_replicas_meeting_slo"] is not None and r["min_replicas_meeting_slo"] <= r["formula_replicas"]
        )
    assert rep["router"] == "least-outstanding"
    # the benchmark plan samples the same hour for the chosen deployment of each tier
    from pipeline import bench_plan

    for name, r in rep["per_tier"].items():
        mine = {c: table.column(c).to_numpy(zero_copy_only=False)[tiers == name] for c in
                ("arrival_s", "input_tokens", "output_tokens")}  # fmt: skip
        tr = bench_plan.build_trace(mine, min_requests=1)
        assert tr.window_requests == r["window"]["requests"], name


def test_stage_reruns_byte_identical_and_an_empty_explicit_window_writes_nothing(project):
    from pipeline.stages import fleet as fleet_stage

    out = project / "metrics" / "fleet.json"
    fleet_stage.run(_sections(project, router="round-robin", replay_window="3600:5400"), Layout(project))
    first = out.read_bytes()
    fleet_stage.run(_sections(project, router="round-robin", replay_window="3600:5400"), Layout(project))
    assert out.read_bytes() == first
    rep = json.loads(first)["replay"]
    assert rep["window"]["kind"] == "range" and rep["window"]["start_s"] == 3600 and rep["router"] == "round-robin"
    with pytest.raises(InputError) as exc:
        fleet_stage.run(_sections(project, replay_window="900000:900060"), Layout(project))
    assert "\n" not in str(exc.value) and "fleet.replay_window = '900000:900060': no arrivals" in str(exc.value)
    assert out.read_bytes() == first  # nothing written


def test_stage_without_a_request_table_says_why(project, tmp_path):
    from pipeline.stages import fleet as fleet_stage

    root = tmp_path / "p"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("requests.parquet"))
    res = fleet_stage.run(_sections(root), Layout(root))
    assert res["replay"] is None and "requests.parquet not found" in res["replay_note"]
    assert any(w.startswith("replay_skipped:") for w in res["warnings"])


def test_kv_capacity_is_the_memory_stages_engine_profile():
    from pipeline import catalog
    from pipeline.stages import fleet as fleet_stage

    mem = json.loads((FROZEN / "memory.json").read_text())
    t = json.loads((FROZEN / "fleet.json").read_text())["per_tier"]["large"]  # H100-SXM TP4 fp8/fp8
    model, gpu = catalog.load_model(t["model"], ROOT), catalog.find_gpu(t["gpu"], catalog.load_gpus(ROOT))
    engine_p = params.validate_section("engine", None)
    cid = "large/H100-SXM/w-fp8/kv-fp8"
    cfg, src = fleet_stage._engine_config(t, model, gpu, mem, engine_p, 1.0)
    assert cfg.kv_blocks == mem["candidates"][cid]["engine"]["kv_cache_tokens"] // 16 and "metrics/memory.json" in src
    # the memory stage did not profile this TP: the same engine profile, computed at the deployment's TP
    other = {"candidates": {cid: {**mem["candidates"][cid], "tp": 8}}}
    cfg2, src2 = fleet_stage._engine_config(t, model, gpu, other, engine_p, 1.0)
    from pipeline import memory

    ctx = mem["candidates"][cid]["context_tokens_p95"]
    settings = memory.EngineSettings.from_params(engine_p)
    prof = memory.engine_profile(model, gpu, "fp8", "fp8", 4, 1, 1, ctx, settings)
    assert "memory.engine_profile at TP4" in src2 and cfg2.kv_blocks == prof.kv_cache_tokens // 16
    assert (cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.block_size) == (256, 8192, 16)


def test_a_request_longer_than_the_kv_cache_fails_whatever_n():
    trace = Trace(np.array([0.0, 1.0, 2.0]), np.array([100, 5000, 100], np.int64), np.array([5, 5, 5], np.int64))
    cfg = EngineConfig(max_num_seqs=8, max_num_batched_tokens=8192, kv_blocks=100, enable_prefix_caching=False)
    t = fleet_replay.TierInput(
        tier="all", cost=toy_step_cost(0.004, 2e-6), cfg=cfg, trace=trace, formula_replicas=1, rate_scale=1.0,
        overhead_s=0.0, basis="roofline", coefficients_source="test", deployment="toy", kv_source="test",
        window={"kind": "all", "requests": 3},
    )  # fmt: skip
    r, _ = fleet_replay.replay_tier(t, "round-robin", SLO)
    # 5000 + 5 - 1 tokens need 313 blocks of 16 > 100: rejected by every replica, a miss in the attainment
    assert r["passes"] is False and r["min_replicas_meeting_slo"] is None and r["rejected"]["scaled"] == 1
    assert r["slo_attainment"] == round(2 / 3, 6)
    assert "rejected whatever N" in r["search"]["how"] and max(int(n) for n in r["search"]["tried"]) == 17
    assert any("FORMULA'S N FAILS" in line for line in fleet_replay.describe({"per_tier": {"all": r}}))


def test_the_slow_end_is_the_larger_of_the_correction_and_the_residual_band():
    """stages/fleet.slow_end: every step x max(correction, 1 + p90 of the throughput residuals): a calibrated fit
    takes the larger p90 of its leave-one-level-out (0.10) and in-sample (0.30) residuals: max(1.2, 1.3) = 1.3;
    a correction of 1.5 already beyond the band stays 1.5; a transferred one the pooled LODO p90 (0.25)."""
    from pipeline.stages import fleet as fleet_stage

    cal = {
        "deployments": [{"key": "k", "residuals": {"leave_one_level_out": {"throughput": {"p90_rel": 0.10}},
                                                   "in_sample": {"throughput": {"p90_rel": 0.30}}}}],
        "pooled": {"residuals": {"leave_one_deployment_out": {"throughput": {"p90_rel": 0.25}}}},
    }  # fmt: skip
    assert fleet_stage.slow_end(cal, "k", "calibrated", 1.2)["slow_end_step_time_scale"] == 1.3
    assert fleet_stage.slow_end(cal, "k", "calibrated", 1.5)["slow_end_step_time_scale"] == 1.5
    assert fleet_stage.slow_end(cal, None, "transferred", 1.1)["slow_end_step_time_scale"] == 1.25
    none = fleet_stage.slow_end(None, None, "roofline", 1.1)
    assert none["slow_end_step_time_scale"] is None and none["slow_end_source"].startswith("none")
    # the slow-end replay at the correction itself is the corrected replay; slower steps never help
    t = _tier(_mixed(600, rate=40.0), 2, 1.0)
    cc = {"applied": True, "step_time_scale": 1.0, "slow_end_step_time_scale": 1.0}
    same = fleet_replay.slow_end_replay(fleet_replay.TierInput(**{**t.__dict__, "correction": cc}), "round-robin", SLO)
    r, _ = fleet_replay.replay_tier(t, "round-robin", SLO)
    assert (same["ttft_p99_ms"], same["itl_p99_ms"]) == (r["ttft_p99_ms"], r["itl_p99_ms"])
    cc2 = {**cc, "slow_end_step_time_scale": 2.0}
    slow = fleet_replay.slow_end_replay(fleet_replay.TierInput(**{**t.__dict__, "correction": cc2}), "round-robin", SLO)
    assert slow["ttft_p99_ms"] > same["ttft_p99_ms"] and slow["step_time_scale"] == 2.0


def test_the_measured_point_is_the_anchors_deployment_measured_or_carried():
    """stages/fleet.measured_point reads the fleet's anchor deployment in op.candidates: a measured entry's own
    usable RPS and C_max, a carried one's measured figures (never the carried ones: the correction is at the
    sweep's own lengths); a broken entry is one line; no anchor, no correction and why."""
    from pipeline import catalog
    from pipeline.stages import fleet as fleet_stage

    t = {"tier": "large", "model": "Llama-3.1-70B", "gpu": "H100-SXM", "tp": 4, "pp": 1, "weight_dtype": "fp8",
         "kv_dtype": "fp8"}  # fmt: skip
    cid = "large/H100-SXM/w-fp8/kv-fp8"
    entry = {"tier": "large", "model": "Llama-3.1-70B", "gpu": "H100-SXM", "tp": 4, "pp": 1, "weights": "fp8",
             "kv": "fp8", "basis": "calibrated", "usable_rps": 9.9, "c_max": 99.0,
             "length_match": {"curve_input_tokens": 3000.0, "curve_output_tokens": 300.0},
             "carried": {"curve": "c", "measured_usable_rps": 1.25, "measured_c_max": 40.0, "usable_rps": 2.0}}  # fmt: skip
    op = {"per_tier": {"large": {"curve": "c", "anchor": {"deployment": cid}}}, "candidates": {cid: entry}}
    engine_p = params.validate_section("engine", None)
    gpus = catalog.load_gpus(ROOT)
    p, why = fleet_stage.measured_point(op, "large", t, "roofline", None, None, engine_p, gpus, None, ROOT)
    assert why is None and (p.usable_rps, p.c_max, p.input_tokens, p.output_tokens) == (1.25, 40.0, 3000, 300)
    assert p.same_deployment and p.curve == "c" and p.cfg.enable_prefix_caching is False
    measured = {**entry, "basis": "measured", "carried": None, "usable_rps": 1.5, "c_max": 30.0}
    p, _ = fleet_stage.measured_point({**op, "candidates": {cid: measured}}, "large", t, "roofline", None, None,
                                      engine_p, gpus, None, ROOT)  # fmt: skip
    assert (p.usable_rps, p.c_max) == (1.5, 30.0)
    with pytest.raises(InputError) as exc:
        fleet_stage.measured_point({**op, "candidates": {cid: {**entry, "model": None}}}, "large", t, "roofline",
                                   None, None, engine_p, gpus, None, ROOT)  # fmt: skip
    assert "\n" not in str(exc.value) and f"candidates.{cid}.model: missing" in str(exc.value)
    p, why = fleet_stage.measured_point({}, "large", t, "roofline", None, None, engine_p, gpus, None, ROOT)
    assert p is None and "no measured curve to correct the replay against for tier large" in why


def test_the_benchmarked_deployment_keeps_its_servers_limits_and_the_replays_kind_of_coefficients():
    """A transferred replay of another deployment (H200 here) measures its correction on the benchmarked H100
    deployment with the pooled fit, but that sweep's own server limits (max_num_seqs 77, as its calibration entry
    records); a roofline replay measures it with the roofline prior, not the benchmarked deployment's own fit."""
    from pipeline import catalog
    from pipeline.sim.cost import TERMS
    from pipeline.stages import fleet as fleet_stage

    cid = "large/H100-SXM/w-fp8/kv-fp8"
    entry = {"tier": "large", "model": "Llama-3.1-70B", "gpu": "H100-SXM", "tp": 4, "pp": 1, "weights": "fp8",
             "kv": "fp8", "basis": "measured", "usable_rps": 1.5, "c_max": 30.0,
             "length_match": {"curve_input_tokens": 3000.0, "curve_output_tokens": 300.0}}  # fmt: skip
    op = {"per_tier": {"large": {"curve": "c", "anchor": {"deployment": cid}}}, "candidates": {cid: entry}}
    own = dict(zip(TERMS, (0.01, 1.5, 1.2, 1.1, 0.0, 0.0), strict=True))
    pooled = dict(zip(TERMS, (0.02, 2.0, 1.4, 1.3, 0.0, 0.0), strict=True))
    cal = {
        "settings": {},
        "deployments": [{"key": "h100-own", "model": "Llama-3.1-70B", "gpu": "H100-SXM", "tp": 4, "pp": 1,
                         "weight_dtype": "fp8", "kv_dtype": "fp8", "basis": "calibrated", "coefficients": own,
                         "engine_limits": {"max_num_seqs": 77, "max_num_batched_tokens": 4096}}],
        "pooled": {"coefficients": pooled, "gpu_arch_scale": {}},
    }  # fmt: skip
    other = {"tier": "large", "model": "Llama-3.1-70B", "gpu": "H200", "tp": 4, "pp": 1, "weight_dtype": "fp8",
             "kv_dtype": "fp8"}  # fmt: skip
    engine_p = params.validate_section("engine", None)
    assert engine_p["max_num_seqs"] != 77
    gpus = catalog.load_gpus(ROOT)
    p, why = fleet_stage.measured_point(op, "large", other, "transferred", cal, None, engine_p, gpus, None, ROOT)
    assert why is None and not p.same_deployment
    assert "pooled coefficients" in p.coefficients and p.cost.coeffs.b[1] == 2.0  # the pooled fit, not its own 1.5
    assert (p.cfg.max_num_seqs, p.cfg.max_num_batched_tokens) == (77, 4096)  # the benchmark server's, not params'
    p, _ = fleet_stage.measured_point(op, "large", other, "roofline", cal, None, engine_p, gpus, None, ROOT)
    assert "calibrated" not in p.coefficients and p.cost.coeffs.b[1] not in (1.5, 2.0)  # the prior
    assert p.cfg.max_num_seqs == 77
