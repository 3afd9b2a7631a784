"""Steps 2 and 4-6: catalogs, memory floor, quantization rules, parallelism and the roofline, against hand arithmetic."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys

import pytest

from pipeline import candidates, catalog, memory, parallelism, params, quality, quantization, roofline
from pipeline.errors import InputError, ParamsError
from tests.conftest import METRICS_FIXTURE, ROOT, catalog_model

SHARED_REF = ROOT.parent / "shared" / "reference"
GPUS = catalog.load_gpus(ROOT)


def model(name: str) -> catalog.Model:
    return catalog.load_model(name, ROOT)


def default_sections(**overrides: dict) -> dict:
    data = params.load(ROOT / "params.yaml")
    out = {n: params.validate_section(n, data.get(n)) for n in candidates.SECTIONS}
    for name, values in overrides.items():
        out[name] = params.validate_section(name, {**out[name], **values})
    return out


# --------------------------------------------------------------------------- the guide's worked example


def test_worked_example_bf16_287_gb_4_h100s_6_with_headroom():
    # 70B x 2 B = 140; 0.26 MB x 8,000 tokens x 50 = 104; 20% of 140 = 28; 15 fixed.
    f = memory.memory_floor(70e9, "bf16", 0.26e6 * 8000, 50, 80, overhead_gb=15, headroom=0.5)
    assert (f.weights_gb, f.kv_gb, f.activations_gb, f.overhead_gb) == pytest.approx((140, 104, 28, 15))
    assert f.total_gb == pytest.approx(287)
    assert f.min_gpus == 4  # ceil(287 / 80)
    assert f.gpus_with_headroom == 6  # ceil(287 x 1.5 / 80) = ceil(5.38)


def test_worked_example_fp8_165_gb():
    f = memory.memory_floor(70e9, "fp8", 0.13e6 * 8000, 50, 80, overhead_gb=15)
    assert (f.weights_gb, f.kv_gb, f.activations_gb) == pytest.approx((70, 52, 28))  # activations stay 20% of 16-bit
    assert f.total_gb == pytest.approx(165)
    assert f.min_gpus == 3


def test_overhead_as_a_share_of_each_gpu():
    # 100 GB of weights+KV+activations on 80 GB GPUs with 10% overhead: usable 72 -> 2 GPUs, overhead 16 GB.
    f = memory.memory_floor(25e9, "bf16", 1e9, 40, 80, activation_frac=0.2, overhead_frac=0.1, headroom=0.3)
    assert f.weights_gb + f.kv_gb + f.activations_gb == pytest.approx(50 + 40 + 10)
    assert f.min_gpus == 2 and f.overhead_gb == pytest.approx(16)
    assert f.gpus_with_headroom == 2  # ceil(130 / 72)


# --------------------------------------------------------------------------- KV per token


@pytest.mark.parametrize(
    ("name", "kv", "expected"),
    [
        ("Llama-3.1-70B", "bf16", 2 * 80 * 8 * 128 * 2),  # 327,680
        ("Llama-3.1-70B", "fp8", 2 * 80 * 8 * 128),
        ("Llama-3.1-8B", "bf16", 2 * 32 * 8 * 128 * 2),
        ("Mixtral-8x7B-v0.1", "bf16", 2 * 32 * 8 * 128 * 2),
        ("Qwen3-235B-A22B", "bf16", 2 * 94 * 4 * 128 * 2),
        ("DeepSeek-V3", "bf16", 61 * (512 + 64) * 2),  # 70,272: MLA latent
    ],
)
def test_kv_bytes_per_token(name, kv, expected):
    assert memory.kv_shape(model(name), kv).all_layers_bytes_per_token == expected


def test_the_guides_figures_are_what_the_issue_states():
    assert memory.kv_shape(model("Llama-3.1-70B"), "bf16").all_layers_bytes_per_token == 327_680
    assert memory.kv_shape(model("DeepSeek-V3"), "bf16").all_layers_bytes_per_token == 70_272


def test_sliding_window_layers_stop_growing_at_the_window():
    m = model("gpt-oss-120b")  # 18 full + 18 sliding-128 layers, 8 KV heads x 64
    per_layer = 2 * 8 * 64 * 2
    shape = memory.kv_shape(m, "bf16")
    assert shape.growing_bytes_per_token == 18 * per_layer == 36_864
    assert shape.bytes_per_sequence(100) == 36 * per_layer * 100  # below the window every layer grows
    assert shape.bytes_per_sequence(100_000) == 18 * per_layer * 100_000 + 18 * per_layer * 128
    g3 = memory.kv_shape(model("Gemma-3-27B"), "bf16")  # 10 global + 52 local-1024, 16 KV heads x 128
    assert g3.growing_bytes_per_token == 10 * 2 * 16 * 128 * 2 == 81_920
    assert g3.bytes_per_sequence(32_768) - 81_920 * 32_768 == 52 * 2 * 16 * 128 * 2 * 1024 == 436_207_616
    g2 = model("Gemma-2-9B")  # even layers local (HF: is_sliding = not layer_idx % 2)
    assert g2.layer_kinds[:4] == ("sliding", "full", "sliding", "full")


def test_kv_per_gpu_splits_heads_but_not_the_mla_latent():
    llama = model("Llama-3.1-70B")
    assert memory.kv_shape(llama, "bf16", tp=4).all_layers_bytes_per_token == 327_680 / 4
    assert memory.kv_shape(llama, "bf16", tp=16).all_layers_bytes_per_token == 327_680 / 8  # 1 head per GPU, replicated
    assert memory.kv_shape(model("DeepSeek-V3"), "bf16", tp=8).all_layers_bytes_per_token == 70_272


# --------------------------------------------------------------------------- catalogs


def test_parameter_counts_within_one_percent_of_the_model_cards():
    cards = catalog.load_model_cards(ROOT)
    assert len(cards) >= 14
    for name, card in cards.items():
        m = catalog.read_config(ROOT / "data" / "catalog" / card.config, name)
        assert abs(m.total_params / 1e9 / card.stated_total_params_b - 1) < 0.01, name
        if card.stated_active_params_b:
            active = m.active_params - (m.params.embedding if card.active_excludes_input_embedding else 0)
            # DeepSeek-V3's card rounds 37.55B to "37B" (1.5%); every other active count lands within 1%.
            tolerance = 0.02 if name == "DeepSeek-V3" else 0.01
            assert abs(active / 1e9 / card.stated_active_params_b - 1) < tolerance, name


def test_llama_8b_count_is_exact():
    # HF lists Llama-3.1-8B at 8,030,261,248 parameters.
    assert model("Llama-3.1-8B").total_params == 8_030_261_248


@pytest.mark.skipif(not (SHARED_REF / "models.csv").exists(), reason="../shared/reference absent")
def test_counts_and_kv_agree_with_the_reference_table():
    rows = {r["hf_repo"]: r for r in csv.DictReader((SHARED_REF / "models.csv").open())}
    for name, card in catalog.load_model_cards(ROOT).items():
        ref = rows[card.hf_repo]
        m = model(name)
        assert m.total_params / 1e9 == pytest.approx(float(ref["computed_total_params_B"]), abs=0.001), name
        assert m.active_params / 1e9 == pytest.approx(float(ref["computed_active_params_B"]), abs=0.001), name
        shape = memory.kv_shape(m, "bf16")
        assert shape.growing_bytes_per_token == float(ref["kv_bytes_per_token_bf16_growing"]), name
        cap = shape.sliding_bytes_per_token * (shape.window or 0)
        assert cap == float(ref["kv_sliding_cap_bytes_per_seq_bf16"]), name


def test_gpu_catalog_has_the_required_parts_with_dense_figures():
    for name in ("A100-40GB", "A100-80GB", "L4", "L40S", "H100-SXM", "H100-PCIe", "H200", "B200", "MI300X", "MI325X"):
        assert name in GPUS
    h100 = GPUS["H100-SXM"]
    assert h100.peak("bf16") == pytest.approx(989.4e12)  # 1,979 sparse / 2
    assert h100.ridge_flops_per_byte("bf16") == pytest.approx(989.4 / 3.35)
    assert catalog.find_gpu("h100 sxm5 80gb", GPUS).name == "H100-SXM"
    assert "fp8" not in GPUS["A100-80GB"].hw_formats and "fp4" in GPUS["B200"].hw_formats


def test_catalog_suite_passes_on_the_shipped_catalog():
    assert quality.validate_catalog(ROOT / "data" / "catalog" / "gpus.csv").success


def test_bad_catalog_names_the_file_the_column_and_the_rows(tmp_path):
    rows = list(csv.DictReader((ROOT / "data" / "catalog" / "gpus.csv").open()))
    rows[1]["memory_bw_tbs"] = "fast"
    rows[2]["source"] = ""
    rows[3]["gpu"] = rows[4]["gpu"]
    bad = tmp_path / "gpus.csv"
    with bad.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(InputError) as err:
        quality.validate_catalog(bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "column 'memory_bw_tbs': 1 of 14 rows are not plain numbers" in msg and "A100-80GB: 'fast'" in msg
    assert "column 'source'" in msg and "column 'gpu'" in msg and "No outputs were written" in msg


def test_config_missing_a_field_names_it(tmp_path):
    cfg = json.loads((ROOT / "data" / "catalog" / "models" / "Llama-3.1-8B.json").read_text())
    del cfg["hidden_size"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"config.json has no field 'hidden_size'"):
        catalog.read_config(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        catalog.read_config(path)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(InputError, match=r"unknown GPU 'H300'; valid names: A100-40GB, .*MI300X"):
        catalog.find_gpu("H300", GPUS)
    with pytest.raises(InputError, match=r"unknown model 'Llama-9'; valid names: .*Llama-3.1-70B"):
        catalog.load_model("Llama-9", ROOT)


def test_unknown_gpu_in_params_names_the_key():
    sections = default_sections(hardware={"gpus": ["H100-SXM", "H300"]})
    profile = json.loads((METRICS_FIXTURE / "workload.json").read_text())
    with pytest.raises(ParamsError, match=r"hardware.gpus\[1\] = 'H300' .*allowed values: A100-40GB"):
        candidates.plan(profile, sections, GPUS, catalog_model)
    with pytest.raises(ParamsError, match=r"quantization.weights\[0\] = 'fp7'; allowed values: fp32"):
        candidates.plan(profile, default_sections(quantization={"weights": ["fp7"]}), GPUS, catalog_model)


# --------------------------------------------------------------------------- quantization and parallelism rules


def test_precision_hardware_rules():
    a100, h100, b200, l40s, mi = (GPUS[n] for n in ("A100-80GB", "H100-SXM", "B200", "L40S", "MI300X"))
    no = quantization.check(a100, "fp8", "bf16")
    assert not no.allowed and "INT8" in no.reasons[0]
    assert quantization.check(a100, "int8", "bf16").allowed
    assert quantization.check(l40s, "fp8", "fp8").allowed  # Ada has FP8
    assert quantization.check(mi, "fp8", "fp8").allowed
    assert not quantization.check(h100, "fp4", "bf16").allowed
    assert quantization.check(b200, "fp4", "fp8").compute == "fp4"
    kv8 = quantization.check(a100, "bf16", "fp8")
    assert kv8.allowed and "upcast" in kv8.reasons[0]
    assert quantization.check(h100, "int4", "bf16").compute == "bf16"  # weight-only: 16-bit compute


def test_tp_must_divide_heads_and_kv_heads():
    assert parallelism.valid_tps(model("Llama-3.1-70B"), 8) == [1, 2, 4, 8]
    assert parallelism.valid_tps(model("Qwen2.5-7B"), 8) == [1, 2, 4]  # 28 heads
    odd = catalog.parse_config(
        {
            "num_hidden_layers": 2,
            "hidden_size": 5120,
            "num_attention_heads": 40,
            "num_key_value_heads": 10,
            "vocab_size": 100,
            "intermediate_size": 64,
        },
        "phi-like",
    )
    assert parallelism.valid_tps(odd, 8) == [1, 2]  # 4 divides 40 heads but not 10 KV heads
    assert "10 KV heads" in parallelism.tp_problem(odd, 4)


def test_pcie_tp_above_two_is_flagged_with_the_guides_overhead():
    share, text = parallelism.allreduce_overhead(GPUS["L40S"], 4)
    assert share == 0.25 and "PCIe" in text
    assert parallelism.allreduce_overhead(GPUS["H100-SXM"], 8)[0] == 0.09
    assert parallelism.allreduce_overhead(GPUS["H100-PCIe"], 4)[0] == 0.25  # NVLink bridges join pairs only


def test_lora_adapter_bytes_by_hand():
    # Llama-3.1-8B, rank 16, q/k/v/o: (4096+4096) + 2 x (4096+1024) + (4096+4096) = 26,624 per layer.
    assert (
        memory.lora_adapter_bytes(model("Llama-3.1-8B"), 16, ["q_proj", "k_proj", "v_proj", "o_proj"])
        == 16 * 26_624 * 32 * 2
    )


def test_moe_weights_quantize_experts_and_keep_embeddings_16_bit():
    mix = model("Mixtral-8x7B-v0.1")
    p = mix.params
    assert memory.engine_weight_bytes(mix, "bf16") == mix.total_params * 2
    fp8 = memory.engine_weight_bytes(mix, "fp8")
    assert fp8 == p.linear * 1 + (p.embedding + p.lm_head + p.norms + p.router) * 2
    # By hand: 46,702,792,704 params; 16-bit parts = 2 x 32,000 x 4,096 (embed, lm_head) + 32 x 2 x 4,096 + 4,096 (norms)
    # + 32 x 4,096 x 8 (router) = 263,458,816 params, which cost one extra byte each.
    assert mix.total_params == 46_702_792_704
    assert fp8 == 46_702_792_704 + 263_458_816
    # EP 8: routed experts split 8 ways, everything else over TP 8.
    assert memory.engine_weight_bytes(mix, "bf16", tp=8, ep=8) == pytest.approx(mix.total_params * 2 / 8, rel=1e-3)


def test_deepseek_needs_two_nodes_of_h100_but_one_of_h200():
    sections = default_sections()
    settings = candidates.Settings.from_params(sections)
    t = candidates.Target("all", 16, 4096, 3000, 500, "chat", "test")
    ds = model("DeepSeek-V3")
    h200 = candidates.evaluate(ds, GPUS["H200"], "fp8", "bf16", t, settings).entry
    assert h200["fits"] and (h200["tp"], h200["pp"], h200["ep"]) == (8, 1, 8)
    h100 = candidates.evaluate(ds, GPUS["H100-SXM"], "fp8", "bf16", t, settings).entry
    assert h100["fits"] and (h100["tp"], h100["pp"]) == (8, 2)
    assert any("PP 2 across 2 nodes" in r for r in h100["reasons"])


def test_a_candidate_that_cannot_fit_says_why():
    sections = default_sections(parallelism={"max_tp": 1})
    settings = candidates.Settings.from_params(sections)
    t = candidates.Target("all", 8, 4096, 3000, 500, "chat", "test")
    e = candidates.evaluate(model("DeepSeek-V3"), GPUS["L4"], "bf16", "bf16", t, settings).entry
    assert not e["fits"] and e["tp"] is None
    assert "does not fit: even TP 1 x PP 16 on L4" in e["reasons"][-1]


# --------------------------------------------------------------------------- engine profile


def test_engine_profile_matches_vllms_published_memory_log():
    # vllm-project/vllm#10511: Llama-3-8B, H100 (79.22 GiB), util 0.90 -> weights 14.96, KV 53.29 GiB.
    # That log is vLLM's V0 engine (no allocator slack counted, CUDA graphs outside the budget).
    settings = memory.EngineSettings(engine="v0", cuda_graph_in_budget=False)
    prof = memory.engine_profile(
        model("Llama-3.1-8B"), GPUS["H100-SXM"], "bf16", "bf16", 1, 1, 1, 32_768, settings, total_memory_gib=79.22
    )
    assert prof.weights_gib == pytest.approx(8_030_261_248 * 2 / 2**30)
    assert abs(prof.weights_gib / 14.96 - 1) < 0.005
    assert abs(prof.kv_cache_gib / 53.29 - 1) < 0.02
    # By hand: activations = 8,192 tokens x (4 x 4,096 + 48 x 128 + 3 x 14,336) x 2 B + 256 x 128,256 x 8 B.
    assert memory.activation_peak_bytes(model("Llama-3.1-8B"), settings) == 1_336_410_112
    assert prof.kv_cache_gib == pytest.approx(79.22 * 0.9 - 16_060_522_496 / 2**30 - 1_336_410_112 / 2**30 - 1.8)
    # tokens = whole 16-token blocks of 131,072 B: by hand from the KV budget.
    assert prof.kv_cache_tokens == int(prof.kv_cache_gib * 2**30 // (131_072 * 16)) * 16
    assert prof.max_concurrency_per_replica == int(prof.kv_cache_gib * 2**30 // (131_072 * 32_768))


def test_accuracy_rows_stay_within_two_percent():
    from pipeline import memory_views

    table = memory_views.accuracy_table(ROOT)
    assert len(table) >= 8
    key = table[
        table["component"].isin(["weights_gib", "kv_cache_gib"]) | table["component"].str.startswith("kv_cache_tokens")
    ]
    assert (key["error_pct"].abs() < 2).all(), key


# --------------------------------------------------------------------------- roofline


def test_decode_step_and_prefill_by_hand():
    m = model("Llama-3.1-8B")
    rf = roofline.Roofline(
        m, GPUS["H100-SXM"], "bf16", "bf16", "bf16", 1, 1, 1, 0.0, roofline.Efficiency(0.8, 0.45, 0.30)
    )
    n = 8_030_261_248
    # Decode, batch 1 at 1,000 tokens: bandwidth-bound. Bytes = weights + KV of one sequence.
    bytes_ = n * 2 + 131_072 * 1000
    assert rf.decode_step_s(1, 1000) == pytest.approx(bytes_ / (3.35e12 * 0.8))
    # Batch 64: still bandwidth-bound (64 x 2n FLOPs / 296.8 TFLOPS << bytes / 2.68 TB/s).
    bytes64 = n * 2 + 64 * 131_072 * 1000
    assert rf.decode_step_s(64, 1000) == pytest.approx(bytes64 / (3.35e12 * 0.8))
    # Prefill 2,000 tokens: compute-bound; 2 N S + 4 x S x (32 x 128) x 32 layers x S/2 attention.
    flops = 2 * n * 2000 + 4 * 2000 * 4096 * 32 * 1000
    assert rf.prefill_s(2000) == pytest.approx(flops / (989.4e12 * 0.45))
    assert rf.ridge == pytest.approx(989.4e12 / 3.35e12)


def test_tp_allreduce_scales_the_step():
    m = model("Llama-3.1-70B")
    base = roofline.Roofline(m, GPUS["L40S"], "fp8", "fp8", "fp8", 4, 1, 1, 0.0, roofline.Efficiency())
    pcie = roofline.Roofline(m, GPUS["L40S"], "fp8", "fp8", "fp8", 4, 1, 1, 0.25, roofline.Efficiency())
    assert pcie.decode_step_s(8, 2000) == pytest.approx(base.decode_step_s(8, 2000) * 1.25)


# --------------------------------------------------------------------------- the plan and the CLI


def test_plan_on_the_sample_profile():
    profile = json.loads((METRICS_FIXTURE / "workload.json").read_text())
    result = candidates.plan(profile, default_sections(), GPUS, catalog_model)
    metrics = result.metrics()
    assert set(metrics["recommended"]) == {"all", *profile["tiers"]}
    keys = {
        "weights_gb",
        "kv_gb",
        "activations_gb",
        "overhead_gb",
        "lora_gb",
        "total_gb",
        "min_gpus",
        "gpus_with_headroom",
        "tp",
        "pp",
        "ep",
        "max_concurrency_per_replica",
        "kv_bytes_per_token",
        "predicted_ttft_ms",
        "predicted_itl_ms",
        "fits",
        "meets_slo",
        "reasons",
    }
    for cid, entry in metrics["candidates"].items():
        assert keys <= set(entry), cid
    assert all("A100" in k and "w-fp8" in k for k in metrics["rejected"])
    rec = metrics["candidates"][metrics["recommended"]["all"]]
    assert rec["fits"] and rec["meets_slo"]
    conc = profile["concurrency_littles_law"]["p95"]
    assert rec["replicas_for_p95_concurrency"] == math.ceil(conc / rec["max_concurrency_per_replica"])
    h100 = metrics["candidates"]["all/H100-SXM/w-bf16/kv-bf16"]
    ctx = profile["context_tokens"]["p95"]
    assert h100["kv_gb"] == pytest.approx(327_680 * ctx * conc / 1e9, abs=1e-3)


def test_cli_memory_json_is_the_candidate_entry():
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        "memory",
        "--model",
        "Llama-3.1-70B",
        "--gpu",
        "H100",
        "--weights",
        "fp8",
        "--kv",
        "fp8",
        "--concurrency",
        "50",
        "--context-tokens",
        "8000",
        "--json",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    assert out["id"] == "Llama-3.1-70B/H100-SXM/w-fp8/kv-fp8"
    assert out["kv_gb"] == pytest.approx(327_680 / 2 * 8000 * 50 / 1e9)
    assert out["weights_gb"] == pytest.approx(model("Llama-3.1-70B").total_params / 1e9)
    assert out["tp"] in (4, 8) and out["fits"]
    forced = subprocess.run([*cmd[:-1], "--tp", "2", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(forced.stdout)["tp"] == 2
    bad = subprocess.run([*cmd[:7], "H300", *cmd[8:]], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown GPU 'H300'; valid names" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_takes_a_config_path(tmp_path):
    src = ROOT / "data" / "catalog" / "models" / "Qwen2.5-7B.json"
    folder = tmp_path / "my-model"
    folder.mkdir()
    shutil.copy(src, folder / "config.json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "memory",
            "--model",
            str(folder),
            "--gpu",
            "L4",
            "--concurrency",
            "4",
            "--context-tokens",
            "2000",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out["model"] == "my-model" and out["kv_bytes_per_token"] == 2 * 28 * 4 * 128 * 2
