"""Known traffic-log layouts and the mapping of their columns onto the normalized request table.

Normalized columns (method.md step 1): arrival_s, input_tokens, output_tokens, and optionally
tenant, model, tier, session_id, hash_ids, ttft_ms, e2e_ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import InputError
from pipeline.params import NORMALIZED_COLUMNS

REQUIRED = ("arrival_s", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class Layout:
    """How one log layout names the normalized columns, and its timestamp unit."""

    name: str
    columns: dict[str, str]
    timestamp_unit: str
    description: str
    optional: dict[str, str] = field(default_factory=dict)


LAYOUTS: dict[str, Layout] = {
    "azure": Layout(
        "azure",
        {
            "arrival_s": "TIMESTAMP",
            "input_tokens": "ContextTokens",
            "output_tokens": "GeneratedTokens",
        },
        "datetime",
        "Azure LLM inference trace (TIMESTAMP,ContextTokens,GeneratedTokens; datetimes without a zone, read as UTC)",
    ),
    "burstgpt": Layout(
        "burstgpt",
        {
            "arrival_s": "Timestamp",
            "input_tokens": "Request tokens",
            "output_tokens": "Response tokens",
        },
        "s",
        "BurstGPT (Timestamp in seconds, Request tokens, Response tokens, Model, Log Type)",
        optional={"model": "Model", "tenant": "Log Type"},
    ),
    "mooncake": Layout(
        "mooncake",
        {
            "arrival_s": "timestamp",
            "input_tokens": "input_length",
            "output_tokens": "output_length",
        },
        "ms",
        "Mooncake JSON lines (timestamp in ms, input_length, output_length, hash_ids of 512-token blocks)",
        optional={"hash_ids": "hash_ids"},
    ),
}


def generic(mapping: dict[str, str], available: list[str]) -> Layout:
    """Generic layout: the normalized names themselves, overridden by the params' column mapping."""
    cols = {name: name for name in NORMALIZED_COLUMNS if name in available}
    cols.update(mapping)
    required = {k: cols.get(k, k) for k in REQUIRED}
    optional = {k: v for k, v in cols.items() if k not in REQUIRED}
    return Layout(
        "generic",
        required,
        "auto",
        "generic table: " + ", ".join(f"{k} <- {v}" for k, v in sorted(cols.items())),
        optional=optional,
    )


def detect(available: list[str], mapping: dict[str, str], label: str) -> Layout:
    """Pick the layout whose required columns the file has (the 'auto' format)."""
    have = set(available)
    if mapping:
        return generic(mapping, available)
    for layout in LAYOUTS.values():
        if set(layout.columns.values()) <= have:
            return layout
    if set(REQUIRED) <= have:
        return generic({}, available)
    raise InputError(
        f"{label}: cannot detect the traffic log layout from its columns ({', '.join(available) or 'none'}). "
        "Known layouts: "
        + "; ".join(f"{name}: {', '.join(layout.columns.values())}" for name, layout in LAYOUTS.items())
        + f"; generic: {', '.join(REQUIRED)}, or set workload.columns to map your column names "
        "(e.g. {arrival_s: ts, input_tokens: prompt_tokens, output_tokens: completion_tokens})"
    )


def for_format(fmt: str, available: list[str], mapping: dict[str, str], label: str) -> Layout:
    """The layout for an explicit format flag, or detected when fmt is 'auto'."""
    if fmt == "auto":
        return detect(available, mapping, label)
    if fmt == "generic":
        return generic(mapping, available)
    if fmt not in LAYOUTS:
        raise InputError(f"unknown format '{fmt}'; allowed: auto, generic, {', '.join(LAYOUTS)}")
    return LAYOUTS[fmt]


def guess_layout_name(available: list[str]) -> str | None:
    """Which known layout these columns look like, for error hints."""
    have = set(available)
    for layout in LAYOUTS.values():
        if set(layout.columns.values()) <= have:
            return layout.name
    if set(REQUIRED) <= have:
        return "generic"
    return None
