"""Step 7 readers on the real files in ../shared/fixtures/benchmarks (figures checked against the files' own
values), plus GuideLLM and the layout variants built from those files. Skipped when ../shared is absent."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from pipeline.benchmarks import read_sweep
from pipeline.errors import InputError
from tests.conftest import SHARED

B = SHARED / "benchmarks"
needs_fixtures = pytest.mark.skipif(not B.exists(), reason="../shared/fixtures/benchmarks is absent")
VLLM = B / "vllm_bench_serve_llama3.3-70b_8xa100-40gb_tp8"


def frame(path: Path | list[Path]):
    s = read_sweep(path if isinstance(path, list) else [path])
    return s, s.frame()


def at(df, load):
    rows = df[df["load"] == load]
    assert len(rows) == 1, rows
    return rows.iloc[0]


@needs_fixtures
def test_vllm_per_level_files_with_per_request_arrays():
    s, df = frame(VLLM)
    raw = json.loads((VLLM / "serving_meta-llama-Llama-3.3-70B-Instruct_tp8_pp1_sharegpt_qps_04.json").read_text())
    assert s.tool == "vllm" and len(df) == 4 and set(df["load_kind"]) == {"request_rate"}
    r = at(df, 4.0)
    assert r["ttft_p99_ms"] == raw["p99_ttft_ms"] and r["ttft_p50_ms"] == raw["median_ttft_ms"]
    assert r["itl_p99_ms"] == raw["p99_tpot_ms"] and r["itl_kind"] == "tpot"  # per-request TPOT over chunk ITL
    assert r["rps"] == raw["request_throughput"] and r["completed"] == 200 and r["failed"] == 0
    # E2E was not requested (no e2el keys): it comes from the per-request arrays, ttft + sum(itls), in ms
    e2e = [(t + sum(g)) * 1e3 for t, g in zip(raw["ttfts"], raw["itls"], strict=True)]
    assert r["e2e_mean_ms"] == pytest.approx(sum(e2e) / len(e2e))
    assert r["e2e_source"].startswith("per request")
    inf = df[df["load"] == math.inf].iloc[0]
    assert inf["saturation"]  # request_rate "inf" and no max_concurrency
    assert {f for f, _ in s.skipped} >= {f"{VLLM}/benchmark_results.json"}


@needs_fixtures
def test_vllm_append_result_jsonl_and_old_goodput_key(tmp_path):
    lines = []
    for q in ("01", "04", "16"):
        obj = json.loads(
            (VLLM / f"serving_meta-llama-Llama-3.3-70B-Instruct_tp8_pp1_sharegpt_qps_{q}.json").read_text()
        )
        obj["request_goodput:"] = float(q)
        lines.append(json.dumps(obj))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    _, df = frame(tmp_path / "results.jsonl")
    assert df["load"].tolist() == [1.0, 4.0, 16.0]
    assert df["goodput_rps"].tolist() == [1.0, 4.0, 16.0] and set(df["goodput_source"]) == {"tool (--goodput)"}


@needs_fixtures
def test_sglang_json_lines_bare_infinity_and_median_only_key_set():
    d = B / "sglang_bench_serving_llama3.3-70b_4xh200_tp4"
    s, df = frame(d)
    assert s.tool == "sglang" and len(df) == 14
    online = [json.loads(x) for x in (d / "llama_3_3_70b_online_output.jsonl").read_text().splitlines()]
    curve = df[df["curve"].str.contains("random 1024/1024")]
    r = at(curve, 8.0)
    assert r["ttft_p50_ms"] == online[3]["median_ttft_ms"] and r["ttft_p99_ms"] is None  # never substituted
    assert r["rps"] == pytest.approx(online[3]["completed"] / online[3]["duration"])
    assert r["e2e_mean_ms"] == online[3]["mean_e2e_latency_ms"]
    assert r["nominal_input_tokens"] == 1024 and r["input_tokens_mean"] == pytest.approx(1222995 / 2400)
    offline = df[df["file"].str.endswith("offline_output.jsonl")]
    assert len(offline) == 7 and (offline["load"] == math.inf).all() and offline["saturation"].all()
    assert df["curve"].nunique() == 6  # one per dataset x nominal lengths
    # what the reader had to derive or assume is kept as provenance, once per note
    assert "the file has no failed count or num_prompts: failures are assumed 0 (14 of 14 levels)" in s.notes()


@needs_fixtures
def test_aiperf_records_layout_and_per_request_jsonl():
    d = B / "aiperf_example_gpt-oss-20b"
    s, df = frame(d)
    raw = json.loads((d / "profile_export_aiperf.json").read_text())["records"]
    r = df.iloc[0]
    assert s.tool == "aiperf" and len(df) == 1 and r["load_kind"] == "concurrency" and r["load"] == 100
    assert r["ttft_p99_ms"] == raw["ttft"]["p99"] and r["itl_p99_ms"] == raw["inter_token_latency"]["p99"]
    assert r["itl_kind"] == "tpot"  # inter_token_latency (per request) over inter_chunk_latency
    assert (r["completed"], r["failed"], r["rps"]) == (89, 11, raw["request_throughput"]["avg"])
    req = s.levels[0].requests
    assert len(req) == 100 and int(req["ok"].sum()) == 89
    assert any("CSV twin" in why for _, why in s.skipped)


@needs_fixtures
def test_aiperf_schema_1x_top_level_layout(tmp_path):
    d = B / "aiperf_example_gpt-oss-20b"
    obj = json.loads((d / "profile_export_aiperf.json").read_text())
    records = obj.pop("records")
    records["time_to_first_token"] = records.pop("ttft")
    new = {"schema_version": "1.0", **records, **obj}
    (tmp_path / "profile_export_aiperf.json").write_text(json.dumps(new))
    _, df = frame(tmp_path)
    assert df.iloc[0]["ttft_p99_ms"] == records["time_to_first_token"]["p99"]
    assert df.iloc[0]["e2e_p99_ms"] == records["request_latency"]["p99"]


@needs_fixtures
def test_genai_perf_json_sweep_folders():
    d = B / "genai_perf_llama3-8b_nim"
    s, df = frame(d)
    raw = json.loads((d / "concurrency250" / "profile_export_genai_perf.json").read_text())
    assert s.tool == "genai-perf" and df["load"].tolist() == [1, 2, 5, 10, 50, 100, 250]
    r = at(df, 250.0)
    assert r["ttft_p99_ms"] == raw["time_to_first_token"]["p99"] and r["rps"] == raw["request_throughput"]["avg"]
    assert r["e2e_mean_ms"] == raw["request_latency"]["avg"] and r["nominal_input_tokens"] == 200
    assert len(s.skipped) == 7 and all("CSV twin" in why for _, why in s.skipped)


@needs_fixtures
def test_genai_perf_two_section_csv_with_thousands_separators(tmp_path):
    src = B / "genai_perf_llama3-8b_nim"
    for c in (10, 250):
        (tmp_path / f"concurrency{c}").mkdir()
        shutil.copy(src / f"concurrency{c}" / "profile_export_genai_perf.csv", tmp_path / f"concurrency{c}")
    _s, df = frame(tmp_path)
    r = at(df, 250.0)
    assert r["ttft_p99_ms"] == 3464.45 and r["ttft_mean_ms"] == 2016.96  # "3,464.45" in the file
    assert r["e2e_p50_ms"] == 7243.96 and r["rps"] == 34.46 and r["output_tps"] == 2014.70
    assert at(df, 10.0)["itl_p99_ms"] == 15.82


@needs_fixtures
def test_genai_perf_ns_values_as_strings(tmp_path):
    obj = json.loads((B / "genai_perf_llama3-8b_nim" / "concurrency10" / "profile_export_genai_perf.json").read_text())
    ttft = obj["time_to_first_token"]
    obj["time_to_first_token"] = {"unit": "ns", **{k: str(v * 1e6) for k, v in ttft.items() if k != "unit"}}
    (tmp_path / "concurrency10").mkdir()
    (tmp_path / "concurrency10" / "profile_export_genai_perf.json").write_text(json.dumps(obj))
    _, df = frame(tmp_path)
    assert df.iloc[0]["ttft_p99_ms"] == pytest.approx(ttft["p99"])


@needs_fixtures
def test_llmperf_summaries_seconds_and_string_numbers():
    d = B / "llmperf_summaries"
    s, df = frame(d)
    raw = json.loads((d / "groq_70b.json").read_text())
    r = df[df["file"].str.endswith("groq_70b.json")].iloc[0]
    assert s.tool == "llmperf" and len(df) == 8 and (df["load"] == 5).all()
    assert r["ttft_p99_ms"] == pytest.approx(raw["results_ttft_s_quantiles_p99"] * 1e3)
    assert r["itl_p50_ms"] == pytest.approx(raw["results_inter_token_latency_s_quantiles_p50"] * 1e3)
    assert r["rps"] == pytest.approx(raw["results_num_completed_requests_per_min"] / 60)
    assert r["completed"] == 150 and r["failed"] == 0
    anyscale = next(lv for lv in s.levels if lv.row["file"].endswith("/anyscale_70b.json"))
    assert anyscale.requests is not None and len(anyscale.requests) == 150


@needs_fixtures
def test_inference_perf_lifecycle_stages_in_seconds():
    d = B / "inference_perf_llama3.1-8b_h100_vllm"
    s, df = frame(d)
    raw = json.loads((d / "results" / "stage_2_lifecycle_metrics.json").read_text())
    lat = raw["successes"]["latency"]
    r = at(df, 61.79)
    assert s.tool == "inference-perf" and len(df) == 7 and set(df["load_kind"]) == {"request_rate"}
    assert r["ttft_p99_ms"] == pytest.approx(lat["time_to_first_token"]["p99"] * 1e3)
    assert r["itl_p99_ms"] == pytest.approx(lat["time_per_output_token"]["p99"] * 1e3) and r["itl_kind"] == "tpot"
    assert r["rps"] == raw["successes"]["throughput"]["requests_per_sec"] and r["completed"] == 3707
    why = dict(s.skipped)
    assert "Prometheus" in why[f"{d}/results/stage_2_prometheus_metrics.json"]
    assert "summary" in why[f"{d}/results/summary_lifecycle_metrics.json"]


def test_inference_perf_client_that_fell_behind_says_how_many_it_held_in_flight():
    from pipeline.benchmarks import inference_perf

    def stage(delay_p50_s: float, sent: float, e2e_mean_s: float) -> dict:
        return {
            "load_summary": {"requested_rate": 150.0, "achieved_rate": sent, "schedule_delay": {"median": delay_p50_s}},
            "successes": {"count": 10, "latency": {"request_latency": {"mean": e2e_mean_s}}, "throughput": {}},
            "failures": {"count": 0},
        }

    # behind: a median schedule delay of 3 s against a 4 s mean latency (>= 0.5 x); 100 req/s x 4 s = 400 in flight
    notes = inference_perf.read(stage(3.0, 100.0, 4.0), "s.json").notes
    assert "it held about 400 requests in flight" in " ".join(notes)
    assert "the client sent 100.00 req/s of the 150.00 requested" in notes
    # on schedule (1.9 s < 0.5 x 4 s), or no schedule delay stated (older inference-perf files): no such note
    assert "in flight" not in " ".join(inference_perf.read(stage(1.9, 100.0, 4.0), "s.json").notes)
    old = stage(3.0, 100.0, 4.0)
    del old["load_summary"]["schedule_delay"]
    assert "in flight" not in " ".join(inference_perf.read(old, "s.json").notes)


def _dist(mean, p50, p99):
    return {
        "successful": {
            "mean": mean,
            "median": p50,
            "percentiles": {"p50": p50, "p90": p99 * 0.9, "p95": p99 * 0.95, "p99": p99},
        }
    }


def guidellm_report(layout: str) -> dict:
    """A GuideLLM benchmarks.json with the fields its schema defines (statistics.py, metrics.py)."""
    out = []
    for streams, ttft99, rps in ((2, 120.0, 3.0), (8, 480.0, 9.5)):
        b = {
            "metrics": {
                "time_to_first_token_ms": _dist(ttft99 / 2, ttft99 / 2.5, ttft99),
                "inter_token_latency_ms": _dist(20.0, 19.0, 25.0 + streams),
                "request_latency": _dist(2.5, 2.4, 3.0 + streams / 10),
                "requests_per_second": {"successful": {"mean": rps, "median": rps}},
                "output_tokens_per_second": {"successful": {"mean": rps * 128}},
                "prompt_token_count": {"successful": {"mean": 512.0}},
                "output_token_count": {"successful": {"mean": 128.0}},
            },
            "duration": 60.0,
        }
        strategy = {"type_": "concurrent", "streams": streams}
        totals = {"successful": 100, "errored": 1, "incomplete": 2, "total": 103}
        if layout == "new":
            b["config"] = {"strategy": strategy}
            b["metrics"]["request_totals"] = totals
        else:
            b["args"] = {"strategy": strategy}
            b["run_stats"] = {"requests_made": totals}
        out.append(b)
    out.append(
        {
            "config": {"strategy": {"type_": "throughput"}},
            "metrics": {
                "time_to_first_token_ms": _dist(900, 800, 2000),
                "requests_per_second": {"successful": {"mean": 11.0}},
            },
        }
    )
    return {"benchmarks": out}


@pytest.mark.parametrize("layout", ["new", "old"])
def test_guidellm_whole_sweep_in_one_file(tmp_path, layout):
    (tmp_path / "benchmarks.json").write_text(json.dumps(guidellm_report(layout)))
    s, df = frame(tmp_path)
    assert s.tool == "guidellm" and len(df) == 3
    r = at(df, 8.0)
    assert r["load_kind"] == "concurrency" and r["ttft_p99_ms"] == 480.0 and r["ttft_p50_ms"] == 192.0
    assert r["e2e_p99_ms"] == pytest.approx(3800.0)  # request_latency is seconds
    assert r["itl_p99_ms"] == 33.0 and r["rps"] == 9.5 and r["output_tps"] == 9.5 * 128
    assert (r["completed"], r["failed"]) == (100, 3)
    assert df[df["load"] == math.inf].iloc[0]["saturation"]


def test_unknown_and_mixed_formats_are_clear_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "result.json").write_text(json.dumps({"throughput": 3, "latency": 2}))
    with pytest.raises(
        InputError, match=r"a/result.json: unknown benchmark format \(top-level keys: throughput, latency\)"
    ):
        read_sweep([tmp_path / "a"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "benchmarks.json").write_text(json.dumps(guidellm_report("new")))
    (tmp_path / "b" / "stage_0_lifecycle_metrics.json").write_text(
        json.dumps(
            {
                "load_summary": {"requested_rate": 1},
                "successes": {"count": 1, "latency": {}, "throughput": {"requests_per_sec": 1}},
            }
        )
    )
    with pytest.raises(InputError, match=r"mixed formats in one sweep \(guidellm: .*; inference-perf: "):
        read_sweep([tmp_path / "b"])


def test_manifest_is_checked(tmp_path):
    from pipeline.benchmarks import read_manifest

    p = tmp_path / "manifest.yaml"
    p.write_text(
        "model: Llama-3.1-70B\ngpu: H100-SXM\ngpu_count: 8\ntp: 4\nweight_dtype: fp8\nkv_dtype: fp8\nengine: vllm\nload_mode: closed\n"
    )
    m = read_manifest(p)
    assert m["replicas"] == 2 and m["pp"] == 1 and m["phase"] == "baseline"
    p.write_text(
        "model: x\ngpu: H100-SXM\ngpu_count: 6\ntp: 4\nweight_dtype: fp8\nkv_dtype: fp8\nengine: vllm\nload_mode: closed\n"
    )
    with pytest.raises(InputError, match="gpu_count 6 is not a multiple of TP 4"):
        read_manifest(p)
    p.write_text("model: x\ngpu: H100-SXM\n")
    with pytest.raises(InputError, match="missing gpu_count, tp, weight_dtype, kv_dtype, engine, load_mode"):
        read_manifest(p)
