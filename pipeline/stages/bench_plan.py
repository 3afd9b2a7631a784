"""The bench_plan stage (step 7's input side, issue 14): what to measure next, ready to run.

After the report stage: metrics/tco.json's chosen plan (one deployment per tier) and the top
`bench_plan_io.DEFAULT_TOP` of its `benchmark_next` ranking each get data/benchmark_plan/<candidate>/
(trace.jsonl in AIPerf's mooncake_trace format, burst.jsonl, commands.sh, manifest.yaml, README.md;
pipeline.bench_plan), the same files `sizing bench-plan` writes, and metrics/benchmark_plan.json lists them. Folders of candidates an earlier run planned
and this one does not are removed, after every new plan is built and written.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from pipeline import bench_plan_io, io, paths
from pipeline.layout import Layout

BURST_MULTIPLIER = 2.5
"""The step burst's multiple of one replica's peak rate (bench_plan.BURST_MULTIPLIERS: 2-3 x)."""


def run(layout: Layout | None = None) -> dict[str, Any]:
    """Build every plan, write data/benchmark_plan/ and metrics/benchmark_plan.json, drop stale plan folders;
    returns what the report shows."""
    layout = layout or Layout(paths.ROOT)
    tco = bench_plan_io.read_metrics(layout.root)["tco"]
    plans = bench_plan_io.build_plans(layout.root, None, bench_plan_io.DEFAULT_TOP, BURST_MULTIPLIER)
    out = layout.benchmark_plan_dir
    folders = bench_plan_io.write_plans(plans, out)
    stale = [] if io.read_only() else bench_plan_io.stale_folders(out, folders)  # opened by hand: nothing removed
    for d in stale:
        shutil.rmtree(d)
        # on stderr only: what an earlier run left behind is history, and the outputs stay the same bytes for the
        # same inputs whatever was there before
        print(f"note: removed {layout.relative(d)}: no longer planned", file=sys.stderr)
    ranking = {r.get("candidate"): r for r in (tco.get("benchmark_next") or []) if isinstance(r, dict)}
    for tier in (tco.get("per_tier_candidates") or {}).values():
        for r in (tier or {}).get("benchmark_next") or []:
            if isinstance(r, dict):
                ranking.setdefault(r.get("candidate"), r)
    cand_rows = bench_plan_io.rows_by_id(tco)
    adopted = {r.get("candidate"): r for r in (tco.get("per_tier") or {}).values() if isinstance(r, dict)}
    rows = []
    for folder, plan in zip(folders, plans, strict=True):
        cid = plan.candidate.id
        rank = ranking.get(cid) or {}
        row = {**(cand_rows.get(cid) or {}), **(adopted.get(cid) or {})}  # the chosen fleet's priced row first
        rows.append(
            {
                **plan.facts,
                "folder": layout.relative(folder),
                "tier": plan.candidate.tier,
                "model": plan.candidate.model,
                "gpu": plan.candidate.gpu,
                "tp": plan.candidate.tp,
                "pp": plan.candidate.pp,
                "weights": plan.candidate.weight_dtype,
                "kv": plan.candidate.kv_dtype,
                "engine": plan.candidate.engine,
                "basis": rank.get("basis") or row.get("basis"),
                "usable_rps": row.get("usable_rps", rank.get("usable_rps")),
                "monthly_usd": row.get("monthly_usd", rank.get("monthly_usd")),
                "interval": row.get("interval", rank.get("interval")),
                "expected_saving_usd_per_month": rank.get("expected_saving_usd_per_month"),
                "p_beats_chosen": rank.get("p_beats_chosen"),
                "score": rank.get("score"),
                "commands": plan.commands,
            }
        )
    same_as = {twin: p.candidate.id for p in plans for twin in p.facts.get("same_as") or []}
    doc = {
        "plans": [{k: v for k, v in r.items() if k != "commands"} for r in rows],
        "same_as": dict(sorted(same_as.items())),
        "out": layout.relative(out),
        "top": bench_plan_io.DEFAULT_TOP,
        "burst_multiplier": BURST_MULTIPLIER,
        "definitions": {
            "serving_instances": "instances with the safety factor, before headroom and spares: they share the peak",
            "peak_rps": "one replica's peak: the tier's sizing rate / serving_instances (the trace and the burst)",
            "levels": "the closed-loop sweep's concurrencies: 1 past 1.5 x the predicted knee and C_max",
            "window": "the log's busiest hour (sim.trace.busiest_hour, as the fleet replay takes it)",
            "same_as": "benchmark_next candidates not planned: the plan named is the same benchmark (same tier, GPU, "
            "TP, PP, usable RPS and monthly cost in metrics/tco.json)",
            "basis": "the curve the candidate is priced on (metrics/tco.json): the ranking's, else the tco row's",
        },
    }
    io.write_json(layout.benchmark_plan_json, doc)
    return {**doc, "plans": rows, "removed": [layout.relative(d) for d in stale]}
