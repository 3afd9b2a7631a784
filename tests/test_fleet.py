"""Step 11 arithmetic on the guide's worked example and small cases computed by hand."""

from __future__ import annotations

import json

import pytest

from pipeline import cli, fleet, params, tco
from tests.conftest import METRICS_FIXTURE, catalog_model


def test_worked_example_120_peak_12_usable_safety_1_3_tp4():
    f = fleet.size(120, 12, tp=4, safety=1.3)
    assert (f.instances, f.instances_with_safety, f.total_instances, f.gpus) == (10, 13, 13, 52)


def test_float_noise_does_not_add_an_instance():
    # 10 x 1.3 is 13.000000000000002 in floating point: still 13 instances
    assert fleet.size(100, 10, tp=1, safety=1.3).instances_with_safety == 13
    assert fleet.size(2.1, 0.3, tp=1, safety=1.0).instances == 7  # 2.1 / 0.3 = 7.000000000000001


def test_headroom_and_spares():
    # ceil(55 / 12) = 5; ceil(5 x 1.2) = 6; ceil(6 x 1.3) = 8 (7.8); + 2 (N+2) = 10 x TP2 x PP2 = 40 GPUs
    f = fleet.size(
        55, 12, tp=2, pp=2, safety=1.2, headroom=fleet.headroom(0.3, 0.15), spares=fleet.spare_instances(True)
    )
    assert (f.instances, f.instances_with_safety, f.instances_with_headroom, f.spares) == (5, 6, 8, 2)
    assert (f.total_instances, f.gpus_per_instance, f.gpus) == (10, 4, 40)
    assert fleet.spare_instances(False, failure_domains=3) == 3


def test_cold_start_from_weight_bytes_and_load_path():
    # 70 GB of FP8 weights: NVMe 70 / 12.5 = 5.6 s; 10 GbE 70 / 1.1 = 63.6 s; object store 70 / 0.75 = 93.3 s; + 30 s init
    assert fleet.cold_start_s(70e9, "nvme", 30) == pytest.approx(35.6)
    assert fleet.cold_start_s(70e9, "network_10gbe", 30) == pytest.approx(70 / 1.1 + 30)
    assert fleet.cold_start_s(70e9, "object_store", 0) == pytest.approx(93.333, rel=1e-4)
    with pytest.raises(ValueError, match="unknown load path 'usb'"):
        fleet.cold_start_s(1, "usb", 0)


def test_schedule_by_hand():
    # usable 2 req/s, safety 1.5: need = max(1, ceil(rate x 1.5 / 2)) -> night 0.5 -> 1, day 5 -> 4, peak 7 -> 6
    # a whole day: the 4-hour pattern 0.5, 5, 7, 0.5 six times (00-23), so 23 wraps into 00
    hourly = {f"{h:02d}": (0.5, 5.0, 7.0, 0.5)[h % 4] for h in range(24)}
    s = fleet.schedule(hourly, usable_rps=2.0, safety=1.5, min_warm=1, cold_start=360.0)
    assert [h["instances"] for h in s["hours"]][:4] == [1, 4, 6, 1] and len(s["hours"]) == 24
    # rises 1 -> 4 (+3) and 4 -> 6 (+2) start 360 s (0.1 h) early; 1 -> 1 and 6 -> 1 have no rise
    assert [h["instance_hours"] for h in s["hours"]][:4] == pytest.approx([1.3, 4.2, 6.0, 1.0])
    # 6 x 12.5 = 75 instance-hours a day against the static 6 x 24 = 144
    assert s["instance_hours_per_day"] == pytest.approx(75.0)
    assert s["peak_instances"] == 6 and s["static_instance_hours_per_day"] == 144
    assert s["savings_vs_static"] == pytest.approx(1 - 75 / 144)
    assert s["hours_observed"] == 24 and s["hours_filled"] == 0 and s["fill_rule"] is None
    with pytest.raises(ValueError, match="never scale from zero"):
        fleet.schedule(hourly, 2.0, 1.5, min_warm=0, cold_start=0)


def test_a_log_under_a_day_bills_the_hours_it_does_not_cover_at_the_observed_mean():
    # issue 15: a 1-hour log (18:xx-19:xx) summed its 2 hours and divided by 24. By hand: usable 1, safety 1,
    # static fleet 9: need 18 = ceil(6.0) = 6, 19 = ceil(6.5) = 7; the rise 18 -> 19 (+1) starts 360 s early:
    # 6.1 + 7 = 13.1 instance-hours in the 2 observed hours; 13.1 / 2 x 24 = 157.2 a day, against 9 x 24 = 216
    # (19 -> 20 is not observed: no rise is invented; no wrap from 19 back to 18)
    s = fleet.schedule({"18": 6.0, "19": 6.5}, 1.0, 1.0, min_warm=1, cold_start=360.0, static_instances=9)
    assert [h["instance_hours"] for h in s["hours"]] == pytest.approx([6.1, 7.0])
    assert s["observed_instance_hours"] == pytest.approx(13.1)
    assert s["instance_hours_per_day"] == pytest.approx(157.2)
    assert s["static_instance_hours_per_day"] == 216  # the old code said 18 (9 x 2 hours)
    assert s["savings_vs_static"] == pytest.approx(1 - 157.2 / 216)
    assert (s["hours_observed"], s["hours_filled"]) == (2, 22) and "observed hours" in s["fill_rule"]
    # a tier with no traffic in an hour the log covers: rate 0 there (min warm), not "not observed"
    t = fleet.schedule(
        {"18": 6.0}, 1.0, 1.0, min_warm=1, cold_start=0.0, static_instances=9, observed_hours=["18", "19"]
    )
    assert [h["instances"] for h in t["hours"]] == [6, 1] and t["instance_hours_per_day"] == pytest.approx(84.0)
    with pytest.raises(ValueError, match="hour of day '24'"):
        fleet.schedule({"24": 1.0}, 1.0, 1.0, min_warm=1, cold_start=0.0)


def test_a_log_under_an_hour_gives_no_schedule_and_the_cost_says_why():
    from tests.test_routing import FLEET, PROFILE, ROUTING, SLO, TCO, TIER_OPS, op, tiers_json

    assert fleet.no_schedule_reason(3600.0) is None
    t = tiers_json()
    f = fleet.plan({**PROFILE, "span_s": 3502.0}, op(TIER_OPS), t, FLEET, ROUTING, SLO, catalog_model)
    for x in [f["pooled"], *f["routed"].values()]:
        assert x["schedule"] is None and "3,502 s, under an hour" in x["schedule_note"]
    assert any("under an hour" in w for w in f["warnings"]) and f["schedule_rule"]["min_span_s"] == 3600
    chosen = {
        "candidate": "all/H100-SXM/w-fp8/kv-fp8",
        "gpus": 84,
        "monthly_usd": 84 * 4.0 * 730,
        "annual_usd": 84 * 4.0 * 8760,
        "utilization": 0.3,
        "usd_per_million_output_tokens": 1.0,
    }
    out = tco.with_tiers({"per_candidate": []}, chosen, f, t, TCO, [])
    large = out["per_tier"]["large"]
    assert large["monthly_usd"] == 56 * 4 * 730 and large["monthly_usd_with_schedule"] is None
    assert "under an hour" in large["schedule_note"]
    assert out["totals"]["monthly_usd_with_schedule"] is None and "under an hour" in out["totals"]["schedule_note"]
    # a 2-hour log of the same profile: both hours observed, the other 22 billed at their mean
    f2 = fleet.plan({**PROFILE, "span_s": 7200.0}, op(TIER_OPS), t, FLEET, ROUTING, SLO, catalog_model)
    s = f2["pooled"]["schedule"]
    assert s["hours_observed"] == 2 and s["instance_hours_per_day"] == pytest.approx(s["observed_instance_hours"] * 12)
    assert "2 of 24 hours" in f2["pooled"]["schedule_note"]


def test_min_warm_floor_and_spares_in_the_schedule():
    s = fleet.schedule({"00": 0.0, "01": 0.1}, usable_rps=2.0, safety=1.2, min_warm=2, cold_start=0, spares=1)
    assert [h["instances"] for h in s["hours"]] == [3, 3]


def test_guardrails_by_hand():
    g = fleet.guardrails(input_p95=6018, ttft_slo_ms=2000, arrival_rps=5.5, input_factor=2.5, breaker_factor=0.8)
    # 2.5 x 6018 = 15045; 0.8 x (2 s x 5.5 req/s) = 8.8 -> 8 queued requests
    assert g["max_input_tokens"] == 15045 and g["circuit_breaker_queue_depth"] == 8


def test_cli_fleet_prints_the_arithmetic(capsys):
    # the guide's worked example, headroom and spares set to 0 on the command line
    argv = ["fleet", "--peak-rps", "120", "--usable-rps", "12", "--tp", "4", "--safety", "1.3"]
    assert cli.main([*argv, "--headroom", "0", "--spares", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["instances"], out["instances_with_safety"], out["gpus"]) == (10, 13, 52)
    assert cli.main(["fleet", "--peak-rps", "120", "--usable-rps", "0", "--tp", "4"]) == 1
    assert "--usable-rps = '0'" in capsys.readouterr().err


def test_cli_fleet_defaults_come_from_params(tmp_path, capsys):
    # params: growth 0.3, N+2 (critical) x 2 failure domains = 4 spares, safety 1.5.
    # ceil(120 / 12) = 10; ceil(10 x 1.5) = 15; ceil(15 x 1.3) = 20 (19.5); + 4 = 24 instances x TP4 = 96 GPUs
    params_yaml = tmp_path / "params.yaml"
    params_yaml.write_text(
        "fleet:\n  safety_factor: 1.5\n  expected_growth: 0.3\n  critical: true\n  failure_domains: 2\n"
    )
    argv = ["fleet", "--peak-rps", "120", "--usable-rps", "12", "--tp", "4", "--params", str(params_yaml), "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["instances_with_safety"], out["instances_with_headroom"], out["spares"], out["gpus"]) == (15, 20, 4, 96)
    # a burst above the growth: --burst-rps 180 -> 180 / 120 - 1 = 0.5; ceil(15 x 1.5) = 23 (22.5); + 4 = 27 x 4 = 108
    assert cli.main([*argv, "--burst-rps", "180"]) == 0
    assert json.loads(capsys.readouterr().out)["gpus"] == 108


def test_cli_fleet_sizes_the_sample_like_the_pipeline(capsys):
    # issue 15: `sizing fleet` said 24 GPUs where the pipeline said 36 (headroom 0, no spares). On the shipped
    # sample (tests/data/metrics/fleet.json, the project's params.yaml) the same inputs give the same count.
    # By hand for the committed sample: ceil(5.535 / 1.5627) = 4; ceil(4 x 1.2) = 5; burst 7.1887 / 5.535 - 1 =
    # 0.2988 > growth 0.2: ceil(5 x 1.2988) = 7; + 1 spare = 8 instances x TP4 = 32 GPUs
    assert (
        cli.main(["fleet", "--peak-rps", "5.535", "--usable-rps", "1.5627", "--tp", "4", "--burst-rps", "7.1887"]) == 0
    )
    assert capsys.readouterr().out.rstrip().endswith("= 32 GPUs")
    fl = json.loads((METRICS_FIXTURE / "fleet.json").read_text())["pooled"]
    w = json.loads((METRICS_FIXTURE / "workload.json").read_text())
    burst = w["rps"][params.section("fleet")["burst_rate"]]
    argv = ["fleet", "--peak-rps", str(fl["peak_rps"]), "--usable-rps", str(fl["usable_rps"]), "--tp", str(fl["tp"])]
    assert cli.main([*argv, "--pp", str(fl["pp"]), "--burst-rps", str(burst), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["total_instances"], out["gpus"]) == (fl["total_instances"], fl["gpus"])


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--usable-rps", "inf"), ("--usable-rps", "nan"), ("--peak-rps", "inf"), ("--usable-rps", "1e-308")],
)
def test_cli_fleet_rejects_non_finite_rates(capsys, flag, value):
    # `--usable-rps inf` used to size 0 GPUs (ceil(peak / inf) = 0); 1e-308 overflowed ceil()
    argv = {"--peak-rps": "120", "--usable-rps": "12"}
    argv[flag] = value
    assert cli.main(["fleet", "--peak-rps", argv["--peak-rps"], "--usable-rps", argv["--usable-rps"], "--tp", "4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sizing: error: {flag} = ") and "expected a finite" in err and "Traceback" not in err


def test_size_rejects_what_would_give_zero_or_infinite_instances():
    # the library call behind the CLI and the pipeline: inf usable RPS = 0 instances, 1e-308 = inf instances
    with pytest.raises(ValueError, match="usable RPS per instance = inf; expected a finite number"):
        fleet.size(120, float("inf"), tp=4)
    with pytest.raises(ValueError, match="peak RPS = nan"):
        fleet.size(float("nan"), 12, tp=4)
    with pytest.raises(ValueError, match="within a billion times the peak"):
        fleet.size(120, 1e-308, tp=4)
