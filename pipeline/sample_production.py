"""The shipped sample production window (step 13), SYNTHETIC, generated here with a fixed seed.

One hour (2026-04-06 10:00-11:00 UTC, the quarter after the sample traffic log) of the 'large'
routing tier: 7 replicas of Llama-3.1-70B on TP4 H100, 2.1 req/s in all. What it holds:
- data/raw/production/requests.csv: one row per request with arrival, lengths, ttft_ms, e2e_ms;
  lengths like the large tier's; ITL at the benchmark's median at this rate (the `large` sample
  sweep, read straight from its vLLM files); TTFT with a heavier tail than the benchmark showed
  (p99 about 1.5x), as when production prompts queue behind long prefills;
- data/raw/production/scrapes/: vLLM /metrics of the 7 servers and the DCGM exporter of their 28 GPUs
  at the start and the end of the hour (counters and histograms from the same requests; KV usage,
  prefix-cache hits 22% of queried tokens, 0.3% preemptions; GPU utilization about 45%).
Same seed, same bytes (tested). Replace the folder with your own window.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline import io, paths

SEED = 20260406
START_S = int(datetime(2026, 4, 6, 10, 0, tzinfo=UTC).timestamp())
SECONDS = 3600
RATE_RPS = 2.1
REPLICAS = 7
TP = 4
SWEEP = "sample_vllm_h100x4_large"
MODEL_ID = "meta-llama/Llama-3.1-70B-Instruct"
TTFT_TAIL = 1.5  # production TTFT p99 / the benchmark's at the same rate
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
FB_TOTAL_MIB = 81559


def _benchmark(root: Path, rps_per_replica: float) -> dict[str, float]:
    """Median and p99 TTFT and the median TPOT of the sample sweep at this rate (linear in RPS), in ms.

    Read with the project's own vLLM reader (pipeline.benchmarks), as the curve stage reads it.
    """
    from pipeline.benchmarks import read_sweep

    levels = read_sweep([root / "data" / "raw" / "benchmarks" / SWEEP]).frame().sort_values("rps")
    xs = levels["rps"].astype(float).to_numpy()
    return {
        k: float(np.interp(rps_per_replica, xs, levels[col].astype(float).to_numpy()))
        for k, col in (
            ("median_ttft_ms", "ttft_p50_ms"),
            ("p99_ttft_ms", "ttft_p99_ms"),
            ("median_tpot_ms", "itl_p50_ms"),
        )
    }


def _histogram(
    name: str, buckets: tuple[float, ...], values: np.ndarray, weights: np.ndarray, labels: str
) -> list[str]:
    lines = []
    for le in buckets:
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {float(weights[values <= le].sum()):.1f}')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {float(weights.sum()):.1f}')
    lines.append(f"{name}_count{{{labels}}} {float(weights.sum()):.1f}")
    lines.append(f"{name}_sum{{{labels}}} {float((values * weights).sum()):.6f}")
    return lines


def write(root: Path | None = None, seed: int = SEED) -> list[Path]:
    """Write requests.csv and the start/end scrapes under data/raw/production/."""
    root = root or paths.ROOT
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(RATE_RPS * SECONDS))
    arrivals = np.sort(rng.uniform(0, SECONDS, n)) + START_S
    inp = np.clip(np.round(rng.lognormal(math.log(2900), 0.8, n)), 16, 32000).astype(int)
    out = np.clip(np.round(rng.lognormal(math.log(300), 0.9, n)), 2, 4096).astype(int)
    b = _benchmark(root, RATE_RPS / REPLICAS)
    sigma = 0.45
    mu = math.log(TTFT_TAIL * b["p99_ttft_ms"] / b["median_ttft_ms"]) - 2.326 * sigma
    ttft = b["median_ttft_ms"] * np.exp(rng.normal(mu, sigma, n))
    tpot = b["median_tpot_ms"] * rng.lognormal(0, 0.08, n)
    e2e = ttft + (out - 1) * tpot
    folder = root / "data" / "raw" / "production"
    rows = ["arrival_s,input_tokens,output_tokens,ttft_ms,e2e_ms"] + [
        f"{a:.3f},{i},{o},{t:.2f},{e:.2f}" for a, i, o, t, e in zip(arrivals, inp, out, ttft, e2e, strict=True)
    ]
    written = [folder / "requests.csv"]
    io.write_text(written[0], "\n".join(rows) + "\n")
    server = np.arange(n) % REPLICAS
    for t, share in ((START_S, 0.0), (START_S + SECONDS, 1.0)):
        lines = []
        for r in range(REPLICAS):
            mine = server == r
            base = 4.0  # cumulative counts before the window: four earlier hours like this one
            w = np.where(mine, base + share, 0.0)
            labels = f'engine="0",instance="large-{r}",model_name="{MODEL_ID}"'
            done = float(w.sum())
            prompt = float((inp * w).sum())
            lines += [
                f"vllm:num_requests_running{{{labels}}} {float(rng.integers(8, 14)):.1f}",
                f"vllm:num_requests_waiting{{{labels}}} {float(rng.integers(0, 2)):.1f}",
                f"vllm:kv_cache_usage_perc{{{labels}}} {rng.uniform(0.52, 0.62):.4f}",
                f"vllm:prefix_cache_queries_total{{{labels}}} {prompt:.1f}",
                f"vllm:prefix_cache_hits_total{{{labels}}} {math.floor(prompt * 0.22):.1f}",
                f"vllm:num_preemptions_total{{{labels}}} {math.floor(done * 0.003):.1f}",
                f'vllm:request_success_total{{engine="0",finished_reason="stop",instance="large-{r}",model_name="{MODEL_ID}"}} {done:.1f}',
                f"vllm:prompt_tokens_total{{{labels}}} {prompt:.1f}",
                f"vllm:generation_tokens_total{{{labels}}} {float((out * w).sum()):.1f}",
            ]
            lines += _histogram("vllm:time_to_first_token_seconds", TTFT_BUCKETS, ttft / 1e3, w, labels)
            lines += _histogram("vllm:inter_token_latency_seconds", ITL_BUCKETS, tpot / 1e3, w * (out - 1), labels)
        header = [
            "# TYPE vllm:num_requests_running gauge",
            "# TYPE vllm:num_requests_waiting gauge",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            "# TYPE vllm:prefix_cache_queries_total counter",
            "# TYPE vllm:prefix_cache_hits_total counter",
            "# TYPE vllm:num_preemptions_total counter",
            "# TYPE vllm:request_success_total counter",
            "# TYPE vllm:prompt_tokens_total counter",
            "# TYPE vllm:generation_tokens_total counter",
            "# TYPE vllm:time_to_first_token_seconds histogram",
            "# TYPE vllm:inter_token_latency_seconds histogram",
        ]
        path = folder / "scrapes" / f"vllm-{t}.prom"
        io.write_text(path, "# SYNTHETIC sample (pipeline/sample_production.py)\n" + "\n".join(header + lines) + "\n")
        written.append(path)
        gpu = [
            "# SYNTHETIC sample (pipeline/sample_production.py)",
            "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
            "# TYPE DCGM_FI_DEV_FB_USED gauge",
            "# TYPE DCGM_FI_DEV_FB_FREE gauge",
        ]
        for g in range(REPLICAS * TP):
            labels = f'gpu="{g % 8}",UUID="GPU-{g:03d}",modelName="NVIDIA H100 80GB HBM3",Hostname="node-{g // 8}"'
            used = int(rng.integers(71000, 73000))
            gpu += [
                f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {int(rng.integers(38, 53))}",
                f"DCGM_FI_DEV_FB_USED{{{labels}}} {used}",
                f"DCGM_FI_DEV_FB_FREE{{{labels}}} {FB_TOTAL_MIB - used}",
            ]
        path = folder / "scrapes" / f"dcgm-{t}.prom"
        io.write_text(path, "\n".join(gpu) + "\n")
        written.append(path)
    return written


def main() -> int:
    print(f"wrote {len(write())} files under data/raw/production/ (SYNTHETIC sample production window)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
