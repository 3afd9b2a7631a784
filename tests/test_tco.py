"""Step 12 arithmetic by hand, and the shipped price catalog."""

from __future__ import annotations

import pytest

from pipeline import params, tco
from pipeline.errors import InputError, ParamsError
from tests.conftest import ROOT, catalog_model


def test_cost_per_hour_month_year_and_per_million_tokens():
    # 52 GPUs x $4/h = $208/h; x 730 = $151,840/month; x 8760 = $1,822,080/year
    c = tco.cost(52, 4.0, instances=13, usable_rps=12, average_rps=62.4, mean_output_tokens=200, mean_input_tokens=1000)
    assert (c.usd_per_hour, c.monthly_usd, c.annual_usd) == (208.0, 151_840.0, 1_822_080.0)
    # utilization = 62.4 / (13 x 12) = 0.4; output tokens/h = 62.4 x 200 x 3600 = 44,928,000 -> $208 / 44.928 = $4.6296 per 1M
    assert c.utilization == pytest.approx(0.4)
    assert c.usd_per_million_output_tokens == pytest.approx(208 / 44.928)
    assert c.usd_per_million_input_tokens == pytest.approx(208 / 224.64)
    # planned at 80%: 156 x 0.8 x 200 x 3600 = 89,856,000 tokens/h -> half the measured cost per token (40% vs 80%)
    assert c.usd_per_million_output_tokens_planned == pytest.approx(c.usd_per_million_output_tokens / 2)
    assert not c.utilization_trap
    assert tco.cost(52, 4.0, 13, 12, 50.0, 200, 1000).utilization_trap  # 50 / 156 = 32% < 40%


def test_cheapest_names_the_margin_over_the_runner_up():
    out = tco.cheapest({"H100/fp8": 100_000.0, "H200/fp8": 80_000.0, "B200/fp8": 90_000.0})
    assert out["chosen"] == "H200/fp8" and out["runner_up"] == "B200/fp8"
    assert out["saves_usd_per_month"] == 10_000.0 and out["saves_share"] == pytest.approx(1 / 9)
    with pytest.raises(InputError, match="no candidate meets the SLO"):
        tco.cheapest({})


def test_shipped_prices_are_sourced_and_name_catalog_gpus():
    from pipeline import catalog

    prices = tco.load_prices(ROOT)
    names = set(catalog.load_gpus(ROOT))
    assert prices and all(p.gpu in names and p.source for p in prices)
    h100 = tco.price_for("H100-SXM", prices)
    assert h100.provider == "Lambda" and h100.usd_per_gpu_hour == 3.99  # the lowest on-demand list price
    assert tco.price_for("H100-SXM", prices, provider="AWS").usd_per_gpu_hour == 6.88
    assert tco.price_for("MI300X", prices) is None


def test_a_price_without_source_is_a_clear_error(tmp_path):
    d = tmp_path / "data" / "catalog"
    d.mkdir(parents=True)
    (d / "prices.csv").write_text(",".join(tco.PRICE_COLUMNS) + "\nH100-SXM,X,x,on-demand,abc,2026,low,\n")
    with pytest.raises(
        InputError, match=r"1 of 1 rows lack a positive price, a GPU or a source.*line 2: 'H100-SXM' 'abc'"
    ):
        tco.load_prices(tmp_path)


def test_predicted_capacity_interpolates_the_roofline_at_the_slo():
    curve = [
        {"concurrency": 1, "ttft_ms": 300.0, "itl_ms": 10.0, "rps": 0.1},
        {"concurrency": 8, "ttft_ms": 320.0, "itl_ms": 30.0, "rps": 0.7},
        {"concurrency": 16, "ttft_ms": 340.0, "itl_ms": 70.0, "rps": 1.1},
    ]
    # ITL crosses 50 ms halfway between 8 and 16 -> 12; RPS there = 0.7 + 0.5 x 0.4 = 0.9; TTFT never crosses 2000
    c, rps = tco.predicted_capacity(curve, 2000.0, 50.0)
    assert c == pytest.approx(12.0) and rps == pytest.approx(0.9)
    assert tco.predicted_capacity(curve, 2000.0, None) == (16.0, 1.1)  # no ITL SLO: the last level (KV-bound)
    assert tco.predicted_capacity(curve, 200.0, None) == (0.0, 0.0)  # TTFT misses the SLO at every level


# ---- issue 15: one provider's prices, the benchmarked deployment always priced, no ZeroDivisionError ----


def _price(gpu: str, provider: str, usd: float) -> tco.Price:
    return tco.Price(gpu, provider, f"{provider} box", "on-demand", usd, "2026", "medium", "hand-made")


PRICES = [
    _price("H100-SXM", "Lambda", 3.99),
    _price("H100-SXM", "AWS", 6.88),
    _price("H100-SXM", "GCP", 11.061),
    _price("H200", "AWS", 7.912),
    _price("H200", "GCP", 10.6),
]


def _curve(rps_at_16: float, ttft_ms: float = 300.0) -> list[dict[str, float]]:
    """A roofline curve that never crosses the SLO (TTFT 2000, ITL 50): its capacity is the last level's RPS."""
    return [
        {"concurrency": 1, "ttft_ms": ttft_ms, "itl_ms": 10.0, "rps": 0.1},
        {"concurrency": 16, "ttft_ms": ttft_ms + 40, "itl_ms": 30.0, "rps": rps_at_16},
    ]


def _entry(gpu: str, tp: int) -> dict[str, object]:
    return {
        "tier": "all",
        "gpu": gpu,
        "weights": "fp8",
        "kv": "fp8",
        "tp": tp,
        "pp": 1,
        "fits": True,
        "meets_slo": True,
    }


def _pooled_plan(memory_tp: int = 2, bench_ttft_ms: float = 300.0, prices=PRICES, **tco_params):
    """The test_routing profile on one pooled fleet (no tier has a curve): 170 req/s, usable 12 per TP4 H100 instance.

    The memory stage picked TP`memory_tp` for the benchmarked H100 fp8/fp8 (the sweep is TP4) and TP2 for H200.
    """
    from pipeline import fleet
    from tests.test_routing import FLEET, PROFILE, ROUTING, SLO, op, tiers_json

    t = tiers_json()
    o = op({})
    f = fleet.plan(PROFILE, o, t, FLEET, ROUTING, SLO, catalog_model)
    memory = {
        "candidates": {
            "all/H100-SXM/w-fp8/kv-fp8": _entry("H100-SXM", memory_tp),
            "all/H200/w-fp8/kv-fp8": _entry("H200", 2),
        }
    }
    curves = {"all/H100-SXM/w-fp8/kv-fp8": _curve(1.0, bench_ttft_ms), "all/H200/w-fp8/kv-fp8": _curve(1.5)}
    p = params.validate_section("tco", tco_params)
    pr = tco.Pricing(memory, curves, p, FLEET, SLO, prices)
    return tco.plan(pr, o, f, t)


def test_every_price_comes_from_the_cheapest_provider_that_lists_every_compared_gpu():
    # compared GPUs: H100-SXM and H200. AWS lists both (6.88 + 7.912 = 14.792), GCP both (21.661), Lambda only the
    # H100: AWS. The old code priced the H100 at Lambda's 3.99 and the H200 at AWS's 7.912. (Memory agrees: TP4.)
    out = _pooled_plan(memory_tp=4)
    basis = out["price_basis"]
    assert basis["provider"] == "AWS" and basis["like_for_like"] is True and out["price_provider"] == "AWS"
    assert basis["compared_gpus"] == ["H100-SXM", "H200"]
    assert basis["listing_every_compared_gpu"] == {"AWS": 14.792, "GCP": 21.661}
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    # measured: ceil(170 / 12) = 15; ceil(15 x 1.3) = 20; headroom 0; + 1 spare = 21 x TP4 = 84 GPUs x $6.88 x 730 h
    m = rows["all/H100-SXM/w-fp8/kv-fp8"]
    assert (m["basis"], m["tp"], m["gpus"], m["usd_per_gpu_hour"]) == ("measured", 4, 84, 6.88)
    assert m["monthly_usd"] == pytest.approx(84 * 6.88 * 730) and m["price_source"].startswith("AWS ")
    # H200 TP2: measured 12 x roofline 1.5 / 1.0 = 18 req/s; ceil(170 / 18) = 10; ceil(10 x 1.3) = 13; + 1 = 14
    # x TP2 = 28 GPUs x AWS $7.912 x 730 h = $161,721.28
    h200 = rows["all/H200/w-fp8/kv-fp8"]
    assert (h200["usable_rps"], h200["gpus"], h200["usd_per_gpu_hour"]) == (18.0, 28, 7.912)
    assert h200["monthly_usd"] == pytest.approx(28 * 7.912 * 730) and h200["like_for_like"] is True
    assert out["benchmark_next"][0]["candidate"] == "all/H200/w-fp8/kv-fp8"
    assert out["per_tier"]["all"]["usd_per_gpu_hour"] == 6.88 and out["monthly_usd"] == pytest.approx(84 * 6.88 * 730)


def test_no_provider_listing_every_gpu_means_no_like_for_like_price():
    prices = [_price("H100-SXM", "Lambda", 3.99), _price("H200", "AWS", 7.912)]
    out = _pooled_plan(memory_tp=4, prices=prices)
    assert out["price_basis"]["provider"] is None and out["like_for_like"] is False
    assert "no provider lists every compared GPU (H100-SXM, H200)" in out["price_basis"]["rule"]
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    for cid, usd in (("all/H100-SXM/w-fp8/kv-fp8", 3.99), ("all/H200/w-fp8/kv-fp8", 7.912)):
        assert rows[cid]["usd_per_gpu_hour"] == usd and rows[cid]["like_for_like"] is False
        assert "not like-for-like" in rows[cid]["price_source"]


def test_a_named_provider_prices_everything_and_an_unknown_one_is_an_error():
    out = _pooled_plan(memory_tp=4, provider="GCP")
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    assert rows["all/H100-SXM/w-fp8/kv-fp8"]["usd_per_gpu_hour"] == 11.061
    assert rows["all/H200/w-fp8/kv-fp8"]["usd_per_gpu_hour"] == 10.6
    assert out["price_basis"]["rule"].startswith("params tco.provider: GCP")
    with pytest.raises(
        InputError, match=r"tco.provider = 'Nope' lists no on-demand price.*providers .*AWS, GCP, Lambda"
    ):
        _pooled_plan(memory_tp=4, provider="Nope")


def test_the_benchmarked_deployment_is_priced_whatever_tp_the_memory_stage_picked():
    # issue 15: the memory stage picked TP2 (or TP8) for the sweep's TP4 H100: "no candidate meets the SLO".
    out = _pooled_plan(memory_tp=2)
    assert out["chosen"] == "pooled" and out["chosen_candidates"] == {"all": "all/H100-SXM/w-fp8/kv-fp8"}
    assert out["pooled"]["gpus"] == 84 and out["chosen_basis"] == "measured"
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    # the memory stage's own TP2 H100 stays a roofline candidate (no engine-model curves in this op: the measured
    # RPS x the roofline ratio): 12 x 1.0 / 2.0 = 6 req/s per TP2 instance;
    # ceil(170 / 6) = 29; ceil(29 x 1.3) = 38 (37.7); + 1 = 39 x TP2 = 78 GPUs
    tp2 = rows["all/H100-SXM/w-fp8/kv-fp8/tp2"]
    assert (tp2["basis"], tp2["usable_rps"], tp2["gpus"], tp2["eligible"]) == ("roofline", 6.0, 78, False)
    assert "scaled per GPU x 4/2" in tp2["usable_rps_source"]
    out8 = _pooled_plan(memory_tp=8)
    assert out8["chosen_candidates"]["all"] == "all/H100-SXM/w-fp8/kv-fp8" and out8["pooled"]["gpus"] == 84


def test_a_benchmarked_roofline_that_misses_the_slo_is_no_zero_division():
    # max_tp 4: the memory stage agrees on TP4 but its roofline never meets the SLO (TTFT 3000 ms > 2000 at every
    # level): capacity 0. The old code divided by it (ZeroDivisionError); now the measured plan stands alone.
    out = _pooled_plan(memory_tp=4, bench_ttft_ms=3000.0)
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    assert rows["all/H100-SXM/w-fp8/kv-fp8"]["monthly_usd"] == pytest.approx(84 * 6.88 * 730)
    h200 = rows["all/H200/w-fp8/kv-fp8"]
    assert h200["usable_rps"] is None and "never meets the SLO" in h200["note"] and "monthly_usd" not in h200
    assert out["benchmark_next"] == []


def test_a_zero_usable_rps_is_a_clear_error_not_a_division():
    from pipeline import fleet
    from tests.test_routing import FLEET, PROFILE, ROUTING, SLO, op, tiers_json

    t, o = tiers_json(), op({})
    f = fleet.plan(PROFILE, o, t, FLEET, ROUTING, SLO, catalog_model)
    pr = tco.Pricing({"candidates": {}}, {}, params.validate_section("tco", {}), FLEET, SLO, PRICES)
    with pytest.raises(InputError, match=r"operating_point.json usable_rps = 0.0; expected a finite usable RPS > 0"):
        tco.plan(pr, {**o, "usable_rps": 0.0}, f, t)
    with pytest.raises(InputError, match=r"manifest field\(s\) tp missing"):
        tco.plan(pr, {**o, "manifest": {**o["manifest"], "tp": None}}, f, t)
    # the measured deployment without a price anywhere: say so, not "no candidate meets the SLO"
    with pytest.raises(InputError, match=r"cannot be priced: no on-demand price for H100-SXM.*set tco.prices.H100-SXM"):
        tco.plan(tco.Pricing({"candidates": {}}, {}, params.validate_section("tco", {}), FLEET, SLO, []), o, f, t)


@pytest.mark.parametrize("value", [-92.69, 0, float("nan"), float("inf"), "cheap"])
def test_a_price_override_must_be_a_finite_positive_number(value):
    # finance showed "USD -92,690" a month from a negative tco.prices override
    with pytest.raises(ParamsError, match=r"tco.prices.H100-SXM"):
        params.validate_section("tco", {"prices": {"H100-SXM": value}})


def test_a_nan_list_price_is_a_clear_error(tmp_path):
    d = tmp_path / "data" / "catalog"
    d.mkdir(parents=True)
    (d / "prices.csv").write_text(",".join(tco.PRICE_COLUMNS) + "\nH100-SXM,X,x,on-demand,nan,2026,low,src\n")
    with pytest.raises(InputError, match=r"usd_per_gpu_hour.*line 2: 'H100-SXM' 'nan'"):
        tco.load_prices(tmp_path)
