"""The fleet stage (step 11): workload, tiers and operating points -> metrics/fleet.json.

After the fleet arithmetic, the adopted plan is replayed on the log's busiest window through the engine
model (pipeline.fleet_replay; method.md 7b): `replay` in metrics/fleet.json. The replay reads
data/interim/requests.parquet (each row's tier as the workload stage names it: workload.tiers),
metrics/calibration.json (the coefficients; absent: the roofline prior at the memory stage's efficiencies,
memory.json roofline_efficiency), metrics/operating_point.json (each fleet's measured point, from its `anchor`
deployment's `candidates` entry: the replay's capacity is corrected to it, pipeline.fleet_replay
capacity_correction; the log's lengths are kept), metrics/memory.json (the KV
capacity of the deployment's engine profile; recomputed with params.yaml's engine section when the memory
stage did not profile that TP x PP) and params.yaml's engine section (max_num_seqs, max_num_batched_tokens,
block_size).

No request table: `replay` is null and `replay_note` says why (a named warning, `replay_skipped`). A tier
without requests in the window is listed with null figures (warning `replay_window_empty`). An explicit
`fleet.replay_window` START:END that holds no arrival of the log is an error (InputError): the user named a
window that is not in the log. Everything is computed before metrics/fleet.json is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import Any

import numpy as np

from pipeline import catalog, fleet, io, params, paths
from pipeline.contracts import FleetDoc
from pipeline.errors import InputError
from pipeline.layout import Layout

REPLAY_SECTIONS = ("engine", "workload")
ESCALATION_SEED = 0
"""Seed of the cascade's escalated sample (the large tier replays that share of the requests, drawn once)."""


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    names = (*fleet.SECTIONS, *REPLAY_SECTIONS)
    return {name: params.validate_section(name, sections.get(name)) for name in names}


def run(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Read the profile, the tiers and the operating points, size every fleet, replay the adopted plan on the
    busiest window, write metrics/fleet.json atomically."""
    layout = layout or Layout(paths.ROOT)
    sec = validated(sections)
    inputs = io.read_metrics(layout.root, ("workload", "tiers", "operating_point"))
    result = fleet.plan(
        inputs["workload"],
        inputs["operating_point"],
        inputs["tiers"],
        sec["fleet"],
        sec["routing"],
        sec["slo"],
        lambda name: catalog.load_model(name, layout.root),
    )
    replay, note, warnings = replay_plan(result, inputs["workload"], sec, layout, inputs["operating_point"])
    result["replay"] = replay
    result["replay_note"] = note
    result["warnings"] = [*result["warnings"], *warnings]
    result = FleetDoc.from_dict(result).to_dict()  # the typed contract, key for key, replay included
    io.write_json(layout.fleet_json, result)
    return result


# --------------------------------------------------------------------------- inputs of the replay


def _read_optional(path: Any) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return data if isinstance(data, dict) else None


def tier_table(layout: Layout, workload_p: dict[str, Any], slo: dict[str, Any]) -> Any:
    """data/interim/requests.parquet as an Arrow table: arrival_s, input_tokens, output_tokens, hash_ids (when
    the log has them) and `tier`, named as the workload stage names tiers (workload.tier_expression)."""
    import duckdb

    from pipeline import workload

    path = layout.requests_parquet
    settings = workload.ProfileSettings.from_params(workload_p, slo)
    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(path)}).fetchall()]
        missing = [c for c in ("arrival_s", "input_tokens", "output_tokens") if c not in cols]
        if missing:
            raise InputError(f"{layout.relative(path)}: {missing[0]}: column missing; expected the request table")
        expr, _, values = workload.tier_expression(cols, settings)
        pick = "arrival_s, input_tokens, output_tokens" + (", hash_ids" if "hash_ids" in cols else "")
        case_sql = expr or "'all'"  # workload.tier_expression: a CASE over quoted columns, its values bound
        return con.sql(
            f"SELECT {pick}, {case_sql} AS tier FROM read_parquet($path) "
            "WHERE arrival_s IS NOT NULL AND isfinite(arrival_s) ORDER BY arrival_s",
            params={"path": str(path), **values},
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise InputError(f"{layout.relative(path)}: cannot read ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()


def _utc(epoch_s: float, clock: str | None) -> str | None:
    if clock != "epoch_utc" or not math.isfinite(epoch_s):
        return None
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_dict(
    kind: str, lo: float, hi: float, first: float, arrivals: np.ndarray, clock: str | None
) -> dict[str, Any]:
    """replay.window: the window in seconds from the log's first arrival, its requests, first and last arrival."""
    inside = arrivals[(arrivals >= lo) & (arrivals < hi)]
    a, b = (float(inside[0]), float(inside[-1])) if len(inside) else (math.nan, math.nan)
    return {
        "kind": kind,
        "start_s": round(lo - first, 6),
        "end_s": round(hi - first, 6) if math.isfinite(hi) else round(float(arrivals[-1]) - first, 6),
        "requests": len(inside),
        "first_arrival": _utc(a, clock),
        "last_arrival": _utc(b, clock),
        "first_arrival_s": round(a - first, 6) if len(inside) else None,
        "last_arrival_s": round(b - first, 6) if len(inside) else None,
    }


def _engine_config(
    t: dict[str, Any],
    model: Any,
    gpu: Any,
    memory_json: dict[str, Any] | None,
    engine_p: dict[str, Any],
    context: float,
) -> tuple[Any, str]:
    """EngineConfig of the tier's deployment (KV blocks from the engine profile) and where the KV came from."""
    from pipeline import memory, parallelism
    from pipeline.sim.engine import EngineConfig

    settings = memory.EngineSettings.from_params(engine_p)
    block = int(settings.block_size)
    cid = f"{t['tier']}/{t['gpu']}/w-{t['weight_dtype']}/kv-{t['kv_dtype']}"
    cand = ((memory_json or {}).get("candidates") or {}).get(cid) or {}
    eng = cand.get("engine") or {}
    if (
        int(cand.get("tp") or 0) == int(t["tp"])
        and int(cand.get("pp") or 1) == int(t["pp"])
        and isinstance(eng.get("kv_cache_tokens"), int | float)
        and eng["kv_cache_tokens"] > 0
    ):
        kv_tokens = int(eng["kv_cache_tokens"])
        src = f"metrics/memory.json candidates.{cid}.engine.kv_cache_tokens ({kv_tokens:,}) // block_size {block}"
    else:
        ep = parallelism.expert_parallel(model, int(t["tp"]))
        ctx = float(cand.get("context_tokens_p95") or context)
        prof = memory.engine_profile(
            model, gpu, t["weight_dtype"], t["kv_dtype"], int(t["tp"]), int(t["pp"]), ep, ctx, settings
        )
        kv_tokens = int(prof.kv_cache_tokens)
        src = (
            f"memory.engine_profile at TP{t['tp']} PP{t['pp']} ({kv_tokens:,} KV tokens; the memory stage profiled "
            f"{cid} at TP{cand.get('tp', '?')}) // block_size {block}"
        )
    cfg = EngineConfig(
        max_num_seqs=int(settings.max_num_seqs),
        max_num_batched_tokens=int(settings.max_num_batched_tokens),
        block_size=block,
        kv_blocks=max(1, kv_tokens // block),
        enable_prefix_caching=True,
    )
    return cfg, src


def _rows_of(table: Any, t: dict[str, Any]) -> tuple[Any, str | None]:
    """The tier's rows: its own (routed), every row (pooled, cascade-small), a seeded share (cascade-large)."""
    import pyarrow.compute as pc

    role = t.get("role")
    if t["tier"] == "all" or role in ("pooled", "cascade-small"):
        return table, None
    if role == "cascade-large":
        share = float(t.get("share") or 0.0)
        rng = np.random.default_rng(ESCALATION_SEED)
        keep = rng.random(table.num_rows) < share
        return table.filter(keep), (
            f"cascade: the escalated {share:.0%} of the requests (a seeded sample, seed {ESCALATION_SEED})"
        )
    return table.filter(pc.equal(table.column("tier"), t["tier"])), None


def _fleet_anchor(op: dict[str, Any] | None, tier: str) -> dict[str, Any]:
    """The curve stage's anchor of a fleet (op.per_tier[t].anchor; the pooled fleet `all`: op.anchor)."""
    op = op or {}
    per = (op.get("per_tier") or {}).get(tier) if tier != "all" else None
    return ((per or {}).get("anchor") if per is not None else op.get("anchor")) or {}


def measured_point(
    op: dict[str, Any] | None,
    tier: str,
    t: dict[str, Any],
    replay_basis: str,
    cal: dict[str, Any] | None,
    memory_json: dict[str, Any] | None,
    engine_p: dict[str, Any],
    gpus: Any,
    prior: Any,
    root: Any,
) -> tuple[Any, str | None]:
    """(fleet_replay.MeasuredPoint, None) of the tier's fleet from metrics/operating_point.json (the benchmarked
    deployment of its anchor, `candidates[id]`: its measured usable RPS and C_max at the sweep's own lengths, or the
    measured figures of a `carried` curve), or (None, why). The benchmarked deployment's coefficients are the
    replayed deployment's source: the same ones when it is that deployment, else its own fit (calibrated) or the
    pooled fit (transferred), as the anchor pairs them; its engine the calibration's limits (the sweep's server)."""
    from pipeline import fleet_replay
    from pipeline.sim.cost import for_deployment

    a = _fleet_anchor(op, tier)
    cid = a.get("deployment")
    e = ((op or {}).get("candidates") or {}).get(cid) if cid else None
    where = "the pooled fleet" if tier == "all" else f"tier {tier}"
    if not e:
        why = a.get("note") or "metrics/operating_point.json has no anchor for it (no candidate curves)"
        return None, f"no measured curve to correct the replay against for {where}: {why}"
    for k in ("tier", "model", "gpu", "tp", "weights", "kv"):
        if e.get(k) in (None, ""):
            raise InputError(
                f"metrics/operating_point.json: candidates.{cid}.{k}: missing; expected the benchmarked deployment's "
                "identity (rerun the curve stage)"
            )
    lm = e.get("length_match") or {}
    carried = e.get("carried") or {}
    if e.get("basis") == "measured":
        u, c = e.get("usable_rps"), e.get("c_max")
    else:
        u, c = carried.get("measured_usable_rps"), carried.get("measured_c_max")
    curve = str(((op or {}).get("per_tier") or {}).get(tier, {}).get("curve") or carried.get("curve") or cid)
    if tier == "all":
        src = (op or {}).get("curve_source")
        curve = str((src.get("curve") if isinstance(src, dict) else src) or carried.get("curve") or cid)
    li, lo_ = lm.get("curve_input_tokens"), lm.get("curve_output_tokens")
    if not (isinstance(u, int | float) and isinstance(c, int | float) and u > 0 and c > 0 and li and lo_):
        return None, (
            f"no measured usable RPS, C_max and sweep lengths for {cid} in metrics/operating_point.json candidates: "
            f"the replay of {where} is not corrected"
        )
    same = (e["model"], e["gpu"], int(e["tp"]), int(e.get("pp") or 1), e["weights"], e["kv"]) == (
        t["model"], t["gpu"], int(t["tp"]), int(t["pp"]), t["weight_dtype"], t["kv_dtype"]
    )  # fmt: skip
    model = catalog.load_model(e["model"], root)
    gpu = catalog.find_gpu(e["gpu"], gpus)
    ident = (model.name, gpu.name, gpu.arch, int(e["tp"]), int(e.get("pp") or 1), e["weights"], e["kv"])
    # The benchmarked deployment is simulated with the replay's own kind of coefficients, so that the factor
    # measures the error of the coefficients the replay runs: the pooled fit for a transferred replay of another
    # deployment, the roofline prior for a roofline replay, else the deployment's own fit.
    coeffs, overhead_s, _ = fleet_replay.resolve_coefficients(
        None if replay_basis == "roofline" else cal, *ident, prior=prior,
        pooled_only=replay_basis == "transferred" and not same,
    )  # fmt: skip
    _, _, key = fleet_replay.resolve_coefficients(cal, *ident, prior=prior)  # the sweep's own entry: its server limits
    cost = for_deployment(model, gpu, e["weights"], e["kv"], int(e["tp"]), int(e.get("pp") or 1), coeffs)
    if isinstance(cost, str):
        return None, f"the benchmarked deployment {cid} cannot be simulated ({cost}): the replay is not corrected"
    dt = {**t, "tier": e["tier"], "model": e["model"], "gpu": e["gpu"], "tp": e["tp"], "pp": e.get("pp") or 1,
          "weight_dtype": e["weights"], "kv_dtype": e["kv"]}  # fmt: skip
    cfg, _ = _engine_config(dt, model, gpu, memory_json, engine_p, float(li) + float(lo_))
    lim = {}
    for d in (cal or {}).get("deployments") or []:
        if isinstance(d, dict) and d.get("key") == key:
            lim = d.get("engine_limits") or {}
    cfg = dataclasses.replace(
        cfg,
        max_num_seqs=int(lim.get("max_num_seqs") or cfg.max_num_seqs),
        max_num_batched_tokens=int(lim.get("max_num_batched_tokens") or cfg.max_num_batched_tokens),
        mixed_prefill=bool(lim.get("mixed_prefill", True)),
        enable_prefix_caching=False,
    )
    return (
        fleet_replay.MeasuredPoint(
            deployment=str(cid),
            curve=curve,
            usable_rps=float(u),
            c_max=float(c),
            input_tokens=max(round(float(li)), 1),
            output_tokens=max(round(float(lo_)), 1),
            cost=cost,
            cfg=cfg,
            overhead_s=float(overhead_s),
            coefficients=coeffs.source.removeprefix("metrics/calibration.json: "),
            same_deployment=same,
        ),
        None,
    )


def slow_end(cal: dict[str, Any] | None, key: str | None, basis: str, scale: float) -> dict[str, Any]:
    """The band's slow end of a corrected replay: {slow_end_step_time_scale, slow_end_source}. The calibration's
    throughput residuals r = predicted / measured - 1 of the replayed coefficients (the deployment's own fit: the
    larger p90 of leave-one-level-out and in-sample, the curve stage's widened band; a transferred one: the pooled
    fit's leave-one-deployment-out) say the model can be too fast by up to 1 + p90 somewhere on the sweep; the slow
    end takes every step x max(the correction, 1 + p90). No residuals: no slow end (null, why)."""
    res: dict[str, Any] = {}
    where = ""
    if basis == "calibrated" and key:
        dep = next((d for d in (cal or {}).get("deployments") or [] if isinstance(d, dict) and d.get("key") == key), {})
        r = dep.get("residuals") or {}
        res = {k: (r.get(k) or {}).get("throughput") or {} for k in ("leave_one_level_out", "in_sample")}
        where = f"the throughput residuals of {key} (leave-one-level-out and in-sample, the larger p90)"
    elif basis == "transferred":
        r = (((cal or {}).get("pooled") or {}).get("residuals") or {}).get("leave_one_deployment_out") or {}
        res = {"leave_one_deployment_out": r.get("throughput") or {}}
        where = "the pooled fit's leave-one-deployment-out throughput residuals"
    p90 = [float(v["p90_rel"]) for v in res.values() if isinstance(v.get("p90_rel"), int | float)]
    if not p90:
        return {"slow_end_step_time_scale": None, "slow_end_source": f"none: no throughput residuals for a {basis} fit"}
    q = max(p90)
    return {
        "slow_end_step_time_scale": round(max(float(scale), 1.0 + q), 6),
        "slow_end_source": f"max(the correction {scale:.3f}, 1 + p90 {q:+.3f} of {where})",
    }


def replay_plan(
    result: dict[str, Any],
    workload_json: dict[str, Any],
    sec: dict[str, Any],
    layout: Layout,
    op: dict[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """(replay, replay_note, warnings) for the adopted plan of `result` (fleet.plan's document); `op`:
    metrics/operating_point.json, the measured point each tier's replay is corrected to (capacity_correction)."""
    from pipeline import fleet_replay
    from pipeline.sim.cost import for_deployment, roofline_prior
    from pipeline.sim.router import check_router
    from pipeline.sim.trace import busiest_hour, parse_window, trace_from_arrow, window_bounds

    p = sec["fleet"]
    router, window_text = p["router"], p["replay_window"]
    check_router(router)
    parse_window(window_text)
    if not layout.requests_parquet.exists():
        note = f"{layout.relative(layout.requests_parquet)} not found: run the workload stage (dvc repro)"
        return None, note, [f"replay_skipped: {note}"]
    table = tier_table(layout, sec["workload"], sec["slo"])
    if table.num_rows == 0:
        note = f"{layout.relative(layout.requests_parquet)} has no request with an arrival time"
        return None, note, [f"replay_skipped: {note}"]
    arrivals = table.column("arrival_s").to_numpy().astype(np.float64)
    first = float(arrivals[0])
    kind, lo, hi = window_bounds(arrivals, window_text)
    clock = workload_json.get("clock")
    window = window_dict(kind, lo, hi, first, arrivals, clock)
    if window["requests"] == 0:  # only an explicit START:END can miss every arrival
        span = float(arrivals[-1] - first)
        raise InputError(
            f"params.yaml: fleet.replay_window = {window_text!r}: no arrivals in [{lo - first:g}, {hi - first:g}) s "
            f"from the log's first arrival; expected a window inside the log's {span:,.0f} s (or busiest-hour)"
        )
    cal = _read_optional(layout.calibration_json)
    memory_json = _read_optional(layout.memory_json)
    gpus = catalog.load_gpus(layout.root)
    eff = (memory_json or {}).get("roofline_efficiency") or {}  # the memory stage's roofline section
    prior = roofline_prior(
        {"prefill_mfu": eff.get("prefill_mfu"), "bandwidth_efficiency": eff.get("bandwidth")} if eff else None
    )
    inputs: list[fleet_replay.TierInput] = []
    warnings: list[str] = []
    for name, t in sorted(result["per_tier"].items()):
        model = catalog.load_model(t["model"], layout.root)
        gpu = catalog.find_gpu(t["gpu"], gpus)
        coeffs, overhead_s, cal_key = fleet_replay.resolve_coefficients(
            cal, model.name, gpu.name, gpu.arch, int(t["tp"]), int(t["pp"]), t["weight_dtype"], t["kv_dtype"],
            prior=prior,
        )  # fmt: skip
        if cal is None:
            coeffs_source = f"{coeffs.source} (no metrics/calibration.json: run the calibrate stage)"
        else:
            coeffs_source = coeffs.source
        cost = for_deployment(model, gpu, t["weight_dtype"], t["kv_dtype"], int(t["tp"]), int(t["pp"]), coeffs)
        deployment = f"{model.name} on {gpu.name} TP{t['tp']} PP{t['pp']} w-{t['weight_dtype']}/kv-{t['kv_dtype']}"
        if isinstance(cost, str):
            raise InputError(f"metrics/fleet.json per_tier.{name}: {deployment}: {cost}")
        point, why_not = measured_point(
            op, t["tier"], t, coeffs.basis, cal, memory_json, sec["engine"], gpus, prior,
            layout.root,
        )  # fmt: skip
        if point is not None:
            correction = fleet_replay.capacity_correction(point)
            if correction["applied"]:
                correction.update(slow_end(cal, cal_key, coeffs.basis, correction["step_time_scale"]))
                cost = fleet_replay.scaled_cost(cost, correction["step_time_scale"], "capacity correction")
                coeffs_source = f"{coeffs_source}; x {correction['step_time_scale']:.4f} (capacity_correction)"
        else:
            correction = {"applied": False, "step_time_scale": 1.0, "capacity_factor": 1.0, "note": why_not}
        a = _fleet_anchor(op, t["tier"])
        correction["anchor_factor"] = a.get("factor")
        if correction["applied"] and isinstance(a.get("factor"), int | float) and a["factor"] > 0:
            # the curve stage's anchor (measured usable RPS / the model's at the log's mix) = capacity_factor x this
            # remainder, which the replay does not apply: the log's length mix against the sweep's one ~p95 length,
            # and where the model's own SLO crossing (its TTFT start-up burst) differs from the measured C_max
            correction["anchor_remainder"] = round(float(a["factor"]) * correction["step_time_scale"], 6)
        rows, note = _rows_of(table, t)
        t_arr = rows.column("arrival_s").to_numpy().astype(np.float64)
        # busiest-hour: each fleet of the plan is tested on its own busiest hour (the tier's rows; the log's for
        # a pooled plan), the hour sim.trace.busiest_hour picks and the benchmark plan samples; all / START:END:
        # the same window of the log for every tier
        t_lo, t_hi = busiest_hour(t_arr) if (kind == "busiest-hour" and len(t_arr)) else (lo, hi)
        trace = trace_from_arrow(rows, t_lo, t_hi, t_lo)
        context = float(np.percentile(trace.input_tokens + trace.output_tokens, 95)) if len(trace) else 8192.0
        cfg, kv_source = _engine_config(t, model, gpu, memory_json, sec["engine"], context)
        tw = window_dict(kind, t_lo, t_hi, first, t_arr, clock)
        tw["requests"] = len(trace)
        if len(trace) == 0:
            warnings.append(f"replay_window_empty: tier {name} has no request in the replay window ({window_text})")
        inputs.append(
            fleet_replay.TierInput(
                tier=name,
                cost=cost,
                cfg=cfg,
                trace=trace,
                formula_replicas=int(t["instances_with_headroom"]),
                rate_scale=1.0 + float(t["headroom"]),
                overhead_s=overhead_s,
                basis=coeffs.basis,
                coefficients_source=coeffs_source,
                deployment=deployment,
                kv_source=kv_source,
                window=tw,
                note=note,
                correction=correction,
            )
        )
    if all(len(x.trace) == 0 for x in inputs):
        note = f"no tier of the plan has a request in the replay window ({window_text})"
        return None, note, [*warnings, f"replay_window_empty: {note}"]
    if kind == "busiest-hour" and len({(x.window["start_s"], x.window["end_s"]) for x in inputs}) > 1:
        live = [x.window for x in inputs if x.window["requests"]]
        window = {
            **window,
            "start_s": min(w["start_s"] for w in live),
            "end_s": max(w["end_s"] for w in live),
            "requests": sum(w["requests"] for w in live),
            "first_arrival": min((w["first_arrival"] for w in live if w["first_arrival"]), default=None),
            "last_arrival": max((w["last_arrival"] for w in live if w["last_arrival"]), default=None),
            "first_arrival_s": min(w["first_arrival_s"] for w in live),
            "last_arrival_s": max(w["last_arrival_s"] for w in live),
            "per_tier": True,
            "note": "each tier's fleet replays its own busiest hour (per_tier.window); this spans them all",
        }
    else:
        window = {**window, "requests": sum(x.window["requests"] for x in inputs), "per_tier": False}
    replay = fleet_replay.replay_fleet(inputs, router, sec["slo"], window)
    for name, r in replay["per_tier"].items():
        if r["passes"] is False:
            warnings.append(
                f"replay_fails: tier {name}: the formula's {r['formula_replicas']} replicas miss the SLO on the "
                f"busiest window at x{r['rate_scale']:.3g} the logged rate (TTFT p99 {r['ttft_p99_ms']} ms, ITL p99 "
                f"{r['itl_p99_ms']} ms); smallest N meeting it: {r['min_replicas_meeting_slo']}"
            )
    return replay, None, warnings
