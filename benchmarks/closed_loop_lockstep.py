"""How far the simulator's closed loop, started as one burst, moves TTFT from a desynchronised one (prints figures).

`engine.simulate_closed` starts its N clients at t = 0 by default (`start="burst"`), as `vllm bench serve
--max-concurrency N` does; with prompts of one length the N requests are admitted in the same iterations, finish
in the same iterations and are replaced together, so they stay in lockstep cohorts and each TTFT waits for the
whole cohort's prefills. `start="staggered"` spreads the clients' first sends over one lone request's E2E and
measures from the first replacement on. This script measures both ways:

1. the shipped sample's H100 chat sweep (1200 / 220 tokens, concurrency 1 to 128) at the sample's own fitted
   coefficients (metrics/calibration.json): TTFT p50 burst, staggered, and the same closed loop reached through
   `simulate_open(max_inflight=N)` with a ramp of arrivals (a cross-check of the staggered start);
2. how smooth each start is in the coefficients, which the calibration's search needs: mean TTFT and output
   tokens/s of a varied-length sweep (Llama-3.1-8B, H100, 100-2000 in / 50-400 out, 200 requests) as the
   prefill coefficient b1 moves 0% to 10% in 1% steps; "rough" is the largest step against the direction of
   the run (a smooth replay never moves backwards).

Run: `.venv/bin/python benchmarks/closed_loop_lockstep.py` (about 20 s). A finding for the closed-loop replay, not a
test: no figure here is asserted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from pipeline.sim import calibrate as C
    from pipeline.sim import engine as E

    sets = C.deployment_sets([ROOT / "data" / "raw" / "benchmarks"])
    h100 = next(ds for ds in sets if ds.deployment.gpu == "H100-SXM")
    cal = json.loads((ROOT / "metrics" / "calibration.json").read_text(encoding="utf-8"))
    fit = next(x for x in cal["deployments"] if x["key"] == h100.deployment.key)
    b = tuple(
        float(fit["coefficients"][k]) for k in ("fixed_s", "flops", "weight_bytes", "kv_bytes", "seqs", "allreduce")
    )
    cost = h100.cost.with_coeffs(C.Coefficients(b, "calibrated", "metrics/calibration.json"))  # type: ignore[arg-type]
    cfg = h100.limits.config()
    print(f"{h100.deployment.key}: request overhead h {1e3 * float(fit['request_overhead_s']):.1f} ms (not added)")
    print(
        f"{'concurrency':>11} {'measured p50':>13} {'burst p50':>13} {'capped p50':>14} {'staggered p50':>14}  (TTFT, ms)"
    )
    for lv in h100.levels:
        if lv.load_kind != "concurrency" or "_chat/" not in lv.name:
            continue
        c = int(lv.load)
        n = max(2000, 10 * c)
        ins = np.full(n + c, int(lv.input_mean), np.int64)
        outs = np.full(n + c, int(lv.output_mean), np.int64)
        lock = E.simulate_closed(cost, cfg, ins[:1], outs[:1], concurrency=c, requests=n)
        stag = E.simulate_closed(cost, cfg, ins[:1], outs[:1], concurrency=c, requests=n, start="staggered")
        alone = float(E.simulate_closed(cost, cfg, ins[:1], outs[:1], concurrency=1, requests=5).e2e_s.mean())
        arrivals = np.minimum(np.arange(n + c), c - 1) * alone / c
        staggered = E.simulate_open(cost, cfg, E.Trace(arrivals.astype(np.float64), ins, outs), max_inflight=c)
        print(
            f"{c:>11} {1e3 * lv.ttft_s['p50']:>13.1f} {1e3 * float(np.median(lock.ttft_s)):>13.1f} "
            f"{1e3 * float(np.median(staggered.ttft_s[c:n])):>14.1f} {1e3 * float(np.median(stag.ttft_s)):>14.1f}"
        )
    smoothness()
    return 0


def smoothness() -> None:
    """Part 2: mean TTFT and output tokens/s of a varied-length closed loop as b1 rises 0..10%, per start."""
    from pipeline import catalog
    from pipeline.sim import calibrate as C
    from pipeline.sim import engine as E
    from pipeline.sim.cost import Coefficients, for_deployment

    model = catalog.load_model("Llama-3.1-8B")
    gpu = catalog.find_gpu("H100-SXM", catalog.load_gpus())
    rng = np.random.default_rng(3)
    ins = rng.integers(100, 2000, 200).astype(np.int64)
    outs = rng.integers(50, 400, 200).astype(np.int64)
    b = np.array([0.0, 1.5, 1.3, 1.4, 0.0, 1.0])
    print("\nvaried lengths (Llama-3.1-8B, H100, bf16), b1 x 1.00 .. 1.10:")
    print(
        f"{'concurrency':>11} {'start':>10} {'TTFT mean first/last':>21} {'rough':>7} {'tok/s first/last':>17} {'rough':>7}"
    )
    for c in (4, 16, 64):
        for start in E.CLOSED_STARTS:
            ttft, tps = [], []
            for f in np.linspace(1.0, 1.1, 11):
                coeffs = Coefficients(
                    tuple(float(v) for v in b * np.array([1, f, 1, 1, 1, 1])), "calibrated", "b1 sweep"
                )
                cost = for_deployment(model, gpu, "bf16", "bf16", 1, 1, coeffs)  # type: ignore[arg-type]
                limits = C.engine_limits(
                    {"engine": "vllm", "weight_dtype": "bf16", "kv_dtype": "bf16"}, model, gpu, cost, 1, 1
                )  # type: ignore[arg-type]
                r = E.simulate_closed(
                    cost, limits.config(), ins, outs, concurrency=c, requests=max(200, 2 * c), start=start
                )
                ttft.append(1e3 * float(np.mean(r.ttft_s)))
                tps.append(r.output_tokens_total / r.duration_s)
            back_t = max(0.0, -min(np.diff(ttft) / np.array(ttft[:-1])))  # TTFT should rise with b1
            back_p = max(0.0, max(np.diff(tps) / np.array(tps[:-1])))  # throughput should fall
            print(
                f"{c:>11} {start:>10} {ttft[0]:>9.1f}/{ttft[-1]:<6.1f} ms {100 * back_t:>6.1f}% "
                f"{tps[0]:>8.0f}/{tps[-1]:<8.0f} {100 * back_p:>6.2f}%"
            )


if __name__ == "__main__":
    raise SystemExit(main())
