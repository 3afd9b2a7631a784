"""Prometheus scrapes written by hand (tests/data/prometheus): rates, percentiles, renamed metrics, coarse buckets.

Expected values are worked out by hand from the two scrapes of each window (comments give the arithmetic).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import prometheus as pm
from pipeline.errors import InputError

DATA = Path(__file__).parent / "data" / "prometheus"


def window(folder: str, source: str) -> pm.Window:
    return pm.windows(pm.read(sorted((DATA / folder).glob("*.prom"))))[source]


def test_vllm_v011_counters_become_rates_and_gauges_means():
    w = window("v011", "vllm")
    assert w.seconds == 300  # 1767607200 -> 1767607500 from the file names
    # request_success_total: (5400 - 5000) + (120 - 100) + (0 - 0) = 420 over 300 s
    assert w.increase("vllm:request_success") == 420 and w.rate("vllm:request_success") == pytest.approx(1.4)
    # prefix cache: hits +60,000 of queries +200,000 = 0.30
    assert w.increase("vllm:prefix_cache_hits") / w.increase("vllm:prefix_cache_queries") == pytest.approx(0.3)
    assert w.increase("vllm:num_preemptions") == 3
    assert w.gauge("vllm:kv_cache_usage_perc") == pytest.approx(0.66)  # (0.62 + 0.70) / 2
    assert w.gauge("vllm:num_requests_waiting") == 1.0 and w.gauge("vllm:num_requests_waiting", "max") == 2.0


def test_vllm_histograms_become_percentiles_over_the_window():
    w = window("v011", "vllm")
    ttft = w.histogram("vllm:time_to_first_token_seconds")
    # bucket increases 100, 200, 300, 380, 500, 520, 520 (cumulative); p99 rank 514.8 in (2.5, 5]:
    # 2.5 + 2.5 x (514.8 - 500) / (520 - 500) = 4.35 s
    assert [c for _, c in ttft] == [100, 200, 300, 380, 500, 520, 520]
    q = pm.quantile(ttft, 0.99)
    assert q["value"] == pytest.approx(4.35) and q["coarse"] is False and q["observations"] == 520
    # p50 rank 260 in (0.5, 0.75]: 0.5 + 0.25 x 60 / 100 = 0.65 s
    assert pm.quantile(ttft, 0.5)["value"] == pytest.approx(0.65)
    # ITL: increases 0, 50,000, 99,000, 99,900, 100,000; p99 rank 99,000 -> the top of (0.025, 0.05] = 50 ms
    assert pm.quantile(w.histogram("vllm:inter_token_latency_seconds"), 0.99)["value"] == pytest.approx(0.05)


def test_old_vllm_names_map_to_the_new_ones_and_resets_count_from_zero():
    w = window("v06", "vllm")
    assert w.seconds == 300  # from the `# scraped_at:` lines
    assert w.gauge("vllm:kv_cache_usage_perc") == pytest.approx(0.85)  # gpu_cache_usage_perc 0.8, 0.9
    # 900 -> 30 and 2000 -> 600: the server restarted; the increase is the new value
    assert w.increase("vllm:num_preemptions") == 30 and w.increase("vllm:request_success") == 600
    # time_per_output_token_seconds read as inter_token_latency_seconds
    itl = pm.quantile(w.histogram("vllm:inter_token_latency_seconds"), 0.99)
    # 9,950 of 10,000 tokens in the first bucket (<= 10 ms): p99 cannot be resolved below 10 ms
    assert itl["coarse"] is True and "first bucket" in itl["why"]
    assert itl["value"] == pytest.approx(0.01 * 9900 / 9950)


def test_sglang_names_and_sample_timestamps():
    w = window("v06", "sglang")
    assert w.seconds == 60  # from the samples' ms timestamps
    assert w.gauge("sglang:num_requests_waiting") == 2.0  # num_queue_reqs 1, 3
    assert w.gauge("sglang:kv_cache_usage_perc") == pytest.approx(0.6)  # token_usage 0.5, 0.7
    # all 100 new requests above the highest finite bucket (0.2 s): only a lower bound
    q = pm.quantile(w.histogram("sglang:time_to_first_token_seconds"), 0.99)
    assert q["coarse"] is True and q["value"] == 0.2 and q["bucket"] == [0.2, None]


def test_dcgm_gauges():
    w = window("v011", "dcgm")
    assert w.gauge("DCGM_FI_DEV_GPU_UTIL") == pytest.approx(70.0)  # scrape means 75 and 65
    assert w.gauge("DCGM_FI_DEV_FB_USED") / (w.gauge("DCGM_FI_DEV_FB_USED") + w.gauge("DCGM_FI_DEV_FB_FREE")) == 0.75


def test_a_wide_bucket_is_flagged():
    q = pm.quantile([(0.5, 0), (0.9, 100), (float("inf"), 100)], 0.99)
    assert q["coarse"] is False and q["value"] == pytest.approx(0.5 + 0.4 * 0.99)  # (0.5, 0.9]: 1.8x wide
    q = pm.quantile([(0.5, 0), (1.0, 10), (10.0, 100), (float("inf"), 100)], 0.99)
    assert q["coarse"] is True and "wide bucket (1, 10]" in q["why"] and q["value"] == pytest.approx(1 + 9 * 89 / 90)


def test_buckets_that_shrink_as_le_grows_are_an_error(tmp_path):
    for t, counts in ((1767607200, (5, 10)), (1767607300, (50, 20))):
        (tmp_path / f"vllm-{t}.prom").write_text(
            "# TYPE vllm:e2e_request_latency_seconds histogram\n"
            f'vllm:e2e_request_latency_seconds_bucket{{le="1.0"}} {counts[0]}\n'
            f'vllm:e2e_request_latency_seconds_bucket{{le="+Inf"}} {counts[1]}\n'
        )
    w = pm.windows(pm.read(sorted(tmp_path.glob("*.prom"))))["vllm"]
    with pytest.raises(InputError, match=r"vllm:e2e_request_latency_seconds.*le=\+Inf.*expected cumulative"):
        w.histogram("vllm:e2e_request_latency_seconds")


def test_bad_scrapes_say_what_and_where(tmp_path):
    bad = tmp_path / "vllm-1767607200.prom"
    bad.write_text('vllm:num_requests_waiting{model_name="x"} lots\n')
    with pytest.raises(InputError, match=r"vllm-1767607200\.prom, line 1: value 'lots' is not a number"):
        pm.read([bad])
    undated = tmp_path / "vllm-a.prom"
    undated.write_text("vllm:num_requests_waiting 1\n")
    with pytest.raises(InputError, match="no scrape time"):
        pm.read([undated])
    one = tmp_path / "dcgm-1767607200.prom"
    one.write_text("DCGM_FI_DEV_GPU_UTIL 50\n")
    with pytest.raises(InputError, match="only one 'dcgm' scrape; expected two or more"):
        pm.windows(pm.read([one]))


def test_the_scrape_suite_rejects_impossible_values(tmp_path):
    from pipeline import quality

    for t, util in ((1767607200, 50), (1767607260, 150)):
        (tmp_path / f"dcgm-{t}.prom").write_text(
            "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
            f'DCGM_FI_DEV_GPU_UTIL{{gpu="0"}} {util}\n'
            "# TYPE vllm:num_preemptions_total counter\n"
            "vllm:num_preemptions_total -3\n"
        )
    frame = pm.samples_frame(pm.read(sorted(tmp_path.glob("*.prom"))))
    with pytest.raises(InputError) as err:
        quality.validate_scrapes(frame, "under scrapes")
    text = str(err.value)
    assert "1 of 4 samples lie outside 0..100; expected a utilization in %" in text
    assert 'dcgm-1767607260.prom: DCGM_FI_DEV_GPU_UTIL{gpu="0"} = 150.0' in text
    assert "2 of 4 samples are negative counters or bucket counts" in text
    ok = pm.samples_frame(pm.read(sorted((DATA / "v011").glob("*.prom"))))
    # per vLLM file: 3 gauges + 6 counter series + TTFT 7 buckets, count, sum + ITL 6 buckets, count, sum = 26;
    # per DCGM file 6: two of each = 64
    assert quality.validate_scrapes(ok, "v011").success and len(ok) == 2 * (26 + 6)
