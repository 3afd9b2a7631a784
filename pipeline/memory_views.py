"""Tables and chart data for the reports of steps 2 and 4-6 (pandas lives here, not in the math modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import catalog, memory, paths
from pipeline.candidates import Plan
from pipeline.catalog import GPU, Model


def gpu_table(gpus: list[GPU]) -> pd.DataFrame:
    """The candidate GPUs: memory, bandwidth, dense peaks, formats, fabric, ridge point, source."""
    return pd.DataFrame(
        [
            {
                "gpu": g.name,
                "vendor": g.vendor,
                "arch": g.arch,
                "memory_gb": g.memory_gb,
                "visible_memory_gib": g.visible_memory_gib,
                "memory_bw_tbs": g.memory_bw_tbs,
                "bf16_tflops_dense": g.peak_tflops.get("bf16"),
                "fp8_tflops_dense": g.peak_tflops.get("fp8"),
                "fp4_tflops_dense": g.peak_tflops.get("fp4"),
                "ridge_bf16_flops_per_byte": round(g.ridge_flops_per_byte("bf16"), 1),
                "hw_formats": " ".join(f for f in catalog.FORMATS if f in g.hw_formats),
                "interconnect": f"{g.interconnect} {g.interconnect_bw_gbs:g} GB/s x{g.nvlink_domain}",
                "source": g.source,
            }
            for g in gpus
        ]
    )


def model_table(models: list[Model], root: Path | None = None) -> pd.DataFrame:
    """Models: computed vs stated parameter counts, attention kind, KV bytes per token (BF16)."""
    cards = catalog.load_model_cards(root)
    rows = []
    for m in models:
        card = cards.get(m.name)
        stated = card.stated_total_params_b if card else None
        shape = memory.kv_shape(m, "bf16")
        rows.append(
            {
                "model": m.name,
                "config": m.path,
                "total_params_b": round(m.total_params / 1e9, 3),
                "active_params_b": round(m.active_params / 1e9, 3),
                "stated_total_b": stated,
                "error_vs_card_pct": round((m.total_params / 1e9 / stated - 1) * 100, 2) if stated else None,
                "attention": m.attention_kind,
                "kv_bytes_per_token_bf16": int(shape.all_layers_bytes_per_token),
                "kv_formula": shape.formula,
            }
        )
    return pd.DataFrame(rows)


IDENT = ("gpu", "weights", "kv")


def entries(plan: Plan, tier: str, fits_only: bool = False) -> list[dict[str, Any]]:
    """The candidate entries of one tier, in evaluation order."""
    out = [c.entry for c in plan.candidates if c.entry["tier"] == tier]
    return [e for e in out if e["fits"]] if fits_only else out


def floor_table(plan: Plan, tier: str) -> pd.DataFrame:
    """Step 4: the guide's memory floor per candidate (GB = 1e9 bytes)."""
    cols = [*IDENT, *memory.FLOOR_KEYS]
    frame = pd.DataFrame([{k: e[k] for k in cols} for e in entries(plan, tier)], columns=cols)
    return frame.round(1)


def engine_table(plan: Plan, tier: str) -> pd.DataFrame:
    """The vLLM engine profile per candidate that fits: where each GPU's memory goes, and the capacity."""
    rows = []
    for e in entries(plan, tier):
        eng = e.get("engine")
        if not eng:
            continue
        rows.append(
            {
                **{k: e[k] for k in (*IDENT, "tp", "pp")},
                "budget_gib": eng["budget_gib"],
                "weights_gib": eng["weights_gib"],
                "activation_peak_gib": eng["activation_peak_gib"],
                "non_torch_gib": eng["non_torch_gib"],
                "kv_cache_gib": eng["kv_cache_gib"],
                "kv_cache_tokens": eng["kv_cache_tokens"],
                "max_concurrency_per_replica": e["max_concurrency_per_replica"],
                "replicas_for_p95": e["replicas_for_p95_concurrency"],
            }
        )
    return pd.DataFrame(rows).round(2)


def parallel_table(plan: Plan, tier: str) -> pd.DataFrame:
    """Step 6: layout, capacity, predicted latency and SLO verdict per candidate."""
    rows = []
    for e in entries(plan, tier):
        rows.append(
            {
                **{k: e[k] for k in (*IDENT, "tp", "pp", "ep")},
                "max_concurrency_per_replica": e["max_concurrency_per_replica"],
                "gpus_for_p95": e["gpus_for_p95_concurrency"],
                "predicted_ttft_ms": None if e["predicted_ttft_ms"] is None else round(e["predicted_ttft_ms"]),
                "predicted_itl_ms": None if e["predicted_itl_ms"] is None else round(e["predicted_itl_ms"], 1),
                "fits": e["fits"],
                "meets_slo": e["meets_slo"],
                "reasons": "; ".join(e["reasons"]),
            }
        )
    return pd.DataFrame(rows)


def kv_curve_data(model: Model, kv_dtype: str, contexts: dict[str, float], max_concurrency: int) -> pd.DataFrame:
    """Figure 2.2's data: KV GB for 1..max concurrency at each context length."""
    shape = memory.kv_shape(model, kv_dtype)
    step = max(1, max_concurrency // 50)
    rows = []
    for label, ctx in contexts.items():
        for c in range(0, max_concurrency + 1, step):
            rows.append({"context": label, "concurrency": c, "kv_gb": shape.bytes_per_sequence(ctx) * c / memory.GB})
    return pd.DataFrame(rows)


def roofline_data(plan: Plan, tier: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3.3.2's data: a roof per GPU (16-bit) and the prefill / decode points of each GPU's BF16 candidate."""
    from pipeline import roofline

    roofs, points = [], []
    target = next(t for t in plan.targets if t.tier == tier)
    model = plan.model_by_tier[tier]
    for gpu in plan.gpus:
        peak = gpu.peak("bf16") / 1e12
        bw = gpu.memory_bw_tbs
        for x in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000):
            roofs.append({"gpu": gpu.name, "intensity": x, "tflops": min(peak, bw * x)})
        e = next(
            (e for e in entries(plan, tier) if e["gpu"] == gpu.name and e["weights"] == "bf16" and e["fits"]), None
        )
        if not e:
            continue
        rf = roofline.Roofline(
            model, gpu, "bf16", e["kv"], "bf16", e["tp"], e["pp"], e["ep"], 0.0, roofline.Efficiency()
        )
        prefill_flops = 2 * model.active_params * target.input_tokens
        prefill_bytes = memory.engine_weight_bytes(model, "bf16", 1, 1, 1)
        points.append(
            {
                "gpu": gpu.name,
                "phase": "prefill p95 prompt",
                "intensity": prefill_flops / prefill_bytes,
                "tflops": min(peak, bw * prefill_flops / prefill_bytes),
            }
        )
        for batch, label in ((1, "decode batch 1"), (e["predicted_at_concurrency"], "decode at capacity")):
            parts = rf.decode_parts(batch, target.context_tokens)
            x = parts["flops"] / (parts["weight_bytes"] + parts["kv_bytes"])
            points.append({"gpu": gpu.name, "phase": label, "intensity": x, "tflops": min(peak, bw * x)})
    return pd.DataFrame(roofs), pd.DataFrame(points)


def curve_frame(plan: Plan, tier: str, ids: list[str]) -> pd.DataFrame:
    """Predicted curves of some candidates, labelled for a chart."""
    rows = [r for r in plan.curve_rows() if r["candidate"] in ids]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["label"] = frame["candidate"].str.removeprefix(f"{tier}/")
    return frame


def accuracy_table(root: Path | None = None, settings: memory.EngineSettings | None = None) -> pd.DataFrame:
    """Engine profile vs published vLLM memory logs: predicted, measured and error per component."""
    root = root or paths.ROOT
    gpus = catalog.load_gpus(root)
    rows: list[dict[str, Any]] = []
    for m in catalog.load_measurements(root):
        model = catalog.load_model(m["model"], root)
        rows += memory.compare_to_measurement(
            m, model, catalog.find_gpu(m["gpu"], gpus), settings or memory.EngineSettings()
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["predicted"] = frame["predicted"].astype(float).round(3)
    frame["error_pct"] = frame["error_pct"].astype(float).round(2)
    return frame[["measurement", "model", "gpu", "tp", "component", "predicted", "measured", "error_pct", "source"]]


def worked_example() -> pd.DataFrame:
    """The guide's worked example recomputed live (Llama-3-70B, 50 concurrent, 8K, 0.26 MB/token, 15 GB overhead)."""
    rows = []
    for dtype in ("bf16", "fp8"):
        kv_per_token = 0.26e6 * (1 if dtype == "bf16" else 0.5)
        f = memory.memory_floor(70e9, dtype, kv_per_token * 8000, 50, 80, overhead_gb=15, headroom=0.5)
        rows.append(
            {
                "precision": dtype,
                "weights_gb": f.weights_gb,
                "kv_gb": f.kv_gb,
                "activations_gb": f.activations_gb,
                "overhead_gb": f.overhead_gb,
                "total_gb": f.total_gb,
                "min_h100s": f.min_gpus,
                "with_50pct_headroom": f.gpus_with_headroom,
            }
        )
    return pd.DataFrame(rows).round(1)


def targets_table(plan: Plan) -> pd.DataFrame:
    """One row per sizing target (the whole workload, then each tier): p95 concurrency, context and prompt, model."""
    return pd.DataFrame(
        [
            {
                "tier": t.tier,
                "concurrency_p95": t.concurrency,
                "context_tokens_p95": t.context_tokens,
                "input_tokens_p95": t.input_tokens,
                "model": plan.model_by_tier[t.tier].name,
                "source": t.source,
            }
            for t in plan.targets
        ]
    )


def kv_chart_axes(concurrency: float, context_tokens: dict[str, float]) -> tuple[dict[str, float], int]:
    """The KV-vs-concurrency chart's lines (the log's p50/p95/p99 context, and 8K tokens) and its concurrency axis.

    The axis runs to twice the p95 concurrency, at least 16.
    """
    lines = {f"{k} {context_tokens[k]:,.0f} tokens": context_tokens[k] for k in ("p50", "p95", "p99")}
    lines["8K tokens"] = 8192
    return lines, int(max(concurrency * 2, 16))


def kv_gb_per_sequence(entry: dict[str, Any], concurrency: float) -> float:
    """KV GB one p95-context sequence holds: the entry's KV GB over the concurrency it was sized for, 2 decimals."""
    return round(entry["kv_gb"] / concurrency, 2)


def quantization_table(ents: list[dict[str, Any]]) -> pd.DataFrame:
    """Step 5: one row per GPU x precision, with its memory total and the GPUs the p95 concurrency needs."""
    return pd.DataFrame(
        [
            {
                "gpu": e["gpu"],
                "precision": f"w-{e['weights']} kv-{e['kv']}",
                "compute": e["compute"],
                "total_gb": round(e["total_gb"], 1),
                "min_gpus": e["min_gpus"],
                "tp": e["tp"],
                "max_concurrency_per_replica": e["max_concurrency_per_replica"],
                "gpus_for_p95": e["gpus_for_p95_concurrency"],
            }
            for e in ents
        ]
    )


def best_16bit_and_quantized(ents: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The fitting entries needing the fewest GPUs for the p95 concurrency: BF16 weights and KV; quantized weights, FP8 KV."""
    bf = [e for e in ents if e["weights"] == "bf16" and e["kv"] == "bf16" and e["fits"]]
    q = [e for e in ents if e["weights"] != "bf16" and e["kv"] == "fp8" and e["fits"]]

    def fewest(group: list[dict[str, Any]]) -> dict[str, Any] | None:
        return min(group, key=lambda e: e["gpus_for_p95_concurrency"]) if group else None

    return fewest(bf), fewest(q)


# --------------------------------------------------------------------------- public vLLM start-up logs

STARTUP_LOGS = Path("tests") / "data" / "vllm_startup_logs" / "startup_logs.csv"
_LOG_TEXT = {
    "log_id",
    "model",
    "gpu",
    "weights",
    "kv",
    "engine",
    "vllm_version",
    "mxfp4_backend",
    "outcome",
    "refusal",
    "checks",
    "role",
    "assumed",
    "date",
    "source",
}


def load_startup_logs(path: Path | None = None) -> list[dict[str, Any]]:
    """The public vLLM start-up logs (tests/data/vllm_startup_logs/startup_logs.csv), numbers parsed."""
    import csv

    from pipeline.errors import InputError

    path = path or paths.ROOT / STARTUP_LOGS
    out = []
    with path.open(encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            rec: dict[str, Any] = {}
            for k, v in row.items():
                if k in _LOG_TEXT:
                    rec[k] = v
                elif v in ("", None):
                    rec[k] = None
                else:
                    try:
                        rec[k] = float(v)
                    except ValueError:
                        raise InputError(f"{path}: {k}: line {i} has {v!r}; expected a number") from None
            out.append(rec)
    return out


def startup_log_table(
    logs: list[dict[str, Any]] | None = None,
    settings: memory.EngineSettings | None = None,
    root: Path | None = None,
) -> pd.DataFrame:
    """One row per start-up log: predicted vs logged weights, available KV, KV tokens, and start vs refusal."""
    root = root or paths.ROOT
    logs = load_startup_logs() if logs is None else logs
    gpus = catalog.load_gpus(root)
    rows = []
    for m in logs:
        model = catalog.load_model(m["model"], root)
        gpu = catalog.find_gpu(m["gpu"], gpus)
        comp = {
            r["component"]: r for r in memory.compare_to_measurement(m, model, gpu, settings or memory.EngineSettings())
        }

        def pick(name: str, key: str, comp: dict[str, Any] = comp) -> Any:
            return comp[name][key] if name in comp else None

        fits = comp.get("fits")
        rows.append(
            {
                "log": m["log_id"],
                "role": m["role"],
                "model": model.name,
                "gpu": gpu.name,
                "tp": int(m["tp"]),
                "vllm": m["vllm_version"],
                "weights_gib_pred": pick("weights_gib", "predicted"),
                "weights_gib_log": pick("weights_gib", "measured"),
                "weights_err_pct": pick("weights_gib", "error_pct"),
                "kv_gib_pred": pick("kv_cache_gib", "predicted"),
                "kv_gib_log": pick("kv_cache_gib", "measured"),
                "kv_gib_err_pct": pick("kv_cache_gib", "error_pct"),
                "kv_tokens_pred": pick("kv_cache_tokens", "predicted"),
                "kv_tokens_log": pick("kv_cache_tokens", "measured"),
                "kv_tokens_err_pct": pick("kv_cache_tokens", "error_pct"),
                "tokens_from_log_gib_err_pct": pick("kv_cache_tokens (from the logged KV GiB)", "error_pct"),
                "kv_needed_err_pct": pick("kv_needed_gib", "error_pct"),
                "cuda_graph_gib_log": pick("cuda_graph_gib", "measured"),
                "cuda_graph_err_pct": pick("cuda_graph_gib", "error_pct"),
                "fits_pred": fits["predicted"] if fits else None,
                "outcome_log": fits["measured"] if fits else m["outcome"],
                "fits_agrees": fits["agrees"] if fits else None,
            }
        )
    return pd.DataFrame(rows)
