"""How far the simulator's closed loop, started as one burst, moves TTFT from a desynchronised one (prints figures).

`engine.simulate_closed` starts its N clients at t = 0. With prompts of one length, the N requests are admitted in
the same iterations, finish in the same iterations and are replaced together, so they stay in lockstep cohorts and
each TTFT waits for the whole cohort's prefills. A real server's timing jitter breaks such cohorts. This script
replays the shipped sample's H100 chat sweep (1200 / 220 tokens, concurrency 1 to 128) with the sample's own fitted
coefficients (metrics/calibration.json) both ways:

- lockstep: `simulate_closed` as calibration and the curve stage run it;
- staggered: the same closed loop reached through `simulate_open(max_inflight=N)`, the first N requests sent
  evenly over one lone request's E2E and every later one waiting for a free slot; TTFT medians past the ramp.

Run: `.venv/bin/python benchmarks/closed_loop_lockstep.py` (about 10 s). A finding for the closed-loop replay, not a
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
    print(f"{'concurrency':>11} {'measured p50':>13} {'lockstep p50':>13} {'staggered p50':>14}  (TTFT, ms)")
    for lv in h100.levels:
        if lv.load_kind != "concurrency" or "_chat/" not in lv.name:
            continue
        c = int(lv.load)
        n = max(2000, 10 * c)
        ins = np.full(n + c, int(lv.input_mean), np.int64)
        outs = np.full(n + c, int(lv.output_mean), np.int64)
        lock = E.simulate_closed(cost, cfg, ins[:1], outs[:1], concurrency=c, requests=n)
        alone = float(E.simulate_closed(cost, cfg, ins[:1], outs[:1], concurrency=1, requests=5).e2e_s.mean())
        arrivals = np.minimum(np.arange(n + c), c - 1) * alone / c
        staggered = E.simulate_open(cost, cfg, E.Trace(arrivals.astype(np.float64), ins, outs), max_inflight=c)
        print(
            f"{c:>11} {1e3 * lv.ttft_s['p50']:>13.1f} {1e3 * float(np.median(lock.ttft_s)):>13.1f} "
            f"{1e3 * float(np.median(staggered.ttft_s[c:n])):>14.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
