"""Risk flags of the adopted plan ranked by cost impact (pipeline.risk), on hand-built metrics documents."""

from __future__ import annotations

import copy

import pytest

from pipeline import risk


def plan() -> dict:
    """A routed plan: large $80,000 + small $20,000 a month, every risk but synthetic inputs raised."""
    return {
        "workload": {},
        "tco": {
            "monthly_usd": 100_000.0,
            "utilization": 0.2,
            "utilization_trap": True,
            "totals": {"monthly_usd_with_schedule": 70_000.0, "planned_utilization": 0.8},
            "per_tier": {"large": {"monthly_usd": 80_000.0}, "small": {"monthly_usd": 20_000.0}},
            "chosen_basis": "transferred",
        },
        "fleet": {
            "per_tier": {"large": {}, "small": {}},
            "replay": {
                "passes": False,
                "slo_attainment": 0.93,
                "per_tier": {
                    "large": {"passes": False, "formula_replicas": 8, "min_replicas_meeting_slo": 10},
                    "small": {"passes": True, "formula_replicas": 4, "min_replicas_meeting_slo": 3},
                },
            },
        },
        "operating_point": {
            "length_mismatch": [
                {
                    "tier": "small",
                    "curve": "c",
                    "input_ratio": 0.8,
                    "output_ratio": 1.1,
                    "within_tolerance": False,
                    "used_for_sizing": True,
                    "message": "the small curve ran shorter prompts",
                },
                {"tier": "large", "input_ratio": 1.05, "output_ratio": 1.0, "within_tolerance": True},
            ]
        },
        "validation": {
            "recharacterize": True,
            "reasons": ["TTFT p99 1.5x the benchmark"],
            "window": {"tier": "large"},
            "metrics": {"ttft_p99_ms": {"production": 1500.0, "benchmark": 1000.0}},
        },
    }


def test_flags_are_ranked_by_cost_impact_computed_by_hand():
    found = risk.flags(plan(), samples=[])
    impacts = {f.key: f.impact_usd_per_month for f in found}
    # by hand:
    # re-characterize: large $80,000 x (1500 / 1000 - 1) = 40,000
    # utilization trap: static 100,000 - scheduled 70,000 = 30,000
    # weak basis (transferred, no interval): (80,000 + 20,000) x 0.25 = 25,000
    # replay failure: large needs 10 - 8 = 2 more replicas x 80,000 / 8 = 20,000 (small passes)
    # length mismatch: small, worst ratio max(1/0.8, 1.1) = 1.25: 20,000 x 0.25 = 5,000 (large is within tolerance)
    assert impacts == pytest.approx(
        {
            "recharacterize": 40_000,
            "utilization_trap": 30_000,
            "weak_basis": 25_000,
            "replay_failure": 20_000,
            "length_mismatch": 5_000,
        }
    )
    assert [f.key for f in found] == [
        "recharacterize",
        "utilization_trap",
        "weak_basis",
        "replay_failure",
        "length_mismatch",
    ]
    assert "2 more replicas" in found[3].detail and "93%" in found[3].detail
    assert risk.confidence("transferred", found) == "low"  # a re-characterize verdict and a failed replay


def test_synthetic_inputs_outrank_everything_and_an_interval_replaces_the_guess():
    m = plan()
    m["tco"]["per_tier"]["large"]["interval"] = {"monthly_usd_lo": 70_000.0, "monthly_usd_hi": 86_000.0}
    found = risk.flags(m, samples=["the traffic log (data/raw/traffic/sample_traffic.parquet, synthetic)"])
    assert found[0].key == "synthetic_inputs" and found[0].impact_usd_per_month == 100_000
    assert "sample_traffic.parquet" in found[0].detail
    weak = next(f for f in found if f.key == "weak_basis")
    # large from its interval: 86,000 - 80,000 = 6,000; small has none: 20,000 x 0.25 = 5,000
    assert weak.impact_usd_per_month == pytest.approx(11_000)
    assert [f.key for f in found][-2:] == ["weak_basis", "length_mismatch"]


def test_no_flag_when_the_new_keys_are_absent():
    """Older metrics (before issue 14): no chosen_basis, replay, length_mismatch: nothing breaks, nothing is raised."""
    m = {"tco": {"monthly_usd": 1000.0}, "fleet": {"per_tier": {"all": {}}}, "operating_point": {}, "validation": {}}
    assert risk.flags(m) == []
    assert risk.flags({}) == []
    assert risk.basis_of(m)[0] == "measured"


def test_basis_derived_when_tco_has_no_chosen_basis():
    m = plan()
    del m["tco"]["chosen_basis"]
    m["tco"]["per_tier"] = {"large": {"monthly_usd": 1.0, "gpu": "H200", "weights": "fp8", "kv": "fp8"}}
    m["fleet"]["per_tier"] = {"large": {}}
    m["tco"]["per_tier_candidates"] = {
        "large": {"candidates": [{"candidate": "large/H200/w-fp8/kv-fp8", "basis": "roofline-scaled"}]}
    }
    assert risk.basis_of(m)[0] == "roofline"
    m["operating_point"]["per_tier"] = {"large": {"sizing_basis": "calibrated"}}
    assert risk.basis_of(m)[0] == "calibrated"  # the curve stage's own word wins over the tco row


def test_a_replay_where_no_count_meets_the_slo_costs_the_whole_tier_and_a_passing_one_raises_nothing():
    m = plan()
    m["fleet"]["replay"]["per_tier"]["large"]["min_replicas_meeting_slo"] = None
    assert next(f for f in risk.flags(m) if f.key == "replay_failure").impact_usd_per_month == 80_000
    ok = copy.deepcopy(plan())
    ok["fleet"]["replay"]["passes"] = True
    assert "replay_failure" not in {f.key for f in risk.flags(ok)}


def test_confidence_levels():
    assert risk.confidence("measured", []) == "high"
    assert risk.confidence("calibrated", []) == "medium"
    assert risk.confidence("roofline", []) == "low"


def test_only_fleets_of_the_adopted_plan_raise_a_length_mismatch_or_cost_anything():
    """Routed plan: the pooled `all` curve's mismatch is of a fleet not deployed; pooled plan: the tier curves are."""
    m = plan()
    m["tco"]["plan"] = "routed"
    m["operating_point"]["length_mismatch"].append(
        {"tier": "all", "input_ratio": 2.0, "output_ratio": 1.0, "within_tolerance": False, "used_for_sizing": True}
    )
    rows = [f for f in risk.flags(m) if f.key == "length_mismatch"]
    assert [f.title for f in rows] == ["Benchmark lengths differ from the traffic (tier small)"]
    assert rows[0].impact_usd_per_month == pytest.approx(5_000)  # small only: 20,000 x (1.25 - 1)
    assert risk.tier_cost(m, "all") == 0.0  # the pooled fleet is not deployed
    assert risk.tier_cost(m, "small") == 20_000 and risk.tier_cost(m, None) == 100_000

    pooled = plan()
    pooled["tco"]["plan"] = "pooled"
    pooled["tco"]["per_tier"] = {"all": {"monthly_usd": 100_000.0}}
    pooled["operating_point"]["length_mismatch"].append(
        {"tier": "all", "input_ratio": 1.5, "output_ratio": 1.0, "within_tolerance": False, "used_for_sizing": True}
    )
    rows = [f for f in risk.flags(pooled) if f.key == "length_mismatch"]
    # only the pooled curve: 100,000 x (1.5 - 1) = 50,000 (the small tier's curve sized nothing adopted)
    assert [(f.title, f.impact_usd_per_month) for f in rows] == [
        ("Benchmark lengths differ from the traffic (tier all)", pytest.approx(50_000))
    ]
    assert risk.tier_cost(pooled, "large") == 0.0
    # the weak basis counts the adopted fleet only: 100,000 x 0.25 (not 0 + 0 for fleet.json's tiers)
    assert next(f for f in risk.flags(pooled) if f.key == "weak_basis").impact_usd_per_month == pytest.approx(25_000)
    # a production window of a tier the pooled fleet serves: the whole plan x (1.5 - 1)
    assert next(f for f in risk.flags(pooled) if f.key == "recharacterize").impact_usd_per_month == pytest.approx(
        50_000
    )


def test_a_priced_plan_other_than_the_sized_fleet_is_flagged():
    m = plan()
    m["fleet"]["plan"] = m["tco"]["plan"] = "routed"
    assert risk.plan_differs(m) == [] and "plan_differs" not in {f.key for f in risk.flags(m)}
    # tco falls back to pooled (a routed tier is barred): another plan
    fallback = copy.deepcopy(m)
    fallback["tco"]["plan"] = "pooled"
    fallback["tco"]["per_tier"] = {"all": {"monthly_usd": 100_000.0}}
    flag = next(f for f in risk.flags(fallback) if f.key == "plan_differs")
    assert flag.title == (
        "The priced plan differs from the sized fleet (deployment sheet and replay describe fleet.json's)"
    )
    assert "tco.json prices a pooled plan, fleet.json sized a routed one" in flag.detail
    assert flag.impact_usd_per_month is None
    assert risk.flags(fallback)[-1].key == "plan_differs"  # no cost impact: after every ranked flag
    # the same pooled plan, but tco priced a cheaper candidate than the one fleet.json sized
    note = copy.deepcopy(m)
    note["fleet"] = {"plan": "pooled", "per_tier": {"all": {"gpu": "H100-SXM", "gpus": 32}}}
    note["tco"]["plan"] = "pooled"
    note["tco"]["per_tier"] = {"all": {"monthly_usd": 50_000.0, "gpu": "H200", "gpus": 10, "fleet_note": "sized X"}}
    assert risk.plan_differs(note) == ["all: sized X"]


def test_the_replay_failure_flag_states_the_capacity_correction_in_plain_words():
    """Issue 14: the replay runs the engine model corrected to the benchmark; the flag says so, or says it is not."""
    m = plan()
    m["fleet"]["replay"]["per_tier"]["large"]["capacity_correction"] = {
        "applied": True, "step_time_scale": 1.479313, "measured_usable_rps": 1.0197,
    }  # fmt: skip
    flag = next(f for f in risk.flags(m, samples=[]) if f.key == "replay_failure")
    assert "corrected to the benchmark (large: every engine step x 1.48" in flag.detail
    assert "the 1.02 req/s the benchmark measured at its own lengths" in flag.detail
    assert "own request lengths are kept" in flag.detail
    plain = next(f for f in risk.flags(plan(), samples=[]) if f.key == "replay_failure")
    assert "not corrected to a benchmark" in plain.detail
