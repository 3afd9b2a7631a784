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


# A /metrics page as vLLM's prometheus_client writes it, plus what real pages carry: HELP text with escapes,
# a family declared apart from its samples, label values with \" \\ and \n escapes, a ms timestamp, _created
# series, CRLF line ends and a comment of this project's own.
REAL_FORMAT = (
    "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
    "# TYPE vllm:num_requests_running gauge\n"
    'vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0\n'
    "# HELP vllm:request_success_total Count of successfully processed requests.\n"
    "# TYPE vllm:request_success_total counter\n"
    'vllm:request_success_total{finished_reason="stop",model_name="m"} 1234.0\n'
    'vllm:request_success_total{finished_reason="length",model_name="m"} 6\n'
    "# HELP vllm:request_success_created Count of successfully processed requests.\n"
    "# TYPE vllm:request_success_created gauge\n"
    'vllm:request_success_created{finished_reason="stop",model_name="m"} 1.7676e+09\n'
    "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds \\\\ with a \\n newline.\n"
    "# TYPE vllm:e2e_request_latency_seconds histogram\n"
    'vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 10.0\n'
    'vllm:e2e_request_latency_seconds_bucket{le="2.5",model_name="m"} 25.0\n'
    'vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 40.0\n'
    'vllm:e2e_request_latency_seconds_count{model_name="m"} 40.0\n'
    'vllm:e2e_request_latency_seconds_sum{model_name="m"} 61.5\n'
    "\n"
    "# a comment that is neither HELP nor TYPE\n"
    "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
    'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",Hostname="node-0"} 9.5e+06\r\n'
    'DCGM_FI_DEV_GPU_UTIL{gpu="0",path="C:\\\\dir\\\\new",note="say \\"hi\\"\\nbye"} 40 1767607230500\n'
)


def test_a_real_format_exposition_parses_to_the_values_written_by_hand():
    s = pm.parse(REAL_FORMAT, "vllm-x.prom")
    assert s.time_s == 1767607230.5  # the one sample timestamp, 1767607230500 ms
    m = (("model_name", "m"),)
    assert s.samples == {
        (
            "vllm:num_requests_running",
            (("engine", "0"), ("model_name", "meta-llama/Llama-3.1-8B-Instruct")),
        ): 7.0,
        # counters: `_total` dropped, one key per label set
        ("vllm:request_success", (("finished_reason", "stop"), *m)): 1234.0,
        ("vllm:request_success", (("finished_reason", "length"), *m)): 6.0,
        ("vllm:request_success_created", (("finished_reason", "stop"), *m)): 1.7676e9,
        # histogram: each bucket keyed by its le, +Inf included; _count and _sum kept under their suffix
        ("vllm:e2e_request_latency_seconds_bucket", (("le", "1.0"), *m)): 10.0,
        ("vllm:e2e_request_latency_seconds_bucket", (("le", "2.5"), *m)): 25.0,
        ("vllm:e2e_request_latency_seconds_bucket", (("le", "+Inf"), *m)): 40.0,
        ("vllm:e2e_request_latency_seconds_count", m): 40.0,
        ("vllm:e2e_request_latency_seconds_sum", m): 61.5,
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", (("Hostname", "node-0"), ("gpu", "0"))): 9.5e6,
        # \\ is one backslash (so `\\new` is a backslash then "new", not a newline), \" a quote, \n a newline
        ("DCGM_FI_DEV_GPU_UTIL", (("gpu", "0"), ("note", 'say "hi"\nbye'), ("path", "C:\\dir\\new"))): 40.0,
    }
    assert s.types == {
        "vllm:num_requests_running": "gauge",
        "vllm:request_success": "counter",
        "vllm:request_success_created": "gauge",
        "vllm:e2e_request_latency_seconds": "histogram",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "counter",
        "DCGM_FI_DEV_GPU_UTIL": "untyped",
    }
    assert all(type(v) is float for v in s.samples.values())  # `6` and `40` are read as floats, as JSON writes them
    assert not s.synthetic


def test_a_real_format_window_gives_hand_computed_rates_and_percentiles(tmp_path):
    # the page above at t0 + 60 s: 1234 + 6 -> 1300 + 10 finished (+70); buckets 10, 25, 40 -> 12, 40, 60
    later = (
        REAL_FORMAT.replace("} 1234.0", "} 1300.0")
        .replace('"length",model_name="m"} 6', '"length",model_name="m"} 10')
        .replace('le="1.0",model_name="m"} 10.0', 'le="1.0",model_name="m"} 12.0')
        .replace('le="2.5",model_name="m"} 25.0', 'le="2.5",model_name="m"} 40.0')
        .replace('le="+Inf",model_name="m"} 40.0', 'le="+Inf",model_name="m"} 60.0')
        .replace("1767607230500", "1767607290500")
    )
    (tmp_path / "vllm-a.prom").write_text(REAL_FORMAT, newline="")
    (tmp_path / "vllm-b.prom").write_text(later, newline="")
    w = pm.windows(pm.read(sorted(tmp_path.glob("*.prom"))))["vllm"]
    assert w.seconds == 60.0 and w.rate("vllm:request_success") == pytest.approx(70 / 60)
    # bucket increases 2, 15, 20 (cumulative); p50 rank 10 in (1, 2.5]: 1 + 1.5 x (10 - 2) / (15 - 2)
    buckets = w.histogram("vllm:e2e_request_latency_seconds")
    assert buckets == [(1.0, 2.0), (2.5, 15.0), (float("inf"), 20.0)]
    assert pm.quantile(buckets, 0.5)["value"] == pytest.approx(1 + 1.5 * 8 / 13)
    # p90 rank 18 lies in the +Inf bucket: only "above 2.5 s"
    q = pm.quantile(buckets, 0.9)
    assert q["value"] == 2.5 and q["bucket"] == [2.5, None] and q["coarse"] is True


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('vllm:x{model_name="m"} lots', r"line 4: value 'lots' is not a number"),
        ("vllm:x{model_name=m} 1", r'line 4: cannot read the labels \{model_name=m\}; expected name="value"'),
        ('vllm:x{model_name="m" 1', r"line 4: 'vllm:x\{model_name=\"m\" 1' is not a Prometheus sample"),
        ("vllm:x", r"line 4: 'vllm:x' is not a Prometheus sample"),
        ("# TYPE vllm:x", r"line 4: '# TYPE vllm:x' is not a valid TYPE or HELP comment"),
        ("# TYPE vllm:x gaugex", r"line 4: '# TYPE vllm:x gaugex' is not a valid TYPE or HELP comment"),
        ('vllm:x{model_name="m"} NaN', r'line 4: vllm:x\{model_name="m"\} = nan; expected a finite number'),
    ],
)
def test_a_bad_line_amid_good_ones_is_named_by_its_line_number(line, message):
    good = '# HELP vllm:y y\n# TYPE vllm:y gauge\nvllm:y{model_name="m"} 1\n'
    with pytest.raises(InputError, match=r"^vllm-1767607200\.prom, " + message):
        pm.parse(good + line + "\n" + good.replace("vllm:y", "vllm:z"), "vllm-1767607200.prom")
