"""The shipped sample benchmark sweeps: vLLM `bench serve` result files, SYNTHETIC, generated here.

No GPU ran these. A documented queueing model turns the project's roofline into what a closed-
loop `vllm bench serve --max-concurrency N` sweep would report, so the pipeline has a curve to
read end to end. The model (one replica; N clients, zero think time):

- service times are the roofline's (step 6) x SLOWDOWN (kernel, scheduler and sampling overheads):
  prefill P = prefill_s(prompt); decode step s(b) = decode_step_s(b, prompt + output / 2);
- b = min(N, KV capacity of the engine profile); prefill takes a share rho = b x P / E2E of GPU
  time, so a decode step stretches to s(b) / (1 - rho) (ITL), and a prompt waits
  rho x P / (2 (1 - rho)) for the prefill slot (M/D/1), plus (N - b) / throughput when the KV
  cache is full; E2E = TTFT + (output - 1) x ITL, solved as a fixed point;
- per-request spread: log-normal TTFT service (sigma 0.15), exponential queueing wait, log-normal
  TPOT (sigma 0.06 + 0.1 rho); chunk-level ITL adds a prefill chunk with probability rho.

Percentiles come from SAMPLES simulated requests per level (fixed seed); the files hold the
summary keys of `--percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,95,99
--goodput ttft:2000 tpot:50` (no per-request arrays: no --save-detailed). Same seed, same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io, paths

SEED = 20261124
SLOWDOWN = 1.3
SAMPLES = 4000
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128)
GOODPUT_SLO = {"ttft": 2000.0, "tpot": 50.0}
DEPLOYMENT = {
    "model": "Llama-3.1-70B",
    "gpu": "H100-SXM",
    "gpu_count": 4,
    "tp": 4,
    "pp": 1,
    "weight_dtype": "fp8",
    "kv_dtype": "fp8",
    "engine": "vllm",
    "engine_version": "0.11.0",
    "load_mode": "closed",
}


HF_REPOS = {"Llama-3.1-70B": "meta-llama/Llama-3.1-70B-Instruct", "Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct"}


@dataclass(frozen=True)
class SweepSpec:
    """One synthetic sweep: its folder, the random dataset's lengths, and what differs from DEPLOYMENT.

    `tier` tags the sweep for one routing tier (manifest `tier:`); untagged sweeps size the pooled fleet.
    """

    name: str
    input_tokens: int
    output_tokens: int
    tier: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def deployment(self) -> dict[str, Any]:
        return {**DEPLOYMENT, **dict(self.overrides)}


SWEEPS = (
    SweepSpec("sample_vllm_h100x4_long", 6000, 1000),
    SweepSpec("sample_vllm_h100x4_chat", 1200, 220),
    # the sample's routing tiers (workload.tiers.map): 'large' keeps the 70B on H100, 'small' runs the 8B on one L40S
    SweepSpec("sample_vllm_h100x4_large", 7800, 1600, tier="large"),
    SweepSpec(
        "sample_vllm_l40s_8b_small",
        2600,
        570,
        tier="small",
        overrides=(("model", "Llama-3.1-8B"), ("gpu", "L40S"), ("gpu_count", 1), ("tp", 1)),
    ),
)


def _deployment(root: Path, dep: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    """(model, GPU, roofline) of a deployment (default DEPLOYMENT), from the catalogs and default efficiencies."""
    from pipeline import catalog
    from pipeline.roofline import for_deployment

    dep = dep or DEPLOYMENT
    model = catalog.load_model(dep["model"], root)
    gpu = catalog.find_gpu(dep["gpu"], catalog.load_gpus(root))
    rf = for_deployment(model, gpu, dep["weight_dtype"], dep["kv_dtype"], dep["tp"])
    if isinstance(rf, str):
        raise ValueError(f"the sample deployment cannot run: {rf}")
    return model, gpu, rf


def level(
    rf: Any,
    capacity: int,
    n: int,
    inp: int,
    out: int,
    rng: np.random.Generator,
    hf_repo: str = HF_REPOS["Llama-3.1-70B"],
) -> dict[str, Any]:
    """The summary vLLM would write for one closed-loop level of `n` clients."""
    ctx = inp + out / 2
    p = rf.prefill_s(inp) * SLOWDOWN
    b = min(n, capacity)
    step = rf.decode_step_s(b, ctx) * SLOWDOWN

    def parts(e2e: float) -> tuple[float, float, float]:
        rho = min(b * p / e2e, 0.95)
        return rho, step / (1 - rho), rho * p / (2 * (1 - rho))

    def excess(e2e: float) -> float:  # decreasing in e2e: bisection finds the one fixed point
        _, itl, wait = parts(e2e)
        return p + wait + (out - 1) * itl - e2e

    lo, hi = p + (out - 1) * step, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    rho, itl, wait = parts(hi)
    ttft = p + wait
    kv_wait = (n - b) * (ttft + (out - 1) * itl) / b if n > b else 0.0
    ttft_s = (
        p * rng.lognormal(0, 0.15, SAMPLES) + rng.exponential(wait, SAMPLES) + kv_wait * rng.uniform(0.5, 1.5, SAMPLES)
    )
    tpot_s = itl * rng.lognormal(0, 0.06 + 0.1 * rho, SAMPLES)
    e2e_s = ttft_s + (out - 1) * tpot_s
    gaps = step * rng.lognormal(0, 0.05, SAMPLES * 4) + (rng.uniform(size=SAMPLES * 4) < rho) * p * min(1.0, 8192 / inp)
    throughput = n / float(np.mean(e2e_s))
    num_prompts = max(10 * n, 100)
    duration = num_prompts / throughput
    good = np.mean((ttft_s * 1e3 <= GOODPUT_SLO["ttft"]) & (tpot_s * 1e3 <= GOODPUT_SLO["tpot"]))
    res: dict[str, Any] = {
        "date": "20261124-000000",
        "endpoint_type": "openai-chat",
        "label": None,
        "model_id": hf_repo,
        "tokenizer_id": hf_repo,
        "num_prompts": num_prompts,
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": n,
        "duration": duration,
        "completed": num_prompts,
        "failed": 0,
        "total_input_tokens": num_prompts * inp,
        "total_output_tokens": num_prompts * out,
        "request_throughput": throughput,
        "request_goodput": throughput * float(good),
        "output_throughput": throughput * out,
        "total_token_throughput": throughput * (inp + out),
        "max_output_tokens_per_s": throughput * out * 1.15,
        "max_concurrent_requests": n,
    }
    for metric, values in (("ttft", ttft_s), ("tpot", tpot_s), ("itl", gaps), ("e2el", e2e_s)):
        ms = values * 1e3
        res[f"mean_{metric}_ms"] = float(np.mean(ms))
        res[f"median_{metric}_ms"] = float(np.median(ms))
        res[f"std_{metric}_ms"] = float(np.std(ms))
        for q in (50, 90, 95, 99):
            res[f"p{q}_{metric}_ms"] = float(np.percentile(ms, q))
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in res.items()}


def write(root: Path | None = None, seed: int = SEED) -> list[Path]:
    """Write every sample sweep (result files + manifest.yaml) under data/raw/benchmarks/."""
    import yaml

    root = root or paths.ROOT
    from pipeline import memory

    written = []
    for i, spec in enumerate(SWEEPS):
        dep = spec.deployment
        model, gpu, rf = _deployment(root, dep)
        rng = np.random.default_rng(seed + i)
        folder = root / "data" / "raw" / "benchmarks" / spec.name
        prof = memory.engine_profile(
            model,
            gpu,
            dep["weight_dtype"],
            dep["kv_dtype"],
            dep["tp"],
            1,
            1,
            spec.input_tokens + spec.output_tokens,
            memory.EngineSettings(engine="v0", cuda_graph_in_budget=False),  # the accounting the sample was made with
        )
        capacity = max(1, int(prof.max_concurrency_per_replica))
        for n in CONCURRENCY:
            res = level(rf, capacity, n, spec.input_tokens, spec.output_tokens, rng, HF_REPOS[model.name])
            path = folder / f"vllm-{n}concurrency-{model.name}-{spec.input_tokens}-{spec.output_tokens}.json"
            io.write_text(path, json.dumps(res, indent=2) + "\n")
            written.append(path)
        manifest = {
            **dep,
            "input_tokens": spec.input_tokens,
            "output_tokens": spec.output_tokens,
            "phase": "baseline",
            **({"tier": spec.tier} if spec.tier else {}),
            "synthetic": True,
            "source": "SYNTHETIC: generated by pipeline/sample_sweep.py from a documented queueing model over the "
            "roofline (no GPU ran it); replace this folder with your own sweep",
            "notes": f"vllm bench serve --dataset-name random --random-input-len {spec.input_tokens} "
            f"--random-output-len {spec.output_tokens} --ignore-eos --max-concurrency N --request-rate inf "
            "--percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,95,99 --goodput ttft:2000 tpot:50 --save-result",
        }
        io.write_text(folder / "manifest.yaml", yaml.safe_dump(manifest, sort_keys=False, width=200))
        written.append(folder / "manifest.yaml")
    return written


def main() -> int:
    paths_ = write()
    print(f"wrote {len(paths_)} files under data/raw/benchmarks/ (SYNTHETIC sample sweeps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
