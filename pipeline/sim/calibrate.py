"""Step 7b calibration: the iteration-time coefficients of each deployment, fitted on its measured sweeps.

One deployment is the manifest identity (model, GPU, TP, PP, weight/KV/compute dtype, engine). Its
levels (every imported sweep of it, normalized by `pipeline.benchmarks`) are fitted in two steps
(method.md 7b). The fitted vector theta is b0..b5 of `cost.TERMS` plus h, a per-request latency
outside the engine (HTTP, tokenization, the client) that TTFT and E2E carry: a 30 ms TTFT for a
200-token prompt on an H100 is mostly h, and without it the prefill term absorbs it.

1. **Aggregates, NNLS.** A decode row per level: the mean ITL is one iteration holding the decoding
   batch (Little's law on the decode phase, rps x (E2E - TTFT), else output tokens/s x ITL, else the
   closed-loop concurrency) plus the prefill tokens that arrive meanwhile (rps x input x ITL). A
   prefill row per low-load level (TTFT within 2x of its curve's lowest): the prompt's prefill
   iterations with the decoding batch riding along, half an iteration of waiting, and h. Rows are
   divided by the measured value (relative error). Decode and prefill rows are fitted in turn (the
   decode rows with the FLOPs term and h held, then those two on the prefill rows, a few rounds): a
   joint NNLS lets the many decode rows zero the prefill term. A joint NNLS with both row groups
   weighted equally is the other candidate; the lower balanced loss wins. A weak pull toward the
   roofline prior (rows of weight `PRIOR_WEIGHT`) splits what one deployment cannot tell apart (the
   fixed cost and the weight bytes are both constant per iteration).
   In an overlap form of the iteration time (cost.STEP_FORMS: a max of the FLOPs and the memory reads) a row is
   piecewise linear in b: `fit_step1` builds every row on the side of each max that the current b makes the
   larger (the prior's first), refits, and rebuilds, until the sides stop changing (ACTIVE_ROUNDS); and a decode
   row is a mixture of the iterations that carry a prefill chunk and those that do not (a mean of maxes is not
   the max of the mean iteration; `_mixture_terms`).
2. **Replay.** Every level is replayed through the simulator (pipeline/sim/engine.py: closed loop
   at its concurrency, open loop at its rate with seeded Poisson arrivals, an unlimited rate as every
   request at t = 0) with the benchmark's own lengths (per-request lengths when the file has them,
   else a uniform spread matching the nominal and mean lengths, else the mean), and theta is refined
   in log space on the sum of absolute relative errors of throughput, ITL and TTFT (p50, and p99
   where present), from step 1, in a few dozen passes: least squares first, then a derivative-free
   pattern search (a queue above capacity makes the objective piecewise; least squares stalls on it).

Physical bounds (a refinement of method.md 7b, which asks only b >= 0): b1 >= 1, b2 >= 1 and b3 >= 1
(`PHYSICAL_LOWER`), in both steps and for the pooled fit (a GPU-family scale below 1 is clipped at the bounds).
An iteration cannot run its FLOPs above the GPU's peak (MFU <= 100%) nor read weights or KV above the HBM
bandwidth. Without the bounds the fit reached b1 = 0.12-0.36 on several real deployments (3-8x peak), the
prefill time then carried by the per-request overhead h (16-38 ms). In the additive form b1 sat at its bound on 6
of the 7 dev deployments of benchmarks/fidelity.py: that form adds the weight-read time (b2 W/B) to the FLOPs
time where real kernels overlap them. In the overlap-phase form (cost.STEP_FORM) b1 leaves the bound on 3 of the 6
calibrated ones (1.04-2.03); it stays at 1 where prefix-cache hits the replay does not know of shorten prefills
(the Qwen console sweep) and on the A100 70B and H100 70B TP4 sweeps.

Prefix caching: where a manifest's notes state the workload's shared prefix (inference-perf shared_prefix:
"system prompt N ... G system prompts x U users"), each level's replay carries one prefix hash block of N tokens
per group (the groups in turn) with the server's prefix cache on, and the step-1 rows leave the cached tokens
(N rounded down to KV blocks) out of the prefill. Where the source does not state the structure (vLLM's seeded
random dataset repeated across runs) nothing is replayed and the fidelity benchmark flags the levels.
Where a vLLM sweep's result files carry the very same per-request prompts (identical `input_lens`, as vLLM's
seeded dataset sampling sends them) to a server that caches prefixes (`prefix_caching_on`: the notes' flag, else
vLLM >= 0.8), every open-loop run but the first by `date` finds those prompts cached (`mark_warm_runs`, WARM_RUNS):
it is replayed with a chain of 16-token hash blocks per prompt, resident before the first arrival
(engine.simulate_open warm=True), and its step-1 rows leave every whole block of each prompt out of the prefill.

The engine knobs of a deployment (max_num_seqs, max_num_batched_tokens) are the server flags its
manifest's notes state, else the engine's defaults, raised when the measured decode batch exceeds
them; KV blocks come from the memory stage's engine profile. Prefill/decode mixing follows the manifest's
engine: vLLM mixes prefill chunks into decode iterations; SGLang's default scheduler (no
`--enable-mixed-chunk` in the notes) runs prefill batches alone, prefill first (EngineConfig.mixed_prefill).

Pooled coefficients (POOL): by default the per-parameter median of the deployments' own refined fits, with
the closed-form scale per GPU family (`gpu.arch`) on the six terms at that theta (`pool_of_fits`); or
(pool "step1") one joint step-1 fit over every deployment's rows with that scale alternated
(`fit_pooled`; `refine_pooled` can refine it on every deployment's levels replayed; off by default, see
REFINE_POOL). They serve deployments without a sweep (basis `transferred`). Residuals, relative (predicted / measured - 1) per metric: in-sample,
leave-one-level-out (refitted without the level) and leave-one-deployment-out (pooled fit without
the deployment). Their 10th-90th percentiles are the prediction interval.

A deployment whose levels cannot identify b (one level, one batch size, or no TTFT at low load)
falls back to the pooled coefficients and says so (`warnings`, basis `transferred`): not an error.
A manifest contradicting its files (model, lengths) or a NaN/inf in a measured field is an
InputError naming the file.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

from pipeline.errors import InputError
from pipeline.sim.cost import TERMS, Coefficients, StepCost

METRICS = ("throughput", "itl_mean", "ttft", "ttft_p50")
"""Residual metrics: output tokens/s, mean ITL, TTFT (p99 where the file has it, else the percentile it has: the
issue's target metric), and TTFT p50 where the file has it (reported beside it: the median is far less noisy than
the p99 of a few hundred requests, and shows what part of a TTFT error is the tail)."""

TTFT_ORDER = ("p99", "p95", "p90", "p50", "mean")
"""Which TTFT statistic a level is judged on: the first the file states."""

PRIOR_WEIGHT = 0.1
"""Weight of each prior row (a relative deviation of b from the roofline) against a data row (weight 1)."""

ZERO_SCALES = {0: 1e-3, 4: 1e-4}
"""Terms whose prior is 0 are pulled toward 0 on these scales (s): b0 per iteration, b4 per sequence."""

FIRST_ROUND_SHARE = 0.01
"""A closed-loop replay's first round (one request per client, all sent at t = 0) can set its TTFT p99 once it
holds this share of the measured requests or more (`first_round_tail`)."""
FIRST_ROUND_TAIL = 1.5
"""... and it is said to set it when the p99 is above this many times the p99 without it."""
FIRST_ROUND_REPLAY = False
"""Replay a closed-loop sweep whose files do not hold their replays' first-round tail without that round
(`mark_first_round`; params.yaml calibration.first_round_replay). Off by default: on the shipped sample it cut the
H100 fit's in-sample throughput / ITL / TTFT p99 errors from 13 / 13 / 126% to 4 / 5 / 49%, but its b1 of 1.72 then
puts the 70B's TTFT p99 at Mooncake's prompt lengths at 3.6 s at concurrency 1, and the real-log run
(tests/test_issue15_acceptance.py) can no longer price the benchmarked deployment (docs/engine_model.md 17)."""
LOW_LOAD_TTFT = 2.0
"""A level's TTFT is a prefill row when it is within this factor of the lowest TTFT of its curve."""

SAME_BATCH = 1.1
"""Levels whose decode batches all lie within this factor identify no batch-dependent term."""

REFINE_NFEV = 60
"""Simulator passes (every level once) of the step-2 refinement of one deployment (a few dozen, method.md)."""

REFINE_WORK = 2.8e8
"""Decoded tokens the refinement of one deployment may simulate in all (~10 s of the simulator on one core of a
2-core machine; a pass's levels run on parallel threads, REFINE_THREADS, so the fit's wall time is less)."""

MIN_PASSES = 24
"""... but never fewer passes than this."""

LS_MIN_PASSES = 40
"""Below this many passes the refinement is the pattern search alone (on the SGLang fixture's 24 passes it reached
a sum of |errors| of 8.0 against 9.4 with least squares first; at 60 passes least squares first is better)."""

REFINE_POOL = False
"""Refine the pooled fit through the simulator too (`refine_pooled`). Off by default: on the three real fixtures it
moved the leave-one-deployment-out medians from 11/21/76% to 14/28/81% (throughput/ITL/TTFT) at 4x the time."""

POOL = "median-of-fits"
"""How the pooled fit (deployments without a sweep, and leave-one-deployment-out) is made (`POOLS`): "step1", the
joint NNLS over every deployment's aggregates (`fit_pooled`); "median-of-fits", the per-parameter median of the
deployments' own refined fits with the step-1 family scale at it (`pool_of_fits`). On the fidelity benchmark's 7 dev
deployments (benchmarks/fidelity.py) the median moved leave-one-deployment-out from 3.7/31.5/42.2% to 2.3/20.2/40.0%
(throughput/ITL/TTFT p99): the step-1 pool's per-sequence term b4 (6.3e-5 s, against a median of 7e-6 s over the
refined fits) made ITL too high at large batches."""

POOLS = ("step1", "median-of-fits")

LOLO_NFEV = 12
"""Passes of each leave-one-level-out refit (`sizing calibrate --lolo-passes`): step 1 on the other levels, then
this many refinement passes (fewer than the fit's own, for time; the fidelity benchmark can use the same number)."""

LOLO_WARM = True
"""Leave-one-level-out refits with refinement passes (lolo_passes > 1) also consider the full fit's theta as their
starting point, and start from the better of it and their own step 1 on the remaining levels (scored in one pass
each). Cold starts at 8 passes left the sample chat sweep's interval under-converged (+9.8..+28.2% throughput)."""


def _step_form() -> str:
    """The iteration-time form new coefficients take (cost.STEP_FORM, read when called)."""
    from pipeline.sim import cost as _cost

    return _cost.STEP_FORM


MAX_REPLAY_REQUESTS = 2000
"""Requests replayed per level (the first ones of the measured count; saturation runs keep theirs up to 3x)."""

QUEUE_TAIL = 2.0
"""A level whose measured TTFT p99 exceeds this many times its p50 has a p99 set by queueing episodes
(`LevelData.queued_tail`)."""

QUEUED_REPLAY = 3
"""... and, open loop, replays up to this many times MAX_REPLAY_REQUESTS of its measured requests: the p99 of a queue
is set by a few congestion episodes, so a short replay's p99 swings with the arrival seed. On the Mixtral-8x7B TP2
rate-20 stage of benchmarks/fidelity.py (12,000 requests measured, p99 256 ms against p50 64 ms) the simulator's p99
moved by 47% (std / mean over 10 seeds) at 2000 requests; the fit matched seed 0's congestion (in-sample -0.3%)
and the leave-one-level-out refit missed by +122%."""

MEASURED_FIELDS = (
    "load",
    "rps",
    "output_tps",
    "input_tokens_mean",
    "output_tokens_mean",
    "duration_s",
    "completed",
    *(f"{m}_{s}_ms" for m in ("ttft", "itl", "e2e") for s in ("mean", "p50", "p90", "p95", "p99")),
)
TPOT_MISMATCH = 0.25
"""A stated mean TPOT further than this from (E2E - TTFT) / (output - 1) of the same means is replaced by it."""

WARM_BLOCK = 16
"""Tokens per hash block of a level whose prompts the server's prefix cache holds (`warm_prompts`): vLLM's default
KV block size, the granularity its prefix cache reuses."""

WARM_RUNS = True
"""Mark the runs that repeat an earlier run's prompts against a prefix-caching server (`mark_warm_runs`). vLLM's
benchmark_serving samples its dataset with a fixed seed, so every run of a sweep sends the very same prompts (the
files' per-request `input_lens` are identical), and vLLM V1 (0.8 on) caches prefixes by default: every run after
the first finds each prompt's whole KV blocks cached. On the A100-40GB 8x TP8 Llama-3.3-70B fixture (vLLM 0.8.3;
rates 1, 4, 16, inf, run in that order) the unlimited-rate burst's 200 prompts (42,659 tokens) reached their first
token by 450 ms (p99): a cold prefill of those tokens needs ~2.4 s at the GPUs' peak FLOPs."""

SENT_RE = re.compile(r"the client sent ([0-9.]+) req/s")
INFLIGHT_RE = re.compile(r"it held about ([0-9]+) requests in flight")
"""An open-loop stage whose client fell behind its schedule with its concurrency cap full (the inference-perf
reader's note, `pipeline.benchmarks.inference_perf.client_inflight`) replays its requested rate through a client of
that many slots (`LevelData.client_cap`, `engine.simulate_open(max_inflight=)`): the server held a fixed number of
requests, not a Poisson stream at the sent rate whose queue grows through the run."""
CLIENT_BOUND = True  # benchmarks/fidelity.py --ablate client-bound: replay such stages open loop at the sent rate
CLOSED_LIKE = ("closed", "open_capped")  # replays whose clients wait h per request too (sim_metrics' `closed`)
RAW_ALLOWED_INF = ("request_rate", "max_concurrency", "rate", "requested_rate", "burstiness")


@dataclass(frozen=True)
class Deployment:
    """The manifest identity a calibration belongs to."""

    model: str
    gpu: str
    tp: int
    pp: int
    weight_dtype: str
    kv_dtype: str
    compute_dtype: str
    engine: str

    @property
    def key(self) -> str:
        return (
            f"{self.model}/{self.gpu}/tp{self.tp}-pp{self.pp}/w-{self.weight_dtype}/kv-{self.kv_dtype}"
            f"/c-{self.compute_dtype}/{self.engine}"
        )

    def matches(self, model: str, gpu: str, tp: int, pp: int, weights: str, kv: str, engine: str | None) -> bool:
        """Same model, GPU, TP, PP and dtypes (and engine when one is named)."""
        return (
            _norm(self.model) == _norm(model)
            and _norm(self.gpu) == _norm(gpu)
            and (self.tp, self.pp, self.weight_dtype, self.kv_dtype) == (tp, pp, weights, kv)
            and (engine is None or _norm(self.engine) == _norm(engine))
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "gpu": self.gpu,
            "tp": self.tp,
            "pp": self.pp,
            "weight_dtype": self.weight_dtype,
            "kv_dtype": self.kv_dtype,
            "compute_dtype": self.compute_dtype,
            "engine": self.engine,
        }


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


ENGINE_DEFAULTS = {"vllm": (256, 8192), "sglang": (4096, 8192)}
"""(max_num_seqs, max_num_batched_tokens) an engine runs with when the manifest's notes state no flags
(vLLM's defaults; SGLang's running-request cap is its KV pool, so effectively the KV blocks)."""

FLAG_RE = {
    "max_num_seqs": re.compile(r"--max[-_]num[-_]seqs[= ](\d+)|--max[-_]running[-_]requests[= ](\d+)"),
    "max_num_batched_tokens": re.compile(
        r"--max[-_]num[-_]batched[-_]tokens[= ](\d+)|--chunked[-_]prefill[-_]size[= ](\d+)"
    ),
    "max_model_len": re.compile(r"--max[-_]model[-_]len[= ](\d+)|--context[-_]length[= ](\d+)"),
    "gpu_memory_utilization": re.compile(
        r"--gpu[-_]memory[-_]utilization[= ]([0-9.]+)|--mem[-_]fraction[-_]static[= ]([0-9.]+)"
    ),
}


@dataclass(frozen=True)
class EngineLimits:
    """The scheduler knobs of one deployment (the simulator's EngineConfig has the same names)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_blocks: int = 10**9
    block_size: int = 16
    enable_prefix_caching: bool = False
    source: str = "defaults"
    mixed_prefill: bool = True  # vLLM V1 mixes prefill chunks into decode iterations; SGLang (default) does not

    def config(self) -> Any:
        """The simulator's EngineConfig."""
        from pipeline.sim.engine import EngineConfig

        return EngineConfig(
            max_num_seqs=int(self.max_num_seqs),
            max_num_batched_tokens=int(self.max_num_batched_tokens),
            block_size=int(self.block_size),
            kv_blocks=int(self.kv_blocks),
            enable_prefix_caching=self.enable_prefix_caching,
            mixed_prefill=bool(self.mixed_prefill),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "kv_blocks": self.kv_blocks,
            "block_size": self.block_size,
            "mixed_prefill": self.mixed_prefill,
            "source": self.source,
        }


def engine_flags(text: str) -> dict[str, float]:
    """Server flags written in a manifest's notes (`--max-num-seqs=128`, SGLang's `--max-running-requests`...)."""
    out: dict[str, float] = {}
    for key, rx in FLAG_RE.items():
        m = rx.search(text or "")
        if m:
            out[key] = float(next(g for g in m.groups() if g))
    if re.search(r"--no-enable-chunked-prefill", text or ""):
        out["no_chunked_prefill"] = 1.0
    if re.search(r"--enable[-_]mixed[-_]chunk", text or ""):
        out["mixed_chunk"] = 1.0
    return out


def engine_limits(manifest: dict[str, Any], model: Any, gpu: Any, cost: StepCost, tp: int, pp: int) -> EngineLimits:
    """The deployment's scheduler knobs: the flags its manifest's notes state, else the engine's defaults; KV
    blocks from the memory stage's engine profile (10^9, unlimited, when it cannot say)."""
    engine = str(manifest.get("engine", "vllm")).lower()
    seqs, tokens = ENGINE_DEFAULTS.get(engine, ENGINE_DEFAULTS["vllm"])
    flags = engine_flags(str(manifest.get("notes") or ""))
    src = "notes flags" if flags else f"{engine} defaults"
    seqs = int(flags.get("max_num_seqs", seqs))
    mml = int(flags["max_model_len"]) if "max_model_len" in flags else None
    tokens = int(flags.get("max_num_batched_tokens", tokens))
    if "no_chunked_prefill" in flags and mml:
        tokens = max(tokens, mml)
    blocks = 10**9
    try:
        from pipeline import memory, parallelism

        settings = memory.EngineSettings(
            gpu_memory_utilization=float(flags.get("gpu_memory_utilization", 0.9)),
            max_num_batched_tokens=tokens,
            max_num_seqs=seqs,
            max_model_len=mml,
        )
        ep = parallelism.expert_parallel(model, tp)
        prof = memory.engine_profile(
            model, gpu, manifest["weight_dtype"], manifest["kv_dtype"], tp, pp, ep, float(mml or 8192), settings
        )
        if prof.kv_cache_blocks > 0:
            blocks = int(prof.kv_cache_blocks)
            src += f", {prof.kv_cache_tokens:,} KV tokens (engine profile)"
    except (InputError, ValueError, TypeError, AttributeError, KeyError, ZeroDivisionError):
        pass
    # SGLang's default scheduler runs a prefill batch alone (prefill first) unless --enable-mixed-chunk; vLLM V1
    # (and V0 with chunked prefill) puts prefill chunks into the decode iterations
    mixed = engine != "sglang" or "mixed_chunk" in flags
    if not mixed:
        src += "; prefill batches run apart from decode (SGLang default, no --enable-mixed-chunk)"
    return EngineLimits(seqs, tokens, blocks, 16, False, src, mixed)


@dataclass
class LevelData:
    """One measured level of one deployment, per replica, in SI units (s, tokens)."""

    name: str  # file (+ load) for messages and tables
    curve: str
    load_kind: str  # concurrency | request_rate
    load: float  # per replica (inf: every request sent at once)
    rps: float | None
    output_tps: float | None
    ttft_s: dict[str, float]  # mean/p50/p90/p95/p99 present
    itl_s: float | None  # mean ITL (TPOT or inter-token gap, as the file states), else its median
    itl_kind: str  # tpot (per-request mean gap) | itl (every inter-token gap)
    itl_stat: str  # mean | p50
    e2e_s: float | None
    input_mean: float
    output_mean: float
    input_lens: np.ndarray  # int64, the replayed length distribution
    output_lens: np.ndarray
    lengths_source: str
    requests: int  # measured completed requests per replica
    saturation: bool
    notes: list[str] = field(default_factory=list)  # what calibration derived instead of reading
    prefix_tokens: int = 0  # a shared prompt prefix the source states (tokens; 0: none stated)
    prefix_groups: int = 0  # how many distinct such prefixes the requests share
    warm_prompts: bool = False  # the server's prefix cache holds these very prompts from an earlier run (WARM_RUNS)
    pool_users: int = 0  # distinct prompts per prefix group the client cycles through (PROMPT_POOL; 0: unbounded)
    client_cap: int = 0  # requests the client holds in flight at most, where it fell behind (INFLIGHT_RE; 0: none)
    ttft_below_physics: bool = False  # its TTFT beats any cold prefill at peak FLOPs (DROP_UNPHYSICAL_TTFT)
    first_round_unmeasured: bool = False  # closed loop replayed without its first round (FIRST_ROUND_REPLAY)

    def pool_prompts(self) -> int:
        """How many distinct prompts the client cycles through (groups x users), 0 when not a finite pool."""
        return self.prefix_groups * self.pool_users if self.prefix_tokens > 0 and self.pool_users > 0 else 0

    def pool_lengths(self) -> np.ndarray:
        """The pool's prompt lengths (`pool_prompts` of them): evenly spaced quantiles of `input_lens` (the
        measured length distribution), in a fixed shuffled order so groups do not sort by length."""
        lens = np.sort(np.asarray(self.input_lens, dtype=np.int64))
        k = self.pool_prompts()
        picked = lens[np.minimum(((np.arange(k) + 0.5) * len(lens) / k).astype(np.int64), len(lens) - 1)]
        return picked[np.random.default_rng(11).permutation(k)]

    def cached_tokens(self, block_size: int = 16) -> np.ndarray:
        """Prompt tokens a warm prefix cache skips, per request of `input_lens`: every whole KV block of the prompt
        but the last token's (the engine recomputes it) when the cache holds the prompts themselves
        (`warm_prompts`); for a cold prompt pool (`pool_prompts`) the same for the repeats, the stated shared
        prefix for a group's later users' first requests and nothing for each group's first request, in the
        shares the measured request count implies; else the stated shared prefix for every request."""
        lens = np.asarray(self.input_lens, dtype=np.int64)
        whole = np.maximum(lens - 1, 0) // block_size * block_size
        if self.warm_prompts:
            return whole
        prefix = np.full(len(lens), self.cached_prefix_tokens(block_size), dtype=np.int64)
        pool = self.pool_prompts()
        if pool:
            n = max(self.requests, pool)
            cold = round(len(lens) * self.prefix_groups / n)
            first = round(len(lens) * pool / n)
            out = whole.copy()
            out[:first] = prefix[:first]
            out[:cold] = 0
            return out
        return prefix

    def cached_prefix_tokens(self, block_size: int = 16) -> int:
        """Prompt tokens a warm prefix cache skips: the stated shared prefix, capped at the shortest prompt minus
        one token (the engine recomputes the last prompt token), rounded down to whole KV blocks."""
        if self.prefix_tokens <= 0 or self.prefix_groups <= 0:
            return 0
        cap = min(self.prefix_tokens, int(self.input_lens.min()) - 1)
        return max(cap, 0) // block_size * block_size

    def queued_tail(self) -> bool:
        """Whether the measured TTFT p99 is set by queueing episodes: above QUEUE_TAIL x the p50 (both stated)."""
        p50, p99 = self.ttft_s.get("p50"), self.ttft_s.get("p99")
        return bool(p50 and p99 and p99 > QUEUE_TAIL * p50)

    def ttft_stat(self) -> str | None:
        """The TTFT statistic this level is judged on (p99 where present)."""
        return next((s for s in TTFT_ORDER if s in self.ttft_s), None)

    def ttft_typical_s(self) -> float | None:
        """Mean TTFT, else its median (the aggregate rows' target)."""
        return self.ttft_s.get("mean", self.ttft_s.get("p50"))

    def measured(self) -> dict[str, float]:
        """The measured value of each residual metric the level has (s, tokens/s)."""
        out: dict[str, float] = {}
        tput = self.output_tps if self.output_tps else None
        if tput:
            out["throughput"] = tput
        if self.itl_s:
            out["itl_mean"] = self.itl_s
        stat = self.ttft_stat()
        if stat:
            out["ttft"] = self.ttft_s[stat]
        if "p50" in self.ttft_s:
            out["ttft_p50"] = self.ttft_s["p50"]
        return out

    def decode_batch(self, limits: EngineLimits) -> float:
        """Sequences decoding at once: Little's law on the decode phase, else output tokens/s x ITL, else the
        closed-loop concurrency; clipped to [1, max_num_seqs]."""
        ttft = self.ttft_typical_s()
        if self.rps and self.e2e_s and ttft is not None and self.e2e_s > ttft:
            n = self.rps * (self.e2e_s - ttft)
        elif self.output_tps and self.itl_s:
            n = self.output_tps * self.itl_s
        elif self.load_kind == "concurrency":
            n = self.load
        else:
            n = 1.0
        return float(min(max(n, 1.0), limits.max_num_seqs))


@dataclass
class DeploymentSet:
    """Every measured level of one deployment, with its physics."""

    deployment: Deployment
    arch: str
    cost: StepCost  # roofline prior coefficients
    levels: list[LevelData]
    files: list[str]
    limits: EngineLimits = field(default_factory=EngineLimits)


# ----------------------------------------------------------------------------------------------- loading


def _scan_nonfinite(obj: Any, file: str, path: str = "") -> None:
    """A measured NaN or inf anywhere in a result record (an unlimited request rate excepted) is an InputError."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, float) and not math.isfinite(v):
                if str(k).rstrip(":") in RAW_ALLOWED_INF and v > 0:
                    continue
                raise InputError(
                    f"{file}: field '{path}{k}' = {v!r}; expected a finite measured value (NaN or inf is not a "
                    "measurement)"
                )
            if isinstance(v, dict | list):
                _scan_nonfinite(v, file, f"{path}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:100_000]):
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(f"{file}: field '{path.rstrip('.')}[{i}]' = {v!r}; expected a finite measured value")
            if isinstance(v, dict | list):
                _scan_nonfinite(v, file, f"{path.rstrip('.')}[{i}].")


SHARED_PREFIX_RE = re.compile(
    r"shared[_ ]prefix data, system prompt (\d+)\b.*?(\d+) system prompts x(?:\s*(\d+) users?\b)?", re.S
)
"""inference-perf's shared_prefix workload as a manifest's notes state it ("shared_prefix data, system prompt 100 +
question 447 tokens, ..., 9 system prompts x 5 users"): the shared prefix length, the number of groups and, where
stated, the users (distinct questions) per group."""

PROMPT_POOL = False
"""Replay a shared-prefix workload whose notes state its users per group as the finite prompt pool inference-perf
sends (`pool_trace`). Its shared_prefix data generator builds groups x users prompts once (each a group's system
prompt plus one user's question) and cycles through them (`data_index % len(prompts)`), so every request after the
first groups x users repeats a prompt whose KV blocks the server's prefix cache already holds; and a later stage
(`stage_N_` with N >= 1) of the same run finds every prompt resident. On the BLIS H100 fixtures (inference-sim/
training) the stages' prompt lengths are identical (Llama-2-70B codegen: mean 593.49, min 577, max 609 tokens in
stage 0 and 1): the same 44 prompts throughout, no multi-turn context growth.

Off by default, on the evidence of `benchmarks/fidelity.py --prompt-pool` (docs/engine_model.md section 11): the
held-out TTFT improves (48.8% -> 26.2% median |e|) but the dev leave-one-deployment-out figures degrade (ITL 17.2% ->
34.0%, TTFT 50.5% -> 84.9%), because with the prompts cached the BLIS fits explain the measured TTFT tails, which
stage 1's all-resident prompts show too, by a ~3x prefill coefficient (b1 2.9-3.8 against 1.0-2.0) that transfers
to cold-prefill deployments; and the BLIS calibrations take ~6x longer (the cold stages replayed whole)."""

STAGE_RE = re.compile(r"(?:^|/)stage_(\d+)_lifecycle_metrics\.json$")
"""An inference-perf lifecycle file's stage number (stages of one run share its data generator and server)."""


def shared_prefix_workload(notes: str) -> tuple[int, int, int] | None:
    """(prefix tokens, groups, users per group; 0 where not stated) of a shared-prefix workload the manifest's
    notes state, else None."""
    m = SHARED_PREFIX_RE.search(" ".join((notes or "").split()))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def shared_prefix(notes: str) -> tuple[int, int] | None:
    """(prefix tokens, groups) of a shared-prefix workload the manifest's notes state, else None."""
    got = shared_prefix_workload(notes)
    return None if got is None else (got[0], got[1])


def inference_perf_stage(file: str) -> int | None:
    """The stage number of an inference-perf `stage_N_lifecycle_metrics.json` file name, else None."""
    m = STAGE_RE.search(str(file).replace("\\", "/"))
    return int(m.group(1)) if m else None


def _raw_records(file: str, cache: dict[str, list[Any]], root: Path | None = None) -> list[Any]:
    """The raw records of a result file; `file` is the level's display name, relative to `root` when one is given
    (so the per-request lengths are found whatever the working directory)."""
    from pipeline.benchmarks.common import read_json_records

    if file not in cache:
        p = Path(file)
        if not p.is_absolute() and root is not None:
            p = Path(root) / p
        cache[file] = read_json_records(p, file) if p.suffix.lower() in (".json", ".jsonl") and p.exists() else []
    return cache[file]


def _vllm_lengths(records: list[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-request input/output lengths of a one-record vLLM result (`input_lens`, `output_lens`), failures dropped."""
    if len(records) != 1 or not isinstance(records[0], dict):
        return None
    obj = records[0]
    ins, outs = obj.get("input_lens"), obj.get("output_lens")
    if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs) or not ins:
        return None
    errors = obj.get("errors") if isinstance(obj.get("errors"), list) else [""] * len(ins)
    pairs = [
        (int(a), int(b))
        for i, (a, b) in enumerate(zip(ins, outs, strict=True))
        if isinstance(a, int | float)
        and isinstance(b, int | float)
        and a >= 1
        and b >= 1
        and not (errors[i] if i < len(errors) else "")
    ]
    if not pairs:
        return None
    arr = np.asarray(pairs, dtype=np.int64)
    return arr[:, 0].copy(), arr[:, 1].copy()


def _spread(mean: float, nominal: float | None, n: int) -> tuple[np.ndarray, str]:
    """A length distribution from a mean and the nominal length: uniform on [2 mean - nominal, nominal] when the
    mean sits well below the nominal (SGLang/vLLM random with a range ratio), else the mean itself."""
    if nominal and nominal > 0 and mean < 0.9 * nominal:
        lo = max(1.0, 2 * mean - nominal)
        grid = lo + (nominal - lo) * (np.arange(n) + 0.5) / n
        return np.maximum(np.rint(grid), 1).astype(np.int64), f"uniform {lo:.0f}..{nominal:.0f} (mean and nominal)"
    return np.full(n, max(1, round(mean)), dtype=np.int64), "the mean length"


def _shuffle_pair(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Decorrelate two spread grids deterministically (input and output lengths drawn independently)."""
    rng = np.random.default_rng(seed)
    return a, b[rng.permutation(len(b))]


def _level_data(
    lv: Any, manifest: dict[str, Any], cache: dict[str, list[Any]], deployment: str, root: Path | None = None
) -> LevelData | None:
    """One normalized level as LevelData (per replica); None for a level with no usable measurement."""
    r = lv.row
    file = r["file"]
    for rec in _raw_records(file, cache, root):  # the file's own field names first
        _scan_nonfinite(rec, file)
    for col in MEASURED_FIELDS:
        v = r.get(col)
        if v is None:
            continue
        if (isinstance(v, float) and math.isnan(v)) or (col != "load" and isinstance(v, float) and math.isinf(v)):
            raise InputError(f"{file}: {col} = {v!r}; expected a finite measured value (deployment {deployment})")
    replicas = int(manifest.get("replicas", 1))
    load = float(r["load"])
    load_kind = str(r["load_kind"])
    notes: list[str] = []
    cap = next((int(m.group(1)) for m in map(INFLIGHT_RE.search, lv.notes) if m), 0)
    cap = cap if CLIENT_BOUND and load_kind == "request_rate" and math.isfinite(load) else 0
    if cap:  # inference-perf: a client that fell behind with its slots full; replay its schedule and its cap
        cap = max(1, round(cap / replicas))
        notes.append(
            f"the client fell behind with its concurrency cap full (about {cap} requests in flight): replayed at the "
            "requested rate through a client of that many slots"
        )
    else:
        for note in lv.notes:  # inference-perf: the client could not send the requested rate; replay what it sent
            m = SENT_RE.search(note)
            if m and load_kind == "request_rate":
                load = min(load, float(m.group(1)))
    load /= replicas if load_kind == "request_rate" or math.isfinite(load) else 1
    in_mean = r["input_tokens_mean"] or r["nominal_input_tokens"] or manifest.get("input_tokens")
    out_mean = r["output_tokens_mean"] or r["nominal_output_tokens"] or manifest.get("output_tokens")
    if not in_mean or not out_mean:
        raise InputError(
            f"{file}: input_tokens_mean / output_tokens_mean: the file states no lengths and the manifest has no "
            f"input_tokens/output_tokens (deployment {deployment}); expected the lengths the benchmark sent"
        )
    ttft = {s: float(r[f"ttft_{s}_ms"]) / 1e3 for s in ("mean", "p50", "p90", "p95", "p99") if r[f"ttft_{s}_ms"]}
    itl_ms = r["itl_mean_ms"] or r["itl_p50_ms"]
    itl_stat = "mean" if r["itl_mean_ms"] else "p50"
    itl_kind = "tpot" if r["itl_kind"] == "tpot" else "itl"
    e2e_ms = r["e2e_mean_ms"] or r["e2e_p50_ms"]
    ttft_mean = r["ttft_mean_ms"] or r["ttft_p50_ms"]
    if itl_ms and itl_kind == "tpot" and r["e2e_mean_ms"] and ttft_mean and out_mean > 1:
        # the decode time per token the means imply; a tool TPOT far from it counted other tokens (inference-perf
        # streams ~2 tokens a chunk and its TPOT is half the E2E's), and E2E and throughput are what the tokens cost
        derived = (float(r["e2e_mean_ms"]) - float(ttft_mean)) / (float(out_mean) - 1)
        if derived > 0 and abs(float(itl_ms) / derived - 1) > TPOT_MISMATCH:
            notes.append(
                f"mean TPOT {float(itl_ms):.2f} ms contradicts (E2E - TTFT) / (output - 1) = {derived:.2f} ms; "
                "the latter is used"
            )
            itl_ms = derived
    rps = float(r["rps"]) / replicas if r["rps"] else None
    tps = float(r["output_tps"]) / replicas if r["output_tps"] else None
    if not ttft and not itl_ms and not tps:
        return None
    completed = int(r["completed"] or 0) // replicas or int(r["completed"] or 0)
    lengths = _vllm_lengths(_raw_records(file, cache, root)) if r["tool"] == "vllm" else None
    n = max(completed, 1)
    if lengths is not None:
        ins, outs = lengths
        source = f"per-request lengths ({len(ins)} requests)"
    else:
        ins, src_in = _spread(float(in_mean), r["nominal_input_tokens"], min(n, 512))
        outs, src_out = _spread(float(out_mean), r["nominal_output_tokens"], min(n, 512))
        ins, outs = _shuffle_pair(ins, outs, 7)
        source = f"input {src_in}, output {src_out}"
    load_text = "inf" if not math.isfinite(load) else f"{load:g}"
    prefix = shared_prefix_workload(str(manifest.get("notes") or ""))
    users = prefix[2] if prefix is not None and PROMPT_POOL and load_kind == "request_rate" else 0
    stage = inference_perf_stage(file) if r["tool"] == "inference-perf" else None
    if prefix is not None and users:
        pool = prefix[1] * users
        if stage:
            when = f"stage {stage} of the run: every prompt resident in the prefix cache from the stages before"
        else:
            when = "each prompt's first request prefilled cold (a group's later users find its system prompt cached)"
        notes.append(
            f"prompt pool stated by the source: {prefix[1]} system prompts ({prefix[0]} tokens) x {users} users = "
            f"{pool} prompts cycled, replayed as 16-token prefix-cache blocks; {when}"
        )
    elif prefix is not None:
        notes.append(
            f"shared prefix stated by the source: {prefix[0]} tokens in {prefix[1]} groups, replayed as cached "
            "prefix blocks (prefix caching on)"
        )
    return LevelData(
        name=f"{file} ({'c' if load_kind == 'concurrency' else 'rate'} {load_text}{f', cap {cap}' if cap else ''})",
        curve=str(r["curve"]),
        load_kind=load_kind,
        load=load,
        rps=rps,
        output_tps=tps,
        ttft_s=ttft,
        itl_s=float(itl_ms) / 1e3 if itl_ms else None,
        itl_kind="tpot" if r["itl_kind"] == "tpot" else "itl",
        itl_stat=itl_stat,
        e2e_s=float(e2e_ms) / 1e3 if e2e_ms else None,
        input_mean=float(in_mean),
        output_mean=float(out_mean),
        input_lens=ins,
        output_lens=outs,
        lengths_source=source,
        requests=completed,
        saturation=bool(r["saturation"]),
        notes=notes,
        prefix_tokens=prefix[0] if prefix else 0,
        prefix_groups=prefix[1] if prefix else 0,
        warm_prompts=bool(users and stage),
        pool_users=users,
        client_cap=cap,
    )


def prefix_caching_on(manifest: dict[str, Any]) -> bool:
    """Whether the benchmarked vLLM server cached prefixes: the flag its notes state, else the version's default
    (on from vLLM 0.8, the V1 engine; off before). Other engines: False (not known here)."""
    notes = " ".join(str(manifest.get("notes") or "").split())
    if "--no-enable-prefix-caching" in notes:
        return False
    if "--enable-prefix-caching" in notes:
        return True
    if str(manifest.get("engine") or "").lower() != "vllm":
        return False
    m = re.match(r"\s*v?(\d+)\.(\d+)", str(manifest.get("engine_version") or ""))
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (0, 8)


def mark_warm_runs(runs: list[tuple[str, str, LevelData, dict[str, Any]]], cache: dict[str, list[Any]]) -> None:
    """Set `warm_prompts` on the levels that repeat an earlier run's prompts against a prefix-caching server
    (WARM_RUNS): among one deployment's vLLM result files with the same per-request `input_lens` and a `date`,
    every file but the earliest, where the manifest's server caches prefixes (`prefix_caching_on`); the engine's LRU
    evicts what the KV capacity cannot hold. Open-loop levels only (the closed loop replays no prefix hashes).
    `runs`: (deployment key, file, level, manifest)."""
    groups: dict[tuple[str, tuple[int, ...]], list[tuple[str, str, LevelData]]] = {}
    for key, file, data, manifest in runs:
        recs = cache.get(file) or []
        if data.load_kind != "request_rate" or len(recs) != 1 or not isinstance(recs[0], dict):
            continue  # a closed loop replays no prefix hashes
        if not prefix_caching_on(manifest):
            continue
        lens, date = recs[0].get("input_lens"), recs[0].get("date")
        if not isinstance(lens, list) or not lens or not isinstance(date, str) or not date:
            continue
        groups.setdefault((key, tuple(int(x) for x in lens)), []).append((date, file, data))
    for members in groups.values():
        if len({f for _, f, _ in members}) < 2:
            continue
        members.sort(key=lambda x: (x[0], x[1]))
        first = members[0][1]
        for _date, file, data in members:
            if file == first:
                continue
            data.warm_prompts = True
            data.notes.append(
                "prompts cached by an earlier run: the same prompts as an earlier file of this sweep against a "
                "prefix-caching server, replayed with every whole KV block of each prompt cached"
            )


def apply_manifests(sweeps: list[Any], manifests: list[Path] | None) -> None:
    """`--manifest FILE`: one manifest for every sweep without its own, or one per such sweep in order."""
    from pipeline.benchmarks import check_consistency, read_manifest

    if not manifests:
        return
    bare = [s for s in sweeps if s.manifest is None]
    if len(manifests) != 1 and len(manifests) != len(bare):
        raise InputError(
            f"--manifest: {len(manifests)} manifests for {len(bare)} sweeps without their own manifest; expected one "
            "manifest for all of them, or one per sweep in the order given"
        )
    for i, s in enumerate(bare):
        m = read_manifest(manifests[0] if len(manifests) == 1 else manifests[i])
        for lv in s.levels:
            if lv.row["nominal_input_tokens"] is None and m.get("input_tokens"):
                lv.row["nominal_input_tokens"] = float(m["input_tokens"])
            if lv.row["nominal_output_tokens"] is None and m.get("output_tokens"):
                lv.row["nominal_output_tokens"] = float(m["output_tokens"])
        check_consistency(s.path.as_posix(), s.levels, m)
        s.manifest = m


def deployment_sets(
    paths: list[Path], manifests: list[Path] | None = None, root: Path | None = None, roofline: Any = None
) -> list[DeploymentSet]:
    """Every sweep under `paths` (as the curve stage reads them), grouped by deployment; checked before any fit.
    `roofline`: params.yaml's section, the prior every deployment's fit is pulled toward (defaults when None)."""
    from pipeline import catalog, quantization
    from pipeline.benchmarks import read_paths
    from pipeline.sim.cost import for_deployment

    sweeps = read_paths(paths, root)
    apply_manifests(sweeps, manifests)
    gpus = catalog.load_gpus()
    groups: dict[str, DeploymentSet] = {}
    cache: dict[str, list[Any]] = {}
    runs: list[tuple[str, str, LevelData, dict[str, Any]]] = []
    for s in sweeps:
        m = s.manifest
        if m is None:
            raise InputError(
                f"{s.path.as_posix()}: no manifest.yaml; calibration needs the deployment (model, GPU, TP, dtypes, "
                "engine): put a manifest.yaml beside the result files or pass --manifest FILE"
            )
        model = catalog.load_model(str(m["model"]))
        gpu = catalog.find_gpu(str(m["gpu"]), gpus)
        compat = quantization.check(gpu, m["weight_dtype"], m["kv_dtype"])
        dep = Deployment(
            model.name,
            gpu.name,
            int(m["tp"]),
            int(m.get("pp", 1)),
            m["weight_dtype"],
            m["kv_dtype"],
            str(compat.compute),
            str(m["engine"]),
        )
        cost = for_deployment(model, gpu, m["weight_dtype"], m["kv_dtype"], dep.tp, dep.pp, roofline=roofline)
        if isinstance(cost, str):
            raise InputError(f"{m['file']}: deployment {dep.key}: {cost}")
        if dep.key not in groups:
            groups[dep.key] = DeploymentSet(
                dep, gpu.arch, cost, [], [], engine_limits(m, model, gpu, cost, dep.tp, dep.pp)
            )
        ds = groups[dep.key]
        for lv in s.levels:
            data = _level_data(lv, m, cache, dep.key, root)
            if data is not None:
                ds.levels.append(data)
                if lv.row["file"] not in ds.files:
                    ds.files.append(lv.row["file"])
                if lv.row.get("tool") == "vllm":
                    runs.append((dep.key, str(lv.row["file"]), data, m))
    if WARM_RUNS:
        mark_warm_runs(runs, cache)
    for ds in groups.values():
        ds.levels.sort(key=lambda lv: (lv.curve, lv.load_kind, lv.load, lv.name))
        # a measured decode batch above the stated cap says the engine ran more (SGLang sizes it from its KV pool)
        seen = max((lv.decode_batch(EngineLimits(10**6)) for lv in ds.levels if lv.itl_s), default=0.0)
        if seen > ds.limits.max_num_seqs:
            ds.limits = replace(
                ds.limits,
                max_num_seqs=math.ceil(seen * 1.1),
                source=ds.limits.source + f"; max_num_seqs raised to 1.1 x the measured decode batch {seen:.0f}",
            )
    return [groups[k] for k in sorted(groups)]


DROP_UNPHYSICAL_TTFT = False
"""A level whose measured TTFT median (else mean) is below UNPHYSICAL_MARGIN x the fastest any engine could give it is
flagged (`LevelData.ttft_below_physics`) with a note. The bound has every coefficient at its physical bound (b1 = b2 =
b3 = 1: peak FLOPs and bandwidth; b0 = b4 = b5 = 0; no request overhead): for an open loop, the level replayed as
calibrate replays it (its arrivals, a burst's queue and its cached prompts included); for a closed loop, each prompt
prefilled alone. Such a TTFT did not come from a cold prefill of the stated prompts: prefix-cache
hits that the file does not state are the usual cause (vLLM's seeded random dataset repeats its prompts across runs).
With DROP_UNPHYSICAL_TTFT its TTFT is left out of every fit (throughput and ITL still fitted, the residual tables
still judge it); off by default: on benchmarks/fidelity.py it helped the deployment's own fit and hurt transfer
(docs/engine_model.md section 16; `fidelity.py --drop-unphysical-ttft`)."""
UNPHYSICAL_MARGIN = 0.95  # 5% below the bound: room for datasheet rounding of peak FLOPs and bandwidth


def mark_unphysical_ttft(ds: DeploymentSet) -> None:
    """Flag (`LevelData.ttft_below_physics`, with a note) each level of `ds` whose TTFT beats the physical bound
    (DROP_UNPHYSICAL_TTFT) at the set's engine limits as they are now; flags are recomputed, the note is added once."""
    bound = ds.cost.with_coeffs(
        Coefficients(tuple(float(v) for v in PHYSICAL_LOWER[:6]), "roofline", "physical bound")  # type: ignore[arg-type]
    )
    for lv in ds.levels:
        stat = "p50" if "p50" in lv.ttft_s else "mean" if "mean" in lv.ttft_s else None
        lv.ttft_below_physics = False
        if stat is None:
            continue
        if lv.load_kind == "concurrency":
            # a closed loop: each prompt prefilled alone (the bound of one request; the closed loop's start and its
            # cohorts of equal prompts are the replay's protocol, not physics: docs/engine_model.md 17)
            lens, counts = np.unique(np.asarray(lv.input_lens, dtype=np.int64), return_counts=True)
            each = np.array([bound.prefill_s(int(n), ds.limits.max_num_batched_tokens) for n in lens])
            alone = np.repeat(each, counts)
            fastest = float(np.median(alone) if stat == "p50" else np.mean(alone))
        else:  # the level's own arrivals (a burst: every prompt at once) through the fastest engine
            fastest = predict_level(bound, ds.limits, lv, 0.0).get(f"ttft_{stat}", math.nan)
        if math.isfinite(fastest) and lv.ttft_s[stat] < UNPHYSICAL_MARGIN * fastest:
            lv.ttft_below_physics = True
            fitted = "not fitted (still judged)" if DROP_UNPHYSICAL_TTFT else "fitted as measured"
            note = (
                f"TTFT {stat} {1e3 * lv.ttft_s[stat]:.1f} ms is below the {1e3 * fastest:.1f} ms of a cold prefill at "
                f"peak FLOPs and bandwidth: unstated prefix-cache hits likely; its TTFT is {fitted}"
            )
            if note not in lv.notes:
                lv.notes.append(note)


# ------------------------------------------------------------------------------------------ step 1: NNLS

NPAR = 7
"""b0..b5 of the iteration time, then the per-request overhead h (s) that TTFT and E2E carry outside the engine
(HTTP, tokenization, detokenization, the client): a TTFT of 30 ms for a 200-token prompt on an H100 is mostly h."""

H_SCALE = 0.05
"""h is pulled weakly toward 0 on this scale (s)."""


PHYSICAL_LOWER = np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
"""Lower bound of each fitted parameter (b0..b5, h). method.md 7b asks b >= 0; the refinement here is the physics:
b1 >= 1 (the FLOPs cannot run above the GPU's peak: MFU <= 100%), b2 >= 1 and b3 >= 1 (weights and KV cannot be read
faster than the HBM bandwidth). Fits without these bounds reached b1 = 0.12-0.36 (3-8x peak) on real sweeps, the
prefill time then carried by the per-request overhead h."""


def _pairs(lens: np.ndarray, window: int, cached: int | np.ndarray = 0) -> tuple[float, float]:
    """Mean attention pairs of prefilling a whole prompt (full, window-capped) over a length distribution; with
    `cached` leading tokens served by the prefix cache, only positions cached+1..L are computed (they still attend
    to the cached ones)."""

    def upto(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pairs of positions 1..x
        full = x * (x + 1) / 2
        w = float(window)
        return full, np.where(w >= x, full, w * (w + 1) / 2 + (x - w) * w)

    L = lens.astype(np.float64)
    full, capped = upto(L)
    if np.any(np.asarray(cached) > 0):
        c = np.minimum(np.asarray(cached, dtype=np.float64), L - 1)
        f0, c0 = upto(c)
        full, capped = full - f0, capped - c0
    return float(full.mean()), float(capped.mean())


def decode_terms(
    cost: StepCost, lv: LevelData, limits: EngineLimits, theta: np.ndarray | None = None
) -> np.ndarray | None:
    """The seven columns (six terms, h) of the mean iteration behind the level's ITL, or None without an ITL; in an
    overlap form (cost.STEP_FORMS) the active side of each max at theta's b (the prior's when None)."""
    if not lv.itl_s:
        return None
    n = lv.decode_batch(limits)
    w = cost.window
    ctx = lv.input_mean + lv.output_mean / 2
    rate = lv.rps or (lv.output_tps / lv.output_mean if lv.output_tps else 0.0)
    cached = lv.cached_tokens(limits.block_size)
    computed = max(lv.input_mean - float(cached.mean()), 1.0)  # prompt tokens prefilled (a cached prefix is not)
    p_tok = min(rate * computed * lv.itl_s, float(limits.max_num_batched_tokens))
    full, capped = _pairs(lv.input_lens, w, cached)
    per_tok_full, per_tok_cap = full / computed, capped / computed
    if cost.coeffs.form != "additive" and p_tok > 0:
        return np.append(
            _mixture_terms(cost, lv, limits, theta, n, ctx, rate, computed, p_tok, per_tok_full, per_tok_cap), 0.0
        )
    t = cost.active_terms(
        n + p_tok,
        n * ctx + p_tok * per_tok_full,
        n * min(ctx, w) + p_tok * per_tok_cap,
        n * ctx + p_tok,
        n * min(ctx, w) + min(p_tok, w),
        n + p_tok / computed,
        b=None if theta is None else theta[:6],
    )
    return np.append(t, 0.0)


def _mixture_terms(
    cost: StepCost,
    lv: LevelData,
    limits: EngineLimits,
    theta: np.ndarray | None,
    n: float,
    ctx: float,
    rate: float,
    computed: float,
    p_tok: float,
    per_tok_full: float,
    per_tok_cap: float,
) -> np.ndarray:
    """The decode row of an overlap form: a mean of maxes is not the max of the mean iteration, so the iterations
    are split into those carrying a prefill chunk (a share f = 1 - exp(-rate x ITL x chunks per prompt), at least
    enough to carry the p_tok prefill tokens per iteration within the budget) and pure decode ones. vLLM mixes the
    chunk into the decode iteration: (1 - f) x decode + f x (decode + chunk); SGLang's unmixed scheduler runs it
    alone between decode iterations: decode + f x chunk."""
    b = None if theta is None else theta[:6]
    w = cost.window
    budget = max(float(limits.max_num_batched_tokens) - n, 1.0)
    chunks = max(math.ceil(computed / budget), 1)
    f = 1.0 - math.exp(-rate * float(lv.itl_s or 0.0) * chunks)
    f = min(max(f, p_tok / float(limits.max_num_batched_tokens), 1e-9), 1.0)
    q = p_tok / f  # prefill tokens in an iteration that carries some
    dec = cost.active_terms(n, n * ctx, n * min(ctx, w), n * ctx, n * min(ctx, w), n, b=b)
    if not limits.mixed_prefill:
        alone = cost.active_terms(q, q * per_tok_full, q * per_tok_cap, q, min(q, w), q / computed, b=b)
        return dec + f * alone
    mixed = cost.active_terms(
        n + q,
        n * ctx + q * per_tok_full,
        n * min(ctx, w) + q * per_tok_cap,
        n * ctx + q,
        n * min(ctx, w) + min(q, w),
        n + q / computed,
        b=b,
    )
    return (1.0 - f) * dec + f * mixed


def prefill_terms(
    cost: StepCost, lv: LevelData, limits: EngineLimits, theta: np.ndarray | None = None
) -> np.ndarray | None:
    """The seven columns behind the level's (mean, else median) TTFT: the prompt's prefill iterations with the
    decoding batch riding along, half an iteration of waiting for the one in flight, and h. In an overlap form each
    of the prompt's iterations (an even share of the prompt plus the riding batch) takes the active side of its
    max at theta's b (the prior's when None)."""
    ttft = lv.ttft_typical_s()
    if ttft is None:
        return None
    n = lv.decode_batch(limits) if lv.itl_s else 0.0
    budget = max(limits.max_num_batched_tokens - int(n), 1)
    w = cost.window
    ctx = lv.input_mean + lv.output_mean / 2
    lens = lv.input_lens.astype(np.int64)
    cached = lv.cached_tokens(limits.block_size)
    computed = np.maximum(lens - cached, 1)  # a cached prefix is not prefilled
    iters = float(np.ceil(computed / budget).mean())
    full, capped = _pairs(lens, w, cached)
    if cost.coeffs.form != "additive":
        b = None if theta is None else theta[:6]
        k = max(iters, 1.0)
        chunk = cost.active_terms(
            float(computed.mean()) / k + n,
            full / k + n * ctx,
            capped / k + n * min(ctx, w),
            float(lens.mean()) / k + n * ctx,
            float(np.minimum(lens, w).mean()) / k + n * min(ctx, w),
            1.0 + n,
            b=b,
        )
        riding = cost.active_terms(n, n * ctx, n * min(ctx, w), n * ctx, n * min(ctx, w), n, b=b)
        return np.append(chunk * k + 0.5 * riding, 1.0)
    riding = cost.terms(n, n * ctx, n * min(ctx, w), n * ctx, n * min(ctx, w), n)
    prompt = cost.terms(
        float(computed.mean()), full, capped, float(lens.mean()), float(np.minimum(lens, w).mean()), 1.0
    )
    # one iteration of a chunk and the riding decodes pays the per-iteration terms (fixed cost, weights,
    # all-reduce latency) once: sum over k chunks = prompt + k x riding - per_iter (riding = per_iter when n = 0)
    per_iter = cost.terms(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    rows = prompt + riding * iters - per_iter + 0.5 * riding
    return np.append(rows, 1.0)


def _zero_scale(k: int, seq_weight: float = 1.0) -> float:
    """The scale a zero-prior parameter is pulled toward 0 on (ZERO_SCALES, H_SCALE), in the deployment's own units:
    b4's unit is seconds per sequence of REF_VOCAB entries (cost.seq_weight), so its scale in seconds per sequence is
    the same for every vocabulary (a deployment's own fit does not depend on REF_VOCAB)."""
    if k == 6:
        return H_SCALE
    return ZERO_SCALES.get(k, 1.0) / (seq_weight if k == 4 else 1.0)


def _prior_rows(
    prior: np.ndarray, weight: float, free: list[int], seq_weight: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    rows, rhs = [], []
    for k in free:
        e = np.zeros(NPAR)
        if prior[k] > 0:
            e[k] = weight / prior[k]
            rhs.append(weight)
        else:
            e[k] = weight / _zero_scale(k, seq_weight)
            rhs.append(0.0)
        rows.append(e)
    return np.array(rows).reshape(-1, NPAR), np.array(rhs)


def _nnls_free(
    a: np.ndarray, theta: np.ndarray, prior: np.ndarray, free: list[int], weight: float, seq_weight: float = 1.0
) -> np.ndarray:
    """NNLS of relative rows a.theta ~ 1 over the `free` parameters, the others held, with the prior pull; each
    free parameter is bounded below by PHYSICAL_LOWER (solved as theta = lower + u, u >= 0)."""
    held = theta.copy()
    held[free] = PHYSICAL_LOWER[free]
    rhs = np.ones(len(a)) - a @ held
    pa, py = _prior_rows(prior, weight, free, seq_weight)
    py = py - pa @ held
    sol, _ = nnls(np.vstack([a[:, free], pa[:, free]]), np.concatenate([rhs, py]), maxiter=5000)
    out = held
    out[free] = PHYSICAL_LOWER[free] + sol
    return out


def _bounded_nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min |a.theta - y| over theta >= PHYSICAL_LOWER (all NPAR columns)."""
    sol, _ = nnls(a, y - a @ PHYSICAL_LOWER, maxiter=5000)
    return PHYSICAL_LOWER + sol


def prior_theta(cost: StepCost, roofline: Any = None) -> np.ndarray:
    """The roofline prior b with h = 0: the cost's own prior coefficients (those `for_deployment(...,
    roofline=...)` built from params.yaml's `roofline` section), or the prior of `roofline` when given (a mapping
    or the params section: prefill_mfu, bandwidth_efficiency)."""
    from pipeline.sim.cost import roofline_prior

    b = cost.coeffs.b if roofline is None else roofline_prior(roofline).b
    return np.append(np.asarray(b, dtype=np.float64), 0.0)


def fit_aggregates(
    decode: np.ndarray,
    prefill: np.ndarray,
    prior: np.ndarray,
    weight: float = PRIOR_WEIGHT,
    rounds: int = 8,
    fixed: dict[int, float] | None = None,
    seq_weight: float = 1.0,
) -> np.ndarray:
    """Step 1 on relative rows (each divided by its measured value, target 1), decode and prefill in turn: the
    decode rows fit b0, b2..b5 with the FLOPs term and h held; the prefill rows then fit the FLOPs term and h
    with the rest held. One joint NNLS would let the many decode rows zero the prefill term. `fixed`: parameters
    held at these values (index -> value; the pooled fit's per-sequence term, POOL_B4)."""
    fixed = fixed or {}
    theta = prior.copy()
    for k, v in fixed.items():
        theta[k] = v
    dec_free = [k for k in (0, 2, 3, 4, 5) if k not in fixed]
    pre_free = [k for k in (1, 6) if k not in fixed]
    for _ in range(rounds):
        if len(decode) and dec_free:
            theta = _nnls_free(decode, theta, prior, dec_free, weight, seq_weight)
        if len(prefill) and pre_free:
            theta = _nnls_free(prefill, theta, prior, pre_free, weight, seq_weight)
    # the alternation can lock in (a FLOPs term the prefill rows want that the decode rows cannot carry zeroes the
    # rest): a joint NNLS with each group's rows weighted to the same total is the other candidate; the one with
    # the lower balanced loss wins
    groups = [g for g in (decode, prefill) if len(g)]
    if len(groups) == 2:
        stacked = np.vstack([g / math.sqrt(len(g)) for g in groups])
        rhs = np.concatenate([np.ones(len(g)) / math.sqrt(len(g)) for g in groups])
        if fixed:
            held = np.zeros(NPAR)
            for k, v in fixed.items():
                held[k] = v
            free = [k for k in range(NPAR) if k not in fixed]
            pa, py = _prior_rows(prior, weight, free, seq_weight)
            a = np.vstack([stacked, pa])
            y = np.concatenate([rhs - stacked @ held, py - pa @ held])
            low = PHYSICAL_LOWER[free]
            sol, _ = nnls(a[:, free], y - a[:, free] @ low, maxiter=5000)
            joint = held.copy()
            joint[free] = low + sol
        else:
            pa, py = _prior_rows(prior, weight, list(range(NPAR)), seq_weight)
            joint = _bounded_nnls(np.vstack([stacked, pa]), np.concatenate([rhs, py]))
        if balanced_loss(joint, groups, prior, weight) < balanced_loss(theta, groups, prior, weight):
            theta = joint
    return theta


ACTIVE_ROUNDS = 8
"""Rounds of the active-set iteration of step 1 in an overlap form (cost.STEP_FORMS): the rows take the side of each
max that the current b makes the larger, NNLS refits b on them, until the sides stop changing."""


def mark_first_round(ds: DeploymentSet, enabled: bool | None = None) -> None:
    """Replay without its first round (`LevelData.first_round_unmeasured`, with a note) each closed-loop level of a
    sweep whose files do not hold the first-round tail their replays have (`first_round_tail` at the set's step-1
    fit, before any refinement): that run likely started after a warm-up or a ramp, so the N requests the replay
    sends at t = 0 are left out of what it measures, as they were of the file. A sweep (a folder) is one client's
    protocol: when some of its levels show the tail missing and none shows it held, all its closed levels with more
    than one client are replayed so (a level of few clients, whose first round does not lift its p99, included).
    Flags are recomputed; the note is added once. `enabled`: FIRST_ROUND_REPLAY when None."""
    for lv in ds.levels:
        lv.first_round_unmeasured = False
        lv.notes[:] = [n for n in lv.notes if not n.startswith(FIRST_ROUND_NOTE)]
    if not (FIRST_ROUND_REPLAY if enabled is None else enabled):
        return
    replays = {id(lv): replay_trace(lv) for lv in ds.levels if lv.load_kind == "concurrency" and lv.load > 1}
    closed = [lv for lv in ds.levels if replays.get(id(lv), ("",))[0] == "closed"]
    if not any(lv.ttft_s.get("p99") for lv in closed):
        return
    theta = fit_step1(ds.cost, ds.levels, ds.limits, prior_theta(ds.cost))
    cost = ds.cost.with_coeffs(Coefficients(tuple(float(v) for v in theta[:6]), "calibrated", "step 1"))  # type: ignore[arg-type]
    verdicts: dict[str, list[tuple[LevelData, dict[str, Any]]]] = {}
    for lv in closed:
        if not lv.ttft_s.get("p99"):
            continue
        kind, job = replays[id(lv)]
        run = simulate(cost, ds.limits, kind, job)
        tail = first_round_tail(run, int(job[2]), float(theta[6]), lv.ttft_s["p99"], lv.requests)
        if tail is not None:
            verdicts.setdefault(_sweep_of(lv), []).append((lv, tail))
    for sweep, found in verdicts.items():
        missing = [(lv, t) for lv, t in found if t["file_holds_it"] is False]
        if not missing or any(t["file_holds_it"] for _, t in found):
            continue
        why = ", ".join(
            f"c {lv.load:g}: {t['ttft_p99_ms']:.0f} ms with it, {t['ttft_p99_without_ms']:.0f} without, file "
            f"{t['file_ttft_p99_ms']:.0f}"
            for lv, t in missing
        )
        note = f"{FIRST_ROUND_NOTE}: at step 1 the sweep's replayed TTFT p99 is its first round's ({why})"
        for lv in closed:
            if _sweep_of(lv) == sweep:
                lv.first_round_unmeasured = True
                if note not in lv.notes:
                    lv.notes.append(note)


FIRST_ROUND_NOTE = "replayed without its first round"


def _sweep_of(lv: LevelData) -> str:
    """The folder a level's file is in (a sweep: one client's settings)."""
    return Path(lv.name.rsplit(" (", 1)[0]).parent.as_posix()


def fit_step1(
    cost: StepCost, levels: list[LevelData], limits: EngineLimits, prior: np.ndarray, weight: float = PRIOR_WEIGHT
) -> np.ndarray:
    """Step 1 of one deployment on some of its levels: `fit_aggregates` on their rows. In an overlap form the
    iteration time is piecewise linear in b (each max takes one side), so the rows are built at the current b (the
    prior first), refitted, and rebuilt, for at most ACTIVE_ROUNDS rounds; the b with the lowest balanced loss on
    its own rows (the model's exact loss there) wins."""
    dec, pre, _, _ = level_rows(cost, levels, limits, prior)
    w = cost.seq_weight
    theta = fit_aggregates(dec, pre, prior, weight, seq_weight=w)
    if cost.coeffs.form == "additive":
        return theta
    best, best_loss = theta, math.inf
    for _ in range(ACTIVE_ROUNDS):
        dec, pre, _, _ = level_rows(cost, levels, limits, theta)
        groups = [g for g in (dec, pre) if len(g)]
        loss = balanced_loss(theta, groups, prior, weight, w)
        if loss < best_loss - 1e-15:
            best, best_loss = theta, loss
        new = fit_aggregates(dec, pre, prior, weight, seq_weight=w)
        if np.allclose(new, theta, rtol=1e-9, atol=1e-15):
            break
        theta = new
    return best


def balanced_loss(
    theta: np.ndarray, groups: list[np.ndarray], prior: np.ndarray, weight: float, seq_weight: float = 1.0
) -> float:
    """Mean squared relative error per row group, summed over groups, plus the prior pull."""
    pa, py = _prior_rows(prior, weight, list(range(NPAR)), seq_weight)
    return float(sum(np.mean((g @ theta - 1.0) ** 2) for g in groups) + np.sum((pa @ theta - py) ** 2))


def level_rows(
    cost: StepCost, levels: list[LevelData], limits: EngineLimits, theta: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Relative decode and prefill rows (seven columns) of some levels, with the level indices they come from (in an
    overlap form, each row's active sides at theta's b; the prior's when None)."""
    dec, pre, di, pi = [], [], [], []
    curve_min: dict[str, float] = {}
    for lv in levels:
        t = lv.ttft_typical_s()
        if t is not None and not lv.saturation and not (DROP_UNPHYSICAL_TTFT and lv.ttft_below_physics):
            curve_min[lv.curve] = min(curve_min.get(lv.curve, math.inf), t)
    for i, lv in enumerate(levels):
        d = decode_terms(cost, lv, limits, theta)
        if d is not None and lv.itl_s:
            dec.append(d / lv.itl_s)
            di.append(i)
        t = lv.ttft_typical_s()
        if (
            t is not None
            and not lv.saturation
            and not (DROP_UNPHYSICAL_TTFT and lv.ttft_below_physics)
            and t <= LOW_LOAD_TTFT * curve_min[lv.curve]
        ):
            p = prefill_terms(cost, lv, limits, theta)
            if p is not None:
                pre.append(p / t)
                pi.append(i)
    return np.array(dec).reshape(-1, NPAR), np.array(pre).reshape(-1, NPAR), di, pi


def identifiability(cost: StepCost, levels: list[LevelData], limits: EngineLimits) -> str | None:
    """Why these levels cannot identify b (None when they can): one level, one batch size, no TTFT at low load."""
    if len(levels) < 2:
        return f"only {len(levels)} level" + ("" if len(levels) == 1 else "s")
    batches = [lv.decode_batch(limits) for lv in levels if lv.itl_s]
    if len(batches) < 2 or max(batches) < SAME_BATCH * min(batches):
        return f"every level runs the same decode batch (~{batches[0] if batches else 1:.0f} sequences)"
    _, pre, _, _ = level_rows(cost, levels, limits)
    if not len(pre):
        return "no level states a TTFT at low load (the prefill term is not identified)"
    return None


# ------------------------------------------------------------------------------------------- predictor


def replay_trace(lv: LevelData, seed: int = 0) -> tuple[str, Any]:
    """What a level replays: ('closed', (inputs, outputs, concurrency, requests)) or ('open', Trace) with Poisson
    arrivals at its rate (seeded) or every request at t = 0 for an unlimited rate; lengths in the level's order.
    A level whose prompts an earlier run left in the server's prefix cache (`warm_prompts`) is ('open_warm', Trace):
    each prompt a chain of WARM_BLOCK-token hash blocks, resident before the first arrival."""
    from pipeline.sim.engine import Trace

    # an overloaded level (unlimited rate, or fewer completions per second than offered) is replayed whole: its
    # queue, hence its TTFT, grows with the run's length
    overloaded = not math.isfinite(lv.load) or (lv.rps is not None and lv.rps < 0.97 * lv.load)
    queued = lv.load_kind == "request_rate" and lv.queued_tail()  # open loop: a p99 set by arrival congestion
    factor = 6 if overloaded else QUEUED_REPLAY if queued else 1
    if lv.pool_prompts() and not lv.warm_prompts:  # the cold prompts' share of the run sets its TTFT tail
        factor = max(factor, 6)
    n_req = min(max(lv.requests, 1), MAX_REPLAY_REQUESTS * factor)
    reps = math.ceil(n_req / len(lv.input_lens))
    ins = np.tile(lv.input_lens, reps)[:n_req].astype(np.int64)
    outs = np.tile(lv.output_lens, reps)[:n_req].astype(np.int64)
    if lv.load_kind == "concurrency":
        c = max(round(lv.load), 1)
        if 1 < lv.requests <= c:  # one burst, no request replaced: every request sent at t = 0
            return "open", Trace(np.zeros(n_req, np.float64), ins, outs)
        job = (ins, outs, c, max(n_req, 2 * c))
        return "closed", (*job, c) if lv.first_round_unmeasured else job
    if math.isfinite(lv.load):
        rng = np.random.default_rng(seed)
        arrivals = np.cumsum(rng.exponential(1.0 / lv.load, n_req))
        arrivals -= arrivals[0]
        if n_req > 1 and arrivals[-1] > 0:  # the sampled span made exact: (n - 1) / rate, as the tool aims for
            arrivals *= (n_req - 1) / lv.load / arrivals[-1]
    else:
        arrivals = np.zeros(n_req)
    if lv.client_cap:  # a client with a concurrency cap that it filled (CLIENT_BOUND)
        return "open_capped", (Trace(arrivals.astype(np.float64), ins, outs), int(lv.client_cap))
    if lv.pool_prompts():  # a finite prompt pool cycled (PROMPT_POOL): cold at first, or resident (warm_prompts)
        return ("open_warm" if lv.warm_prompts else "open"), pool_trace(lv, arrivals)
    if lv.warm_prompts:  # the prompts themselves cached by an earlier run: a chain of 16-token blocks per prompt
        prompt = np.arange(n_req, dtype=np.int64) % len(lv.input_lens)
        blocks = np.maximum(ins - 1, 0) // WARM_BLOCK
        offsets = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
        within = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], blocks)
        values = np.repeat(prompt, blocks) * (1 << 24) + within + 1
        return "open_warm", Trace(arrivals.astype(np.float64), ins, outs, offsets, values, WARM_BLOCK)
    cached = lv.cached_prefix_tokens()
    if cached > 0:  # the stated shared prefix: one hash block of the prefix's length, the groups in turn
        return "open", Trace(
            arrivals.astype(np.float64),
            ins,
            outs,
            np.arange(n_req + 1, dtype=np.int64),
            (np.arange(n_req, dtype=np.int64) % lv.prefix_groups) + 1,
            int(lv.prefix_tokens),
        )
    return "open", Trace(arrivals.astype(np.float64), ins, outs)


def pool_trace(lv: LevelData, arrivals: np.ndarray) -> Any:
    """The Trace of a prompt-pool level (`pool_prompts` > 0): request i sends prompt p = i mod P of the pool's
    lengths (`pool_lengths`), p in group p // users (inference-perf's order: each system prompt's users in turn).
    Each prompt is a chain of WARM_BLOCK-token hash blocks: the blocks wholly inside the group's system prompt
    (prefix_tokens // WARM_BLOCK) shared by the group, the rest the prompt's own. Every whole block but the last
    token's is hashed (the engine recomputes that token), as vLLM's prefix cache does."""
    from pipeline.sim.engine import Trace

    n_req = len(arrivals)
    pool, users = lv.pool_prompts(), lv.pool_users
    plens = lv.pool_lengths()
    prompt = np.arange(n_req, dtype=np.int64) % pool
    ins = plens[prompt].astype(np.int64)
    outs = np.tile(lv.output_lens, math.ceil(n_req / len(lv.output_lens)))[:n_req].astype(np.int64)
    blocks = np.maximum(ins - 1, 0) // WARM_BLOCK
    offsets = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
    within = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], blocks)
    owner = np.repeat(prompt, blocks)
    shared = within < lv.prefix_tokens // WARM_BLOCK
    chain = np.where(shared, owner // users, lv.prefix_groups + owner)
    values = chain * (1 << 24) + within + 1
    return Trace(arrivals.astype(np.float64), ins, outs, offsets, values, WARM_BLOCK)


def _job_key(kind: str, job: Any) -> str:
    import hashlib

    trace = job[0] if kind == "open_capped" else job
    parts = job[:2] if kind == "closed" else (trace.arrival_s, trace.input_tokens, trace.output_tokens)
    if kind != "closed" and trace.hash_values is not None:
        parts = (*parts, trace.hash_values, np.array([trace.hash_block_tokens]))
    h = hashlib.sha1(kind.encode())
    for arr in parts:
        h.update(np.ascontiguousarray(arr).tobytes())
    if kind == "closed":
        h.update(f"{job[2]}/{job[3]}{f' w{job[4]}' if len(job) > 4 else ''}".encode())
    if kind == "open_capped":
        h.update(f"cap {job[1]}".encode())
    return h.hexdigest()


def simulate(cost: StepCost, limits: EngineLimits, kind: str, job: Any) -> Any:
    """One simulator run of a prepared replay (`replay_trace`)."""
    from pipeline.sim import engine

    if kind == "closed":  # (inputs, outputs, concurrency, requests[, warm-up requests])
        ins, outs, c, n, *warm = job
        return engine.simulate_closed(
            cost, limits.config(), ins, outs, concurrency=c, requests=n, warmup=warm[0] if warm else 0
        )
    if kind == "open_capped":
        trace, cap = job
        return engine.simulate_open(cost, limits.config(), trace, max_inflight=cap)
    cfg = limits.config()
    if job.hash_values is not None and len(job.hash_values):  # a stated shared prefix: the server's prefix cache
        cfg = replace(cfg, enable_prefix_caching=True)
    return engine.simulate_open(cost, cfg, job, warm=kind == "open_warm")


def _gap_stats(res: Any, p50: bool) -> tuple[float, float]:
    """(mean, median) of every inter-token gap (s), as SimResult.summary()'s itl_ms gives them (a mean of 0 reads as
    NaN, as before); the median only when `p50` (on a 70B sweep the gap arrays hold 0.5M to 4.6M entries a level,
    and their percentiles were a third of a calibration's time); histogram runs go through summary()."""
    from pipeline.sim.engine import ms

    arr = res.itl_gaps_s
    if arr is None or (not len(arr) and res.hist is not None):
        s = res.summary()["itl_ms"]
        return (s["mean"] or math.nan) / 1e3, (s["p50"] or math.nan) / 1e3
    vals = arr if np.isfinite(arr).all() else arr[np.isfinite(arr)]
    if not len(vals):
        return math.nan, math.nan
    med_ms = ms(float(np.percentile(vals, 50))) if p50 else None
    return (ms(float(np.mean(vals))) or math.nan) / 1e3, (med_ms or math.nan) / 1e3


def _percentiles(a: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile of the finite values at each q (one partition for all), NaN where there are none."""
    a = a[np.isfinite(a)]
    return [float(v) for v in np.percentile(a, qs)] if len(a) else [math.nan] * len(qs)


def sim_metrics(res: Any, overhead_s: float = 0.0, closed: bool = False, gap_p50: bool = True) -> dict[str, float]:
    """Predicted metrics (s, tokens/s) of a simulator run, with the per-request overhead h added to TTFT and E2E
    (in closed loop the clients also wait h per request, so throughput scales by E2E / (E2E + h)).

    `gap_p50=False` leaves out the median inter-token gap (NaN): only levels that state a median ITL over every gap
    need it (`needs_gap_p50`), and it is the one statistic whose cost grows with every decoded token."""
    from pipeline.sim.engine import per_s

    e2e = float(np.mean(res.e2e_s)) if len(res.e2e_s) else math.nan
    scale = e2e / (e2e + overhead_s) if closed and e2e > 0 else 1.0
    gap_mean, gap_med = _gap_stats(res, gap_p50)
    tpot = res.itl_mean_s
    out = {
        "rps": (per_s(res.requests, res.duration_s) or 0.0) * scale,
        "throughput": (per_s(res.output_tokens_total, res.duration_s) or 0.0) * scale,
        "tpot_mean": float(np.nanmean(tpot)) if np.isfinite(tpot).any() else math.nan,
        "tpot_p50": _percentiles(tpot, (50,))[0],
        "itl_gap_mean": gap_mean,
        "itl_gap_p50": gap_med,
        "e2e_mean": e2e + overhead_s,
        "ttft_mean": float(np.mean(res.ttft_s)) + overhead_s if len(res.ttft_s) else math.nan,
    }
    ttft = _percentiles(res.ttft_s, (50, 90, 95, 99))
    for stat, v in zip(("p50", "p90", "p95", "p99"), ttft, strict=True):
        out[f"ttft_{stat}"] = v + overhead_s
    e2e_q = _percentiles(res.e2e_s, (50, 95, 99))
    for stat, v in zip(("p50", "p95", "p99"), e2e_q, strict=True):
        out[f"e2e_{stat}"] = v + overhead_s
    return out


def first_round_tail(
    res: Any,
    concurrency: int,
    overhead_s: float = 0.0,
    measured_p99_s: float | None = None,
    file_requests: int | None = None,
) -> dict[str, Any] | None:
    """The replay's TTFT p99 with and without its first round, where that round sets it (None elsewhere).

    A closed-loop replay starts as the benchmark does (`vllm bench serve --max-concurrency N`): N requests sent at
    t = 0, whose prefills queue behind each other. When those N are FIRST_ROUND_SHARE or more of the measured
    requests, the p99 can fall among them: the level's TTFT p99 then measures the start-up burst, not serving at
    N. Returned when the p99 of every measured request is above FIRST_ROUND_TAIL x the p99 of those after the
    first N (ms, with the request overhead h; `res.ttft_s` in request order, the first N first). With the file's
    own TTFT p99, `file_holds_it` says whether it is nearer the p99 with the first round than without (the
    geometric midpoint between them): false when the measured run likely started after a warm-up or a ramp.
    `file_requests`: the file's measured requests, whose share the first round is (the replay may run fewer)."""
    t = np.asarray(res.ttft_s, dtype=np.float64)
    n, c = len(t), int(concurrency)
    share = c / max(int(file_requests), 1) if file_requests else c / max(n, 1)
    if c < 2 or n <= c or share < FIRST_ROUND_SHARE:
        return None
    every, after = float(np.percentile(t, 99)) + overhead_s, float(np.percentile(t[c:], 99)) + overhead_s
    if every <= FIRST_ROUND_TAIL * after:
        return None
    holds = None if not measured_p99_s else bool(measured_p99_s >= math.sqrt(every * after))
    return {
        "requests": c,
        "share": round(share, 6),
        "ttft_p99_ms": round(1e3 * every, 3),
        "ttft_p99_without_ms": round(1e3 * after, 3),
        "file_ttft_p99_ms": round(1e3 * measured_p99_s, 3) if measured_p99_s else None,
        "file_holds_it": holds,
    }


def first_round_note(tail: dict[str, Any], replayed_without: bool = False) -> str:
    """The level note of a first_round_tail (`replayed_without`: the level is replayed without that round)."""
    head = (
        f"the burst replay's TTFT p99 {tail['ttft_p99_ms']:.0f} ms is its first round's: the {tail['requests']} requests "
        f"sent at t = 0 ({100 * tail['share']:.1f}% of those measured) queue their prefills behind each other; "
        f"without them it is {tail['ttft_p99_without_ms']:.0f} ms"
    )
    if tail["file_holds_it"] is None:
        return head
    if tail["file_holds_it"]:
        return (
            f"{head}. The file's {tail['file_ttft_p99_ms']:.0f} ms holds the same tail: a start-up burst, not serving"
        )
    done = "so it is replayed without them" if replayed_without else "which the replay does not model"
    return (
        f"{head}. The file's {tail['file_ttft_p99_ms']:.0f} ms is nearer the p99 without them: its run likely "
        f"started after a warm-up or a ramp, {done}"
    )


def needs_gap_p50(lv: LevelData) -> bool:
    """The level is judged on the median of every inter-token gap (sim_metrics' gap_p50)."""
    return lv.itl_kind != "tpot" and lv.itl_stat == "p50"


def replay_level(cost: StepCost, limits: EngineLimits, lv: LevelData) -> tuple[str, Any, Any]:
    """(kind, job, simulator run) of a measured level replayed with its own lengths and load (`replay_trace`)."""
    kind, job = replay_trace(lv)
    return kind, job, simulate(cost, limits, kind, job)


def predict_level(cost: StepCost, limits: EngineLimits, lv: LevelData, overhead_s: float) -> dict[str, float]:
    """A measured level replayed through the simulator with the level's own lengths and load."""
    kind, _, run = replay_level(cost, limits, lv)
    return sim_metrics(run, overhead_s, kind in CLOSED_LIKE, needs_gap_p50(lv))


def predicted_itl(pred: dict[str, float], lv: LevelData) -> float:
    """The simulator's counterpart of the level's ITL statistic (TPOT or inter-token gap, mean or median)."""
    return pred[f"{'tpot' if lv.itl_kind == 'tpot' else 'itl_gap'}_{lv.itl_stat}"]


def residuals_of(pred: dict[str, float], lv: LevelData) -> dict[str, float]:
    """predicted / measured - 1 per metric the level has."""
    out: dict[str, float] = {}
    for metric, meas in lv.measured().items():
        if metric == "ttft":
            p = pred.get(f"ttft_{lv.ttft_stat()}")
        elif metric == "ttft_p50":
            p = pred.get("ttft_p50")
        elif metric == "itl_mean":
            p = predicted_itl(pred, lv)
        else:
            p = pred.get(metric)
        if p is not None and math.isfinite(p) and meas > 0:
            out[metric] = p / meas - 1.0
    return out


# ----------------------------------------------------------------------------------------- step 2: replay


def _refine_residuals(pred: dict[str, float], lv: LevelData) -> list[float]:
    """Relative errors the refinement minimises: throughput, ITL, TTFT p50 (else mean) and p99 where present."""
    out = []
    meas = lv.measured()
    if "throughput" in meas:
        out.append(pred["throughput"] / meas["throughput"] - 1.0)
    if "itl_mean" in meas:
        out.append(predicted_itl(pred, lv) / meas["itl_mean"] - 1.0)
    for stat in ("p50", "p99") if "p50" in lv.ttft_s else ("mean", "p99"):
        if stat in lv.ttft_s and not (DROP_UNPHYSICAL_TTFT and lv.ttft_below_physics):
            out.append(pred[f"ttft_{stat}"] / lv.ttft_s[stat] - 1.0)
    return out


FLOOR = np.array([1e-5, 1e-2, 1e-2, 1e-2, 1e-6, 1e-2, 1e-4])
"""Smallest value a refined parameter takes (log space needs > 0); b4's in seconds per sequence (`floor_of`)."""


def floor_of(cost: StepCost) -> np.ndarray:
    """FLOOR in the deployment's own units: b4's floor is 1e-6 s per sequence whatever its vocabulary (b4 multiplies
    cost.seq_weight sequences)."""
    out = FLOOR.copy()
    out[4] /= cost.seq_weight
    return out


def refine_passes(levels: list[LevelData], max_nfev: int) -> int:
    """Passes for a sweep: at most max_nfev, fewer (down to MIN_PASSES) when one pass decodes more than
    REFINE_WORK / max_nfev tokens, so that one deployment calibrates in ~10 s (deterministic: inputs only)."""
    work = sum(_work(*replay_trace(lv)) for lv in levels)
    if work <= 0:
        return max_nfev
    return int(min(max_nfev, max(MIN_PASSES, REFINE_WORK // work)))


REFINE_THREADS: int | None = None
"""Threads one refinement pass simulates its levels on (None: the cores this process may use, at most the levels).
The simulator's loop releases the GIL (engine._run is nogil), so a pass's levels run in parallel; each run is
independent and gathered by level, so a fit is the same bytes on any number of threads (1: in this thread)."""


def refine_threads(jobs: int) -> int:
    """REFINE_THREADS, or the cores this process may use (its CPU affinity), capped at `jobs`."""
    cores = REFINE_THREADS or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return max(1, min(int(cores or 1), jobs))


def _work(kind: str, job: Any) -> float:
    """Decoded tokens of a prepared replay: what one simulator run of it costs, roughly."""
    outs = job[1] if kind == "closed" else job[0].output_tokens if kind == "open_capped" else job.output_tokens
    return float(np.sum(outs))


class _Replays:
    """The prepared replays of some levels of one deployment (a run repeated in a sweep is simulated once)."""

    def __init__(self, cost: StepCost, limits: EngineLimits, levels: list[LevelData]) -> None:
        self.cost, self.limits, self.levels = cost, limits, levels
        self.jobs = [replay_trace(lv) for lv in levels]
        self.keys = [_job_key(kind, job) for kind, job in self.jobs]
        unique: dict[str, tuple[str, Any]] = {}
        for key, kj in zip(self.keys, self.jobs, strict=True):
            unique.setdefault(key, kj)
        # the longest first (longest-processing-time order): on 2 threads a 70B sweep's one long reasoning level
        # runs beside all the others
        self.unique = sorted(unique.items(), key=lambda item: -_work(*item[1]))
        self.threads = refine_threads(len(self.unique))

    def simulate_all(self, c: StepCost) -> dict[str, Any]:
        """Every distinct replay simulated at cost c, by job key (on `threads` threads)."""
        if self.threads <= 1:
            return {key: simulate(c, self.limits, kind, job) for key, (kind, job) in self.unique}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            runs = list(pool.map(lambda item: simulate(c, self.limits, *item[1]), self.unique))
        return {key: run for (key, _), run in zip(self.unique, runs, strict=True)}

    def residuals(self, t: np.ndarray, b_scale: float = 1.0) -> list[float]:
        """The refinement's relative errors of every level at theta t (its six b's times b_scale)."""
        b = tuple(max(float(v) * b_scale, float(lo)) for v, lo in zip(t[:6], PHYSICAL_LOWER[:6], strict=True))
        c = self.cost.with_coeffs(Coefficients(b, "calibrated", "refine"))  # type: ignore[arg-type]
        done = self.simulate_all(c)
        res: list[float] = []
        for lv, (kind, _), key in zip(self.levels, self.jobs, self.keys, strict=True):
            res.extend(
                _refine_residuals(sim_metrics(done[key], float(t[6]), kind in CLOSED_LIKE, needs_gap_p50(lv)), lv)
            )
        return res


def _search(
    fun: Callable[[np.ndarray], list[float]], x0: np.ndarray, max_nfev: int, group: np.ndarray | None = None
) -> np.ndarray:
    """Minimise sum |fun(exp x)| over log-space x in at most max_nfev calls: least squares (finite differences)
    with 2/3 of the calls (when there are LS_MIN_PASSES), then a pattern search (the `group` move first, then each coordinate alone, by a factor
    from 1.3 shrinking to 1.02) with the rest; the best point seen wins."""
    calls = 0
    best: list[Any] = [math.inf, x0.copy()]

    def res(x: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        r = np.nan_to_num(np.asarray(fun(x), dtype=np.float64), nan=10.0, posinf=10.0, neginf=-10.0)
        score = float(np.sum(np.abs(r)))
        if score < best[0] - 1e-12:
            best[0], best[1] = score, x.copy()
        return r

    res(x0)
    n = len(x0)
    if max_nfev >= LS_MIN_PASSES and max_nfev >= 2 * (n + 2):  # else too few passes for Gauss-Newton to pay off
        steps = max(1, (2 * max_nfev // 3 - 1) // (n + 1))
        least_squares(res, x0, method="trf", diff_step=0.05, max_nfev=steps)
    point, score = best[1].copy(), best[0]
    moves = ([group] if group is not None else []) + [np.eye(n)[k] for k in range(n)]
    step = math.log(1.3)
    while calls < max_nfev and step > math.log(1.015):
        improved = False
        for m in moves:
            for sign in (1.0, -1.0):
                if calls >= max_nfev:
                    break
                trial = point + sign * step * m
                trial_score = float(np.sum(np.abs(res(trial))))
                if trial_score < score - 1e-9:
                    point, score, improved = trial, trial_score, True
                    break
        if not improved:
            step /= 3.0
    return best[1]


def _active(cost: StepCost, theta0: np.ndarray, prior: np.ndarray) -> list[int]:
    silent = {5} if cost.link_bw <= 0 else set()  # no all-reduce at TP 1: b5 multiplies nothing
    floor = floor_of(cost)
    return [k for k in range(NPAR) if (theta0[k] > floor[k] or prior[k] > 0) and k not in silent]


def refine(
    cost: StepCost,
    limits: EngineLimits,
    levels: list[LevelData],
    theta0: np.ndarray,
    prior: np.ndarray,
    max_nfev: int = REFINE_NFEV,
    starts: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Step 2: theta refined on every level replayed through the simulator, minimising the sum of absolute
    relative errors (throughput, ITL, TTFT p50 and p99), from the step-1 solution, in at most `max_nfev` simulator
    passes (`refine_passes`).

    In log space: `scipy.optimize.least_squares` (finite differences) with 2/3 of the passes, which converges fast
    where the replayed metrics are smooth in theta; then a derivative-free pattern search with the rest (all six
    b's together, then each parameter alone), which still moves where a level's queue (TTFT above capacity) makes
    the objective piecewise and least squares stalls. The best point seen wins. Parameters step 1 left at zero
    with a zero prior stay at zero.

    `starts`: other starting points (a warm start: the full fit's theta for a leave-one-level-out refit); each is
    scored in one pass against theta0 and the search starts from the lowest sum of |errors| (the passes count)."""
    max_nfev = refine_passes(levels, max_nfev)
    active = _active(cost, theta0, prior)
    if not active or max_nfev <= 1:
        return theta0
    replays = _Replays(cost, limits, levels)
    if starts:

        def score(t: np.ndarray) -> float:
            r = np.nan_to_num(np.asarray(replays.residuals(t), dtype=np.float64), nan=10.0, posinf=10.0, neginf=-10.0)
            return float(np.sum(np.abs(r)))

        scored = [(score(np.maximum(t, PHYSICAL_LOWER)), i, t) for i, t in enumerate([theta0, *starts])]
        max_nfev -= len(scored)
        theta0 = min(scored, key=lambda x: (x[0], x[1]))[2]
        active = _active(cost, theta0, prior)
        if not active or max_nfev <= 1:
            return np.maximum(theta0, PHYSICAL_LOWER)
    base = np.maximum(theta0, PHYSICAL_LOWER).copy()
    floor = floor_of(cost)
    for k in active:
        base[k] = max(base[k], floor[k])
    # the search runs on b4 in seconds per sequence (b4 x seq_weight), so a deployment's fit is the same whatever
    # REF_VOCAB is (least squares' finite-difference steps are relative to the log-space point)
    unit = np.ones(NPAR)
    unit[4] = cost.seq_weight

    def theta_of(x: np.ndarray) -> np.ndarray:
        t = base.copy()
        t[active] = np.maximum(np.exp(x) / unit[active], PHYSICAL_LOWER[active])  # the physical bounds (flat below)
        return t

    group = np.array([1.0 if k < 6 else 0.0 for k in active])
    x = _search(lambda x: replays.residuals(theta_of(x)), np.log(base[active] * unit[active]), max_nfev, group)
    return theta_of(x)


def refine_pooled(sets: list[DeploymentSet], pooled: PooledFit, max_nfev: int = REFINE_NFEV) -> PooledFit:
    """Step 2 for the pool: its theta and the GPU-family scales refined on every deployment's levels replayed
    through the simulator (each deployment's own physics and engine knobs), as `refine` does for one deployment;
    the family with the most rows keeps scale 1. Deployments whose levels cannot identify b take part too."""
    if not sets:
        return pooled
    prior = prior_theta(sets[0].cost)
    all_levels = [lv for ds in sets for lv in ds.levels]
    max_nfev = refine_passes(all_levels, max_nfev)
    active = [k for k in range(NPAR) if pooled.theta[k] > FLOOR[k] or prior[k] > 0]
    free_arch = [a for a in sorted(pooled.scale) if a != pooled.anchor]
    base = np.maximum(pooled.theta, 0.0).copy()
    for k in active:
        base[k] = max(base[k], FLOOR[k])
    replays = [(ds.arch, _Replays(ds.cost, ds.limits, ds.levels)) for ds in sets]

    def unpack(x: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        t = base.copy()
        t[active] = np.exp(x[: len(active)])
        scale = dict(pooled.scale)
        for a, v in zip(free_arch, x[len(active) :], strict=True):
            scale[a] = float(np.exp(v))
        return t, scale

    def fun(x: np.ndarray) -> list[float]:
        t, scale = unpack(x)
        out: list[float] = []
        for arch, rp in replays:
            out.extend(rp.residuals(t, scale.get(arch, 1.0)))
        return out

    x0 = np.concatenate([np.log(base[active]), np.log([pooled.scale[a] for a in free_arch])])
    group = np.concatenate([[1.0 if k < 6 else 0.0 for k in active], np.zeros(len(free_arch))])
    t, scale = unpack(_search(fun, x0, max_nfev, group))
    return PooledFit(t, scale, pooled.deployments, pooled.anchor, refined=True)


# ------------------------------------------------------------------------------------------- fitting


@dataclass
class DeploymentFit:
    """The parameters of one deployment (b0..b5, h) and how they were obtained."""

    theta: np.ndarray
    basis: str  # calibrated | transferred (fallback to pooled)
    step1: np.ndarray
    warning: str | None = None
    scale: float | None = None  # an unidentifiable deployment's one scale on the pool (SCALED_FALLBACK), else None

    def coefficients(self, source: str) -> Coefficients:
        return Coefficients(tuple(float(v) for v in self.theta[:6]), self.basis, source)  # type: ignore[arg-type]


def fit_levels(
    ds: DeploymentSet, levels: list[LevelData], max_nfev: int = REFINE_NFEV, warm: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(step-2 theta, step-1 theta) of a deployment on some of its levels. `warm`: another starting point of the
    refinement (a leave-one-level-out refit starts from the better of its own step 1 and the full fit)."""
    prior = prior_theta(ds.cost)
    t1 = fit_step1(ds.cost, levels, ds.limits, prior)
    starts = [warm] if warm is not None else None
    return refine(ds.cost, ds.limits, levels, t1, prior, max_nfev, starts), t1


@dataclass
class PooledFit:
    """One theta for every deployment, its six iteration terms times a scale per GPU family (gpu.arch)."""

    theta: np.ndarray
    scale: dict[str, float]
    deployments: list[str]
    anchor: str = ""  # the GPU family whose scale is 1
    refined: bool = False  # step 2 (replayed through the simulator) done
    form: str = "step1"  # how theta was made (POOLS; refine_pooled keeps "step1")
    members: dict[str, int] = field(default_factory=dict)  # deployments per GPU family (median-of-fits)

    def theta_for(self, arch: str) -> tuple[np.ndarray, str]:
        """theta (b0..b5, h) for a GPU family, and how its scale was found."""
        if arch in self.scale and arch in self.members and arch != self.anchor:
            n = self.members[arch]
            return scaled(self.theta, self.scale[arch]), (
                f"pooled coefficients x {self.scale[arch]:.3f} ({arch} scale fitted on {n} deployment(s), shrunk "
                f"toward 1 by a prior worth {FAMILY_PRIOR})"
            )
        if arch in self.scale:  # a family scale < 1 keeps the bounds
            return scaled(self.theta, self.scale[arch]), f"pooled coefficients x {self.scale[arch]:.3f} ({arch} scale)"
        return self.theta.copy(), f"pooled coefficients (no {arch} deployment in the pool: scale 1)"

    def for_arch(self, arch: str) -> tuple[np.ndarray, str]:
        """b0..b5 for a GPU family (the six iteration terms only), and how its scale was found."""
        t, how = self.theta_for(arch)
        return t[:6], how

    def as_dict(self) -> dict[str, Any]:
        return {
            "coefficients": dict(zip(TERMS, (float(v) for v in self.theta[:6]), strict=True)),
            "request_overhead_s": float(self.theta[6]),
            "gpu_arch_scale": dict(sorted(self.scale.items())),
            "scale_anchor": self.anchor,
            **(
                {
                    "gpu_arch_deployments": dict(sorted(self.members.items())),
                    "family_scale_prior_deployments": FAMILY_PRIOR,
                }
                if self.members
                else {}
            ),
            "refined": self.refined,
            "form": self.form,
            "deployments": self.deployments,
        }


def fit_pooled(sets: list[DeploymentSet], rounds: int = 8, fixed: dict[int, float] | None = None) -> PooledFit:
    """Step 1 over every deployment's relative rows jointly, with a scale per GPU family on the six terms,
    alternated with the closed-form scale (least squares of s x r ~ 1 over the family's rows); the family with
    the most rows keeps scale 1. `fixed`: parameters held (index -> value), as `fit_aggregates` takes them."""
    prior = prior_theta(sets[0].cost) if sets else np.append(np.asarray(Coefficients.prior().b, np.float64), 0.0)
    overlap = any(ds.cost.coeffs.form != "additive" for ds in sets)

    def build(theta: np.ndarray | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        # the rows' active sides (overlap forms) do not depend on a family's scale: it multiplies both sides of a max
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for ds in sets:
            dec, pre, _, _ = level_rows(ds.cost, ds.levels, ds.limits, theta)
            d0, p0 = out.get(ds.arch, (np.zeros((0, NPAR)), np.zeros((0, NPAR))))
            out[ds.arch] = (np.vstack([d0, dec]), np.vstack([p0, pre]))
        return out

    rows = build(prior)
    archs = sorted(rows)
    if not archs:
        return PooledFit(prior, {}, [])
    anchor = max(archs, key=lambda a: (len(rows[a][0]) + len(rows[a][1]), a))
    scale = dict.fromkeys(archs, 1.0)

    def scaled(m: np.ndarray, s: float) -> np.ndarray:
        out = m.copy()
        out[:, :6] *= s
        return out

    theta = prior.copy()
    for i in range(rounds):
        if overlap and i > 0:
            rows = build(theta)
        theta = fit_aggregates(
            np.vstack([scaled(rows[a][0], scale[a]) for a in archs]),
            np.vstack([scaled(rows[a][1], scale[a]) for a in archs]),
            prior,
            fixed=fixed,
        )
        for a in archs:
            if a == anchor:
                continue
            s = closed_form_scale(np.vstack(rows[a]), theta)
            if s is not None:
                scale[a] = max(s, 1e-3)
    return PooledFit(theta, scale, [ds.deployment.key for ds in sets], anchor)


def closed_form_scale(rows: np.ndarray, theta: np.ndarray) -> float | None:
    """The least-squares s of s x r ~ 1 - h over relative step-1 rows (r = the six iteration terms at theta, h the
    request overhead's share): the GPU-family scale of the pool and the start of `fit_scale`; None without rows."""
    r, h = rows[:, :6] @ theta[:6], rows[:, 6] * theta[6]
    rr = float(np.sum(r * r))
    return float(np.sum(r * (1 - h)) / rr) if len(rows) and rr > 0 else None


def pool_of_fits(sets: list[DeploymentSet], thetas: dict[str, np.ndarray], fallback: PooledFit) -> PooledFit:
    """The pooled fit as the typical refined deployment (POOL = "median-of-fits"): theta (b0..b5, h) is the
    per-parameter median of the step-2 thetas of the deployments of `sets` that `thetas` holds (those with their
    own calibration, by Deployment.key), and each GPU family's scale is `fit_pooled`'s closed form (least squares
    of s x r ~ 1 over the family's step-1 rows at that theta; the family with the most rows keeps 1). The step-1
    pool fits one b to every model's aggregates, and its per-sequence term b4 grows to carry the models' other
    differences (ITL too high at large batches where it is transferred); the refined fits each replay their own
    levels. With WEIGHT_FLOOR_SPLIT, b0 and b2 are instead the split of the fits' weight floors across deployments
    (`weight_floor_split`), which one deployment alone cannot identify. `fallback` (the step-1 pool) when no
    deployment of `sets` has its own fit."""
    own = [thetas[ds.deployment.key] for ds in sets if ds.deployment.key in thetas]
    if not own:
        return fallback
    theta = np.median(np.array(own, dtype=np.float64), axis=0)
    if WEIGHT_FLOOR_SPLIT:  # over every own fit (x already holds each GPU's bandwidth); the family scales follow
        floors = [(weight_read_s(ds.cost), thetas[ds.deployment.key]) for ds in sets if ds.deployment.key in thetas]
        split = weight_floor_split([x for x, _ in floors], [t[0] + t[2] * x for x, t in floors])
        if split is not None:
            theta[0], theta[2] = split
    rows: dict[str, list[np.ndarray]] = {}
    members: dict[str, int] = {}
    for ds in sets:
        dec, pre, _, _ = level_rows(ds.cost, ds.levels, ds.limits, theta)
        rows.setdefault(ds.arch, []).extend([dec, pre])
        members[ds.arch] = members.get(ds.arch, 0) + 1
    stacked = {a: np.vstack(m) for a, m in rows.items()}
    anchor = max(sorted(stacked), key=lambda a: (len(stacked[a]), a))
    scale = {}
    for a, m in sorted(stacked.items()):
        s = closed_form_scale(m, theta) if a != anchor else None
        # partial pooling: the family's own scale, shrunk toward 1 in log space (FAMILY_PRIOR)
        scale[a] = max(s, 1e-3) ** (members[a] / (members[a] + FAMILY_PRIOR)) if s is not None else 1.0
    return PooledFit(theta, scale, [ds.deployment.key for ds in sets], anchor, True, "median-of-fits", members)


FAMILY_PRIOR = 1
"""How many deployments' worth of weight the pool's own scale of 1 has against a GPU family's fitted scale
(`pool_of_fits`): a family fitted on n deployments at scale s gets s ** (n / (n + FAMILY_PRIOR)), the posterior of a
log-normal prior at 1 that weighs as much as one deployment. A scale fitted on one deployment is that deployment's
distance from the pool (its model, TP degree, engine version) as much as its family's, so it is half trusted; with
more deployments the family's own figure takes over. On the dev set of benchmarks/fidelity.py the one family with two
deployments (ampere: Llama-3.3-70B on 8x A100-40GB TP8, Qwen2.5-7B on one A100-80GB) tests it both ways: left out,
each is predicted from a scale fitted on the other alone. Leave-one-deployment-out mean ITL: 42.4% and 39.9% with
the scale as fitted, 41.4% and 12.7% shrunk, 40.3% and 9.2% at scale 1; pooled dev LODO throughput / ITL / TTFT p99
5.1 / 15.6 / 37.4% -> 3.5 / 11.4 / 32.8% (scale 1 for one-deployment families: 1.6 / 10.5 / 32.0%). Half trust was
kept over none: two deployments of one family are too little evidence to drop a family's measured speed altogether.
The held-out deployments are unaffected (hopper is the anchor; cdna3 has no deployment). docs/engine_model.md
section 15."""

WEIGHT_FLOOR_SPLIT = True
"""How the pool splits each iteration's weight floor (`weight_floor_split`). A dense decode iteration reads every
weight once, so within one deployment b0 (a fixed cost) and b2 x weights / HBM bandwidth are the same column: its
own fit identifies only their sum, y = b0 + b2 x (x = `weight_read_s`), and splits it wherever its search ends (the
dev fits: b0 0 to 5e-5 s with b2 1.17 to 1.92). The per-parameter median of such splits transfers an arbitrary
mixture. Across deployments x differs (4 to 15 ms on the fidelity benchmark's dev set), which identifies the split:
the pool's b2 is the Theil-Sen slope of y on x over the own fits (at least the physical 1) and its b0 the median of
y - b2 x; the GPU-family scales are then fitted at that theta. On the 7 dev deployments (benchmarks/fidelity.py,
`--ablate weight-floor` for before) leave-one-deployment-out mean ITL went from 24.8% to 17.5% (median |e|) and the
3 held-out deployments' from 34.1% to 25.1%, throughput within 0.1 pp; LODO TTFT p99 went from 44.5% to 50.5%
(the Qwen A100 console sweep, predicted slower through the ampere scale of the one other A100 deployment), held-out
TTFT from 49.5% to 48.8%. Every pool there has slope 1 or 1.17 and b0 2.2 to 3.5 ms: the fixed per-iteration cost
(scheduler, sampler, CPU work) a single sweep cannot tell from slow weight reads. Off: the plain median."""

WEIGHT_FLOOR_MIN_FITS = 3
"""Own fits the split needs (pairs of distinct weight-read times); with fewer, b0 and b2 are the plain median."""


def weight_read_s(cost: StepCost) -> float:
    """Seconds one decode iteration reads the weights at the full HBM bandwidth, per GPU: the dense weights and every
    routed expert (a decode batch of a few dozen sequences touches nearly all of them: Mixtral's 8 experts, top 2,
    at 16 sequences 99%). The x of `weight_floor_split`."""
    return (cost.dense_weight_bytes + cost.routed_weight_bytes) / cost.hbm_bw


def weight_floor_split(x: list[float], y: list[float]) -> tuple[float, float] | None:
    """(b0, b2) of the pool from the deployments' weight floors y = b0 + b2 x (WEIGHT_FLOOR_SPLIT): b2 the Theil-Sen
    slope (the median of the pairwise slopes, robust to one odd deployment), at least its physical bound, and b0 the
    median of y - b2 x, at least 0. None with fewer than WEIGHT_FLOOR_MIN_FITS points or no two distinct x."""
    if len(x) < WEIGHT_FLOOR_MIN_FITS:
        return None
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if abs(xs[j] - xs[i]) > 1e-9 * max(abs(xs[i]), abs(xs[j]))
    ]
    if not slopes:
        return None
    b2 = max(float(np.median(slopes)), float(PHYSICAL_LOWER[2]))
    b0 = max(float(np.median(ys - b2 * xs)), float(PHYSICAL_LOWER[0]))
    return b0, b2


SCALED_FALLBACK = True
"""A deployment whose levels cannot identify b (one level, one decode batch) still fixes one number: how much
slower or faster than the pool it runs. Its coefficients are the pool's six iteration terms times the one scale
that best replays its own levels (`fit_scale`), basis `transferred` (the shape of b is the pool's). Off: the pool
itself. On the fidelity benchmark's H100 8x TP8 Llama-3.1-405B-FP8 (vLLM 0.6.3 V0, every level at ~128
sequences) the pool alone ran its decode 2.3x too fast (throughput +165%)."""

SCALE_PASSES = 16
"""Simulator passes of the one-scale fit (a 1-D search)."""


def fit_scale(ds: DeploymentSet, levels: list[LevelData], theta: np.ndarray, max_nfev: int = SCALE_PASSES) -> float:
    """The one scale s on b0..b5 of `theta` (h held) that minimises the sum of |relative errors| of `levels`
    replayed through the simulator (b1..b3 stay at or above their physical bounds), from the closed form over the
    levels' step-1 rows (least squares of s x r ~ 1 - h, as the GPU-family scale), by the refinement's search in
    log s."""
    dec, pre, _, _ = level_rows(ds.cost, levels, ds.limits, theta)
    s0 = min(max(closed_form_scale(np.vstack([dec, pre]), theta) or 1.0, 1e-2), 1e2)
    if max_nfev <= 1:
        return s0
    replays = _Replays(ds.cost, ds.limits, levels)
    x = _search(lambda x: replays.residuals(theta, float(np.exp(x[0]))), np.array([math.log(s0)]), max_nfev)
    return float(np.exp(x[0]))


def scaled(theta: np.ndarray, s: float) -> np.ndarray:
    """theta with its six iteration terms times s, b1..b3 kept at their physical bounds (h unchanged)."""
    t = theta.copy()
    t[:6] = np.maximum(t[:6] * s, PHYSICAL_LOWER[:6])
    return t


def fit_deployment(ds: DeploymentSet, pooled: PooledFit, max_nfev: int = REFINE_NFEV) -> DeploymentFit:
    """theta of one deployment: its own two-step fit, or, when its levels cannot identify it, the pooled one times
    the one scale its levels fix (SCALED_FALLBACK), with a warning."""
    why = identifiability(ds.cost, ds.levels, ds.limits)
    if why is not None:
        t, how = pooled.theta_for(ds.arch)
        if SCALED_FALLBACK and ds.levels:
            s = fit_scale(ds, ds.levels, t)
            return DeploymentFit(
                scaled(t, s),
                "transferred",
                t,
                f"unidentifiable: deployment {ds.deployment.key}: {why}; its coefficients fall back to the {how}, "
                f"times {s:.3f}: the one scale its own levels fix (basis transferred)",
                s,
            )
        return DeploymentFit(
            t,
            "transferred",
            t,
            f"unidentifiable: deployment {ds.deployment.key}: {why}; its coefficients fall back to the {how} "
            "(basis transferred)",
        )
    t, t1 = fit_levels(ds, ds.levels, max_nfev)
    return DeploymentFit(t, "calibrated", t1)


# ----------------------------------------------------------------------------------------- residuals

KINDS = ("in_sample", "leave_one_level_out", "leave_one_deployment_out")


def summarize(values: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per metric: n, median absolute relative error, 10th/50th/90th percentile of the signed residuals."""
    out: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        v = np.asarray(values.get(metric, []), dtype=np.float64)
        if not len(v):
            out[metric] = {"n": 0, "median_abs_rel": None, "p10_rel": None, "p50_rel": None, "p90_rel": None}
            continue
        out[metric] = {
            "n": len(v),
            "median_abs_rel": round(float(np.median(np.abs(v))), 6),
            "p10_rel": round(float(np.percentile(v, 10)), 6),
            "p50_rel": round(float(np.percentile(v, 50)), 6),
            "p90_rel": round(float(np.percentile(v, 90)), 6),
        }
    return out


def _collect(into: dict[str, list[float]], res: dict[str, float]) -> None:
    for k, v in res.items():
        into.setdefault(k, []).append(v)


def _theta_dict(theta: np.ndarray) -> dict[str, Any]:
    return {
        "coefficients": {t: round(float(v), 9) for t, v in zip(TERMS, theta[:6], strict=True)},
        "request_overhead_s": round(float(theta[6]), 9),
    }


@dataclass
class Calibration:
    """Parameters per deployment and pooled, with in-sample, leave-one-level-out and leave-one-deployment-out
    residuals."""

    sets: list[DeploymentSet]
    fits: dict[str, DeploymentFit]
    pooled: PooledFit
    residuals: dict[str, dict[str, dict[str, dict[str, Any]]]]  # deployment -> kind -> metric -> summary
    level_residuals: dict[str, list[dict[str, Any]]]
    pooled_residuals: dict[str, dict[str, dict[str, Any]]]
    warnings: list[str]
    seconds: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def find(
        self, model: str, gpu: str, tp: int, pp: int, weights: str, kv: str, engine: str | None = None
    ) -> DeploymentSet | None:
        """The calibrated deployment with this identity (the first in key order when the engine is not named)."""
        return next((ds for ds in self.sets if ds.deployment.matches(model, gpu, tp, pp, weights, kv, engine)), None)

    def coefficients(self, key: str) -> Coefficients:
        """b0..b5 of a deployment of this calibration (by Deployment.key), with its basis."""
        fit = self.fits[key]
        how = f"calibrated on {key}" if fit.basis == "calibrated" else (fit.warning or "pooled")
        return fit.coefficients(how)

    def overhead_s(self, key: str) -> float:
        """The per-request overhead h of a deployment (s), added to TTFT and E2E outside the engine."""
        return float(self.fits[key].theta[6])

    def resolve(
        self, model: str, gpu: str, arch: str, tp: int, pp: int, weights: str, kv: str, engine: str | None = None
    ) -> tuple[Coefficients, float, str | None]:
        """(b, h, key) for a deployment: its own fit when the sweeps hold it (basis calibrated, or transferred
        when its levels could not identify b), else the pooled fit with its GPU family's scale (key None)."""
        ds = self.find(model, gpu, tp, pp, weights, kv, engine)
        if ds is not None:
            key = ds.deployment.key
            return self.coefficients(key), self.overhead_s(key), key
        t, how = self.pooled.theta_for(arch)
        c = Coefficients(tuple(float(v) for v in t[:6]), "transferred", f"{how}, over {len(self.sets)} deployment(s)")  # type: ignore[arg-type]
        return c, float(t[6]), None

    def as_dict(self) -> dict[str, Any]:
        """The calibration as metrics/calibration.json holds it (no timings: same inputs, same bytes)."""
        deployments = []
        for ds in self.sets:
            key = ds.deployment.key
            fit = self.fits[key]
            deployments.append(
                {
                    **ds.deployment.as_dict(),
                    "gpu_arch": ds.arch,
                    "basis": fit.basis,
                    **_theta_dict(fit.theta),
                    "step1": _theta_dict(fit.step1),
                    "prior_coefficients": dict(zip(TERMS, ds.cost.coeffs.b, strict=True)),
                    "engine_limits": ds.limits.as_dict(),
                    "levels": len(ds.levels),
                    "files": ds.files,
                    "lengths": sorted({lv.lengths_source for lv in ds.levels}),
                    "warning": fit.warning,
                    "pool_scale": None if fit.scale is None else round(fit.scale, 6),
                    "residuals": self.residuals[key],
                    "level_residuals": self.level_residuals[key],
                }
            )
        return {
            "predictor": "simulator (pipeline/sim/engine.py)",
            "settings": self.settings,
            "terms": list(TERMS),
            "deployments": deployments,
            "pooled": {**self.pooled.as_dict(), "residuals": self.pooled_residuals},
            "warnings": self.warnings,
            "definitions": DEFINITIONS,
        }

    def describe(self) -> str:
        """The human table: parameters and residuals per deployment, then pooled."""
        lines = [f"calibration: {len(self.sets)} deployment(s), simulator replay"]
        for ds in self.sets:
            key = ds.deployment.key
            fit = self.fits[key]
            b = ", ".join(f"{t}={v:.3g}" for t, v in zip(TERMS, fit.theta[:6], strict=True))
            lines.append(f"{key}  [{fit.basis}, {len(ds.levels)} levels, {ds.arch}]")
            lines.append(f"  b: {b}; request overhead {1e3 * fit.theta[6]:.1f} ms")
            if fit.warning:
                lines.append(f"  warning: {fit.warning}")
            lines += _table(self.residuals[key])
        pb = ", ".join(f"{t}={v:.3g}" for t, v in zip(TERMS, self.pooled.theta[:6], strict=True))
        scales = ", ".join(f"{a} x{s:.3f}" for a, s in sorted(self.pooled.scale.items()))
        lines.append(
            f"pooled fit over {len(self.pooled.deployments)} deployment(s); residuals below: every deployment's levels "
            "together (in-sample and leave-one-level-out of each own fit, leave-one-deployment-out of the pooled fit)"
        )
        lines.append(f"  b: {pb}; request overhead {1e3 * self.pooled.theta[6]:.1f} ms; GPU family scale: {scales}")
        lines += _table(self.pooled_residuals)
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


DEFINITIONS = {
    "residual": "predicted / measured - 1, per level",
    "throughput": "output tokens/s per replica",
    "itl_mean": "mean ITL as the file states it (TPOT or inter-token gap), else its median",
    "ttft": "TTFT at p99 where the file has it, else the percentile it has (p95, p90, p50, mean)",
    "ttft_p50": "TTFT median, where the file has it (reported beside ttft; not the issue's target metric)",
    "in_sample": "fitted on every level of the deployment, predicted on each",
    "leave_one_level_out": "refitted without the level, predicted on it",
    "leave_one_deployment_out": "pooled fit without the deployment (its GPU family's scale when the rest has one), "
    "predicted on its levels",
    "interval": "10th-90th percentile of the signed residuals (p10_rel, p90_rel)",
    "pooled.residuals": "every deployment's levels together: in-sample and leave-one-level-out of each deployment's "
    "own fit, leave-one-deployment-out of the pooled fit",
    "request_overhead_s": "per-request latency outside the engine (HTTP, tokenization, client) added to TTFT and E2E",
}


def _fmt(v: float | None) -> str:
    return "      -" if v is None else f"{100 * v:+6.1f}%"


def _table(res: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    out = [f"  {'residuals':<26}{'metric':<12}{'n':>4}  {'median |e|':>10}  {'p10':>7}  {'p90':>7}"]
    for kind in KINDS:
        for metric in METRICS:
            s = res.get(kind, {}).get(metric)
            if not s or not s["n"]:
                continue
            med = f"{100 * s['median_abs_rel']:9.1f}%"
            out.append(f"  {kind:<26}{metric:<12}{s['n']:>4}  {med:>10}  {_fmt(s['p10_rel'])}  {_fmt(s['p90_rel'])}")
    return out


def calibrate_sets(
    sets: list[DeploymentSet],
    max_nfev: int = REFINE_NFEV,
    lolo_nfev: int | None = None,
    lodo: bool = True,
    with_residuals: bool = True,
    lolo: bool = True,
    residual_keys: set[str] | None = None,
    refine_pool: bool = REFINE_POOL,
    lolo_warm: bool = LOLO_WARM,
    pool: str = POOL,
    first_round_replay: bool | None = None,
) -> Calibration:
    """Fit every deployment and the pool, and measure the three kinds of residuals (`with_residuals=False`: the fits
    only, for callers that need the coefficients and not the table; `residual_keys`: only those deployments').
    `pool`: how the pooled fit is made (POOLS); `refine_pool`: the step-1 pool refined through the simulator (pool
    "step1", or where no other deployment has its own fit)."""
    if pool not in POOLS:
        raise InputError(f"calibration.pool = {pool!r}; expected one of {', '.join(POOLS)}")
    lolo_nfev = LOLO_NFEV if lolo_nfev is None else lolo_nfev
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    for ds in sets:  # at the limits the fits use (a caller may have overridden them after loading)
        mark_unphysical_ttft(ds)
        mark_first_round(ds, first_round_replay)

    def step1_pool(of: list[DeploymentSet]) -> PooledFit:
        return refine_pooled(of, fit_pooled(of), max_nfev) if refine_pool else fit_pooled(of)

    # refine_pool refines the step-1 pool; the median of the fits needs step 1 only for the fits' fallback
    pooled = step1_pool(sets) if pool == "step1" else fit_pooled(sets)
    seconds["pooled"] = round(time.perf_counter() - t0, 3)
    fits: dict[str, DeploymentFit] = {}
    for ds in sets:
        t1 = time.perf_counter()
        fits[ds.deployment.key] = fit_deployment(ds, pooled, max_nfev)
        seconds[ds.deployment.key] = round(time.perf_counter() - t1, 3)
    own = {k: f.theta for k, f in fits.items() if f.basis == "calibrated"}
    if pool == "median-of-fits":
        pooled = pool_of_fits(sets, own, pooled)
        for ds in sets:  # the unidentifiable deployments fall back to this pool
            if fits[ds.deployment.key].basis != "calibrated":
                fits[ds.deployment.key] = fit_deployment(ds, pooled, max_nfev)
    residuals: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    per_level: dict[str, list[dict[str, Any]]] = {}
    warnings: list[str] = []
    all_kinds: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
    for ds in sets:
        key = ds.deployment.key
        fit = fits[key]
        if fit.warning:
            warnings.append(fit.warning)
        if not with_residuals or (residual_keys is not None and key not in residual_keys):
            residuals[key], per_level[key] = {}, []
            continue
        cost = ds.cost.with_coeffs(fit.coefficients(key))
        kinds: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
        rows: list[dict[str, Any]] = []
        rest = [o for o in sets if o is not ds]
        lodo_theta = None
        if rest and lodo:
            # the other deployments' own fits never saw this one's levels
            rest_own = {o.deployment.key: own[o.deployment.key] for o in rest if o.deployment.key in own}
            if pool == "median-of-fits" and rest_own:
                pool_wo = pool_of_fits(rest, rest_own, pooled)
            else:
                pool_wo = step1_pool(rest)
            lodo_theta = pool_wo.theta_for(ds.arch)[0]
        for i, lv in enumerate(ds.levels):
            row: dict[str, Any] = {
                "level": lv.name,
                "measured": {k: round(v, 9) for k, v in lv.measured().items()},
                "ttft_stat": lv.ttft_stat(),
                "notes": list(lv.notes),
            }
            kind, job, run = replay_level(cost, ds.limits, lv)
            ins = residuals_of(sim_metrics(run, float(fit.theta[6]), kind in CLOSED_LIKE, needs_gap_p50(lv)), lv)
            tail = None
            if kind == "closed":
                burst = simulate(cost, ds.limits, kind, job[:4]) if len(job) > 4 else run
                tail = first_round_tail(burst, int(job[2]), float(fit.theta[6]), lv.ttft_s.get("p99"), lv.requests)
            if tail is not None:
                row["first_round"] = tail
                row["notes"] = [*lv.notes, first_round_note(tail, lv.first_round_unmeasured)]
            _collect(kinds["in_sample"], ins)
            row["in_sample"] = _rounded(ins)
            row["leave_one_level_out"] = None
            if fit.basis == "calibrated" and lolo:
                others = [o for j, o in enumerate(ds.levels) if j != i]
                if identifiability(ds.cost, others, ds.limits) is None:
                    t_wo, _ = fit_levels(ds, others, lolo_nfev, fit.theta if lolo_warm else None)
                    c = ds.cost.with_coeffs(Coefficients(tuple(float(v) for v in t_wo[:6]), "calibrated", "lolo"))  # type: ignore[arg-type]
                    lolo_res = residuals_of(predict_level(c, ds.limits, lv, float(t_wo[6])), lv)
                    _collect(kinds["leave_one_level_out"], lolo_res)
                    row["leave_one_level_out"] = _rounded(lolo_res)
            elif fit.scale is not None and lolo and len(ds.levels) > 1:
                # the one scale refitted on the other levels (the pool's shape of b is not this deployment's)
                others = [o for j, o in enumerate(ds.levels) if j != i]
                t_wo = scaled(fit.step1, fit_scale(ds, others, fit.step1))
                c = ds.cost.with_coeffs(Coefficients(tuple(float(v) for v in t_wo[:6]), "transferred", "lolo"))  # type: ignore[arg-type]
                lolo_res = residuals_of(predict_level(c, ds.limits, lv, float(t_wo[6])), lv)
                _collect(kinds["leave_one_level_out"], lolo_res)
                row["leave_one_level_out"] = _rounded(lolo_res)
            row["leave_one_deployment_out"] = None
            if lodo_theta is not None:
                c = ds.cost.with_coeffs(Coefficients(tuple(float(v) for v in lodo_theta[:6]), "transferred", "lodo"))  # type: ignore[arg-type]
                lodo_res = residuals_of(predict_level(c, ds.limits, lv, float(lodo_theta[6])), lv)
                _collect(kinds["leave_one_deployment_out"], lodo_res)
                row["leave_one_deployment_out"] = _rounded(lodo_res)
            rows.append(row)
        for kind, vals in kinds.items():
            for metric, v in vals.items():
                all_kinds[kind].setdefault(metric, []).extend(v)
        residuals[key] = {kind: summarize(vals) for kind, vals in kinds.items()}
        per_level[key] = rows
    pooled_res = {kind: summarize(vals) for kind, vals in all_kinds.items()}
    seconds["total"] = round(time.perf_counter() - t0, 3)
    settings = {
        "refine_passes": max_nfev,
        "lolo_passes": lolo_nfev if lolo else None,
        "lodo": lodo,
        "pooled_refined": refine_pool,
        "first_round_replay": FIRST_ROUND_REPLAY if first_round_replay is None else bool(first_round_replay),
        "pool": pool,
        "lolo_warm_start": bool(lolo_warm and lolo and lolo_nfev > 1),
        "step_form": _step_form(),
    }
    return Calibration(sets, fits, pooled, residuals, per_level, pooled_res, warnings, seconds, settings)


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in d.items()}


def calibrate(
    paths: list[Path],
    manifests: list[Path] | None = None,
    root: Path | None = None,
    max_nfev: int = REFINE_NFEV,
    lolo_nfev: int | None = None,
    lodo: bool = True,
    with_residuals: bool = True,
    lolo: bool = True,
    roofline: Any = None,
    pool: str = POOL,
    refine_pool: bool = REFINE_POOL,
    first_round_replay: bool | None = None,
) -> Calibration:
    """`sizing calibrate PATH...`: read and check every sweep, fit, and measure the residuals (nothing written).
    `with_residuals=False` fits only (what `sizing predict/simulate --calibrate` need); `roofline`: params.yaml's
    section, the prior (defaults when None); `pool`, `refine_pool`: how the pooled fit is made; `first_round_replay`:
    `mark_first_round` on or off (FIRST_ROUND_REPLAY when None; `calibrate_sets`)."""
    sets = deployment_sets(paths, manifests, root, roofline)
    if not sets or not any(ds.levels for ds in sets):
        raise InputError(f"{', '.join(p.as_posix() for p in paths)}: no measured levels to calibrate on")
    return calibrate_sets(
        sets,
        max_nfev,
        lolo_nfev,
        lodo,
        with_residuals,
        lolo,
        refine_pool=refine_pool,
        pool=pool,
        first_round_replay=first_round_replay,
    )


# ------------------------------------------------------------------------------------------- predict

PREDICT_CLOSED_REQUESTS = 10
"""Closed loop: measured requests per concurrent slot (at least 200). No warm-up: every slot starts at t = 0, as
`vllm bench serve --max-concurrency` measures it, so TTFT p99 includes that start-up burst."""
PREDICT_OPEN_SECONDS = 300.0
"""Open loop: requests of this many seconds at the rate (500 to 5,000 requests)."""
MAX_LOG_LENGTHS = 4096


def lengths_from_log(log: str | Path, params_path: Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The input/output lengths of a traffic log (every request, then an even stride down to MAX_LOG_LENGTHS)."""
    from pipeline.sim.trace import load_trace

    trace, window = load_trace(log, "all", params_path)
    ins = np.asarray(trace.input_tokens, np.int64)
    outs = np.asarray(trace.output_tokens, np.int64)
    if len(ins) > MAX_LOG_LENGTHS:
        idx = np.linspace(0, len(ins) - 1, MAX_LOG_LENGTHS).round().astype(np.int64)
        ins, outs = ins[idx], outs[idx]
    return ins, outs, f"{log}: {window.requests:,} requests ({len(ins):,} lengths replayed)"


def _stats_ms(values: np.ndarray, shift_s: float = 0.0) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if not len(v):
        return dict.fromkeys(("mean", "p50", "p95", "p99"))
    v = (v + shift_s) * 1e3
    return {
        "mean": round(float(v.mean()), 6),
        **{f"p{q}": round(float(np.percentile(v, q)), 6) for q in (50, 95, 99)},
    }


def _interval(level: dict[str, Any], res: dict[str, dict[str, Any]] | None, source: str) -> dict[str, Any]:
    """predicted x [1 / (1 + p90), 1 / (1 + p10)] of the residuals (the measured value's 10th-90th band)."""
    if not res:
        return {"source": source, "output_tokens_per_s": None, "itl_ms_mean": None, "ttft_ms": None}

    def band(value: float | None, metric: str) -> dict[str, float] | None:
        s = res.get(metric) or {}
        if value is None or not s.get("n"):
            return None
        lo, hi = 1.0 + s["p90_rel"], 1.0 + s["p10_rel"]
        if lo <= 0 or hi <= 0:
            return None
        return {"low": round(value / lo, 6), "high": round(value / hi, 6), "n": s["n"]}

    return {
        "source": source,
        "output_tokens_per_s": band(level["output_tokens_per_s"], "throughput"),
        "itl_ms_mean": band(level["itl_ms"]["mean"], "itl_mean"),
        "ttft_ms": band(level["ttft_ms"]["p99"], "ttft"),
    }


def predict(
    model_name: str,
    gpu_name: str,
    tp: int,
    weights: str,
    kv: str,
    input_tokens: float | None,
    output_tokens: float | None,
    concurrency: list[int] | None = None,
    request_rate: list[float] | None = None,
    pp: int = 1,
    calibrate_paths: list[Path] | None = None,
    manifests: list[Path] | None = None,
    lengths_from: str | Path | None = None,
    engine: str | None = None,
    params_path: Path | None = None,
    lolo_nfev: int = LOLO_NFEV,
    roofline: Any = None,
) -> dict[str, Any]:
    """`sizing predict`: the deployment's curve at the given loads through the simulator, with the basis
    (calibrated / transferred / roofline), the coefficients and the prediction interval of that basis."""
    from pipeline import catalog, paths, quantization
    from pipeline.sim.cost import for_deployment

    for c in concurrency or []:
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise InputError(f"--concurrency = {c!r}; expected integers >= 1 (concurrent requests)")
    for r in request_rate or []:
        if not (isinstance(r, int | float) and math.isfinite(r) and r > 0):
            raise InputError(f"--request-rate = {r!r}; expected finite rates > 0 (requests/s)")
    if not concurrency and not request_rate:
        raise InputError("--concurrency: no load given; expected --concurrency N[,N...] and/or --request-rate R[,R...]")
    model = catalog.load_model(model_name, paths.ROOT if not Path(model_name).exists() else Path.cwd())
    gpu = catalog.find_gpu(gpu_name, catalog.load_gpus())
    quantization.precision(weights, "weights")
    quantization.precision(kv, "kv")
    prior_cost = for_deployment(model, gpu, weights, kv, tp, pp, roofline=roofline)
    if isinstance(prior_cost, str):
        raise InputError(f"deployment {model.name} on {gpu.name} TP{tp} w-{weights}/kv-{kv}: {prior_cost}")
    compute = str(quantization.check(gpu, weights, kv).compute)
    if lengths_from is not None:
        ins, outs, lengths_source = lengths_from_log(lengths_from, params_path)
    else:
        for flag, v in (("--input-tokens", input_tokens), ("--output-tokens", output_tokens)):
            if v is None or not math.isfinite(v) or v < 1:
                raise InputError(f"{flag} = {v!r}; expected a token count >= 1 (or --lengths-from LOG)")
        ins = np.array([round(float(input_tokens))], np.int64)  # type: ignore[arg-type]
        outs = np.array([round(float(output_tokens))], np.int64)  # type: ignore[arg-type]
        lengths_source = f"constant {int(ins[0])} in / {int(outs[0])} out"
    manifest = {"engine": engine or "vllm", "weight_dtype": weights, "kv_dtype": kv, "notes": ""}
    limits = engine_limits(manifest, model, gpu, prior_cost, tp, pp)
    _check_starts(model, gpu, weights, kv, tp, pp, float((ins + outs).max()), limits)
    basis, theta = "roofline", prior_theta(prior_cost)
    interval_res: dict[str, dict[str, Any]] | None = None
    interval_src = "none: the roofline prior has no measured residuals"
    calib: dict[str, Any] = {
        "source": prior_cost.coeffs.source,
        "prior_coefficients": dict(zip(TERMS, prior_cost.coeffs.b, strict=True)),
        "warnings": [],
    }
    if calibrate_paths:
        sets = deployment_sets(list(calibrate_paths), manifests, roofline=roofline)
        mine = next((d for d in sets if d.deployment.matches(model.name, gpu.name, tp, pp, weights, kv, engine)), None)
        # the interval needs the matched deployment's leave-one-level-out residuals, or (transferred) every
        # deployment's leave-one-deployment-out residuals
        own = mine is not None and identifiability(mine.cost, mine.levels, mine.limits) is None
        cal = calibrate_sets(
            sets,
            lolo_nfev=lolo_nfev,
            lodo=not own,
            lolo=own,
            residual_keys={mine.deployment.key} if own and mine is not None else None,
        )
        calib["files"] = sorted({f for d in sets for f in d.files})
        calib["deployments"] = [d.deployment.key for d in sets]
        calib["warnings"] = list(cal.warnings)
        if mine is not None:
            key = mine.deployment.key
            fit = cal.fits[key]
            theta, limits = fit.theta, mine.limits
            basis = fit.basis
            calib["deployment_key"] = key
            calib["source"] = f"calibrated on {key}" if basis == "calibrated" else str(fit.warning)
            if basis == "calibrated":
                interval_res = cal.residuals[key].get("leave_one_level_out")
                interval_src = f"leave-one-level-out residuals of {key}"
            else:
                interval_res = cal.pooled_residuals.get("leave_one_deployment_out")
                interval_src = "leave-one-deployment-out residuals of the pooled fit"
        else:
            theta, how = cal.pooled.theta_for(gpu.arch)
            basis = "transferred"
            calib["source"] = f"{how}, over {len(sets)} deployment(s)"
            interval_res = cal.pooled_residuals.get("leave_one_deployment_out")
            interval_src = "leave-one-deployment-out residuals of the pooled fit"
    calib.update(_theta_dict(theta))
    calib["engine_limits"] = limits.as_dict()
    cost = prior_cost.with_coeffs(Coefficients(tuple(float(v) for v in theta[:6]), basis, calib["source"]))  # type: ignore[arg-type]
    h = float(theta[6])
    levels = []
    from pipeline.sim.engine import Trace

    for c in concurrency or []:
        n = max(200, PREDICT_CLOSED_REQUESTS * c)
        reps = math.ceil((n + 2 * c) / len(ins))
        res = simulate(cost, limits, "closed", (np.tile(ins, reps), np.tile(outs, reps), c, n))
        levels.append(_level_out({"concurrency": c}, res, h, True))
    for r in request_rate or []:
        n = int(min(max(500, r * PREDICT_OPEN_SECONDS), 5000))
        rng = np.random.default_rng(0)
        arr = np.cumsum(rng.exponential(1.0 / r, n))
        arr -= arr[0]
        if n > 1 and arr[-1] > 0:
            arr *= (n - 1) / r / arr[-1]
        reps = math.ceil(n / len(ins))
        trace = Trace(arr, np.tile(ins, reps)[:n], np.tile(outs, reps)[:n])
        res = simulate(cost, limits, "open", trace)
        levels.append(_level_out({"request_rate": r}, res, h, False))
    for lv in levels:
        lv["interval"] = _interval(lv, interval_res, interval_src)
    deployment = {
        "model": model.name,
        "gpu": gpu.name,
        "gpu_arch": gpu.arch,
        "tp": tp,
        "pp": pp,
        "weight_dtype": weights,
        "kv_dtype": kv,
        "compute_dtype": compute,
        "engine": engine,
        "lengths": {
            "source": lengths_source,
            "input_tokens_mean": round(float(ins.mean()), 3),
            "output_tokens_mean": round(float(outs.mean()), 3),
        },
    }
    return {"basis": basis, "deployment": deployment, "levels": levels, "calibration": calib}


def _summary_ms(stats: dict[str, Any]) -> dict[str, float | None]:
    """A SimResult.summary() latency block (already in ms) in the shape of _stats_ms."""
    return {k: (None if stats.get(k) is None else round(float(stats[k]), 6)) for k in ("mean", "p50", "p95", "p99")}


def _level_out(load: dict[str, Any], res: Any, h: float, closed: bool) -> dict[str, Any]:
    s = res.summary()
    e2e = float(np.mean(res.e2e_s)) if len(res.e2e_s) else math.nan
    scale = e2e / (e2e + h) if closed and e2e > 0 else 1.0
    itl = (
        _stats_ms(np.asarray(res.itl_gaps_s)) if res.itl_gaps_s is not None else _summary_ms(s["itl_ms"])
    )  # every inter-token gap; beyond the exact buffer, the simulator's gap histogram (never per-request means)
    return {
        **load,
        "ttft_ms": _stats_ms(res.ttft_s, h),
        "itl_ms": itl,
        "e2e_ms": _stats_ms(res.e2e_s, h),
        "rps": round(float(s["rps"] or 0.0) * scale, 6),
        "output_tokens_per_s": round(float(s["output_tokens_per_s"] or 0.0) * scale, 6),
    }


def _check_starts(
    model: Any, gpu: Any, weights: str, kv: str, tp: int, pp: int, context: float, limits: EngineLimits
) -> None:
    """InputError when the engine would refuse to start (the memory stage's engine profile), before simulating."""
    from pipeline import memory, parallelism

    settings = memory.EngineSettings(
        max_num_batched_tokens=limits.max_num_batched_tokens, max_num_seqs=limits.max_num_seqs
    )
    prof = memory.engine_profile(
        model, gpu, weights, kv, tp, pp, parallelism.expert_parallel(model, tp), max(context, 1.0), settings
    )
    if not prof.fits:
        raise InputError(
            f"deployment {model.name} on {tp * pp}x {gpu.name} TP{tp} PP{pp} w-{weights}/kv-{kv}: the engine would not "
            f"start ({prof.refusal}: {prof.kv_cache_gib:.2f} GiB for KV per GPU); expected a deployment that fits "
            "(check `sizing memory`)"
        )


def _num(v: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.{digits}f}"


def describe_prediction(pred: dict[str, Any]) -> str:
    """The human table of `sizing predict`."""
    d = pred["deployment"]
    cal = pred["calibration"]
    lines = [
        f"{d['model']} on {d['gpu']} TP{d['tp']} PP{d['pp']} w-{d['weight_dtype']}/kv-{d['kv_dtype']}: basis "
        f"{pred['basis']} ({cal['source']})",
        f"  lengths: {d['lengths']['source']}; request overhead {1e3 * cal['request_overhead_s']:.1f} ms",
        f"  {'load':>12}  {'TTFT p50':>9}  {'TTFT p99':>9}  {'ITL mean':>9}  {'ITL p99':>8}  {'E2E p50':>9}  "
        f"{'req/s':>8}  {'out tok/s':>10}  interval (out tok/s)",
    ]
    for lv in pred["levels"]:
        load = f"c={lv['concurrency']}" if "concurrency" in lv else f"{lv['request_rate']:g}/s"
        band = lv["interval"]["output_tokens_per_s"]
        band_text = f"{band['low']:,.0f}..{band['high']:,.0f}" if band else "-"
        t, i, e = lv["ttft_ms"], lv["itl_ms"], lv["e2e_ms"]
        lines.append(
            f"  {load:>12}  {_num(t['p50'], 9, 1)}  {_num(t['p99'], 9, 1)}  {_num(i['mean'], 9, 2)}  "
            f"{_num(i['p99'], 8, 2)}  {_num(e['p50'], 9, 0)}  {lv['rps']:8.3f}  {lv['output_tokens_per_s']:10.1f}  "
            f"{band_text}"
        )
    lines += [f"  warning: {w}" for w in cal.get("warnings", [])]
    return "\n".join(lines) + "\n"


__all__ = [
    "KINDS",
    "METRICS",
    "Calibration",
    "Deployment",
    "DeploymentFit",
    "DeploymentSet",
    "EngineLimits",
    "LevelData",
    "PooledFit",
    "calibrate",
    "calibrate_sets",
    "decode_terms",
    "deployment_sets",
    "describe_prediction",
    "first_round_tail",
    "fit_aggregates",
    "fit_deployment",
    "fit_pooled",
    "identifiability",
    "level_rows",
    "predict",
    "predict_level",
    "prefill_terms",
    "refine",
    "replay_trace",
    "sim_metrics",
    "simulate",
    "summarize",
]
