"""Step 11 arithmetic on the guide's worked example and small cases computed by hand."""

from __future__ import annotations

import json

import pytest

from pipeline import cli, fleet


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
    hourly = {"00": 0.5, "01": 5.0, "02": 7.0, "03": 0.5}
    s = fleet.schedule(hourly, usable_rps=2.0, safety=1.5, min_warm=1, cold_start=360.0)
    assert [h["instances"] for h in s["hours"]] == [1, 4, 6, 1]
    # rises 00->01 (+3) and 01->02 (+2) start 360 s (0.1 h) early; 03 -> 00 has no rise
    assert [h["instance_hours"] for h in s["hours"]] == pytest.approx([1.3, 4.2, 6.0, 1.0])
    assert s["peak_instances"] == 6 and s["static_instance_hours_per_day"] == 24
    assert s["savings_vs_static"] == pytest.approx(1 - 12.5 / 24)
    with pytest.raises(ValueError, match="never scale from zero"):
        fleet.schedule(hourly, 2.0, 1.5, min_warm=0, cold_start=0)


def test_min_warm_floor_and_spares_in_the_schedule():
    s = fleet.schedule({"00": 0.0, "01": 0.1}, usable_rps=2.0, safety=1.2, min_warm=2, cold_start=0, spares=1)
    assert [h["instances"] for h in s["hours"]] == [3, 3]


def test_guardrails_by_hand():
    g = fleet.guardrails(input_p95=6018, ttft_slo_ms=2000, arrival_rps=5.5, input_factor=2.5, breaker_factor=0.8)
    # 2.5 x 6018 = 15045; 0.8 x (2 s x 5.5 req/s) = 8.8 -> 8 queued requests
    assert g["max_input_tokens"] == 15045 and g["circuit_breaker_queue_depth"] == 8


def test_cli_fleet_prints_the_arithmetic(capsys):
    assert cli.main(["fleet", "--peak-rps", "120", "--usable-rps", "12", "--tp", "4", "--safety", "1.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["instances"], out["instances_with_safety"], out["gpus"]) == (10, 13, 52)
    assert cli.main(["fleet", "--peak-rps", "120", "--usable-rps", "0", "--tp", "4"]) == 1
    assert "usable RPS per instance must be > 0" in capsys.readouterr().err
