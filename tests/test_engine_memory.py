"""Issue 13 item 4: the vLLM engine profile against public start-up logs, its refusal to start, and `sizing memory
--max-model-len`. Logged figures come from tests/data/vllm_startup_logs (PROVENANCE.md quotes each line)."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest
from forkrun import run_module

from pipeline import catalog, memory, memory_views
from tests.conftest import ROOT

GPUS = catalog.load_gpus(ROOT)
GIB = 2**30
LOGS = {m["log_id"]: m for m in memory_views.load_startup_logs(ROOT / memory_views.STARTUP_LOGS)}
# Held-out figures the model misses, with why (benchmarks/engine_memory.py prints them). They are not asserted
# against the targets; every other logged figure is.
KNOWN_MISSES = {
    # util not stated in the row we have (0.9 assumed): predicted KV +26.5%.
    ("pr17122-llama31-8b-l40s-tp1", "kv_cache_tokens"),
    # LMCache connector running, 4 ranks (the logged rank is not the one with the fewest blocks): +2.7% GiB, +3.9%
    # tokens (the GiB is inside the target).
    ("issue21348-qwen3-235b-fp8-h100-tp4", "kv_cache_tokens"),
    # vLLM 0.11 (Triton MXFP4) with 1,024 batched tokens at util 0.95: 1.23 GiB predicted against 1.71 (-28%); the
    # refusal agrees (4.54 GiB needed). The llm-d row of the same model, GPU and release disagrees the other way.
    ("issue27508-gptoss120b-h100-util095", "kv_cache_gib"),
    # The published figures of this row do not add up (64.38 weights + 7.38 activation + 0.13 non-torch + 3.33 KV =
    # 75.22 GiB > the 71.26 GiB budget; its activation/non-torch look copied from gpt-oss-20b), while the profile,
    # with the 7.5 GiB sampler peak the other H100 rows show, leaves none: predicted -2.8 GiB and a refusal.
    ("llmd-gptoss120b-h100-v0110", "kv_cache_gib"),
    ("llmd-gptoss120b-h100-v0110", "fits"),
    # A refusal with -1.44 GiB logged: the profile says -1.35 GiB (0.09 GiB off, 6.6% of a small negative figure);
    # the refusal itself agrees.
    ("llmd-llama33-70b-fp8-h100-tp1-v0110", "kv_cache_gib"),
    # In-sample, but the two MoE fit rows disagree on the allocator slack (this one wants none, the gpt-oss-20b A100
    # one 6% of its experts); their mean leaves this row 2.0 GiB low (-4.12 against -2.14 GiB); it still refuses.
    ("issue23278-gptoss120b-h100-v0101", "kv_cache_gib"),
    # TP 2 over two nodes (Ray, inter-node NCCL, PyTorch-native sampler because FlashInfer is missing there): 0.9 GiB
    # more outside torch than the same pair in one node (the fit row), so predicted KV is +8.3%.
    ("dennislee22-qwen2-7b-a100-40gb-tp2-2nodes", "kv_cache_tokens"),
    ("dennislee22-qwen2-7b-a100-40gb-tp2-2nodes", "kv_cache_gib"),
}
# The CUDA-graph figure is a prior (the mean of the fit rows' captured graphs), not a fitted model: it is checked
# against its own definition in test_the_calibration_constants_are_the_fit_of_the_fit_rows and reported per log by
# benchmarks/engine_memory.py (held out: +15%, -42%, -69%), not held to the 3% target.
PRIOR_ONLY = {"cuda_graph_gib"}
TARGET_PCT = {
    "weights_gib": 1.0,
    "kv_cache_tokens": 3.0,
    "kv_cache_gib": 3.0,
    "kv_cache_tokens (from the logged KV GiB)": 3.0,
    "kv_needed_gib": 1.0,
}


def model(name: str) -> catalog.Model:
    return catalog.load_model(name, ROOT)


def compare(log_id: str) -> dict[str, dict]:
    m = LOGS[log_id]
    rows = memory.compare_to_measurement(
        m, model(m["model"]), catalog.find_gpu(m["gpu"], GPUS), memory.EngineSettings()
    )
    return {r["component"]: r for r in rows}


def test_the_fixtures_are_real_logs_with_links():
    assert len(LOGS) >= 16
    for m in LOGS.values():
        assert m["source"].startswith("https://"), m["log_id"]
        assert m["gpu"] in GPUS and model(m["model"])
        assert m["log_id"] in (ROOT / "tests/data/vllm_startup_logs/PROVENANCE.md").read_text(encoding="utf-8")
    # The logged numbers themselves, as quoted in PROVENANCE.md.
    assert LOGS["issue23278-gptoss120b-h100-v0101"]["logged_weights_gib"] == 65.9651
    assert LOGS["issue27508-gptoss120b-h100-util095"]["logged_available_kv_gib"] == 1.71
    assert LOGS["ilseokoh-llama31-8b-a100-40gb-v0151"]["logged_kv_tokens"] == 157_936
    assert LOGS["dennislee22-gptoss120b-a100-80gb-tp4"]["logged_kv_tokens"] == 2_640_144
    assert LOGS["dennislee22-qwen2-7b-a100-80gb-tp2"]["logged_cuda_graph_gib"] == 0.65
    # Every figure that misses its target is listed with its reason, and every listed one is a real row's figure;
    # only one is in-sample (the fit cannot serve two MoE rows that disagree).
    for log_id, name in KNOWN_MISSES:
        assert name in compare(log_id), (log_id, name)
    assert [k for k in KNOWN_MISSES if LOGS[k[0]]["role"] == "fit"] == [
        ("issue23278-gptoss120b-h100-v0101", "kv_cache_gib")
    ]


@pytest.mark.parametrize("log_id", sorted(LOGS))
def test_each_log_is_reproduced_within_target(log_id):
    rows = compare(log_id)
    checks = set(LOGS[log_id]["checks"].split(";"))
    assert rows, log_id
    for name, r in rows.items():
        if name == "fits":
            assert r["agrees"] or (log_id, name) in KNOWN_MISSES, (log_id, r)
            continue
        if name in PRIOR_ONLY:
            continue
        if (log_id, name) in KNOWN_MISSES:
            # A listed miss must still miss (else the list goes stale and hides nothing).
            assert abs(r["error_pct"]) > TARGET_PCT[name], (log_id, name, r["error_pct"])
            continue
        assert abs(r["error_pct"]) <= TARGET_PCT[name], (log_id, name, r["predicted"], r["measured"])
    if "fits" in checks and LOGS[log_id]["outcome"] in ("started", "refused"):
        assert "fits" in rows


def test_the_gpt_oss_120b_refusal_on_one_h100():
    # vllm-project/vllm#27508: util 0.95, 1,024 batched tokens, max_model_len 131,072 -> vLLM refuses:
    # "(4.54 GiB KV cache is needed, which is larger than the available KV cache memory (1.71 GiB)".
    m = model("gpt-oss-120b")
    s = replace(
        memory.EngineSettings(),
        gpu_memory_utilization=0.95,
        max_num_batched_tokens=1024,
        max_num_seqs=1024,
        max_model_len=131_072,
        cuda_graph_in_budget=False,
    )
    prof = memory.engine_profile(m, GPUS["H100-SXM"], "mxfp4", "bf16", 1, 1, 1, 8000, s)
    # By hand: 18 full layers x 131,072 tokens x 2,048 B (2 x 8 KV heads x 64 x 2 B) plus 18 sliding layers x
    # (ceil((128 - 1 + 1,024) / 16) + 1) = 73 blocks x 16 tokens x 2,048 B.
    assert prof.kv_needed_gib * GIB == 18 * 131_072 * 2048 + 18 * 73 * 16 * 2048 == 4_874_895_360
    assert round(prof.kv_needed_gib, 2) == 4.54
    assert 0 < prof.kv_cache_gib < prof.kv_needed_gib
    assert not prof.fits and prof.refusal == "max_model_len" and prof.max_concurrency_per_replica == 0
    # vLLM's own estimate of the longest max_model_len that fits is what the binary search returns.
    assert 0 < prof.estimated_max_model_len < 131_072
    # At the default util 0.9 there is no KV memory at all (#23278: -2.14 GiB; #27508's first post).
    prof09 = memory.engine_profile(
        m,
        GPUS["H100-SXM"],
        "mxfp4",
        "bf16",
        1,
        1,
        1,
        8000,
        replace(s, gpu_memory_utilization=0.9, max_num_batched_tokens=8192),
    )
    assert prof09.kv_cache_gib <= 0 and prof09.refusal == "no_memory" and not prof09.fits


def test_the_boundary_one_block_either_side():
    m = model("gpt-oss-120b")
    s = replace(memory.EngineSettings(), gpu_memory_utilization=0.97, max_num_seqs=100, max_model_len=87_040)
    prof = memory.engine_profile(m, GPUS["H100-SXM"], "mxfp4", "bf16", 1, 1, 1, 8000, s)
    assert prof.fits  # #33155: v0.11.2 serves 85K on one H100 at util 0.97
    # At util 0.91 the longest request that fits is shorter than the model's 131,072: start at it, refuse past it.
    s = replace(s, gpu_memory_utilization=0.91)
    edge = memory.engine_profile(m, GPUS["H100-SXM"], "mxfp4", "bf16", 1, 1, 1, 8000, s).estimated_max_model_len
    assert 87_040 < edge < 131_072
    at = memory.engine_profile(m, GPUS["H100-SXM"], "mxfp4", "bf16", 1, 1, 1, 8000, replace(s, max_model_len=edge))
    over = memory.engine_profile(
        m, GPUS["H100-SXM"], "mxfp4", "bf16", 1, 1, 1, 8000, replace(s, max_model_len=edge + 16)
    )
    assert at.fits and at.kv_needed_gib <= at.kv_cache_gib
    assert not over.fits and over.refusal == "max_model_len" and over.kv_needed_gib > over.kv_cache_gib


def test_kv_tokens_are_whole_blocks_of_every_group():
    s = memory.EngineSettings()
    # Dense: blocks of 16 tokens x 32 layers x 8 KV heads x 128 x 2 B x 2 (K, V) = 2 MiB per block.
    llama = memory.kv_layout(model("Llama-3.1-8B"), "bf16", 1, 1, s)
    assert (llama.group_size, llama.groups, llama.page_bytes) == (32, 1, 16 * 4096)
    assert llama.tokens(19.28 * GIB) == int(19.28 * GIB // (16 * 4096) // 32) * 16 == 157_936  # the A100 log
    # Gemma-3-27B: 10 full + 52 sliding layers -> groups of 10: 1 full + 6 sliding block tables (2 padding layers).
    gemma = memory.kv_layout(model("Gemma-3-27B"), "bf16", 1, 1, s)
    assert (gemma.full_layers, gemma.sliding_layers, gemma.group_size, gemma.groups) == (10, 52, 10, 7)
    avail = 10 * GIB
    assert gemma.tokens(avail) == int(avail // (16 * 8192) // 10) // 7 * 16
    # gpt-oss: 18 + 18 -> 2 groups of 18: the same tokens as all 36 layers in one pool.
    oss = memory.kv_layout(model("gpt-oss-120b"), "bf16", 1, 1, s)
    assert (oss.group_size, oss.groups) == (18, 2)
    assert oss.tokens(avail) == int(avail // (16 * 2048) // 18) // 2 * 16


def test_mxfp4_weights_follow_the_kernel_padding():
    m = model("gpt-oss-120b")
    plain = m.params.routed_experts * (0.5 + 1 / 32)
    marlin = memory.routed_expert_bytes(m, "mxfp4", 1, 1, 1, GPUS["A100-80GB"], memory.EngineSettings())
    triton = memory.routed_expert_bytes(m, "mxfp4", 1, 1, 1, GPUS["H100-SXM"], memory.EngineSettings())
    assert marlin == pytest.approx(plain * 3072 * 2944 / (2880 * 2880))
    assert triton == pytest.approx(plain * 3072 / 2880)


def test_the_calibration_constants_are_the_fit_of_the_fit_rows():
    logs = list(LOGS.values())
    fitted = memory.fit_calibration(logs, {m["model"]: model(m["model"]) for m in logs}, {g: GPUS[g] for g in GPUS})
    in_code = {
        "V1_WEIGHT_SLACK_FRAC": memory.V1_WEIGHT_SLACK_FRAC,
        "NON_TORCH_ARCH_SCALE[hopper]": memory.NON_TORCH_ARCH_SCALE["hopper"],
        "NON_TORCH_MULTI_GPU_ARCH_SCALE[hopper]": memory.NON_TORCH_MULTI_GPU_ARCH_SCALE["hopper"],
        "NON_TORCH_ARCH_SCALE[ampere]": memory.NON_TORCH_ARCH_SCALE["ampere"],
        "NON_TORCH_MULTI_GPU_ARCH_SCALE[ampere]": memory.NON_TORCH_MULTI_GPU_ARCH_SCALE["ampere"],
    }
    for name, value in in_code.items():
        assert fitted[name] == pytest.approx(value, abs=5e-4), name
    assert fitted["V1_SAMPLER_BYTES_PER_SEQ_VOCAB[hopper]"] == pytest.approx(
        memory.V1_SAMPLER_BYTES_PER_SEQ_VOCAB["hopper"], abs=0.01
    )
    # By hand: the H100 V1 non-torch factor is the logged 0.13 GiB over engine.non_torch_gib (1.8 GiB), and the
    # multi-GPU one the TP 2 row's 0.54 GiB less that, over 3.6 - 1.8 GiB.
    assert fitted["NON_TORCH_ARCH_SCALE[hopper]"] == pytest.approx(0.13 / 1.8)
    assert fitted["NON_TORCH_MULTI_GPU_ARCH_SCALE[hopper]"] == pytest.approx((0.54 - 0.13) / 1.8)
    # The graph prior is the mean of the two fit rows' "Graph capturing finished ..., took X GiB" lines.
    assert fitted["CUDA_GRAPH_GIB_PRIOR"] == memory.CUDA_GRAPH_GIB_PRIOR == (0.50 + 0.65) / 2
    # Held-out rows do not move the fit: marking them all `holdout` except the fit rows gives the same constants.
    only_fit = [m for m in logs if m["role"] == "fit"]
    assert memory.fit_calibration(only_fit, {m["model"]: model(m["model"]) for m in only_fit}, GPUS) == fitted


def test_an_a100_pair_without_p2p_keeps_almost_nothing_outside_torch():
    # dennislee22 TP 2 on one node (custom all-reduce off): 0.5 x 79.15 GiB - 7.1217 weights - 31.83 KV leaves
    # 0.62 GiB for the activation peak and non-torch memory; an H100 pair (PR #10511) keeps 3.58 GiB outside torch.
    m = model("Qwen2.5-7B")
    s = replace(memory.EngineSettings(), gpu_memory_utilization=0.5, max_num_batched_tokens=2048, max_model_len=16384)
    nt = memory.non_torch_gib(GPUS["A100-80GB"], 2, 1, s)
    act = memory.activation_peak_bytes(m, s) / GIB
    assert nt == pytest.approx(
        1.8 * memory.NON_TORCH_ARCH_SCALE["ampere"] + 1.8 * memory.NON_TORCH_MULTI_GPU_ARCH_SCALE["ampere"]
    )
    # (the fit uses the predicted 7.09 GiB of weights, so the sum is within the 0.03 GiB the weights differ)
    assert abs((act + nt) - (0.5 * 79.15 - 7.1217 - 31.83)) < 0.05
    # An H100 pair under V1 keeps 0.54 GiB outside torch (llm-d's Qwen3-32B TP 2 log); the V0 figure is 3.6 GiB.
    assert memory.non_torch_gib(GPUS["H100-SXM"], 2, 1, s) == pytest.approx(0.54)
    assert memory.non_torch_gib(GPUS["H100-SXM"], 2, 1, replace(s, engine="v0")) == pytest.approx(3.6)


def test_the_h100_v1_profile_peak_is_the_sampler_run():
    # llm-d H100 logs (vLLM 0.11, 1,024 sequences): Llama-3.1-8B 4.76 GiB activation + 0.13 GiB non-torch;
    # Qwen3-32B 5.64 + 0.14 GiB. By hand: 39.33 B x 1,024 x 128,256 (Llama vocabulary) = 4.81 GiB and
    # x 151,936 (Qwen) = 5.70 GiB, each larger than the forward pass; non-torch 1.8 x 0.0722 = 0.13 GiB.
    s = replace(memory.EngineSettings(), max_num_seqs=1024, max_num_batched_tokens=8192)
    h100, a100 = GPUS["H100-SXM"], GPUS["A100-80GB"]
    llama = memory.activation_peak_bytes(model("Llama-3.1-8B"), s, h100)
    assert llama == pytest.approx(memory.V1_SAMPLER_BYTES_PER_SEQ_VOCAB["hopper"] * 1024 * 128_256)
    assert abs(llama / GIB - 4.76) < 0.1
    qwen = memory.activation_peak_bytes(model("Qwen3-32B"), s, h100)
    assert abs(qwen / GIB - 5.64) < 0.1
    assert memory.non_torch_gib(h100, 1, 1, s) == pytest.approx(0.13, abs=0.001)
    # Without a GPU, under V0 or on an A100 the forward pass stands (the published A100 logs show no sampler peak).
    forward = memory.activation_peak_bytes(model("Llama-3.1-8B"), s)
    assert memory.activation_peak_bytes(model("Llama-3.1-8B"), s, a100) == forward < llama
    assert memory.activation_peak_bytes(model("Llama-3.1-8B"), replace(s, engine="v0"), h100) == forward


def test_logged_moe_runs_keep_experts_tensor_parallel():
    # vLLM splits each expert over TP unless --enable-expert-parallel is given: gpt-oss-120b on 4 A100s (Marlin)
    # pads each GPU's 720-wide expert slice to 768 and the hidden size 2880 to 3072 (not whole experts per GPU).
    m = model("gpt-oss-120b")
    log = LOGS["dennislee22-gptoss120b-a100-80gb-tp4"]
    assert memory._logged_ep(log, m, 4) == 1
    plain = m.params.routed_experts * (0.5 + 1 / 32)
    tp_split = memory.routed_expert_bytes(m, "mxfp4", 4, 1, 1, GPUS["A100-80GB"], memory.EngineSettings())
    assert tp_split == pytest.approx(plain / 4 * 3072 * 768 / (2880 * 720))
    # Logged 17.2217 GiB; whole experts per GPU (EP 4) would give 0.7 GiB less and miss by 4%.
    assert abs(compare("dennislee22-gptoss120b-a100-80gb-tp4")["weights_gib"]["error_pct"]) < 1.0
    ep4 = memory.engine_weight_bytes(m, "mxfp4", 4, 1, 4, GPUS["A100-80GB"], memory.EngineSettings()) / GIB
    assert abs(ep4 / 17.2217 - 1) > 0.03


def test_kv_capacity_for_the_simulator():
    s = replace(memory.EngineSettings(), max_model_len=32_768)
    cap = memory.kv_capacity(model("Llama-3.1-8B"), GPUS["H100-SXM"], "bf16", "bf16", 1, 1, s)
    prof = memory.engine_profile(model("Llama-3.1-8B"), GPUS["H100-SXM"], "bf16", "bf16", 1, 1, 1, 32_768, s)
    assert cap["block_size"] == 16 and cap["groups"] == 1
    assert cap["tokens"] == cap["blocks"] * 16 == prof.kv_cache_tokens
    assert cap["fits"] and cap["max_model_len"] == 32_768
    # Hybrid gpt-oss: vLLM's pool blocks are shared by 2 block tables; a single-table simulator gets tokens / 16.
    oss = memory.kv_capacity(model("gpt-oss-120b"), GPUS["H200"], "mxfp4", "bf16", 1, 1, s)
    assert oss["groups"] == 2 and oss["blocks"] == oss["tokens"] // 16 == oss["pool_blocks"] // 2
    # Non-torch memory is per GPU family: the A100 keeps far less outside torch than the H100.
    a100 = memory.non_torch_gib(GPUS["A100-80GB"], 1, 1, s)
    assert a100 == pytest.approx(1.8 * memory.NON_TORCH_ARCH_SCALE["ampere"]) and a100 < 0.5
    assert memory.non_torch_gib(GPUS["H100-SXM"], 2, 1, replace(s, engine="v0")) == pytest.approx(3.6)


def sizing(*args: str) -> subprocess.CompletedProcess:
    return run_module(["pipeline", "memory", *args], ROOT, timeout=120)  # a real child process (tests/forkrun.py)


BASE = ["--model", "gpt-oss-120b", "--gpu", "H100", "--weights", "mxfp4", "--tp", "1", "--concurrency", "4"]


def test_cli_max_model_len_refusal_and_start():
    import json

    refused = sizing(*BASE, "--context-tokens", "8000", "--max-model-len", "131072", "--json")
    assert refused.returncode == 0, refused.stderr
    eng = json.loads(refused.stdout)["engine"]
    assert eng["max_model_len"] == 131_072 and eng["fits"] is False and eng["refusal"] in ("max_model_len", "no_memory")
    assert {"weights_gib", "kv_cache_tokens", "fits"} <= set(eng)
    started = sizing(
        *BASE, "--context-tokens", "8000", "--max-model-len", "8192", "--gpu-memory-utilization", "0.95", "--json"
    )
    eng2 = json.loads(started.stdout)["engine"]
    assert eng2["max_model_len"] == 8192 and eng2["fits"] is True and eng2["kv_cache_tokens"] > 8192
    text = sizing(*BASE, "--context-tokens", "8000", "--max-model-len", "131072")
    assert "refuses to start" in text.stdout


@pytest.mark.parametrize(
    ("value", "needle"),
    [("0", "--max-model-len = '0'"), ("-5", "--max-model-len = '-5'"), ("200000", "max_position_embeddings (131,072)")],
)
def test_cli_bad_max_model_len_is_one_line(value, needle):
    proc = sizing(*BASE, "--context-tokens", "8000", "--max-model-len", value)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and needle in lines[0] and "Traceback" not in proc.stderr
