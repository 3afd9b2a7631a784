"""Step 7b fleet replay: several replicas of one engine behind a router (method.md 7b, issue 14).

The replicas are simulated in lockstep by event time inside one numba kernel (`_fleet`): at
each arrival the replicas the routing decision needs (every one for least-outstanding, else
only the one picked) are advanced (`engine._run`, external-arrival mode) until their next
iteration would start at or after the arrival, then the request joins the back of the picked
replica's waiting queue (one linked list per replica through the request arrays). Every replica has its own KV
blocks, scheduler state and prefix cache (LRU); all of them share the cost model and config.

Routers:
- `round-robin`: the k-th routed request goes to replica k mod N;
- `least-outstanding`: the replica with the fewest requests routed to it and not yet
  finished at the arrival instant (ties: the lowest replica number);
- `prefix-affinity`: a request with prefix hashes goes to replica hash(first block hash)
  mod N (the same first block always lands on the same replica: a stand-in for consistent
  hashing with a fixed replica set); a request without hashes falls back to
  least-outstanding.

A request whose context never fits one replica's KV capacity is rejected (counted, not routed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from pipeline.errors import InputError
from pipeline.sim import engine as eng
from pipeline.sim.cost import StepCost
from pipeline.sim.engine import EngineConfig, SimResult, Trace

ROUTERS = ("round-robin", "least-outstanding", "prefix-affinity")
_ROUTER_CODE = {name: i for i, name in enumerate(ROUTERS)}


@dataclass
class FleetResult:
    """The merged per-request result of the fleet, plus per-replica figures."""

    result: SimResult
    router: str
    replicas: int
    busy_share: list[float]  # per replica: busy seconds / the fleet's simulated span
    preemptions: list[int]  # per replica
    routed: list[int]  # requests routed to each replica
    assignment: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # replica per request (-1 rejected)

    def summary(self) -> dict[str, Any]:
        """The merged summary with `replicas: [{replica, routed, busy_share, preemptions}]`."""
        out = self.result.summary()
        out["router"] = self.router
        out["replica_count"] = self.replicas
        out["replicas"] = [
            {
                "replica": i,
                "routed": self.routed[i],
                "busy_share": round(self.busy_share[i], 6),
                "preemptions": self.preemptions[i],
            }
            for i in range(self.replicas)
        ]
        return out


@njit(cache=True)
def _affinity(key: np.int64, replicas: int) -> np.int64:
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64(h >> np.uint64(29)) % np.int64(replicas)


@njit(cache=True)
def _fleet(
    c: np.ndarray,
    icfg: np.ndarray,
    arr: np.ndarray,
    inp: np.ndarray,
    out: np.ndarray,
    hoff: np.ndarray,
    hval: np.ndarray,
    measure: np.ndarray,
    comp: np.ndarray,
    target: np.ndarray,
    gen: np.ndarray,
    held: np.ndarray,
    npre: np.ndarray,
    status: np.ndarray,
    first_s: np.ndarray,
    last_s: np.ndarray,
    itl_sum: np.ndarray,
    fin_s: np.ndarray,
    running: np.ndarray,
    qnext: np.ndarray,
    gi: np.ndarray,
    gf: np.ndarray,
    lru_key: np.ndarray,
    lru_prev: np.ndarray,
    lru_next: np.ndarray,
    table: np.ndarray,
    gap_hist: np.ndarray,
    gaps: np.ndarray,
    gapn: np.ndarray,
    sched_r: np.ndarray,
    sched_k: np.ndarray,
    router: int,
    routed: np.ndarray,
    assign: np.ndarray,
) -> int:
    """Route every arrival in order (advancing the replicas the choice needs to it first), then drain all of them;
    returns the rejected count."""
    nrep = gi.shape[0]
    n = len(arr)
    bs = icfg[2]
    kv_blocks = icfg[3]
    rejected = 0
    k_rr = 0
    for i in range(n):
        t = arr[i]
        if (inp[i] + out[i] - 1 + bs - 1) // bs > kv_blocks:
            status[i] = eng._REJECTED
            assign[i] = -1
            rejected += 1
            continue
        pick = -1
        if router == 0:
            pick = k_rr % nrep
            k_rr += 1
        elif router == 2 and hoff[i + 1] > hoff[i]:
            pick = _affinity(hval[hoff[i]], nrep)
        # advance to t the replicas the decision needs (all of them for least-outstanding, else the one picked;
        # a replica advanced later to a later time runs the same iterations: the kernel resumes exactly)
        lo, hi = (pick, pick + 1) if pick >= 0 else (0, nrep)
        for p in range(lo, hi):
            if gf[p, eng.F_NOW] >= t or (gi[p, eng.G_NRUN] == 0 and gi[p, eng.G_QLEN] == 0):
                continue  # already past t, or idle: nothing to run before t (skips the call)
            eng._run(
                c,
                icfg,
                arr,
                inp,
                out,
                hoff,
                hval,
                measure,
                comp,
                target,
                gen,
                held,
                npre,
                status,
                first_s,
                last_s,
                itl_sum,
                fin_s,
                running[p],
                qnext,
                gi[p],
                gf[p],
                lru_key[p],
                lru_prev[p],
                lru_next[p],
                table[p],
                gap_hist,
                gaps,
                gapn,
                sched_r,
                sched_k,
                t,
            )
        if pick < 0:
            best = 1 << 62
            for p in range(nrep):
                o = routed[p] - gi[p, eng.G_DONE]
                if gf[p, eng.F_NOW] > t:  # the replica's last iteration ends after t: its finishes are not yet
                    o += gi[p, eng.G_LASTFIN]
                if o < best:
                    best = o
                    pick = p
        eng._push_back(i, qnext, gi[pick])
        status[i] = eng._QUEUED
        routed[pick] += 1
        assign[i] = pick
        if gf[pick, eng.F_NOW] < t:
            gf[pick, eng.F_NOW] = t
    for p in range(nrep):
        eng._run(
            c,
            icfg,
            arr,
            inp,
            out,
            hoff,
            hval,
            measure,
            comp,
            target,
            gen,
            held,
            npre,
            status,
            first_s,
            last_s,
            itl_sum,
            fin_s,
            running[p],
            qnext,
            gi[p],
            gf[p],
            lru_key[p],
            lru_prev[p],
            lru_next[p],
            table[p],
            gap_hist,
            gaps,
            gapn,
            sched_r,
            sched_k,
            math.inf,
        )
    return rejected


def check_router(router: str) -> int:
    """The router's code, or InputError naming the allowed ones."""
    if router not in _ROUTER_CODE:
        raise InputError(f"--router = {router!r}; expected one of {', '.join(ROUTERS)}")
    return _ROUTER_CODE[router]


def simulate_fleet(
    cost: StepCost,
    cfg: EngineConfig,
    trace: Trace,
    replicas: int,
    router: str = "least-outstanding",
    rate_scale: float = 1.0,
) -> FleetResult:
    """Open-loop replay of `trace` (arrivals divided by rate_scale) through `replicas` engines behind `router`."""
    code = check_router(router)
    if not isinstance(replicas, int | np.integer) or isinstance(replicas, bool) or replicas < 1:
        raise InputError(f"--replicas = {replicas!r}; expected an integer >= 1")
    scale = eng._check_scale(rate_scale)
    cfg.check()
    trace.check()
    n = len(trace)
    if n == 0:
        raise InputError("trace: no requests; expected at least one arrival")
    nrep = int(replicas)
    hoff, hval = eng._hash_csr(trace)
    hbt = trace.hash_block_tokens
    slots = eng._lru_slots(cfg, hbt, len(hval)) if cfg.enable_prefix_caching and len(hval) else 0
    icfg = np.array(
        [
            cfg.max_num_seqs,
            cfg.max_num_batched_tokens,
            cfg.block_size,
            cfg.kv_blocks,
            int(slots > 0),
            hbt,
            2,
            int(cfg.mixed_prefill),
        ],
        dtype=np.int64,
    )
    arr = np.ascontiguousarray(trace.arrival_s, np.float64) / scale
    inp = np.ascontiguousarray(trace.input_tokens, np.int64)
    out = np.ascontiguousarray(trace.output_tokens, np.int64)
    gi = np.zeros((nrep, eng.N_GI), np.int64)
    gi[:, eng.G_FREE] = cfg.kv_blocks
    gi[:, eng.G_LRU_HEAD] = -1
    gi[:, eng.G_LRU_TAIL] = -1
    gf = np.zeros((nrep, 2), np.float64)
    gf[:, eng.F_NOW] = arr[0]
    size = 1 << max(1, int(2 * slots - 1).bit_length()) if slots else 2
    total_gaps = int(np.maximum(out - 1, 0).sum())
    gap_slots = total_gaps if total_gaps <= eng.MAX_EXACT_GAPS else 0
    state = {
        "comp": np.zeros(n, np.int64),
        "target": inp.copy(),
        "gen": np.zeros(n, np.int64),
        "held": np.zeros(n, np.int64),
        "npre": np.zeros(n, np.int64),
        "status": np.zeros(n, np.int8),
        "first_s": np.full(n, np.nan),
        "last_s": np.full(n, -1.0),
        "itl_sum": np.zeros(n),
        "fin_s": np.full(n, np.nan),
    }
    gap_hist = np.zeros(eng.HIST_BINS, np.int64)
    gaps = np.zeros(gap_slots, np.float64)
    gapn = np.zeros(1, np.int64)
    routed = np.zeros(nrep, np.int64)
    assign = np.full(n, -1, np.int64)
    measure = np.ones(n, np.int8)
    rejected = _fleet(
        cost.packed(),
        icfg,
        arr,
        inp,
        out,
        hoff,
        hval,
        measure,
        state["comp"],
        state["target"],
        state["gen"],
        state["held"],
        state["npre"],
        state["status"],
        state["first_s"],
        state["last_s"],
        state["itl_sum"],
        state["fin_s"],
        np.zeros((nrep, cfg.max_num_seqs), np.int64),
        np.full(n, -1, np.int64),  # the waiting queues: one linked list per replica through the requests
        gi,
        gf,
        np.zeros((nrep, slots), np.int64),
        np.full((nrep, slots), -1, np.int64),
        np.full((nrep, slots), -1, np.int64),
        np.full((nrep, size), -1, np.int64),
        gap_hist,
        gaps,
        gapn,
        np.zeros(cfg.max_num_seqs, np.int64),
        np.zeros(cfg.max_num_seqs, np.int64),
        code,
        routed,
        assign,
    )
    col = eng._Collector(n, "arrays")
    st = state["status"]
    col.add(
        {
            "orig": np.arange(n, dtype=np.int64),
            "arr": arr,
            "first_s": state["first_s"],
            "fin_s": state["fin_s"],
            "itl_sum": state["itl_sum"],
            "npre": state["npre"],
            "out": out,
            "measure": measure,
            "status": st,
        }
    )
    end = float(gf[:, eng.F_NOW].max())
    span = end - float(arr[0])
    busy = gf[:, eng.F_BUSY]
    ngaps = int(gapn[0])
    exact = gap_slots > 0 and int(gap_hist.sum()) == 0
    s = col.served
    merged = SimResult(
        ttft_s=col.a["ttft"][s],
        e2e_s=col.a["e2e"][s],
        itl_mean_s=col.a["itl"][s],
        arrival_s=col.a["arr"][s],
        finish_s=col.a["fin"][s],
        preemptions=col.npre[s],
        itl_gaps_s=gaps[:ngaps].copy() if exact else None,
        busy_s=float(busy.sum() / nrep),
        duration_s=float(col.last_fin - col.first_arr) if col.count else 0.0,
        iterations=int(gi[:, eng.G_ITERS].sum()),
        preemptions_total=int(col.npre_total),
        output_tokens=col.out[s],
        requests=col.count,
        rejected=int(rejected),
        output_tokens_total=col.out_total,
        hist=None if exact else {"gap": gap_hist},
        sums={"gap": float(state["itl_sum"][s].sum())},
        span_s=span,
    )
    return FleetResult(
        result=merged,
        router=router,
        replicas=nrep,
        busy_share=[float(b / span) if span > 0 else 0.0 for b in busy],
        preemptions=[int(x) for x in gi[:, eng.G_PREEMPT]],
        routed=[int(x) for x in routed],
        assignment=assign,
    )
