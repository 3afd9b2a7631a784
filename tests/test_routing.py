"""Step 3 and its effect on steps 11-12: tier demands, cascading, the guide's routing rule, per-tier fleets, blended cost.

Every expected number is worked by hand in the comments (method.md steps 3, 11, 12; guide 1.5).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline import catalog, fleet, params, routing, tco
from pipeline.errors import ParamsError
from tests.conftest import ROOT, catalog_model

ROUTING = params.validate_section("routing", {})
FLEET = params.validate_section("fleet", {"safety_factor": 1.3, "expected_growth": 0.0})
SLO = params.validate_section("slo", {})
TCO = params.validate_section("tco", {"prices": {"H100-SXM": 4.0, "L40S": 2.0}})


def total_params(name: str) -> int:
    """A catalog model's parameter count (what the routing stage passes to routing.plan)."""
    return catalog.load_model(name, ROOT).total_params


def part(requests: int, sizing: float, mean: float, inp: float, out: float) -> dict[str, Any]:
    """A profile (or one tier of it) with no burst above the sizing rate: burst absorption 0."""
    rps = {"mean": mean, "per_minute_p95": sizing, "per_minute_p99": sizing, "sizing_rate": sizing}
    return {
        "requests": requests,
        "rps": rps,
        "hourly": {"00": {"p95_rps": sizing, "mean_rps": mean}, "01": {"p95_rps": sizing / 2, "mean_rps": mean / 2}},
        "input_tokens": {"p50": inp / 2, "p95": inp, "mean": inp / 2},
        "output_tokens": {"p50": out / 2, "p95": out, "mean": out / 2},
    }


PROFILE = {
    **part(1000, 170.0, 80.0, 4000, 800),
    "tiers": {"large": part(400, 120.0, 30.0, 8000, 1500), "small": part(600, 60.0, 50.0, 1500, 300)},
    "tiers_from": "column 'tier' of the log",
}
MODEL = {"name": "Llama-3.1-70B", "tiers": {"small": "Llama-3.1-8B"}}


def manifest(model: str, gpu: str, tp: int) -> dict[str, Any]:
    return {"model": model, "gpu": gpu, "tp": tp, "pp": 1, "weight_dtype": "fp8", "kv_dtype": "fp8", "synthetic": False}


def op(per_tier: dict[str, Any]) -> dict[str, Any]:
    """An operating point: pooled 12 req/s per TP4 H100 instance (the guide's worked example), plus the tiers'."""
    return {
        "usable_rps": 12.0,
        "manifest": manifest("Llama-3.1-70B", "H100-SXM", 4),
        "curve_source": {"curve": "pooled"},
        "per_tier": per_tier,
    }


TIER_OPS = {
    "large": {"usable_rps": 12.0, "curve": "l", "manifest": manifest("Llama-3.1-70B", "H100-SXM", 4)},
    "small": {"usable_rps": 20.0, "curve": "s", "manifest": manifest("Llama-3.1-8B", "L40S", 1)},
}


def tiers_json(mode: str = "auto", **overrides: Any) -> dict[str, Any]:
    return routing.plan(PROFILE, {"routing": {**ROUTING, "mode": mode, **overrides}, "model": MODEL}, total_params)


def test_route_demands_come_from_each_tiers_rows_with_its_model():
    t = tiers_json()
    assert t["tiers"]["small"]["model"] == "Llama-3.1-8B" and t["tiers"]["large"]["model"] == "Llama-3.1-70B"
    assert t["tiers"]["small"]["share"] == 0.6 and t["tiers"]["small"]["rps"]["sizing_rate"] == 60.0
    assert t["pooled"]["rps"]["sizing_rate"] == 170.0 and t["pooled"]["share"] == 1.0
    # 60% of requests go to the 8B (8.03 B params < 70.55 B)
    assert t["simple_share"]["value"] == 0.6 and t["simple_share"]["tiers_on_smaller_model"] == ["small"]


def test_cascade_sends_everything_to_the_small_tier_and_the_escalations_to_the_large_one():
    t = tiers_json("cascade", cascade_small_model="Llama-3.1-8B", escalation=0.3)
    small, large = t["tiers"]["small"], t["tiers"]["large"]
    assert small["model"] == "Llama-3.1-8B" and small["share"] == 1.0 and small["rps"]["sizing_rate"] == 170.0
    # the large tier: 0.3 x every rate, same lengths (escalations rerun from scratch)
    assert large["model"] == "Llama-3.1-70B" and large["share"] == 0.3
    assert large["rps"]["sizing_rate"] == pytest.approx(51.0) and large["rps"]["mean"] == pytest.approx(24.0)
    assert large["hourly_p95_rps"] == {"00": pytest.approx(51.0), "01": pytest.approx(25.5)}
    assert large["input_tokens"]["p95"] == 4000
    assert t["simple_share"]["value"] == 0.7  # the small model's answers stand for 70%


def test_bad_routing_params_name_the_key():
    with pytest.raises(ParamsError, match=r"routing\.cascade_small_model"):
        tiers_json("cascade")
    with pytest.raises(ParamsError, match=r"routing\.critical_tiers names 'nope'"):
        tiers_json(critical_tiers=["nope"])
    with pytest.raises(ParamsError, match=r"model.tiers.tiny is not a tier of the workload; tiers: large, small"):
        routing.plan(PROFILE, {"routing": ROUTING, "model": {**MODEL, "tiers": {"tiny": "Llama-3.1-8B"}}}, total_params)
    with pytest.raises(ParamsError, match=r"routing\.mode = 'sometimes'; allowed values: auto, route, pooled, cascade"):
        params.validate_section("routing", {"mode": "sometimes"})


@pytest.mark.parametrize(
    ("mode", "gpus", "share", "unsized", "adopted", "why"),
    [
        ("auto", 9, 0.3, {}, True, "both of the guide's rules pass"),
        ("auto", 8, 0.9, {}, False, "exceed this many GPUs"),  # 8 is not > 8
        ("auto", 40, 0.29, {}, False, "measurable skew"),
        ("auto", 40, 0.9, {"small": "no sweep"}, False, "tier 'small' cannot be sized on its own (no sweep)"),
        ("route", 2, 0.0, {}, True, "routing.mode = route"),
        ("pooled", 40, 0.9, {}, False, "routing.mode = pooled"),
    ],
)
def test_the_guides_routing_rule(mode, gpus, share, unsized, adopted, why):
    v = routing.verdict(mode, gpus, share, unsized, 2, ROUTING)
    assert v["adopted"] is adopted and why in v["why"]


def test_one_tier_means_one_fleet():
    assert routing.verdict("route", 40, 0.9, {}, 1, ROUTING)["adopted"] is False


def test_each_tier_is_sized_on_its_own_curve():
    f = fleet.plan(PROFILE, op(TIER_OPS), tiers_json(), FLEET, ROUTING, SLO, catalog_model)
    # pooled: ceil(170 / 12) = 15; ceil(15 x 1.3) = 20; + 1 spare = 21 instances x TP4 = 84 GPUs
    assert f["pooled"]["total_instances"] == 21 and f["pooled"]["gpus"] == 84
    # large: 120 / 12 = 10; x 1.3 = 13; + 1 = 14 x TP4 = 56 (the guide's worked example plus a spare)
    assert f["per_tier"]["large"]["instances_with_safety"] == 13 and f["per_tier"]["large"]["gpus"] == 56
    # small: ceil(60 / 20) = 3; ceil(3.9) = 4; + 1 = 5 x TP1 = 5 L40S
    assert f["per_tier"]["small"]["gpus"] == 5 and f["per_tier"]["small"]["gpu"] == "L40S"
    # pooled 84 > 8 GPUs and 60% of requests on a smaller model: routing is adopted
    assert f["plan"] == "routed" and f["total_gpus"] == 61 and f["gpus_by_type"] == {"H100-SXM": 56, "L40S": 5}
    # each tier's guardrail from its own p95 prompt: 2.5 x 1500
    assert f["per_tier"]["small"]["guardrails"]["max_input_tokens"] == 3750


def test_a_critical_tier_gets_two_spares():
    f = fleet.plan(PROFILE, op(TIER_OPS), tiers_json(critical_tiers=["large"]), FLEET, ROUTING, SLO, catalog_model)
    assert f["per_tier"]["large"]["spares"] == 2 and f["per_tier"]["small"]["spares"] == 1


def test_cascade_fleets_size_the_small_tier_for_all_traffic():
    t = tiers_json("cascade", cascade_small_model="Llama-3.1-8B", escalation=0.3)
    f = fleet.plan(PROFILE, op(TIER_OPS), t, FLEET, {**ROUTING, "mode": "cascade"}, SLO, catalog_model)
    # small: ceil(170 / 20) = 9; ceil(11.7) = 12; + 1 = 13 L40S
    assert f["per_tier"]["small"]["gpus"] == 13
    # large: ceil(51 / 12) = 5; ceil(6.5) = 7; + 1 = 8 instances x TP4 = 32 H100
    assert f["per_tier"]["large"]["total_instances"] == 8 and f["per_tier"]["large"]["gpus"] == 32
    assert f["plan"] == "cascade" and f["total_gpus"] == 45


def test_a_tier_without_a_curve_keeps_one_pooled_fleet():
    ops = copy.deepcopy(TIER_OPS)
    ops["small"] = {"model": "Llama-3.1-8B", "error": "no benchmark sweep for model Llama-3.1-8B"}
    f = fleet.plan(PROFILE, op(ops), tiers_json(), FLEET, ROUTING, SLO, catalog_model)
    assert f["plan"] == "pooled" and list(f["per_tier"]) == ["all"] and f["total_gpus"] == 84
    assert "no benchmark sweep" in f["routing"]["unsized"]["small"]


def test_blend_sums_cost_and_divides_by_the_tokens_users_receive():
    rows = [
        {
            "usd_per_hour": 100.0,
            "instances": 10,
            "usable_rps": 2.0,
            "mean_rps": 5.0,
            "gpus": 40,
            "monthly_usd": 73000.0,
            "monthly_usd_with_schedule": 50000.0,
        },
        {
            "usd_per_hour": 10.0,
            "instances": 5,
            "usable_rps": 4.0,
            "mean_rps": 4.0,
            "gpus": 5,
            "monthly_usd": 7300.0,
            "monthly_usd_with_schedule": 4000.0,
        },
    ]
    delivered = {"rps": {"mean": 9.0}, "output_tokens": {"mean": 500.0}, "input_tokens": {"mean": 1000.0}}
    b = tco.blend(rows, delivered, TCO)
    assert b["usd_per_hour"] == 110 and b["monthly_usd"] == 80300 and b["annual_usd"] == 963600
    assert b["utilization"] == pytest.approx(9 / 40, abs=1e-4)  # (5 + 4) / (10 x 2 + 5 x 4)
    # 110 $/h / (9 req/s x 500 tokens x 3600 s / 1e6 = 16.2 M tokens/h)
    assert b["usd_per_million_output_tokens"] == pytest.approx(110 / 16.2, abs=1e-4)
    assert b["usd_per_million_output_tokens_planned"] == pytest.approx(110 / 16.2 * 0.225 / 0.8, abs=1e-4)
    assert b["monthly_usd_with_schedule"] == 54000 and b["utilization_trap"] is True


def test_routed_plan_is_priced_per_tier_and_compared_with_the_pooled_one():
    t = tiers_json()
    f = fleet.plan(PROFILE, op(TIER_OPS), t, FLEET, ROUTING, SLO, catalog_model)
    chosen = {
        "candidate": "all/H100-SXM/w-fp8/kv-fp8",
        "gpus": 84,
        "monthly_usd": 84 * 4.0 * 730,
        "annual_usd": 84 * 4.0 * 8760,
        "utilization": 0.3,
        "usd_per_million_output_tokens": 1.0,
    }
    out = tco.with_tiers({"per_candidate": []}, chosen, f, t, TCO, [])
    # routed: 56 x $4 + 5 x $2 = $234 an hour = $170,820 a month, against 84 x $4 x 730 = $245,280
    assert (
        out["per_tier"]["large"]["monthly_usd"] == 56 * 4 * 730
        and out["per_tier"]["small"]["monthly_usd"] == 5 * 2 * 730
    )
    assert out["monthly_usd"] == 234 * 730 and out["chosen"] == "routed" and out["runner_up"] == chosen["candidate"]
    assert out["routing"]["routing_saves_usd_per_month"] == pytest.approx(245280 - 170820)
    assert out["routing"]["routing_saves_share"] == pytest.approx(1 - 170820 / 245280, abs=1e-4)
    assert out["routing"]["cheaper"] is True and out["routing"]["verdict"].startswith("routing saves 30%")
    # per-tier utilization: mean 30 / (14 instances x 12) and 50 / (5 x 20)
    assert out["per_tier"]["large"]["utilization"] == pytest.approx(30 / 168, abs=1e-4)
    assert out["per_tier"]["small"]["utilization"] == pytest.approx(0.5)
