"""Step 12 arithmetic by hand, and the shipped price catalog."""

from __future__ import annotations

import pytest

from pipeline import tco
from pipeline.errors import InputError
from tests.conftest import ROOT


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
