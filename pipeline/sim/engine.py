"""Step 7b: a discrete-event model of a vLLM V1 / SGLang continuous-batching engine (method.md 7b).

Each iteration, in this order (the kernel `_run` below, numba, no per-event Python objects):

1. every running request that has finished its prefill decodes one token (decode first),
   in admission order;
2. the rest of `max_num_batched_tokens` goes to prefill chunks: first running requests
   that are partly prefilled, then waiting requests, first come first served (a preempted
   request goes back to the *front* of the waiting queue; an iteration that preempted
   admits no waiting request, as vLLM V1's scheduler);
3. at most `max_num_seqs` requests run;
4. a request emits its first token at the end of the iteration that completes its prefill
   (and one more token at the end of every decode iteration); it finishes with its
   `output_tokens`-th token;
5. KV blocks of `block_size` tokens are taken as tokens are scheduled, out of `kv_blocks`.
   When a running request needs a block and none is free, the most recently admitted
   running request is preempted (vLLM V1 `running.pop()`): its blocks are freed, it returns
   to the front of the waiting queue and later redoes its prefill over prompt + generated
   tokens (recompute). A waiting request that does not fit is simply not admitted yet.
   A request whose whole context (input + output - 1 tokens) exceeds `kv_blocks` can never
   run: it is rejected (the engine's max_model_len check) and counted, not simulated.

The iteration time is `cost.step_time(packed, tokens, attn_pairs, attn_pairs_windowed,
kv_tokens, kv_tokens_windowed, seqs)` with, per iteration: tokens = chunk tokens + one per
decoding sequence; attn_pairs = sum over scheduled tokens of the context each attends to
(a chunk covering positions s+1..s+k contributes `pair_sums(s, k)`, a decode at position L
contributes L); kv_tokens = sum over the scheduled sequences of their context after this
iteration; `_windowed` = the same capped at the model's sliding window; seqs = sequences
scheduled. How the FLOPs and memory terms combine (additive, or overlapping as a max) is the
coefficients' form, the last entry of the packed vector (cost.STEP_FORMS). numba's cache does not
see edits to cost.py: an edit to `cost.step_time` needs this file touched too (its kernels inline it).

Prefill/decode mixing (`EngineConfig.mixed_prefill`): True (the default) is vLLM V1's chunked
prefill, steps 1-3 above in one iteration. False is SGLang's default scheduler (without
`--enable-mixed-chunk`): each iteration first tries to form a prefill batch (step 2, then step 3,
under the same token budget); when one forms it runs *alone* and the decoding requests wait (no
token, so their next inter-token gap includes it); only when no prefill can be scheduled does the
decode batch (step 1) run. Prefill-first: lower TTFT, higher ITL under load.

Prefix caching (simplifications, documented):
- Granularity is the trace's hash block (`Trace.hash_block_tokens`, 512 for Mooncake/AIPerf
  hash_ids), not the engine block: a request's leading hash ids that are resident (stopping
  at the first one that is not: the hash chain) are reused, capped at the prompt minus one
  token (vLLM always recomputes the last prompt token) and rounded down to whole engine
  blocks.
- "Resident" is an LRU of hash blocks whose capacity is the KV capacity in hash blocks
  (kv_blocks x block_size / hash_block_tokens, capped at the trace's own hash count, or at
  `LRU_CAP` when the trace is streamed): freed blocks keep their hash until evicted, as in
  vLLM. A request's hash blocks become resident when its prefill completes (inserted last
  block first, so a chain's head is evicted last) and are touched when it reuses them.
- Reused blocks are still charged to each request that holds them (no cross-request sharing
  of KV capacity): pessimistic on memory when many running requests share one prefix.

Loops: open loop (`simulate_open`: the trace's arrival times divided by `rate_scale`) and
closed loop (`simulate_closed`: `concurrency` requests in flight, each finished one
replaced at that instant by the next; all sent at t = 0 as `vllm bench serve --max-concurrency`
does, or with `start="staggered"` spread over one lone request's E2E: docs/engine_model.md 17). Both are deterministic: no randomness at all in the
open loop; the closed loop draws lengths in order (cycling), or with `sample=True` with the
seed's generator.

Memory: `simulate_open` streams the trace through the kernel in chunks of `CHUNK` requests
(only requests still in flight are carried from one chunk to the next), and with
`keep="histogram"` keeps only fixed-size log-binned histograms (HDR-style: 256 bins per octave
over 2^-20 s .. 2^14 s, each at most 0.39% wide) of TTFT, E2E, per-request mean ITL and every inter-token gap instead of
per-request arrays: memory is then flat in trace length (`simulate_open_stream` takes an
iterator of chunks, e.g. `trace.iter_log`). Percentiles from histograms interpolate inside a
bin (error <= one bin width). With the default `keep="arrays"` every per-request array is
kept, and every inter-token gap too while they number at most `MAX_EXACT_GAPS` (else the
gap histogram serves the ITL percentiles).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from pipeline.errors import InputError
from pipeline.sim.cost import N_CONST, StepCost, pair_sums_kernel, step_time

CHUNK = 1 << 16
"""Requests fed to the kernel per call when streaming an open-loop trace."""
MAX_EXACT_GAPS = 5_000_000
"""Above this many inter-token gaps `keep="arrays"` stops storing each gap (the histogram remains)."""
CLOSED_STARTS = ("staggered", "burst")
"""simulate_closed's `start`: clients spread over one lone request's E2E, or all sent at t = 0 (the default)."""
LRU_CAP = 1 << 22
"""Largest prefix-cache LRU (hash blocks) when the trace's own hash count is not known (streaming)."""
HIST_SUB = 256
"""Histogram bins per octave (HDR-style: exponent + 8 mantissa bits, so a bin is at most 0.39% wide)."""
HIST_MIN_EXP = -20
"""The histograms cover 2^-20 s (~1 us) .. 2^14 s (~4.5 h); values outside land in the end bins."""
HIST_OCTAVES = 34
HIST_BINS = HIST_OCTAVES * HIST_SUB
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))

# status of a request in the kernel's buffer
_NEW, _QUEUED, _RUNNING, _DONE, _REJECTED = 0, 1, 2, 3, 4
# integer state vector
(
    G_NRUN,
    G_QHEAD,
    G_QLEN,
    G_NEXT,
    G_ITERS,
    G_PREEMPT,
    G_FREE,
    G_DONE,
    G_RELEASE,
    G_LRU_USED,
    G_LRU_HEAD,
    G_LRU_TAIL,
    G_REJECTED,
    G_LASTFIN,
    G_QTAIL,
    G_INFLIGHT,
    G_CAPFREE,
) = range(17)
N_GI = 17  # G_INFLIGHT, G_CAPFREE: a capped open loop's requests sent and not finished, and its free client slots
# float state vector
F_NOW, F_BUSY = 0, 1


@dataclass(frozen=True)
class EngineConfig:
    """The engine knobs the scheduler obeys (vLLM names)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    kv_blocks: int = 10**9  # capacity in blocks (from the memory stage's engine profile)
    enable_prefix_caching: bool = True
    mixed_prefill: bool = True  # vLLM V1: prefill chunks ride in decode iterations; False: SGLang's default

    def check(self) -> None:
        """InputError unless every knob is a positive integer."""
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "kv_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"engine: {name} = {value!r}; expected an integer >= 1")


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival (seconds from the trace start), with optional prefix hash blocks (CSR)."""

    arrival_s: np.ndarray  # float64
    input_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    hash_offsets: np.ndarray | None = None  # int64 n+1 CSR offsets into hash_values, or None
    hash_values: np.ndarray | None = None  # int64 block hashes (block = hash_block_tokens tokens)
    hash_block_tokens: int = 512

    def __len__(self) -> int:
        return len(self.arrival_s)

    def slice(self, start: int, stop: int) -> Trace:
        """Requests start..stop-1 (hash offsets rebased)."""
        if self.hash_offsets is None or self.hash_values is None:
            return Trace(
                self.arrival_s[start:stop],
                self.input_tokens[start:stop],
                self.output_tokens[start:stop],
                hash_block_tokens=self.hash_block_tokens,
            )
        off = self.hash_offsets[start : stop + 1]
        return Trace(
            self.arrival_s[start:stop],
            self.input_tokens[start:stop],
            self.output_tokens[start:stop],
            off - off[0],
            self.hash_values[off[0] : off[-1]],
            self.hash_block_tokens,
        )

    def check(self, label: str = "trace") -> None:
        """InputError unless the arrays are consistent: same length, sorted finite arrivals, tokens >= 1."""
        n = len(self.arrival_s)
        if len(self.input_tokens) != n or len(self.output_tokens) != n:
            raise InputError(f"{label}: arrival_s, input_tokens, output_tokens have different lengths")
        a = np.asarray(self.arrival_s, dtype=np.float64)
        if n and not np.all(np.isfinite(a)):
            raise InputError(
                f"{label}: arrival_s: not finite at row {int(np.argmin(np.isfinite(a)))}; expected seconds"
            )
        if n > 1 and np.any(np.diff(a) < 0):
            raise InputError(f"{label}: arrival_s: not sorted; expected arrivals in time order")
        for name in ("input_tokens", "output_tokens"):
            v = np.asarray(getattr(self, name))
            if n and v.min() < 1:
                raise InputError(f"{label}: {name}: {int(v.min())} at row {int(np.argmin(v))}; expected >= 1")
        if (self.hash_offsets is None) != (self.hash_values is None):
            raise InputError(f"{label}: hash_offsets and hash_values must both be given or both be None")
        if self.hash_offsets is not None and len(self.hash_offsets) != n + 1:
            raise InputError(f"{label}: hash_offsets: {len(self.hash_offsets)} entries; expected {n + 1}")
        if self.hash_block_tokens < 1:
            raise InputError(f"{label}: hash_block_tokens = {self.hash_block_tokens}; expected >= 1")


@dataclass
class SimResult:
    """Per-request latencies (NaN itl_mean_s when output_tokens == 1) and the run's totals.

    With `keep="histogram"` the per-request arrays are empty and `hist` holds the
    histograms (see the module docstring); `summary()` reads whichever is present."""

    ttft_s: np.ndarray
    e2e_s: np.ndarray
    itl_mean_s: np.ndarray
    arrival_s: np.ndarray
    finish_s: np.ndarray
    preemptions: np.ndarray
    itl_gaps_s: np.ndarray | None
    busy_s: float
    duration_s: float
    iterations: int
    preemptions_total: int
    output_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    requests: int = 0  # measured requests served
    rejected: int = 0  # requests whose context never fits the KV capacity
    output_tokens_total: int = 0
    hist: dict[str, np.ndarray] | None = None  # ttft, e2e, itl_mean, gap histograms (HIST_BINS counts each)
    sums: dict[str, float] = field(default_factory=dict)  # exact sums for the means when histograms are kept
    span_s: float = 0.0  # the whole simulated span (first arrival to the last iteration's end), warm-up included

    def summary(self) -> dict[str, Any]:
        """{ttft_ms, itl_ms (over every inter-token gap), tpot_ms (per-request mean ITL), e2e_ms}: mean,
        p50, p95, p99; rps and output_tokens_per_s over `duration_s`; requests, preemptions, rejected."""
        out: dict[str, Any] = {}
        for key, arr, hname in (
            ("ttft_ms", self.ttft_s, "ttft"),
            ("itl_ms", self.itl_gaps_s, "gap"),
            ("tpot_ms", self.itl_mean_s, "itl_mean"),
            ("e2e_ms", self.e2e_s, "e2e"),
        ):
            if arr is not None and (len(arr) or self.hist is None):
                vals = arr[np.isfinite(arr)] if len(arr) else arr
                out[key] = _stats_ms(vals)
            elif self.hist is not None and hname in self.hist:
                counts = self.hist[hname]
                total = int(counts.sum())
                mean = self.sums.get(hname, float("nan")) / total if total else float("nan")
                out[key] = {"mean": ms(mean), **{q: ms(hist_quantile(counts, p)) for q, p in QUANTILES}}
            else:
                out[key] = {"mean": None, "p50": None, "p95": None, "p99": None}
        d = self.duration_s
        out["rps"] = per_s(self.requests, d)
        out["output_tokens_per_s"] = per_s(self.output_tokens_total, d)
        out["requests"] = int(self.requests)
        out["preemptions"] = int(self.preemptions_total)
        out["rejected"] = int(self.rejected)
        out["busy_share"] = round(self.busy_s / self.span_s, 6) if self.span_s > 0 else None
        return out


def per_s(count: float, duration_s: float) -> float | None:
    """count / duration_s, rounded to 6 decimals as summary() gives rps and output_tokens_per_s (None without a span)."""
    return round(count / duration_s, 6) if duration_s > 0 else None


def ms(x: float) -> float | None:
    """Seconds to milliseconds rounded to 6 decimals, as summary() gives every latency (None if not finite)."""
    return round(float(x) * 1e3, 6) if math.isfinite(x) else None


def _stats_ms(vals: np.ndarray) -> dict[str, float | None]:
    if len(vals) == 0:
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    qs = np.percentile(vals, [50, 95, 99])
    return {"mean": ms(float(np.mean(vals))), "p50": ms(qs[0]), "p95": ms(qs[1]), "p99": ms(qs[2])}


def hist_edges() -> np.ndarray:
    """The HIST_BINS + 1 bin edges (s) of every latency histogram: 2^e x (1 + m/256)."""
    b = np.arange(HIST_BINS + 1)
    return np.ldexp(1.0 + (b % HIST_SUB) / HIST_SUB, b // HIST_SUB + HIST_MIN_EXP)


def hist_quantile(counts: np.ndarray, q: float) -> float:
    """Quantile q of a histogram over hist_edges(), interpolated linearly inside the bin (NaN if empty)."""
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    rank = q * (total - 1)  # numpy 'linear' percentile rank, 0-based
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, rank, side="right"))
    b = min(b, len(counts) - 1)
    before = cum[b - 1] if b > 0 else 0
    frac = (rank - before + 0.5) / counts[b] if counts[b] else 0.5
    lo = math.ldexp(1.0 + (b % HIST_SUB) / HIST_SUB, b // HIST_SUB + HIST_MIN_EXP)
    hi = math.ldexp(1.0 + ((b + 1) % HIST_SUB) / HIST_SUB, (b + 1) // HIST_SUB + HIST_MIN_EXP)
    return float(lo + (hi - lo) * min(max(frac, 0.0), 1.0))


# --------------------------------------------------------------------------------------------------
# numba kernels


@njit(cache=True, inline="always")
def _hbin(x: float) -> int:
    if x <= 0.0:
        return 0
    m, e = math.frexp(x)  # x = m 2^e, m in [0.5, 1): the bin of [2^(e-1), 2^e) and its mantissa eighth-bits
    b = (e - 1 - HIST_MIN_EXP) * HIST_SUB + int((2.0 * m - 1.0) * HIST_SUB)
    if b < 0:
        return 0
    if b >= HIST_BINS:
        return HIST_BINS - 1
    return b


@njit(cache=True, inline="always")
def _home(key: np.int64, mask: np.int64) -> np.int64:
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64((h >> np.uint64(17)) & np.uint64(mask))


@njit(cache=True)
def _lru_find(key: np.int64, lru_key: np.ndarray, table: np.ndarray) -> np.int64:
    mask = len(table) - 1
    i = _home(key, mask)
    while True:
        s = table[i]
        if s < 0:
            return -1
        if lru_key[s] == key:
            return s
        i = (i + 1) & mask


@njit(cache=True)
def _lru_unlink(s: np.int64, prev: np.ndarray, nxt: np.ndarray, gi: np.ndarray) -> None:
    p, q = prev[s], nxt[s]
    if p >= 0:
        nxt[p] = q
    else:
        gi[G_LRU_HEAD] = q
    if q >= 0:
        prev[q] = p
    else:
        gi[G_LRU_TAIL] = p


@njit(cache=True)
def _lru_push_head(s: np.int64, prev: np.ndarray, nxt: np.ndarray, gi: np.ndarray) -> None:
    h = gi[G_LRU_HEAD]
    prev[s] = -1
    nxt[s] = h
    if h >= 0:
        prev[h] = s
    gi[G_LRU_HEAD] = s
    if gi[G_LRU_TAIL] < 0:
        gi[G_LRU_TAIL] = s


@njit(cache=True)
def _lru_table_delete(key: np.int64, lru_key: np.ndarray, table: np.ndarray) -> None:
    """Remove key from the linear-probing table (backward-shift deletion, no tombstones)."""
    mask = len(table) - 1
    i = _home(key, mask)
    while lru_key[table[i]] != key:
        i = (i + 1) & mask
    table[i] = -1
    j = i
    while True:
        j = (j + 1) & mask
        s = table[j]
        if s < 0:
            return
        k = _home(lru_key[s], mask)
        stays = (i < k <= j) if i <= j else (k > i or k <= j)  # k cyclically in (i, j]: the entry stays
        if stays:
            continue
        table[i] = s
        table[j] = -1
        i = j


@njit(cache=True)
def _lru_insert(
    key: np.int64, lru_key: np.ndarray, prev: np.ndarray, nxt: np.ndarray, table: np.ndarray, gi: np.ndarray
) -> None:
    s = _lru_find(key, lru_key, table)
    if s >= 0:
        _lru_unlink(s, prev, nxt, gi)
        _lru_push_head(s, prev, nxt, gi)
        return
    if gi[G_LRU_USED] < len(lru_key):
        s = gi[G_LRU_USED]
        gi[G_LRU_USED] += 1
    else:
        s = gi[G_LRU_TAIL]
        _lru_unlink(s, prev, nxt, gi)
        _lru_table_delete(lru_key[s], lru_key, table)
    lru_key[s] = key
    mask = len(table) - 1
    i = _home(key, mask)
    while table[i] >= 0:
        i = (i + 1) & mask
    table[i] = s
    _lru_push_head(s, prev, nxt, gi)


@njit(cache=True, inline="always")
def _push_back(r: np.int64, qnext: np.ndarray, gi: np.ndarray) -> None:
    """r joins the back of the waiting queue (a singly linked list through qnext: head, tail, length in gi)."""
    qnext[r] = -1
    if gi[G_QLEN] == 0:
        gi[G_QHEAD] = r
    else:
        qnext[gi[G_QTAIL]] = r
    gi[G_QTAIL] = r
    gi[G_QLEN] += 1


@njit(cache=True)
def _preempt(
    v: np.int64,
    comp: np.ndarray,
    target: np.ndarray,
    gen: np.ndarray,
    held: np.ndarray,
    npre: np.ndarray,
    status: np.ndarray,
    inp: np.ndarray,
    qnext: np.ndarray,
    gi: np.ndarray,
) -> None:
    """Free v's blocks and put it at the front of the waiting queue, to recompute prompt + generated tokens."""
    gi[G_FREE] += held[v]
    held[v] = 0
    comp[v] = 0
    target[v] = inp[v] + gen[v]
    npre[v] += 1
    gi[G_PREEMPT] += 1
    status[v] = _QUEUED
    if gi[G_QLEN] == 0:
        qnext[v] = -1
        gi[G_QTAIL] = v
    else:
        qnext[v] = gi[G_QHEAD]
    gi[G_QHEAD] = v
    gi[G_QLEN] += 1


@njit(cache=True)
def _decode_phase(
    running: np.ndarray,
    nrun: np.int64,
    comp: np.ndarray,
    target: np.ndarray,
    gen: np.ndarray,
    held: np.ndarray,
    npre: np.ndarray,
    status: np.ndarray,
    inp: np.ndarray,
    qnext: np.ndarray,
    gi: np.ndarray,
    bs: np.int64,
    budget: np.int64,
    sched_r: np.ndarray,
    sched_k: np.ndarray,
    ns: np.int64,
) -> tuple[np.int64, np.int64, np.int64, bool]:
    """Schedule one decode token for every running request past its prefill, in admission order, preempting the
    most recently admitted running request when no block is free; returns (nrun, ns, budget, preempted)."""
    preempted = False
    i = 0
    while i < nrun and budget > 0:
        r = running[i]
        if comp[r] >= target[r]:
            need = 1 if comp[r] + 1 > held[r] * bs else 0
            self_out = False
            while need > gi[G_FREE]:
                v = running[nrun - 1]
                nrun -= 1
                _preempt(v, comp, target, gen, held, npre, status, inp, qnext, gi)
                preempted = True
                if v == r:
                    self_out = True
                    break
            if self_out:
                break
            gi[G_FREE] -= need
            held[r] += need
            sched_r[ns] = r
            sched_k[ns] = 1
            ns += 1
            budget -= 1
        i += 1
    return nrun, ns, budget, preempted


@njit(cache=True, nogil=True)  # nogil: calibration simulates a pass's levels on parallel threads
def _run(
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
    stop_time: float,
) -> None:
    """Advance the engine until the next iteration would start at or after stop_time, or nothing is left.

    icfg = [max_num_seqs, max_num_batched_tokens, block_size, kv_blocks, prefix (0/1), hash_block_tokens,
    mode, mixed]: mode 0 = open loop (the kernel queues arrivals from `arr`), 1 = closed loop (a finish releases the
    next request), 2 = external (a router queues requests; an idle engine returns). Every argument after
    `measure` is state, updated in place, so a call can resume. gapn[0] counts the gaps written to `gaps`.
    mixed (icfg[7], 1 when absent) = 1: decodes and prefill chunks share an iteration (vLLM V1); 0: an iteration
    runs either a prefill batch (first) or the decode batch (SGLang's default scheduler). cap (icfg[8], 0 when
    absent) > 0 in mode 0: the client holds at most cap requests in flight; an arrival that finds them all out waits
    at the client and is sent (its `arr` set) when a finish frees a slot, as a load generator with a concurrency
    limit measures it (inference-perf; `simulate_open(max_inflight=)`)."""
    max_seqs = icfg[0]
    max_tokens = icfg[1]
    bs = icfg[2]
    kv_blocks = icfg[3]
    prefix = icfg[4] != 0 and len(lru_key) > 0
    hbt = icfg[5]
    closed = icfg[6] == 1
    own_arrivals = icfg[6] == 0
    mixed = len(icfg) < 8 or icfg[7] != 0
    cap = icfg[8] if len(icfg) > 8 and own_arrivals else 0
    window = c[N_CONST - 1]
    n = len(arr)
    keep_gaps = len(gaps) > 0
    while True:
        now = gf[F_NOW]
        if now >= stop_time:
            return
        # arrivals up to now join the back of the waiting queue (closed loop: released at finishes)
        if own_arrivals:
            sent = 0
            while gi[G_NEXT] < n and arr[gi[G_NEXT]] <= now:
                if cap > 0 and gi[G_INFLIGHT] >= cap:
                    break  # every client slot is out: the rest wait at the client
                r = gi[G_NEXT]
                gi[G_NEXT] += 1
                if (inp[r] + out[r] - 1 + bs - 1) // bs > kv_blocks:
                    status[r] = _REJECTED
                    gi[G_REJECTED] += 1
                    continue
                if cap > 0:
                    # the first G_CAPFREE arrivals since the last check found a slot free and went at once; the
                    # others waited for the slots the finishes at `now` freed
                    if sent >= gi[G_CAPFREE] and arr[r] < now:
                        arr[r] = now
                    sent += 1
                    gi[G_INFLIGHT] += 1
                status[r] = _QUEUED
                _push_back(r, qnext, gi)
            if cap > 0:
                gi[G_CAPFREE] = cap - gi[G_INFLIGHT]
        nrun = gi[G_NRUN]
        if nrun == 0 and gi[G_QLEN] == 0:
            if not own_arrivals or gi[G_NEXT] >= n:
                return
            gf[F_NOW] = max(now, arr[gi[G_NEXT]])
            continue
        budget = max_tokens
        ns = 0
        it = gi[G_ITERS] + 1
        preempted = False
        # 1. decodes, in admission order (mixed batches: vLLM V1; SGLang runs them only when no prefill runs)
        if mixed:
            nrun, ns, budget, preempted = _decode_phase(
                running, nrun, comp, target, gen, held, npre, status, inp, qnext, gi, bs, budget, sched_r, sched_k, ns
            )
        # 2. running requests part-way through their prefill
        i = 0
        while i < nrun and budget > 0:
            r = running[i]
            if comp[r] < target[r]:
                k = min(budget, target[r] - comp[r])
                need = (comp[r] + k + bs - 1) // bs - held[r]
                ok = True
                while need > gi[G_FREE]:
                    v = running[nrun - 1]
                    # a victim already scheduled this iteration cannot be unscheduled: stop here
                    scheduled = False
                    for j in range(ns):
                        if sched_r[j] == v:
                            scheduled = True
                            break
                    if scheduled:
                        ok = False
                        break
                    nrun -= 1
                    _preempt(v, comp, target, gen, held, npre, status, inp, qnext, gi)
                    preempted = True
                    if v == r:
                        ok = False
                        break
                if not ok:
                    break
                gi[G_FREE] -= need
                held[r] += need
                sched_r[ns] = r
                sched_k[ns] = k
                ns += 1
                budget -= k
            i += 1
        # 3. admit waiting requests, FCFS, while the budget, max_num_seqs and free blocks allow (not in an
        # iteration that preempted: vLLM V1 schedules no waiting request in a step with preemptions)
        while not preempted and budget > 0 and nrun < max_seqs and gi[G_QLEN] > 0:
            r = gi[G_QHEAD]
            cached = 0
            hits = 0
            if prefix:
                h0 = hoff[r]
                h1 = hoff[r + 1]
                while h0 + hits < h1 and _lru_find(hval[h0 + hits], lru_key, table) >= 0:
                    hits += 1
                cached = min(hits * hbt, inp[r] - 1)
                cached = (cached // bs) * bs
            k = min(budget, target[r] - cached)
            need = (cached + k + bs - 1) // bs
            if need > gi[G_FREE]:
                break
            if hits > 0:
                for j in range(hits - 1, -1, -1):
                    _lru_insert(hval[hoff[r] + j], lru_key, lru_prev, lru_next, table, gi)
            gi[G_QHEAD] = qnext[r]
            gi[G_QLEN] -= 1
            if gi[G_QLEN] == 0:
                gi[G_QTAIL] = -1
            gi[G_FREE] -= need
            held[r] = need
            comp[r] = cached
            status[r] = _RUNNING
            running[nrun] = r
            nrun += 1
            sched_r[ns] = r
            sched_k[ns] = k
            ns += 1
            budget -= k
        if not mixed and ns == 0:  # SGLang: no prefill batch this iteration, so the decode batch runs
            nrun, ns, budget, dec_preempted = _decode_phase(
                running, nrun, comp, target, gen, held, npre, status, inp, qnext, gi, bs, budget, sched_r, sched_k, ns
            )
            preempted = preempted or dec_preempted
        gi[G_NRUN] = nrun
        if ns == 0:  # nothing could run (cannot happen with consistent state): wait for the next arrival
            if own_arrivals and gi[G_NEXT] < n:
                gf[F_NOW] = max(now, arr[gi[G_NEXT]])
                continue
            return
        # the iteration's aggregates and time
        tokens = 0.0
        pairs = 0.0
        pairs_w = 0.0
        kvt = 0.0
        kvt_w = 0.0
        for j in range(ns):
            r = sched_r[j]
            k = sched_k[j]
            full, win = pair_sums_kernel(float(comp[r]), float(k), window)
            tokens += k
            pairs += full
            pairs_w += win
            ctx = float(comp[r] + k)
            kvt += ctx
            kvt_w += min(ctx, window)
        dt = step_time(c, tokens, pairs, pairs_w, kvt, kvt_w, float(ns))
        now = now + dt
        gf[F_NOW] = now
        gf[F_BUSY] += dt
        gi[G_ITERS] = it
        # tokens emitted at the end of the iteration
        finished = 0
        for j in range(ns):
            r = sched_r[j]
            was_prefill = comp[r] < target[r]
            comp[r] += sched_k[j]
            if comp[r] < target[r]:
                continue
            if was_prefill and prefix:
                for h in range(hoff[r + 1] - 1, hoff[r] - 1, -1):
                    _lru_insert(hval[h], lru_key, lru_prev, lru_next, table, gi)
            gen[r] += 1
            if gen[r] == 1:
                first_s[r] = now
            else:
                gap = now - last_s[r]
                itl_sum[r] += gap
                if measure[r]:
                    if keep_gaps and gapn[0] < len(gaps):
                        gaps[gapn[0]] = gap
                        gapn[0] += 1
                    else:
                        gap_hist[_hbin(gap)] += 1
            last_s[r] = now
            if gen[r] >= out[r]:
                fin_s[r] = now
                status[r] = _DONE
                gi[G_FREE] += held[r]
                held[r] = 0
                gi[G_DONE] += 1
                finished += 1
                if cap > 0:
                    gi[G_INFLIGHT] -= 1
                if closed and gi[G_RELEASE] < n:
                    q = gi[G_RELEASE]
                    gi[G_RELEASE] += 1
                    arr[q] = now
                    status[q] = _QUEUED
                    _push_back(q, qnext, gi)
        gi[G_LASTFIN] = finished
        if finished:
            w = 0
            for i in range(gi[G_NRUN]):
                r = running[i]
                if status[r] != _DONE:
                    running[w] = r
                    w += 1
            gi[G_NRUN] = w


@njit(cache=True)
def _histogram_into(values: np.ndarray, counts: np.ndarray) -> float:
    """Add finite values to a latency histogram; return their sum."""
    s = 0.0
    for x in values:
        if math.isfinite(x):
            counts[_hbin(x)] += 1
            s += x
    return s


# --------------------------------------------------------------------------------------------------
# the Python driver: buffers, streaming, results


class _Engine:
    """One engine's state between kernel calls (a buffer of in-flight + upcoming requests)."""

    def __init__(
        self,
        cost: StepCost,
        cfg: EngineConfig,
        hash_block_tokens: int,
        lru_slots: int,
        closed: bool,
        gap_slots: int,
        max_inflight: int = 0,
    ) -> None:
        cfg.check()
        self.c = cost.packed()
        self.cfg = cfg
        prefix = cfg.enable_prefix_caching and lru_slots > 0
        self.icfg = np.array(
            [
                cfg.max_num_seqs,
                cfg.max_num_batched_tokens,
                cfg.block_size,
                cfg.kv_blocks,
                int(prefix),
                hash_block_tokens,
                int(closed),
                int(cfg.mixed_prefill),
                int(max_inflight),
            ],
            dtype=np.int64,
        )
        slots = max(lru_slots, 0) if prefix else 0
        self.lru_key = np.zeros(slots, np.int64)
        self.lru_prev = np.full(slots, -1, np.int64)
        self.lru_next = np.full(slots, -1, np.int64)
        size = 1 << max(1, int(2 * slots - 1).bit_length()) if slots else 2
        self.table = np.full(size, -1, np.int64)
        self.gi = np.zeros(N_GI, np.int64)
        self.gi[G_FREE] = cfg.kv_blocks
        self.gi[G_LRU_HEAD] = -1
        self.gi[G_LRU_TAIL] = -1
        self.gi[G_CAPFREE] = max_inflight
        self.gf = np.zeros(2, np.float64)
        self.running = np.zeros(cfg.max_num_seqs, np.int64)
        self.sched_r = np.zeros(cfg.max_num_seqs, np.int64)
        self.sched_k = np.zeros(cfg.max_num_seqs, np.int64)
        self.gap_hist = np.zeros(HIST_BINS, np.int64)
        self.gaps = np.zeros(gap_slots, np.float64)
        self.gapn = np.zeros(1, np.int64)
        self.closed = closed
        self.buf: dict[str, np.ndarray] = {}
        self.n = 0

    def load(
        self,
        arr: np.ndarray,
        inp: np.ndarray,
        out: np.ndarray,
        hoff: np.ndarray,
        hval: np.ndarray,
        orig: np.ndarray,
        measure: np.ndarray,
    ) -> None:
        """A fresh buffer (no carried state)."""
        n = len(arr)
        self.n = n
        self.buf = {
            "arr": np.ascontiguousarray(arr, np.float64),
            "inp": np.ascontiguousarray(inp, np.int64),
            "out": np.ascontiguousarray(out, np.int64),
            "hoff": np.ascontiguousarray(hoff, np.int64),
            "hval": np.ascontiguousarray(hval, np.int64),
            "orig": orig,
            "measure": measure.astype(np.int8),
            "comp": np.zeros(n, np.int64),
            "target": np.ascontiguousarray(inp, np.int64).copy(),
            "gen": np.zeros(n, np.int64),
            "held": np.zeros(n, np.int64),
            "npre": np.zeros(n, np.int64),
            "status": np.zeros(n, np.int8),
            "first_s": np.full(n, np.nan),
            "last_s": np.full(n, -1.0),
            "itl_sum": np.zeros(n),
            "fin_s": np.full(n, np.nan),
        }
        self.qnext = np.full(max(n, 1), -1, np.int64)

    def run(self, stop_time: float) -> None:
        b = self.buf
        _run(
            self.c,
            self.icfg,
            b["arr"],
            b["inp"],
            b["out"],
            b["hoff"],
            b["hval"],
            b["measure"],
            b["comp"],
            b["target"],
            b["gen"],
            b["held"],
            b["npre"],
            b["status"],
            b["first_s"],
            b["last_s"],
            b["itl_sum"],
            b["fin_s"],
            self.running,
            self.qnext,
            self.gi,
            self.gf,
            self.lru_key,
            self.lru_prev,
            self.lru_next,
            self.table,
            self.gap_hist,
            self.gaps,
            self.gapn,
            self.sched_r,
            self.sched_k,
            float(stop_time),
        )

    def take_finished(self) -> dict[str, np.ndarray]:
        """Requests of the buffer that are done or rejected (arrays), in buffer order."""
        b = self.buf
        done = (b["status"] == _DONE) | (b["status"] == _REJECTED)
        return {
            k: b[k][done] for k in ("orig", "arr", "first_s", "fin_s", "itl_sum", "npre", "out", "measure", "status")
        }

    def carry_and_append(
        self,
        arr: np.ndarray,
        inp: np.ndarray,
        out: np.ndarray,
        hoff: np.ndarray,
        hval: np.ndarray,
        orig: np.ndarray,
        measure: np.ndarray,
    ) -> None:
        """Keep the unfinished requests (queued/running first, then not yet arrived) and append a chunk."""
        b = self.buf
        st = b["status"]
        live = np.flatnonzero((st == _QUEUED) | (st == _RUNNING))
        pending = np.flatnonzero(st == _NEW)
        keep = np.concatenate([live, pending])
        remap = np.full(self.n, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        nb = len(keep) + len(arr)
        new: dict[str, np.ndarray] = {}
        for k in (
            "arr",
            "inp",
            "out",
            "orig",
            "measure",
            "comp",
            "target",
            "gen",
            "held",
            "npre",
            "status",
            "first_s",
            "last_s",
            "itl_sum",
            "fin_s",
        ):
            new[k] = b[k][keep]
        lens = (b["hoff"][1:] - b["hoff"][:-1])[keep]
        starts = b["hoff"][:-1][keep]
        idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
        kept_hval = b["hval"][idx] if len(idx) else np.zeros(0, np.int64)
        kept_off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        m = len(arr)
        fresh = {
            "arr": arr,
            "inp": inp,
            "out": out,
            "orig": orig,
            "measure": measure.astype(np.int8),
            "comp": np.zeros(m, np.int64),
            "target": np.asarray(inp, np.int64).copy(),
            "gen": np.zeros(m, np.int64),
            "held": np.zeros(m, np.int64),
            "npre": np.zeros(m, np.int64),
            "status": np.zeros(m, np.int8),
            "first_s": np.full(m, np.nan),
            "last_s": np.full(m, -1.0),
            "itl_sum": np.zeros(m),
            "fin_s": np.full(m, np.nan),
        }
        for k, v in fresh.items():
            new[k] = np.concatenate([new[k], np.asarray(v, dtype=new[k].dtype)])
        new["hoff"] = np.concatenate([kept_off, kept_off[-1] + np.asarray(hoff[1:], np.int64)])
        new["hval"] = np.concatenate([kept_hval, np.asarray(hval, np.int64)])
        # queue and running list, remapped; the queue keeps its order (preempted requests at its front)
        q = np.zeros(int(self.gi[G_QLEN]), np.int64)
        r = self.gi[G_QHEAD]
        for j in range(len(q)):
            q[j] = r
            r = self.qnext[r]
        self.qnext = np.full(max(nb, 1), -1, np.int64)
        if len(q):
            q = remap[q]
            self.qnext[q[:-1]] = q[1:]
            self.gi[G_QHEAD], self.gi[G_QTAIL] = q[0], q[-1]
        nrun = self.gi[G_NRUN]
        self.running[:nrun] = remap[self.running[:nrun]]
        self.gi[G_NEXT] = len(live)
        self.buf = {k: np.ascontiguousarray(v) for k, v in new.items()}
        self.n = nb


def _hash_csr(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    n = len(trace)
    if trace.hash_offsets is None or trace.hash_values is None:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    return np.asarray(trace.hash_offsets, np.int64), np.asarray(trace.hash_values, np.int64)


def _lru_slots(cfg: EngineConfig, hash_block_tokens: int, known_hashes: int | None) -> int:
    slots = max(1, cfg.kv_blocks * cfg.block_size // max(hash_block_tokens, 1))
    return min(slots, known_hashes + 1 if known_hashes is not None else LRU_CAP)


class _Collector:
    """Finished requests -> per-request arrays (by original index) or histograms."""

    def __init__(self, n: int | None, keep: str) -> None:
        self.keep = keep
        self.count = 0
        self.rejected = 0
        self.out_total = 0
        self.first_arr = math.inf
        self.last_fin = -math.inf
        self.npre_total = 0
        if keep == "arrays":
            assert n is not None
            self.a = {k: np.full(n, np.nan) for k in ("ttft", "e2e", "itl", "arr", "fin")}
            self.npre = np.zeros(n, np.int64)
            self.out = np.zeros(n, np.int64)
            self.served = np.zeros(n, bool)
        self.h = {k: np.zeros(HIST_BINS, np.int64) for k in ("ttft", "e2e", "itl_mean")}
        self.s = {"ttft": 0.0, "e2e": 0.0, "itl_mean": 0.0}

    def add(self, f: dict[str, np.ndarray]) -> None:
        meas = f["measure"] != 0
        rej = f["status"] == _REJECTED
        self.rejected += int((rej & meas).sum())
        ok = meas & ~rej
        if not ok.any():
            return
        arr, first, fin, out = f["arr"][ok], f["first_s"][ok], f["fin_s"][ok], f["out"][ok]
        ttft = first - arr
        e2e = fin - arr
        with np.errstate(invalid="ignore", divide="ignore"):
            itl = np.where(out > 1, f["itl_sum"][ok] / np.maximum(out - 1, 1), np.nan)
        self.count += int(ok.sum())
        self.out_total += int(out.sum())
        self.npre_total += int(f["npre"][ok].sum())
        self.first_arr = min(self.first_arr, float(arr.min()))
        self.last_fin = max(self.last_fin, float(fin.max()))
        if self.keep == "arrays":
            o = f["orig"][ok]
            self.a["ttft"][o], self.a["e2e"][o], self.a["itl"][o] = ttft, e2e, itl
            self.a["arr"][o], self.a["fin"][o] = arr, fin
            self.npre[o] = f["npre"][ok]
            self.out[o] = out
            self.served[o] = True
        else:
            self.s["ttft"] += _histogram_into(ttft, self.h["ttft"])
            self.s["e2e"] += _histogram_into(e2e, self.h["e2e"])
            self.s["itl_mean"] += _histogram_into(itl, self.h["itl_mean"])

    def result(self, eng: _Engine, gap_sum: float | None, start_s: float = 0.0) -> SimResult:
        duration = self.last_fin - self.first_arr if self.count else 0.0
        common = {
            "span_s": float(eng.gf[F_NOW] - start_s),
            "busy_s": float(eng.gf[F_BUSY]),
            "duration_s": float(duration),
            "iterations": int(eng.gi[G_ITERS]),
            "preemptions_total": int(self.npre_total),
            "requests": self.count,
            "rejected": self.rejected,
            "output_tokens_total": self.out_total,
        }
        ngaps = int(eng.gapn[0])
        exact = len(eng.gaps) > 0 and int(eng.gap_hist.sum()) == 0
        # the engine is this run's alone: a full buffer is returned as it is (a copy cost a calibration ~5%)
        gaps = (eng.gaps if ngaps == len(eng.gaps) else eng.gaps[:ngaps].copy()) if exact else None
        if self.keep == "arrays":
            s = self.served
            return SimResult(
                ttft_s=self.a["ttft"][s],
                e2e_s=self.a["e2e"][s],
                itl_mean_s=self.a["itl"][s],
                arrival_s=self.a["arr"][s],
                finish_s=self.a["fin"][s],
                preemptions=self.npre[s],
                itl_gaps_s=gaps,
                output_tokens=self.out[s],
                hist={"gap": eng.gap_hist.copy()} if gaps is None else None,
                sums={"gap": float(gap_sum)} if gap_sum is not None else {},
                **common,
            )
        empty = np.zeros(0)
        return SimResult(
            ttft_s=empty,
            e2e_s=empty,
            itl_mean_s=empty,
            arrival_s=empty,
            finish_s=empty,
            preemptions=np.zeros(0, np.int64),
            itl_gaps_s=None,
            hist={**self.h, "gap": eng.gap_hist.copy()},
            sums={**self.s, "gap": float(gap_sum or 0.0)},
            **common,
        )


def _check_scale(rate_scale: float) -> float:
    try:
        x = float(rate_scale)
    except (TypeError, ValueError):
        raise InputError(f"--rate-scale = {rate_scale!r}; expected a finite number > 0") from None
    if not math.isfinite(x) or x <= 0:
        raise InputError(f"--rate-scale = {rate_scale!r}; expected a finite number > 0")
    return x


def simulate_open_stream(
    cost: StepCost,
    cfg: EngineConfig,
    chunks: Iterable[Trace],
    rate_scale: float = 1.0,
    keep: str = "histogram",
    hash_block_tokens: int | None = None,
    n: int | None = None,
    known_hashes: int | None = None,
    gap_slots: int = 0,
) -> SimResult:
    """Open loop over a trace given as consecutive chunks (arrivals in order across chunks).

    Only requests still in flight are carried between chunks, so with keep="histogram" memory is flat in
    trace length. keep="arrays" needs `n` (total requests) and keeps per-request arrays in trace order."""
    scale = _check_scale(rate_scale)
    if keep not in ("arrays", "histogram"):
        raise InputError(f"keep = {keep!r}; expected 'arrays' or 'histogram'")
    it: Iterator[Trace] = iter(chunks)
    first = next(it, None)
    if first is None or len(first) == 0:
        raise InputError("trace: no requests; expected at least one arrival")
    hbt = hash_block_tokens or first.hash_block_tokens
    if keep == "arrays" and n is None:
        raise InputError("simulate_open_stream: keep='arrays' needs n, the total number of requests")
    eng = _Engine(cost, cfg, hbt, _lru_slots(cfg, hbt, known_hashes), closed=False, gap_slots=gap_slots)
    col = _Collector(n, keep)
    seen = 0
    gap_sum = 0.0
    last_arrival = -math.inf

    def arrays(t: Trace, start: int) -> tuple[np.ndarray, ...]:
        nonlocal last_arrival
        t.check()
        a = np.asarray(t.arrival_s, np.float64) / scale
        if len(a) and a[0] < last_arrival:
            raise InputError("trace: arrival_s: chunks out of order; expected arrivals in time order")
        if len(a):
            last_arrival = float(a[-1])
        hoff, hval = _hash_csr(t)
        orig = np.arange(start, start + len(t), dtype=np.int64)
        return (
            a,
            np.asarray(t.input_tokens, np.int64),
            np.asarray(t.output_tokens, np.int64),
            hoff,
            hval,
            orig,
            np.ones(len(t), np.int8),
        )

    eng.load(*arrays(first, 0))
    seen = len(first)
    nxt = next(it, None)
    while True:
        while nxt is not None and len(nxt) == 0:
            nxt = next(it, None)
        stop = float(nxt.arrival_s[0]) / scale if nxt is not None else math.inf
        eng.run(stop)
        fin = eng.take_finished()
        col.add(fin)
        gap_sum += float(fin["itl_sum"][fin["measure"] != 0].sum())
        if nxt is None:
            break
        eng.carry_and_append(*arrays(nxt, seen))
        seen += len(nxt)
        nxt = next(it, None)
    return col.result(eng, gap_sum, float(first.arrival_s[0]) / scale)


def warm_cache(eng: _Engine, trace: Trace) -> None:
    """The server's prefix cache already holds every hash block of the trace (a run that repeats an earlier run's
    prompts against the same server): each request's chain is made resident before the first arrival, request by
    request in trace order, each chain inserted last block first (as a finished prefill inserts it), so that the
    LRU evicts what an earlier run would have (the first prompts' blocks) when the KV capacity is short."""
    hoff, hval = _hash_csr(trace)
    if not len(hval) or not eng.icfg[4]:
        return
    for r in range(len(trace)):
        for h in range(int(hoff[r + 1]) - 1, int(hoff[r]) - 1, -1):
            _lru_insert(np.int64(hval[h]), eng.lru_key, eng.lru_prev, eng.lru_next, eng.table, eng.gi)


def simulate_open(
    cost: StepCost,
    cfg: EngineConfig,
    trace: Trace,
    rate_scale: float = 1.0,
    keep: str = "arrays",
    warm: bool = False,
    max_inflight: int = 0,
) -> SimResult:
    """Open loop: the trace's own arrivals (divided by rate_scale) through one engine; per-request results in
    trace order (rejected requests, whose context never fits the KV capacity, are left out and counted).
    `warm`: the prefix cache starts holding the trace's hash blocks (`warm_cache`; needs prefix caching on and
    hashes, and a trace of at most CHUNK requests, kept as arrays).
    `max_inflight` > 0: a client that holds at most that many requests in flight. An arrival that finds them all
    out waits at the client and is sent when a request finishes; its TTFT and E2E count from that send, as the
    client measures them (arrays, at most CHUNK requests). Once the client falls behind, this is a closed loop at
    max_inflight, reached through the trace's own ramp of arrivals instead of one burst at t = 0."""
    trace.check()
    n = len(trace)
    if n == 0:
        raise InputError("trace: no requests; expected at least one arrival")
    if not isinstance(max_inflight, int | np.integer) or max_inflight < 0:
        raise InputError(f"max_inflight = {max_inflight!r}; expected an integer >= 0 (0: no client limit)")
    if max_inflight and (keep == "histogram" or n > CHUNK):
        raise InputError(f"simulate_open: max_inflight needs keep='arrays' and at most {CHUNK} requests; got {n}")
    scale = _check_scale(rate_scale)
    hoff, hval = _hash_csr(trace)
    known = len(hval)
    total_gaps = int(np.maximum(np.asarray(trace.output_tokens) - 1, 0).sum())
    if warm and (keep == "histogram" or n > CHUNK):
        raise InputError(f"simulate_open: warm = True needs keep='arrays' and at most {CHUNK} requests; got {n}")
    if keep == "histogram" or n > CHUNK:
        chunks = (trace.slice(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK))
        slots = total_gaps if keep == "arrays" and total_gaps <= MAX_EXACT_GAPS else 0
        return simulate_open_stream(cost, cfg, chunks, scale, keep, trace.hash_block_tokens, n, known, slots)
    eng = _Engine(
        cost,
        cfg,
        trace.hash_block_tokens,
        _lru_slots(cfg, trace.hash_block_tokens, known),
        False,
        total_gaps if total_gaps <= MAX_EXACT_GAPS else 0,
        int(max_inflight),
    )
    eng.load(
        np.asarray(trace.arrival_s, np.float64) / scale,
        trace.input_tokens,
        trace.output_tokens,
        hoff,
        hval,
        np.arange(n, dtype=np.int64),
        np.ones(n, np.int8),
    )
    if warm:
        warm_cache(eng, trace)
    eng.run(math.inf)
    fin = eng.take_finished()
    col = _Collector(n, "arrays")
    col.add(fin)
    return col.result(eng, float(fin["itl_sum"].sum()), float(trace.arrival_s[0]) / scale)


def simulate_closed(
    cost: StepCost,
    cfg: EngineConfig,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    concurrency: int,
    requests: int | None = None,
    warmup: int = 0,
    seed: int = 0,
    sample: bool = False,
    start: str = "burst",
) -> SimResult:
    """Closed loop: `concurrency` requests in flight; each finished request is replaced at that instant.

    Lengths are taken in order from the arrays, cycling (or, with sample=True, drawn with `seed`). The
    first `warmup` requests are not measured; `requests` (default max(100, 10 x concurrency)) are; then
    `concurrency` more keep the engine full until the last measured one finishes (not measured either).
    duration_s runs from the first measured arrival to the last measured finish.

    `start`: how the clients begin. "burst" (default): all N at t = 0, measured from the first, as
    `vllm bench serve --max-concurrency N` runs; equal prompts then stay in lockstep cohorts, each TTFT waiting
    for its cohort's prefills. "staggered": client i first sends at i / N of one lone request's E2E (the mean
    lengths'), so the N clients are spread over a request's life; those N ramp requests are not measured
    (docs/engine_model.md 17: measured, not the calibration's replay). At N = 1 both are the same run."""
    inp = np.asarray(input_tokens, np.int64).ravel()
    out = np.asarray(output_tokens, np.int64).ravel()
    if len(inp) == 0 or len(inp) != len(out):
        raise InputError("closed loop: input_tokens and output_tokens must be non-empty and of equal length")
    if inp.min() < 1 or out.min() < 1:
        raise InputError("closed loop: input_tokens and output_tokens must be >= 1")
    if not isinstance(concurrency, int | np.integer) or concurrency < 1:
        raise InputError(f"--concurrency = {concurrency!r}; expected an integer >= 1")
    measured = int(requests) if requests is not None else max(100, 10 * int(concurrency))
    if measured < 1 or warmup < 0:
        raise InputError(f"closed loop: requests = {requests!r}, warmup = {warmup!r}; expected >= 1 and >= 0")
    if start not in CLOSED_STARTS:
        raise InputError(f"closed loop: start = {start!r}; expected one of {', '.join(CLOSED_STARTS)}")
    cfg.check()
    ramp = start == "staggered" and int(concurrency) > 1
    warmup += int(concurrency) if ramp else 0  # the ramp's first sends
    total = warmup + measured + int(concurrency)
    idx = np.random.default_rng(seed).integers(0, len(inp), total) if sample else np.arange(total) % len(inp)
    i_tok, o_tok = inp[idx], out[idx]
    too_long = (i_tok + o_tok - 1 + cfg.block_size - 1) // cfg.block_size > cfg.kv_blocks
    if too_long.any():
        j = int(np.argmax(too_long))
        raise InputError(
            f"closed loop: a request of {int(i_tok[j])} + {int(o_tok[j])} tokens needs more than the "
            f"{cfg.kv_blocks} KV blocks of {cfg.block_size} tokens; expected requests that fit the KV cache"
        )
    measure = np.zeros(total, np.int8)
    measure[warmup : warmup + measured] = 1
    total_gaps = int(np.maximum(o_tok[warmup : warmup + measured] - 1, 0).sum())
    slots = total_gaps if total_gaps <= MAX_EXACT_GAPS else 0
    if ramp:
        return _staggered_closed(cost, cfg, i_tok, o_tok, int(concurrency), measure, slots)
    eng = _Engine(cost, cfg, 1, 0, closed=True, gap_slots=slots)
    _load_unhashed(eng, np.zeros(total, np.float64), i_tok, o_tok, measure)
    first = min(int(concurrency), total)
    eng.qnext[: first - 1] = np.arange(1, first)
    eng.gi[G_QHEAD], eng.gi[G_QTAIL] = 0, first - 1
    eng.buf["status"][:first] = _QUEUED
    eng.gi[G_QLEN] = first
    eng.gi[G_RELEASE] = first
    eng.gi[G_NEXT] = total
    return _run_measured(eng, total)


def _load_unhashed(eng: _Engine, arr: np.ndarray, inp: np.ndarray, out: np.ndarray, measure: np.ndarray) -> None:
    """A fresh buffer of requests with no prefix hashes, in index order (the closed loops')."""
    n = len(arr)
    eng.load(arr, inp, out, np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.arange(n, dtype=np.int64), measure)


def _run_measured(eng: _Engine, n: int) -> SimResult:
    """Run a loaded engine to the end: the measured requests' results (arrays) and the sum of their gaps."""
    eng.run(math.inf)
    fin = eng.take_finished()
    col = _Collector(n, "arrays")
    col.add(fin)
    return col.result(eng, float(fin["itl_sum"][fin["measure"] != 0].sum()))


def _staggered_closed(
    cost: StepCost, cfg: EngineConfig, inp: np.ndarray, out: np.ndarray, n: int, measure: np.ndarray, gap_slots: int
) -> SimResult:
    """simulate_closed's staggered start, through the capped client (kernel cap n): request i < n is sent at
    i / n x the lone E2E of the mean lengths; every later one arrives at the last of those and waits at the client
    for a free slot, so it is sent at the instant a request finishes (its TTFT and E2E count from then): a closed
    loop of n. No ramp request finishes before the ramp ends (a loaded request is never faster than a lone one
    of its lengths), so no client waits on the ramp itself but for requests shorter than the mean, which are
    not measured (`measure` is 0 on the first n)."""
    mean_in = np.array([max(round(float(inp.mean())), 1)], np.int64)
    mean_out = np.array([max(round(float(out.mean())), 1)], np.int64)
    lone = simulate_closed(cost, cfg, mean_in, mean_out, 1, requests=1, start="burst")
    alone_s = float(lone.e2e_s[0]) if len(lone.e2e_s) else 0.0
    total = len(inp)
    arr = np.minimum(np.arange(total), n - 1).astype(np.float64) * (alone_s / n)
    eng = _Engine(cost, cfg, 1, 0, False, gap_slots, n)
    _load_unhashed(eng, arr, inp, out, measure)
    return _run_measured(eng, total)
