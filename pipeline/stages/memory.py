"""The memory stage (steps 2 and 4-6): the workload profile and the catalog -> metrics/memory.json and
data/interim/predicted_curve.parquet (the roofline curves step 7 overlays on measured ones)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import candidates, catalog, io, params, paths
from pipeline.errors import ParamsError
from pipeline.layout import Layout


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in candidates.SECTIONS}


def profile(layout: Layout) -> dict[str, Any]:
    """metrics/workload.json; a missing one says to run the workload stage."""
    path = layout.workload_json
    if not path.exists():
        raise ParamsError(f"{path} not found: run the workload stage first (dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def compute(sections: dict[str, Any], layout: Layout) -> candidates.Plan:
    """The plan from validated sections: every candidate for every target, the catalog read from `layout`."""
    return candidates.plan(
        profile(layout), sections, catalog.load_gpus(layout.root), lambda name: catalog.load_model(name, layout.root)
    )


def run(sections: dict[str, Any], layout: Layout | None = None) -> candidates.Plan:
    """Validate the catalogs (great-expectations), plan, write metrics/memory.json and the predicted curves."""
    from pipeline import quality

    layout = layout or Layout(paths.ROOT)
    prof = profile(layout)  # first: a missing profile names the stage to run first
    sec = validated(sections)
    quality.validate_catalog(layout.gpus_csv)
    result = candidates.plan(
        prof, sec, catalog.load_gpus(layout.root), lambda name: catalog.load_model(name, layout.root)
    )
    document, rows = result.metrics(), result.curve_rows()  # both computed before the first write
    io.write_json(layout.memory_json, document)
    write_curve(layout.predicted_curve_parquet, rows)
    return result


def load(sections: dict[str, Any], layout: Layout | None = None) -> candidates.Plan:
    """The same plan, recomputed without writing (the step 4-6 notebooks, after `run` wrote the outputs)."""
    layout = layout or Layout(paths.ROOT)
    return compute(validated(sections), layout)


def workload(layout: Layout | None = None) -> dict[str, Any]:
    """metrics/workload.json, for the notebooks' charts."""
    return io.read_metrics((layout or Layout(paths.ROOT)).root, ("workload",))["workload"]


def write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    """data/interim/predicted_curve.parquet, atomically (a table with no rows keeps its `candidate` column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows) if rows else pa.table({"candidate": pa.array([], pa.string())})
    with io.atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
