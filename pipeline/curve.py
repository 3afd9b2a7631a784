"""Steps 7 and 10: the SLO-constrained operating point of a measured latency-throughput curve.

method.md fixes the definitions: C_max is the highest load whose TTFT p99 (and ITL p99 when an
ITL SLO is set) meets the SLO, interpolated linearly between the last passing and the first
failing level; usable RPS is the RPS at C_max (never the curve's peak); the knee is the first
load where TTFT p99 / p50 exceeds `knee_ratio`; the Little's-law ceiling is C_max / mean E2E at
C_max and the gap is ceiling / usable RPS (flagged beyond `gap_flag_ratio`). A tool that gives
only p95 or medians is used at that percentile and the result says so, loudly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import InputError

TAIL_ORDER = ("p99", "p95", "p90", "p50")
LEVEL_KEYS = (
    "concurrency",
    "rps",
    "output_tokens_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "e2e_p50_ms",
)
"""The figures of one load level of a curve, as the engine-model curves write them (operating_point.json candidates'
levels) and the reports read them (the Pareto view)."""
FORMULAS = {
    "c_max": "highest load whose TTFT (and ITL) tail meets the SLO; linear interpolation between the last passing "
    "and the first failing level: L_p + (SLO - v_p) / (v_f - v_p) x (L_f - L_p)",
    "usable_rps": "achieved RPS interpolated at C_max, divided by the replicas in the benchmark (manifest gpu_count / "
    "(TP x PP))",
    "knee": "first load where TTFT tail / TTFT p50 > curve.knee_ratio",
    "littles_law_ceiling_rps": "closed loop: C_max / mean E2E at C_max (Little's law); open loop: the offered rate "
    "C_max itself; E2E from the SLO (TTFT + output tokens x ITL) when the tool gives none",
    "littles_law_gap": "ceiling / usable RPS (whole benchmark deployment); flagged when > curve.gap_flag_ratio or "
    "< 1 / curve.gap_flag_ratio",
    "goodput_rps": "RPS x share of requests meeting both SLOs (per-request data), or the tool's own goodput",
}


@dataclass(frozen=True)
class Settings:
    """The curve section of params.yaml plus the SLO."""

    ttft_p99_ms: float
    itl_p99_ms: float | None
    knee_ratio: float = 2.0
    gap_flag_ratio: float = 2.0
    max_failed_share: float = 0.05
    length_tolerance: float = 0.25
    sizing_loop: str = "conservative"
    max_length_mismatch: float = 2.0

    @classmethod
    def from_params(cls, curve: dict[str, Any], slo: dict[str, Any]) -> Settings:
        return cls(
            slo["ttft_p99_ms"],
            slo["itl_p99_ms"],
            curve["knee_ratio"],
            curve["gap_flag_ratio"],
            curve["max_failed_share"],
            curve["length_tolerance"],
            curve["sizing_loop"],
            curve.get("max_length_mismatch", 2.0),
        )


@dataclass
class Crossing:
    """Where one latency column crosses its SLO along the load axis."""

    metric: str
    column: str
    percentile: str
    limit_ms: float
    status: str  # ok | below_lowest | above_highest
    c_max: float | None = None
    pass_load: float | None = None
    fail_load: float | None = None
    pass_value: float | None = None
    fail_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "column": self.column,
            "percentile": self.percentile,
            "slo_ms": self.limit_ms,
            "status": self.status,
            "c_max": self.c_max,
            "last_passing": None if self.pass_load is None else {"load": self.pass_load, "value_ms": self.pass_value},
            "first_failing": None if self.fail_load is None else {"load": self.fail_load, "value_ms": self.fail_value},
        }


def crossing(loads: list[float], values: list[float], limit: float) -> tuple[str, float | None, int | None]:
    """(status, C_max, index of the first failing level): linear interpolation at the first failure."""
    for i, v in enumerate(values):
        if v > limit:
            if i == 0:
                return "below_lowest", None, 0
            lp, vp, lf, vf = loads[i - 1], values[i - 1], loads[i], v
            return "ok", lp + (limit - vp) / (vf - vp) * (lf - lp), i
    return "above_highest", None, None


def tail_column(df: pd.DataFrame, metric: str) -> tuple[str, str] | None:
    """The highest percentile the file gives for every level of a metric: (column, percentile)."""
    for p in TAIL_ORDER:
        col = f"{metric}_{p}_ms"
        if col in df and df[col].notna().all():
            return col, p
    return None


def interp(x: float, xs: list[float], ys: list[float]) -> float | None:
    """Linear interpolation of y at x (None when the ys have gaps)."""
    if any(y is None or (isinstance(y, float) and math.isnan(y)) for y in ys):
        return None
    return float(np.interp(x, xs, ys))


def goodput(requests: pd.DataFrame | None, rps: float | None, s: Settings) -> float | None:
    """RPS x share of all requests (failed ones included) that met the TTFT and ITL SLOs."""
    if requests is None or requests.empty or rps is None:
        return None
    ok = requests["ok"].astype(bool) & (requests["ttft_ms"].fillna(math.inf) <= s.ttft_p99_ms)
    if s.itl_p99_ms is not None:
        ok &= requests["tpot_ms"].fillna(0.0) <= s.itl_p99_ms
    return float(rps * ok.sum() / len(requests))


@dataclass
class OperatingPoint:
    """The operating point of one curve, with the evidence behind each number."""

    curve: str
    load_kind: str
    c_max: float
    usable_rps: float
    usable_rps_benchmark: float
    replicas: int
    binding: str
    crossings: list[Crossing]
    knee: float | None
    knee_note: str
    ceiling_rps: float
    gap: float
    gap_flag: bool
    e2e_s_at_c_max: float
    e2e_source: str
    goodput_rps_at_c_max: float | None
    input_tokens: float | None
    output_tokens: float | None
    percentile_used: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "curve": self.curve,
            "load_kind": self.load_kind,
            "c_max": self.c_max,
            "usable_rps": self.usable_rps,
            "usable_rps_benchmark": self.usable_rps_benchmark,
            "replicas_in_benchmark": self.replicas,
            "binding_slo": self.binding,
            "crossings": [c.as_dict() for c in self.crossings],
            "knee": self.knee,
            "knee_note": self.knee_note,
            "littles_law_ceiling_rps": self.ceiling_rps,
            "littles_law_gap": self.gap,
            "gap_flag": self.gap_flag,
            "e2e_s_at_c_max": self.e2e_s_at_c_max,
            "e2e_source": self.e2e_source,
            "goodput_rps_at_c_max": self.goodput_rps_at_c_max,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "percentile_used": self.percentile_used,
            "warnings": self.warnings,
        }


def _unit(kind: str) -> str:
    return "concurrent requests" if kind == "concurrency" else "req/s"


def operating_point(curve: pd.DataFrame, s: Settings, replicas: int = 1, label: str | None = None) -> OperatingPoint:
    """C_max, usable RPS, knee, goodput and the Little's-law check for one curve (rows of one load kind)."""
    name = label or str(curve["curve"].iloc[0])
    kinds = sorted(set(curve["load_kind"]))
    if len(kinds) != 1:
        raise InputError(f"curve {name}: mixes closed-loop and open-loop levels; expected one load kind per curve")
    kind = kinds[0]
    levels = curve[np.isfinite(curve["load"].astype(float))].sort_values("load", kind="stable").reset_index(drop=True)
    files = ", ".join(sorted(set(curve["file"].astype(str)))[:3])
    if len(levels) < 2:
        sat = len(curve) - len(levels)
        extra = f" and {sat} saturation run(s) at an unlimited rate" if sat else ""
        raise InputError(
            f"curve {name} ({files}): a sweep with one level: C_max needs at least two load levels to interpolate; "
            f"found {len(levels)}{extra} (expected a sweep over increasing {_unit(kind)})"
        )
    dup = levels[levels["load"].duplicated(keep=False)]
    if not dup.empty:
        ex = "; ".join(f"load {r.load:g} in {r.file}" for r in dup.head(4).itertuples())
        raise InputError(
            f"curve {name}: loads are not strictly increasing (the same load appears twice: {ex}); expected one result per load level"
        )
    warnings: list[str] = []
    loads = levels["load"].astype(float).tolist()
    crossings: list[Crossing] = []
    percentile_used: dict[str, str] = {}
    targets = [("ttft", s.ttft_p99_ms)] + ([("itl", s.itl_p99_ms)] if s.itl_p99_ms is not None else [])
    for metric, limit in targets:
        tail = tail_column(levels, metric)
        if tail is None:
            raise InputError(
                f"curve {name} ({files}): no {metric.upper()} percentile is given at every level; expected "
                f"{metric}_p99 (or p95/p90/median) per level"
            )
        col, pct = tail
        percentile_used[metric] = pct
        if pct != "p99":
            warnings.append(
                f"{metric.upper()}: the files give no p99, so {pct} is checked against the p99 SLO of {limit:g} ms; "
                f"C_max is optimistic: re-run the benchmark with p99 reporting"
            )
        status, c, fail_i = crossing(loads, levels[col].astype(float).tolist(), limit)
        cr = Crossing(metric, col, pct, limit, status, c)
        if fail_i is not None:
            cr.fail_load, cr.fail_value = loads[fail_i], float(levels[col].iloc[fail_i])
            if fail_i > 0:
                cr.pass_load, cr.pass_value = loads[fail_i - 1], float(levels[col].iloc[fail_i - 1])
        crossings.append(cr)
    for cr in crossings:
        if cr.status == "below_lowest":
            raise InputError(
                f"curve {name}: {cr.metric.upper()} {cr.percentile} is {cr.fail_value:,.1f} ms at the lowest level tested "
                f"({cr.fail_load:g} {_unit(kind)}), above the SLO of {cr.limit_ms:g} ms: C_max is below the lowest "
                f"level tested; the sweep must start lower"
            )
    ok = [cr for cr in crossings if cr.status == "ok"]
    if not ok:
        raise InputError(
            f"curve {name}: every level meets the SLO (TTFT {s.ttft_p99_ms:g} ms"
            + (f", ITL {s.itl_p99_ms:g} ms" if s.itl_p99_ms is not None else "")
            + f"): C_max is at least the highest level tested ({loads[-1]:g} {_unit(kind)}); the sweep must go higher"
        )
    bind = min(ok, key=lambda cr: cr.c_max)  # type: ignore[arg-type,return-value]
    c_max = float(bind.c_max)  # type: ignore[arg-type]
    upto = bind.fail_load
    total = levels["completed"].fillna(0) + levels["failed"].fillna(0)
    share = (levels["failed"].fillna(0) / total.where(total > 0)).fillna(0.0)
    for i, r in levels.iterrows():
        if share.iloc[i] > s.max_failed_share:
            msg = (
                f"{r['file']}: {share.iloc[i]:.1%} of requests failed at load {r['load']:g} "
                f"({int(r['failed'])} of {int(total.iloc[i])}), above curve.max_failed_share = {s.max_failed_share:.0%}"
            )
            if r["load"] <= upto:
                raise InputError(
                    msg
                    + "; latencies of surviving requests understate the load: fix the failures or raise the threshold"
                )
            warnings.append(msg + " (beyond C_max: not used)")
    rps = interp(c_max, loads, levels["rps"].astype(float).tolist())
    if rps is None:
        raise InputError(
            f"curve {name} ({files}): achieved RPS is missing at some level; expected request throughput per level"
        )
    usable = rps / replicas
    # knee
    knee, knee_note = None, f"no level has TTFT {percentile_used['ttft']} / p50 > {s.knee_ratio:g}"
    tcol = f"ttft_{percentile_used['ttft']}_ms"
    if percentile_used["ttft"] == "p50":
        knee_note = "no TTFT tail percentile: the knee cannot be located"
    else:
        for r in levels.itertuples():
            p50 = r.ttft_p50_ms
            if p50 is not None and not math.isnan(p50) and p50 > 0 and getattr(r, tcol) / p50 > s.knee_ratio:
                knee = float(r.load)
                knee_note = f"TTFT {percentile_used['ttft']} / p50 = {getattr(r, tcol) / p50:.2f} > {s.knee_ratio:g} at {r.load:g}"
                break
    # Little's law
    e2e_ms = interp(c_max, loads, levels["e2e_mean_ms"].astype(float).tolist())
    e2e_source = (
        "mean E2E interpolated at C_max ("
        + str(levels["e2e_source"].dropna().iloc[0] if levels["e2e_source"].notna().any() else "tool")
        + ")"
    )
    if e2e_ms is None:
        e2e_ms = interp(c_max, loads, levels["e2e_p50_ms"].astype(float).tolist())
        e2e_source = "median E2E interpolated at C_max (the file has no mean)"
    out_tok = interp(c_max, loads, levels["output_tokens_mean"].astype(float).tolist())
    in_tok = interp(c_max, loads, levels["input_tokens_mean"].astype(float).tolist())
    if e2e_ms is None:
        itl = (
            s.itl_p99_ms
            if s.itl_p99_ms is not None
            else interp(c_max, loads, levels["itl_p50_ms"].astype(float).tolist())
        )
        if out_tok is None or itl is None:
            raise InputError(f"curve {name}: no E2E latency and no output length: the Little's-law check cannot run")
        e2e_ms = s.ttft_p99_ms + out_tok * itl
        e2e_source = (
            f"SLO: TTFT {s.ttft_p99_ms:g} ms + {out_tok:.0f} output tokens x ITL {itl:g} ms (the files give no E2E)"
        )
    e2e_s = e2e_ms / 1e3
    ceiling = c_max / e2e_s if kind == "concurrency" else c_max
    gap = ceiling / rps if rps > 0 else math.inf
    flag = gap > s.gap_flag_ratio or gap < 1 / s.gap_flag_ratio
    if flag:
        warnings.append(
            f"LITTLE'S LAW GAP {gap:.2f}x: ceiling {ceiling:.2f} req/s vs measured {rps:.2f} req/s at C_max; the "
            "benchmark does not behave like a server at this load (wrong load kind, client bottleneck, or failures): "
            "do not size from it without checking"
        )
    # goodput where per-request data or the tool's own figure exists
    gp = levels["goodput_rps"].astype(float)
    goodput_at = interp(c_max, loads, gp.tolist()) if gp.notna().all() else None
    return OperatingPoint(
        curve=name,
        load_kind=kind,
        c_max=c_max,
        usable_rps=usable,
        usable_rps_benchmark=rps,
        replicas=replicas,
        binding=bind.metric,
        crossings=crossings,
        knee=knee,
        knee_note=knee_note,
        ceiling_rps=ceiling,
        gap=gap,
        gap_flag=bool(flag),
        e2e_s_at_c_max=e2e_s,
        e2e_source=e2e_source,
        goodput_rps_at_c_max=None if goodput_at is None else goodput_at / replicas,
        input_tokens=in_tok,
        output_tokens=out_tok,
        percentile_used=percentile_used,
        warnings=warnings,
    )


def curve_lengths(curve: pd.DataFrame) -> tuple[float | None, float | None]:
    """The curve's prompt and output lengths: nominal (tool or manifest) when given, else the measured means."""

    def pick(nominal: str, measured: str) -> float | None:
        for col in (nominal, measured):
            v = curve[col].dropna()
            if not v.empty:
                return float(v.median())
        return None

    return pick("nominal_input_tokens", "input_tokens_mean"), pick("nominal_output_tokens", "output_tokens_mean")


def length_match(
    curve_in: float | None, curve_out: float | None, want_in: float, want_out: float, tol: float
) -> tuple[bool, float]:
    """(within tolerance on both lengths, distance): distance = |ln(in/want_in)| + |ln(out/want_out)|."""
    if not curve_in or not curve_out:
        return False, math.inf
    d = abs(math.log(curve_in / want_in)) + abs(math.log(curve_out / want_out))
    return abs(curve_in / want_in - 1) <= tol and abs(curve_out / want_out - 1) <= tol, d
