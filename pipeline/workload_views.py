"""How a workload profile is shown: the CLI's text summary and the report's tables (step 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.rates import RATE_DEFINITIONS, SIZING_RATE_KEY

if TYPE_CHECKING:
    import pandas as pd


def describe(profile: dict[str, Any]) -> str:
    """A short human summary of a profile (the CLI's default output and the report's headline)."""
    lines = []
    span_min = profile["span_s"] / 60
    batched = profile.get("batched_arrivals")
    lines.append(
        f"Workload profile: {profile['requests']:,} requests over {span_min:,.1f} min "
        f"({profile['clock']}, timestamps every {profile['timestamp_resolution_s']:g} s"
        + (f", arrivals in batches every {batched['tick_s']:g} s" if batched else "")
        + ")"
    )
    lines.append(f"{'':16}{'p50':>10}{'p90':>10}{'p95':>10}{'p99':>10}{'mean':>10}{'max':>10}")
    for key in ("input_tokens", "output_tokens", "context_tokens"):
        s = profile[key]
        lines.append(
            f"{key.replace('_', ' '):16}"
            + "".join(f"{s[k]:>10,.6g}" for k in ("p50", "p90", "p95", "p99", "mean", "max"))
        )
    r = profile["rps"]

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:,.4g}"

    lines.append(
        f"Arrival rate (req/s): mean {f(r['mean'])}; per-second p95 {f(r['per_second_p95'])}, p99 {f(r['per_second_p99'])}; "
        f"per-minute p95 {f(r['per_minute_p95'])}, p99 {f(r['per_minute_p99'])}; peak 1 s {f(r['peak_1s'])}"
    )
    lines.append(f"Sizing rate: {f(r['sizing_rate'])} req/s ({profile['sizing_rate_key']})")
    lines.append(f"Archetype: {profile['archetype']} ({profile['archetype_basis']})")
    c = profile["concurrency_littles_law"]
    lines.append(
        f"Concurrency (Little's law): {f(c['p95'])} at the sizing rate, {f(c['mean'])} at the mean rate "
        f"(E2E {c['e2e_s']:g} s; {c['e2e_source']})"
    )
    if "prefix_reuse" in profile:
        lines.append(f"Prefix reuse: {profile['prefix_reuse']['reuse_fraction']:.1%} of prefix blocks were seen before")
    for name, t in (profile.get("tiers") or {}).items():
        lines.append(
            f"  tier {name}: {t['requests']:,} requests, {t['archetype']}, input p95 {t['input_tokens']['p95']:,.6g}, "
            f"output p95 {t['output_tokens']['p95']:,.6g}, sizing rate {f(t['rps']['sizing_rate'])} req/s"
        )
    for w in profile.get("warnings") or []:
        lines.append(f"warning: {w['message']}")
    return "\n".join(lines)


def lengths_table(profile: dict[str, Any]) -> pd.DataFrame:
    """Token-length percentiles, one row per measure."""
    import pandas as pd

    rows = []
    for key in ("input_tokens", "output_tokens", "context_tokens"):
        rows.append({"measure": key, **profile[key]})
    return pd.DataFrame(rows).set_index("measure")


def rates_table(profile: dict[str, Any]) -> pd.DataFrame:
    """Arrival-rate figures (req/s) with how each is defined."""
    import pandas as pd

    defs = {**RATE_DEFINITIONS, SIZING_RATE_KEY: f"the rate sizing uses: {profile['sizing_rate_key']}"}
    return pd.DataFrame(
        [{"rate": k, "req_per_s": profile["rps"].get(k), "definition": v} for k, v in defs.items()]
    ).set_index("rate")


def tiers_table(profile: dict[str, Any]) -> pd.DataFrame | None:
    """One row per tier: traffic share, lengths at p95, sizing rate, archetype, concurrency."""
    import pandas as pd

    tiers = profile.get("tiers")
    if not tiers:
        return None
    total = profile["requests"]
    rows = [
        {
            "tier": name,
            "requests": t["requests"],
            "share_of_requests": t["requests"] / total,  # a fraction: the table layer shows "40%"
            "input_p95": t["input_tokens"]["p95"],
            "output_p95": t["output_tokens"]["p95"],
            "context_p95": t["context_tokens"]["p95"],
            "sizing_rate_rps": t["rps"]["sizing_rate"],
            "archetype": t["archetype"],
            "concurrency_p95": t["concurrency_littles_law"]["p95"],
        }
        for name, t in tiers.items()
    ]
    return pd.DataFrame(rows).set_index("tier")


def provenance_table(profile: dict[str, Any]) -> pd.DataFrame:
    """Where each figure came from: input files, layout, mapping, formulas."""
    import pandas as pd

    prov = profile["provenance"]
    rows = []
    for key, value in prov.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} <- {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        rows.append({"item": key, "value": value})
    return pd.DataFrame(rows).set_index("item")


def time_axis(series: pd.DataFrame, profile: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """Per-minute series with an `hours` axis: hours since 00:00 UTC of the first day, or since the trace start."""
    import datetime as dt

    first = profile["first_arrival_s"]
    if profile["clock"] == "epoch_utc":
        day0 = (first // 86400) * 86400
        label = dt.datetime.fromtimestamp(day0, tz=dt.UTC).strftime("%Y-%m-%d 00:00 UTC")
    else:
        day0, label = first, "the trace start"
    out = series.assign(hours=(series["minute_start_s"] - day0) / 3600.0)
    return out, label
