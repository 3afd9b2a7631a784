"""`sizing simulate`: a traffic log's window replayed through N replicas of one deployment (method.md 7b).

The deployment's iteration time is `cost.for_deployment` (coefficients: the roofline prior, or
fitted by `pipeline.sim.calibrate` on the sweeps given with `--calibrate`, whose per-request
overhead h is added to every TTFT and E2E, as `sizing predict` does); its KV capacity is
the memory stage's engine profile (`pipeline.memory.engine_profile(...).kv_cache_tokens //
block_size`), with params.yaml's `engine` section (max_num_seqs, max_num_batched_tokens,
block_size, gpu_memory_utilization, ...). The SLO is params.yaml's `slo` section.

SLO figures (of the requests arriving in the window):
- `met`: TTFT p99 <= slo.ttft_p99_ms and (when set) ITL p99 <= slo.itl_p99_ms, the ITL p99 being over
  requests of each request's mean inter-token latency (TPOT), as the curves and step 11's fleet replay
  judge the ITL SLO (pipeline.fleet_replay.figures); the p99 over every inter-token gap (`itl_ms`) is
  reported beside it, not judged;
- `attainment`: the share of requests whose TTFT <= slo.ttft_p99_ms and whose mean ITL (TPOT)
  <= slo.itl_p99_ms (requests of one output token meet the ITL part);
- `ttft_attainment`, `itl_attainment`: each condition alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.sim.cost import Coefficients, StepCost, for_deployment
from pipeline.sim.engine import EngineConfig
from pipeline.sim.router import check_router, simulate_fleet


def coefficients_from(
    paths: list[Path], model: Any, gpu: Any, tp: int, pp: int, weights: str, kv: str
) -> tuple[Coefficients, float]:
    """(b, h) from `pipeline.sim.calibrate` fitted on the sweeps (no residuals): the deployment's own fit when
    the sweeps hold it (basis calibrated, or transferred when its levels cannot identify b), else the pooled fit
    with its GPU family's scale (basis transferred). h is the per-request overhead (s) outside the engine."""
    from pipeline.sim import calibrate

    cal = calibrate.calibrate([Path(p) for p in paths], with_residuals=False)
    coeffs, overhead_s, _ = cal.resolve(model.name, gpu.name, gpu.arch, tp, pp, weights, kv)
    return coeffs, float(overhead_s)


def deployment(
    model_name: str,
    gpu_name: str,
    tp: int,
    weights: str,
    kv: str,
    context_tokens: float,
    data: dict[str, Any],
    calibrate_paths: list[Path] | None = None,
    pp: int = 1,
) -> tuple[StepCost, EngineConfig, dict[str, Any]]:
    """The step cost, the engine config (KV blocks from the engine profile) and a description of both."""
    from pipeline import catalog, memory, parallelism, params, paths, quantization

    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InputError(f"--tp = {tp!r}; expected a TP degree >= 1")
    model = catalog.load_model(model_name, paths.ROOT if not Path(model_name).exists() else Path.cwd())
    gpu = catalog.find_gpu(gpu_name, catalog.load_gpus())
    quantization.precision(weights, "weights")
    quantization.precision(kv, "kv")
    coeffs, overhead_s = (
        coefficients_from(calibrate_paths, model, gpu, tp, pp, weights, kv) if calibrate_paths else (None, 0.0)
    )
    cost = for_deployment(model, gpu, weights, kv, tp, pp, coeffs)
    if isinstance(cost, str):
        raise InputError(f"deployment {model.name} on {gpu.name} w-{weights}/kv-{kv}: {cost}")
    settings = memory.EngineSettings.from_params(params.section("engine", data))
    ep = parallelism.expert_parallel(model, tp)
    prof = memory.engine_profile(model, gpu, weights, kv, tp, pp, ep, context_tokens, settings)
    if not prof.fits:
        raise InputError(
            f"deployment {cost.deployment}: the engine would not start ({prof.refusal}): "
            f"{prof.kv_cache_gib:.2f} GiB for KV per GPU, {prof.kv_cache_tokens:,} tokens; expected a deployment "
            "that fits (check `sizing memory`)"
        )
    block = int(settings.block_size)
    cfg = EngineConfig(
        max_num_seqs=int(settings.max_num_seqs),
        max_num_batched_tokens=int(settings.max_num_batched_tokens),
        block_size=block,
        kv_blocks=max(1, int(prof.kv_cache_tokens) // block),
        enable_prefix_caching=True,
    )
    info = {
        "deployment": cost.deployment,
        "basis": cost.coeffs.basis,
        "coefficients": cost.coeffs.as_dict(),
        "overhead_ms": round(overhead_s * 1e3, 6),
        "engine": {
            "max_num_seqs": cfg.max_num_seqs,
            "max_num_batched_tokens": cfg.max_num_batched_tokens,
            "block_size": block,
            "kv_blocks": cfg.kv_blocks,
            "kv_cache_tokens": int(prof.kv_cache_tokens),
            "source": "memory.engine_profile(...).kv_cache_tokens // block_size",
        },
    }
    return cost, cfg, info


def slo_figures(result: Any, slo: dict[str, Any]) -> dict[str, Any]:
    """TTFT/ITL p99 against the SLO, and the attainment shares (module docstring)."""
    s = result.summary()
    ttft_slo = slo.get("ttft_p99_ms")
    itl_slo = slo.get("itl_p99_ms")
    ttft_ms = result.ttft_s * 1e3
    tpot_ms = result.itl_mean_s * 1e3
    ok_ttft = ttft_ms <= ttft_slo if ttft_slo is not None else np.ones(len(ttft_ms), bool)
    ok_itl = ~(tpot_ms > itl_slo) if itl_slo is not None else np.ones(len(ttft_ms), bool)  # NaN (1 token) passes
    rejected = int(getattr(result, "rejected", 0) or 0)  # never served (longer than the KV cache): a miss each
    n = max(len(ttft_ms) + rejected, 1)
    p99_ttft = s["ttft_ms"]["p99"]
    p99_itl = s["tpot_ms"]["p99"]  # per-request mean ITL; None when no request has two output tokens
    met = rejected == 0 and p99_ttft is not None and (ttft_slo is None or p99_ttft <= ttft_slo)
    met = met and (itl_slo is None or p99_itl is None or p99_itl <= itl_slo)
    return {
        "ttft_p99_ms": ttft_slo,
        "itl_p99_ms": itl_slo,
        "met": bool(met),
        "attainment": round(float(np.sum(ok_ttft & ok_itl)) / n, 6),
        "ttft_attainment": round(float(np.sum(ok_ttft)) / n, 6),
        "itl_attainment": round(float(np.sum(ok_itl)) / n, 6),
    }


def simulate_log(
    log: str,
    model: str,
    gpu: str,
    tp: int,
    weights: str,
    kv: str,
    replicas: int,
    router: str = "least-outstanding",
    rate_scale: float = 1.0,
    window: str = "busiest-hour",
    calibrate_paths: list[Path] | None = None,
    params_path: Path | None = None,
) -> dict[str, Any]:
    """Everything `sizing simulate` prints, as one dict (checks every flag before reading the log)."""
    from pipeline import params, paths
    from pipeline.sim import engine
    from pipeline.sim.trace import load_trace, parse_window

    check_router(router)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise InputError(f"--replicas = {replicas!r}; expected an integer >= 1")
    scale = engine._check_scale(rate_scale)
    parse_window(window)
    candidate = params_path or paths.PARAMS
    data = params.load(candidate) if (params_path or candidate.exists()) else {}
    slo = params.section("slo", data)
    trace, win = load_trace(log, window, params_path)
    context = float(np.max(trace.input_tokens + trace.output_tokens))
    cost, cfg, info = deployment(model, gpu, tp, weights, kv, context, data, calibrate_paths)
    fleet = simulate_fleet(cost, cfg, trace, replicas, router, scale)
    overhead_s = info["overhead_ms"] / 1e3
    if overhead_s > 0:  # the calibrated per-request overhead outside the engine (HTTP, tokenizer): TTFT and E2E
        fleet.result.ttft_s = fleet.result.ttft_s + overhead_s
        fleet.result.e2e_s = fleet.result.e2e_s + overhead_s
    summary = fleet.summary()
    out: dict[str, Any] = {
        "log": str(log),
        "window": {**win.as_dict(), "rate_scale": scale},
        **info,
        "router": router,
        "replica_count": replicas,
        "requests": summary["requests"],
        "rejected": summary["rejected"],
        **{k: summary[k] for k in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "rps", "output_tokens_per_s")},
        "preemptions": summary["preemptions"],
        "slo": slo_figures(fleet.result, slo),
        "replicas": summary["replicas"],
        "definitions": {
            "itl_ms": "every inter-token gap of the window's requests",
            "tpot_ms": "per-request mean inter-token gap",
            "busy_share": "seconds the replica was running an iteration / the fleet's simulated span",
            "slo.met": "TTFT p99 and ITL p99 (over requests of each request's mean ITL, tpot_ms) within params.yaml's slo",
            "slo.attainment": "share of requests with TTFT <= slo.ttft_p99_ms and mean ITL <= slo.itl_p99_ms",
        },
    }
    return out


def describe(res: dict[str, Any]) -> str:
    """The human summary of `simulate_log`."""
    w = res["window"]
    end = "end" if w["end_s"] is None else f"{w['end_s']:g}"
    lines = [
        f"{res['deployment']} x {res['replica_count']} replicas, router {res['router']}, basis {res['basis']}",
        f"window {w['kind']} [{w['start_s']:g}, {end}) s of {res['log']}: {res['requests']:,} requests"
        + (f" (+{res['rejected']:,} rejected: longer than the KV cache)" if res["rejected"] else "")
        + (f", arrivals x{w['rate_scale']:g}" if w["rate_scale"] != 1 else ""),
        f"engine: max_num_seqs {res['engine']['max_num_seqs']}, max_num_batched_tokens "
        f"{res['engine']['max_num_batched_tokens']}, {res['engine']['kv_blocks']:,} KV blocks of "
        f"{res['engine']['block_size']} tokens",
        f"  {'':<8}{'mean':>10}{'p50':>10}{'p95':>10}{'p99':>10}  (ms)",
    ]
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        st = res[key]
        cells = "".join(f"{'-' if st[q] is None else format(st[q], ',.1f'):>10}" for q in ("mean", "p50", "p95", "p99"))
        lines.append(f"  {key[:-3].upper():<8}{cells}")
    s = res["slo"]
    itl = f", ITL p99 <= {s['itl_p99_ms']:g} ms" if s["itl_p99_ms"] is not None else ""
    lines.append(
        f"SLO (TTFT p99 <= {s['ttft_p99_ms']:g} ms{itl}): {'met' if s['met'] else 'NOT met'}; attainment "
        f"{s['attainment']:.1%} of requests (TTFT {s['ttft_attainment']:.1%}, ITL {s['itl_attainment']:.1%})"
    )
    lines.append(
        f"throughput {res['rps'] or 0:,.2f} req/s, {res['output_tokens_per_s'] or 0:,.0f} output tokens/s; "
        f"preemptions {res['preemptions']:,}"
    )
    for r in res["replicas"]:
        lines.append(
            f"  replica {r['replica']}: {r['routed']:,} requests, busy {r['busy_share']:.1%}, "
            f"preemptions {r['preemptions']:,}"
        )
    return "\n".join(lines) + "\n"
