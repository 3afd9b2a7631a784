"""The deployment sheet: what to run for the adopted plan, every value with the step and figure it came from.

Pure: `build()` takes the metrics documents (fleet, operating_point, memory, workload, validation targets),
the catalog's Hugging Face repository per model and the params `engine` section, and returns the sheet
(metrics/deploy.json); `to_yaml()` renders one tier of it as data/deploy/<tier>.yaml, each value followed by
a comment naming its source. The stage (pipeline/stages/deploy.py) reads and writes the files.

Per tier of the adopted plan (fleet.json `per_tier`):

- the `vllm serve` arguments (flag names as vLLM's `vllm/engine/arg_utils.py` spells them):
  `--tensor-parallel-size` / `--pipeline-parallel-size` (the fleet's deployment, step 6/10),
  `--max-model-len` (the tier's p99 context, step 1, rounded up to a whole KV block),
  `--gpu-memory-utilization` (the engine profile, step 4), `--max-num-seqs` (step 10's C_max: the
  concurrency per replica at which the SLO still holds, rounded down; the closed-loop curve measured it),
  `--max-num-batched-tokens` (what the benchmark behind the operating point ran with: its manifest notes'
  flag, else the engine default of params `engine`), `--kv-cache-dtype` and `--quantization` (step 5),
  `--enable-prefix-caching` when step 8 recommends it, else `--no-enable-prefix-caching` (vLLM V1 turns it
  on by default);
- replicas: the static fleet and the instances per hour of day (step 11's schedule);
- the gateway guardrails (step 11): max input tokens, the circuit breaker's queue depth;
- the autoscaling thresholds: step 13's targets for queue depth and KV-cache usage.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from pipeline.errors import InputError

# vLLM's --kv-cache-dtype for each KV precision the pipeline sizes (quantization.KV_DTYPES): 16-bit KV
# is "auto" (the model's dtype); "fp8" is e4m3 on NVIDIA, as the memory stage sized it.
KV_CACHE_DTYPE = {"bf16": "auto", "fp16": "auto", "fp8": "fp8"}
# vLLM's --quantization for weights it can quantize at load time; other precisions need a pre-quantized
# checkpoint (vLLM reads its method from the checkpoint's config), named in the sheet's notes.
QUANTIZATION = {"fp8": "fp8"}
PRE_QUANTIZED = {
    "int8": "serve a W8A8 INT8 checkpoint (e.g. compressed-tensors); vLLM reads the method from its config",
    "int4": "serve an AWQ or GPTQ 4-bit checkpoint; vLLM reads the method from its config",
    "fp4": "serve an FP4 (NVFP4) checkpoint; vLLM reads the method from its config",
    "mxfp4": "serve an MXFP4 checkpoint; vLLM reads the method from its config",
}
DEFAULT_BLOCK_SIZE = 16
# step 13's targets (pipeline/validation.py BANDS): (metric, low, high) that the autoscaler acts on
SCALE_METRICS = {
    "queue_depth": "vllm:num_requests_waiting",
    "kv_cache_usage_pct": "vllm:kv_cache_usage_perc (x 100)",
}
FLAG_RE = {
    "max_num_seqs": re.compile(r"--max[-_]num[-_]seqs[= ](\d+)"),
    "max_num_batched_tokens": re.compile(r"--max[-_]num[-_]batched[-_]tokens[= ](\d+)"),
}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def v(value: Any, source: str) -> dict[str, Any]:
    """One value of the sheet with the step and figure it came from."""
    return {"value": value, "source": source}


def file_stem(tier: str) -> str:
    """The YAML file name of a tier: the name itself when it is a plain file name, else a readable slug
    plus a short hash of the name (two tiers never share a file; names with `/` or markup stay out of paths)."""
    if SAFE_NAME.fullmatch(tier) and len(tier) <= 80:
        return tier
    import hashlib

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", tier).strip("-.")[:40] or "tier"
    return f"{slug}-{hashlib.sha256(tier.encode('utf-8')).hexdigest()[:8]}"


def _num(x: Any) -> str:
    """A figure as the sheet's sources print it: up to 4 significant digits, no trailing zeros."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.2f}".rstrip("0").rstrip(".")
    return f"{x:.4g}"


def _need(doc: dict[str, Any], key: str, file: str, where: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
    value = doc.get(key) if isinstance(doc, dict) else None
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        want = "a number" if kind == (int, float) else getattr(kind, "__name__", "a value")
        raise InputError(f"{file}: {where}{key}: got {value!r}; expected {want} (rerun `dvc repro`)")
    return value


def _recommended(recs: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    for rec in recs or []:
        if rec.get("name") == name:
            return rec
    return None


def _tier_op(op: dict[str, Any], tier: str) -> tuple[dict[str, Any], str]:
    """The operating point a tier's fleet was sized on and its key path: per_tier.<t>, or the top level for 'all'."""
    per = op.get("per_tier") or {}
    if tier in per and "error" not in per[tier]:
        return per[tier], f"per_tier.{tier}."
    if tier == "all":
        return op, ""
    raise InputError(
        f"metrics/operating_point.json: per_tier.{tier}: missing; expected the operating point the fleet "
        f"of tier {tier!r} was sized on (rerun `dvc repro`)"
    )


def _context_p99(workload: dict[str, Any], tier: str) -> tuple[float, str]:
    if tier != "all" and tier in (workload.get("tiers") or {}):
        ctx, where = workload["tiers"][tier].get("context_tokens") or {}, f"tiers.{tier}.context_tokens.p99"
    else:
        ctx, where = workload.get("context_tokens") or {}, "context_tokens.p99"
    value = ctx.get("p99") if isinstance(ctx, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise InputError(f"metrics/workload.json: {where}: got {value!r}; expected a number of tokens > 0")
    return float(value), where


ProfileAt = Callable[[str, str, str, str, int, int, float], dict[str, Any] | None]
"""(model, gpu, weights, kv, tp, pp, context tokens) -> the engine profile (pipeline.memory.EngineProfile.as_dict)
of that deployment, or None when it cannot be computed; the stage passes pipeline.memory's engine_profile."""


def _int(x: Any) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 1 and x == int(x) else None


def adopted_profile(
    tier: str,
    model: str,
    gpu: str,
    weights: str,
    kv: str,
    tp: int,
    pp: int,
    memory: dict[str, Any],
    profile_at: ProfileAt | None = None,
) -> tuple[str, dict[str, Any], dict[str, Any] | None, str, list[str]]:
    """The engine profile of the deployment the fleet runs (TP `tp` x PP `pp`), not just the memory stage's pick.

    Returns (candidate id, engine profile, memory.json entry or None, where the profile comes from, notes). The id
    is `<tier>/<gpu>/w-/kv-` when memory.json sized that TP x PP, else the id tco.json gives the fleet
    (`.../tp<N>[-pp<M>]`); its profile is memory.json's entry of that id if any, else `profile_at` recomputes it
    (pipeline.memory.engine_profile at the fleet's TP, the memory stage's context), else none is used (a note
    says so and the params defaults apply)."""
    cands = memory.get("candidates") or {}
    base = f"{tier}/{gpu}/w-{weights}/kv-{kv}"
    alt = f"{base}/tp{tp}" + (f"-pp{pp}" if pp > 1 else "")
    entry = cands.get(base)
    m_tp, m_pp = (_int((entry or {}).get("tp")), _int((entry or {}).get("pp")) or 1)
    if entry is not None and (m_tp is None or (m_tp, m_pp) == (tp, pp)):
        return base, entry.get("engine") or {}, entry, f"metrics/memory.json candidates.{base}.engine", []
    if isinstance(cands.get(alt), dict):
        return alt, cands[alt].get("engine") or {}, cands[alt], f"metrics/memory.json candidates.{alt}.engine", []
    if entry is None:
        return base, {}, None, "", []
    sized = f"metrics/memory.json sizes {base} at TP {m_tp} x PP {m_pp}; the fleet runs TP {tp} x PP {pp}"
    ctx = entry.get("context_tokens_p95") or (entry.get("engine") or {}).get("context_tokens")
    prof = None
    if profile_at is not None and isinstance(ctx, (int, float)) and ctx > 0:
        prof = profile_at(model, gpu, weights, kv, tp, pp, float(ctx))
    if prof:
        where = f"pipeline.memory.engine_profile of {alt} at TP {tp} x PP {pp}, {_num(ctx)} context tokens ({sized})"
        shown = {**entry, "tp": tp, "pp": pp, "max_concurrency_per_replica": prof.get("max_concurrency_per_replica")}
        return alt, prof, shown, where, [f"engine profile recomputed at the fleet's TP: {sized}"]
    note = f"{sized}: its TP {m_tp} engine profile is not used; the params engine defaults apply"
    return alt, {}, None, "", [note]


def bench_replicas(op: dict[str, Any], t_op: dict[str, Any]) -> tuple[int, str]:
    """The replicas the benchmark behind an operating point ran (its C_max is their total concurrency) and where
    that figure comes from: the operating point's replicas_in_benchmark, the curve's (operating_point.json
    curves.<curve>), the manifest's `replicas`, else manifest gpu_count / (tp x pp); 1 when none says more."""
    point = t_op.get("operating_point")
    if isinstance(point, dict) and _int(point.get("replicas_in_benchmark")):
        return int(point["replicas_in_benchmark"]), "operating_point.replicas_in_benchmark"
    name = t_op.get("curve")
    if not isinstance(name, str):
        name = (t_op.get("curve_source") or {}).get("curve") if isinstance(t_op.get("curve_source"), dict) else None
    curve = (op.get("curves") or {}).get(name) if isinstance(name, str) else None
    if isinstance(curve, dict) and _int(curve.get("replicas_in_benchmark")):
        return int(curve["replicas_in_benchmark"]), f"curves.{name}.replicas_in_benchmark"
    man = t_op.get("manifest") or {}
    if _int(man.get("replicas")):
        return int(man["replicas"]), "manifest.replicas"
    gc, mtp, mpp = _int(man.get("gpu_count")), _int(man.get("tp")), _int(man.get("pp")) or 1
    if gc and mtp and gc > mtp * mpp:
        return gc // (mtp * mpp), f"manifest gpu_count {gc} / (tp {mtp} x pp {mpp})"
    return 1, ""


def tier_sheet(
    tier: str,
    fleet_t: dict[str, Any],
    plan: str,
    op: dict[str, Any],
    memory: dict[str, Any],
    workload: dict[str, Any],
    hf_repos: dict[str, str],
    engine: dict[str, Any],
    targets: dict[str, tuple[float | None, float | None, str]],
    profile_at: ProfileAt | None = None,
) -> dict[str, Any]:
    """One tier's sheet: the serve arguments, replicas, gateway guardrails and autoscaling thresholds, sourced."""
    fw = f"per_tier.{tier}."
    F = "metrics/fleet.json"
    model = _need(fleet_t, "model", F, fw, str)
    gpu = _need(fleet_t, "gpu", F, fw, str)
    weights = _need(fleet_t, "weight_dtype", F, fw, str)
    kv = _need(fleet_t, "kv_dtype", F, fw, str)
    tp = int(_need(fleet_t, "tp", F, fw))
    pp = int(_need(fleet_t, "pp", F, fw))
    static = int(_need(fleet_t, "total_instances", F, fw))
    if kv not in KV_CACHE_DTYPE:
        raise InputError(
            f"{F}: {fw}kv_dtype: {kv!r} has no vLLM --kv-cache-dtype; expected one of {', '.join(KV_CACHE_DTYPE)}"
        )
    t_op, ow = _tier_op(op, tier)
    cand_id, prof, cand, prof_where, notes = adopted_profile(tier, model, gpu, weights, kv, tp, pp, memory, profile_at)
    where = f"fleet {tier} ({plan} plan)"

    repo = hf_repos.get(model) or model
    model_v = v(
        repo,
        f"step 3/11: {where} serves {model} ({F} {fw}model); Hugging Face repository from data/catalog/models.csv hf_repo"
        + ("" if hf_repos.get(model) else ": none listed, the catalog name is used"),
    )
    manifest = t_op.get("manifest") or {}
    deployment_src = (
        f"step 10/11: the deployment the fleet is sized on, TP {tp} x PP {pp} on {gpu} "
        f"({F} {fw}tp, {fw}pp; {manifest.get('file') or 'the curve its operating point comes from'})"
    )
    args: list[dict[str, Any]] = [
        {"flag": "--tensor-parallel-size", **v(tp, deployment_src)},
        {"flag": "--pipeline-parallel-size", **v(pp, deployment_src)},
    ]

    ctx, ctx_where = _context_p99(workload, tier)
    block = int(prof.get("block_size") or engine.get("block_size") or DEFAULT_BLOCK_SIZE)
    max_len = int(math.ceil(ctx / block) * block)
    len_src = (
        f"step 1: p99 context {_num(ctx)} tokens (metrics/workload.json {ctx_where}), rounded up to a whole "
        f"KV block of {block}"
    )
    ceiling = prof.get("estimated_max_model_len")
    if isinstance(ceiling, (int, float)) and not isinstance(ceiling, bool) and 0 < ceiling < max_len:
        notes.append(
            f"the p99 context ({max_len:,} tokens) exceeds the longest context the KV cache holds "
            f"({int(ceiling):,}, step 4 engine profile): --max-model-len is capped there"
        )
        max_len, len_src = int(ceiling), len_src + f"; capped at the KV cache's {int(ceiling):,} (step 4)"
    args.append({"flag": "--max-model-len", **v(max_len, len_src)})

    if "gpu_memory_utilization" in prof:
        gmu = v(
            float(prof["gpu_memory_utilization"]),
            f"step 4: engine profile of {cand_id}, TP {tp} x PP {pp} ({prof_where}.gpu_memory_utilization)",
        )
    else:
        gmu = v(
            float(engine["gpu_memory_utilization"]),
            f"params.yaml engine.gpu_memory_utilization (metrics/memory.json has no engine profile for {cand_id})",
        )
    args.append({"flag": "--gpu-memory-utilization", **gmu})

    flags = {k: int(m[1]) for k, rx in FLAG_RE.items() if (m := rx.search(str(manifest.get("notes") or "")))}
    load_kind = t_op.get("load_kind")
    c_max = t_op.get("c_max")
    bench_seqs = flags.get("max_num_seqs", int(engine["max_num_seqs"]))
    n_bench, n_where = bench_replicas(op, t_op)
    if load_kind == "concurrency" and isinstance(c_max, (int, float)) and c_max / n_bench >= 1:
        per_replica = c_max / n_bench
        seqs = min(math.floor(per_replica), bench_seqs)
        if n_bench > 1:
            seqs_src = (
                f"step 10: C_max {_num(c_max)} concurrent requests at the SLO over the benchmark's {n_bench} replicas "
                f"(metrics/operating_point.json {ow}c_max / {n_where}) = {_num(per_replica)} per replica, rounded down"
            )
        else:
            seqs_src = (
                f"step 10: C_max {_num(c_max)} concurrent requests per replica at the SLO "
                f"(metrics/operating_point.json {ow}c_max), rounded down"
            )
        if seqs < math.floor(per_replica):
            seqs_src += f"; the benchmark's own --max-num-seqs {bench_seqs} is lower and kept"
    else:
        mc = (cand or {}).get("max_concurrency_per_replica")
        if isinstance(mc, (int, float)) and mc >= 1:
            seqs = int(mc)
            seqs_src = (
                f"step 4: the KV cache holds {int(mc)} requests per replica at the p95 context ({prof_where or 'metrics/memory.json'} "
                f"max_concurrency_per_replica of {cand_id}); step 10's curve is {load_kind or 'not'} "
                "loaded, so it gives no concurrency"
            )
        else:
            seqs, seqs_src = bench_seqs, "params.yaml engine.max_num_seqs: no concurrency from step 10 or step 4"
    kv_mc = (cand or {}).get("max_concurrency_per_replica")
    if isinstance(kv_mc, (int, float)) and 0 < kv_mc < seqs:
        notes.append(
            f"--max-num-seqs {seqs} is above the {int(kv_mc)} requests the KV cache holds at the p95 context "
            f"(step 4, {cand_id}): expect preemptions at the p95 length; the benchmark measured {seqs} at its lengths"
        )
    args.append({"flag": "--max-num-seqs", **v(seqs, seqs_src)})

    if "max_num_batched_tokens" in flags:
        tokens = flags["max_num_batched_tokens"]
        tok_src = f"step 10: the benchmark behind the operating point ran with it ({manifest.get('file') or 'manifest'} notes)"
    else:
        tokens = int(engine["max_num_batched_tokens"])
        tok_src = (
            "step 10: what the benchmark behind the operating point ran with: its manifest states no "
            f"--max-num-batched-tokens, so the engine default {tokens:,} (params.yaml engine.max_num_batched_tokens)"
        )
    if tokens < seqs:  # vLLM refuses to start when max_num_batched_tokens < max_num_seqs
        tokens, tok_src = seqs, tok_src + f"; raised to --max-num-seqs {seqs} (vLLM requires at least that)"
    args.append({"flag": "--max-num-batched-tokens", **v(tokens, tok_src)})

    args.append(
        {
            "flag": "--kv-cache-dtype",
            **v(
                KV_CACHE_DTYPE[kv],
                f"step 5: KV cache {kv} ({F} {fw}kv_dtype)"
                + ("; auto = the model's 16-bit dtype" if KV_CACHE_DTYPE[kv] == "auto" else ""),
            ),
        }
    )
    if weights in QUANTIZATION:
        args.append(
            {
                "flag": "--quantization",
                **v(
                    QUANTIZATION[weights],
                    f"step 5: weights {weights} ({F} {fw}weight_dtype), quantized as vLLM loads them",
                ),
            }
        )
    elif weights in PRE_QUANTIZED:
        notes.append(f"weights {weights} (step 5): {PRE_QUANTIZED[weights]}")

    recs = t_op.get("recommendations")
    prefix = _recommended(recs, "prefix_caching")
    rec_where = f"metrics/operating_point.json {ow}recommendations prefix_caching"
    if prefix is not None and prefix.get("verdict") == "recommended":
        args.append(
            {
                "flag": "--enable-prefix-caching",
                **v(True, f"step 8: recommended: {prefix.get('evidence', '')} ({rec_where})"),
            }
        )
        if prefix.get("warning"):
            notes.append(f"prefix caching (step 8): {prefix['warning']}")
    else:
        verdict = prefix.get("verdict") if prefix else "no verdict"
        args.append(
            {
                "flag": "--no-enable-prefix-caching",
                **v(True, f"step 8: prefix caching {verdict} ({rec_where}); vLLM V1 enables it unless told not to"),
            }
        )
    for rec in recs or []:
        if rec.get("name") != "prefix_caching" and rec.get("verdict") == "recommended":
            notes.append(f"step 8-9 recommends {rec['name'].replace('_', ' ')}: {rec.get('action', '')}")

    command = " ".join(["vllm", "serve", _shell(repo)] + [_arg(a) for a in args])

    sched = fleet_t.get("schedule")
    replicas: dict[str, Any] = {
        "static": v(static, f"step 11: {fleet_t.get('formula') or 'the fleet formula'} ({F} {fw}total_instances)"),
        "gpus_per_replica": v(tp * pp, f"step 11: TP {tp} x PP {pp} ({F} {fw}gpus_per_instance)"),
    }
    if sched:
        hours = [
            {"hour": str(h["hour"]), "replicas": int(h["instances"]), "p95_rps": h.get("rps")}
            for h in sched.get("hours") or []
        ]
        src = f"step 11: scaling schedule ({F} {fw}schedule.hours[].instances: p95 rate of the hour x safety / usable, + spares)"
        replicas["min"] = v(int(sched["min_instances"]), f"step 11: {F} {fw}schedule.min_instances")
        replicas["peak"] = v(int(sched["peak_instances"]), f"step 11: {F} {fw}schedule.peak_instances")
        replicas["by_hour"] = v(hours, src)
        cold = (fleet_t.get("cold_start") or {}).get("seconds")
        if isinstance(cold, (int, float)):
            replicas["scale_up_lead_s"] = v(
                math.ceil(cold),
                f"step 11: cold start {_num(cold)} s ({F} {fw}cold_start.seconds): start each rise that early",
            )
    else:
        why = fleet_t.get("schedule_note") or "no schedule"
        replicas["min"] = v(static, f"step 11: no schedule ({why}): the static fleet runs all day")
        replicas["peak"] = v(static, f"step 11: no schedule ({why}): the static fleet runs all day")
        replicas["by_hour"] = v(None, f"step 11: no schedule ({why})")

    guard = fleet_t.get("guardrails") or {}
    gw = f"{F} {fw}guardrails"
    gateway = {
        "max_input_tokens": v(
            int(_need(guard, "max_input_tokens", F, f"{fw}guardrails.")),
            f"step 11: {_formula_part(guard, 'max_input_tokens')} ({gw}.max_input_tokens)",
        ),
        "circuit_breaker_queue_depth": v(
            int(_need(guard, "circuit_breaker_queue_depth", F, f"{fw}guardrails.")),
            f"step 11: {_formula_part(guard, 'queue depth')} ({gw}.circuit_breaker_queue_depth): shed load above this many queued requests",
        ),
    }
    if gateway["max_input_tokens"]["value"] > max_len:
        step11 = gateway["max_input_tokens"]["value"]
        gateway["max_input_tokens"] = v(
            max_len,
            f"step 11 capped by step 1: {gateway['max_input_tokens']['source']} = {step11:,} is above --max-model-len "
            f"{max_len:,} (the p99 context), so the gateway refuses such prompts itself instead of vLLM's HTTP 400",
        )
        notes.append(
            f"the gateway's input limit is lowered from step 11's {step11:,} tokens to --max-model-len {max_len:,} "
            f"(the p99 context): longer prompts are refused at the gateway; raise --max-model-len (more KV per "
            f"request) to serve them"
        )

    _q_low, q_high, q_target = targets["queue_depth"]
    k_low, k_high, k_target = targets["kv_cache_usage_pct"]
    autoscaling = {
        "min_replicas": replicas["min"],
        "max_replicas": v(static, f"step 11: the static fleet ({F} {fw}total_instances): never above the sized peak"),
        "scale_up_queue_depth_per_replica": v(
            q_high,
            f"step 13 target for queue depth: {q_target}: scale up when mean {SCALE_METRICS['queue_depth']} per replica exceeds it",
        ),
        "scale_up_kv_cache_usage_pct": v(
            k_high,
            f"step 13 target for KV-cache usage: {k_target}: scale up when mean {SCALE_METRICS['kv_cache_usage_pct']} exceeds the top of the band",
        ),
        "scale_down_kv_cache_usage_pct": v(
            k_low,
            f"step 13 target for KV-cache usage: {k_target}: scale down when below the band and the queue is empty",
        ),
    }
    return {
        "tier": tier,
        "plan": plan,
        "file": f"data/deploy/{file_stem(tier)}.yaml",
        "engine": "vllm",
        "gpu": v(gpu, f"step 2/11: {F} {fw}gpu"),
        "model": model_v,
        "candidate": cand_id if cand is not None else None,
        "args": args,
        "command": command,
        "replicas": replicas,
        "gateway": gateway,
        "autoscaling": autoscaling,
        "synthetic": bool(fleet_t.get("synthetic_curve")),
        "notes": notes,
    }


def _formula_part(guard: dict[str, Any], key: str) -> str:
    """The part of the guardrails' formula that names `key` (`max_input_tokens = 2.5 x p95 input 7766.3`)."""
    for part in str(guard.get("formula") or "").split(";"):
        if part.strip().startswith(key):
            return part.strip()
    return "gateway guardrail"


def _shell(word: str) -> str:
    """A word as a POSIX shell reads it literally (single quotes when it holds anything but plain characters)."""
    if re.fullmatch(r"[A-Za-z0-9_./:=@%+-]+", word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def _arg(a: dict[str, Any]) -> str:
    if a["value"] is True:
        return a["flag"]
    return f"{a['flag']} {_shell(str(a['value']))}"


def argv(a: dict[str, Any]) -> list[str]:
    """One serve argument as argv words: `[flag]` for a switch, `[flag, value]` otherwise."""
    return [a["flag"]] if a["value"] is True else [a["flag"], str(a["value"])]


def build(
    fleet: dict[str, Any],
    op: dict[str, Any],
    memory: dict[str, Any],
    workload: dict[str, Any],
    validation: dict[str, Any],
    hf_repos: dict[str, str],
    engine: dict[str, Any],
    bands: tuple[tuple[Any, ...], ...],
    profile_at: ProfileAt | None = None,
) -> dict[str, Any]:
    """The deployment sheet of the adopted plan (metrics/deploy.json): one entry per tier of fleet.json `per_tier`.

    `bands`: step 13's target bands (pipeline/validation.py BANDS: metric, low, high, target text, source);
    validation.json's own target text is preferred when it has the metric. Every input is checked before
    anything is returned: a missing figure is one InputError naming the file and key.
    """
    per_tier = fleet.get("per_tier")
    if not isinstance(per_tier, dict) or not per_tier:
        raise InputError(
            "metrics/fleet.json: per_tier: missing or empty; expected the adopted plan's fleets (rerun `dvc repro`)"
        )
    plan = str(fleet.get("plan") or "pooled")
    measured = validation.get("metrics") or {}
    targets: dict[str, tuple[float | None, float | None, str]] = {}
    for name, low, high, text, _source in bands:
        if name in SCALE_METRICS:
            shown = (measured.get(name) or {}).get("target")
            where = f"metrics/validation.json metrics.{name}.target" if shown else "pipeline/validation.py BANDS"
            targets[name] = (low, high, f"{shown or text} ({where})")
    missing = sorted(set(SCALE_METRICS) - set(targets))
    if missing:
        raise InputError(f"pipeline/validation.py: BANDS: no step-13 target for {', '.join(missing)}")
    files: dict[str, str] = {}
    tiers = {}
    for tier in sorted(per_tier):
        sheet = tier_sheet(tier, per_tier[tier], plan, op, memory, workload, hf_repos, engine, targets, profile_at)
        if sheet["file"] in files:
            raise InputError(
                f"metrics/fleet.json: per_tier: tiers {files[sheet['file']]!r} and {tier!r} share {sheet['file']}"
            )
        files[sheet["file"]] = tier
        tiers[tier] = sheet
    return {
        "plan": plan,
        "total_gpus": fleet.get("total_gpus"),
        "gpus_by_type": fleet.get("gpus_by_type"),
        "synthetic": any(t["synthetic"] for t in tiers.values()),
        "tiers": tiers,
        "formulas": {
            "--max-model-len": "the tier's p99 context (input + output tokens), rounded up to a whole KV block",
            "--max-num-seqs": "floor(C_max / the benchmark's replicas) of the tier's closed-loop operating point "
            "(step 10): the concurrency per replica",
            "--gpu-memory-utilization": "the engine profile of the deployment the fleet runs (its TP x PP; "
            "recomputed with pipeline.memory.engine_profile when metrics/memory.json sized another TP)",
            "--max-num-batched-tokens": "the flag the benchmark ran with (manifest notes), else params engine default",
            "autoscaling": "step 13's targets: queue depth <= 1 per replica, KV-cache usage 75-90%",
        },
    }


def _scalar(value: Any) -> str:
    """A YAML scalar: numbers and booleans plain, strings JSON-quoted (a JSON string is a YAML double-quoted one)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=True)


def _comment(source: str) -> str:
    return "  # " + " ".join(str(source).split())


def to_yaml(sheet: dict[str, Any]) -> str:
    """data/deploy/<tier>.yaml: one tier's sheet as YAML, each value with a `# source` comment (same sheet, same bytes)."""
    t = sheet
    out = [
        f"# Deployment sheet: fleet {json.dumps(t['tier'], ensure_ascii=True)} of the {t['plan']} plan.",
        "# Written by the deploy stage (dvc repro) from metrics/*.json: do not edit by hand. Each value's comment",
        "# names the step and the figure it came from; reports/deploy.html shows the same sheet.",
    ]
    if t["synthetic"]:
        out.append("# SYNTHETIC: a curve that sized this fleet is the shipped sample, not a measured benchmark.")
    out += [
        f"tier: {_scalar(t['tier'])}",
        f"engine: {_scalar(t['engine'])}",
        f"gpu: {_scalar(t['gpu']['value'])}{_comment(t['gpu']['source'])}",
        f"model: {_scalar(t['model']['value'])}{_comment(t['model']['source'])}",
        "serve:",
        "  args:  # vllm serve <model> followed by these",
    ]
    for a in t["args"]:
        words = argv(a)
        out.append(f"    - {_scalar(words[0])}{_comment(a['source'])}")
        if len(words) > 1:
            out.append(f"    - {_scalar(words[1])}")
    out.append(f"  command: {_scalar(t['command'])}")
    r = t["replicas"]
    out += [
        "replicas:",
        f"  static: {_scalar(r['static']['value'])}{_comment(r['static']['source'])}",
        f"  gpus_per_replica: {_scalar(r['gpus_per_replica']['value'])}{_comment(r['gpus_per_replica']['source'])}",
        f"  min: {_scalar(r['min']['value'])}{_comment(r['min']['source'])}",
        f"  peak: {_scalar(r['peak']['value'])}{_comment(r['peak']['source'])}",
    ]
    if "scale_up_lead_s" in r:
        out.append(
            f"  scale_up_lead_s: {_scalar(r['scale_up_lead_s']['value'])}{_comment(r['scale_up_lead_s']['source'])}"
        )
    hours = r["by_hour"]["value"]
    if hours is None:
        out.append(f"  by_hour: null{_comment(r['by_hour']['source'])}")
    else:
        out.append(f"  by_hour:{_comment(r['by_hour']['source'])}")
        out += [f"    {_scalar(h['hour'])}: {h['replicas']}" for h in hours]
    g = t["gateway"]
    out += ["gateway:"] + [f"  {k}: {_scalar(x['value'])}{_comment(x['source'])}" for k, x in g.items()]
    out += ["autoscaling:"] + [
        f"  {k}: {_scalar(x['value'])}{_comment(x['source'])}" for k, x in t["autoscaling"].items()
    ]
    out.append("notes:" + ("" if t["notes"] else " []"))
    out += [f"  - {_scalar(n)}" for n in t["notes"]]
    return "\n".join(out) + "\n"


# --- the report's HTML (reports/deploy.html): every value from an input escaped as text --------------------

TABLE_STYLE = "width:100%;table-layout:fixed;border-collapse:collapse;overflow-wrap:anywhere;word-break:break-word"


def table_html(header: tuple[str, ...], rows: list[tuple[Any, ...]], widths: tuple[str, ...] = ()) -> str:
    """An HTML table of text cells (each escaped), fixed layout so it wraps inside the page rather than widening it."""
    from pipeline.text import plain

    cols = "".join(f'<col style="width:{w}">' for w in widths)
    head = "".join(f'<th style="text-align:left">{plain(h)}</th>' for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td style="text-align:left;vertical-align:top">{plain(_cell(c))}</td>' for c in row)
        + "</tr>"
        for row in rows
    )
    return f'<table class="deploy" style="{TABLE_STYLE}"><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any) -> str:
    if value is True:
        return "(switch)"
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10_000 else f"{value:,}"
    return str(value)


def command_html(t: dict[str, Any]) -> str:
    """The `vllm serve` command, one argument a line (shell continuations), wrapped inside the page."""
    from pipeline.text import plain

    lines = [f"vllm serve {_shell(t['model']['value'])}"] + [_arg(a) for a in t["args"]]
    text = " \\\n    ".join(lines)
    return f'<pre style="white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%">{plain(text)}</pre>'


def args_rows(t: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(flag, value, source) per serve argument, the model first; values as typed on the command line."""
    return [("model (positional)", t["model"]["value"], t["model"]["source"])] + [
        (a["flag"], argv(a)[1] if len(argv(a)) > 1 else "(switch)", a["source"]) for a in t["args"]
    ]


def ops_rows(t: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(what, value, source) for replicas, gateway guardrails and autoscaling thresholds."""
    r, g, a = t["replicas"], t["gateway"], t["autoscaling"]
    rows = [
        ("replicas, static", r["static"]["value"], r["static"]["source"]),
        ("GPUs per replica", r["gpus_per_replica"]["value"], r["gpus_per_replica"]["source"]),
        ("replicas, fewest in the day", r["min"]["value"], r["min"]["source"]),
        ("replicas, most in the day", r["peak"]["value"], r["peak"]["source"]),
    ]
    if "scale_up_lead_s" in r:
        rows.append(("scale-up lead (s)", r["scale_up_lead_s"]["value"], r["scale_up_lead_s"]["source"]))
    rows += [
        ("gateway: max input tokens", g["max_input_tokens"]["value"], g["max_input_tokens"]["source"]),
        (
            "gateway: circuit breaker, queued requests",
            g["circuit_breaker_queue_depth"]["value"],
            g["circuit_breaker_queue_depth"]["source"],
        ),
        ("autoscaler: min replicas", a["min_replicas"]["value"], a["min_replicas"]["source"]),
        ("autoscaler: max replicas", a["max_replicas"]["value"], a["max_replicas"]["source"]),
        (
            "autoscaler: scale up above queued per replica",
            a["scale_up_queue_depth_per_replica"]["value"],
            a["scale_up_queue_depth_per_replica"]["source"],
        ),
        (
            "autoscaler: scale up above KV-cache usage (%)",
            a["scale_up_kv_cache_usage_pct"]["value"],
            a["scale_up_kv_cache_usage_pct"]["source"],
        ),
        (
            "autoscaler: scale down below KV-cache usage (%)",
            a["scale_down_kv_cache_usage_pct"]["value"],
            a["scale_down_kv_cache_usage_pct"]["source"],
        ),
    ]
    return rows


# --- the report's tables as DataFrames: numbers stay numbers, pipeline/tables.py (the one table layer) formats them

SUMMARY_COLUMNS = (
    "fleet",
    "model",
    "GPU",
    "GPUs per replica",
    "replicas (static)",
    "fewest a day",
    "most a day",
    "file",
)


def summary_frame(sheet: dict[str, Any]) -> Any:
    """One row per fleet of the sheet: model, GPU, GPUs per replica, replicas static / fewest / most, its file."""
    import pandas as pd

    rows = [
        (
            name,
            t["model"]["value"],
            t["gpu"]["value"],
            t["replicas"]["gpus_per_replica"]["value"],
            t["replicas"]["static"]["value"],
            t["replicas"]["min"]["value"],
            t["replicas"]["peak"]["value"],
            t["file"],
        )
        for name, t in sheet["tiers"].items()
    ]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def args_frame(t: dict[str, Any]) -> Any:
    """(argument, value, from) per serve argument, the model first; a switch's value is "(switch)", a number stays
    a number (the `vllm serve` block above the table, and data/deploy/<tier>.yaml, hold them as typed)."""
    import pandas as pd

    rows = [("model (positional)", t["model"]["value"], t["model"]["source"])] + [
        (a["flag"], "(switch)" if a["value"] is True else a["value"], a["source"]) for a in t["args"]
    ]
    return pd.DataFrame(rows, columns=["argument", "value", "from"])


def ops_frame(t: dict[str, Any]) -> Any:
    """(what, value, from) for replicas, gateway guardrails and autoscaling thresholds (`ops_rows`), numbers kept."""
    import pandas as pd

    return pd.DataFrame(ops_rows(t), columns=["what", "value", "from"])
