"""Step 1: the workload profile, computed in DuckDB over the normalized request table.

Definitions (method.md step 1): linear-interpolation percentiles (quantile_cont); context =
input + output per request; RPS series over every 1-s (and 60-s) bucket from floor(first) to
floor(last) with empty buckets as 0; mean = requests / (last - first); peak, not average,
feeds sizing (param sizing_rate); archetype from the p50 lengths; concurrency by Little's law.

The module holds the profile itself (profile_requests, compute_profile, build_profile); its parts live in
workload_settings (settings, rounding), workload_arrivals (rate series, gaps, tick, batches),
workload_requests (lengths, sessions, prefix reuse), workload_tiers (tiers, shared passes) and
workload_views (summary text and tables). Every name they define stays importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError
from pipeline.rates import RATE_NAMES
from pipeline.traffic.sources import connect
from pipeline.workload_arrivals import BATCHED_DEFINITION as BATCHED_DEFINITION
from pipeline.workload_arrivals import PER_MINUTE_BUCKETS as PER_MINUTE_BUCKETS
from pipeline.workload_arrivals import RESOLUTION_CANDIDATES_S as RESOLUTION_CANDIDATES_S
from pipeline.workload_arrivals import ArrivalQueries as ArrivalQueries
from pipeline.workload_arrivals import off_grid_sql as off_grid_sql
from pipeline.workload_arrivals import rate_figures
from pipeline.workload_requests import LENGTH_EXPRS as LENGTH_EXPRS
from pipeline.workload_requests import LENGTH_SELECT as LENGTH_SELECT
from pipeline.workload_requests import Requests
from pipeline.workload_requests import length_stats as length_stats
from pipeline.workload_requests import reuse_stats as reuse_stats
from pipeline.workload_requests import session_stats as session_stats
from pipeline.workload_settings import EPOCH_2000_S, ProfileSettings, rounded
from pipeline.workload_settings import PERCENTILES as PERCENTILES
from pipeline.workload_tiers import MAX_TIERS, Groups, tier_expression
from pipeline.workload_tiers import TIER_COLUMNS as TIER_COLUMNS
from pipeline.workload_tiers import GroupRequests as GroupRequests
from pipeline.workload_views import describe as describe
from pipeline.workload_views import lengths_table as lengths_table
from pipeline.workload_views import provenance_table as provenance_table
from pipeline.workload_views import rates_table as rates_table
from pipeline.workload_views import tiers_table as tiers_table
from pipeline.workload_views import time_axis as time_axis

if TYPE_CHECKING:
    import pandas as pd

RATE_KEYS = RATE_NAMES  # pipeline.rates.RateName: the one list of rate names
MOONCAKE_BLOCK_TOKENS = 512
_connect = connect  # traffic.sources.connect, under this module's old name


def archetype(
    input_p50: float, output_p50: float, settings: ProfileSettings, sessions: dict[str, Any] | None
) -> tuple[str, str]:
    """chat / rag / generation / agentic from p50 lengths (and multi-call sessions), with the reason."""
    long_in = input_p50 >= settings.long_input_tokens
    long_out = output_p50 >= settings.long_output_tokens
    many_calls = bool(sessions) and sessions["calls_p50"] >= settings.agentic_min_calls_per_session
    basis = (
        f"input p50 {input_p50:g} {'>=' if long_in else '<'} {settings.long_input_tokens}, "
        f"output p50 {output_p50:g} {'>=' if long_out else '<'} {settings.long_output_tokens}"
    )
    if sessions:
        basis += f", {sessions['calls_p50']:g} calls per session (p50)"
    if long_in and (long_out or many_calls):
        return "agentic", basis
    if long_in:
        return "rag", basis
    if long_out:
        return "generation", basis
    return "chat", basis


def littles_law(
    rps: dict[str, Any],
    sizing_key: str,
    output_mean: float,
    req: Requests,
    settings: ProfileSettings,
) -> dict[str, Any]:
    measured = req.mean_e2e_s()
    if measured is not None:
        e2e_s, source = measured, "measured: mean e2e_ms in the log"
    else:
        itl_ms = settings.itl_p99_ms or 0.0
        e2e_s = settings.ttft_p99_ms / 1000 + output_mean * itl_ms / 1000
        source = (
            f"SLO targets: TTFT {settings.ttft_p99_ms:g} ms + mean output {output_mean:g} tokens x ITL {itl_ms:g} ms"
        )
    rate = rps.get(sizing_key)
    return {
        "p95": rounded(rate * e2e_s, 2) if rate is not None else None,
        "mean": rounded(rps["mean"] * e2e_s, 2) if rps.get("mean") is not None else None,
        "e2e_s": rounded(e2e_s, 4),
        "rate_used": sizing_key,
        "e2e_source": source,
        "formula": "L = rate x E2E (Little's law); p95 uses the sizing rate, mean the mean rate",
    }


def profile_requests(
    req: Requests,
    settings: ProfileSettings,
    block_tokens: int | None = None,
    what: str = "the log",
    log_span_s: float | None = None,
) -> dict[str, Any]:
    """Every step-1 figure for one set of requests (the whole log, or one tier when log_span_s is given).

    A whole log of fewer than 2 requests, or all at one instant, has no arrival rate: an InputError naming
    `what`. A tier like that is a warning (code tier_without_rate): its mean is its requests over the whole
    log's span (log_span_s).
    """
    n, first, last, max_in, max_out = req.span()
    if n == 0:
        raise InputError(f"{what}: no requests left to profile (every row was excluded)")
    no_span = n < 2 or last <= first
    described = "a single request" if n < 2 else f"all {n:,} requests arrive at the same instant"
    if no_span and log_span_s is None:
        stamp = f"{first:,.3f} s" if first < EPOCH_2000_S else f"epoch {first:,.3f} s"
        raise InputError(
            f"{what}: {described} (arrival_s = {stamp}); expected at least 2 requests at different times, "
            "since an arrival rate needs a time span. No outputs were written."
        )
    lengths = req.lengths(max_in, max_out)
    longest, long_count = req.gaps(settings.max_gap_s)
    resolution = req.resolution(n, first)
    batched = req.batches(settings.batch_jitter_s)
    tick = max(resolution, batched["tick_s"]) if batched else resolution
    rps, coarse, measured = rate_figures(req, n, first, last, tick)
    warnings: list[dict[str, Any]] = []
    if no_span and log_span_s:
        rps["mean"] = rounded(n / log_span_s)
        warnings.append(
            {
                "code": "tier_without_rate",
                "message": f"{what}: {described}, so it has no arrival rate of its own: its mean is its requests "
                f"over the whole log's {log_span_s:,.4g} s, and its rate quantiles count one busy bucket. It is "
                "sized as a fleet of its own: map it onto another tier (workload.tiers.map) or set "
                "workload.tiers.column: none.",
            }
        )
    if batched:
        hidden = ", ".join(
            f"{k.replace('_', ' ')} {measured[k]:,.4g}"
            for k in ("per_second_p95", "peak_1s")
            if measured.get(k) is not None
        )
        warnings.append(
            {
                "code": "batched_arrivals",
                "message": f"arrivals come in batches every {batched['tick_s']:g} s "
                f"({batched['batches']:,} batches of {batched['requests_per_batch_mean']:g} requests on average, "
                f"{batched['share_of_intervals_on_tick']:.0%} of batch intervals on the tick, jitter within "
                f"{2 * settings.batch_jitter_s:g} s), although timestamps are written to {resolution:g} s: the log "
                "was recorded or replayed in batches. "
                + (
                    f"The {' and '.join(coarse)} series would measure the batching, not the traffic ({hidden}), "
                    "so they are not reported (null); sizing uses a coarser series."
                    if coarse
                    else ""
                ),
            }
        )
    elif coarse:
        warnings.append(
            {
                "code": "coarse_timestamps",
                "message": f"timestamps tick every {resolution:g} s, coarser than the {' and '.join(coarse)} buckets: "
                f"those rates would be noise and are not reported (null).",
            }
        )
    if last - first < 60 and log_span_s is None:
        warnings.append(
            {
                "code": "short_log",
                "message": f"the log spans only {last - first:,.3g} s ({n:,} requests): its per-minute series has "
                f"{int(last // 60 - first // 60) + 1} bucket(s), so no rate quantile describes real traffic; "
                "size from a log of at least an hour.",
            }
        )
    sizing_key = settings.sizing_rate
    if rps.get(sizing_key) is None:
        fallback = next(k for k in ("per_minute_p95", "mean") if rps.get(k) is not None)
        warnings.append(
            {
                "code": "sizing_rate_fallback",
                "message": f"sizing rate {sizing_key} is not available for this log; using {fallback} instead.",
            }
        )
        sizing_key = fallback
    if not rps[sizing_key]:
        fallback = next((k for k in ("per_minute_p99", "mean") if rps.get(k)), None)
        if fallback:
            warnings.append(
                {
                    "code": "zero_sizing_rate",
                    "message": f"the sizing rate {sizing_key} is 0 req/s: most minutes of the log have no arrival "
                    f"(mean {rps['mean']:.4g} req/s over {(last - first) / 86400:,.2f} days). Is the timestamp unit "
                    f"right (workload.timestamp_unit)? Using {fallback} = {rps[fallback]:.4g} req/s instead.",
                }
            )
            sizing_key = fallback
    rps["sizing_rate"] = rps[sizing_key]
    for cap in req.caps(n, {"input_tokens": max_in, "output_tokens": max_out}, settings.cap_min_share):
        warnings.append(
            {
                "code": f"capped_{cap['column']}",
                "message": f"{cap['rows_at_max']:,} requests ({cap['share']:.1%}) sit exactly at the maximum "
                f"{cap['column']} = {cap['max']:,}: the log looks capped (max_tokens or truncation), "
                "so the true tail is longer than measured.",
            }
        )
    if long_count:
        warnings.append(
            {
                "code": "long_gaps",
                "message": f"{long_count:,} gaps between arrivals exceed {settings.max_gap_s:g} s (longest {longest:,.0f} s): "
                "the log may have missing periods, which lowers the mean and the per-second quantiles.",
            }
        )
    sessions = req.sessions()
    kind, basis = archetype(lengths["input_tokens"]["p50"], lengths["output_tokens"]["p50"], settings, sessions)
    epoch_clock = first >= EPOCH_2000_S
    out: dict[str, Any] = {
        "requests": n,
        "span_s": rounded(last - first, 3),
        "first_arrival_s": rounded(first, 3),
        "clock": "epoch_utc" if epoch_clock else "trace_relative",
        "timestamp_resolution_s": resolution,
        "arrival_tick_s": tick,
        **lengths,
        "rps": rps,
        "sizing_rate_key": sizing_key,
        "archetype": kind,
        "archetype_basis": basis,
        "concurrency_littles_law": littles_law(rps, sizing_key, lengths["output_tokens"]["mean"], req, settings),
        "hourly": req.hourly(epoch_clock, first),
    }
    if batched:
        out["batched_arrivals"] = batched
    if sessions:
        out["sessions"] = sessions
    reuse = req.prefix_reuse()
    if reuse:
        reuse["block_tokens"] = block_tokens
        out["prefix_reuse"] = reuse
    out["warnings"] = warnings
    return out


def compute_profile(
    requests_path: Path, settings: ProfileSettings, block_tokens: int | None = None, label: str | None = None
) -> dict[str, Any]:
    """The whole-log profile plus one per tier when tiers exist (`label` names the log in errors)."""
    con = connect()
    label = label or str(requests_path)
    described = con.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(requests_path)}).fetchall()
    columns = [r[0] for r in described]
    expr, how, values = tier_expression(columns, settings)
    # One pass per figure for the whole log and every tier together (Groups), not one per tier.
    groups = Groups(con, requests_path, expr, values)
    names = groups.names
    groups.use_tiers(len(names) <= MAX_TIERS)
    profile = profile_requests(groups.requests(None), settings, block_tokens, label)
    if expr:
        if len(names) > MAX_TIERS:
            raise InputError(
                f"the tier source ({how}) has {len(names):,} distinct values; expected a few routing tiers "
                f"(at most {MAX_TIERS}). Set workload.tiers.column to another column or 'none'."
            )
        tiers = {}
        for i, name in enumerate(names):
            sub = groups.requests(i)
            span = max(profile["span_s"], 1.0)
            tiers[name] = profile_requests(sub, settings, block_tokens, f"tier {name!r} ({how})", span)
        profile["tiers"] = tiers
        profile["tiers_from"] = how
        profile["warnings"] += [w for t in tiers.values() for w in t["warnings"] if w["code"] == "tier_without_rate"]
    con.close()
    return profile


def chart_data(requests_path: Path) -> dict[str, pd.DataFrame]:
    """Small tables for the report's charts: the per-minute rate series and the length quantile curves."""
    con = connect()
    req = Requests(con, requests_path)
    data = {"per_minute": req.per_minute_series(), "cdf": req.length_cdf()}
    con.close()
    return data


def build_profile(
    ingested: Any, requests_path: Path, settings: ProfileSettings, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The profile of an ingested log, with ingest warnings, the validation summary and provenance.

    `inputs`: where the log came from, as the stage layer reads it (pipeline.stages.workload.log_inputs: the
    files, layout, column mapping, timestamp unit and whether it is the shipped sample); it opens the
    provenance block, followed by the definitions of the figures.
    """
    block_tokens = MOONCAKE_BLOCK_TOKENS if ingested.layout.name == "mooncake" else None
    label = ingested.source.label
    if ingested.rows_written == 0:
        raise InputError(
            f"{label}: column '{ingested.columns['output_tokens']}' (output_tokens): all {ingested.rows_read:,} rows "
            "have 0 output tokens (failed requests, excluded), so no request is left to profile; expected a log "
            "of served requests. No outputs were written."
        )
    prof = compute_profile(requests_path, settings, block_tokens, label)
    prof["failed_requests_excluded"] = ingested.failed_rows
    prof["duplicate_rows"] = ingested.duplicate_rows
    prof["warnings"] = ingested.warnings + prof["warnings"]
    prof["validation"] = ingested.validation.as_dict()
    prof["provenance"] = {
        **inputs,
        "percentiles": "DuckDB quantile_cont (linear interpolation) over every request",
        "context_tokens": "input_tokens + output_tokens of each request, then percentiles",
        "rps": "arrivals per 1-s / 60-s bucket from floor(first) to floor(last), empty buckets = 0; "
        "mean = requests / (last - first)",
        "per_minute_buckets": PER_MINUTE_BUCKETS,
        "batched_arrivals": BATCHED_DEFINITION,
        "sizing_rate": f"rps.{prof['sizing_rate_key']} (param workload.sizing_rate = {settings.sizing_rate})",
        "timestamp_resolution": "largest tick of 1 h, 1 min, 1 s, 100 ms, 10 ms, 1 ms that every timestamp sits on "
        "(0.001 means 1 ms or finer)",
        "archetype": f"p50 lengths vs workload.long_input_tokens = {settings.long_input_tokens}, "
        f"workload.long_output_tokens = {settings.long_output_tokens}",
        "hourly": "per-minute arrival rate grouped by hour of day (UTC, or hours since the trace start)",
    }
    return prof


@dataclass
class StageResult:
    """What the workload stage produced, for the notebook to show."""

    profile: dict[str, Any]
    ingested: Any
    charts: dict[str, pd.DataFrame]
