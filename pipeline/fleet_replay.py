"""Step 11's burst test: the chosen fleet replayed on the log's busiest window (method.md 7b, fleet replay).

Pure: plain values and the simulator in, plain dicts out; no file is read or written here (the fleet stage,
pipeline/stages/fleet.py, reads metrics/calibration.json, metrics/memory.json and the request table).

Per tier of the adopted plan (metrics/fleet.json `per_tier`):
- the deployment is that tier's (model, GPU, weights, KV, TP x PP); its iteration coefficients come from
  metrics/calibration.json, never refitted (`resolve_coefficients`): the deployment's own fit (basis
  `calibrated`, or `transferred` when its levels could not identify b), else the pooled fit times its GPU
  family's scale (`transferred`), else, without a calibration, the roofline prior (`roofline`). The fitted
  per-request overhead h (HTTP, tokenizer) is added to every TTFT, as `sizing simulate` does;
- its KV capacity is the memory stage's engine profile (kv_cache_tokens // block_size);
- N replicas behind `fleet.router` serve the tier's requests of the window twice: as logged, and with the
  arrivals compressed by the headroom scale (1 + the tier's headroom, the growth or burst the formula's N
  provisions for);
- the formula's N is the serving instances with safety and headroom (`instances_with_headroom`): the
  spares are for failures and do not serve the headroom (method.md step 11);
- capacity correction (like for like with the curve the formula sizes from): the fleet's measured sweep is
  the one fact about this hardware; the engine model's own error at that sweep's lengths is removed before the
  replay. The benchmarked deployment is simulated closed loop at the sweep's own fixed lengths at the measured
  C_max (the benchmark's protocol, as pipeline/engine_curves.py simulates a level), and every iteration time of
  the replayed deployment is multiplied by `step_time_scale` s, the one number that makes that simulation's
  throughput equal the measured usable RPS (`capacity_correction`): s = model RPS / measured usable RPS when the
  overhead h is 0 (a closed loop's time scales with its step time), solved by bisection otherwise. The log's own
  length mix is kept: that is the workload, and the part of the curve stage's `anchor` that comes from the
  sweep's single ~p95 length is not a model error (docs/engine_model.md). A plan deployment other than the
  benchmarked one takes the benchmarked deployment's s on the same coefficient source (its own fit for a
  calibrated one, the pooled fit for a transferred one), as the anchor does; no measured curve: s = 1, said so;
- the SLO is met when TTFT p99 and ITL p99 of the window's requests are within params.yaml's slo and no
  request was rejected (longer than the KV cache) (method.md 7b). ITL p99 is the p99 over requests of each
  request's mean inter-token latency (TPOT), the definition the curves (pipeline/curve.py, engine_curves) and
  the measured readers use; the p99 over every gap is reported beside it as `itl_gap_p99_ms`, not judged;
- `min_replicas_meeting_slo`: the smallest N that meets the SLO at the scaled rate, found by bisection
  between a failing and a passing N, assuming more replicas never hurt: from the formula's N downward when
  it passes, upward (doubling) when it fails, up to `search_cap(formula N)` = max(4 x N, N + 16), at most
  SEARCH_LIMIT; none meeting it up to the cap gives null and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import InputError

SEARCH_FACTOR = 4
SEARCH_EXTRA = 16
SEARCH_LIMIT = 512
"""The upward search for the smallest N stops at max(SEARCH_FACTOR x formula N, formula N + SEARCH_EXTRA),
at most SEARCH_LIMIT replicas: beyond that the SLO is bound by single-request latency, not by capacity."""

DEFINITIONS = {
    "window": "the requests arriving in [start_s, end_s) s from the log's first arrival (fleet.replay_window)",
    "replicas": "the formula's N: instances with safety and headroom (spares excluded: they cover failures)",
    "rate_scale": "arrivals compressed by 1 + headroom (the tier's fleet.json headroom) for the scaled replay",
    "ttft_p99_ms": "TTFT p99 of the window's requests at the scaled rate with the formula's N, overhead h included",
    "itl_p99_ms": "ITL p99: the p99 over the window's requests of each request's mean inter-token latency (TPOT, "
    "(E2E - TTFT) / (output tokens - 1); requests with one output token have none), at the scaled rate: the "
    "definition the curves and the operating point judge the ITL SLO by (pipeline/curve.py, engine_curves)",
    "itl_gap_p99_ms": "p99 over every inter-token gap of the window's requests (reported, not judged)",
    "slo_attainment": "share of requests with TTFT <= slo.ttft_p99_ms and mean ITL <= slo.itl_p99_ms (scaled rate)",
    "passes": "the formula's N meets the SLO (TTFT p99 and per-request ITL p99 within params.yaml slo, no request "
    "rejected) at the scaled rate",
    "slow_end": "the same replay with every step x slow_end_step_time_scale = max(the correction, 1 + p90 of the "
    "calibration's throughput residuals): the band's slow end; reported, the pass/fail is the corrected replay's",
    "capacity_correction": "every iteration time of the replayed deployment x step_time_scale, the factor that makes "
    "the engine model reproduce the measured usable RPS of the fleet's sweep at the sweep's own lengths and C_max "
    "(the model's own error there); the log's length mix is kept (it is the workload)",
    "min_replicas_meeting_slo": "the smallest N meeting the SLO at the scaled rate (bisection, monotone in N assumed)",
    "saves_instances": "formula N - min N when the formula's N passes, else 0",
}


@dataclass(frozen=True)
class TierInput:
    """What one tier's replay needs: the deployment's step cost and engine, its trace of the window, its N."""

    tier: str
    cost: Any  # pipeline.sim.cost.StepCost
    cfg: Any  # pipeline.sim.engine.EngineConfig
    trace: Any  # pipeline.sim.engine.Trace (arrivals from the window's start)
    formula_replicas: int
    rate_scale: float
    overhead_s: float
    basis: str
    coefficients_source: str
    deployment: str
    kv_source: str
    window: dict[str, Any]
    note: str | None = None
    correction: dict[str, Any] | None = None  # capacity_correction's document (cost already scaled by it)


# --------------------------------------------------------------------------- coefficients


def _matches(d: Mapping[str, Any], model: str, gpu: str, tp: int, pp: int, weights: str, kv: str) -> bool:
    return (
        d.get("model") == model
        and d.get("gpu") == gpu
        and int(d.get("tp") or 0) == int(tp)
        and int(d.get("pp") or 1) == int(pp)
        and d.get("weight_dtype") == weights
        and d.get("kv_dtype") == kv
    )


def _b(coeffs: Mapping[str, Any], where: str) -> tuple[float, ...]:
    from pipeline.sim.cost import TERMS

    try:
        b = tuple(float(coeffs[t]) for t in TERMS)
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"metrics/calibration.json: {where}.coefficients: expected the six terms {', '.join(TERMS)} as numbers"
        ) from None
    if not all(math.isfinite(x) and x >= 0 for x in b):
        raise InputError(f"metrics/calibration.json: {where}.coefficients: {b}; expected finite numbers >= 0")
    return b


def resolve_coefficients(
    cal: Mapping[str, Any] | None,
    model: str,
    gpu: str,
    arch: str,
    tp: int,
    pp: int,
    weights: str,
    kv: str,
    prior: Any = None,
    pooled_only: bool = False,
) -> tuple[Any, float, str | None]:
    """(Coefficients, overhead h in s, calibration.json deployment key or None) for a deployment, read from the
    calibration document `cal` (metrics/calibration.json; None: not there). See the module docstring.
    `pooled_only`: the pooled fit even when the deployment has its own (the capacity correction of a transferred
    plan is measured on the benchmarked deployment with the same pooled coefficients)."""
    from pipeline.sim.cost import Coefficients

    settings = (cal or {}).get("settings") or {}
    form = settings.get("step_form") or settings.get("form")  # calibration.json settings.step_form (cost.STEP_FORMS)
    kw = {"form": form} if isinstance(form, str) else {}
    if not cal:
        c = prior if prior is not None else Coefficients.prior()
        return c, 0.0, None
    for i, d in enumerate([] if pooled_only else cal.get("deployments") or []):
        if isinstance(d, dict) and _matches(d, model, gpu, tp, pp, weights, kv):
            key = str(d.get("key") or f"deployments[{i}]")
            basis = "calibrated" if d.get("basis") == "calibrated" else "transferred"
            how = f"calibrated on {key}" if basis == "calibrated" else (d.get("warning") or f"pooled, via {key}")
            dform = d.get("step_form") or d.get("form")
            c = Coefficients(
                _b(d.get("coefficients") or {}, f"deployments[{key}]"),  # type: ignore[arg-type]
                basis,
                f"metrics/calibration.json: {how}",
                **({"form": dform} if isinstance(dform, str) else kw),
            )
            return c, float(d.get("request_overhead_s") or 0.0), key
    pooled = cal.get("pooled") or {}
    if not pooled.get("coefficients"):
        c = prior if prior is not None else Coefficients.prior()
        return c, 0.0, None
    b = np.asarray(_b(pooled["coefficients"], "pooled"))
    scales = pooled.get("gpu_arch_scale") or {}
    if arch in scales:
        lower = np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # calibrate.PHYSICAL_LOWER: MFU and bandwidth <= 100%
        b = np.maximum(b * float(scales[arch]), lower)
        how = f"pooled coefficients x {float(scales[arch]):.3f} ({arch} scale)"
    else:
        how = f"pooled coefficients (no {arch} deployment in the pool: scale 1)"
    n = len(cal.get("deployments") or [])
    c = Coefficients(
        tuple(float(x) for x in b),  # type: ignore[arg-type]
        "transferred",
        f"metrics/calibration.json: {how}, over {n} deployment(s)",
        **kw,
    )
    return c, float(pooled.get("request_overhead_s") or 0.0), None


# --------------------------------------------------------------------------- one replay


def _with_overhead(result: Any, overhead_s: float) -> Any:
    if overhead_s > 0:
        result.ttft_s = result.ttft_s + overhead_s
        result.e2e_s = result.e2e_s + overhead_s
    return result


def replay_once(
    cost: Any, cfg: Any, trace: Any, replicas: int, router: str, rate_scale: float, overhead_s: float
) -> Any:
    """The SimResult of one replay (the router's merged result), the overhead h added to TTFT and E2E."""
    from pipeline.sim.router import simulate_fleet

    return _with_overhead(simulate_fleet(cost, cfg, trace, int(replicas), router, rate_scale).result, overhead_s)


# --------------------------------------------------------------------------- the capacity correction

CLOSED_MIN_REQUESTS = 100
CLOSED_REQUESTS_PER_SLOT = 10
CLOSED_MAX_REQUESTS = 1500
"""Measured requests of a closed-loop level: max(100, min(10 x concurrency, 1500)), pipeline.engine_curves'
MIN_REQUESTS, REQUESTS_PER_SLOT and MAX_REQUESTS (the benchmark's protocol; a test pins them equal)."""
SCALE_BOUNDS = (1e-3, 1e3)
"""step_time_scale is searched in this range (a model 1000x off its own measured point is not corrected)."""


@dataclass(frozen=True)
class MeasuredPoint:
    """The fleet's measured operating point, and the benchmarked deployment that ran it as the engine model sees it."""

    deployment: str  # metrics/operating_point.json candidates id of the benchmarked deployment
    curve: str
    usable_rps: float  # measured usable RPS per instance, at the sweep's own lengths
    c_max: float  # measured C_max per instance (concurrency)
    input_tokens: int  # the sweep's lengths
    output_tokens: int
    cost: Any  # StepCost of the benchmarked deployment on the replayed deployment's coefficient source
    cfg: Any  # its engine (no prefix caching: a sweep's random prompts share none)
    overhead_s: float
    coefficients: str  # which coefficients `cost` carries, in words
    same_deployment: bool  # the replayed deployment is the benchmarked one


def closed_level(cost: Any, cfg: Any, input_tokens: int, output_tokens: int, concurrency: int) -> tuple[float, float]:
    """(measured requests / duration, mean E2E in s, engine only) of one closed-loop level at one fixed length, the
    benchmark's protocol (pipeline/engine_curves.py simulate_level: every slot starts at t = 0)."""
    from pipeline.sim.engine import simulate_closed

    c = int(concurrency)
    n = max(CLOSED_MIN_REQUESTS, min(CLOSED_REQUESTS_PER_SLOT * c, CLOSED_MAX_REQUESTS))
    ins = np.full(1, int(input_tokens), np.int64)
    outs = np.full(1, int(output_tokens), np.int64)
    res = simulate_closed(cost, cfg, ins, outs, concurrency=c, requests=n)
    d = float(res.duration_s)
    rate = res.requests / d if d > 0 else 0.0
    return rate, float(np.mean(res.e2e_s)) if len(res.e2e_s) else math.nan


def scaled_cost(cost: Any, scale: float, why: str = "") -> Any:
    """The step cost with every coefficient b0..b5 x `scale`: every iteration time x scale exactly (each form of
    pipeline.sim.cost is homogeneous of degree 1 in b)."""
    from pipeline.sim.cost import Coefficients

    c = cost.coeffs
    b = tuple(float(x) * float(scale) for x in c.b)
    src = f"{c.source}; x {scale:.4f} on every iteration time" + (f" ({why})" if why else "")
    return cost.with_coeffs(Coefficients(b, c.basis, src, c.form))  # type: ignore[arg-type]


def _levels_at(p: MeasuredPoint, cost: Any) -> list[tuple[float, float, float]]:
    """[(weight, rate, mean E2E)] of the two integer concurrencies around the measured C_max (one when integral)."""
    c = max(float(p.c_max), 1.0)
    lo, hi = math.floor(c), math.ceil(c)
    if hi == lo:
        return [(1.0, *closed_level(cost, p.cfg, p.input_tokens, p.output_tokens, lo))]
    w = c - lo
    return [
        (1.0 - w, *closed_level(cost, p.cfg, p.input_tokens, p.output_tokens, lo)),
        (w, *closed_level(cost, p.cfg, p.input_tokens, p.output_tokens, hi)),
    ]


def _rps(levels: list[tuple[float, float, float]], scale: float, h: float) -> float:
    """Closed-loop RPS at the measured C_max with every iteration x scale and overhead h: a closed loop's clock
    scales with its step time, so rate -> rate / scale and E2E -> E2E x scale; the overhead h outside the engine
    stretches each request's cycle (pipeline/engine_curves.py: RPS x E2E / (E2E + h))."""
    return sum(w * r * e / (e * scale + h) if e > 0 else w * r / scale for w, r, e in levels)


def capacity_correction(p: MeasuredPoint) -> dict[str, Any]:
    """`capacity_correction` of one tier: step_time_scale s such that the engine model of the benchmarked
    deployment, closed loop at the sweep's own fixed lengths and the measured C_max, gives the measured usable RPS
    (module docstring); with the model's RPS there, the reproduced RPS after scaling (re-simulated, not assumed)
    and the note in plain words."""
    levels = _levels_at(p, p.cost)
    h = float(p.overhead_s)
    model_rps = _rps(levels, 1.0, h)
    base = {
        "applied": False,
        "step_time_scale": 1.0,
        "capacity_factor": 1.0,
        "deployment": p.deployment,
        "curve": p.curve,
        "same_deployment": p.same_deployment,
        "coefficients": p.coefficients,
        "measured_usable_rps": round(float(p.usable_rps), 6),
        "measured_c_max": round(float(p.c_max), 6),
        "sweep_input_tokens": int(p.input_tokens),
        "sweep_output_tokens": int(p.output_tokens),
        "model_rps_at_measured_c_max": round(model_rps, 6),
        "reproduced_usable_rps": None,
    }
    lo_s, hi_s = SCALE_BOUNDS
    if not (model_rps > 0 and p.usable_rps > 0) or not (_rps(levels, hi_s, h) < p.usable_rps < _rps(levels, lo_s, h)):
        return {
            **base,
            "note": f"not corrected: the engine model gives {model_rps:.4g} req/s at the measured C_max "
            f"{p.c_max:.1f} against a measured {p.usable_rps:.4g}, outside what a step-time scale in "
            f"[{lo_s:g}, {hi_s:g}] can match; the raw coefficients are replayed",
        }
    for _ in range(200):  # bisection in log space on a decreasing function; 200 halvings reach float precision
        mid = math.sqrt(lo_s * hi_s)
        if _rps(levels, mid, h) > p.usable_rps:
            lo_s = mid
        else:
            hi_s = mid
    scale = round(math.sqrt(lo_s * hi_s), 6)
    check = _rps(_levels_at(p, scaled_cost(p.cost, scale)), 1.0, h)
    where = (
        "the replayed deployment itself"
        if p.same_deployment
        else f"the benchmarked deployment {p.deployment} (the plan's deployment has no sweep of its own)"
    )
    faster = model_rps > p.usable_rps
    note = (
        f"capacity corrected like for like with the measured curve {p.curve}: at the sweep's own lengths "
        f"({p.input_tokens} in / {p.output_tokens} out) and its measured C_max of {p.c_max:.1f} concurrent requests, "
        f"the engine model ({p.coefficients}) gives {where} {model_rps:.3f} req/s per instance where the sweep "
        f"measured {p.usable_rps:.3f}: the model is {('too fast' if faster else 'too slow')} there by "
        f"{max(model_rps, p.usable_rps) / min(model_rps, p.usable_rps):.2f}x, so every iteration of the replay takes "
        f"{scale:.3f}x the model's time (re-simulated at the sweep's point: {check:.3f} req/s). The replay keeps the "
        "log's own request lengths: they are the workload"
    )
    return {
        **base,
        "applied": True,
        "step_time_scale": scale,
        "capacity_factor": round(1.0 / scale, 6),
        "reproduced_usable_rps": round(check, 6),
        "note": note,
    }


def _p99_ms(vals: np.ndarray | None) -> float | None:
    if vals is None:
        return None
    v = vals[np.isfinite(vals)]
    return round(float(np.percentile(v, 99)) * 1e3, 6) if len(v) else None


def figures(result: Any, slo: Mapping[str, Any]) -> dict[str, Any]:
    """{ttft_p99_ms, itl_p99_ms, itl_gap_p99_ms, slo_attainment, met, requests, rejected} of one replay (numpy
    linear percentiles). ITL p99 is over requests of each request's mean inter-token latency (TPOT, NaN for one
    output token: left out), as the curves judge the ITL SLO; `itl_gap_p99_ms` is over every inter-token gap (the
    gap histogram when the run kept one), reported only. `met` and the attainment as pipeline.sim.replay.slo_figures
    defines them, with that ITL p99."""
    from pipeline.sim import engine as eng

    ttft_slo, itl_slo = slo.get("ttft_p99_ms"), slo.get("itl_p99_ms")
    ttft = _p99_ms(result.ttft_s)
    itl = _p99_ms(result.itl_mean_s)
    if result.itl_gaps_s is not None and (len(result.itl_gaps_s) or result.hist is None):
        gap = _p99_ms(result.itl_gaps_s)
    elif result.hist is not None and "gap" in result.hist:
        q = eng.hist_quantile(result.hist["gap"], 0.99)
        gap = round(q * 1e3, 6) if math.isfinite(q) else None
    else:
        gap = None
    ttft_ms, tpot_ms = result.ttft_s * 1e3, result.itl_mean_s * 1e3
    ok = ttft_ms <= ttft_slo if ttft_slo is not None else np.ones(len(ttft_ms), bool)
    if itl_slo is not None:
        ok = ok & ~(tpot_ms > itl_slo)  # NaN (one output token) passes
    rejected = int(result.rejected or 0)
    n = max(len(ttft_ms) + rejected, 1)
    # no request with two output tokens: no ITL to judge (every request passes the ITL part, as in the attainment)
    met = rejected == 0 and ttft is not None and (ttft_slo is None or ttft <= ttft_slo)
    met = met and (itl_slo is None or itl is None or itl <= itl_slo)
    return {
        "ttft_p99_ms": ttft,
        "itl_p99_ms": itl,
        "itl_gap_p99_ms": gap,
        "slo_attainment": round(float(np.sum(ok)) / n, 6),
        "met": bool(met),
        "requests": int(result.requests),
        "rejected": rejected,
    }


def search_cap(formula_n: int) -> int:
    """The largest N the upward search tries (module docstring)."""
    return int(min(SEARCH_LIMIT, max(SEARCH_FACTOR * formula_n, formula_n + SEARCH_EXTRA)))


def min_replicas(
    meets: Callable[[int], bool], formula_n: int, cap: int | None = None
) -> tuple[int | None, dict[int, bool]]:
    """The smallest N with meets(N), by bisection from the formula's N (module docstring); (None, tried) when
    no N up to the cap meets it. `tried` maps every N evaluated to its outcome."""
    if isinstance(formula_n, bool) or not isinstance(formula_n, int) or formula_n < 1:
        raise InputError(f"formula replicas = {formula_n!r}; expected an integer >= 1")
    cap = search_cap(formula_n) if cap is None else int(cap)
    tried: dict[int, bool] = {}

    def ok(n: int) -> bool:
        if n not in tried:
            tried[n] = bool(meets(n))
        return tried[n]

    if ok(formula_n):
        lo, hi = 0, formula_n  # meets(lo) false (0 replicas serve nothing), meets(hi) true
    else:
        lo, hi = formula_n, None
        n = formula_n
        while n < cap:
            n = min(cap, 2 * n)
            if ok(n):
                hi = n
                break
            lo = n
        if hi is None:
            return None, tried
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, tried


def _merge_p99(results: list[Any], attr: str, hist_key: str) -> float | None:
    """p99 (ms) over the union of several replays' samples (exact arrays; histograms when any kept one)."""
    from pipeline.sim import engine as eng

    arrays = [getattr(r, attr) for r in results]
    if all(a is not None for a in arrays):
        vals = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.zeros(0)
        return round(float(np.percentile(vals, 99)) * 1e3, 6) if len(vals) else None
    edges = eng.hist_edges()
    counts = np.zeros(len(edges) - 1, np.int64)
    for r, a in zip(results, arrays, strict=True):
        if a is not None:
            a = a[np.isfinite(a)]
            counts += np.bincount(np.clip(np.searchsorted(edges, a, side="right") - 1, 0, len(counts) - 1),
                                  minlength=len(counts))  # fmt: skip
        elif r.hist is not None and hist_key in r.hist:
            counts += r.hist[hist_key]
    q = eng.hist_quantile(counts, 0.99)
    return round(q * 1e3, 6) if math.isfinite(q) else None


def _merged(results: list[Any], slo: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of several tiers' replays taken as one population of requests."""
    n = sum(int(r.requests) + int(r.rejected) for r in results)
    att = sum(figures(r, slo)["slo_attainment"] * max(int(r.requests) + int(r.rejected), 1) for r in results)
    return {
        "ttft_p99_ms": _merge_p99(results, "ttft_s", "ttft"),
        "itl_p99_ms": _merge_p99(results, "itl_mean_s", "itl_mean"),
        "itl_gap_p99_ms": _merge_p99(results, "itl_gaps_s", "gap"),
        "slo_attainment": round(att / n, 6) if n else None,
    }


# --------------------------------------------------------------------------- the tier and the fleet


def replay_tier(t: TierInput, router: str, slo: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """One tier's replay keys (issue 14 interface, metrics/fleet.json replay.per_tier) and its two SimResults
    (as logged, scaled; for the fleet-wide figures)."""
    run = lambda n, scale: replay_once(t.cost, t.cfg, t.trace, n, router, scale, t.overhead_s)  # noqa: E731
    logged_r = run(t.formula_replicas, 1.0)
    scaled_r = run(t.formula_replicas, t.rate_scale)
    logged, scaled = figures(logged_r, slo), figures(scaled_r, slo)
    cache = {t.formula_replicas: scaled}

    def meets(n: int) -> bool:
        if n not in cache:
            cache[n] = figures(run(n, t.rate_scale), slo)
        return bool(cache[n]["met"])

    cap = search_cap(t.formula_replicas)
    best, tried = min_replicas(meets, t.formula_replicas, cap)
    passes = bool(scaled["met"])
    saves = max(0, t.formula_replicas - best) if (passes and best is not None) else 0
    keys = ("ttft_p99_ms", "itl_p99_ms", "itl_gap_p99_ms", "slo_attainment")
    if best is None:
        at = cache[max(tried)]
        search = (
            f"no N up to {cap} meets the SLO at x{t.rate_scale:.4g} (the search cap: max(4 x N, N + 16)); at "
            f"N = {max(tried)}: TTFT p99 {_ms(at['ttft_p99_ms'])}, ITL p99 {_ms(at['itl_p99_ms'])}"
        )
        if scaled["rejected"]:
            search += (
                f"; {scaled['rejected']:,} request(s) are longer than one replica's KV cache ({t.cfg.kv_blocks:,} "
                "blocks) and are rejected whatever N: a larger TP or more KV memory, not more replicas"
            )
        else:
            search += (
                ": what still misses is one request's latency on one replica (long prompts, prefill stalling the "
                "decodes), not capacity"
            )
    else:
        search = (
            f"N = {best} is the smallest that meets the SLO at x{t.rate_scale:.4g} "
            f"(bisection over {len(tried)} replays, cap {cap}; more replicas assumed never to hurt)"
        )
    slow = slow_end_replay(t, router, slo, keys)
    out = {
        "window": t.window,
        "router": router,
        "rate_scale": round(float(t.rate_scale), 6),
        "replicas": t.formula_replicas,
        **{k: scaled[k] for k in keys},
        "min_replicas_meeting_slo": best,
        "formula_replicas": t.formula_replicas,
        "saves_instances": saves,
        "passes": passes,
        "as_logged": {k: logged[k] for k in keys},
        "scaled": {k: scaled[k] for k in keys},
        "basis": t.basis,
        "deployment": t.deployment,
        "coefficients_source": t.coefficients_source,
        "capacity_correction": t.correction,
        "slow_end": slow,
        "overhead_ms": round(t.overhead_s * 1e3, 6),
        "kv_blocks": int(t.cfg.kv_blocks),
        "kv_source": t.kv_source,
        "engine": {
            "max_num_seqs": int(t.cfg.max_num_seqs),
            "max_num_batched_tokens": int(t.cfg.max_num_batched_tokens),
            "block_size": int(t.cfg.block_size),
            "enable_prefix_caching": bool(t.cfg.enable_prefix_caching),
        },
        "requests": logged["requests"],
        "rejected": {"as_logged": logged["rejected"], "scaled": scaled["rejected"]},
        "search": {"cap": cap, "tried": {str(n): ok for n, ok in sorted(tried.items())}, "how": search},
    }
    if t.note:
        out["note"] = t.note
    return out, [logged_r, scaled_r]


def slow_end_replay(
    t: TierInput, router: str, slo: Mapping[str, Any], keys: tuple[str, ...] = ("ttft_p99_ms", "itl_p99_ms")
) -> dict[str, Any] | None:
    """The pessimistic replay at the calibration band's slow end (correction `slow_end_step_time_scale`, above the
    correction itself): the formula's N at the scaled rate and the smallest N meeting the SLO there, every step
    x slow / correction more. None when the correction gives no slow end."""
    cc = t.correction or {}
    slow, s = cc.get("slow_end_step_time_scale"), cc.get("step_time_scale") or 1.0
    if not cc.get("applied") or not isinstance(slow, int | float) or slow <= 0:
        return None
    cost = scaled_cost(t.cost, float(slow) / float(s), "the band's slow end") if slow > s else t.cost
    cache: dict[int, dict[str, Any]] = {}

    def at(n: int) -> dict[str, Any]:
        if n not in cache:
            cache[n] = figures(replay_once(cost, t.cfg, t.trace, n, router, t.rate_scale, t.overhead_s), slo)
        return cache[n]

    best, _ = min_replicas(lambda n: bool(at(n)["met"]), t.formula_replicas, search_cap(t.formula_replicas))
    f = at(t.formula_replicas)
    return {
        "step_time_scale": round(float(slow), 6),
        "source": cc.get("slow_end_source"),
        **{k: f[k] for k in keys},
        "passes": bool(f["met"]),
        "min_replicas_meeting_slo": best,
    }


BASIS_ORDER = ("measured", "calibrated", "transferred", "roofline")


def weakest_basis(bases: list[str]) -> str | None:
    """The weakest of several bases (measured > calibrated > transferred > roofline)."""
    known = [b for b in bases if b in BASIS_ORDER]
    return max(known, key=BASIS_ORDER.index) if known else None


def replay_fleet(tiers: list[TierInput], router: str, slo: Mapping[str, Any], window: dict[str, Any]) -> dict[str, Any]:
    """metrics/fleet.json `replay` (issue 14 interface): every tier together, and `per_tier`.

    A tier whose window holds no request is listed with null figures and its note (it cannot be replayed);
    the fleet's figures are over the tiers that have requests."""
    from pipeline.sim.router import check_router

    check_router(router)
    if not tiers:
        raise InputError("fleet replay: no tier to replay; expected the adopted plan's tiers (metrics/fleet.json)")
    per_tier: dict[str, Any] = {}
    logged_all: list[Any] = []
    scaled_all: list[Any] = []
    for t in tiers:
        if len(t.trace) == 0:
            per_tier[t.tier] = {
                "window": t.window,
                "router": router,
                "rate_scale": round(float(t.rate_scale), 6),
                "replicas": t.formula_replicas,
                "ttft_p99_ms": None,
                "itl_p99_ms": None,
                "slo_attainment": None,
                "min_replicas_meeting_slo": None,
                "formula_replicas": t.formula_replicas,
                "saves_instances": 0,
                "passes": None,
                "as_logged": None,
                "scaled": None,
                "basis": t.basis,
                "deployment": t.deployment,
                "requests": 0,
                "note": f"tier {t.tier}: no request arrives in the window; nothing to replay"
                + (f" ({t.note})" if t.note else ""),
            }
            continue
        res, (lr, sr) = replay_tier(t, router, slo)
        per_tier[t.tier] = res
        logged_all.append(lr)
        scaled_all.append(sr)
    live = [r for r in per_tier.values() if r["passes"] is not None]
    if not live:
        raise InputError("fleet replay: no tier has a request in the window")
    mins = [r["min_replicas_meeting_slo"] for r in live]
    scaled = _merged(scaled_all, slo)
    formula = sum(int(r["formula_replicas"]) for r in per_tier.values())
    min_total = (
        None
        if any(m is None for m in mins)
        else sum(mins) + sum(int(r["formula_replicas"]) for r in per_tier.values() if r["passes"] is None)
    )
    scales = sorted({r["rate_scale"] for r in live})
    slow = [r.get("slow_end") for r in live]
    slow_end = (
        None
        if not all(slow)
        else {
            "passes": all(x["passes"] for x in slow),  # type: ignore[index]
            "min_replicas_meeting_slo": None
            if any(x["min_replicas_meeting_slo"] is None for x in slow)  # type: ignore[index]
            else sum(x["min_replicas_meeting_slo"] for x in slow)  # type: ignore[index]
            + sum(int(r["formula_replicas"]) for r in per_tier.values() if r["passes"] is None),
            "note": "per_tier.slow_end: every step x the band's slow end (reported; the pass/fail is the corrected "
            "replay's)",
        }
    )
    return {
        "window": window,
        "router": router,
        "rate_scale": scales[-1],
        "rate_scale_note": None
        if len(scales) == 1
        else ("each tier is scaled by its own headroom (per_tier.rate_scale); this is the largest"),
        "replicas": formula,
        **scaled,
        "min_replicas_meeting_slo": min_total,
        "formula_replicas": formula,
        "saves_instances": sum(int(r["saves_instances"]) for r in live),
        "passes": all(bool(r["passes"]) for r in live),
        "as_logged": _merged(logged_all, slo),
        "scaled": scaled,
        "basis": weakest_basis([r["basis"] for r in live]),
        "capacity_corrected": all(bool((r.get("capacity_correction") or {}).get("applied")) for r in live),
        "slow_end": slow_end,
        "slo": {"ttft_p99_ms": slo.get("ttft_p99_ms"), "itl_p99_ms": slo.get("itl_p99_ms")},
        "per_tier": per_tier,
        "definitions": DEFINITIONS,
    }


def describe(replay: Mapping[str, Any] | None, note: str | None = None) -> list[str]:
    """Report 11's sentences about the replay: the loud line when the formula's N fails, the saving when it
    passes with fewer."""
    if replay is None:
        return [f"No fleet replay: {note or 'not run'}."]
    lines = []
    for name, r in replay["per_tier"].items():
        cc = r.get("capacity_correction") or {}
        if cc.get("applied"):
            lines.append(
                f"Tier {name}: the replayed capacity is corrected to the benchmark: at the sweep's own lengths "
                f"({cc['sweep_input_tokens']} in / {cc['sweep_output_tokens']} out) and its measured C_max "
                f"({cc['measured_c_max']:.1f} concurrent), the engine model gives {cc['model_rps_at_measured_c_max']:.3f} "
                f"req/s per instance where the sweep measured {cc['measured_usable_rps']:.3f}, so every engine step of "
                f"the replay takes {cc['step_time_scale']:.3f}x the model's time (capacity x "
                f"{cc['capacity_factor']:.3f}). The log's own request lengths are kept: they are the workload."
            )
        elif cc.get("note"):
            lines.append(f"Tier {name}: the replayed capacity is the engine model's, not corrected ({cc['note']}).")
        sl = r.get("slow_end")
        if sl:
            lines.append(
                f"Tier {name}, pessimistic replay at the calibration band's slow end (every step x "
                f"{sl['step_time_scale']:.3f}): the formula's {r['formula_replicas']} replicas "
                + ("meet" if sl["passes"] else "MISS")
                + f" the SLO (TTFT p99 {_ms(sl['ttft_p99_ms'])}, ITL p99 {_ms(sl['itl_p99_ms'])}); the smallest N "
                + f"meeting it there: {sl['min_replicas_meeting_slo'] if sl['min_replicas_meeting_slo'] else 'none up to the cap'}."
            )
        if r["passes"] is None:
            lines.append(f"Tier {name}: {r.get('note')}.")
        elif not r["passes"]:
            best = r["min_replicas_meeting_slo"]
            need = (
                f"the replay needs {best} replicas" if best is not None else f"no N up to {r['search']['cap']} meets it"
            )
            lines.append(
                f"FORMULA'S N FAILS THE REPLAY for tier {name}: {r['formula_replicas']} replicas miss the SLO at "
                f"x{r['rate_scale']:.3g} the logged rate (TTFT p99 {_ms(r['ttft_p99_ms'])}, ITL p99 "
                f"{_ms(r['itl_p99_ms'])}); {need}."
            )
        elif r["saves_instances"] > 0:
            lines.append(
                f"Tier {name}: the replay would save {r['saves_instances']} instance(s): "
                f"{_replicas(r['min_replicas_meeting_slo'])} the SLO at x{r['rate_scale']:.3g} the logged rate, "
                f"the formula sizes {r['formula_replicas']}. This is an engine-model estimate (basis "
                f"{r.get('basis') or 'n/a'}"
                + (", corrected to the benchmark" if cc.get("applied") else ", not corrected to a benchmark")
                + ") at the log's own request lengths, while the formula sizes every request as if it were the "
                "sweep's ~p95 length (slower per request than the mix): confirm it with the benchmark plan's trace "
                "replay before cutting instances."
            )
        else:
            lines.append(
                f"Tier {name}: the formula's {r['formula_replicas']} replicas are the fewest that meet the SLO at "
                f"x{r['rate_scale']:.3g} the logged rate."
            )
    return lines


def _replicas(n: int) -> str:
    return f"{n} replica meets" if n == 1 else f"{n} replicas meet"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"
