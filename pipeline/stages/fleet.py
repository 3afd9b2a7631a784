"""The fleet stage (step 11): workload, tiers and operating points -> metrics/fleet.json."""

from __future__ import annotations

from typing import Any

from pipeline import catalog, fleet, io, params, paths
from pipeline.layout import Layout


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in fleet.SECTIONS}


def run(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Read the profile, the tiers and the operating points, size every fleet, write metrics/fleet.json atomically."""
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
    io.write_json(layout.fleet_json, result)
    return result
