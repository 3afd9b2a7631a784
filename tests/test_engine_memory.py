"""Issue 13 item 4: the vLLM engine profile against public start-up logs, its refusal to start, and `sizing memory
--max-model-len`. Logged figures come from tests/data/vllm_startup_logs (PROVENANCE.md quotes each line)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from pipeline import catalog, memory, memory_views
from tests.conftest import ROOT

GPUS = catalog.load_gpus(ROOT)
GIB = 2**30
LOGS = {m["log_id"]: m for m in memory_views.load_startup_logs(ROOT / memory_views.STARTUP_LOGS)}
# Held-out figures the model misses, with why (benchmarks/engine_memory.py prints them). They are not asserted
# against the targets; every other logged figure is.
KNOWN_MISSES = {
    # util not stated in the row we have (0.9 assumed): predicted KV +26%.
    ("pr17122-llama31-8b-l40s-tp1", "kv_cache_tokens"),
    # LMCache connector running, 4 ranks (the logged rank is not the one with the fewest blocks): -6% / -8%.
    ("issue21348-qwen3-235b-fp8-h100-tp4", "kv_cache_tokens"),
    ("issue21348-qwen3-235b-fp8-h100-tp4", "kv_cache_gib"),
    # The Triton MXFP4 path on vLLM 0.11 leaves 2.2 GiB less than the Marlin-calibrated profile: +129% on 1.71 GiB.
    ("issue27508-gptoss120b-h100-util095", "kv_cache_gib"),
}
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
    assert len(LOGS) >= 11
    for m in LOGS.values():
        assert m["source"].startswith("https://"), m["log_id"]
        assert m["gpu"] in GPUS and model(m["model"])
        assert m["log_id"] in (ROOT / "tests/data/vllm_startup_logs/PROVENANCE.md").read_text(encoding="utf-8")
    # The logged numbers themselves, as quoted in PROVENANCE.md.
    assert LOGS["issue23278-gptoss120b-h100-v0101"]["logged_weights_gib"] == 65.9651
    assert LOGS["issue27508-gptoss120b-h100-util095"]["logged_available_kv_gib"] == 1.71
    assert LOGS["ilseokoh-llama31-8b-a100-40gb-v0151"]["logged_kv_tokens"] == 157_936


@pytest.mark.parametrize("log_id", sorted(LOGS))
def test_each_log_is_reproduced_within_target(log_id):
    rows = compare(log_id)
    checks = set(LOGS[log_id]["checks"].split(";"))
    assert rows, log_id
    for name, r in rows.items():
        if name == "fits":
            assert r["agrees"], (log_id, r)
            continue
        if (log_id, name) in KNOWN_MISSES:
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
    # At util 0.94 the longest request that fits is shorter than the model's 131,072: start at it, refuse past it.
    s = replace(s, gpu_memory_utilization=0.94)
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
    assert fitted["V1_WEIGHT_SLACK_FRAC"] == pytest.approx(memory.V1_WEIGHT_SLACK_FRAC, abs=5e-4)
    assert fitted["NON_TORCH_ARCH_SCALE[ampere]"] == pytest.approx(memory.NON_TORCH_ARCH_SCALE["ampere"], abs=5e-4)


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
    assert memory.non_torch_gib(GPUS["H100-SXM"], 2, 1, s) == pytest.approx(3.6)


def sizing(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "memory", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


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
