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


def rows_by_id(tco: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every candidate row of tco.json by id: per_candidate and each tier's per_tier_candidates."""
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


def _adopted_plan(tco: dict[str, Any]) -> str:
    plan = tco.get("plan", tco.get("chosen"))
    return plan if isinstance(plan, str) else "pooled"


def chosen_ids(tco: dict[str, Any]) -> list[str]:
    """The adopted plan's deployments, as tco.json names them: `chosen_candidates` {tier: id} (one per tier of a
    routed or cascade plan, {"all": id} for a pooled one), else each `per_tier[t].candidate`, else the pooled
    candidate. The ids keep their `/tpN` suffix: a fleet at another TP than the memory stage's is its own id."""
    ids = tco.get("chosen_candidates")
    if isinstance(ids, dict) and ids:
        return [ids[t] for t in sorted(ids) if isinstance(ids[t], str)]
    per = tco.get("per_tier")
    if _adopted_plan(tco) != "pooled" and isinstance(per, dict) and per:
        out = []
        for t, row in sorted(per.items()):
            if isinstance(row, dict):
                out.append(row["candidate"] if isinstance(row.get("candidate"), str) else _candidate_id(t, row))
        return out
    pooled = tco.get("pooled") or {}
    if isinstance(pooled.get("candidate"), str):
        return [pooled["candidate"]]
    chosen = tco.get("chosen")
    return [chosen] if isinstance(chosen, str) and "/" in chosen else []


def next_ids(tco: dict[str, Any], top: int) -> list[str]:
    """The top `top` of `benchmark_next`: per tier (`per_tier_candidates[t].benchmark_next`) for every plan but
    the pooled one (routed, cascade), the pooled list otherwise."""
    out: list[str] = []
    if _adopted_plan(tco) != "pooled" and isinstance(tco.get("per_tier_candidates"), dict):
        for _, tier in sorted(tco["per_tier_candidates"].items()):
            out += [r["candidate"] for r in ((tier or {}).get("benchmark_next") or [])[:top] if "candidate" in r]
    else:
        out += [r["candidate"] for r in (tco.get("benchmark_next") or [])[:top] if "candidate" in r]
    return out


def physics_key(cid: str, row: dict[str, Any]) -> tuple[Any, ...] | None:
    """What makes two plans the same benchmark: tier, GPU, TP, PP, usable RPS and monthly cost (two dtypes the
    engine model gives one curve and one price: H200 w-fp8/kv-fp8 and w-int8/kv-fp8); None without a usable
    RPS or a cost (nothing to compare)."""
    usable, cost = _number(row.get("usable_rps")), _number(row.get("monthly_usd"))
    if usable is None or cost is None:
        return None
    return (cid.split("/", 1)[0], row.get("gpu"), row.get("tp"), int(row.get("pp") or 1), usable, cost)


def drop_twins(
    wanted: list[str], rows: dict[str, dict[str, Any]], chosen: list[str]
) -> tuple[list[str], dict[str, str]]:
    """`wanted` without the benchmark_next candidates whose physics_key equals one already planned (earlier in
    `wanted`); chosen ones are always kept. Returns (kept ids, {dropped id: the kept id it is the same as})."""
    seen: dict[tuple[Any, ...], str] = {}
    kept: list[str] = []
    same_as: dict[str, str] = {}
    for cid in wanted:
        key = physics_key(cid, rows.get(cid) or {})
        if key is not None and key in seen and cid not in chosen:
            same_as[cid] = seen[key]
            continue
        if key is not None:
            seen.setdefault(key, cid)
        kept.append(cid)
    return kept, same_as


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


def serving_instances(peak_rps: float, usable_rps: Any, tp: int, pp: int, safety: float) -> int | None:
    """The instances that share the peak: ceil(ceil(peak / usable) x safety), the fleet formula before headroom
    and spares (pipeline.fleet.size's instances_with_safety); None without a usable RPS."""
    from pipeline import fleet

    usable = _number(usable_rps)
    if usable is None or usable <= 0 or not (peak_rps > 0):
        return None
    return max(1, fleet.size(peak_rps, usable, tp, pp, safety).instances_with_safety)


def _candidate(
    cid: str, row: dict[str, Any], role: str, metrics: dict[str, Any], root: Path, safety: float = 1.2
) -> bench_plan.Candidate:
    from pipeline import catalog

    tier = cid.split("/", 1)[0]
    op = _op_of(tier, metrics["operating_point"])
    man = op.get("manifest") or {}
    model = row["model"] if isinstance(row.get("model"), str) else _model_of(tier, metrics)
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
        serving_instances=serving_instances(
            _peak_rps(tier, metrics["workload"]), row.get("usable_rps"), tp, int(row.get("pp") or 1), safety
        ),
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


def _safety(params_path: Path) -> float:
    from pipeline import params

    data = params.load(params_path) if params_path.exists() else {}
    return float(params.section("fleet", data)["safety_factor"])


def build_plans(
    root: Path, candidate: str | None = None, top: int = DEFAULT_TOP, burst_multiplier: float = 2.5
) -> list[bench_plan.Plan]:
    """Every plan `sizing bench-plan` writes: --candidate alone, else the chosen ones and the top of benchmark_next."""
    metrics = read_metrics(root)
    tco = metrics["tco"]
    rows = rows_by_id(tco)
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
    wanted, same_as = drop_twins(wanted, rows, chosen) if candidate is None else (wanted, {})
    twins: dict[str, list[str]] = {}
    for dropped, kept in same_as.items():
        twins.setdefault(kept, []).append(dropped)
    items = [(cid, rows[cid], "chosen" if cid in chosen else "benchmark_next") for cid in wanted]
    return _build(root, items, metrics, burst_multiplier, twins)


def _build(
    root: Path,
    items: list[tuple[str, dict[str, Any], str]],
    metrics: dict[str, Any],
    burst_multiplier: float,
    twins: dict[str, list[str]] | None = None,
) -> list[bench_plan.Plan]:
    """One plan per (candidate id, its row, role); every plan built before anything is written. `twins`: per
    planned id, the benchmark_next candidates left out as the same benchmark (drop_twins)."""
    from pipeline import params, paths

    requests = root / "data" / "interim" / "requests.parquet"
    tables = _tier_table(requests, root / "params.yaml", {cid.split("/")[0] for cid, _, _ in items})
    safety = _safety(root / "params.yaml")
    data = params.load(root / "params.yaml") if (root / "params.yaml").exists() else {}
    plans = []
    for cid, row, role in items:
        cand = _candidate(cid, row, role, metrics, root, safety)
        op = _op_of(cand.tier, metrics["operating_point"])
        knee, c_max = _knee_cmax(row, op)
        if knee is None and c_max is None:  # no curve at all (a stop before pricing): the KV-bound concurrency
            c_max = _number(row.get("max_concurrency_per_replica"))
        slo = metrics["operating_point"].get("slo") or params.section("slo", data)
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
                same_as=(twins or {}).get(cid, []),
            )
        )
    return plans


def write_for_stop(
    root: Path, candidates: list[dict[str, Any]], out: Path | None = None, burst_multiplier: float = 2.5
) -> list[Path]:
    """The benchmark plan when the report stage stops before pricing (no sweep at all, issue 14): what to
    benchmark, written to `out` (default data/benchmark_plan/) with the same files as `sizing bench-plan`.

    `candidates`: the deployments to benchmark, in order, each a mapping in metrics/tco.json's per_candidate
    row shape: `candidate` (or `id`; `<tier>/<gpu>/w-<weights>/kv-<kv>[/tp<N>]`), `gpu`, `weights`, `kv`, `tp`,
    optional `pp`, `usable_rps` (for the serving instances; else 1), `c_max` / `knee` /
    `roofline_concurrency_at_slo` / `max_concurrency_per_replica` (the sweep's top; one is needed), `model`,
    `engine`, `role` (default "benchmark_next"). Reads metrics/workload.json, metrics/tiers.json,
    metrics/operating_point.json (optional), params.yaml and data/interim/requests.parquet. Validates and builds
    every plan before writing; returns the folders written. InputError (one line) on bad input."""
    if not candidates:
        raise InputError("no candidate to benchmark; expected at least one deployment to plan")
    metrics = {name: _read_json(root / "metrics" / f"{name}.json") for name in ("workload", "tiers")}
    op_path = root / "metrics" / "operating_point.json"
    metrics["operating_point"] = _read_json(op_path) if op_path.exists() else {}
    metrics["tco"] = {}
    items = []
    for i, row in enumerate(candidates):
        cid = row.get("candidate") or row.get("id") if isinstance(row, dict) else None
        if not isinstance(cid, str) or cid.count("/") < 3:
            raise InputError(
                f"benchmark plan: candidates[{i}]: candidate = {cid!r}; expected an id <tier>/<gpu>/w-<w>/kv-<kv>"
            )
        for key in ("gpu", "weights", "kv", "tp"):
            if row.get(key) is None:
                raise InputError(f"benchmark plan: {cid}: {key}: missing; expected the deployment's {key}")
        full = {"model": row.get("model"), **row}
        items.append((cid, full, str(row.get("role") or "benchmark_next")))
    plans = _build(root, items, metrics, burst_multiplier)
    return write_plans(plans, out or root / "data" / "benchmark_plan")


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


def stale_folders(out: Path, keep: list[Path]) -> list[Path]:
    """Plan folders under `out` (a README.md that starts with '# Benchmark plan:') that are not in `keep`: a
    candidate an earlier run planned and this one does not."""
    if not out.is_dir():
        return []
    names = {p.name for p in keep}
    found = []
    for d in sorted(out.iterdir()):
        readme = d / "README.md"
        if (
            d.is_dir()
            and d.name not in names
            and readme.is_file()
            and readme.read_text(encoding="utf-8", errors="replace").startswith("# Benchmark plan:")
        ):
            found.append(d)
    return found


def write_plans(plans: list[bench_plan.Plan], out: Path) -> list[Path]:
    """Write each plan to out/<folder>/ (files atomically); return the folders. All texts are made first."""
    texts = [(out / p.candidate.folder, plan_files(p)) for p in plans]
    for folder, files in texts:
        for name, text in files.items():
            io.write_text(folder / name, text)
    return [folder for folder, _ in texts]
