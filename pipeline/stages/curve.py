"""The curve stage (steps 7-10): the benchmark sweeps (curve.source), the workload and its tiers ->
data/interim/curves.parquet, metrics/operating_point.json and the latency-vs-load plot data.

With the memory stage's candidates (metrics/memory.json), the calibrate stage's coefficients
(metrics/calibration.json, never refitted here) and the log's rows (data/interim/requests.parquet),
every candidate also gets a curve at its fleet's own lengths (pipeline/engine_curves.py):
op.candidates and data/interim/candidate_curves.parquet.

With no sweep at all in curve.source (pipeline.stages.no_sweep), `run` writes the benchmark plan of the three
candidates to benchmark first (data/benchmark_plan/) and stops with one line; nothing else is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import curve as cv
from pipeline import final_curve, io, params, paths, plots, routing
from pipeline.benchmarks import read_paths, read_source
from pipeline.benchmarks.common import COLUMNS
from pipeline.errors import InputError, ParamsError
from pipeline.layout import Layout, display_path
from pipeline.stages.no_sweep import no_sweep

TEXT_COLUMNS = ("curve", "tool", "file", "load_kind", "itl_kind", "e2e_source", "dataset", "goodput_source")


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in final_curve.SECTIONS}


def workload(layout: Layout) -> final_curve.Workload:
    """What the selection needs from metrics/workload.json; a missing one says to run the workload stage."""
    path = layout.workload_json
    if not path.exists():
        raise ParamsError(f"{path} not found: run the workload stage first (dvc repro)")
    return final_curve.Workload.from_profile(json.loads(path.read_text(encoding="utf-8")))


def compute(
    sec: dict[str, Any], layout: Layout, validate: bool = True, candidates: bool = True
) -> final_curve.CurveResult:
    """The stage's result from validated sections, without writing anything (`candidates`: every candidate's
    engine-model curve too, and the sizing of a fleet whose measured curve is beyond curve.max_length_mismatch)."""
    settings = cv.Settings.from_params(sec["curve"], sec["slo"])
    sweeps = read_source(layout.root / sec["curve"]["source"], layout.root)
    tiers_doc = io.read_metrics(layout.root, ("tiers",))["tiers"]
    demands = routing.demands(tiers_doc)
    result = final_curve.analyze(
        sweeps,
        workload(layout),
        settings,
        sec,
        layout.root,
        require_manifest=True,
        validate=validate,
        tier_demands=demands["tiers"],
    )
    if candidates:
        candidate_curves(result, sec, layout, demands)
    return result


def candidate_curves(
    result: final_curve.CurveResult, sec: dict[str, Any], layout: Layout, demands: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """op.candidates: reads metrics/memory.json, metrics/calibration.json and data/interim/requests.parquet
    (each missing one is an InputError naming it, before anything is computed), then `evaluate_candidates`."""
    memory_doc = _read_json(layout.memory_json, "the memory stage (dvc repro memory)")
    cal_path = layout.metrics_json("calibration")
    cal_doc = _read_json(cal_path, "the calibrate stage (dvc repro calibrate): the curve stage reads its coefficients")
    if not layout.requests_parquet.exists():
        raise InputError(
            f"{display_path(layout.requests_parquet, layout.root)}: not found; run the workload stage first "
            "(dvc repro workload): every candidate's curve samples its lengths from the log"
        )
    fleets_in = [("all", demands["pooled"]), *sorted(demands["tiers"].items())]
    rows = tier_lengths(layout, sec.get("workload"), fleets_in)
    return evaluate_candidates(
        result, memory_doc, cal_doc, rows, demands, layout.root, display_path(cal_path, layout.root)
    )


def evaluate_candidates(
    result: final_curve.CurveResult,
    memory_doc: dict[str, Any],
    cal_doc: Any,
    rows: dict[str, tuple[Any, Any, str]],
    demands: dict[str, Any],
    root: Path,
    cal_label: str = "metrics/calibration.json",
) -> dict[str, dict[str, Any]]:
    """Every candidate's curve from the documents and each fleet's (input, output, source) rows; puts op.candidates,
    the candidate level table, each fleet's anchor (model-based candidates priced like for like with its measured
    curve) and the sizing of mismatched fleets into `result` (pipeline.engine_curves)."""
    from pipeline import catalog, engine_curves

    cal = engine_curves.CalibrationDoc.from_document(cal_doc, cal_label)
    gpus = catalog.load_gpus(root)
    fleets = []
    for tier, d in [("all", demands["pooled"]), *sorted(demands["tiers"].items())]:
        ins, outs, source = rows[tier]
        lengths, err = None, None
        try:
            lengths = engine_curves.sample_lengths(ins, outs, source=source)
        except InputError as exc:
            err = str(exc)
        measured = final_curve.fleet_measured(result, tier, d.model, demands["tiers"], gpus)
        for m in measured:
            dep = cal.find(m.model, m.gpu, m.tp, m.pp, m.weights, m.kv)
            if dep is not None and dep.limits.get("kv_blocks"):
                m.kv_blocks = int(dep.limits["kv_blocks"])
        fleets.append(
            engine_curves.Fleet(
                tier, d.model, d.input_tokens.get("p95"), d.output_tokens.get("p95"), lengths, measured, err
            )
        )
    models: dict[str, Any] = {}

    def model(name: str) -> Any:
        if name not in models:
            models[name] = catalog.load_model(name, root)
        return models[name]

    s = result.settings
    cands = engine_curves.build(memory_doc, fleets, cal, s, s.max_length_mismatch, model, gpus)
    anchors = engine_curves.anchor(cands, fleets)  # like for like with each fleet's measured curve
    result.candidate_levels = engine_curves.levels_table(cands)
    final_curve.apply_candidates(result, engine_curves.public(cands), demands["tiers"], anchors)
    return result.candidates or {}


def _read_json(path: Path, producer: str) -> Any:
    if not path.exists():
        raise InputError(f"{path.name}: not found ({path}); run {producer} first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); rerun the stage that writes it"
        ) from exc


def tier_lengths(
    layout: Layout, workload_sec: dict[str, Any] | None, fleets: list[tuple[str, Any]]
) -> dict[str, tuple[Any, Any, str]]:
    """(input, output, source) arrays of each fleet's rows of data/interim/requests.parquet: a routed tier its own
    rows (the workload stage's tier rule, params workload.tiers), the pooled fleet and cascade tiers every row."""
    import numpy as np

    from pipeline import workload as wl
    from pipeline.engine_curves import LENGTH_POOL
    from pipeline.traffic.sources import connect

    path = layout.requests_parquet
    label = display_path(path, layout.root)
    con = connect()
    try:
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet($p)", {"p": str(path)}).fetchall()]
        expr, values = None, {}
        if any(d.role == "routed" for _, d in fleets):
            sec = _workload_section(workload_sec, layout)
            expr, _, values = wl.tier_expression(cols, wl.ProfileSettings.from_params(sec, {"ttft_p99_ms": 1.0}))
        out: dict[str, tuple[Any, Any, str]] = {}
        for tier, d in fleets:
            where, args = "output_tokens > 0", {"p": str(path)}
            src = f"{label}: every row"
            if d.role == "routed" and expr:
                where += f" AND ({expr}) = $tier"
                args |= {**values, "tier": tier}
                src = f"{label}: the rows of tier {tier}"
            got = con.execute(
                f"SELECT input_tokens, output_tokens FROM read_parquet($p) WHERE {where}", args
            ).fetchnumpy()
            ins = np.asarray(got["input_tokens"], np.int64)
            outs = np.asarray(got["output_tokens"], np.int64)
            pool = min(LENGTH_POOL, len(ins))
            out[tier] = (ins, outs, f"{src} ({len(ins):,} requests), {pool:,} sampled, stratified on the prompt length")
        return out
    finally:
        con.close()


def _workload_section(given: dict[str, Any] | None, layout: Layout) -> dict[str, Any]:
    """params workload (for its tier rule): the section passed in, else params.yaml's (the step 7 notebook run by hand)."""
    if given is not None:
        return params.validate_section("workload", given)
    data = params.load(layout.params_yaml) if layout.params_yaml.exists() else {}
    return params.validate_section("workload", params.section("workload", data))


def run(sections: dict[str, Any], layout: Layout | None = None) -> final_curve.CurveResult:
    """Validate and analyze every sweep and every candidate, then write curves.parquet, candidate_curves.parquet,
    operating_point.json and the plots atomically."""
    import time

    started = time.perf_counter()
    layout = layout or Layout(paths.ROOT)
    sec = validated(sections)
    if no_sweep(_source_folder(sec, layout)):
        no_sweep_stop(sec, layout)
    result = compute(sec, layout)
    slo = {"ttft_p99_ms": result.settings.ttft_p99_ms, "itl_p99_ms": result.settings.itl_p99_ms}
    overlays = final_curve.overlays(result, sec, layout.root)  # everything that can fail, before the first write
    plot_data = plots.latency_vs_load(result.table, overlays, slo)
    document = result.metrics()
    write_table(layout.curves_parquet, result.table)
    write_candidate_table(layout.candidate_curves_parquet, result.candidate_levels)
    io.write_json(layout.operating_point_json, document)
    plots.write_curve(layout.root, plot_data)
    result.seconds = time.perf_counter() - started
    return result


def _source_folder(sec: dict[str, Any], layout: Layout) -> Path:
    source = Path(sec["curve"]["source"])
    return source if source.is_absolute() else layout.root / source


FIRST = 3  # how many deployments the no-sweep stop plans


def _tco_section(layout: Layout) -> dict[str, Any]:
    """params tco (provider, pricing, price overrides), from params.yaml: the stage does not track it (a price edit
    never reruns the curve stage); only the no-sweep stop, which writes no tracked output, reads it."""
    data = params.load(layout.params_yaml) if layout.params_yaml.exists() else {}
    return params.validate_section("tco", params.section("tco", data))


def _knee(levels: list[dict[str, Any]], knee_ratio: float) -> float | None:
    """The first simulated concurrency whose TTFT p99 / p50 exceeds curve.knee_ratio (method.md's knee), else None."""
    for lv in levels:
        p50, p99 = lv.get("ttft_p50_ms"), lv.get("ttft_p99_ms")
        if isinstance(p50, int | float) and isinstance(p99, int | float) and p50 > 0 and p99 / p50 > knee_ratio:
            return float(lv["concurrency"])
    return None


def rank_first(
    cands: dict[str, dict[str, Any]], usd_per_gpu_hour: dict[str, float | None], n: int = FIRST
) -> list[tuple[str, dict[str, Any], float | None]]:
    """The `n` candidates to benchmark first with no sweep: those with a usable RPS on their curve, priced ones
    first by USD per hour per usable req/s (GPUs x $/GPU-hour / usable RPS per instance), then the unpriced ones by
    GPUs per usable req/s, then the id. Each: (id, entry, USD per hour per req/s or None)."""
    keyed = []
    for cid, e in sorted(cands.items()):
        rps = e.get("usable_rps")
        if not isinstance(rps, int | float) or not rps > 0:
            continue
        gpus = int(e["tp"]) * int(e.get("pp") or 1)
        price = usd_per_gpu_hour.get(e["gpu"])
        cost = None if price is None else gpus * price / rps
        keyed.append(((cost is None, cost if cost is not None else gpus / rps, cid), cid, e, cost))
    return [(cid, e, cost) for _, cid, e, cost in sorted(keyed, key=lambda k: k[0])[:n]]


def no_sweep_stop(sec: dict[str, Any], layout: Layout) -> None:
    """curve.source holds no sweep at all (issue 14): every memory-stage candidate of the pooled fleet on its
    roofline engine-model curve (no calibration: no pooled fit, so nothing is transferred), the cheapest per usable
    req/s (tco.provider's rules, params.yaml's tco) planned with pipeline.bench_plan_io.write_for_stop into
    data/benchmark_plan/, then an InputError: one line naming them. Writes nothing else (op and parquet kept)."""
    from pipeline import bench_plan_io, catalog, engine_curves, tco

    source = sec["curve"]["source"]
    tiers_doc = io.read_metrics(layout.root, ("tiers",))["tiers"]
    demands = routing.demands(tiers_doc)
    memory_doc = _read_json(layout.memory_json, "the memory stage (dvc repro memory)")
    if not layout.requests_parquet.exists():
        raise InputError(
            f"{display_path(layout.requests_parquet, layout.root)}: not found; run the workload stage first "
            "(dvc repro workload): every candidate's curve samples its lengths from the log"
        )
    d = demands["pooled"]
    ins, outs, label = tier_lengths(layout, sec.get("workload"), [("all", d)])["all"]
    fleet = engine_curves.Fleet(
        "all",
        d.model,
        d.input_tokens.get("p95"),
        d.output_tokens.get("p95"),
        engine_curves.sample_lengths(ins, outs, source=label),
        [],
    )
    gpus = catalog.load_gpus(layout.root)
    models: dict[str, Any] = {}

    def model(name: str) -> Any:
        if name not in models:
            models[name] = catalog.load_model(name, layout.root)
        return models[name]

    s = cv.Settings.from_params(sec["curve"], sec["slo"])
    cands = engine_curves.build(memory_doc, [fleet], None, s, s.max_length_mismatch, model, gpus)
    p = _tco_section(layout)
    prices = catalog.load_prices(layout.root)
    usable = sorted({e["gpu"] for e in cands.values() if isinstance(e.get("usable_rps"), int | float)})
    basis = tco.price_basis(usable, prices, p["pricing"], p["provider"])
    usd = {g: tco.lookup(g, prices, p, basis)["usd_per_gpu_hour"] for g in usable}
    first = rank_first(cands, usd)
    if not first:
        raise InputError(
            f"{source}: no benchmark sweep at all, and no candidate of metrics/memory.json has a usable RPS on its "
            f"roofline curve ({len(cands)} candidates): none meets the SLO; expected a deployment to benchmark"
        )
    rows = [
        {
            "candidate": cid,
            "model": e["model"],
            "gpu": e["gpu"],
            "weights": e["weights"],
            "kv": e["kv"],
            "tp": e["tp"],
            "pp": e.get("pp") or 1,
            "basis": e["basis"],
            "usable_rps": e["usable_rps"],
            "c_max": e["c_max"],
            "knee": _knee(e.get("levels") or [], s.knee_ratio) or e["c_max"],
        }
        for cid, e, _ in first
    ]
    bench_plan_io.write_for_stop(layout.root, rows)
    head, *rest = first
    names = ", ".join(
        [f"{head[0]} (about {head[1]['usable_rps']:.3g} req/s per instance on the roofline)", *(c for c, _, _ in rest)]
    )
    raise InputError(
        f"{source}: no benchmark sweep at all: benchmark {names} first -- the plans are in data/benchmark_plan/; "
        "with no sweep there is no calibration, so tco.allow_transferred cannot price on transferred curves"
    )


def load(sections: dict[str, Any], layout: Layout | None = None, candidates: bool = False) -> final_curve.CurveResult:
    """The same result, recomputed without writing or re-running the suites (the step 8-10 notebooks, after `run`).
    `candidates=True` recomputes every candidate's curve too (report 10 reads them from operating_point.json)."""
    return compute(validated(sections), layout or Layout(paths.ROOT), validate=False, candidates=candidates)


def candidates_document(layout: Layout | None = None) -> dict[str, Any]:
    """metrics/operating_point.json as the stage wrote it (report 10's candidate section reads it)."""
    layout = layout or Layout(paths.ROOT)
    return _read_json(layout.operating_point_json, "the curve stage (dvc repro curve)")


def from_paths(
    paths_: list[Path],
    ttft_ms: float,
    itl_ms: float | None,
    sections: dict[str, Any],
    root: Path,
    workload: final_curve.Workload | None = None,
) -> final_curve.CurveResult:
    """`sizing curve PATH...`: files or folders; folders are sweeps, loose files form one sweep. Writes nothing."""
    sec = validated({**sections, "slo": {"ttft_p99_ms": ttft_ms, "itl_p99_ms": itl_ms}})
    settings = cv.Settings.from_params(sec["curve"], sec["slo"])
    sweeps = read_paths(paths_)  # a folder of sweeps (data/raw/benchmarks/) is read as its sweeps
    return final_curve.analyze(sweeps, workload or final_curve.Workload(), settings, sec, root, require_manifest=False)


def write_candidate_table(path: Path, table: pd.DataFrame | None) -> None:
    """data/interim/candidate_curves.parquet, atomically: one row per candidate x level (id, tier, basis, levels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.engine_curves import levels_table

    df = table if table is not None else levels_table({})
    with io.atomic_path(path, ".parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="zstd")


def write_table(path: Path, table: pd.DataFrame) -> None:
    """data/interim/curves.parquet, atomically: the level table's columns, numbers as float64, text as text or null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = table[list(COLUMNS)].copy()
    for col in df.columns:
        if col not in (*TEXT_COLUMNS, "saturation"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["saturation"] = df["saturation"].astype(bool)
    for col in TEXT_COLUMNS:
        df[col] = df[col].astype("object").where(df[col].notna(), None)
    with io.atomic_path(path, ".parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="zstd")
