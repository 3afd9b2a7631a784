"""Steps 8-9's evidence: the KV-cache and batching recommendations (pipeline/recommend.py) from the workload
profile and the chosen curve's levels. The model's KV bytes per token come from the catalog under `root`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import curve as cv
from pipeline import recommend
from pipeline.curve_result import Workload
from pipeline.errors import InputError


def recommendations(
    levels: pd.DataFrame,
    op: cv.OperatingPoint,
    w: Workload,
    manifest: dict[str, Any] | None,
    sections: dict[str, Any],
    s: cv.Settings,
    root: Path,
    reuse_source: str = "metrics/workload.json prefix_reuse",
    rate_source: str = "the workload's sizing rate",
) -> list[dict[str, Any]]:
    """Steps 8-9 from the workload profile and the chosen curve (the sources name where reuse and rate came from)."""
    r = sections["recommend"]
    rate = w.sizing_rps if w.sizing_rps else op.usable_rps
    instances = max(1, math.ceil(rate / op.usable_rps)) if op.usable_rps > 0 else 1
    finite = levels[levels["load"].astype(float) < math.inf].sort_values("load")
    upto = finite[finite["load"] <= max(op.c_max, float(finite["load"].iloc[0]))]
    spike = spike_at = None
    if upto["itl_p99_ms"].notna().all() and upto["itl_p50_ms"].notna().all() and not upto.empty:
        ratios = upto["itl_p99_ms"] / upto["itl_p50_ms"]
        i = int(ratios.to_numpy().argmax())
        spike, spike_at = float(ratios.iloc[i]), float(upto["load"].iloc[i])
    in_ratio = (w.input_p95 / w.input_p50) if w.input_p95 and w.input_p50 else 1.0
    conc = op.c_max / op.replicas if op.load_kind == "concurrency" else op.usable_rps * op.e2e_s_at_c_max
    kv_per_token = None
    if manifest:
        from pipeline import catalog, memory

        try:
            model = catalog.load_model(str(manifest["model"]), root)
            kv_per_token = memory.kv_shape(model, manifest["kv_dtype"]).all_layers_bytes_per_token
        except InputError:
            kv_per_token = None
    low = finite.iloc[0]
    mean_in = w.input_mean or op.input_tokens or 0.0
    mean_out = w.output_mean or op.output_tokens or 0.0
    prefill_tps = (
        low["input_tokens_mean"] / (low["ttft_p50_ms"] / 1e3)
        if pd.notna(low["ttft_p50_ms"]) and pd.notna(low["input_tokens_mean"]) and low["ttft_p50_ms"] > 0
        else None
    )
    out_tps = cv.interp(op.c_max, finite["load"].astype(float).tolist(), finite["output_tps"].astype(float).tolist())
    decode_tps = out_tps / op.replicas if out_tps else None
    return [
        recommend.prefix_caching(w.prefix_reuse, instances, r["prefix_reuse_min"], reuse_source),
        recommend.chunked_prefill(
            spike, spike_at, in_ratio, r["itl_spike_ratio"], r["mixed_input_ratio"], r["chunk_tokens"]
        ),
        recommend.speculative_decoding(conc, r["spec_decode_max_concurrency"], r["spec_decode_min_acceptance"]),
        recommend.pd_disaggregation(
            rate,
            mean_in,
            mean_out,
            prefill_tps,
            decode_tps,
            kv_per_token,
            r["kv_transfer_gbs"],
            r["pd_min_prompt_tokens"],
            s.ttft_p99_ms,
            instances,
            basis=f"prefill tok/s = mean prompt / TTFT p50 at the lowest load ({low['load']:g}); decode tok/s = "
            f"output tok/s at C_max / {op.replicas} replica(s); rate = {rate_source}",
        ),
        recommend.kv_offload(
            r["batch_work"], kv_per_token * (mean_in + mean_out) if kv_per_token else None, r["offload_pcie_gbs"]
        ),
    ]
