"""The settings of a workload profile (the params that shape it) and how its figures are rounded.

The base of the workload modules (workload_arrivals, workload_requests, workload_tiers, workload): the
percentile levels and the rounding every figure of metrics/workload.json goes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
EPOCH_2000_S = 946_684_800.0


@dataclass(frozen=True)
class ProfileSettings:
    """The params that shape a profile (workload section plus the SLO)."""

    sizing_rate: str = "per_minute_p95"
    long_input_tokens: int = 2048
    long_output_tokens: int = 512
    agentic_min_calls_per_session: float = 3
    cap_min_share: float = 0.01
    max_gap_s: float = 600
    batch_jitter_s: float = 0.05
    ttft_p99_ms: float = 2000.0
    itl_p99_ms: float | None = 50.0
    tier_column: str | None = "auto"
    tier_rules: tuple[dict[str, Any], ...] = ()
    tier_map: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_params(cls, workload: dict[str, Any], slo: dict[str, Any]) -> ProfileSettings:
        """Build from validated params sections."""
        tiers = workload.get("tiers") or {}
        return cls(
            sizing_rate=workload["sizing_rate"],
            long_input_tokens=workload["long_input_tokens"],
            long_output_tokens=workload["long_output_tokens"],
            agentic_min_calls_per_session=workload["agentic_min_calls_per_session"],
            cap_min_share=workload["cap_min_share"],
            max_gap_s=workload["max_gap_s"],
            batch_jitter_s=workload.get("batch_jitter_s", 0.05),
            ttft_p99_ms=slo["ttft_p99_ms"],
            itl_p99_ms=slo.get("itl_p99_ms"),
            tier_column=tiers.get("column", "auto"),
            tier_rules=tuple(tiers.get("rules") or ()),
            tier_map=tuple(sorted((tiers.get("map") or {}).items())),
        )


def rounded(value: Any, digits: int = 4) -> Any:
    """Round for stable metrics; whole numbers print as integers."""
    if value is None:
        return None
    v = round(float(value), digits)
    return int(v) if v.is_integer() else v
