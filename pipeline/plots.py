"""DVC plot data: the small CSV files dvc.yaml's top-level `plots:` section draws (`dvc plots show`, `dvc plots diff`).

Each table is built by a pure function here from what its stage already computed, sorted, rounded and
capped at MAX_ROWS rows, so the same inputs give byte-identical files and a quarter's plots diff cleanly:

- metrics/plots/rps_over_time.csv (workload stage): requests/s per minute over time, with the mean and sizing rates.
- metrics/plots/input_length_cdf.csv, output_length_cdf.csv (workload stage): the length CDFs.
- metrics/plots/ttft_vs_load/<curve>.csv, itl_vs_load/<curve>.csv (curve stage): p99 latency against load,
  measured, and the roofline's prediction of the benchmarked deployment, with the SLO.
- metrics/plots/cost_per_candidate.csv (report stage): monthly USD of every priced candidate deployment.
"""

from __future__ import annotations

import csv
import io as _io
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import io

PLOTS = "metrics/plots"
RPS_OVER_TIME = f"{PLOTS}/rps_over_time.csv"
INPUT_CDF = f"{PLOTS}/input_length_cdf.csv"
OUTPUT_CDF = f"{PLOTS}/output_length_cdf.csv"
TTFT_VS_LOAD = f"{PLOTS}/ttft_vs_load"
ITL_VS_LOAD = f"{PLOTS}/itl_vs_load"
COST_PER_CANDIDATE = f"{PLOTS}/cost_per_candidate.csv"
MAX_ROWS = 2000  # a bound on every plot file: long series are downsampled (downsample_max)


def _cell(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        value = round(value, 4)
        return int(value) if value.is_integer() else value
    return "" if value is None else value


def to_csv(table: pd.DataFrame) -> str:
    """A table as CSV text: header row, `\\n` line ends, floats rounded to 4 decimals (whole ones as integers)."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(table.columns))
    for row in table.itertuples(index=False):
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def downsample_max(series: pd.DataFrame, value: str, max_rows: int = MAX_ROWS) -> pd.DataFrame:
    """At most `max_rows` rows: consecutive rows grouped k = ceil(n / max_rows) at a time, each group kept as
    its first row with the group's largest `value` (peaks survive, the ones sizing cares about). Deterministic."""
    n = len(series)
    if n <= max_rows:
        return series.reset_index(drop=True)
    k = math.ceil(n / max_rows)
    groups = pd.Series(range(n), index=series.index) // k
    first = series.groupby(groups.values).head(1).reset_index(drop=True)
    first[value] = series[value].groupby(groups.values).max().to_numpy()
    return first


def rps_over_time(per_minute: pd.DataFrame, profile: dict[str, Any]) -> pd.DataFrame:
    """Columns hours (since the trace start, or since 00:00 UTC of its first day), rps (the 1-min average),
    mean_rps and sizing_rate_rps (constant lines). `per_minute`: workload.chart_data()["per_minute"]."""
    first = float(profile["first_arrival_s"])
    day0 = (first // 86400) * 86400 if profile.get("clock") == "epoch_utc" else first
    series = pd.DataFrame(
        {
            "hours": (per_minute["minute_start_s"].astype(float) - day0) / 3600.0,
            "rps": per_minute["rps"].astype(float),
        }
    ).sort_values("hours", kind="stable")
    out = downsample_max(series, "rps")
    rps = profile.get("rps") or {}
    out["mean_rps"] = rps.get("mean")
    out["sizing_rate_rps"] = rps.get("sizing_rate")
    return out


def length_cdf(cdf: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Columns <metric> (tokens) and cumulative_share for one length; `cdf`: workload.chart_data()["cdf"]."""
    part = cdf[cdf["metric"] == metric]
    out = pd.DataFrame({metric: part["tokens"].astype(float), "cumulative_share": part["cumulative_share"]})
    return out.sort_values(["cumulative_share", metric], kind="stable").head(MAX_ROWS).reset_index(drop=True)


def slug(name: str) -> str:
    """A curve name as a file name: lower case, runs of other characters as one `_`."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "curve"


def latency_vs_load(
    levels: pd.DataFrame, overlays: dict[str, pd.DataFrame | None], slo: dict[str, Any]
) -> dict[str, dict[str, pd.DataFrame]]:
    """Per curve, two tables (`ttft`, `itl`) of load, measured_p99_ms, predicted_ms (roofline, blank where
    none) and slo_ms, sorted by load. `levels`: curves.parquet rows; `overlays`: curve -> final_curve.
    predicted_vs_measured() table (or None). Returns {slug(curve): {"ttft": table, "itl": table}}."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for curve in sorted(levels["curve"].unique()):
        rows = levels[(levels["curve"] == curve) & levels["load"].map(lambda x: math.isfinite(float(x)))]
        rows = rows.sort_values("load", kind="stable").head(MAX_ROWS)
        overlay = overlays.get(curve)
        tables = {}
        for kind in ("ttft", "itl"):
            predicted: dict[float, float] = {}
            if overlay is not None and not overlay.empty:
                predicted = dict(zip(overlay["load"].astype(float), overlay[f"predicted_{kind}_ms"], strict=True))
            target = slo.get(f"{kind}_p99_ms")
            tables[kind] = pd.DataFrame(
                {
                    "load": rows["load"].astype(float).to_numpy(),
                    "measured_p99_ms": rows[f"{kind}_p99_ms"].astype(float).to_numpy(),
                    "predicted_ms": [predicted.get(float(x)) for x in rows["load"]],
                    "slo_ms": [target] * len(rows),
                }
            )
        key = slug(curve)
        while key in out:  # two names that slug alike
            key += "_"
        out[key] = tables
    return out


def cost_per_candidate(per_candidate: list[dict[str, Any]]) -> pd.DataFrame:
    """Columns candidate, monthly_usd, gpus, basis for every priced candidate (tco.json per_candidate), by candidate."""
    rows = [
        {"candidate": r["candidate"], "monthly_usd": r["monthly_usd"], "gpus": r.get("gpus"), "basis": r.get("basis")}
        for r in per_candidate
        if r.get("monthly_usd") is not None
    ]
    table = pd.DataFrame(rows, columns=["candidate", "monthly_usd", "gpus", "basis"])
    return table.sort_values("candidate", kind="stable").head(MAX_ROWS).reset_index(drop=True)


def write_table(root: Path, rel: str, table: pd.DataFrame) -> None:
    """One plot file, atomically (io.write_text)."""
    io.write_text(Path(root) / rel, to_csv(table))


def write_folder(root: Path, rel: str, tables: dict[str, pd.DataFrame]) -> None:
    """A folder of plot files `<key>.csv`, atomically each; files of curves no longer present are removed."""
    folder = Path(root) / rel
    for key, table in sorted(tables.items()):
        write_table(root, f"{rel}/{key}.csv", table)
    if folder.is_dir() and not io.read_only():  # a notebook opened by hand removes nothing
        for stale in sorted(folder.glob("*.csv")):
            if stale.stem not in tables:
                stale.unlink()


def write_workload(root: Path, charts: dict[str, pd.DataFrame], profile: dict[str, Any]) -> None:
    """The workload stage's plot files from workload.chart_data() and the profile."""
    write_table(root, RPS_OVER_TIME, rps_over_time(charts["per_minute"], profile))
    write_table(root, INPUT_CDF, length_cdf(charts["cdf"], "input_tokens"))
    write_table(root, OUTPUT_CDF, length_cdf(charts["cdf"], "output_tokens"))


def write_curve(root: Path, tables: dict[str, dict[str, pd.DataFrame]]) -> None:
    """The curve stage's plot folders from latency_vs_load()."""
    write_folder(root, TTFT_VS_LOAD, {k: v["ttft"] for k, v in tables.items()})
    write_folder(root, ITL_VS_LOAD, {k: v["itl"] for k, v in tables.items()})


def write_report(root: Path, tco: dict[str, Any]) -> None:
    """The report stage's plot file from metrics/tco.json."""
    write_table(root, COST_PER_CANDIDATE, cost_per_candidate(tco.get("per_candidate") or []))
