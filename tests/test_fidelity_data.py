"""The fidelity benchmark's data (benchmarks/fidelity/): every manifest and collected file reads with the project's
readers, and one level per source gives the figure benchmarks/fidelity/PROVENANCE.md quotes from the source file.

The fixture-based checks read ../shared/fixtures/benchmarks in place (through a folder of symlinks holding the
manifest, as a sweep folder with its manifest.yaml) and skip when it is absent.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from pipeline import catalog
from pipeline.benchmarks import read_manifest, read_paths
from pipeline.errors import InputError
from tests.conftest import ROOT, SHARED, load_fidelity

FID = ROOT / "benchmarks" / "fidelity"


_load_fidelity = load_fidelity  # tests/conftest.py


fidelity = _load_fidelity()
FIX = SHARED / "benchmarks"
needs_fixtures = pytest.mark.skipif(not FIX.is_dir(), reason="../shared/fixtures/benchmarks is absent")


def sweep_with_manifest(tmp_path: Path, fixture: str):
    """The fixture folder as a sweep folder: symlinks to its files plus benchmarks/fidelity/manifests/<fixture>.yaml."""
    src = FIX / fixture
    dst = tmp_path / fixture
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(p, target)
    shutil.copyfile(FID / "manifests" / f"{fixture}.yaml", dst / "manifest.yaml")
    (sweep,) = read_paths([dst])
    return sweep


def level(sweep, file_part: str, load: float | None = None):
    got = [lv for lv in sweep.levels if file_part in lv.row["file"] and (load is None or lv.row["load"] == load)]
    assert len(got) == 1, [lv.row["file"] for lv in sweep.levels]
    return got[0].row, got[0]


# --------------------------------------------------------------------------------------------- manifests


def test_every_manifest_reads_and_names_a_catalog_model_and_gpu():
    manifests = (
        sorted((FID / "manifests").glob("*.yaml"))
        + sorted((FID / "measured").rglob("manifest.yaml"))
        + sorted((FID / "console").rglob("manifest.yaml"))
    )
    assert len(manifests) == 3 + 16 + 2 + 1
    gpus = catalog.load_gpus()
    for path in manifests:
        m = read_manifest(path)
        model = catalog.load_model(str(m["model"]))
        gpu = catalog.find_gpu(str(m["gpu"]), gpus)
        assert m["gpu_count"] % (m["tp"] * m["pp"]) == 0, path
        assert m["source"] and m["notes"], path
        assert gpu.name == m["gpu"], path
        assert model.total_params > 1e9, path


def test_vendored_model_configs_match_their_model_cards():
    # HF model cards: Llama-2-7b 6.74B, Llama-2-70b 68.98B (70B class), CodeLlama-34b 33.74B parameters.
    expected = {"Llama-2-7B": 6.738, "Llama-2-70B": 68.977, "CodeLlama-34B": 33.744}
    for name, billions in expected.items():
        m = catalog.load_model(f"benchmarks/fidelity/models/{name}.json")
        assert m.total_params / 1e9 == pytest.approx(billions, abs=0.001), name


def test_the_registry_names_existing_sweeps_and_roles():
    reg = fidelity.load_registry()
    roles = {d["name"]: d["role"] for d in reg}
    assert sorted(roles.values()).count("dev") == 7
    assert sorted(roles.values()).count("holdout") == 3
    assert sorted(roles.values()).count("check") == 1
    for d in reg:
        for s in d["sweeps"]:
            for key in ("measured", "levels_csv", "manifest"):
                if key in s:
                    assert (FID / s[key]).exists(), (d["name"], s[key])


@needs_fixtures
def test_every_registry_deployment_loads_as_one_deployment():
    """Each registry entry reads (manifests, project readers, calibrate's deployment sets) into one deployment with
    the levels counted by hand from the files (levels with > 10% failed requests left out)."""
    expected = {
        "a100-40gb-x8_llama-3.3-70b_tp8_vllm": ("Llama-3.1-70B/A100-40GB/tp8-pp1/w-bf16/kv-bf16", 4),
        "a100-80gb_qwen2-7b_tp1_vllm": ("Qwen2.5-7B/A100-80GB/tp1-pp1/w-bf16/kv-bf16", 10),
        "a100-80gb_qwen2-7b_tp1_vllm_small-kv": ("Qwen2.5-7B/A100-80GB/tp1-pp1/w-bf16/kv-bf16", 9),
        "h100_llama-3.1-8b_tp1_vllm": ("Llama-3.1-8B/H100-SXM/tp1-pp1/w-bf16/kv-bf16", 7),
        "h100_llama-2-7b_tp1_vllm": ("Llama-2-7B/H100-SXM/tp1-pp1/w-bf16/kv-bf16", 5),
        "h100-x4_llama-2-70b_tp4_vllm": ("Llama-2-70B/H100-SXM/tp4-pp1/w-bf16/kv-bf16", 5),
        "h100-x2_mixtral-8x7b_tp2_vllm": ("Mixtral-8x7B-v0.1/H100-SXM/tp2-pp1/w-bf16/kv-bf16", 5),
        "h100-x8_llama-3.1-405b-fp8_tp8_vllm": ("Llama-3.1-405B/H100-SXM/tp8-pp1/w-fp8/kv-bf16", 3),
        "h100-x2_codellama-34b_tp2_vllm": ("CodeLlama-34B/H100-SXM/tp2-pp1/w-bf16/kv-bf16", 6),
        "h200-x4_llama-3.3-70b_tp4_sglang": ("Llama-3.1-70B/H200/tp4-pp1/w-bf16/kv-bf16", 14),
        "mi300x-x8_llama-3.1-405b-fp8_tp8_vllm": ("Llama-3.1-405B/MI300X/tp8-pp1/w-fp8/kv-bf16", 3),
    }
    reg = fidelity.load_registry()
    assert sorted(d["name"] for d in reg) == sorted(expected)
    for spec in reg:
        e = fidelity.load_entry(spec, FIX)
        key, n = expected[spec["name"]]
        assert e.ds.deployment.key.startswith(key + "/"), e.ds.deployment.key
        assert len(e.ds.levels) == n, spec["name"]
    small = fidelity.load_entry(next(d for d in reg if d["name"].endswith("small-kv")), FIX)
    assert small.ds.limits.kv_blocks == 93872 // 16 and small.ds.limits.max_num_seqs == 256


# --------------------------------------------------------------------------------------------- fixtures


@needs_fixtures
def test_vllm_a100_fixture_reads_with_its_manifest(tmp_path):
    s = sweep_with_manifest(tmp_path, "vllm_bench_serve_llama3.3-70b_8xa100-40gb_tp8")
    assert s.tool == "vllm" and s.manifest["model"] == "Llama-3.1-70B" and s.manifest["replicas"] == 1
    assert sorted(lv.row["load"] for lv in s.levels) == [1.0, 4.0, 16.0, math.inf]
    assert all(lv.row["load_kind"] == "request_rate" for lv in s.levels)
    assert all(lv.requests is not None for lv in s.levels)  # per-request ttfts / itls
    row, _ = level(s, "qps_01")
    assert row["rps"] == pytest.approx(0.9745666315653629, rel=1e-12)
    assert row["output_tps"] == pytest.approx(208.17717816867716, rel=1e-12)
    assert row["ttft_mean_ms"] == pytest.approx(65.25777634499718, rel=1e-12)
    assert row["ttft_p99_ms"] == pytest.approx(143.80068917976584, rel=1e-12)
    assert row["itl_mean_ms"] == pytest.approx(24.564414268982127, rel=1e-12)  # mean TPOT


@needs_fixtures
def test_sglang_h200_fixture_reads_with_its_manifest(tmp_path):
    s = sweep_with_manifest(tmp_path, "sglang_bench_serving_llama3.3-70b_4xh200_tp4")
    assert s.tool == "sglang" and s.manifest["gpu"] == "H200" and s.manifest["tp"] == 4
    assert len(s.levels) == 14 and len({lv.row["curve"] for lv in s.levels}) == 6
    rate1 = [lv.row for lv in s.levels if lv.row["load"] == 1.0]
    assert len(rate1) == 1
    row = rate1[0]
    assert row["ttft_p50_ms"] == pytest.approx(85.74514742940664, rel=1e-12)
    assert row["itl_p50_ms"] == pytest.approx(13.638956006616354, rel=1e-12)
    assert row["output_tps"] == pytest.approx(537.4142851849319, rel=1e-12)
    assert row["rps"] == pytest.approx(300 / 298.3675805060193, rel=1e-12)
    assert row["ttft_p99_ms"] is None  # the file states medians only


@needs_fixtures
def test_inference_perf_h100_fixture_reads_with_its_manifest(tmp_path):
    s = sweep_with_manifest(tmp_path, "inference_perf_llama3.1-8b_h100_vllm")
    assert s.tool == "inference-perf" and s.manifest["gpu"] == "H100-SXM"
    assert len(s.levels) == 7
    row, _ = level(s, "stage_0_lifecycle")
    assert row["rps"] == pytest.approx(1.017158, rel=1e-5)
    assert row["ttft_mean_ms"] == pytest.approx(31.127, rel=1e-4)
    assert row["ttft_p99_ms"] == pytest.approx(39.697, rel=1e-4)
    assert row["itl_mean_ms"] == pytest.approx(3.4734, rel=1e-4)  # time_per_output_token: chunk gaps
    assert row["e2e_mean_ms"] == pytest.approx(480.482, rel=1e-5)
    assert row["output_tokens_mean"] == pytest.approx(63.15, rel=1e-6)


def test_excluded_fixture_folders_are_documented():
    text = (FID / "PROVENANCE.md").read_text(encoding="utf-8")
    for folder in ("aiperf_example_gpt-oss-20b", "genai_perf_llama3-8b_nim", "llmperf_summaries"):
        assert f"| {folder} |" in text
        assert not (FID / "manifests" / f"{folder}.yaml").exists()


# --------------------------------------------------------------------------------------------- collected


@pytest.mark.parametrize(
    ("folder", "ttft_mean_s", "ttft_p99_s", "e2e_mean_s", "out_tps", "rps"),
    [
        (
            "blis_llama-2-7b_1xh100_tp1",
            0.027109092157625126,
            0.03658436377532784,
            2.057600319076931,
            1675.6234206861652,
            7.9781143930493155,
        ),
        (
            "blis_llama-2-70b_4xh100_tp4",
            0.057389242570255496,
            0.12061513691056464,
            4.678398947471131,
            1955.0501049763452,
            7.944673593430452,
        ),
        (
            "blis_mixtral-8x7b_2xh100_tp2",
            0.06389182570371,
            0.38307668406516676,
            4.795965222046943,
            1948.896529654341,
            7.947880760455628,
        ),
        (
            "blis_codellama-34b_2xh100_tp2",
            0.04601839426992228,
            0.07343629669398076,
            3.694383387553874,
            1991.7041054727842,
            7.952667301317542,
        ),
    ],
)
def test_blis_measurements_read_with_the_project_readers(folder, ttft_mean_s, ttft_p99_s, e2e_mean_s, out_tps, rps):
    sweeps = read_paths([FID / "measured" / folder])
    assert sorted(s.name.rsplit("_", 1)[1] for s in sweeps) == ["codegen", "general", "reasoning", "roleplay"]
    assert all(s.tool == "inference-perf" and s.manifest is not None for s in sweeps)
    assert len({(s.manifest["model"], s.manifest["tp"], s.manifest["gpu"]) for s in sweeps}) == 1
    (general,) = [s for s in sweeps if s.name.endswith("_general")]
    assert sorted(lv.row["load"] for lv in general.levels) == [8.0, 20.0]
    row, _ = level(general, "stage_0")
    assert row["ttft_mean_ms"] == pytest.approx(1e3 * ttft_mean_s, rel=1e-12)
    assert row["ttft_p99_ms"] == pytest.approx(1e3 * ttft_p99_s, rel=1e-12)
    assert row["e2e_mean_ms"] == pytest.approx(1e3 * e2e_mean_s, rel=1e-12)
    assert row["output_tps"] == pytest.approx(out_tps, rel=1e-12)
    assert row["rps"] == pytest.approx(rps, rel=1e-12)


def test_dstack_vllm_results_read_with_the_project_readers():
    h100, mi300x = (
        read_paths([FID / "measured" / f"dstack_llama-3.1-405b-fp8_8x{g}_tp8"])[0] for g in ("h100", "mi300x")
    )
    for s, gpu in ((h100, "H100-SXM"), (mi300x, "MI300X")):
        assert s.tool == "vllm" and s.manifest["gpu"] == gpu and s.manifest["weight_dtype"] == "fp8"
        assert sorted(lv.row["load"] for lv in s.levels) == [16.0, 32.0, 1000.0]
        assert all(lv.row["completed"] == 1000 for lv in s.levels)
    row, _ = level(h100, "16.0qps")
    assert row["rps"] == pytest.approx(9.933701079436696, rel=1e-12)
    assert row["output_tps"] == pytest.approx(1198.8884495761356, rel=1e-12)
    assert row["ttft_mean_ms"] == pytest.approx(1486.3937409630162, rel=1e-12)
    assert row["ttft_p99_ms"] == pytest.approx(9912.536467760054, rel=1e-12)
    assert row["itl_mean_ms"] == pytest.approx(106.53889521346393, rel=1e-12)
    row, _ = level(mi300x, "16.0qps")
    assert row["rps"] == pytest.approx(4.9896177315819115, rel=1e-12)
    assert row["output_tps"] == pytest.approx(612.5953273772376, rel=1e-12)
    assert row["ttft_p99_ms"] == pytest.approx(8997.885863593545, rel=1e-12)
    assert row["itl_mean_ms"] == pytest.approx(1568.677140713734, rel=1e-12)


def test_levels_csv_reads_with_the_quoted_figures():
    rows = fidelity.read_levels_csv(FID / "console" / "dl_qwen2-7b_1xa100-80gb_tp1" / "levels.csv")
    assert len(rows) == 20
    assert sorted({r["gpu_memory_utilization"] for r in rows}) == [0.25, 0.5]
    (r,) = [r for r in rows if r["readme_line"] == 1722]
    assert (r["num_prompts"], r["completed"], r["duration_s"]) == (10, 10, 14.30)
    assert (r["total_input_tokens"], r["total_output_tokens"]) == (10239, 10240)
    assert (r["output_throughput"], r["mean_ttft_ms"], r["median_ttft_ms"], r["p99_ttft_ms"], r["mean_tpot_ms"]) == (
        715.92,
        488.52,
        511.95,
        723.97,
        13.47,
    )
    assert r["kv_cache_tokens"] == 464848


def test_levels_csv_becomes_levels_with_the_logged_kv_capacity():
    csv_path = FID / "console" / "dl_qwen2-7b_1xa100-80gb_tp1" / "levels.csv"
    manifest = FID / "console" / "dl_qwen2-7b_1xa100-80gb_tp1" / "manifest.yaml"
    ds, excluded = fidelity._csv_set(csv_path, manifest, {"gpu_memory_utilization": 0.5})
    assert len(ds.levels) == 10 and excluded == []
    assert ds.limits.kv_blocks == 464848 // 16
    (lv,) = [lv for lv in ds.levels if lv.requests == 10]
    assert lv.load == math.inf and lv.rps == pytest.approx(10 / 14.30)
    assert lv.ttft_s["p99"] == pytest.approx(0.72397) and lv.ttft_stat() == "p99"
    assert lv.input_mean == pytest.approx(1023.9) and lv.output_mean == pytest.approx(1024.0)
    small, excluded = fidelity._csv_set(csv_path, manifest, {"gpu_memory_utilization": 0.25})
    assert len(small.levels) == 9 and small.limits.kv_blocks == 93872 // 16
    assert len(excluded) == 1 and "106 of 1000 requests failed" in excluded[0]


def test_levels_csv_bad_cell_is_one_clear_error(tmp_path):
    src = (FID / "console" / "dl_qwen2-7b_1xa100-80gb_tp1" / "levels.csv").read_text(encoding="utf-8").splitlines()
    cells = src[3].split(",")
    cells[14] = "nan"  # mean_ttft_ms
    bad = tmp_path / "levels.csv"
    bad.write_text("\n".join([src[0], src[1], src[2], ",".join(cells)]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"levels.csv: line 4: column 'mean_ttft_ms' = 'nan'; expected a finite"):
        fidelity.read_levels_csv(bad)


def test_the_scored_itl_of_inference_perf_levels_comes_from_e2e():
    """What the benchmark scores for inference-perf (its time_per_output_token averages streamed-chunk gaps): by
    hand for Mixtral general stage_0, (4.795965222046943 - 0.06389182570371) / (245.20958333333334 - 1) s."""
    from pipeline.sim import calibrate

    (ds,) = calibrate.deployment_sets([FID / "measured" / "blis_mixtral-8x7b_2xh100_tp2"])
    (lv,) = [lv for lv in ds.levels if "mixtral-8x7b_2xh100_tp2_general/stage_0" in lv.name]
    assert lv.itl_s == pytest.approx((4.795965222046943 - 0.06389182570371) / (245.20958333333334 - 1), rel=1e-12)
    assert lv.itl_s / 0.009517080688992752 == pytest.approx(2.036, abs=0.001)  # vs the file's TPOT


def test_a_first_stage_warm_up_tail_is_flagged_from_the_files_percentiles() -> None:
    # Mixtral codegen stage 0 (5 req/s): TTFT p50 53.0 ms, p95 62.8 ms, p99 481.6 ms, max 1,994.2 ms (the file's own
    # figures): p95 < 1.3 x p50 and p99 > 3 x p95. Its stage 1 (p99 68.1 ms) and roleplay stage 0 (p99 85.3 ms, under
    # 3 x 65.3) are not flagged.
    from types import SimpleNamespace

    fid = fidelity
    base = FID / "measured/blis_mixtral-8x7b_2xh100_tp2"

    def lv(path: str) -> SimpleNamespace:
        return SimpleNamespace(name=f"{base / path} (rate 5)")

    got = fid.warmup_tail(lv("mixtral-8x7b_2xh100_tp2_codegen/stage_0_lifecycle_metrics.json"))
    assert got is not None
    assert got["p50"] == pytest.approx(0.0530, abs=1e-4) and got["p95"] == pytest.approx(0.0628, abs=1e-4)
    assert got["p99"] == pytest.approx(0.4816, abs=1e-4) and got["max"] == pytest.approx(1.9942, abs=1e-4)
    assert fid.warmup_tail(lv("mixtral-8x7b_2xh100_tp2_codegen/stage_1_lifecycle_metrics.json")) is None
    assert fid.warmup_tail(lv("mixtral-8x7b_2xh100_tp2_roleplay/stage_0_lifecycle_metrics.json")) is None


def test_a_ttft_below_a_cold_prefill_at_peak_flops_is_flagged():
    """The Qwen2.5-7B A100 console sweep (vLLM's seeded random dataset, prefix caching on): five of its ten levels
    report a TTFT median below what any engine could give a cold prefill of their prompts. Burst 1 is one request
    alone, so its bound is that prompt's prefill iterations at peak FLOPs and bandwidth (StepCost.prefill_s, computed
    apart from the simulator): 50.7 ms against 36.2 ms measured."""
    from pipeline.sim import calibrate as C

    spec = next(d for d in fidelity.load_registry() if d["name"] == "a100-80gb_qwen2-7b_tp1_vllm")
    ds = fidelity.load_entry(spec, FIX).ds
    C.mark_unphysical_ttft(ds)
    bursts = {lv.name.rsplit("burst ", 1)[1].rstrip(")"): lv for lv in ds.levels}
    assert sorted(int(b) for b, lv in bursts.items() if lv.ttft_below_physics) == [1, 20, 30, 200, 500]
    one = bursts["1"]
    bound = ds.cost.with_coeffs(C.Coefficients((0.0, 1.0, 1.0, 1.0, 0.0, 0.0), "roofline", "bound"))
    alone = bound.prefill_s(int(one.input_lens[0]), ds.limits.max_num_batched_tokens)
    assert alone == pytest.approx(0.0507, abs=5e-4) and one.ttft_s["p50"] == pytest.approx(0.0362, abs=1e-4)
    assert "below the 50.7 ms of a cold prefill" in one.notes[-1] and "fitted as measured" in one.notes[-1]
    C.mark_unphysical_ttft(ds)  # recomputed, the note added once
    assert sum("of a cold prefill at peak FLOPs" in n for n in one.notes) == 1
    # fitted unless DROP_UNPHYSICAL_TTFT: then the refinement's residuals leave its TTFT terms out
    pred = {"throughput": 1.0, "tpot_mean": 0.01, "ttft_p50": 0.05, "ttft_p99": 0.05, "itl_gap_mean": 0.01}
    assert len(C._refine_residuals(pred, one)) == len(C._refine_residuals(pred, bursts["10"]))
    try:
        C.DROP_UNPHYSICAL_TTFT = True
        assert len(C._refine_residuals(pred, one)) == len(C._refine_residuals(pred, bursts["10"])) - 2
    finally:
        C.DROP_UNPHYSICAL_TTFT = False


def test_a_closed_loop_is_bounded_by_each_prompt_prefilled_alone():
    """The shipped sample's H100 chat sweep (closed loops of 1200-token prompts): at concurrency 4 the measured TTFT
    median is 69.4 ms, above the 21.6 ms one prompt takes alone at peak FP8 FLOPs, so nothing is flagged. The
    simulator's own closed loop would say 86.5 ms (4 x 21.6: it starts as one burst and equal prompts stay in
    lockstep), which is why a closed loop is bounded by the prompt alone."""
    from pipeline.sim import calibrate as C

    sets = C.deployment_sets([ROOT / "data" / "raw" / "benchmarks"])
    h100 = next(ds for ds in sets if ds.deployment.gpu == "H100-SXM")
    C.mark_unphysical_ttft(h100)
    assert not any(lv.ttft_below_physics for ds in sets for lv in ds.levels)
    bound = h100.cost.with_coeffs(C.Coefficients((0.0, 1.0, 1.0, 1.0, 0.0, 0.0), "roofline", "bound"))
    c4 = next(lv for lv in h100.levels if lv.load_kind == "concurrency" and lv.load == 4 and "chat" in lv.name)
    alone = bound.prefill_s(1200, h100.limits.max_num_batched_tokens)
    assert alone == pytest.approx(0.0216, abs=2e-4) and c4.ttft_s["p50"] == pytest.approx(0.0694, abs=1e-4)
    lockstep = C.predict_level(bound, h100.limits, c4, 0.0)["ttft_p50"]
    assert lockstep == pytest.approx(4 * alone, rel=0.01)
