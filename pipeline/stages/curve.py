"""The curve stage (steps 7-10): the benchmark sweeps (curve.source), the workload and its tiers ->
data/interim/curves.parquet, metrics/operating_point.json and the latency-vs-load plot data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import curve as cv
from pipeline import final_curve, io, params, paths, plots, routing
from pipeline.benchmarks import read_paths, read_source
from pipeline.benchmarks.common import COLUMNS
from pipeline.errors import ParamsError
from pipeline.layout import Layout

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


def compute(sec: dict[str, Any], layout: Layout, validate: bool = True) -> final_curve.CurveResult:
    """The stage's result from validated sections, without writing anything."""
    settings = cv.Settings.from_params(sec["curve"], sec["slo"])
    sweeps = read_source(layout.root / sec["curve"]["source"], layout.root)
    demands = routing.demands(io.read_metrics(layout.root, ("tiers",))["tiers"])["tiers"]
    return final_curve.analyze(
        sweeps,
        workload(layout),
        settings,
        sec,
        layout.root,
        require_manifest=True,
        validate=validate,
        tier_demands=demands,
    )


def run(sections: dict[str, Any], layout: Layout | None = None) -> final_curve.CurveResult:
    """Validate and analyze every sweep, then write curves.parquet, operating_point.json and the plots atomically."""
    layout = layout or Layout(paths.ROOT)
    sec = validated(sections)
    result = compute(sec, layout)
    slo = {"ttft_p99_ms": result.settings.ttft_p99_ms, "itl_p99_ms": result.settings.itl_p99_ms}
    overlays = final_curve.overlays(result, sec, layout.root)  # everything that can fail, before the first write
    plot_data = plots.latency_vs_load(result.table, overlays, slo)
    document = result.metrics()
    write_table(layout.curves_parquet, result.table)
    io.write_json(layout.operating_point_json, document)
    plots.write_curve(layout.root, plot_data)
    return result


def load(sections: dict[str, Any], layout: Layout | None = None) -> final_curve.CurveResult:
    """The same result, recomputed without writing or re-running the suites (the step 8-10 notebooks, after `run`)."""
    return compute(validated(sections), layout or Layout(paths.ROOT), validate=False)


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
