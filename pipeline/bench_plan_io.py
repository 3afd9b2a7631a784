"""The benchmark plan's inputs and outputs (`sizing bench-plan`): read the metrics, build, write.

Reads metrics/tco.json (`benchmark_next`, the plan and its per-tier choice, every candidate's deployment),
metrics/operating_point.json (knee, C_max, the SLO, the engine of the measured sweep), metrics/workload.json
(the peak rate: each tier's sizing rate), metrics/tiers.json (each tier's model), params.yaml (how rows map to
tiers) and data/interim/requests.parquet (the log). Everything is read and every plan built before the first
file is written; each file is written atomically (pipeline.io), and the same inputs give the same bytes.

Per candidate, `<out>/<folder>/` holds trace.jsonl, burst.jsonl, commands.sh, manifest.yaml and README.md,
the folder named by `bench_plan.safe_name(candidate id)`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from pipeline import bench_plan, io
from pipeline.errors import InputError

METRICS = ("tco", "operating_point", "workload", "tiers")
DEFAULT_TOP = 3
FILES = ("trace.jsonl", "burst.jsonl", "commands.sh", "manifest.yaml", "README.md")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"{path}: not found; run the pipeline first (dvc repro) or pass --root")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def read_metrics(root: Path) -> dict[str, dict[str, Any]]:
    """The four metrics files the plan needs, each checked to be a JSON object."""
    return {name: _read_json(root / "metrics" / f"{name}.json") for name in METRICS}


def _rows_by_id(tco: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for row in tco.get("per_candidate") or []:
        if isinstance(row, dict) and isinstance(row.get("candidate"), str):
            rows[row["candidate"]] = row
    for tier in (tco.get("per_tier_candidates") or {}).values():
        for row in (tier or {}).get("candidates") or []:
            if isinstance(row, dict) and isinstance(row.get("candidate"), str):
                rows[row["candidate"]] = row
    return rows


def _candidate_id(tier: str, row: dict[str, Any]) -> str:
    return f"{tier}/{row['gpu']}/w-{row['weights']}/kv-{row['kv']}"


def chosen_ids(tco: dict[str, Any]) -> list[str]:
    """The chosen plan's deployments: one per tier when routed, the pooled candidate otherwise."""
    if tco.get("plan") == "routed" and isinstance(tco.get("per_tier"), dict):
        return [_candidate_id(t, row) for t, row in sorted(tco["per_tier"].items()) if isinstance(row, dict)]
    pooled = tco.get("pooled") or {}
    if isinstance(pooled.get("candidate"), str):
        return [pooled["candidate"]]
    chosen = tco.get("chosen")
    return [chosen] if isinstance(chosen, str) and "/" in chosen else []


def next_ids(tco: dict[str, Any], top: int) -> list[str]:
    """The top `top` of `benchmark_next`: per tier when the plan is routed, the pooled list otherwise."""
    out: list[str] = []
    if tco.get("plan") == "routed" and isinstance(tco.get("per_tier_candidates"), dict):
        for _, tier in sorted(tco["per_tier_candidates"].items()):
            out += [r["candidate"] for r in ((tier or {}).get("benchmark_next") or [])[:top] if "candidate" in r]
    else:
        out += [r["candidate"] for r in (tco.get("benchmark_next") or [])[:top] if "candidate" in r]
    return out


def _model_of(tier: str, metrics: dict[str, dict[str, Any]]) -> str:
    tco, tiers = metrics["tco"], metrics["tiers"]
    row = (tco.get("per_tier") or {}).get(tier) or {}
    if isinstance(row.get("model"), str):
        return row["model"]
    entry = (tiers.get("tiers") or {}).get(tier) or (tiers.get("pooled") if tier == "all" else None) or {}
    if isinstance(entry.get("model"), str):
        return entry["model"]
    raise InputError(f"metrics/tiers.json: tiers.{tier}.model: missing; expected the model tier {tier} serves")


def _op_of(tier: str, op: dict[str, Any]) -> dict[str, Any]:
    if tier != "all" and isinstance((op.get("per_tier") or {}).get(tier), dict):
        return op["per_tier"][tier]
    return op


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _candidate(cid: str, row: dict[str, Any], role: str, metrics: dict[str, Any], root: Path) -> bench_plan.Candidate:
    from pipeline import catalog

    tier = cid.split("/", 1)[0]
    op = _op_of(tier, metrics["operating_point"])
    man = op.get("manifest") or {}
    model = _model_of(tier, metrics)
    cards = catalog.load_model_cards(root)
    card = cards.get(model)
    tp = row.get("tp")
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InputError(f"metrics/tco.json: {cid}: tp = {tp!r}; expected an integer >= 1")
    return bench_plan.Candidate(
        id=cid,
        tier=tier,
        model=model,
        gpu=str(row["gpu"]),
        tp=tp,
        pp=int(row.get("pp") or 1),
        weight_dtype=str(row["weights"]),
        kv_dtype=str(row["kv"]),
        engine=str(row.get("engine") or man.get("engine") or "vllm"),
        engine_version=row.get("engine_version") or man.get("engine_version"),
        hf_repo=(card.hf_repo or None) if card else None,
        instances=int(row.get("instances") or 1),
        role=role,
    )


def _knee_cmax(row: dict[str, Any], op: dict[str, Any]) -> tuple[float | None, float | None]:
    """The candidate's own predicted knee / C_max when tco.json carries them, else the measured curve's, scaled
    by the candidate's roofline concurrency at the SLO over the measured C_max."""
    op_knee, op_cmax = _number(op.get("knee")), _number(op.get("c_max"))
    c_max = _number(row.get("c_max")) or _number(row.get("roofline_concurrency_at_slo")) or op_cmax
    knee = _number(row.get("knee"))
    if knee is None and op_knee is not None:
        knee = op_knee * (c_max / op_cmax) if c_max and op_cmax else op_knee
    if row.get("basis") == "measured" and op_cmax:
        c_max, knee = op_cmax, op_knee
    return knee, c_max


def _peak_rps(tier: str, workload: dict[str, Any]) -> float:
    src = workload if tier == "all" else (workload.get("tiers") or {}).get(tier) or {}
    rate = _number((src.get("rps") or {}).get("sizing_rate"))
    if rate is None or rate <= 0:
        where = "rps.sizing_rate" if tier == "all" else f"tiers.{tier}.rps.sizing_rate"
        raise InputError(f"metrics/workload.json: {where}: missing or not > 0; expected the tier's peak rate")
    return rate


def _tier_table(requests: Path, params_path: Path, tiers: set[str]) -> dict[str, dict[str, Any]]:
    """The log's columns per tier (and 'all'), tiers named as the workload stage names them."""
    import duckdb

    from pipeline import params, workload

    if not requests.exists():
        raise InputError(f"{requests}: not found; run the ingest stage first (dvc repro) or pass --root")
    data = params.load(params_path) if params_path.exists() else {}
    settings = workload.ProfileSettings.from_params(params.section("workload", data), params.section("slo", data))
    con = duckdb.connect()
    scan = "read_parquet($path)"
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}", {"path": str(requests)}).fetchall()]
        missing = [c for c in ("arrival_s", "input_tokens", "output_tokens") if c not in cols]
        if missing:
            raise InputError(f"{requests}: {missing[0]}: column missing; expected the normalized request table")
        expr, _, values = workload.tier_expression(cols, settings)
        pick = "arrival_s, input_tokens, output_tokens" + (", hash_ids" if "hash_ids" in cols else "")
        case_sql = expr or "'all'"  # workload.tier_expression: a CASE over quoted columns, its values bound below
        df = con.execute(
            f"SELECT {pick}, {case_sql} AS tier FROM {scan} ORDER BY arrival_s",
            {"path": str(requests), **values},
        ).df()
    except duckdb.Error as exc:
        raise InputError(f"{requests}: cannot read ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    out: dict[str, dict[str, Any]] = {}
    for tier in sorted(tiers):
        part = df if tier == "all" else df[df["tier"] == tier]
        if part.empty:
            raise InputError(f"{requests}: tier: no rows of tier '{tier}'; expected the tiers of metrics/tiers.json")
        out[tier] = {c: part[c].tolist() for c in part.columns if c != "tier"}
    return out


def build_plans(
    root: Path, candidate: str | None = None, top: int = DEFAULT_TOP, burst_multiplier: float = 2.5
) -> list[bench_plan.Plan]:
    """Every plan `sizing bench-plan` writes: --candidate alone, else the chosen ones and the top of benchmark_next."""
    from pipeline import paths

    metrics = read_metrics(root)
    tco = metrics["tco"]
    rows = _rows_by_id(tco)
    chosen = chosen_ids(tco)
    if candidate is not None:
        if candidate not in rows:
            valid = ", ".join(sorted(rows)) or "(none: metrics/tco.json lists no candidates)"
            raise InputError(f"--candidate {candidate!r}: not a candidate of metrics/tco.json; valid ids: {valid}")
        wanted = [candidate]
    else:
        wanted = list(dict.fromkeys([*chosen, *next_ids(tco, top)]))
    if not wanted:
        raise InputError("metrics/tco.json: no chosen plan and no benchmark_next; expected candidates to plan")
    unknown = [c for c in wanted if c not in rows]
    if unknown:
        raise InputError(f"metrics/tco.json: {unknown[0]}: named by the plan but not among the candidates")
    requests = root / "data" / "interim" / "requests.parquet"
    tables = _tier_table(requests, root / "params.yaml", {c.split("/")[0] for c in wanted})
    plans = []
    for cid in wanted:
        row = rows[cid]
        role = "chosen" if cid in chosen else "benchmark_next"
        cand = _candidate(cid, row, role, metrics, root)
        op = _op_of(cand.tier, metrics["operating_point"])
        knee, c_max = _knee_cmax(row, op)
        slo = metrics["operating_point"].get("slo") or {}
        plans.append(
            bench_plan.build_plan(
                cand,
                tables[cand.tier],
                knee=knee,
                c_max=c_max,
                peak_rps=_peak_rps(cand.tier, metrics["workload"]),
                slo=slo,
                burst_multiplier=burst_multiplier,
                label=f"{paths.display_path(requests, root)} (tier {cand.tier}, for {cid})",
            )
        )
    return plans


def manifest_text(manifest: dict[str, Any]) -> str:
    """manifest.yaml's text: keys in the plan's order, block style."""
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def plan_files(plan: bench_plan.Plan) -> dict[str, str]:
    """File name -> text for one plan (what write_plans writes)."""
    return {
        "trace.jsonl": bench_plan.jsonl(plan.trace.records),
        "burst.jsonl": bench_plan.jsonl(plan.burst),
        "commands.sh": plan.commands,
        "manifest.yaml": manifest_text(plan.manifest),
        "README.md": plan.readme,
    }


def write_plans(plans: list[bench_plan.Plan], out: Path) -> list[Path]:
    """Write each plan to out/<folder>/ (files atomically); return the folders. All texts are made first."""
    texts = [(out / p.candidate.folder, plan_files(p)) for p in plans]
    for folder, files in texts:
        for name, text in files.items():
            io.write_text(folder / name, text)
    return [folder for folder, _ in texts]
