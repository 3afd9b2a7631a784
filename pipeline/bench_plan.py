"""Step 7's input side: the benchmark plan for one candidate deployment (issue 14, method.md 7 and 7b).

Pure functions: plain values in (the request table's columns, the candidate, the knee / C_max, the peak
rate), dataclasses out; no file is read or written here (pipeline.bench_plan_io writes the plan).

What a plan holds, for one candidate (model x GPU x TP/PP x weight/KV dtype x engine):

1. A trace for AIPerf's `mooncake_trace` custom dataset: JSON lines of `timestamp` (integer ms from
   the trace start), `input_length`, `output_length` and, where the log has prefix blocks, `hash_ids`.
   - Arrivals: the log's busiest hour by the fleet replay's rule (`pipeline.sim.trace.busiest_hour`:
     the 60-minute window, starting on a whole minute from the first arrival, whose per-minute
     arrival counts have the highest p99; ties to more arrivals, then the earliest; a log under an
     hour is taken whole), as one replica of `replicas` serving instances behind a round-robin
     router sees it: every `replicas`-th arrival. The serving instances are the plan's instances
     with the safety factor, before headroom and spares (`Candidate.serving`): the headroom
     instances carry the growth, the spares a failure, so at today's peak one replica sees
     peak / serving. When that leaves fewer than `min_requests`, the densest run of
     `min_requests x replicas` consecutive arrivals is taken instead (or the whole log when it is
     shorter).
   - Lengths: the log's own length distribution, by quantile mapping. The k-th smallest input
     length of the window's requests becomes the log's input quantile at plotting position
     k / (n - 1) (linear interpolation, as `quantile_cont`); the same for outputs. The trace's
     p50 / p95 (linear interpolation) therefore reproduce the log's to within rounding, while each
     request keeps its rank, so the window's in/out correlation and its order in time survive.
   - hash_ids: AIPerf decodes `hash_ids` into blocks of `--isl-block-size` tokens (512 by default
     for mooncake_trace) and rejects a record unless 0 < input_length - (len(hash_ids) - 1) x 512
     <= 512. Each record keeps the leading ceil(input_length / 512) blocks of its logged hash_ids;
     missing blocks get fresh ids (above every id in the log, in trace order), so they never hit
     the prefix cache. Without a hash_ids column the key is left out (AIPerf then synthesizes
     unshared prompts).
2. The commands: the `vllm serve` server; one warm-up run of `WARMUP_REQUESTS` requests; a
   closed-loop `vllm bench serve` concurrency sweep from 1 past the predicted knee and C_max (powers of
   two, 1.5 x the knee, and 1.5 x max(knee, C_max)) at the log's p95 lengths, the lengths a
   `measured` curve is matched on; the trace replayed as logged with
   `aiperf profile --input-file trace.jsonl --custom-dataset-type mooncake_trace --fixed-schedule`;
   and a step burst (steady peak, then `burst_multiplier` x peak, then peak again) replayed the same
   way from `burst.jsonl` (seeded Poisson arrivals, records of the trace in order).
3. A manifest.yaml for the sweep's result folder, in the project's manifest format
   (pipeline.benchmarks.MANIFEST_REQUIRED / MANIFEST_OPTIONAL), so the results read back with
   `sizing curve` / `sizing calibrate` and the curve stage.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import InputError

HASH_BLOCK_TOKENS = 512
"""Tokens per hash block: Mooncake's, the shipped sample's, and AIPerf's mooncake_trace default."""
WARMUP_REQUESTS = 1000
"""Warm-up requests sent before the sweep (vllm bench serve --num-warmups), results discarded."""
PERCENTILE_METRICS = "ttft,tpot,itl,e2el"
METRIC_PERCENTILES = "50,90,95,99"
BURST_STEADY_S = 120.0
BURST_STEP_S = 60.0
BURST_MULTIPLIERS = (2.0, 3.0)
"""The step burst runs at 2-3 x the peak rate (the guide's "test burst behaviour")."""
TRACE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")


@dataclass(frozen=True)
class Candidate:
    """One deployment to benchmark: the id as metrics/tco.json names it, and what `vllm serve` needs."""

    id: str
    tier: str
    model: str
    gpu: str
    tp: int
    weight_dtype: str
    kv_dtype: str
    pp: int = 1
    engine: str = "vllm"
    engine_version: str | None = None
    hf_repo: str | None = None
    instances: int = 1  # the plan's instances in total (spares included)
    role: str = "benchmark_next"  # chosen | benchmark_next
    serving_instances: int | None = None  # with safety, before headroom and spares; None: `instances`

    @property
    def serving(self) -> int:
        """The instances that share the peak (module docstring): serving_instances, else instances."""
        return int(self.serving_instances or self.instances)

    @property
    def folder(self) -> str:
        """A filesystem-safe folder name from the id (`large/H100-SXM/w-fp8/kv-fp8` -> `large__H100-SXM__w-fp8__kv-fp8`)."""
        return safe_name(self.id)


@dataclass(frozen=True)
class Trace:
    """The sampled trace: one record per request, and where it came from."""

    records: list[dict[str, Any]]
    window_start_s: float  # seconds from the log's first arrival
    window_end_s: float
    window_requests: int  # arrivals in the window before thinning
    replicas: int
    how: str
    log_lengths: dict[str, dict[str, float]]  # input/output -> p50, p95 of the whole table
    trace_lengths: dict[str, dict[str, float]]
    has_hash_ids: bool
    fresh_hash_blocks: int  # blocks that got a fresh id (not in the log for that request)

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last arrival of the trace."""
        return (self.records[-1]["timestamp"] - self.records[0]["timestamp"]) / 1000 if self.records else 0.0

    @property
    def mean_rps(self) -> float:
        """The trace's mean arrival rate (requests / duration)."""
        d = self.duration_s
        return len(self.records) / d if d > 0 else 0.0


@dataclass(frozen=True)
class Plan:
    """Everything written for one candidate: trace, burst trace, commands, manifest, README."""

    candidate: Candidate
    trace: Trace
    burst: list[dict[str, Any]]
    levels: list[int]
    commands: str
    manifest: dict[str, Any]
    readme: str
    facts: dict[str, Any] = field(default_factory=dict)


def safe_name(candidate_id: str) -> str:
    """A folder name from a candidate id: `/` becomes `__`, anything but letters, digits, `.`, `_`, `-` becomes `-`."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(candidate_id).replace("/", "__")).strip(".-")
    if not text:
        raise InputError(f"candidate id {candidate_id!r}: no usable characters for a folder name")
    return text


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q, method="linear"))


def _lengths(inp: np.ndarray, out: np.ndarray) -> dict[str, dict[str, float]]:
    return {
        name: {"p50": round(_quantile(v, 0.5), 2), "p95": round(_quantile(v, 0.95), 2)}
        for name, v in (("input_tokens", inp), ("output_tokens", out))
    }


def _column(table: Mapping[str, Any], name: str, label: str, n: int | None) -> np.ndarray:
    if name not in table:
        raise InputError(f"{label}: {name}: column missing; expected arrival_s, input_tokens, output_tokens")
    try:
        arr = np.asarray(table[name], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{label}: {name}: not numeric; expected numbers") from None
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        raise InputError(f"{label}: {name}: {len(arr)} rows; expected {n} like arrival_s")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{label}: {name}: rows {', '.join(str(i) for i in bad[:3])} not finite; expected numbers")
    return arr


def _hash_lists(table: Mapping[str, Any], label: str, n: int) -> list[list[int]] | None:
    if "hash_ids" not in table:
        return None
    raw = list(table["hash_ids"])
    if len(raw) != n:
        raise InputError(f"{label}: hash_ids: {len(raw)} rows; expected {n} like arrival_s")
    out: list[list[int]] = []
    for i, h in enumerate(raw):
        if h is None or (isinstance(h, float) and math.isnan(h)):
            out.append([])
            continue
        try:
            ids = [int(x) for x in h]
        except (TypeError, ValueError):
            raise InputError(f"{label}: hash_ids: row {i} = {h!r}; expected a list of integer block ids") from None
        out.append(ids)
    return out


def _window(arrival: np.ndarray, need: int) -> tuple[int, int, str]:
    """[lo, hi) indices (arrival sorted) of the busiest hour (sim.trace.busiest_hour, the fleet replay's
    rule), or the densest `need` consecutive arrivals."""
    from pipeline.sim.trace import busiest_hour

    n = len(arrival)
    first, last = arrival[0], arrival[-1]
    if last - first < 3600.0:
        lo, hi, how = 0, n, f"the whole log ({last - first:.0f} s, under an hour)"
    else:
        w_lo, w_hi = busiest_hour(arrival)
        lo = int(np.searchsorted(arrival, w_lo, side="left"))
        hi = int(np.searchsorted(arrival, w_hi, side="left"))
        how = (
            "the busiest hour of the log (the minute-aligned hour holding the per-minute p99 peak, "
            "as the fleet replay takes it)"
        )
    if hi - lo < need:
        if n <= need:
            return 0, n, f"the whole log ({n} requests; fewer than the {need} the plan asks for)"
        spans = arrival[need - 1 :] - arrival[: n - need + 1]
        lo = int(np.argmin(spans))
        return lo, lo + need, f"the densest {need} consecutive arrivals of the log (the busiest window held {hi - lo})"
    return lo, hi, how


def _map_quantiles(window_vals: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each window value replaced by the reference quantile at its rank's plotting position k / (n - 1)."""
    n = len(window_vals)
    if n == 1:
        return np.array([max(1, round(_quantile(reference, 0.5)))], dtype=np.int64)
    order = np.argsort(window_vals, kind="stable")
    q = np.quantile(reference, np.arange(n) / (n - 1), method="linear")
    mapped = np.empty(n, dtype=np.int64)
    mapped[order] = np.maximum(1, np.rint(q)).astype(np.int64)
    return mapped


def build_trace(
    table: Mapping[str, Any],
    *,
    replicas: int = 1,
    min_requests: int = 200,
    block_tokens: int = HASH_BLOCK_TOKENS,
    label: str = "requests",
) -> Trace:
    """The mooncake_trace records for one replica from a normalized request table (see the module docstring).

    `table` maps column names to sequences: arrival_s (seconds), input_tokens, output_tokens, optional
    hash_ids (lists of block ids). Rows are the tier's rows of the log; any order. Deterministic.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise InputError(f"{label}: replicas = {replicas!r}; expected an integer >= 1")
    if "arrival_s" not in table:
        raise InputError(f"{label}: arrival_s: column missing; expected arrival_s, input_tokens, output_tokens")
    arrival = _column(table, "arrival_s", label, None)
    n = len(arrival)
    if n == 0:
        raise InputError(f"{label}: no requests; expected at least one row to sample a trace from")
    inp = _column(table, "input_tokens", label, n)
    out = _column(table, "output_tokens", label, n)
    for name, v in (("input_tokens", inp), ("output_tokens", out)):
        bad = np.flatnonzero((v < 1) | (v != np.floor(v)))
        if bad.size:
            rows = ", ".join(f"{i} ({v[i]:g})" for i in bad[:3])
            raise InputError(f"{label}: {name}: rows {rows}; expected whole token counts >= 1")
    hashes = _hash_lists(table, label, n)
    order = np.argsort(arrival, kind="stable")
    arrival, inp, out = arrival[order], inp[order], out[order]
    lo, hi, how = _window(arrival, min_requests * replicas)
    picked = np.arange(lo, hi)[::replicas]
    if replicas > 1:
        how += f"; every {replicas}th arrival (one replica of {replicas} behind a round-robin router)"
    new_in = _map_quantiles(inp[picked], inp)
    new_out = _map_quantiles(out[picked], out)
    t0 = arrival[picked[0]]
    ts = np.rint((arrival[picked] - t0) * 1000.0).astype(np.int64)
    records: list[dict[str, Any]] = []
    fresh = 0
    next_id = 0
    if hashes is not None:
        next_id = 1 + max((max(h) for h in hashes if h), default=-1)
    for j, idx in enumerate(picked):
        rec: dict[str, Any] = {
            "timestamp": int(ts[j]),
            "input_length": int(new_in[j]),
            "output_length": int(new_out[j]),
        }
        if hashes is not None:
            blocks = -(-int(new_in[j]) // block_tokens)
            ids = hashes[int(order[idx])][:blocks]
            add = blocks - len(ids)
            if add > 0:
                ids = [*ids, *range(next_id, next_id + add)]
                next_id += add
                fresh += add
            rec["hash_ids"] = ids
        records.append(rec)
    first = float(arrival[0])
    return Trace(
        records=records,
        window_start_s=round(float(arrival[lo]) - first, 3),
        window_end_s=round(float(arrival[hi - 1]) - first, 3),
        window_requests=int(hi - lo),
        replicas=replicas,
        how=how,
        log_lengths=_lengths(inp, out),
        trace_lengths=_lengths(new_in.astype(float), new_out.astype(float)),
        has_hash_ids=hashes is not None,
        fresh_hash_blocks=fresh,
    )


def burst_records(trace: Trace, peak_rps: float, multiplier: float = 2.5, seed: int = 0) -> list[dict[str, Any]]:
    """The step-burst schedule: peak for BURST_STEADY_S, multiplier x peak for BURST_STEP_S, peak again.

    Seeded Poisson arrivals per phase; each arrival takes the next record of the trace (cycling), so the
    burst carries the log's length mix. Timestamps are integer ms from the start.
    """
    if not (isinstance(peak_rps, int | float) and math.isfinite(peak_rps) and peak_rps > 0):
        raise InputError(f"peak rate = {peak_rps!r}; expected requests per second > 0 (metrics/workload.json rps)")
    lo, hi = BURST_MULTIPLIERS
    if not (isinstance(multiplier, int | float) and lo <= multiplier <= hi):
        raise InputError(f"burst multiplier = {multiplier!r}; expected {lo:g} to {hi:g} x the peak rate")
    if not trace.records:
        raise InputError("the trace is empty; expected records to draw the burst's lengths from")
    rng = np.random.default_rng(seed)
    times: list[float] = []
    start = 0.0
    for dur, rate in ((BURST_STEADY_S, peak_rps), (BURST_STEP_S, peak_rps * multiplier), (BURST_STEADY_S, peak_rps)):
        t = start
        while True:
            t += float(rng.exponential(1.0 / rate))
            if t >= start + dur:
                break
            times.append(t)
        start += dur
    out = []
    for i, t in enumerate(times):
        src = trace.records[i % len(trace.records)]
        out.append({**src, "timestamp": round(t * 1000.0)})
    return out


def concurrency_levels(knee: float | None, c_max: float | None) -> list[int]:
    """Sweep levels from 1 past the predicted knee and C_max: powers of two up to 1.5 x max(knee, C_max),
    plus round(1.5 x knee) and ceil(1.5 x max(knee, C_max)), sorted, unique."""
    known = [float(v) for v in (knee, c_max) if isinstance(v, int | float) and math.isfinite(v) and v > 0]
    if not known:
        raise InputError("knee and C_max are both missing; expected the predicted knee or C_max (operating point)")
    top = max(1, math.ceil(1.5 * max(known)))
    levels = {2**k for k in range(top.bit_length()) if 2**k <= top}
    levels.add(top)
    if isinstance(knee, int | float) and math.isfinite(knee) and knee > 0:
        levels.add(max(1, round(1.5 * knee)))
    return sorted(levels)


def _serve_flags(c: Candidate, max_model_len: int, max_seqs: int) -> list[str]:
    flags = ["--tensor-parallel-size", str(c.tp)]
    if c.pp > 1:
        flags += ["--pipeline-parallel-size", str(c.pp)]
    if c.weight_dtype == "fp8":
        flags += ["--quantization", "fp8"]
    elif c.weight_dtype in ("bf16", "fp16", "fp32"):
        flags += ["--dtype", {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[c.weight_dtype]]
    flags += ["--kv-cache-dtype", "fp8" if c.kv_dtype == "fp8" else "auto"]
    flags += ["--max-model-len", str(max_model_len)]
    if max_seqs > 256:
        flags += ["--max-num-seqs", str(max_seqs)]
    return flags


def _sh(args: list[str]) -> str:
    return " ".join(a if a.startswith('"') else shlex.quote(a) for a in args)  # '"..."': shell words, kept


def build_commands(
    c: Candidate,
    levels: list[int],
    p95_in: int,
    p95_out: int,
    max_model_len: int,
    slo: Mapping[str, Any],
    peak_rps: float,
    multiplier: float,
) -> str:
    """commands.sh: server, warm-up, the vLLM concurrency sweep, the AIPerf trace replay and step burst."""
    model = c.hf_repo or c.model
    top = max(levels)
    serve = [
        "vllm",
        "serve",
        '"$MODEL"',
        *_serve_flags(c, max_model_len, top),
        "--host",
        '"$HOST"',
        "--port",
        '"$PORT"',
    ]
    common = [
        "vllm", "bench", "serve", "--backend", "vllm", "--host", '"$HOST"', "--port", '"$PORT"',
        "--endpoint", "/v1/completions", "--model", '"$MODEL"', "--dataset-name", "random",
        "--random-input-len", str(p95_in), "--random-output-len", str(p95_out), "--ignore-eos",
        "--request-rate", "inf", "--seed", "0",
    ]  # fmt: skip
    goodput = [f"ttft:{slo['ttft_p99_ms']:g}"]
    if slo.get("itl_p99_ms"):
        goodput.append(f"tpot:{slo['itl_p99_ms']:g}")
    warm = [*common, "--max-concurrency", str(top), "--num-prompts", str(top), "--num-warmups", str(WARMUP_REQUESTS)]
    aiperf = [
        "aiperf", "profile", "--model", '"$MODEL"', "--tokenizer", '"$MODEL"', "--endpoint-type", "completions",
        "--streaming", "--url", '"$HOST:$PORT"', "--custom-dataset-type", "mooncake_trace", "--fixed-schedule",
        "--extra-inputs", "ignore_eos:true", "--random-seed", "0",
    ]  # fmt: skip
    level = [
        *common, "--max-concurrency", '"$C"', "--num-prompts", '"$N"', "--num-warmups", '"$C"',
        "--percentile-metrics", PERCENTILE_METRICS, "--metric-percentiles", METRIC_PERCENTILES,
        "--goodput", *goodput, "--save-result", "--save-detailed", "--result-dir", '"$SWEEP"',
        "--result-filename", '"vllm-${C}concurrency.json"',
    ]  # fmt: skip
    lines = [
        "#!/usr/bin/env bash",
        f"# Benchmark plan for {c.id} ({c.role}): {c.model} on {c.gpu}, TP{c.tp} PP{c.pp}, "
        f"{c.weight_dtype} weights, {c.kv_dtype} KV, {c.engine}.",
        "# Written by `sizing bench-plan`; rerun it rather than editing. Usage: bash commands.sh server|all|warmup|sweep|trace|burst",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        f'MODEL="${{MODEL:-{model}}}"',
        'HOST="${HOST:-127.0.0.1}"',
        'PORT="${PORT:-8000}"',
        'SWEEP="$HERE/results/vllm_sweep"',
        "",
        "server() {  # on the GPU machine, in its own shell; wait for 'Application startup complete'",
        *(
            [
                f"  # {c.weight_dtype} weights: set MODEL to a pre-quantized {c.weight_dtype} checkpoint (vLLM reads its config)"
            ]
            if c.weight_dtype not in ("fp8", "bf16", "fp16", "fp32")
            else []
        ),
        f"  {_sh(serve)}",
        "}",
        "",
        f"warmup() {{  # {WARMUP_REQUESTS} warm-up requests at concurrency {top} (vLLM repeats the first prompt); "
        "nothing saved",
        f"  {_sh(warm)}",
        "}",
        "",
        "sweep() {  # closed loop, the log's p95 lengths; one result file per level",
        '  mkdir -p "$SWEEP" && cp "$HERE/manifest.yaml" "$SWEEP/manifest.yaml"',
        f"  for C in {' '.join(str(x) for x in levels)}; do",
        "    N=$(( C * 10 > 100 ? C * 10 : 100 ))",
        "    " + _sh(level),
        "  done",
        "}",
        "",
        "trace() {  # the log's busiest window as one replica sees it, replayed at its own timestamps",
        "  " + _sh([*aiperf, "--input-file", '"$HERE/trace.jsonl"', "--artifact-dir", '"$HERE/results/aiperf_trace"']),
        "}",
        "",
        f"burst() {{  # step burst: {peak_rps:g} req/s for {BURST_STEADY_S:g} s, {multiplier:g} x "
        f"({peak_rps * multiplier:g} req/s) for {BURST_STEP_S:g} s, then {peak_rps:g} req/s for {BURST_STEADY_S:g} s",
        "  " + _sh([*aiperf, "--input-file", '"$HERE/burst.jsonl"', "--artifact-dir", '"$HERE/results/aiperf_burst"']),
        "}",
        "",
        'case "${1:-all}" in',
        "  server) server ;;",
        "  warmup) warmup ;;",
        "  sweep) sweep ;;",
        "  trace) trace ;;",
        "  burst) burst ;;",
        "  all) warmup; sweep; trace; burst ;;",
        '  *) echo "usage: bash commands.sh server|all|warmup|sweep|trace|burst" >&2; exit 2 ;;',
        "esac",
    ]
    return "\n".join(lines) + "\n"


def build_manifest(c: Candidate, p95_in: int, p95_out: int) -> dict[str, Any]:
    """The sweep folder's manifest.yaml (pipeline.benchmarks.read_manifest's keys), pre-filled."""
    m: dict[str, Any] = {
        "model": c.model,
        "gpu": c.gpu,
        "gpu_count": c.tp * c.pp,
        "tp": c.tp,
        "pp": c.pp,
        "weight_dtype": c.weight_dtype,
        "kv_dtype": c.kv_dtype,
        "engine": c.engine,
        "load_mode": "closed",
        "input_tokens": int(p95_in),
        "output_tokens": int(p95_out),
        "phase": "baseline",
    }
    if c.engine_version:
        m["engine_version"] = c.engine_version
    if c.tier and c.tier != "all":
        m["tier"] = c.tier
    m["synthetic"] = False
    m["source"] = f"sizing bench-plan for candidate {c.id}: replace with the machine and date of the run"
    m["notes"] = (
        f"vllm bench serve --dataset-name random --random-input-len {p95_in} --random-output-len {p95_out} "
        f"--ignore-eos --max-concurrency N --request-rate inf --percentile-metrics {PERCENTILE_METRICS} "
        f"--metric-percentiles {METRIC_PERCENTILES} --save-result (commands.sh sweep)"
    )
    return m


def jsonl(records: Sequence[Mapping[str, Any]]) -> str:
    """JSON lines in AIPerf's mooncake_trace key order (timestamp, input_length, output_length, hash_ids)."""
    lines = []
    for r in records:
        ordered = {k: r[k] for k in TRACE_KEYS if k in r}
        lines.append(json.dumps(ordered, separators=(", ", ": ")))
    return "\n".join(lines) + ("\n" if lines else "")


def _readme(plan_facts: dict[str, Any], c: Candidate, trace: Trace, levels: list[int]) -> str:
    li, ti = trace.log_lengths, trace.trace_lengths
    rows = [
        f"| {k.replace('_tokens', '')} {p} | {li[k][p]:g} | {ti[k][p]:g} |"
        for k in ("input_tokens", "output_tokens")
        for p in ("p50", "p95")
    ]
    hash_line = (
        f"- hash_ids: the log's prefix blocks ({HASH_BLOCK_TOKENS} tokens), {trace.fresh_hash_blocks} blocks padded "
        "with fresh ids so each record has ceil(input_length / 512) blocks, as AIPerf requires"
        if trace.has_hash_ids
        else "- hash_ids: the log has none; AIPerf synthesizes unshared prompts"
    )
    return "\n".join(
        [
            f"# Benchmark plan: {c.id}",
            "",
            f"{c.role.replace('_', ' ')}: {c.model} on {c.gpu}, TP{c.tp} PP{c.pp}, {c.weight_dtype} weights, "
            f"{c.kv_dtype} KV cache, {c.engine}; the plan sizes {c.instances} instance(s), {c.serving} of them "
            "serving the peak (with the safety factor, before headroom and spares): one replica sees "
            f"{plan_facts['peak_rps']:g} req/s.",
            "",
            "Written by `sizing bench-plan`; rerun it rather than editing these files.",
            "",
            *(
                [
                    "Same benchmark as "
                    + ", ".join(f"`{x}`" for x in plan_facts["same_as"])
                    + " (same GPU, TP, PP, usable RPS and monthly cost in metrics/tco.json): not planned "
                    "separately; this run measures them all.",
                    "",
                ]
                if plan_facts.get("same_as")
                else []
            ),
            "## Files",
            f"- `trace.jsonl`: {len(trace.records)} requests, AIPerf `mooncake_trace` JSON lines; {trace.how}; "
            f"{trace.duration_s:.0f} s, {trace.mean_rps:.3f} req/s mean",
            f"- `burst.jsonl`: the step burst ({plan_facts['burst_requests']} requests)",
            "- `commands.sh`: `bash commands.sh server` on the GPU machine, then `bash commands.sh all`",
            "- `manifest.yaml`: the sweep's manifest, copied into `results/vllm_sweep/` by the sweep",
            hash_line,
            "",
            "## Length mix (linear-interpolated percentiles, tokens)",
            "| | log | trace |",
            "|---|---|---|",
            *rows,
            "",
            "## Runs",
            f"1. warm-up: {WARMUP_REQUESTS} requests (`vllm bench serve --num-warmups {WARMUP_REQUESTS}`), not saved",
            f"2. concurrency sweep {', '.join(str(x) for x in levels)} (closed loop, p95 lengths "
            f"{plan_facts['p95_input_tokens']} in / {plan_facts['p95_output_tokens']} out, the lengths a `measured` "
            "curve is matched on)",
            "3. the trace replayed at its own timestamps (`aiperf profile --fixed-schedule`)",
            f"4. the step burst at {plan_facts['burst_multiplier']:g} x the peak rate of one replica "
            f"({plan_facts['peak_rps']:g} req/s)",
            "",
            "## When the results come back",
            "Fill `source` (and `engine_version`) in `results/vllm_sweep/manifest.yaml`, copy that folder to "
            "`data/raw/benchmarks/<name>/` and rerun the pipeline: the curve stage reads it as this deployment's "
            "sweep. The AIPerf runs (`results/aiperf_trace`, `results/aiperf_burst`) are the replay check for the "
            "simulator's fleet replay. This folder itself is not a sweep folder (it holds the traces).",
            "",
        ]
    )


def build_plan(
    candidate: Candidate,
    table: Mapping[str, Any],
    *,
    knee: float | None,
    c_max: float | None,
    peak_rps: float,
    slo: Mapping[str, Any],
    burst_multiplier: float = 2.5,
    min_requests: int = 200,
    seed: int = 0,
    label: str | None = None,
    same_as: Sequence[str] = (),
) -> Plan:
    """The whole plan for one candidate. `peak_rps` is the tier's peak rate for the whole fleet; one replica
    sees peak_rps / candidate.serving, the serving instances (the trace is thinned the same way). `same_as`:
    candidates left unplanned because this plan is the same benchmark (same GPU, TP, PP, usable RPS and cost)."""
    label = label or f"candidate {candidate.id}"
    if candidate.tp < 1 or candidate.pp < 1 or candidate.instances < 1 or candidate.serving < 1:
        raise InputError(
            f"{label}: tp/pp/instances/serving = {candidate.tp}/{candidate.pp}/{candidate.instances}/"
            f"{candidate.serving}; expected >= 1"
        )
    if "ttft_p99_ms" not in slo:
        raise InputError(f"{label}: slo: ttft_p99_ms missing; expected the SLO (params.yaml slo)")
    trace = build_trace(table, replicas=candidate.serving, min_requests=min_requests, label=label)
    per_replica = float(peak_rps) / candidate.serving if isinstance(peak_rps, int | float) else peak_rps
    burst = burst_records(trace, per_replica, burst_multiplier, seed)
    levels = concurrency_levels(knee, c_max)
    p95_in = math.ceil(trace.log_lengths["input_tokens"]["p95"])
    p95_out = math.ceil(trace.log_lengths["output_tokens"]["p95"])
    longest = max(r["input_length"] + r["output_length"] for r in [*trace.records, *burst])
    longest = max(longest, p95_in + p95_out)
    max_model_len = int(-(-longest // 1024) * 1024)
    commands = build_commands(candidate, levels, p95_in, p95_out, max_model_len, slo, per_replica, burst_multiplier)
    manifest = build_manifest(candidate, p95_in, p95_out)
    facts = {
        "candidate": candidate.id,
        "folder": candidate.folder,
        "role": candidate.role,
        "levels": levels,
        "knee": knee,
        "c_max": c_max,
        "peak_rps": round(per_replica, 4),
        "fleet_peak_rps": round(float(peak_rps), 4),
        "serving_instances": candidate.serving,
        "instances": candidate.instances,
        "window": trace.how,
        "window_start_s": trace.window_start_s,
        "window_end_s": trace.window_end_s,
        "window_requests": trace.window_requests,
        "log_lengths": trace.log_lengths,
        "trace_lengths": trace.trace_lengths,
        "burst_multiplier": burst_multiplier,
        "burst_requests": len(burst),
        "trace_requests": len(trace.records),
        "p95_input_tokens": p95_in,
        "p95_output_tokens": p95_out,
        "max_model_len": max_model_len,
        "warmup_requests": WARMUP_REQUESTS,
        "same_as": sorted(same_as),
    }
    readme = _readme(facts, candidate, trace, levels)
    return Plan(candidate, trace, burst, levels, commands, manifest, readme, facts)


# --- the report's tables (notebooks/benchmark_plan.ipynb): numbers kept as numbers for pipeline/tables.py ------


def candidates_frame(plans: list[dict[str, Any]]) -> Any:
    """One row per deployment to benchmark: role, deployment, basis, expected saving ($/month), P(beats chosen)
    (a fraction), serving instances, one replica's peak (req/s), the sweep's concurrency levels and its folder."""
    import pandas as pd

    rows = [
        {
            "candidate": p["candidate"],
            "role": p["role"].replace("_", " "),
            "deployment": f"{p['model']} on {p['gpu']} TP{p['tp']} PP{p['pp']}, w-{p['weights']}/kv-{p['kv']}",
            "basis now": p["basis"],
            "expected saving ($/month)": p["expected_saving_usd_per_month"],
            "P(beats chosen)": p["p_beats_chosen"],
            "serving instances": p["serving_instances"],
            "one replica's peak (req/s)": p["peak_rps"],
            "sweep concurrency": ", ".join(str(x) for x in p["levels"]),
            "folder": p["folder"],
        }
        for p in plans
    ]
    return pd.DataFrame(rows)


def traces_frame(plans: list[dict[str, Any]]) -> Any:
    """One row per trace: requests, the window (start and end, s from the tier's first arrival) and the input and
    output token lengths at p50 and p95, in the log and in the trace (one column each)."""
    import pandas as pd

    rows = []
    for p in plans:
        li, ti = p["log_lengths"], p["trace_lengths"]
        row: dict[str, Any] = {
            "candidate": p["candidate"],
            "trace requests": p["trace_requests"],
            "window": p["window"],
            "window_start_s": p["window_start_s"],
            "window_end_s": p["window_end_s"],
        }
        for kind in ("input", "output"):
            for q in ("p50", "p95"):
                row[f"{kind} {q}, log (tokens)"] = li[f"{kind}_tokens"][q]
                row[f"{kind} {q}, trace (tokens)"] = ti[f"{kind}_tokens"][q]
        row["burst requests"] = p["burst_requests"]
        rows.append(row)
    return pd.DataFrame(rows)
