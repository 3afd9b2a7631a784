"""Step 2's input: what each tier needs from the workload profile (metrics/workload.json), one Target per tier.

The p95 concurrency (Little's law) and context, the p95 prompt and mean output lengths, and the archetype,
each overridable by memory.concurrency / memory.context_tokens. Pure: the memory stage reads the profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """What one tier needs: p95 concurrency and context, prompt and output lengths, archetype."""

    tier: str
    concurrency: float
    context_tokens: float
    input_tokens: float
    output_tokens: float
    archetype: str
    source: str

    @classmethod
    def from_profile(cls, tier: str, p: dict[str, Any], overrides: dict[str, Any] | None = None) -> Target:
        """One tier's target from its profile (`p`: the whole one or tiers.<tier>); `overrides`: memory.*."""
        o = overrides or {}
        conc = o.get("concurrency") or p["concurrency_littles_law"]["p95"]
        ctx = o.get("context_tokens") or p["context_tokens"]["p95"]
        where = "metrics/workload.json" + (f" tiers.{tier}" if tier != "all" else "")
        return cls(
            tier=tier,
            concurrency=float(conc),
            context_tokens=float(ctx),
            input_tokens=float(p["input_tokens"]["p95"]),
            output_tokens=float(p["output_tokens"]["mean"]),
            archetype=str(p.get("archetype", "chat")),
            source=f"{where}: concurrency_littles_law.p95"
            + (" (overridden by memory.concurrency)" if o.get("concurrency") else "")
            + ", context_tokens.p95"
            + (" (overridden by memory.context_tokens)" if o.get("context_tokens") else ""),
        )


def targets_from_profile(profile: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[Target]:
    """The whole workload, then each tier when the profile has tiers (each is sized on its own)."""
    out = [Target.from_profile("all", profile, overrides)]
    for tier, p in sorted((profile.get("tiers") or {}).items()):
        out.append(Target.from_profile(tier, p, overrides))
    return out
