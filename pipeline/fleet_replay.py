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
- the SLO is met when TTFT p99 and ITL p99 (over every inter-token gap) of the window's requests are
  within params.yaml's slo and no request was rejected (longer than the KV cache) (method.md 7b);
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
    "itl_p99_ms": "ITL p99 over every inter-token gap of the window's requests, at the scaled rate",
    "slo_attainment": "share of requests with TTFT <= slo.ttft_p99_ms and mean ITL <= slo.itl_p99_ms (scaled rate)",
    "passes": "the formula's N meets the SLO (TTFT p99 and ITL p99 within params.yaml slo, no request rejected) "
    "at the scaled rate",
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
) -> tuple[Any, float, str | None]:
    """(Coefficients, overhead h in s, calibration.json deployment key or None) for a deployment, read from the
    calibration document `cal` (metrics/calibration.json; None: not there). See the module docstring."""
    from pipeline.sim.cost import Coefficients

    settings = (cal or {}).get("settings") or {}
    form = settings.get("step_form") or settings.get("form")  # calibration.json settings.step_form (cost.STEP_FORMS)
    kw = {"form": form} if isinstance(form, str) else {}
    if not cal:
        c = prior if prior is not None else Coefficients.prior()
        return c, 0.0, None
    for i, d in enumerate(cal.get("deployments") or []):
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


def _p99_ms(vals: np.ndarray | None) -> float | None:
    if vals is None:
        return None
    v = vals[np.isfinite(vals)]
    return round(float(np.percentile(v, 99)) * 1e3, 6) if len(v) else None


def figures(result: Any, slo: Mapping[str, Any]) -> dict[str, Any]:
    """{ttft_p99_ms, itl_p99_ms, slo_attainment, met, requests, rejected} of one replay: the p99s as
    SimResult.summary() computes them (numpy linear percentiles; ITL over every inter-token gap, the gap
    histogram when the run kept one), `met` and the attainment as pipeline.sim.replay.slo_figures defines them."""
    from pipeline.sim import engine as eng

    ttft_slo, itl_slo = slo.get("ttft_p99_ms"), slo.get("itl_p99_ms")
    ttft = _p99_ms(result.ttft_s)
    if result.itl_gaps_s is not None and (len(result.itl_gaps_s) or result.hist is None):
        itl = _p99_ms(result.itl_gaps_s)
    elif result.hist is not None and "gap" in result.hist:
        q = eng.hist_quantile(result.hist["gap"], 0.99)
        itl = round(q * 1e3, 6) if math.isfinite(q) else None
    else:
        itl = None
    ttft_ms, tpot_ms = result.ttft_s * 1e3, result.itl_mean_s * 1e3
    ok = ttft_ms <= ttft_slo if ttft_slo is not None else np.ones(len(ttft_ms), bool)
    if itl_slo is not None:
        ok = ok & ~(tpot_ms > itl_slo)  # NaN (one output token) passes
    rejected = int(result.rejected or 0)
    n = max(len(ttft_ms) + rejected, 1)
    met = rejected == 0 and ttft is not None and (ttft_slo is None or ttft <= ttft_slo)
    met = met and (itl_slo is None or (itl is not None and itl <= itl_slo))
    return {
        "ttft_p99_ms": ttft,
        "itl_p99_ms": itl,
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
        "itl_p99_ms": _merge_p99(results, "itl_gaps_s", "gap"),
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
    keys = ("ttft_p99_ms", "itl_p99_ms", "slo_attainment")
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
                f"{r.get('basis') or 'n/a'}) at the log's own request lengths, while the formula sizes from the "
                "operating point's curve (a sweep near the p95 lengths is slower per request than the mix): confirm "
                "it with the benchmark plan's trace replay before cutting instances."
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
