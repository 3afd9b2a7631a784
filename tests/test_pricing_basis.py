"""Issue 14, choosing and pricing: every candidate on its own curve, the basis rule, benchmark_next's odds.

Hand-built operating points of the exact shape the curve stage writes (`candidates`, issue14_interface.md),
through the real fleet sizing and the real tco.plan. The demand is test_routing's: sizing rate 170 req/s,
safety 1.3, headroom 0, one spare; prices are AWS's (the cheapest provider listing H100-SXM and H200).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from pipeline import params, scenarios, tco, tco_choice
from pipeline.errors import InputError
from tests.conftest import catalog_model
from tests.test_tco import PRICES, _entry

H100 = "all/H100-SXM/w-fp8/kv-fp8"
H100_BF16KV = "all/H100-SXM/w-fp8/kv-bf16"
H200 = "all/H200/w-fp8/kv-fp8"
L40S = "all/L40S/w-fp8/kv-fp8"


def cand(gpu: str, kv: str, tp: int, basis: str, usable: float | None, band: tuple[float, float] | None = None, **kw):
    """One op.candidates entry (issue14_interface.md keys)."""
    return {
        "tier": "all",
        "model": "Llama-3.1-70B",
        "gpu": gpu,
        "weights": "fp8",
        "kv": kv,
        "tp": tp,
        "pp": 1,
        "basis": basis,
        "basis_why": f"{basis} (hand-made)",
        "deployment_key": None,
        "c_max": 40.0 if usable else None,
        "usable_rps": usable,
        "binding_slo": "ttft" if usable else None,
        "interval": None
        if band is None
        else {
            "c_max_lo": 30.0,
            "c_max_hi": 50.0,
            "usable_rps_lo": band[0],
            "usable_rps_hi": band[1],
            "level": 0.8,
            "source": "LODO",
        },
        "length_match": kw.get("length_match"),
        "lengths": {"source": "hand", "requests": 1000},
        "levels": [],
        "memory_rejected": kw.get("memory_rejected"),
    }


CANDIDATES = {
    H100: cand("H100-SXM", "fp8", 4, "measured", 12.0),
    H100_BF16KV: cand("H100-SXM", "bf16", 4, "calibrated", 15.0, (13.0, 17.0)),
    H200: cand("H200", "fp8", 2, "transferred", 18.0, (12.0, 24.0)),
}


def setup(candidates, op_over=None, **tco_params):
    from pipeline import fleet
    from tests.test_routing import FLEET, PROFILE, ROUTING, SLO, op, tiers_json

    t = tiers_json()
    o = op({})
    f = fleet.plan(PROFILE, o, t, FLEET, ROUTING, SLO, catalog_model)
    memory = {"candidates": {H100: _entry("H100-SXM", 4), H200: _entry("H200", 2)}}
    p = params.validate_section("tco", tco_params)
    pr = tco.Pricing(memory, {}, p, FLEET, SLO, PRICES)
    o2 = {**o, "candidates": candidates, **(op_over or {})}
    return pr, o2, f, t, memory


def plan(candidates, op_over=None, **tco_params):
    pr, o, f, t, _ = setup(candidates, op_over, **tco_params)
    return tco.plan(pr, o, f, t)


def aws(gpus: int, usd: float) -> float:
    return round(gpus * usd * 730, 2)


def test_each_candidate_is_priced_on_its_own_usable_rps_with_its_cost_interval():
    out = plan(CANDIDATES)
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    assert set(rows) == {H100, H100_BF16KV, H200}
    # H200 TP2 at its own 18 req/s (the old code: measured 12 x a roofline ratio): ceil(170 / 18) = 10;
    # ceil(10 x 1.3) = 13; + 1 spare = 14 instances x TP2 = 28 GPUs x AWS $7.912 x 730 h = $161,721.28
    h200 = rows[H200]
    assert (h200["basis"], h200["usable_rps"], h200["instances"], h200["gpus"]) == ("transferred", 18.0, 14, 28)
    assert h200["monthly_usd"] == pytest.approx(161_721.28)
    # its band 12..24 req/s: at 24, ceil(170/24) = 8, ceil(8 x 1.3) = 11 (10.4), + 1 = 12 x 2 = 24 GPUs -> $138,618.24;
    # at 12, ceil(170/12) = 15, ceil(19.5) = 20, + 1 = 21 x 2 = 42 GPUs -> $242,581.92
    assert h200["interval"] == {
        "usable_rps_lo": 12.0,
        "usable_rps_hi": 24.0,
        "monthly_usd_lo": aws(24, 7.912),
        "monthly_usd_hi": aws(42, 7.912),
    }
    assert aws(24, 7.912) == 138_618.24 and aws(42, 7.912) == 242_581.92
    # calibrated kv-bf16 TP4 at 15: ceil(11.33) = 12, ceil(15.6) = 16, + 1 = 17 x 4 = 68 GPUs x $6.88 x 730 = $341,523.20
    cal = rows[H100_BF16KV]
    assert (cal["gpus"], cal["monthly_usd"]) == (68, pytest.approx(aws(68, 6.88)))
    # band 13..17: at 17 -> ceil(10) = 10, 13, 14 x 4 = 56 GPUs; at 13 -> ceil(13.08) = 14, ceil(18.2) = 19, 20 x 4 = 80
    assert (cal["interval"]["monthly_usd_lo"], cal["interval"]["monthly_usd_hi"]) == (aws(56, 6.88), aws(80, 6.88))
    # measured: 84 GPUs, no band
    assert (rows[H100]["gpus"], rows[H100]["interval"]) == (84, None)
    assert all(r["basis"] != "roofline-scaled" for r in out["per_candidate"])


def test_a_transferred_cheapest_candidate_is_not_chosen_unless_allowed():
    out = plan(CANDIDATES)
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    # H200 (transferred, $161,721) is the cheapest, but the plan must be measured or calibrated: the calibrated
    # kv-bf16 ($341,523.20 = 68 x 6.88 x 730) beats the measured one ($421,881.60 = 84 x 6.88 x 730)
    assert rows[H200]["eligible"] is False and "tco.allow_transferred" in rows[H200]["eligible_why"]
    assert rows[H100_BF16KV]["eligible"] is True and rows[H100]["eligible"] is True
    assert out["chosen"] == "pooled" and out["chosen_candidates"] == {"all": H100_BF16KV}
    assert out["chosen_basis"] == "calibrated" and out["allow_transferred"] is False
    assert out["monthly_usd"] == pytest.approx(aws(68, 6.88)) and out["pooled"]["candidate"] == H100_BF16KV
    assert out["runner_up"] == H100 and out["saves_usd_per_month"] == pytest.approx(aws(84, 6.88) - aws(68, 6.88))
    # the fleet stage sized the benchmarked H100 kv-fp8: the plan's fleet is the chosen candidate's, and says so
    assert out["per_tier"]["all"]["gpus"] == 68 and "fleet.json sized H100-SXM" in out["per_tier"]["all"]["fleet_note"]
    assert out["totals"]["monthly_usd"] == out["monthly_usd"]  # computed once

    allowed = plan(CANDIDATES, allow_transferred=True)
    assert allowed["chosen_candidates"] == {"all": H200} and allowed["chosen_basis"] == "transferred"
    assert allowed["monthly_usd"] == pytest.approx(161_721.28) and allowed["allow_transferred"] is True
    assert {r["candidate"]: r["eligible"] for r in allowed["per_candidate"]}[H200] is True


def test_roofline_is_never_chosen_even_when_transferred_is_allowed():
    cands = {**CANDIDATES, L40S: cand("L40S", "fp8", 8, "roofline", 100.0)}
    out = plan(cands, allow_transferred=True)
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    assert rows[L40S]["eligible"] is False and "never chosen" in rows[L40S]["eligible_why"]
    assert out["chosen_candidates"]["all"] == H200


def test_p_beats_chosen_by_hand():
    # a band centred (geometrically) on the chosen cost: half the mass is below it
    assert tco_choice.p_below(100.0, 50.0, 200.0) == pytest.approx(0.5)
    # the band's ends are its p10 and p90
    assert tco_choice.p_below(200.0, 50.0, 200.0) == pytest.approx(0.9)
    assert tco_choice.p_below(50.0, 50.0, 200.0) == pytest.approx(0.1)
    # E[max(100 - M, 0)] for M log-normal, mu = ln 100, sigma = ln 4 / (2 x 1.28155): 100 x 0.5 - 100 e^(s^2/2) Phi(-s)
    s = math.log(4) / (2 * NormalDist().inv_cdf(0.9))
    value = 50 - 100 * math.exp(s * s / 2) * NormalDist().cdf(-s)
    sc = tco_choice.score(100.0, 100.0, (50.0, 200.0))
    assert sc["p_beats_chosen"] == 0.5 and sc["score"] == pytest.approx(value, abs=0.01)
    assert sc["expected_saving_usd_per_month"] == pytest.approx(value / 0.5, abs=0.02)
    # a zero-width band is a point mass; no band: no probability
    assert tco_choice.score(100.0, 80.0, (80.0, 80.0)) == {
        "p_beats_chosen": 1.0,
        "expected_saving_usd_per_month": 20.0,
        "score": 20.0,
    }
    assert tco_choice.score(100.0, 80.0, None)["p_beats_chosen"] is None


def test_benchmark_next_ranks_by_expected_saving_times_probability():
    # a second transferred candidate with the same band shape but dearer: it ranks below H200
    b200 = "all/B200/w-fp8/kv-fp8"
    cands = {**CANDIDATES, b200: cand("B200", "fp8", 2, "transferred", 9.0, (6.0, 12.0))}
    prices = [*PRICES, tco.Price("B200", "AWS", "box", "on-demand", 14.0, "2026", "medium", "hand-made")]
    pr, o, f, t, _ = setup(cands)
    from dataclasses import replace

    out = tco.plan(replace(pr, prices=prices), o, f, t)
    nxt = out["benchmark_next"]
    assert [b["candidate"] for b in nxt][:1] == [H200] and all(b["candidate"] != H100_BF16KV for b in nxt)
    h = nxt[0]
    # P(M < 341,523.20) for M log-normal on [138,618.24, 242,581.92] as p10/p90
    lo, hi, chosen = 138_618.24, 242_581.92, aws(68, 6.88)
    mu, sig = (math.log(lo) + math.log(hi)) / 2, math.log(hi / lo) / (2 * NormalDist().inv_cdf(0.9))
    assert h["p_beats_chosen"] == pytest.approx(NormalDist(mu, sig).cdf(math.log(chosen)), abs=1e-4)
    assert h["score"] == pytest.approx(h["p_beats_chosen"] * h["expected_saving_usd_per_month"], rel=1e-3)
    assert h["basis"] == "transferred" and h["interval"]["monthly_usd_lo"] == lo
    assert [b["score"] for b in nxt] == sorted((b["score"] for b in nxt), reverse=True)
    assert "log-normal" in out["benchmark_next_rule"]


def test_the_tp_only_mismatch_is_priced_with_its_flag():
    # the memory stage picked TP2 for the H100 fp8/fp8; the sweep ran TP4: the benchmarked one is <id>/tp4
    why = "memory stage: TP4 not picked (TP2 is the fewest GPUs that fit)"
    cands = {
        H100: cand("H100-SXM", "fp8", 2, "transferred", 5.0, (4.0, 6.0)),
        f"{H100}/tp4": cand("H100-SXM", "fp8", 4, "measured", 12.0, memory_rejected=why),
    }
    out = plan(cands)
    rows = {r["candidate"]: r for r in out["per_candidate"]}
    tp4 = rows[f"{H100}/tp4"]
    assert (tp4["tp"], tp4["gpus"], tp4["monthly_usd"]) == (4, 84, pytest.approx(aws(84, 6.88)))
    assert tp4["eligible"] is True and tp4["memory_rejected"] == why and why in tp4["eligible_why"]
    assert out["chosen_candidates"] == {"all": f"{H100}/tp4"} and out["chosen_basis"] == "measured"
    # the fleet stage sized the same deployment (H100 fp8 TP4): its fleet, priced, is the plan's
    assert "fleet_note" not in out["per_tier"]["all"] and out["per_tier"]["all"]["gpus"] == 84


def test_the_length_match_is_carried_to_the_row():
    lm = {"input_ratio": 0.82, "output_ratio": 11.1, "within_tolerance": False, "used_for_sizing": False}
    cands = {**CANDIDATES, H100: {**CANDIDATES[H100], "basis": "calibrated", "length_match": lm}}
    rows = {r["candidate"]: r for r in plan(cands)["per_candidate"]}
    assert rows[H100]["length_match"] == lm and rows[H100]["basis"] == "calibrated"


def test_no_sweep_stops_with_what_to_benchmark_unless_transferred_is_allowed():
    no_sweep = {
        H200: cand("H200", "fp8", 2, "transferred", 18.0, (12.0, 24.0)),
        H100: cand("H100-SXM", "fp8", 4, "transferred", 10.0, (8.0, 12.0)),
        L40S: cand("L40S", "fp8", 8, "roofline", None),
    }
    over = {"manifest": None, "usable_rps": None}
    with pytest.raises(tco.NoSweepError) as exc:
        plan(no_sweep, over)
    msg = str(exc.value)
    assert msg.startswith("metrics/operating_point.json: candidates: no measured or calibrated curve")
    assert "benchmark all/H200/w-fp8/kv-fp8 (transferred, about USD 161,721 a month), all/H100-SXM" in msg
    assert "tco.allow_transferred: true" in msg and "\n" not in msg
    assert isinstance(exc.value, InputError)
    assert [c["candidate"] for c in exc.value.candidates] == [H200, H100]  # L40S has no usable RPS
    assert exc.value.candidates[0]["tier"] == "all" and exc.value.candidates[0]["tp"] == 2
    doc = exc.value.document  # what the benchmark plan writer reads in place of metrics/tco.json
    assert doc["plan"] is None and doc["benchmark_next"] == exc.value.candidates and len(doc["per_candidate"]) == 3

    out = plan(no_sweep, over, allow_transferred=True)
    assert out["chosen_candidates"] == {"all": H200} and out["chosen_basis"] == "transferred"


def test_a_scenario_names_its_basis_and_prices_from_the_plans_provider():
    from tests.test_routing import FLEET, PROFILE

    pr, o, f, t, memory = setup(CANDIDATES)
    out = tco.plan(pr, o, f, t)
    m = {"operating_point": o, "tco": out, "workload": PROFILE, "fleet": f, "memory": memory}
    p = params.validate_section("tco", {})
    sc = {
        "h200": {"gpu": "H200", "kv": "fp8"},
        "double": {"traffic_scale": 2.0},
        "own": {"price_usd_per_gpu_hour": 2.0},
    }
    rows = {r["scenario"]: r for r in scenarios.table(m, sc, FLEET, p, PRICES)}
    plan_row = rows["the plan (pooled)"]
    assert (plan_row["candidate"], plan_row["basis"], plan_row["gpus"]) == (H100_BF16KV, "calibrated", 68)
    assert plan_row["gpu"] == "68 H100-SXM" and plan_row["monthly_usd"] == pytest.approx(aws(68, 6.88))
    # every row but the one with its own price compares AWS's prices
    for name in ("the plan (pooled)", "pooled baseline", "h200", "double"):
        assert rows[name]["price_basis"] == "AWS (on-demand)" and rows[name]["price_provider"] == "AWS"
    h200 = rows["h200"]
    assert (h200["basis"], h200["usd_per_gpu_hour"], h200["gpus"]) == ("transferred", 7.912, 28)
    assert "transferred" in h200["slo_status"] and h200["eligible"] is False
    # traffic x 2 on the chosen calibrated kv-bf16: 340 / 15 = 22.67 -> 23, x 1.3 = 29.9 -> 30, + 1 = 31 x 4 = 124 GPUs
    assert rows["double"]["gpus"] == 124 and rows["double"]["monthly_usd"] == pytest.approx(aws(124, 6.88))
    # its band 13..17 at 340 req/s: 17 -> 20, 26, 27 x 4 = 108 GPUs; 13 -> 27 (26.15), 36 (35.1), 37 x 4 = 148
    assert (rows["double"]["interval"]["monthly_usd_lo"], rows["double"]["interval"]["monthly_usd_hi"]) == (
        aws(108, 6.88),
        aws(148, 6.88),
    )
    assert rows["own"]["price_basis"] == "scenario price" and rows["own"]["price_provider"] is None

    # no provider lists both GPUs: every row says there is no like-for-like price
    lone = [tco.Price("H100-SXM", "Lambda", "x", "on-demand", 3.99, "2026", "m", "s"), PRICES[3]]
    from dataclasses import replace

    out2 = tco.plan(replace(pr, prices=lone), o, f, t)
    rows2 = {r["scenario"]: r for r in scenarios.table({**m, "tco": out2}, sc, FLEET, p, lone)}
    assert rows2["h200"]["price_provider"] is None and "NOT like-for-like" in rows2["h200"]["price_basis"]


def test_report_12_tables_show_basis_and_interval_per_candidate():
    from pipeline import tco_views

    out = plan(CANDIDATES)
    table = tco_views.candidate_table(out["per_candidate"]).set_index("candidate")
    assert list(table.index) == [H200, H100_BF16KV, H100]  # cheapest first
    assert (table.loc[H200, "basis"], table.loc[H200, "eligible"]) == ("transferred", False)
    assert (table.loc[H200, "monthly_usd_lo"], table.loc[H200, "monthly_usd_hi"]) == (138_618.24, 242_581.92)
    from pipeline.text import to_html

    line = to_html(tco_views.benchmark_next_line(out["benchmark_next"], tco_views.reference_label(out)))
    assert "all/H200/w-fp8/kv-fp8" in line and "80% band USD 138,618-242,582" in line and "probability 100%" in line
    assert "Basis of the plan: calibrated" in to_html(tco_views.basis_line(out))
