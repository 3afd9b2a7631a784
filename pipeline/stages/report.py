"""The report stage: step 12 (metrics/tco.json) and what the finance and scenario reports load.

`run` is step 12 (notebook 12_tco); `load` is what the finance and scenario notebooks show; the
runner then writes metrics/summary.json and the cost plot (pipeline/run.py `_after_report`).
"""

from __future__ import annotations

from typing import Any

from pipeline import catalog, io, params, paths, report, tco
from pipeline.errors import InputError
from pipeline.layout import Layout
from pipeline.previous import previous_metrics


def validated(names: tuple[str, ...], sections: dict[str, Any]) -> dict[str, Any]:
    """The named params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in names}


def predicted_curves(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    """data/interim/predicted_curve.parquet (the memory stage's roofline curves), rows by candidate."""
    import pyarrow.parquet as pq

    curves: dict[str, list[dict[str, Any]]] = {}
    for r in pq.read_table(layout.predicted_curve_parquet).to_pylist():
        curves.setdefault(r["candidate"], []).append(r)
    return curves


def run(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Step 12: read the memory, curve, fleet and tier metrics; price every plan; write metrics/tco.json atomically."""
    layout = layout or Layout(paths.ROOT)
    sec = validated(tco.SECTIONS, sections)
    inputs = io.read_metrics(layout.root, ("memory", "operating_point", "fleet", "tiers"))
    pr = tco.Pricing(inputs["memory"], predicted_curves(layout), sec["tco"], sec["fleet"], sec["slo"], prices(layout))
    try:
        result = tco.plan(pr, inputs["operating_point"], inputs["fleet"], inputs["tiers"])
    except tco.NoSweepError as exc:  # no sweep at all: the one line names what to benchmark; nothing is written
        # (exc.document is the tco.json-shaped list the benchmark plan writer reads; the runner knows InputError)
        raise InputError(str(exc)) from None
    except ValueError as exc:  # fleet.size's own checks (a usable RPS of 0 or inf): one clear line, not a traceback
        raise InputError(f"metrics/operating_point.json, metrics/fleet.json: {exc}") from None
    io.write_json(layout.tco_json, result)
    return result


def prices(layout: Layout | None = None) -> list[catalog.Price]:
    """data/catalog/prices.csv (checked)."""
    return catalog.load_prices((layout or Layout(paths.ROOT)).root)


def load(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Everything the finance and scenario notebooks show: every metrics document, the sections, last review's."""
    layout = layout or Layout(paths.ROOT)
    sec = validated(report.SECTIONS, sections)
    m = io.read_metrics(layout.root, report.METRIC_FILES)
    old, where = previous_metrics(sec["report"]["previous"], layout.root)
    return {"metrics": m, "sections": sec, "previous": old, "previous_where": where}
