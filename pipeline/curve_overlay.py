"""Step 10's roofline overlay: the roofline of each sweep's benchmarked deployment at every measured level,
against the measured medians (predicted_vs_measured, per curve: overlays). The model and GPU come from the
catalog under `root`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.curve_result import CurveResult
from pipeline.errors import InputError


def predicted_vs_measured(
    levels: pd.DataFrame, manifest: dict[str, Any], sections: dict[str, Any], root: Path
) -> tuple[pd.DataFrame | None, str]:
    """The roofline of the benchmarked deployment at every measured level, against the measured medians.

    Closed loop: concurrency per replica = load / replicas. Open loop: Little's law on the measured
    figures, (RPS / replicas) x mean E2E. Context during decode = mean prompt + half the mean output.
    The roofline has no queueing, so it is compared with the medians; error = predicted / measured - 1.
    """
    from pipeline import catalog
    from pipeline.roofline import Efficiency, for_deployment

    try:
        model = catalog.load_model(str(manifest["model"]), root)
        gpu = catalog.find_gpu(str(manifest["gpu"]), catalog.load_gpus(root))
    except InputError as exc:
        return None, f"no roofline overlay: {str(exc).splitlines()[0]}"
    tp, pp = int(manifest["tp"]), int(manifest.get("pp", 1))
    par = sections["parallelism"]
    rf = for_deployment(
        model,
        gpu,
        manifest["weight_dtype"],
        manifest["kv_dtype"],
        tp,
        pp,
        Efficiency.from_params(sections["roofline"]),
        par["allreduce_pcie"],
        par["allreduce_nvlink"],
    )
    if isinstance(rf, str):
        return None, f"no roofline overlay: {rf}"
    replicas = int(manifest.get("replicas", 1))
    rows = []
    for r in levels.itertuples():
        if not math.isfinite(r.load):
            continue
        inp = (
            r.input_tokens_mean
            if r.input_tokens_mean == r.input_tokens_mean and r.input_tokens_mean
            else r.nominal_input_tokens
        )
        out = (
            r.output_tokens_mean
            if r.output_tokens_mean == r.output_tokens_mean and r.output_tokens_mean
            else r.nominal_output_tokens
        )
        if not inp or not out:
            continue
        if r.load_kind == "concurrency":
            conc = r.load / replicas
        elif r.rps == r.rps and r.e2e_mean_ms == r.e2e_mean_ms and r.e2e_mean_ms:
            conc = r.rps / replicas * r.e2e_mean_ms / 1e3
        else:
            continue
        pt = rf.point(max(conc, 1.0), inp, inp + out / 2, out)
        pred_rps = pt["rps"] * replicas if r.load_kind == "concurrency" else None
        rows.append(
            {
                "curve": r.curve,
                "load": r.load,
                "concurrency_per_replica": conc,
                "measured_ttft_p50_ms": r.ttft_p50_ms,
                "predicted_ttft_ms": pt["ttft_ms"],
                "measured_itl_p50_ms": r.itl_p50_ms,
                "predicted_itl_ms": pt["itl_ms"],
                "measured_rps": r.rps,
                "predicted_rps": pred_rps,
            }
        )
    if not rows:
        return None, "no roofline overlay: the levels give no lengths"
    df = pd.DataFrame(rows)
    df["ttft_error"] = df["predicted_ttft_ms"] / df["measured_ttft_p50_ms"] - 1
    df["itl_error"] = df["predicted_itl_ms"] / df["measured_itl_p50_ms"] - 1
    df["rps_error"] = df["predicted_rps"].astype(float) / df["measured_rps"] - 1
    note = (
        f"roofline of {model.name} on {replicas} x TP{tp} {gpu.name}, {manifest['weight_dtype']} weights, "
        f"{manifest['kv_dtype']} KV (params roofline.*); compared with measured medians (the roofline has no queueing)"
    )
    return df, note


def overlays(result: CurveResult, sec: dict[str, Any], root: Path) -> dict[str, pd.DataFrame | None]:
    """Per curve, the roofline of its sweep's benchmarked deployment at each measured level (predicted_vs_measured).

    `sec`: the validated params sections (SECTIONS).
    """
    manifests = {s.name: s.manifest for s in result.sweeps}
    out: dict[str, pd.DataFrame | None] = {}
    for curve in sorted(result.table["curve"].unique()):
        manifest = manifests.get(result.sweep_of.get(curve, ""))
        levels = result.table[result.table["curve"] == curve]
        out[curve] = predicted_vs_measured(levels, dict(manifest), sec, root)[0] if manifest else None
    return out
