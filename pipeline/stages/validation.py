"""The validation stage (step 13): a production window against the benchmark -> metrics/validation.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import io, params, paths, production_window, validation
from pipeline.contracts import ValidationDoc
from pipeline.errors import InputError
from pipeline.layout import Layout


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in validation.SECTIONS}


def run(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Compare the window (validation.source), write metrics/validation.json and production.parquet atomically."""
    layout = layout or Layout(paths.ROOT)
    sec = validated(sections)
    result = evaluate(sec, layout, layout.production_parquet)
    if result["inputs"]["log"] is None:  # scrapes only, or no window: the declared output exists all the same
        production_window.write_empty_production(layout.production_parquet)
    if result["status"] == validation.COMPARED and not _under(Path(sec["validation"]["source"]), layout):
        result["warnings"].append(
            f"{sec['validation']['source']} is outside data/raw/, which dvc tracks for this stage: after changing "
            "the window, rerun step 13 with `dvc repro -f -s validation`"
        )
    result = ValidationDoc.from_dict(result).to_dict()  # the typed contract, key for key
    io.write_json(layout.validation_json, result)
    return result


def evaluate(sec: dict[str, Any], layout: Layout, scratch: Path) -> dict[str, Any]:
    """Step 13 on validated sections: read the window (its request log normalized into `scratch`, its scrapes)
    and the project's operating point, fleet plan, profile and curves, then compare (validation.compare).

    Writes nothing but `scratch` (`sizing validate` passes a temporary file, the stage production.parquet).
    """
    import pyarrow.parquet as pq

    p, w = sec["validation"], sec["workload"]
    if p["source"] is None:
        return validation.no_window()
    folder = Path(p["source"]) if Path(p["source"]).is_absolute() else layout.root / p["source"]
    if not folder.is_dir():
        raise InputError(
            f"{p['source']}: not a folder; validation.source should hold a production window: requests.csv "
            "(with ttft_ms, e2e_ms) and/or scrapes/*.prom (two or more Prometheus scrapes per server)"
        )
    fmt = w["format"] if w["format"] == "generic" else "auto"
    log = production_window.production_log(folder, layout.root, fmt, w["columns"] or None, scratch)
    scr = production_window.scrape_figures(folder, layout.root, p["coarse_bucket_ratio"])
    if log is None and scr is None:
        raise InputError(
            f"{p['source']}: no requests.* log and no scrapes/*.prom; expected at least one production input"
        )
    inputs = io.read_metrics(layout.root, ("operating_point", "fleet", "workload"))
    return validation.compare(sec, log, scr, inputs, pq.read_table(layout.curves_parquet).to_pylist())


def benchmark_levels(window: dict[str, Any], ttft_percentile: str | None, layout: Layout | None = None) -> Any:
    """The chart's benchmark line (validation.benchmark_levels) from data/interim/curves.parquet; None without a percentile."""
    import pyarrow.parquet as pq

    if ttft_percentile is None:
        return None
    layout = layout or Layout(paths.ROOT)
    return validation.benchmark_levels(window, ttft_percentile, pq.read_table(layout.curves_parquet).to_pandas())


def _under(path: Path, layout: Layout) -> bool:
    full = (path if path.is_absolute() else layout.root / path).resolve()
    return full.is_relative_to(layout.raw.resolve())
