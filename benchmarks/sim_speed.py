"""How fast the engine model simulates, and that its memory is flat in trace length (issue 13 speed targets).

Replays the Azure 2023 conversation trace (../shared/fixtures/traces/azure2023_conv.csv, read by the
project's own traffic reader; the shipped sample log when the fixture is absent) through one replica of
Llama-3.1-70B fp8 on 4x H100-SXM (TP4), KV capacity from the memory stage's engine profile, on one core
(numba kernels are single-threaded; the process is pinned to one CPU where the OS allows it).

Prints:
- compile time of the numba kernels (a fresh cache), the load time of the cached kernels, and the
  steady-state simulated requests/s (best of --repeat, compile excluded) at rate scales 1 and 4,
  with prefix caching on the sample log, and for a 4-replica fleet;
- two bare baselines over the same arrays: a pure-numpy pass (each request's no-load latency from the
  vectorized cost model) and a bare numba loop touching every decode token-step once;
- peak RSS against trace length (the trace replicated 1x, 4x, 16x back to back, each in a fresh
  process): streamed with keep="histogram" (flat) and, for contrast, held whole with per-request arrays.
Target: >= 50,000 simulated requests/s on one core.

    python benchmarks/sim_speed.py [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
AZURE = ROOT.parent / "shared" / "fixtures" / "traces" / "azure2023_conv.csv"
SAMPLE = ROOT / "data" / "raw" / "traffic" / "sample_traffic.parquet"
TARGET_RPS = 50_000


def rss_mib(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, MiB (ru_maxrss where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: 5 > /proc/self/clear_refs), so the peak measured is this run's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def pin_one_core() -> str:
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned"


def setup(log: Path, window: str = "all"):
    """(cost, engine config, trace) of the benchmark deployment on `log`."""
    import numpy as np

    from pipeline import params, paths
    from pipeline.sim import replay
    from pipeline.sim.trace import load_trace

    trace, _ = load_trace(str(log), window)
    data = params.load(paths.PARAMS) if paths.PARAMS.exists() else {}
    context = float(np.max(trace.input_tokens + trace.output_tokens))
    cost, cfg, _ = replay.deployment("Llama-3.1-70B", "H100-SXM", 4, "fp8", "fp8", context, data)
    return cost, cfg, trace


def replicated(trace, copies: int, chunk: int = 1 << 16):
    """The trace `copies` times back to back, generated chunk by chunk (never whole in memory)."""
    from pipeline.sim.engine import Trace

    span = float(trace.arrival_s[-1]) + 1.0
    for k in range(copies):
        for s in range(0, len(trace), chunk):
            t = trace.slice(s, min(s + chunk, len(trace)))
            yield Trace(t.arrival_s + k * span, t.input_tokens, t.output_tokens, hash_block_tokens=512)


def child(mode: str, copies: int, log: str) -> dict:
    """One measurement in this (fresh) process."""
    import numpy as np

    pin_one_core()
    if mode == "compile":
        t0 = time.perf_counter()
        from pipeline.sim import engine, router

        cost, cfg, trace = setup(Path(log))
        small = trace.slice(0, 200)
        t1 = time.perf_counter()
        engine.simulate_open(cost, cfg, small)
        engine.simulate_open(cost, cfg, small, keep="histogram")
        engine.simulate_closed(cost, cfg, small.input_tokens, small.output_tokens, 4, requests=50)
        router.simulate_fleet(cost, cfg, small, 2)
        t2 = time.perf_counter()
        engine.simulate_open(cost, cfg, small)
        engine.simulate_open(cost, cfg, small, keep="histogram")
        engine.simulate_closed(cost, cfg, small.input_tokens, small.output_tokens, 4, requests=50)
        router.simulate_fleet(cost, cfg, small, 2)
        t3 = time.perf_counter()
        return {"first_calls_s": t2 - t1, "warm_calls_s": t3 - t2, "setup_s": t1 - t0}
    from pipeline import catalog
    from pipeline.sim import cost as cost_mod
    from pipeline.sim import engine

    saved = np.load(log)  # the trace and engine config the parent saved: no log reader in this process
    trace = engine.Trace(saved["arrival_s"], saved["input_tokens"], saved["output_tokens"])
    cfg = engine.EngineConfig(*[int(x) for x in saved["cfg"][:4]])
    cost = cost_mod.for_deployment(
        catalog.load_model("Llama-3.1-70B"), catalog.load_gpus()["H100-SXM"], "fp8", "fp8", 4
    )
    small = trace.slice(0, 200)
    engine.simulate_open(cost, cfg, small, keep="histogram")
    engine.simulate_open(cost, cfg, small)
    import gc

    gc.collect()
    reset_peak_rss()
    base = rss_mib("VmRSS")
    t0 = time.perf_counter()
    if mode == "stream":
        res = engine.simulate_open_stream(cost, cfg, replicated(trace, copies), keep="histogram")
    else:  # whole: the replicated trace in memory, per-request arrays kept
        parts = list(replicated(trace, copies))
        whole = engine.Trace(
            np.concatenate([p.arrival_s for p in parts]),
            np.concatenate([p.input_tokens for p in parts]),
            np.concatenate([p.output_tokens for p in parts]),
        )
        del parts
        res = engine.simulate_open(cost, cfg, whole)
    wall = time.perf_counter() - t0
    peak = rss_mib("VmHWM")
    s = res.summary()
    return {
        "requests": s["requests"],
        "wall_s": wall,
        "rss_before_mib": base,
        "peak_rss_mib": peak,
        "ttft_p99_ms": s["ttft_ms"]["p99"],
        "itl_p99_ms": s["itl_ms"]["p99"],
    }


def _token_steps():
    from numba import njit

    @njit(cache=False)
    def token_steps(out):  # the least any token-level simulator does: touch every decode step once
        s = 0.0
        for k in out:
            for j in range(k):
                s += 1.0 / (j + 1.0)
        return s

    return token_steps


def run_child(mode: str, copies: int, log: Path, cache_dir: str | None = None) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    if cache_dir:  # pipeline.sim files its kernels here (numba's own NUMBA_CACHE_DIR does not apply to them)
        env["SIZING_NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(copies), str(log)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {mode} {copies} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_rate(fn, n: int, repeat: int) -> tuple[float, float]:
    """(best requests/s, its wall seconds) over `repeat` runs of fn()."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1x and 4x only for the memory runs")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "COPIES", "LOG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2])))
        return 0

    import numpy as np

    from pipeline.sim import engine, router

    log = AZURE if AZURE.exists() else SAMPLE
    print(f"sim_speed: {log.name}, Llama-3.1-70B fp8 TP4 on H100-SXM, {pin_one_core()}")
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        cold = run_child("compile", 1, log, cache)
        warm = run_child("compile", 1, log, cache)
    compile_s = cold["first_calls_s"] - cold["warm_calls_s"]
    load_s = warm["first_calls_s"] - warm["warm_calls_s"]
    print(f"compile (fresh cache, every kernel): {compile_s:.2f} s; load from the cache: {load_s:.2f} s")

    cost, cfg, trace = setup(log)
    n = len(trace)
    tokens = int(trace.output_tokens.sum())
    print(
        f"trace: {n:,} requests, {tokens:,} output tokens, {trace.arrival_s[-1]:,.0f} s; "
        f"engine: {cfg.kv_blocks:,} KV blocks of {cfg.block_size}, max_num_seqs {cfg.max_num_seqs}, "
        f"max_num_batched_tokens {cfg.max_num_batched_tokens}"
    )
    engine.simulate_open(cost, cfg, trace.slice(0, 100))
    rows = []
    for scale in (1.0, 4.0):
        res = engine.simulate_open(cost, cfg, trace, rate_scale=scale)
        rate, wall = best_rate(lambda s=scale: engine.simulate_open(cost, cfg, trace, rate_scale=s), n, args.repeat)
        rows.append((f"1 replica, rate x{scale:g}", rate, wall, res.iterations, res.summary()))
    fleet = router.simulate_fleet(cost, cfg, trace, 4, "least-outstanding", 4.0)
    rate, wall = best_rate(lambda: router.simulate_fleet(cost, cfg, trace, 4, "least-outstanding", 4.0), n, args.repeat)
    rows.append(("4 replicas, least-outstanding, rate x4", rate, wall, fleet.result.iterations, fleet.summary()))
    if SAMPLE.exists():
        s_cost, s_cfg, s_trace = setup(SAMPLE, "busiest-hour")
        res = engine.simulate_open(s_cost, s_cfg, s_trace)
        rate, wall = best_rate(lambda: engine.simulate_open(s_cost, s_cfg, s_trace), len(s_trace), args.repeat)
        rows.append(("sample busiest hour, prefix caching", rate, wall, res.iterations, res.summary()))
    print(f"\n{'run':<42}{'requests/s':>12}{'wall s':>9}{'iterations':>12}{'TTFT p99 ms':>13}{'ITL p99 ms':>12}")
    for name, rate, wall, iters, s in rows:
        flag = "" if rate >= TARGET_RPS else "  (below target)"
        print(
            f"{name:<42}{rate:>12,.0f}{wall:>9.3f}{iters:>12,}{s['ttft_ms']['p99']:>13,.1f}"
            f"{s['itl_ms']['p99']:>12,.1f}{flag}"
        )

    # bare baselines over the same arrays
    def numpy_pass() -> float:
        inp = trace.input_tokens.astype(np.float64)
        out = trace.output_tokens.astype(np.float64)
        pre = cost.step_s(inp, inp * (inp + 1) / 2, inp * (inp + 1) / 2, inp, inp, np.ones_like(inp))
        ctx = inp + out / 2
        dec = cost.step_s(np.ones_like(inp), ctx, ctx, ctx, ctx, np.ones_like(inp)) * (out - 1)
        return float(np.sum(pre + dec))

    token_steps = _token_steps()
    token_steps(trace.output_tokens[:10])
    np_rate, np_wall = best_rate(numpy_pass, n, args.repeat)
    tk_rate, tk_wall = best_rate(lambda: token_steps(trace.output_tokens), n, args.repeat)
    print(f"{'baseline: numpy no-load latency pass':<42}{np_rate:>12,.0f}{np_wall:>9.4f}")
    print(f"{'baseline: bare numba loop per token-step':<42}{tk_rate:>12,.0f}{tk_wall:>9.4f}")

    copies = (1, 4) if args.quick else (1, 4, 16)
    saved = Path(tempfile.mkdtemp(prefix="sim-speed-")) / "trace.npz"
    np.savez(
        saved,
        arrival_s=trace.arrival_s,
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        cfg=np.array([cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.block_size, cfg.kv_blocks]),
    )
    print(
        f"\npeak RSS vs trace length (fresh process each; {n:,} requests per copy; growth = peak during the run - RSS before it)"
    )
    print(
        f"{'copies':>6}{'requests':>11}{'stream+histogram: peak MiB':>28}{'growth':>8}{'req/s':>10}"
        f"{'whole+arrays: peak MiB':>24}{'growth':>8}{'req/s':>10}"
    )
    for k in copies:
        a = run_child("stream", k, saved)
        b = run_child("whole", k, saved)
        print(
            f"{k:>6}{a['requests']:>11,}{a['peak_rss_mib']:>28,.1f}{a['peak_rss_mib'] - a['rss_before_mib']:>8,.1f}"
            f"{a['requests'] / a['wall_s']:>10,.0f}{b['peak_rss_mib']:>24,.1f}"
            f"{b['peak_rss_mib'] - b['rss_before_mib']:>8,.1f}{b['requests'] / b['wall_s']:>10,.0f}"
        )
    print(
        "stream+histogram holds only the requests in flight and fixed-size histograms: flat. whole+arrays holds the\n"
        "trace and every per-request array (O(n)), and every inter-token gap while they number <= "
        f"{engine.MAX_EXACT_GAPS:,}\n(so the 1x run, {tokens:,} gaps, stores them; longer runs switch to the gap histogram)."
    )
    saved.unlink()
    saved.parent.rmdir()
    main_rate = rows[0][1]
    print(
        f"\ntarget >= {TARGET_RPS:,} requests/s on one core: {'met' if main_rate >= TARGET_RPS else 'NOT met'} "
        f"({main_rate:,.0f} at rate x1)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
