"""params.yaml validation and the shipped sample log's determinism."""

from __future__ import annotations

import pytest

from pipeline import params, sample
from pipeline.errors import ParamsError
from tests.conftest import ROOT


def test_shipped_params_are_valid():
    data = params.load(ROOT / "params.yaml")
    w = params.section("workload", data)
    assert w["sizing_rate"] == "per_minute_p95" and w["tiers"]["column"] == "auto"
    assert params.section("slo", data)["ttft_p99_ms"] == 2000


@pytest.mark.parametrize(
    ("section", "raw", "needle"),
    [
        (
            "workload",
            {"sourse": "x"},
            "unknown key workload.sourse (did you mean 'source'?); allowed keys in 'workload': source, format",
        ),
        (
            "workload",
            {"format": "csvv"},
            "workload.format = 'csvv'; allowed values: auto, generic, azure, burstgpt, mooncake",
        ),
        ("slo", {"ttft_p99_ms": -5}, "slo.ttft_p99_ms = -5; expected a number > 0"),
        ("workload", {"max_failed_share": 2}, "expected a number <= 1"),
        ("workload", {"columns": {"arrival": "ts"}}, "workload.columns has unknown key 'arrival'"),
        (
            "workload",
            {"tiers": {"rules": [{"name": "a", "max_tokens": 5}]}},
            "unknown key workload.tiers.rules[0].max_tokens",
        ),
        ("workload", {"long_input_tokens": True}, "expected an integer"),
    ],
)
def test_bad_params_name_the_key(section, raw, needle):
    with pytest.raises(ParamsError) as err:
        params.validate_section(section, raw)
    assert needle in str(err.value)


def test_sample_is_byte_identical_to_regeneration(tmp_path):
    out = sample.write(tmp_path / "sample.parquet")
    assert out.read_bytes() == sample.SAMPLE_PATH.read_bytes()


def test_sample_has_two_diurnal_peaks():
    import numpy as np

    hours = np.arange(24) + 0.5
    rate = sample.diurnal_rps(hours)
    local_max = [h for h in range(1, 23) if rate[h] > rate[h - 1] and rate[h] > rate[h + 1]]
    assert local_max == [10, 15]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tcoo": {}}, "unknown section 'tcoo' (did you mean 'tco'?); allowed sections: slo, workload"),
        ({"hardware": {"gpus": ["H100", "H900"]}}, "hardware.gpus[1] = 'H900' is not in data/catalog/gpus.csv"),
        ({"model": {"tiers": {"small": "Llama-9B"}}}, "model.tiers.small: unknown model"),
        ({"report": {"scenarios": {"x": {"gpu": "TPU"}}}}, "report.scenarios.x.gpu = 'TPU' is not in"),
        ({"routing": {"mode": "cascade", "cascade_small_model": "Nope-1B"}}, "routing.cascade_small_model: unknown"),
        ({"workload": {"tiers": {"map": {"a": "b"}, "rules": [{"name": "x"}]}}}, "tiers.map and workload.tiers.rules"),
    ],
)
def test_the_whole_file_is_checked_before_any_stage(change, needle):
    data = {**params.load(ROOT / "params.yaml"), **change}
    with pytest.raises(ParamsError) as err:
        params.validate_all(data, ROOT)
    assert needle in str(err.value)
    # the shipped file alone passes (the error came from `change`), its values kept and every default filled in
    every = params.validate_all(params.load(ROOT / "params.yaml"), ROOT)
    assert every["hardware"]["gpus"] == ["A100-80GB", "L40S", "H100-SXM", "H200", "B200", "MI300X"]
    assert (every["slo"]["ttft_p99_ms"], every["slo"]["itl_p99_ms"]) == (2000, 50)
    assert every["workload"]["sizing_rate"] == "per_minute_p95"
