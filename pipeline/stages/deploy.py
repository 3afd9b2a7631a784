"""The deploy stage: the adopted plan's metrics -> metrics/deploy.json and data/deploy/<tier>.yaml (the deployment sheet)."""

from __future__ import annotations

from typing import Any

from pipeline import catalog, deploy, io, params, paths, validation
from pipeline.layout import Layout

SECTIONS = ("engine",)
INPUTS = ("fleet", "operating_point", "memory", "workload", "validation")


def validated(sections: dict[str, Any]) -> dict[str, Any]:
    """The stage's params sections, validated once (defaults filled in)."""
    return {name: params.validate_section(name, sections.get(name)) for name in SECTIONS}


def profile_at(layout: Layout, engine: dict[str, Any]) -> deploy.ProfileAt:
    """pipeline.memory's engine profile of one deployment (the memory stage's settings: params `engine`), for a
    fleet at another TP than the one metrics/memory.json sized; None when the catalog lacks the model or GPU."""
    from pipeline import memory, parallelism
    from pipeline.errors import InputError

    settings = memory.EngineSettings.from_params(engine)

    def at(model: str, gpu: str, weights: str, kv: str, tp: int, pp: int, context: float) -> dict[str, Any] | None:
        try:
            m = catalog.load_model(model, layout.root)
            g = catalog.load_gpus(layout.root).get(gpu)
        except InputError:
            return None
        if g is None:
            return None
        prof = memory.engine_profile(m, g, weights, kv, tp, pp, parallelism.expert_parallel(m, tp), context, settings)
        out = io.rounded(prof.as_dict())
        out.pop("formula", None)
        return out

    return at


def load(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """The sheet recomputed from metrics/*.json and the catalog, nothing written."""
    layout = layout or Layout(paths.ROOT)
    sec = validated(sections)
    docs = io.read_metrics(layout.root, INPUTS)
    repos = {name: card.hf_repo for name, card in catalog.load_model_cards(layout.root).items() if card.hf_repo}
    return deploy.build(
        docs["fleet"],
        docs["operating_point"],
        docs["memory"],
        docs["workload"],
        docs["validation"],
        repos,
        sec["engine"],
        validation.BANDS,
        profile_at(layout, sec["engine"]),
    )


def run(sections: dict[str, Any], layout: Layout | None = None) -> dict[str, Any]:
    """Build the sheet (every input checked first), then write data/deploy/<tier>.yaml per tier, drop the YAML of
    tiers no longer in the plan, and write metrics/deploy.json, each atomically."""
    layout = layout or Layout(paths.ROOT)
    sheet = load(sections, layout)
    texts = {layout.root / t["file"]: deploy.to_yaml(t) for t in sheet["tiers"].values()}
    folder = layout.deploy_dir
    for path, text in texts.items():
        io.write_text(path, text)
    if folder.is_dir() and not io.read_only():
        for stale in sorted(folder.glob("*.yaml")):
            if stale not in texts:
                stale.unlink()
    io.write_json(layout.deploy_json, sheet)
    return sheet
