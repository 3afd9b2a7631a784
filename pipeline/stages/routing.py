"""The routing stage (step 3): metrics/workload.json -> metrics/tiers.json."""

from __future__ import annotations

from typing import Any

from pipeline import catalog, io, params, paths, routing
from pipeline.layout import Layout


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in routing.SECTIONS}


def run(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Read the workload profile, plan the tiers, write metrics/tiers.json atomically; returns the document."""
    layout = layout or Layout(paths.ROOT)
    sec = validated(sections)
    profile = io.read_metrics(layout.root, ("workload",))["workload"]
    result = routing.plan(profile, sec, lambda name: catalog.load_model(name, layout.root).total_params)
    io.write_json(layout.tiers_json, result)
    return result


def read(layout: Layout) -> dict[str, Any]:
    """metrics/tiers.json as Demand objects: {'pooled': Demand, 'tiers': {name: Demand}, ...}."""
    return routing.demands(io.read_metrics(layout.root, ("tiers",))["tiers"])
