"""The workload stage (step 1): the traffic log (workload.source) -> data/interim/requests.parquet,
metrics/workload.json and the step 1 plot data (requests/s over time, the length CDFs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import io, params, paths, traffic, workload
from pipeline.contracts import WorkloadDoc
from pipeline.layout import Layout

SECTIONS = ("workload", "slo")


def run(sections: dict[str, Any], layout: Layout | None = None, progress: bool = True) -> workload.StageResult:
    """Ingest + validate + profile, then write requests.parquet, workload.json and the plots.

    Both outputs are staged beside their targets and renamed only when everything succeeded.
    """
    from pipeline import plots  # pandas: imported when the stage writes its plots, not by `sizing profile`

    layout = layout or Layout(paths.ROOT)
    w = params.validate_section("workload", sections.get("workload"))
    slo = params.validate_section("slo", sections.get("slo"))
    settings = workload.ProfileSettings.from_params(w, slo)
    source = traffic.open_source(w["source"], w["pattern"], layout.root)
    with io.atomic_path(layout.requests_parquet, ".parquet") as staged:
        ingested = traffic.ingest_with(source, staged, w, traffic.Progress(progress))
        profile = workload.build_profile(ingested, staged, settings, log_inputs(ingested, layout.root))
        profile = WorkloadDoc.from_dict(profile).to_dict()  # the typed contract, key for key
        charts = workload.chart_data(staged)
        io.write_json(layout.workload_json, profile)
        plots.write_workload(layout.root, charts, profile)  # dvc.yaml plots: requests/s over time, length CDFs
    return workload.StageResult(profile, ingested, charts)


def log_inputs(ingested: Any, root: Path | None = None) -> dict[str, Any]:
    """Where an ingested log came from, as metrics/workload.json's provenance opens: its files (relative to
    `root`, default the project), layout, column mapping and timestamp unit, and whether it is the shipped
    sample (the reports' SAMPLE banner)."""
    from pipeline import sample

    return {**ingested.provenance(root), "sample": sample.is_sample(ingested.source.files, root)}
