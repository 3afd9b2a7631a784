"""How good the engine model is: errors against real published benchmarks (issue 13, "How good it must be").

    .venv/bin/python benchmarks/fidelity.py [--json] [--nfev N] [--lolo-nfev N] [--only NAME ...]
                                            [--fixtures PATH] [--render RESULT.json] [--levels]
                                            [--form additive|overlap|overlap-phase] [--no-lolo-warm]
                                            [--pool step1|median-of-fits] [--refine-pool]
                                            [--noise-boot N] [--noise-seeds N]

`--form` runs every fit, the prior and the simulator in another iteration-time form (pipeline/sim/cost.py
STEP_FORMS; default cost.STEP_FORM), `--no-lolo-warm` starts the LOLO refits from their own step 1 only: both for
before/after comparisons. `--pool` makes the pooled fit another way (calibrate.POOLS; default calibrate.POOL)
and `--refine-pool` refines the step-1 pool through the simulator (calibrate.refine_pooled, ~4x the time).
`--prompt-pool` replays inference-perf's shared-prefix workloads as the finite prompt pool the client cycles
(calibrate.PROMPT_POOL, off by default; docs/engine_model.md section 11 gives its figures).
`--only NAME ...` runs a subset (with the dev deployment a check deployment names).

Loads every deployment of benchmarks/fidelity/deployments.yaml: the real benchmark fixtures of
../shared/fixtures/benchmarks (read in place, with the manifests in benchmarks/fidelity/manifests/) and the
public measurements collected under benchmarks/fidelity/measured/ and console/ (PROVENANCE.md says where each
comes from).
For each deployment, and pooled, it prints the median absolute relative error (and the median signed error, to
show bias) on output throughput, mean ITL and TTFT (p99 where the file has it, else the percentile it has):

- `roofline`: the uncalibrated prior (cost.Coefficients.prior, no request overhead) through the simulator;
- `in-sample`: the deployment's own calibration (pipeline/sim/calibrate.py), predicted on its own levels;
- `LOLO`: leave-one-level-out, refitted without the level and predicted on it (target <= 5% throughput and
  mean ITL, <= 10% TTFT);
- `LODO`: leave-one-deployment-out, the pooled coefficients fitted without the deployment (target <= 15%).

Deployments with role `holdout` are never seen by any fit: they are scored only with the roofline prior and
with the pooled coefficients of the dev deployments (`transferred`), and reported apart.

Deployments with role `check` are another server setting of a dev deployment (a smaller KV cache): scored with
the roofline, the transferred pool and the coefficients fitted on that dev deployment (`calibrated*`), and kept
out of both pools.

Every prediction is calibrate's replay (pipeline/sim/calibrate.py `predict_level`: the simulator,
pipeline/sim/engine.py, with the level's own lengths and load, and the deployment's engine limits: the flags
its manifest's notes state, the registry's `engine` overrides, and the KV capacity of the engine profile or,
for the levels CSV, of the startup log). Fits and residuals are calibrate's (`calibrate_sets`).

Data handling (printed with the figures): the mean ITL of a level whose tool TPOT contradicts its means is
(mean E2E - mean TTFT) / (mean output - 1), and an inference-perf stage whose client fell behind is replayed
at the rate it sent: both are calibrate's own corrections (inference-perf's `time_per_output_token` averages
streamed-chunk gaps, about two per token in these files). Levels where more than 10% of the requests failed
are left out here (the survivors' latencies are censored by the client timeout).

TTFT p99 sampling noise (the last section; `--json` key `ttft_noise`): per level, the bootstrap of the measured
TTFT statistic over the file's per-request `ttfts` (iid and moving-block), or a parametric bootstrap from the
percentiles an inference-perf lifecycle file states (it holds no per-request data); the simulator's own seed-to-seed
spread of that statistic at the deployment's fit; and the floor, the median |error| a perfect model would still show
(0.674 x the two standard errors in quadrature).

It is a benchmark script, not a test: it takes minutes (the LOLO refits replay every level many times).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.errors import InputError  # noqa: E402

FIDELITY = ROOT / "benchmarks" / "fidelity"
REGISTRY = FIDELITY / "deployments.yaml"
FIXTURES = ROOT.parent / "shared" / "fixtures" / "benchmarks"
METRICS = ("throughput", "itl_mean", "ttft", "ttft_p50")
"""The issue's three target metrics (TTFT = p99 where the file has it, else the percentile it has), then TTFT p50
where the file has it: reported beside the target, never in its place (no target of its own)."""
ABLATIONS = (
    "physical-bounds",
    "sglang-separate-prefill",
    "prefix-cache",
    "warm-runs",
    "queued-replay",
    "seq-vocab",
    "weight-floor",
    "client-bound",
)
"""Model refinements `--ablate` can switch off: the fit's physical lower bounds (calibrate.PHYSICAL_LOWER, back to
b >= 0), SGLang's unmixed prefill batches (back to vLLM's mixed iterations for every engine), the prefix hashes of
the workloads whose source states their shared prefix (back to no prefix caching), and the runs that repeat an earlier
run's prompts against a prefix-caching server (calibrate.WARM_RUNS: back to a cold prefill of every prompt), and the
longer replay of open-loop levels whose TTFT p99 is set by queueing (calibrate.QUEUED_REPLAY: back to 2000 requests),
and the per-sequence term weighted by vocabulary (cost.SEQ_TERM: back to "count", one per sequence), and the pool's
split of the weight floor across deployments (calibrate.WEIGHT_FLOOR_SPLIT: back to the per-parameter median of b0
and b2), and the replay of inference-perf stages whose client fell behind with its concurrency cap full through a
client of that many slots (calibrate.CLIENT_BOUND: back to an open loop at the rate the client sent)."""
KINDS = (
    "roofline",
    "in_sample",
    "leave_one_level_out",
    "leave_one_deployment_out",
    "transferred",
    "calibrated_elsewhere",
)
KIND_LABEL = {
    "roofline": "roofline",
    "in_sample": "in-sample",
    "leave_one_level_out": "LOLO",
    "leave_one_deployment_out": "LODO",
    "transferred": "transferred",
    "calibrated_elsewhere": "calibrated*",
}
TARGETS = {
    "leave_one_level_out": {"throughput": 0.05, "itl_mean": 0.05, "ttft": 0.10},
    "leave_one_deployment_out": {"throughput": 0.15, "itl_mean": 0.15, "ttft": 0.15},
    "transferred": {"throughput": 0.15, "itl_mean": 0.15, "ttft": 0.15},
}
MAX_FAILED_SHARE = 0.10
LEVELS_CSV_COLUMNS = (
    "readme_line",
    "gpu_memory_utilization",
    "kv_cache_gib",
    "kv_cache_tokens",
    "startup_log",
    "num_prompts",
    "random_input_len",
    "random_output_len",
    "completed",
    "duration_s",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "output_throughput",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "median_itl_ms",
    "p99_itl_ms",
)


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class Entry:
    """One deployment of the registry: its measured levels (calibrate.DeploymentSet), role and provenance notes."""

    name: str
    role: str
    engine: dict[str, Any]
    ds: Any  # calibrate.DeploymentSet
    notes: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    calibrated_on: str | None = None  # role check: the dev deployment whose own fit scores it
    tools: list[str] = field(default_factory=list)


def load_registry(path: Path = REGISTRY) -> list[dict[str, Any]]:
    """deployments.yaml, checked: a unique name, a role (dev | holdout | check), engine overrides that are integers,
    and at least one sweep each."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = data.get("deployments")
    if not isinstance(out, list) or not out:
        raise InputError(f"{path}: deployments: expected a list of deployments")
    names = set()
    for i, d in enumerate(out):
        where = f"{path}: deployments[{i}]"
        if not isinstance(d, dict) or not d.get("name"):
            raise InputError(f"{where}: expected a mapping with a name")
        if d["name"] in names:
            raise InputError(f"{where}: name {d['name']!r} appears twice; expected unique names")
        names.add(d["name"])
        if d.get("role") not in ("dev", "holdout", "check"):
            raise InputError(f"{where}: role = {d.get('role')!r}; allowed: dev, holdout, check")
        if d["role"] == "check" and not d.get("calibrated_on"):
            raise InputError(
                f"{where}: a check deployment needs calibrated_on (the dev deployment whose fit scores it)"
            )
        eng = d.get("engine") or {}
        for k in ("max_num_seqs", "max_num_batched_tokens"):
            if k in eng and (not isinstance(eng[k], int) or eng[k] < 1):
                raise InputError(f"{where}: engine.{k} = {eng.get(k)!r}; expected an integer >= 1")
        caveats = d.get("caveats", [])
        if not isinstance(caveats, list) or not all(isinstance(c, str) and c for c in caveats):
            raise InputError(f"{where}: caveats = {caveats!r}; expected a list of sentences")
        sweeps = d.get("sweeps")
        if not isinstance(sweeps, list) or not sweeps:
            raise InputError(f"{where}: sweeps: expected at least one sweep")
        for j, s in enumerate(sweeps):
            kinds = [k for k in ("fixture", "measured", "levels_csv") if k in s]
            if len(kinds) != 1:
                raise InputError(f"{where}.sweeps[{j}]: expected exactly one of fixture, measured, levels_csv")
            if kinds[0] in ("fixture", "levels_csv") and not s.get("manifest"):
                raise InputError(f"{where}.sweeps[{j}]: a {kinds[0]} sweep needs its manifest")
    dev = {d["name"] for d in out if d["role"] == "dev"}
    for d in out:
        if d["role"] == "check" and d["calibrated_on"] not in dev:
            raise InputError(f"{path}: {d['name']}: calibrated_on = {d['calibrated_on']!r}; expected a dev deployment")
    return out


def _num(row: dict[str, str], col: str, where: str, integer: bool = False) -> float:
    text = (row.get(col) or "").strip().replace(",", "")
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{where}: column '{col}' = {text!r}; expected a number") from None
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{where}: column '{col}' = {text!r}; expected a finite number >= 0")
    if integer and v != int(v):
        raise InputError(f"{where}: column '{col}' = {text!r}; expected a whole number")
    return v


def read_levels_csv(path: Path) -> list[dict[str, Any]]:
    """The levels CSV (README.md): one row per vLLM benchmark_serving run transcribed from its console output,
    every figure checked (finite, >= 0); rows as floats keyed by LEVELS_CSV_COLUMNS."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in LEVELS_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column '{missing[0]}'; expected {', '.join(LEVELS_CSV_COLUMNS)}")
        rows = []
        for i, raw in enumerate(reader, start=2):
            where = f"{path}: line {i}"
            row: dict[str, Any] = {"startup_log": raw["startup_log"]}
            for col in LEVELS_CSV_COLUMNS:
                if col != "startup_log":
                    row[col] = _num(raw, col, where, col in ("num_prompts", "completed", "kv_cache_tokens"))
            if row["completed"] > row["num_prompts"] or row["completed"] < 1:
                raise InputError(f"{where}: completed = {row['completed']:g}; expected 1..num_prompts")
            rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows; expected one row per level")
    return rows


def _csv_set(path: Path, manifest_path: Path, where: dict[str, Any]) -> tuple[Any, list[str]]:
    """A DeploymentSet from a levels CSV (the rows matching `where`): each row is a burst, every request sent at
    once (request rate inf); the KV capacity is the one the rows' startup log states."""
    from pipeline import catalog, quantization
    from pipeline.benchmarks import read_manifest
    from pipeline.sim import calibrate
    from pipeline.sim.cost import for_deployment

    m = read_manifest(manifest_path)
    model = catalog.load_model(str(m["model"]))
    gpu = catalog.find_gpu(str(m["gpu"]), catalog.load_gpus())
    compat = quantization.check(gpu, m["weight_dtype"], m["kv_dtype"])
    dep = calibrate.Deployment(
        model.name,
        gpu.name,
        int(m["tp"]),
        int(m["pp"]),
        m["weight_dtype"],
        m["kv_dtype"],
        str(compat.compute),
        str(m["engine"]),
    )
    cost = for_deployment(model, gpu, m["weight_dtype"], m["kv_dtype"], dep.tp, dep.pp)
    if isinstance(cost, str):
        raise InputError(f"{manifest_path}: deployment {dep.key}: {cost}")
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()
    rows = [r for r in read_levels_csv(path) if all(r.get(k) == v for k, v in where.items())]
    if not rows:
        raise InputError(f"{path}: no row matches {where}; expected the rows of this sweep")
    kv_tokens = {int(r["kv_cache_tokens"]) for r in rows}
    if len(kv_tokens) != 1:
        raise InputError(
            f"{path}: rows matching {where} state {len(kv_tokens)} KV capacities; expected one server setting"
        )
    names = {f.name for f in dataclasses.fields(calibrate.LevelData)}
    required = {
        f.name
        for f in dataclasses.fields(calibrate.LevelData)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    levels, excluded = [], []
    for row in rows:
        n_sent = int(row["num_prompts"])
        done = int(row["completed"])
        name = f"{rel}:{int(row['readme_line'])} (gmu {row['gpu_memory_utilization']:g}, burst {n_sent})"
        if (n_sent - done) / n_sent > MAX_FAILED_SHARE:
            excluded.append(f"{name}: {n_sent - done} of {n_sent} requests failed (> {MAX_FAILED_SHARE:.0%})")
            continue
        in_mean = row["total_input_tokens"] / done
        out_mean = row["total_output_tokens"] / done
        reps = min(n_sent, 512)
        fields: dict[str, Any] = {
            "name": name,
            "curve": f"{rel} gmu {row['gpu_memory_utilization']:g} (burst)",
            "load_kind": "request_rate",
            "load": math.inf,
            "rps": done / row["duration_s"],
            "output_tps": row["output_throughput"],
            "ttft_s": {
                "mean": row["mean_ttft_ms"] / 1e3,
                "p50": row["median_ttft_ms"] / 1e3,
                "p99": row["p99_ttft_ms"] / 1e3,
            },
            "itl_s": row["mean_tpot_ms"] / 1e3,
            "itl_kind": "tpot",
            "itl_stat": "mean",
            "e2e_s": None,
            "input_mean": in_mean,
            "output_mean": out_mean,
            "input_lens": np.full(reps, max(1, round(in_mean)), dtype=np.int64),
            "output_lens": np.full(reps, max(1, round(out_mean)), dtype=np.int64),
            "lengths_source": "the mean length",
            "requests": n_sent,
            "saturation": False,
            "notes": [
                "cache-affected: prefix caching on and vLLM's seeded random dataset repeats these prompts across "
                "runs; the hit rate per run is not stated, so no prefix is replayed (TTFT measured below a cold prefill)"
            ],
        }
        unknown = required - set(fields)
        if unknown:
            raise InputError(f"calibrate.LevelData has fields {sorted(unknown)} the levels CSV loader does not fill")
        levels.append(calibrate.LevelData(**{k: v for k, v in fields.items() if k in names}))
    limits = calibrate.engine_limits(m, model, gpu, cost, dep.tp, dep.pp)
    kv = kv_tokens.pop()
    limits = dataclasses.replace(
        limits, kv_blocks=max(kv // limits.block_size, 1), source=f"{limits.source}; {kv:,} KV tokens (startup log)"
    )
    return calibrate.DeploymentSet(dep, gpu.arch, cost, levels, [rel], limits), excluded


def _row_lookup(sweeps: list[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The normalized rows by calibrate's level name (file + load) and by file (for the failed count)."""
    by_name: dict[str, dict[str, Any]] = {}
    by_file: dict[str, list[dict[str, Any]]] = {}
    for s in sweeps:
        replicas = int((s.manifest or {}).get("replicas", 1))
        for lv in s.levels:
            r = lv.row
            load = float(r["load"]) / (replicas if r["load_kind"] == "request_rate" or math.isfinite(r["load"]) else 1)
            text = "inf" if not math.isfinite(load) else f"{load:g}"
            by_name[f"{r['file']} ({'c' if r['load_kind'] == 'concurrency' else 'rate'} {text})"] = r
            by_file.setdefault(str(r["file"]), []).append(r)
    return by_name, by_file


def _row_of(lv: Any, rows: tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]) -> dict[str, Any] | None:
    by_name, by_file = rows
    if lv.name in by_name:
        return by_name[lv.name]
    same = by_file.get(lv.name.split(" (")[0], [])
    return same[0] if len(same) == 1 else None


def _sets_from_paths(paths: list[Path], manifests: list[Path] | None) -> tuple[list[Any], Any]:
    from pipeline.benchmarks import read_paths
    from pipeline.sim import calibrate

    sets = calibrate.deployment_sets(paths, manifests)
    sweeps = read_paths(paths)
    calibrate.apply_manifests(sweeps, manifests)
    return sets, _row_lookup(sweeps)


def load_entry(spec: dict[str, Any], fixtures: Path) -> Entry | str:
    """One registry deployment, read with the project's readers (or the levels CSV loader); a str says why it
    was skipped (its fixture folder is absent)."""
    merged = None
    notes: set[str] = set()
    excluded: list[str] = []
    tools: set[str] = set()
    for s in spec["sweeps"]:
        if "levels_csv" in s:
            ds, ex = _csv_set(FIDELITY / s["levels_csv"], FIDELITY / s["manifest"], dict(s.get("where") or {}))
            excluded += ex
            sets = [ds]
            tools.add("vllm (console figures)")
        else:
            if "fixture" in s:
                folder = fixtures / s["fixture"]
                if not folder.is_dir():
                    return f"fixture folder {folder} absent"
                sets, rows = _sets_from_paths([folder], [FIDELITY / s["manifest"]])
            else:
                sets, rows = _sets_from_paths([FIDELITY / s["measured"]], None)
            tools.update(str(r["tool"]) for r in rows[0].values())
            for ds in sets:
                keep = []
                for lv in ds.levels:
                    row = _row_of(lv, rows)
                    failed = float(row.get("failed") or 0) if row else 0.0
                    sent = failed + float((row or {}).get("completed") or 0)
                    if sent and failed / sent > MAX_FAILED_SHARE:
                        excluded.append(
                            f"{_short(lv.name)}: {int(failed)} of {int(sent)} requests failed (> {MAX_FAILED_SHARE:.0%})"
                        )
                        continue
                    keep.append(lv)
                ds.levels = keep
        for ds in sets:
            if merged is None:
                merged = ds
            elif ds.deployment.key != merged.deployment.key:
                raise InputError(
                    f"{REGISTRY}: deployment {spec['name']}: sweeps of different deployments "
                    f"({merged.deployment.key} and {ds.deployment.key}); expected one manifest identity"
                )
            else:
                merged.levels.extend(ds.levels)
                merged.files.extend(f for f in ds.files if f not in merged.files)
    assert merged is not None
    eng = spec.get("engine") or {}
    over = {k: int(eng[k]) for k in ("max_num_seqs", "max_num_batched_tokens") if k in eng}
    if over:
        how = ", ".join(f"{k} {v}" for k, v in over.items())
        merged.limits = dataclasses.replace(merged.limits, **over, source=f"{merged.limits.source}; registry: {how}")
    merged.levels.sort(key=lambda lv: (lv.curve, lv.load_kind, lv.load, lv.name))
    derived: dict[str, int] = {}
    for lv in merged.levels:
        for note in getattr(lv, "notes", None) or []:
            key = re.sub(r"\b[0-9]+(\.[0-9]+)?\b", "N", note)
            derived[key] = derived.get(key, 0) + 1
    for key, count in sorted(derived.items()):
        notes.add(f"calibrate, on {count} of {len(merged.levels)} levels: {key}")
    if eng.get("assumed"):
        notes.add(f"engine limits assumed: {eng['assumed']}")
    for c in spec.get("caveats") or []:
        notes.add(f"caveat: {c}")
    notes.add(f"engine limits: {merged.limits.as_dict()}")
    return Entry(
        spec["name"], spec["role"], dict(eng), merged, sorted(notes), excluded, spec.get("calibrated_on"), sorted(tools)
    )


def _short(name: str) -> str:
    """A level name without the machine's absolute prefix."""
    for prefix in (str(FIXTURES) + "/", str(FIDELITY) + "/", str(ROOT) + "/"):
        name = name.replace(prefix, "")
    return name


# ----------------------------------------------------------------------------------------------- predicting


def predict(ds: Any, lv: Any, theta: Any | None, basis: str, source: str) -> dict[str, float]:
    """calibrate's replay of one level through the simulator with b0..b5 and the request overhead h of theta
    (theta None: the roofline prior, h = 0)."""
    from pipeline.sim import calibrate

    if theta is None:
        return calibrate.predict_level(ds.cost, ds.limits, lv, 0.0)
    cost = ds.cost.with_coeffs(calibrate.Coefficients(tuple(float(v) for v in theta[:6]), basis, source))
    return calibrate.predict_level(cost, ds.limits, lv, float(theta[6]))


# ------------------------------------------------------------------------------------------------- scoring


def summarize(values: list[float]) -> dict[str, Any]:
    """n, median |relative error|, median signed relative error (predicted / measured - 1)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"n": 0, "median_abs_rel": None, "median_rel": None}
    return {"n": len(v), "median_abs_rel": float(np.median(np.abs(v))), "median_rel": float(np.median(v))}


def judge(kind: str, metric: str, s: dict[str, Any]) -> dict[str, Any]:
    """The summary with its target and whether it was met (by how much it was missed, in percentage points)."""
    target = TARGETS.get(kind, {}).get(metric)
    out = dict(s, target=target, met=None, missed_by=None)
    if target is not None and s["median_abs_rel"] is not None:
        out["met"] = s["median_abs_rel"] <= target
        out["missed_by"] = None if out["met"] else s["median_abs_rel"] - target
    return out


# ---------------------------------------------------------------------------------------- TTFT sampling noise

NOISE_BOOT = 2000
"""Bootstrap resamples of a measured TTFT statistic (`--noise-boot`)."""
NOISE_SEEDS = 10
"""Replay seeds of the simulator's seed-to-seed spread (`--noise-seeds`)."""
NOISE_RNG = 20261201
"""Seed of every bootstrap draw (same inputs, same figures)."""
HALF_NORMAL_MEDIAN = 0.6744897501960817
"""Median of |Z| for a standard normal Z: the median |error| of an unbiased estimate with standard error s is 0.674 s."""
LIFECYCLE_KNOTS = (
    (0.0, "min"),
    (0.001, "p0.1"),
    (0.01, "p1"),
    (0.05, "p5"),
    (0.10, "p10"),
    (0.25, "p25"),
    (0.50, "median"),
    (0.75, "p75"),
    (0.90, "p90"),
    (0.95, "p95"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (1.0, "max"),
)
"""The percentiles an inference-perf lifecycle file states (q, key): the knots of its piecewise-linear quantile
function, which the parametric bootstrap draws from (those files hold no per-request TTFTs)."""
STAT_Q = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


def _stat_of(values: np.ndarray, stat: str, axis: int | None = None) -> Any:
    """The TTFT statistic (mean or a percentile, numpy's linear interpolation as vLLM's benchmark computes it)."""
    if stat == "mean":
        return np.mean(values, axis=axis)
    return np.percentile(values, STAT_Q[stat], axis=axis)


def bootstrap_rel(values: np.ndarray, stat: str, boot: int, block: int = 1, seed: int = NOISE_RNG) -> dict[str, float]:
    """Bootstrap of a statistic of per-request values (resampling requests with replacement): its relative standard
    error (std of the resampled statistic / the statistic) and relative 95% half-width ((q97.5 - q2.5) / 2 / the
    statistic). `block` > 1: a moving-block bootstrap (blocks of that many consecutive requests, in the file's order),
    which keeps the correlation of neighbouring requests' queueing that an iid resample breaks."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    rng = np.random.default_rng(seed)
    if block <= 1:
        idx = rng.integers(0, n, size=(boot, n))
    else:
        block = min(block, n)
        starts = rng.integers(0, n - block + 1, size=(boot, math.ceil(n / block)))
        idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(boot, -1)[:, :n]
    est = _stat_of(v[idx], stat, axis=1)
    point = float(_stat_of(v, stat))
    lo, hi = np.percentile(est, [2.5, 97.5])
    return {"se_rel": float(np.std(est, ddof=1) / point), "half_width_rel": float((hi - lo) / 2 / point)}


def quantile_draws(knots: list[tuple[float, float]], n: int, boot: int, seed: int = NOISE_RNG) -> np.ndarray:
    """`boot` samples of n values each from the piecewise-linear quantile function through `knots` ((q, value),
    q from 0 to 1): the parametric bootstrap of a file that states percentiles, not requests."""
    qs = np.array([q for q, _ in knots], dtype=np.float64)
    vs = np.maximum.accumulate(np.array([v for _, v in knots], dtype=np.float64))
    u = np.random.default_rng(seed).random((boot, n))
    return np.interp(u, qs, vs)


def measured_ttfts(lv: Any) -> tuple[str, Any] | None:
    """What a level's file holds for its TTFT noise: ('requests', seconds in the file's order) for a vLLM result
    file with `ttfts` (failed requests dropped), ('percentiles', (knots, count)) for an inference-perf lifecycle file,
    else None (console figures, SGLang summaries: no distribution)."""
    file = lv.name.rsplit(" (", 1)[0]
    p = Path(file)
    if not p.is_absolute():
        p = ROOT / p
    if p.suffix.lower() != ".json" or not p.is_file():
        return None
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("ttfts"), list) and obj["ttfts"]:
        errors = obj.get("errors") if isinstance(obj.get("errors"), list) else []
        vals = [
            float(t)
            for i, t in enumerate(obj["ttfts"])
            if isinstance(t, int | float) and t > 0 and not (errors[i] if i < len(errors) else "")
        ]
        return ("requests", np.asarray(vals, dtype=np.float64)) if len(vals) >= 2 else None
    lat = (
        ((obj.get("successes") or {}).get("latency") or {}).get("time_to_first_token")
        if isinstance(obj, dict)
        else None
    )
    count = int((obj.get("successes") or {}).get("count") or 0) if isinstance(obj, dict) else 0
    if isinstance(lat, dict) and count >= 2 and all(isinstance(lat.get(k), int | float) for _, k in LIFECYCLE_KNOTS):
        return "percentiles", ([(q, float(lat[k])) for q, k in LIFECYCLE_KNOTS], count)
    return None


WARMUP_BULK = 1.3
WARMUP_TAIL = 3.0
"""A warm-up tail: the first stage of an inference-perf run (stage_0) whose TTFT p95 is within WARMUP_BULK x its p50
(no queueing in the bulk) and whose p99 is above WARMUP_TAIL x its p95: the slow requests are the server's first,
whatever the load (Mixtral codegen stage 0: p95 62.8 ms, p99 482 ms, max 1,994 ms; its stage 1 at twice the rate:
max 106 ms). A diagnostic only, stated after looking at the files: the judged figures keep every level."""


def warmup_tail(lv: Any) -> dict[str, float] | None:
    """The TTFT p50/p95/p99/max (s) of a level whose file shows a warm-up tail (WARMUP_TAIL), else None."""
    got = measured_ttfts(lv)
    if got is None or got[0] != "percentiles" or not Path(lv.name.rsplit(" (", 1)[0]).name.startswith("stage_0_"):
        return None
    knots = dict((q, v) for q, v in got[1][0])
    p50, p95, p99, top = knots.get(0.5), knots.get(0.95), knots.get(0.99), knots.get(1.0)
    if not (p50 and p95 and p99) or p95 >= WARMUP_BULK * p50 or p99 <= WARMUP_TAIL * p95:
        return None
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(top or p99)}


def measured_noise(lv: Any, boot: int) -> dict[str, Any] | None:
    """The sampling noise of a level's measured TTFT statistic (calibrate's ttft_stat: p99 where the file has it):
    an iid and a moving-block bootstrap over its per-request TTFTs, or the parametric bootstrap of its stated
    percentiles; None where the file holds neither."""
    stat = lv.ttft_stat()
    got = measured_ttfts(lv)
    if got is None or stat not in ("mean", *STAT_Q):
        return None
    kind, data = got
    if kind == "requests":
        n = len(data)
        iid = bootstrap_rel(data, stat, boot)
        blk = bootstrap_rel(data, stat, boot, block=math.ceil(math.sqrt(n)))
        return {
            "source": "per-request ttfts",
            "requests": n,
            "stat": stat,
            "measured_s": float(_stat_of(data, stat)),
            "file_stat_s": float(lv.ttft_s[stat]),
            "se_rel": iid["se_rel"],
            "half_width_rel": iid["half_width_rel"],
            "block": math.ceil(math.sqrt(n)),
            "block_se_rel": blk["se_rel"],
            "block_half_width_rel": blk["half_width_rel"],
        }
    knots, n = data
    draws = quantile_draws(knots, n, boot)
    est = _stat_of(draws, stat, axis=1)
    point = float(lv.ttft_s[stat])
    lo, hi = np.percentile(est, [2.5, 97.5])
    return {
        "source": "stated percentiles (parametric)",
        "requests": n,
        "stat": stat,
        "measured_s": point,
        "file_stat_s": point,
        "se_rel": float(np.std(est, ddof=1) / point),
        "half_width_rel": float((hi - lo) / 2 / point),
        "block": None,
        "block_se_rel": None,
        "block_half_width_rel": None,
    }


def seeded_level(lv: Any, seed: int) -> Any:
    """The level with its replayed requests in another seeded order (seed 0: as calibrate replays it); its Poisson
    arrivals take the seed in calibrate.replay_trace."""
    if seed == 0:
        return lv
    perm = np.random.default_rng(seed).permutation(len(lv.input_lens))
    return dataclasses.replace(lv, input_lens=lv.input_lens[perm], output_lens=lv.output_lens[perm])


def sim_noise(ds: Any, lv: Any, theta: Any, seeds: int) -> dict[str, Any] | None:
    """The simulator's own seed-to-seed spread of the level's TTFT statistic: the level replayed with `seeds` seeds
    (Poisson arrivals and request order; a closed loop or burst of one fixed length does not depend on the seed), at
    theta (b0..b5, h); relative standard error = std over seeds / mean."""
    from pipeline.sim import calibrate

    stat = lv.ttft_stat()
    if stat is None or theta is None:
        return None
    cost = ds.cost.with_coeffs(calibrate.Coefficients(tuple(float(v) for v in theta[:6]), "calibrated", "noise"))
    vals = []
    for seed in range(seeds):
        kind, job = calibrate.replay_trace(seeded_level(lv, seed), seed)
        pred = calibrate.sim_metrics(
            calibrate.simulate(cost, ds.limits, kind, job), float(theta[6]), kind in calibrate.CLOSED_LIKE
        )
        vals.append(pred[f"ttft_{stat}"])
    v = np.asarray(vals, dtype=np.float64)
    if not np.isfinite(v).all() or np.mean(v) <= 0:
        return None
    return {
        "stat": stat,
        "seeds": seeds,
        "mean_s": float(np.mean(v)),
        "se_rel": float(np.std(v, ddof=1) / np.mean(v)) if seeds > 1 else 0.0,
        "range_rel": float((np.max(v) - np.min(v)) / np.mean(v)),
    }


def noise_floor(meas: dict[str, Any] | None, sim: dict[str, Any] | None) -> float | None:
    """The median |error| a perfect model would still show on the level: 0.674 x sqrt(s_meas^2 + s_sim^2), with
    s_meas the larger of the iid and block bootstrap SEs (None where the file gives no measured noise)."""
    if meas is None:
        return None
    s_meas = max(meas["se_rel"], meas["block_se_rel"] or 0.0)
    s_sim = sim["se_rel"] if sim else 0.0
    return HALF_NORMAL_MEDIAN * math.hypot(s_meas, s_sim)


def _med(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else None


def noise_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over levels of the noise figures (None where no level has one)."""
    m = [r["measured"] for r in rows if r.get("measured")]
    s = [r["simulator"] for r in rows if r.get("simulator")]
    return {
        "levels": len(rows),
        "levels_with_measured_noise": len(m),
        "requests_median": _med([x["requests"] for x in m]),
        "measured_se_rel": _med([x["se_rel"] for x in m]),
        "measured_half_width_rel": _med([x["half_width_rel"] for x in m]),
        "measured_block_se_rel": _med([x["block_se_rel"] for x in m]),
        "measured_block_half_width_rel": _med([x["block_half_width_rel"] for x in m]),
        "sim_se_rel": _med([x["se_rel"] for x in s]),
        "noise_floor_median_abs_rel": _med([r.get("noise_floor") for r in rows]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, fit, predict and score; the whole result as a JSON-ready dict."""
    from pipeline.sim import calibrate

    t0 = time.perf_counter()
    ablate = set(getattr(args, "ablate", None) or [])
    if "physical-bounds" in ablate:
        calibrate.PHYSICAL_LOWER[:] = 0.0
    if "warm-runs" in ablate:
        calibrate.WARM_RUNS = False
    if getattr(args, "prompt_pool", False):
        calibrate.PROMPT_POOL = True
    if "queued-replay" in ablate:
        calibrate.QUEUED_REPLAY = 1
    if "seq-vocab" in ablate:
        from pipeline.sim import cost

        cost.SEQ_TERM = "count"
    if "weight-floor" in ablate:
        calibrate.WEIGHT_FLOOR_SPLIT = False
    if "client-bound" in ablate:
        calibrate.CLIENT_BOUND = False
    if getattr(args, "drop_unphysical_ttft", False):
        calibrate.DROP_UNPHYSICAL_TTFT = True
    registry = load_registry()
    if args.only:
        known = {d["name"] for d in registry}
        unknown = sorted(set(args.only) - known)
        if unknown:
            raise InputError(f"--only: unknown deployment {unknown[0]!r}; known: {', '.join(sorted(known))}")
        wanted = set(args.only) | {
            d["calibrated_on"] for d in registry if d["name"] in args.only and d.get("calibrated_on")
        }
        registry = [d for d in registry if d["name"] in wanted]
    entries, skipped = [], []
    for spec in registry:
        got = load_entry(spec, Path(args.fixtures))
        if isinstance(got, str):
            skipped.append({"deployment": spec["name"], "why": got})
        else:
            if "prefix-cache" in ablate and any(lv.prefix_tokens for lv in got.ds.levels):
                for lv in got.ds.levels:
                    if lv.pool_users:  # a later stage's resident pool is prefix caching too
                        lv.warm_prompts = False
                    lv.prefix_tokens = lv.prefix_groups = lv.pool_users = 0
                got.notes.append("ablated: the stated shared prefix replayed without prefix caching")
            if "sglang-separate-prefill" in ablate and not got.ds.limits.mixed_prefill:
                got.ds.limits = dataclasses.replace(got.ds.limits, mixed_prefill=True)
                got.notes.append("ablated: SGLang prefill batches replayed mixed into decode iterations (vLLM's rule)")
            entries.append(got)
    t_load = time.perf_counter() - t0

    per_level: dict[str, list[dict[str, Any]]] = {e.name: [] for e in entries}
    for e in entries:
        for lv in e.ds.levels:
            per_level[e.name].append(
                {
                    "level": _short(lv.name),
                    "ttft_stat": lv.ttft_stat(),
                    "measured": lv.measured(),
                    "roofline": calibrate.residuals_of(predict(e.ds, lv, None, "roofline", "prior"), lv),
                    "warmup_tail": warmup_tail(lv),
                }
            )
    dev = [e for e in entries if e.role == "dev" and e.ds.levels]
    others = [e for e in entries if e.role != "dev" and e.ds.levels]
    cal = None
    t1 = time.perf_counter()
    if dev:
        cal = calibrate.calibrate_sets(
            [e.ds for e in dev],
            args.nfev,
            args.lolo_nfev,
            lolo_warm=not getattr(args, "no_lolo_warm", False),
            pool=getattr(args, "pool", None) or calibrate.POOL,
            refine_pool=bool(getattr(args, "refine_pool", False)),
        )
        for e in dev:
            for mine, theirs in zip(per_level[e.name], cal.level_residuals[e.ds.deployment.key], strict=True):
                for kind in ("in_sample", "leave_one_level_out", "leave_one_deployment_out"):
                    mine[kind] = theirs.get(kind)
        by_name = {e.name: e for e in dev}
        for e in others:
            theta, how = cal.pooled.theta_for(e.ds.arch)
            for mine, lv in zip(per_level[e.name], e.ds.levels, strict=True):
                mine["transferred"] = calibrate.residuals_of(predict(e.ds, lv, theta, "transferred", how), lv)
            e.notes.append(f"transferred: {how}, pooled over the {len(dev)} dev deployments")
            sib = by_name.get(e.calibrated_on or "")
            if e.role == "check" and sib is not None:
                fit = cal.fits[sib.ds.deployment.key]
                for mine, lv in zip(per_level[e.name], e.ds.levels, strict=True):
                    mine["calibrated_elsewhere"] = calibrate.residuals_of(
                        predict(e.ds, lv, fit.theta, "calibrated", f"calibrated on {sib.name}"), lv
                    )
                e.notes.append(
                    f"calibrated-elsewhere: the coefficients fitted on {sib.name}, with this sweep's engine limits"
                )
    t_fit = time.perf_counter() - t1

    t2 = time.perf_counter()
    boot = int(getattr(args, "noise_boot", NOISE_BOOT) or 0)
    seeds = int(getattr(args, "noise_seeds", NOISE_SEEDS) or 0)
    noise_rows: dict[str, list[dict[str, Any]]] = {e.name: [] for e in entries}
    if boot > 0 or seeds > 0:
        for e in entries:
            theta = None  # the deployment's own fit (dev), else the transferred pool
            if cal is not None:
                own = e.role == "dev"
                theta = cal.fits[e.ds.deployment.key].theta if own else cal.pooled.theta_for(e.ds.arch)[0]
            for lv in e.ds.levels:
                meas = measured_noise(lv, boot) if boot > 0 else None
                sim = sim_noise(e.ds, lv, theta, seeds) if seeds > 1 else None
                noise_rows[e.name].append(
                    {
                        "level": _short(lv.name),
                        "measured": meas,
                        "simulator": sim,
                        "noise_floor": noise_floor(meas, sim),
                    }
                )
    t_noise = time.perf_counter() - t2

    def figures(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            vals = {m: [r[kind][m] for r in rows if r.get(kind) and m in r[kind]] for m in METRICS}
            if any(vals.values()):
                out[kind] = {m: judge(kind, m, summarize(vals[m])) for m in METRICS}
        return out

    deployments = []
    for e in entries:
        fit = cal.fits.get(e.ds.deployment.key) if cal is not None and e.role == "dev" else None
        deployments.append(
            {
                "name": e.name,
                "role": e.role,
                "key": e.ds.deployment.key,
                "gpu_arch": e.ds.arch,
                "tools": e.tools,
                "levels": len(e.ds.levels),
                "curves": sorted({_short(lv.curve) for lv in e.ds.levels}),
                "engine_limits": e.ds.limits.as_dict(),
                "basis": fit.basis if fit is not None else None,
                "warning": fit.warning if fit is not None else None,
                "theta": [float(v) for v in fit.theta] if fit is not None else None,
                "fit_seconds": cal.seconds.get(e.ds.deployment.key) if fit is not None and cal is not None else None,
                "notes": e.notes,
                "excluded_levels": e.excluded,
                "figures": figures(per_level[e.name]),
                "level_residuals": per_level[e.name],
                "ttft_noise": {"summary": noise_summary(noise_rows[e.name]), "levels": noise_rows[e.name]},
            }
        )
    pooled = {
        "dev": figures([r for e in dev for r in per_level[e.name]]),
        "holdout": figures([r for e in others if e.role == "holdout" for r in per_level[e.name]]),
    }
    warm_free = [r for e in dev for r in per_level[e.name] if not r.get("warmup_tail")]
    warmup = {
        "levels": [f"{e.name}: {r['level']}" for e in entries for r in per_level[e.name] if r.get("warmup_tail")],
        "dev_lolo_ttft_without": figures(warm_free).get("leave_one_level_out", {}).get("ttft"),
    }
    ttft_noise = {
        "settings": {"bootstrap_resamples": boot, "simulator_seeds": seeds, "bootstrap_seed": NOISE_RNG},
        "pooled": {
            "dev": noise_summary([r for e in dev for r in noise_rows[e.name]]),
            "holdout": noise_summary([r for e in others if e.role == "holdout" for r in noise_rows[e.name]]),
        },
    }
    from pipeline.sim import cost

    return {
        "ablate": sorted(ablate),
        "form": cost.STEP_FORM,
        "lolo_warm": not getattr(args, "no_lolo_warm", False),
        "pool": (cal.settings.get("pool") if cal is not None else None),
        "refine_pool": bool(getattr(args, "refine_pool", False)),
        "prompt_pool": bool(getattr(args, "prompt_pool", False)),
        "drop_unphysical_ttft": bool(getattr(args, "drop_unphysical_ttft", False)),
        "nfev": args.nfev,
        "lolo_nfev": args.lolo_nfev,
        "targets": {KIND_LABEL[k]: v for k, v in TARGETS.items()},
        "deployments": deployments,
        "pooled": pooled,
        "pooled_theta": (
            {"theta": [float(v) for v in cal.pooled.theta], "gpu_arch_scale": dict(sorted(cal.pooled.scale.items()))}
            if cal is not None
            else None
        ),
        "skipped": skipped,
        "ttft_noise": ttft_noise,
        "warmup_tails": warmup,
        "seconds": {
            "load": round(t_load, 1),
            "fit_and_residuals": round(t_fit, 1),
            "ttft_noise": round(t_noise, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }


# ------------------------------------------------------------------------------------------------- printing


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.1f}%" if signed else f"{100 * v:.1f}%"


def _status(s: dict[str, Any]) -> str:
    if s.get("target") is None:
        return ""
    if s.get("met") is None:
        return f"<={100 * s['target']:.0f}%  n/a"
    if s["met"]:
        return f"<={100 * s['target']:.0f}%  met"
    return f"<={100 * s['target']:.0f}%  MISSED by {100 * s['missed_by']:.{1 if s['missed_by'] >= 0.01 else 2}f} pp"


def render(result: dict[str, Any], levels: bool = False) -> str:
    """The plain-text table (with every level's residuals when `levels`)."""
    lines = [
        f"engine-model fidelity (simulator replay; refinement nfev {result['nfev']}, LOLO nfev "
        f"{result['lolo_nfev']}; step form {result.get('form', 'additive')}; LOLO warm start "
        f"{'on' if result.get('lolo_warm') else 'off'}; pool {result.get('pool') or 'step1'}"
        f"{' refined' if result.get('refine_pool') else ''}"
        f"{'; prompt pool on' if result.get('prompt_pool') else ''}{'; unphysical TTFTs dropped' if result.get('drop_unphysical_ttft') else ''}; ablated: {', '.join(result.get('ablate') or []) or 'nothing'}); "
        "error = predicted / measured - 1 per level; |e| = median absolute, e = median signed",
        "figures: roofline = prior coefficients; in-sample / LOLO = the deployment's own fit (LOLO refitted without "
        "the level); LODO / transferred = pooled fit without the deployment; calibrated* = the fit of the same "
        "deployment's other sweep (role check)",
        "TTFT = the target metric: p99 where the file has it, else the percentile it has; TTFT p50 = the median, "
        "where the file has it, reported beside it (no target)",
        "",
    ]
    head = f"  {'figure':<12}{'metric':<12}{'n':>4}  {'median |e|':>10}  {'median e':>9}  target"
    metric_label = {"throughput": "throughput", "itl_mean": "mean ITL", "ttft": "TTFT", "ttft_p50": "TTFT p50"}

    def block(figs: dict[str, Any]) -> list[str]:
        out = [head]
        for kind in KINDS:
            for m in METRICS:
                s = figs.get(kind, {}).get(m)
                if not s or not s["n"]:
                    continue
                out.append(
                    f"  {KIND_LABEL[kind]:<12}{metric_label[m]:<12}{s['n']:>4}  {_pct(s['median_abs_rel']):>10}  "
                    f"{_pct(s['median_rel'], True):>9}  {_status(s)}"
                )
        return out

    for d in result["deployments"]:
        lines.append(f"{d['name']}  [{d['role']}; {d['key']}; {d['levels']} levels; {', '.join(d['tools'])}]")
        if d["basis"]:
            lines.append(
                f"  basis {d['basis']}; b0..b5 = "
                + ", ".join(f"{v:.3g}" for v in d["theta"][:6])
                + f"; request overhead {1e3 * d['theta'][6]:.1f} ms"
                + (f"; fitted in {d['fit_seconds']:.2f} s" if d.get("fit_seconds") is not None else "")
            )
        if d["warning"]:
            lines.append(f"  warning: {d['warning']}")
        lines += block(d["figures"])
        for n in d["notes"]:
            lines.append(f"  note: {n}")
        for x in d["excluded_levels"]:
            lines.append(f"  left out: {x}")
        if levels:
            for r in d["level_residuals"]:
                cells = []
                for kind in KINDS:
                    got = r.get(kind)
                    if got:
                        vals = " ".join(f"{metric_label[m]} {_pct(got[m], True)}" for m in METRICS if m in got)
                        cells.append(f"{KIND_LABEL[kind]}: {vals}")
                lines.append(f"  level {r['level']} [TTFT {r['ttft_stat']}]: " + "; ".join(cells))
        lines.append("")
    n_dev = sum(d["role"] == "dev" for d in result["deployments"])
    n_hold = sum(d["role"] == "holdout" for d in result["deployments"])
    lines.append(f"POOLED over the {n_dev} dev deployments (every level)")
    lines += block(result["pooled"]["dev"])
    lines.append("")
    lines.append(f"POOLED over the {n_hold} held-out deployments (never seen by any fit)")
    lines += block(result["pooled"]["holdout"])
    if result["pooled_theta"]:
        pc = result["pooled_theta"]
        lines.append("")
        lines.append(
            "pooled b0..b5 (dev): "
            + ", ".join(f"{v:.3g}" for v in pc["theta"][:6])
            + f"; request overhead {1e3 * pc['theta'][6]:.1f} ms; GPU family scale: "
            + ", ".join(f"{a} x{s:.3f}" for a, s in pc["gpu_arch_scale"].items())
        )
    for s in result["skipped"]:
        lines.append(f"skipped: {s['deployment']}: {s['why']}")
    if result.get("ttft_noise"):
        lines += ["", *render_noise(result, levels)]
    sec = result["seconds"]
    lines.append(f"time: load {sec['load']} s, fit and residuals {sec['fit_and_residuals']} s, total {sec['total']} s")
    return "\n".join(lines) + "\n"


def _target_ttft(d: dict[str, Any]) -> tuple[str, float | None]:
    """The deployment's judged TTFT error: LOLO where it has one, else LODO, else transferred (median |e|)."""
    for kind in ("leave_one_level_out", "leave_one_deployment_out", "transferred"):
        s = (d.get("figures") or {}).get(kind, {}).get("ttft")
        if s and s.get("n"):
            return KIND_LABEL[kind], s["median_abs_rel"]
    return "-", None


def render_noise(result: dict[str, Any], levels: bool = False) -> list[str]:
    """The "TTFT p99 sampling noise" section: per deployment and pooled, the measured statistic's bootstrap noise,
    the simulator's seed-to-seed spread and the median |e| a perfect model would show (the noise floor)."""
    tn = result["ttft_noise"]
    st = tn["settings"]
    lines = [
        "TTFT p99 sampling noise (the judged TTFT statistic: p99 where the file has it). measured: bootstrap over the "
        f"file's requests ({st['bootstrap_resamples']} resamples; iid, and moving blocks of ceil(sqrt(n)) consecutive "
        "requests), or parametric from the stated percentiles where the file holds none per request (inference-perf "
        "lifecycle files); simulator: seed-to-seed spread (std / mean) over "
        f"{st['simulator_seeds']} replay seeds (arrivals and request order) at the deployment's own fit (dev) or the "
        "transferred pool; floor = the median |e| a perfect model would still show = 0.674 x sqrt(SE_meas^2 + SE_sim^2), "
        "SE_meas the larger bootstrap SE",
        f"  {'deployment':<40}{'lv':>3}{'n req':>7}  {'source':<12}{'SE meas':>8}{'95% hw':>8}{'blk SE':>8}{'sim SE':>8}"
        f"{'floor':>8}  TTFT median |e|",
    ]

    def p(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def row(label: str, sm: dict[str, Any], source: str, judged: str) -> str:
        n = sm.get("requests_median")
        return (
            f"  {label:<40}{sm['levels']:>3}{('-' if n is None else f'{n:.0f}'):>7}  {source:<12}"
            f"{p(sm['measured_se_rel']):>8}{p(sm['measured_half_width_rel']):>8}{p(sm['measured_block_se_rel']):>8}"
            f"{p(sm['sim_se_rel']):>8}{p(sm['noise_floor_median_abs_rel']):>8}  {judged}"
        )

    for d in result["deployments"]:
        tnd = d.get("ttft_noise")
        if not tnd:
            continue
        srcs = sorted({r["measured"]["source"] for r in tnd["levels"] if r.get("measured")})
        source = "+".join("requests" if s.startswith("per-request") else "percentiles" for s in srcs) or "none"
        kind, err = _target_ttft(d)
        lines.append(row(d["name"], tnd["summary"], source, f"{kind} {p(err)}"))
        if levels:
            for r in tnd["levels"]:
                m, sim = r.get("measured"), r.get("simulator")
                lines.append(
                    f"    level {r['level']}: "
                    + (
                        f"measured {m['stat']} {1e3 * m['measured_s']:.1f} ms of {m['requests']} ({m['source']}), "
                        f"SE {p(m['se_rel'])}, 95% hw {p(m['half_width_rel'])}, block SE {p(m['block_se_rel'])}; "
                        if m
                        else "measured: no distribution in the file; "
                    )
                    + (f"simulator SE {p(sim['se_rel'])} (range {p(sim['range_rel'])}); " if sim else "")
                    + f"floor {p(r.get('noise_floor'))}"
                )
    pooled = result["pooled"]
    for role, label in (("dev", "POOLED dev"), ("holdout", "POOLED holdout")):
        sm = tn["pooled"].get(role)
        if not sm or not sm["levels"]:
            continue
        key = "leave_one_level_out" if role == "dev" else "transferred"
        s = pooled.get(role, {}).get(key, {}).get("ttft") or {}
        lines.append(row(label, sm, "", f"{KIND_LABEL[key]} {p(s.get('median_abs_rel'))}"))
    sec = result.get("seconds", {}).get("ttft_noise")
    if sec is not None:
        lines.append(f"  (noise figures in {sec} s)")
    wt = result.get("warmup_tails")
    if wt and wt["levels"]:
        w = wt.get("dev_lolo_ttft_without") or {}
        lines.append(
            f"  warm-up tails (first stage, TTFT p95 < {WARMUP_BULK:g}x p50 and p99 > {WARMUP_TAIL:g}x p95; a diagnostic, "
            f"the judged figures keep them): {len(wt['levels'])} level(s); dev LOLO TTFT without them "
            f"{p(w.get('median_abs_rel'))} over {w.get('n', 0)} levels"
        )
        lines += [f"    {name}" for name in wt["levels"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--render", metavar="RESULT.json", help="print the table of a saved --json result and exit")
    ap.add_argument("--levels", action="store_true", help="also print every level's residuals")
    ap.add_argument("--nfev", type=int, default=None, help="refinement evaluations per fit (calibrate's default)")
    ap.add_argument("--lolo-nfev", type=int, default=None, help="refinement evaluations per LOLO refit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these registry deployments")
    ap.add_argument("--fixtures", default=str(FIXTURES), help="the shared benchmark fixtures folder")
    ap.add_argument(
        "--form",
        default=None,
        help="the iteration-time form (pipeline/sim/cost.py STEP_FORMS; default cost.STEP_FORM): fits, prior and "
        "simulator all use it",
    )
    ap.add_argument(
        "--no-lolo-warm",
        action="store_true",
        help="leave-one-level-out refits start from their own step 1 only (calibrate.LOLO_WARM off)",
    )
    ap.add_argument("--pool", default=None, help="how the pooled fit is made (calibrate.POOLS; default calibrate.POOL)")
    ap.add_argument(
        "--refine-pool", action="store_true", help="refine the step-1 pool through the simulator (~4x the time)"
    )
    ap.add_argument(
        "--drop-unphysical-ttft",
        action="store_true",
        help="leave out of the fits the TTFT of levels faster than any cold prefill at peak FLOPs "
        "(calibrate.DROP_UNPHYSICAL_TTFT; off by default)",
    )
    ap.add_argument(
        "--prompt-pool",
        action="store_true",
        help="replay inference-perf's shared-prefix prompt pool (calibrate.PROMPT_POOL; off by default, ~3x the time)",
    )
    ap.add_argument(
        "--noise-boot",
        type=int,
        default=NOISE_BOOT,
        help="bootstrap resamples of each measured TTFT statistic (0: no measured noise)",
    )
    ap.add_argument(
        "--noise-seeds",
        type=int,
        default=NOISE_SEEDS,
        help="replay seeds of the simulator's TTFT spread (0 or 1: none)",
    )
    ap.add_argument(
        "--ablate",
        nargs="+",
        default=[],
        choices=ABLATIONS,
        help="switch a model refinement off, to measure what it changes (before/after)",
    )
    args = ap.parse_args(argv)
    if args.render:
        sys.stdout.write(render(json.loads(Path(args.render).read_text(encoding="utf-8")), args.levels))
        return 0
    try:
        from pipeline.sim import calibrate
    except ImportError as exc:
        print(
            f"error: pipeline/sim/calibrate.py is not importable ({exc}); the fidelity benchmark uses its fits",
            file=sys.stderr,
        )
        return 1
    from pipeline.sim import cost

    if args.form is not None:
        if args.form not in cost.STEP_FORMS:
            print(f"error: --form = {args.form!r}; allowed: {', '.join(cost.STEP_FORMS)}", file=sys.stderr)
            return 1
        cost.STEP_FORM = args.form
    if args.pool is not None and args.pool not in calibrate.POOLS:
        print(f"error: --pool = {args.pool!r}; allowed: {', '.join(calibrate.POOLS)}", file=sys.stderr)
        return 1
    if args.nfev is None:
        args.nfev = calibrate.REFINE_NFEV
    if args.lolo_nfev is None:
        args.lolo_nfev = args.nfev
    try:
        result = run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True, default=float))
    else:
        sys.stdout.write(render(result, args.levels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
