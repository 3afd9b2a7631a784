"""Steps 7-10: the operating point on small hand-computed sweeps, with every edge case the issue names."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline import curve as cv
from pipeline import recommend
from pipeline.benchmarks.common import COLUMNS
from pipeline.errors import InputError


def sweep(
    loads, ttft_p99, ttft_p50=None, itl_p99=None, rps=None, e2e=None, kind="concurrency", **extra
) -> pd.DataFrame:
    """A normalized curve table built by hand (the reader's output shape)."""
    n = len(loads)
    rows = []
    for i in range(n):
        row = dict.fromkeys(COLUMNS)
        row.update(
            curve="hand",
            tool="hand",
            file=f"level{i}.json",
            load_kind=kind,
            load=float(loads[i]),
            saturation=False,
            ttft_p99_ms=None if ttft_p99 is None else ttft_p99[i],
            ttft_p50_ms=None if ttft_p50 is None else ttft_p50[i],
            itl_p99_ms=None if itl_p99 is None else itl_p99[i],
            itl_p50_ms=None if itl_p99 is None else itl_p99[i] / 1.2,
            rps=None if rps is None else rps[i],
            e2e_mean_ms=None if e2e is None else e2e[i],
            completed=100.0,
            failed=0.0,
            output_tokens_mean=100.0,
            input_tokens_mean=500.0,
        )
        for k, v in extra.items():
            row[k] = v[i]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


S = cv.Settings(ttft_p99_ms=1000.0, itl_p99_ms=50.0)
BASE = dict(
    loads=[1, 2, 4, 8],
    ttft_p99=[100.0, 200.0, 900.0, 3000.0],
    ttft_p50=[80.0, 100.0, 300.0, 800.0],
    itl_p99=[10.0, 20.0, 30.0, 60.0],
    rps=[1.0, 2.0, 3.5, 4.0],
    e2e=[1000.0, 1000.0, 1000.0, 1000.0],
)


def test_c_max_interpolates_between_last_pass_and_first_fail_and_the_lower_slo_binds():
    op = cv.operating_point(sweep(**BASE), S)
    # TTFT: 4 + (1000 - 900) / (3000 - 900) x (8 - 4) = 4.190476...; ITL: 4 + (50 - 30) / (60 - 30) x 4 = 6.6667
    assert op.c_max == pytest.approx(4 + 100 / 2100 * 4)
    assert op.binding == "ttft"
    itl = next(c for c in op.crossings if c.metric == "itl")
    assert itl.c_max == pytest.approx(4 + 20 / 30 * 4)
    assert (itl.pass_load, itl.fail_load) == (4.0, 8.0)
    # usable RPS: 3.5 + (0.190476 / 4) x (4.0 - 3.5) = 3.5238
    assert op.usable_rps == pytest.approx(3.5 + (100 / 2100) * 0.5)
    assert op.percentile_used == {"ttft": "p99", "itl": "p99"}


def test_knee_is_the_first_load_where_p99_over_p50_exceeds_the_ratio():
    # ratios 1.25, 2.0 (not > 2), 3.0, 3.75: the knee is load 4
    op = cv.operating_point(sweep(**BASE), S)
    assert op.knee == 4.0
    op = cv.operating_point(sweep(**BASE), cv.Settings(1000.0, 50.0, knee_ratio=3.5))
    assert op.knee == 8.0


def test_littles_law_gap_closed_loop_by_hand():
    op = cv.operating_point(sweep(**BASE), S)
    c = 4 + 100 / 2100 * 4
    rps = 3.5 + (100 / 2100) * 0.5
    # ceiling = C_max / E2E = c / 1.0 s; gap = ceiling / usable RPS
    assert op.ceiling_rps == pytest.approx(c)
    assert op.gap == pytest.approx(c / rps)
    assert not op.gap_flag
    slow = dict(BASE, e2e=[10_000.0] * 4)  # E2E 10 s: ceiling 0.419 req/s vs 3.52 measured -> gap 0.119, flagged
    op = cv.operating_point(sweep(**slow), S)
    assert op.gap == pytest.approx(c / 10 / rps)
    assert op.gap_flag and any("LITTLE'S LAW GAP" in w for w in op.warnings)


def test_open_loop_ceiling_is_the_offered_rate():
    data = dict(BASE, kind="request_rate", rps=[1.0, 2.0, 3.0, 3.2])
    op = cv.operating_point(sweep(**data), S)
    c = 4 + 100 / 2100 * 4
    assert op.load_kind == "request_rate"
    assert op.ceiling_rps == pytest.approx(c)
    assert op.usable_rps == pytest.approx(3.0 + (100 / 2100) * 0.2)
    assert op.gap == pytest.approx(c / op.usable_rps)


def test_e2e_from_the_slo_when_the_tool_gives_none():
    op = cv.operating_point(sweep(**dict(BASE, e2e=None)), S)
    # E2E = TTFT SLO + output tokens x ITL SLO = 1000 + 100 x 50 = 6000 ms
    assert op.e2e_s_at_c_max == pytest.approx(6.0)
    assert "SLO" in op.e2e_source


def test_usable_rps_is_per_replica():
    op = cv.operating_point(sweep(**BASE), S, replicas=2)
    assert op.usable_rps == pytest.approx((3.5 + (100 / 2100) * 0.5) / 2)
    assert op.usable_rps_benchmark == pytest.approx(3.5 + (100 / 2100) * 0.5)


def test_no_itl_slo_checks_ttft_only():
    op = cv.operating_point(sweep(**dict(BASE, itl_p99=[10.0, 20.0, 300.0, 600.0])), cv.Settings(1000.0, None))
    assert op.binding == "ttft" and [c.metric for c in op.crossings] == ["ttft"]


def test_slo_no_level_meets_says_c_max_is_below_the_lowest_level():
    with pytest.raises(InputError, match=r"C_max is below the lowest level tested.*the sweep must start lower"):
        cv.operating_point(sweep(**BASE), cv.Settings(50.0, None))


def test_slo_every_level_meets_says_the_sweep_must_go_higher():
    with pytest.raises(
        InputError,
        match=r"C_max is at least the highest level tested \(8 concurrent requests\); the sweep must go higher",
    ):
        cv.operating_point(sweep(**BASE), cv.Settings(5000.0, 100.0))


def test_one_level_and_repeated_loads_are_errors():
    one = {k: v[:1] for k, v in BASE.items()}
    with pytest.raises(InputError, match="a sweep with one level"):
        cv.operating_point(sweep(**one), S)
    dup = dict(BASE, loads=[1, 2, 2, 8])
    with pytest.raises(
        InputError, match=r"not strictly increasing \(the same load appears twice: load 2 in level1.json"
    ):
        cv.operating_point(sweep(**dup), S)


def test_failed_requests_above_the_threshold_are_an_error_up_to_c_max_and_a_warning_beyond():
    bad = sweep(**BASE, failed=[0.0, 10.0, 0.0, 0.0])  # 10 of 110 = 9.1% at load 2 <= C_max bracket
    with pytest.raises(InputError, match=r"level1.json: 9.1% of requests failed at load 2 \(10 of 110\)"):
        cv.operating_point(bad, S)
    late = sweep(
        **dict(
            BASE,
            loads=[1, 2, 4, 8, 16],
            ttft_p99=[100.0, 200.0, 900.0, 3000.0, 9000.0],
            ttft_p50=[1.0] * 5,
            itl_p99=[1.0] * 5,
            rps=[1.0, 2, 3, 4, 4],
            e2e=[1000.0] * 5,
        ),
        failed=[0, 0, 0, 0, 40.0],
    )
    op = cv.operating_point(late, S)
    assert any("beyond C_max" in w for w in op.warnings)


def test_p95_only_tools_are_used_at_p95_and_say_so():
    data = sweep(**dict(BASE, ttft_p99=None), ttft_p95_ms=[100.0, 200.0, 900.0, 3000.0])
    op = cv.operating_point(data, S)
    assert op.percentile_used["ttft"] == "p95"
    assert any("give no p99, so p95 is checked" in w for w in op.warnings)
    assert op.c_max == pytest.approx(4 + 100 / 2100 * 4)


def test_goodput_counts_failed_requests_as_not_good():
    req = pd.DataFrame(
        {
            "ttft_ms": [100, 1500, 200, None],
            "tpot_ms": [10, 10, 80, None],
            "e2e_ms": [1, 1, 1, None],
            "ok": [True, True, True, False],
        }
    )
    # only the first request meets TTFT 1000 and ITL 50: 1 of 4
    assert cv.goodput(req, 8.0, S) == pytest.approx(2.0)


def test_length_match_uses_both_lengths():
    ok, d = cv.length_match(6000, 1000, 6018, 1001, 0.25)
    assert ok and d == pytest.approx(abs(math.log(6000 / 6018)) + abs(math.log(1000 / 1001)))
    assert cv.length_match(1200, 220, 6018, 1001, 0.25)[0] is False


def test_pd_ratio_and_kv_transfer_by_hand():
    r = recommend.pd_disaggregation(10.0, 2000, 200, 20_000, 2_000, 163_840, 50.0, 500, 2000, 4)
    # P:D = (10 x 2000 / 20000) / (10 x 200 / 2000) = 1.0 / 1.0; transfer = 2000 x 163840 B / 50e9 B/s = 6.5536 ms
    assert r["pd_ratio"] == pytest.approx(1.0)
    assert r["kv_transfer_ms"] == pytest.approx(6.5536)
    assert r["verdict"] == "recommended"
    short = recommend.pd_disaggregation(10.0, 300, 200, 20_000, 2_000, 163_840, 50.0, 500, 2000, 4)
    assert short["verdict"] == "not recommended" and "mean prompt 300 tokens < 500" in short["action"]


def test_prefix_caching_warns_about_routing_for_several_replicas():
    r = recommend.prefix_caching(0.35, 4, 0.2)
    assert r["verdict"] == "recommended" and "1/4 = 25%" in r["warning"]
    assert (r["replicas"], r["min_reuse"]) == (4, 0.2)  # what the step-8 chart draws: 35% kept, or 35% / 4
    assert recommend.prefix_caching(0.35, 1, 0.2)["warning"] is None
    assert recommend.prefix_caching(None, 4, 0.2)["verdict"] == "not assessed"


def test_the_curve_suite_names_the_file_the_column_and_the_level():
    from pipeline import quality

    good = sweep(**BASE)
    assert quality.validate_curve(good, "hand").success
    bad = sweep(**dict(BASE, ttft_p50=[80.0, 100.0, 1300.0, 800.0], rps=[1.0, -2.0, 3.5, 4.0]))
    with pytest.raises(InputError) as exc:
        quality.validate_curve(bad, "results/")
    msg = str(exc.value)
    assert "invalid benchmark results results/ (4 load levels checked)" in msg
    assert (
        "column 'ttft_p99_ms': 1 of 4 levels have ttft_p99_ms < ttft_p50_ms; expected p99 >= p50. Examples: level2.json load 4.0"
        in msg
    )
    assert "column 'rps': 1 of 4 levels have RPS outside 0..1e6" in msg and "level1.json load 2.0: rps = -2.0" in msg
    assert msg.endswith("No outputs were written.")
