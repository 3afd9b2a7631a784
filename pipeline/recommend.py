"""Steps 8-9: KV-cache and batching recommendations, each with its evidence and threshold.

Every recommendation is a plain dict: name, verdict (recommended / not recommended / not
assessed), the measured value, the threshold it was compared with (a params.yaml key), the
evidence (which input) and what to do. Nothing is recommended without a number behind it.
"""

from __future__ import annotations

import math
from typing import Any

RECOMMENDED, NOT_RECOMMENDED, NOT_ASSESSED = "recommended", "not recommended", "not assessed"


def _rec(
    name: str, verdict: str, value: Any, threshold: str, evidence: str, action: str, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "verdict": verdict,
        "value": value,
        "threshold": threshold,
        "evidence": evidence,
        "action": action,
        **extra,
    }


def prefix_caching(
    reuse_fraction: float | None,
    instances: int,
    min_reuse: float,
    source: str = "metrics/workload.json prefix_reuse",
) -> dict[str, Any]:
    """Prefix caching when prefix blocks repeat; multi-replica fleets need cache-aware routing. `source`: where the reuse came from."""
    if reuse_fraction is None:
        return _rec(
            "prefix_caching",
            NOT_ASSESSED,
            None,
            f"recommend.prefix_reuse_min = {min_reuse:.0%}",
            "the traffic log has no hash_ids (prefix blocks): reuse cannot be measured",
            "log prefix hashes (e.g. Mooncake-style hash_ids) to assess prefix caching",
        )
    ok = reuse_fraction >= min_reuse
    action = (
        "enable prefix caching (vLLM --enable-prefix-caching)" if ok else "leave prefix caching at the engine default"
    )
    warning = None
    if ok and instances > 1:
        warning = (
            f"the fleet needs about {instances} replicas: route by prefix (consistent hashing, cache-aware routing), "
            f"else the hit rate falls to about 1/{instances} = {1 / instances:.0%} of what one replica sees"
        )
        action += "; " + warning
    return _rec(
        "prefix_caching",
        RECOMMENDED if ok else NOT_RECOMMENDED,
        round(reuse_fraction, 4),
        f"recommend.prefix_reuse_min = {min_reuse:.0%}",
        f"{reuse_fraction:.1%} of prefix blocks in the traffic log were seen before ({source})",
        action,
        warning=warning,
        replicas=instances,
        min_reuse=min_reuse,
    )


def chunked_prefill(
    itl_spike: float | None,
    spike_at: float | None,
    input_p95_over_p50: float,
    spike_ratio: float,
    mixed_ratio: float,
    chunk_tokens: int,
) -> dict[str, Any]:
    """Chunked prefill when ITL p99 spikes (p99 / p50) under mixed input lengths."""
    threshold = f"recommend.itl_spike_ratio = {spike_ratio:g} and recommend.mixed_input_ratio = {mixed_ratio:g}"
    if itl_spike is None:
        return _rec(
            "chunked_prefill",
            NOT_ASSESSED,
            None,
            threshold,
            "the benchmark gives no ITL tail percentile next to the median",
            "re-run the benchmark with ITL p99 reporting",
        )
    spiky = itl_spike > spike_ratio
    mixed = input_p95_over_p50 >= mixed_ratio
    ok = spiky and mixed
    evidence = (
        f"ITL p99 / p50 peaks at {itl_spike:.2f} (load {spike_at:g}) up to C_max; workload input p95 / p50 = "
        f"{input_p95_over_p50:.2f}"
    )
    action = (
        f"enable chunked prefill with a {chunk_tokens}-token budget (vLLM --enable-chunked-prefill "
        f"--max-num-batched-tokens {chunk_tokens}) and re-benchmark"
        if ok
        else "no change: ITL is steady"
        if not spiky
        else "ITL spikes but prompt lengths are uniform: look at preemption first"
    )
    return _rec(
        "chunked_prefill", RECOMMENDED if ok else NOT_RECOMMENDED, round(itl_spike, 3), threshold, evidence, action
    )


def speculative_decoding(concurrency_at_c_max: float, max_concurrency: float, min_acceptance: float) -> dict[str, Any]:
    """Speculative decoding at low-to-medium concurrency, when draft acceptance is high enough."""
    ok = concurrency_at_c_max <= max_concurrency
    return _rec(
        "speculative_decoding",
        RECOMMENDED if ok else NOT_RECOMMENDED,
        round(concurrency_at_c_max, 2),
        f"recommend.spec_decode_max_concurrency = {max_concurrency:g}; acceptance > {min_acceptance:.0%}",
        f"about {concurrency_at_c_max:.1f} requests in flight per replica at C_max",
        f"try a draft model or n-gram speculation; keep it only if the measured acceptance rate exceeds {min_acceptance:.0%}"
        if ok
        else "skip: at this concurrency decode is batch-efficient and speculation competes for compute",
    )


def pd_disaggregation(
    rate_rps: float,
    mean_in: float,
    mean_out: float,
    prefill_tps: float | None,
    decode_tps: float | None,
    kv_bytes_per_token: float | None,
    link_gbs: float,
    min_prompt: float,
    ttft_slo_ms: float,
    instances: int,
    basis: str = "",
) -> dict[str, Any]:
    """P/D disaggregation: the P:D ratio and KV transfer time of method.md; not worth it for short prompts.

    `basis` says where the prefill and decode throughputs were read (it joins the evidence)."""
    threshold = f"recommend.pd_min_prompt_tokens = {min_prompt:g}; KV transfer < 10% of the TTFT SLO; >= 2 replicas"
    if not prefill_tps or not decode_tps:
        return _rec("pd_disaggregation", NOT_ASSESSED, None, threshold, "no prefill or decode throughput measured", "")
    p = rate_rps * mean_in / prefill_tps
    d = rate_rps * mean_out / decode_tps
    ratio = p / d if d > 0 else math.inf
    transfer_ms = kv_bytes_per_token * mean_in / (link_gbs * 1e9) * 1e3 if kv_bytes_per_token else None
    reasons = []
    if mean_in < min_prompt:
        reasons.append(f"mean prompt {mean_in:.0f} tokens < {min_prompt:g}")
    if transfer_ms is not None and transfer_ms > 0.1 * ttft_slo_ms:
        reasons.append(f"KV transfer {transfer_ms:.1f} ms > 10% of the TTFT SLO")
    if instances < 2:
        reasons.append("one replica serves the load")
    ok = not reasons
    evidence = (
        f"P:D = (rate x mean_in / prefill_tps) / (rate x mean_out / decode_tps) = ({rate_rps:.2f} x {mean_in:.0f} / "
        f"{prefill_tps:,.0f}) / ({rate_rps:.2f} x {mean_out:.0f} / {decode_tps:,.0f}) = {ratio:.2f}"
        + (
            f"; KV transfer {mean_in:.0f} tokens x {kv_bytes_per_token:,.0f} B / {link_gbs:g} GB/s = {transfer_ms:.2f} ms"
            if transfer_ms is not None
            else ""
        )
        + (f" ({basis})" if basis else "")
    )
    return _rec(
        "pd_disaggregation",
        RECOMMENDED if ok else NOT_RECOMMENDED,
        round(ratio, 3),
        threshold,
        evidence,
        f"split into prefill and decode pools at about {ratio:.2f} prefill GPUs per decode GPU"
        if ok
        else "keep prefill and decode together: " + "; ".join(reasons),
        pd_ratio=ratio,
        kv_transfer_ms=transfer_ms,
    )


def kv_offload(batch_work: bool, kv_bytes_per_request: float | None, pcie_gbs: float) -> dict[str, Any]:
    """KV offload to CPU only for batch work (it adds PCIe transfers to the critical path)."""
    ms = kv_bytes_per_request / (pcie_gbs * 1e9) * 1e3 if kv_bytes_per_request else None
    evidence = (
        f"reloading one request's KV ({(kv_bytes_per_request or 0) / 2**20:,.0f} MiB) over PCIe at {pcie_gbs:g} GB/s takes {ms:.1f} ms"
        if ms
        else "KV size unknown"
    )
    return _rec(
        "kv_offload",
        RECOMMENDED if batch_work else NOT_RECOMMENDED,
        None if ms is None else round(ms, 2),
        "recommend.batch_work (offload only for batch work); eviction > 5% warns, > 20% degraded (step 13)",
        evidence,
        "offload cold KV to CPU memory to raise batch size"
        if batch_work
        else "keep KV on the GPU: interactive traffic cannot absorb the reload latency",
    )
