"""The finance report's content: the first screen, risk flags, assumptions with sources, and the
quarter-over-quarter comparison, built from the metrics files only (no stage reads a notebook).

Every string that came from an input file (tenant, tier, model, GPU, file names) passes through
`esc` before it reaches HTML; tables go through pandas, which escapes cell text.
"""

from __future__ import annotations

import json
import subprocess
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import paths
from pipeline.errors import InputError

METRIC_FILES = ("workload", "memory", "operating_point", "fleet", "tco")
SECTIONS = ("report", "slo", "fleet", "tco", "curve")


def esc(value: Any) -> str:
    """HTML-escape anything shown in the report (quotes too)."""
    return escape(str(value), quote=True)


def load_metrics(root: Path) -> dict[str, dict[str, Any]]:
    """metrics/*.json of this run; a missing one names the stage to run."""
    from pipeline import io

    return io.read_metrics(root, METRIC_FILES)


def previous_metrics(ref: str | None, root: Path) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """A previous review's metrics: a folder holding its metrics/*.json, or a git revision (tag, branch, commit)."""
    if not ref:
        return None, ""
    folder = (root / ref) if not Path(ref).is_absolute() else Path(ref)
    out: dict[str, dict[str, Any]] = {}
    if folder.is_dir():
        for name in ("workload", "fleet", "tco"):
            p = folder / f"{name}.json"
            if p.exists():
                out[name] = json.loads(p.read_text(encoding="utf-8"))
        where = f"folder {ref}"
    else:
        for name in ("workload", "fleet", "tco"):
            proc = subprocess.run(
                ["git", "show", f"{ref}:metrics/{name}.json"], cwd=root, capture_output=True, text=True, check=False
            )
            if proc.returncode == 0:
                out[name] = json.loads(proc.stdout)
        where = f"git revision {ref}"
    if not out:
        raise InputError(
            f"params.yaml: report.previous = {ref!r} is neither a folder with workload/fleet/tco.json nor a git revision "
            "holding metrics/*.json"
        )
    return out, where


def first_screen(m: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The figures finance reads first: (label, value, where it comes from)."""
    f, t, w = m["fleet"], m["tco"], m["workload"]
    tier = f["per_tier"]["all"]
    chosen = next(r for r in t["per_candidate"] if r["candidate"] == t["chosen"])
    return [
        ("GPUs", f"{f['total_gpus']} x {tier['gpu']}", "metrics/fleet.json total_gpus (step 11)"),
        ("monthly cost", f"USD {t['monthly_usd']:,.0f}", "GPUs x $/GPU-hour x 730 h (metrics/tco.json)"),
        ("annual cost", f"USD {t['annual_usd']:,.0f}", "x 8760 h"),
        (
            "monthly cost with the scaling schedule",
            f"USD {chosen['monthly_usd_with_schedule']:,.0f}",
            "instance-hours of the hourly schedule (step 11)",
        ),
        (
            "cost per 1M output tokens",
            f"USD {t['usd_per_million_output_tokens']:,.2f}",
            "at the measured average utilization",
        ),
        (
            "cost per 1M output tokens, planned",
            f"USD {chosen['usd_per_million_output_tokens_planned']:,.2f}",
            f"at {chosen['planned_utilization']:.0%} utilization",
        ),
        ("utilization", f"{t['utilization']:.0%}", "mean rate / (instances x usable RPS)"),
        ("headroom", f"{tier['headroom']:.0%} + {tier['spares']} spare", "max(growth, burst) + N+1 (fleet params)"),
        (
            "traffic sized for",
            f"{tier['peak_rps']:g} req/s",
            f"metrics/workload.json rps.sizing_rate ({w.get('sizing_rate_key')})",
        ),
    ]


def risk_flags(m: dict[str, dict[str, Any]], trap_below: float = 0.4) -> list[str]:
    """Everything that makes the figures less certain, in plain words."""
    op, t, w = m["operating_point"], m["tco"], m["workload"]
    flags = []
    if (op.get("curve_source") or {}).get("synthetic"):
        flags.append(
            "The benchmark curve that sized the fleet is SYNTHETIC sample data: replace data/raw/benchmarks/ with measured sweeps."
        )
    if op.get("gap_flag"):
        flags.append(
            f"Little's-law gap {op['littles_law_gap']:.2f}x: the benchmark does not behave like production (step 10)."
        )
    if t.get("utilization_trap"):
        flags.append(
            f"Utilization trap: average utilization {t['utilization']:.0%} (under {0.4:.0%}): tokens cost more than planned."
        )
    if op.get("percentile_used") not in ("p99", None):
        flags.append(f"The SLO was checked at {op['percentile_used']}, not p99: C_max is optimistic.")
    for warn in op.get("warnings") or []:
        flags.append("Benchmark: " + str(warn))
    for warn in w.get("warnings") or []:
        flags.append("Traffic log: " + str(warn.get("message", warn)))
    if not m["memory"].get("recommended", {}).get("all"):
        flags.append("No candidate meets the SLO on the roofline (step 6).")
    return flags


def assumptions(m: dict[str, dict[str, Any]], sections: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every number the plan rests on, with the input, param or formula it comes from."""
    w, op, f, t = m["workload"], m["operating_point"], m["fleet"]["per_tier"]["all"], m["tco"]
    chosen = next(r for r in t["per_candidate"] if r["candidate"] == t["chosen"])
    rows = [
        ("traffic log", w["provenance"]["source"], "params workload.source"),
        ("requests in the log", f"{w['requests']:,}", "metrics/workload.json requests"),
        (
            "sizing rate",
            f"{w['rps']['sizing_rate']:g} req/s",
            f"rps.{w['sizing_rate_key']} (params workload.sizing_rate)",
        ),
        ("mean rate", f"{w['rps']['mean']:g} req/s", "requests / (last - first arrival)"),
        (
            "p95 prompt / output tokens",
            f"{w['input_tokens']['p95']:g} / {w['output_tokens']['p95']:g}",
            "metrics/workload.json",
        ),
        ("TTFT p99 SLO", f"{sections['slo']['ttft_p99_ms']:g} ms", "params slo.ttft_p99_ms"),
        ("ITL p99 SLO", f"{sections['slo']['itl_p99_ms']} ms", "params slo.itl_p99_ms"),
        ("benchmark sweep", op["curve_source"]["sweep"], f"{op['curve_source']['why']} (params curve.source)"),
        (
            "deployment",
            f"{f['model']} on TP{f['tp']} {f['gpu']}, {f['weight_dtype']} weights, {f['kv_dtype']} KV",
            (op.get("manifest") or {}).get("file", ""),
        ),
        ("C_max", f"{op['c_max']:g} ({op['load_kind']})", "method.md step 7: interpolated SLO crossing"),
        ("usable RPS per instance", f"{op['usable_rps']:g} req/s", "metrics/operating_point.json usable_rps"),
        ("safety factor", f"{f['safety']:g}", "params fleet.safety_factor"),
        ("expected growth", f"{f['expected_growth']:.0%}", "params fleet.expected_growth"),
        (
            "burst absorption",
            f"{f['burst_absorption']:.1%}",
            f"rps.{sections['fleet']['burst_rate']} / sizing rate - 1",
        ),
        ("spares", f"{f['spares']}", "N+1 (N+2 if params fleet.critical)"),
        ("price per GPU-hour", f"USD {chosen['usd_per_gpu_hour']:g}", chosen.get("price_source") or ""),
        ("hours per month / year", "730 / 8760", "method.md step 12"),
        ("planned utilization", f"{sections['tco']['planned_utilization']:.0%}", "params tco.planned_utilization"),
    ]
    return pd.DataFrame(rows, columns=["assumption", "value", "source"])


def quarter_over_quarter(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Traffic, plan and cost then and now, with the change."""

    def get(d: dict[str, Any] | None, *keys: str) -> Any:
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    items = [
        ("sizing rate (req/s)", ("workload", "rps", "sizing_rate")),
        ("mean rate (req/s)", ("workload", "rps", "mean")),
        ("p95 prompt tokens", ("workload", "input_tokens", "p95")),
        ("p95 output tokens", ("workload", "output_tokens", "p95")),
        ("GPUs", ("fleet", "total_gpus")),
        ("monthly cost (USD)", ("tco", "monthly_usd")),
        ("cost per 1M output tokens (USD)", ("tco", "usd_per_million_output_tokens")),
        ("utilization", ("tco", "utilization")),
    ]
    rows = []
    for label, keys in items:
        a, b = get(old, *keys), get(new, *keys)
        change = (b / a - 1) if isinstance(a, int | float) and isinstance(b, int | float) and a else None
        rows.append({"figure": label, "previous": a, "now": b, "change": None if change is None else f"{change:+.1%}"})
    return pd.DataFrame(rows)


def headline_html(screen: list[tuple[str, str, str]], flags: list[str]) -> str:
    """The first screen as escaped HTML tiles plus the risk flags."""
    tiles = "".join(
        f'<div style="display:inline-block;min-width:200px;margin:6px;padding:10px;border:1px solid #ccc;border-radius:6px">'
        f'<div style="font-size:12px;color:#555">{esc(label)}</div><div style="font-size:22px;font-weight:600">{esc(value)}</div>'
        f'<div style="font-size:11px;color:#777">{esc(src)}</div></div>'
        for label, value, src in screen
    )
    items = "".join(f"<li>{esc(f)}</li>" for f in flags) or "<li>none</li>"
    return f'<div>{tiles}</div><h3>Risk flags</h3><ul style="color:#b00">{items}</ul>'


def load(sections: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """Everything the finance notebook shows."""
    from pipeline import params

    root = root or paths.ROOT
    sec = {name: params.validate_section(name, sections.get(name)) for name in SECTIONS}
    m = load_metrics(root)
    old, where = previous_metrics(sec["report"]["previous"], root)
    return {"metrics": m, "sections": sec, "previous": old, "previous_where": where}


def hourly_utilization(m: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per hour of day: mean rate over the capacity of the static fleet and of the scheduled one."""
    tier = m["fleet"]["per_tier"]["all"]
    usable = tier["usable_rps"]
    static = tier["schedule"]["static_instances"]
    rows = []
    for h in tier["schedule"]["hours"]:
        mean = m["workload"]["hourly"][h["hour"]]["mean_rps"]
        rows.append({"hour": h["hour"], "fleet": "static", "utilization": mean / (static * usable)})
        rows.append({"hour": h["hour"], "fleet": "scheduled", "utilization": mean / (h["instances"] * usable)})
    return pd.DataFrame(rows)


def tiers_table(m: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The workload's tiers (names escaped by pandas): share of requests, sizing rate, archetype, p95 lengths."""
    w = m["workload"]
    rows = [
        {
            "tier": name,
            "requests": t["requests"],
            "share": f"{t['requests'] / w['requests']:.0%}",
            "sizing rate (req/s)": t["rps"]["sizing_rate"],
            "archetype": t.get("archetype"),
            "p95 prompt / output": f"{t['input_tokens']['p95']:g} / {t['output_tokens']['p95']:g}",
        }
        for name, t in sorted((w.get("tiers") or {}).items())
    ]
    return pd.DataFrame(rows)
