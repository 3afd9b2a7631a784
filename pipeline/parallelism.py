"""Step 6a: tensor, pipeline and expert parallelism for one candidate.

TP is the lowest degree that fits in one node and divides the attention heads (and the KV
heads, or is a multiple of them: vLLM then replicates KV heads); TP above the fast-fabric
domain (NVLink) pays the guide's PCIe all-reduce overhead; PP only when one node is not
enough; EP for MoE models (all experts stored, shared experts on every GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.catalog import GPU, Model

TP_DEGREES = (1, 2, 4, 8, 16, 32, 64)
PCIE_ALLREDUCE = {1: 0.0, 2: 0.08, 4: 0.25, 8: 0.38}
NVLINK_ALLREDUCE = {1: 0.0, 2: 0.02, 4: 0.05, 8: 0.09}


def tp_problem(model: Model, tp: int) -> str | None:
    """Why a TP degree cannot split this model's attention, or None when it can."""
    if model.heads % tp:
        return f"TP {tp} does not divide the {model.heads} attention heads"
    if not model.is_mla and model.kv_heads % tp and tp % model.kv_heads:
        return f"TP {tp} neither divides nor is a multiple of the {model.kv_heads} KV heads"
    return None


def expert_parallel(model: Model, tp: int) -> int:
    """EP degree for a layout: MoE models spread their routed experts over the TP group, dense models have none."""
    return tp if model.is_moe and tp > 1 and model.num_experts >= tp else 1


def valid_tps(model: Model, max_tp: int) -> list[int]:
    """TP degrees up to max_tp that divide the heads (and KV heads, or replicate them)."""
    return [tp for tp in TP_DEGREES if tp <= max_tp and tp_problem(model, tp) is None]


def allreduce_overhead(
    gpu: GPU, tp: int, pcie: dict[int, float] | None = None, nvlink: dict[int, float] | None = None
) -> tuple[float, str]:
    """Share of decode step time spent in TP all-reduce: NVLink-class fabric 2-9%, PCIe 8/25/38% (method.md)."""
    if tp <= 1:
        return 0.0, "no TP: no all-reduce"
    pcie = pcie or PCIE_ALLREDUCE
    nvlink = nvlink or NVLINK_ALLREDUCE
    fast = gpu.interconnect in ("nvlink", "infinity-fabric", "nvlink-bridge") and tp <= gpu.nvlink_domain
    table, kind = (nvlink, gpu.interconnect) if fast else (pcie, "PCIe")
    key = min((k for k in table if k >= tp), default=max(table))
    return table[key], f"TP {tp} over {kind}: {table[key]:.0%} of step time (method.md step 2-3)"


@dataclass(frozen=True)
class Parallelism:
    """The chosen layout and the flags a reader must see."""

    tp: int
    pp: int
    ep: int
    gpus_per_replica: int
    allreduce_overhead: float
    fabric: str
    flags: tuple[str, ...]


def choose(
    model: Model,
    gpu: GPU,
    min_gpus: int,
    fits: Any,
    max_tp: int | None = None,
    pcie: dict[int, float] | None = None,
    nvlink: dict[int, float] | None = None,
) -> Parallelism | str:
    """Lowest valid TP >= the memory floor's GPU count that passes `fits(tp, pp)`; PP across nodes only beyond one node.

    `fits(tp, pp)` says whether one replica at that layout holds the model and at least one
    p95-context sequence. Returns the reason as a string when nothing within the cluster fits.
    """
    node = min(gpu.node_gpus, max_tp) if max_tp else gpu.node_gpus
    tps = valid_tps(model, node)
    if not tps:
        return f"no TP degree up to {node} divides the {model.heads} attention heads"
    flags: list[str] = []
    chosen: tuple[int, int] | None = None
    # The guide: the lowest TP that holds the memory floor; fall back to fewer GPUs per replica
    # (more replicas) when the floor needs more than a node but one replica still fits.
    for tp in tps:
        if tp >= min(min_gpus, node) and fits(tp, 1):
            chosen = (tp, 1)
            break
    if chosen is None:
        for tp in tps:
            if fits(tp, 1):
                chosen = (tp, 1)
                break
    if chosen is None:
        top = tps[-1]
        for pp in (2, 3, 4, 6, 8, 16):
            if fits(top, pp):
                chosen = (top, pp)
                flags.append(
                    f"needs PP {pp} across {pp} nodes: one node of {node} x {gpu.name} cannot hold one replica"
                )
                break
    if chosen is None:
        return (
            f"does not fit: even TP {tps[-1]} x PP 16 on {gpu.name} leaves no room for one sequence at the p95 context"
        )
    tp, pp = chosen
    ep = expert_parallel(model, tp)
    overhead, fabric = allreduce_overhead(gpu, tp, pcie, nvlink)
    if tp > 2 and (gpu.interconnect == "pcie" or tp > gpu.nvlink_domain):
        flags.append(f"TP {tp} > 2 without NVLink on {gpu.name}: all-reduce costs about {overhead:.0%} of each step")
    if not model.is_mla and tp > model.kv_heads:
        flags.append(f"TP {tp} > {model.kv_heads} KV heads: each KV head is replicated on {tp // model.kv_heads} GPUs")
    if min_gpus > tp * pp:
        flags.append(
            f"the memory floor at p95 concurrency needs {min_gpus} GPUs: {math.ceil(min_gpus / (tp * pp))} replicas of TP {tp} (DP, step 11)"
        )
    return Parallelism(tp, pp, ep, tp * pp, overhead, fabric, tuple(flags))
