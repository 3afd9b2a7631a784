"""The one table formatting layer of every report: a pandas DataFrame as a readable HTML table.

`html(df)` renders through pandas Styler with: no index (a meaningful index becomes the first column),
units in the headers (`monthly_usd` -> "monthly ($)", `ttft_p99_ms` -> "TTFT p99 (ms)"), dollars with
thousands separators ("$91,065"), fractions as percentages ("11.7%"), "n/a" for NaN/None, every string
HTML-escaped, and nothing wider than the page: cells wrap (CSS class `sizing-table`, in the report
template) and a table whose estimated width exceeds `MAX_WIDTH_PX` is split into several, each repeating
the first (key) column. `register()` makes it the HTML repr of every DataFrame displayed in the kernel
(charts.enable() calls it, and every notebook calls that), so no notebook formats a table by hand.

Byte-stable: the Styler's id is a hash of the table's content, never random.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

import pandas as pd

MAX_WIDTH_PX = 1180  # the report body is 1240 px wide less padding: a table estimated wider is split
CHAR_PX = 7.5  # an average character of the 13 px table font
CELL_PAD_PX = 18
WRAP_CHARS = 36  # a long cell wraps at about this many characters (CSS overflow-wrap), so it counts as this wide
NA = "n/a"

# (suffix, header unit, kind) in order: the first suffix that matches names the column's unit and format
UNITS: tuple[tuple[str, str, str], ...] = (
    ("_usd_per_gpu_hour", "$/GPU-hour", "money2"),
    ("_usd_per_hour", "$/hour", "money"),
    ("_usd_per_month", "$/month", "money"),
    ("_usd_per_million_output_tokens", "$/1M output tokens", "money2"),
    ("usd_per_million_output_tokens_planned", "$/1M output tokens, planned", "money2"),
    ("_usd_with_schedule", "$, with schedule", "money"),
    ("usd_per_million_output_tokens", "$/1M output tokens", "money2"),
    ("usd_per_million_input_tokens", "$/1M input tokens", "money2"),
    ("_usd_lo", "$, low", "money"),
    ("_usd_hi", "$, high", "money"),
    ("_usd", "$", "money"),
    ("_tokens_per_s", "tokens/s", "number"),
    ("_rps_lo", "req/s, low", "number"),
    ("_rps_hi", "req/s, high", "number"),
    ("_rps", "req/s", "number"),
    ("_ms", "ms", "number"),
    ("_s", "s", "number"),
    ("_gib", "GiB", "number"),
    ("_gb", "GB", "number"),
    ("_tbs", "TB/s", "number"),
    ("_gbs", "GB/s", "number"),
    ("_pct", "%", "pct"),
    ("_share", "%", "fraction"),
    ("_frac", "%", "fraction"),
)
FRACTION_WORDS = ("utilization", "share", "attainment", "hit_rate", "p_beats", "probability")
MONEY_WORDS = ("usd", "$")
ACRONYMS = {
    "ttft": "TTFT",
    "itl": "ITL",
    "e2e": "E2E",
    "rps": "RPS",
    "kv": "KV",
    "gpu": "GPU",
    "gpus": "GPUs",
    "tp": "TP",
    "pp": "PP",
    "slo": "SLO",
    "tpot": "TPOT",
    "hbm": "HBM",
    "lolo": "LOLO",
    "lodo": "LODO",
}


def _is_na(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array: not a scalar NA
        return False


def _snake(name: str) -> bool:
    """A machine name (`monthly_usd`, `gpus`): lower-case letters, digits and underscores only."""
    return bool(re.fullmatch(r"[a-z][a-z0-9_]*", name))


def kind_of(name: str) -> str:
    """How a column's numbers are shown: money, money2 (cents), fraction (x100 %), pct (already %) or number."""
    low = str(name).lower()
    for suffix, _, kind in UNITS:
        if low.endswith(suffix) or low == suffix.lstrip("_"):
            return kind
    if "usd" in low or "$" in low:
        return "money2" if ("gpu-hour" in low or "1m" in low or "per gpu" in low or "/ 1m" in low) else "money"
    if any(w in low for w in FRACTION_WORDS) and "(%)" not in low:
        return "fraction"
    if low.endswith("%") or low.endswith("(%)"):
        return "pct"
    return "number"


def header(name: Any) -> str:
    """A column name as a header with its unit: `monthly_usd` -> "monthly ($)"; a non-snake name is kept."""
    text = str(name)
    if not _snake(text):
        return text
    unit = None
    for suffix, label, _ in UNITS:
        if text == suffix.lstrip("_"):
            return label
        if text.endswith(suffix) and len(text) > len(suffix):
            text, unit = text[: -len(suffix)], label
            break
    if unit is None and any(w in text for w in FRACTION_WORDS):
        unit = "%"
    words = [ACRONYMS.get(w, w) for w in text.split("_") if w]
    out = " ".join(words)
    return f"{out} ({unit})" if unit else out


def number(value: float) -> str:
    """A plain number, readable: thousands separators, about three significant digits, no float noise."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a == 0:
        return "0"
    return f"{value:.3g}"


def money(value: float, cents: bool = False) -> str:
    """Dollars: "$91,065" (whole dollars from $100), "$6.88" under that or with `cents`."""
    sign = "-" if value < 0 else ""
    a = abs(value)
    if cents or a < 100:
        text = f"{a:,.3f}" if a < 10 and round(a * 1000) % 10 else f"{a:,.2f}"
        return f"{sign}${text}"
    return f"{sign}${a:,.0f}"


def percent(value: float, already: bool = False) -> str:
    """A fraction (0.1167) as "11.7%"; `already` for a value in percent units (11.67 -> "11.7%")."""
    v = value if already else value * 100
    if abs(v) >= 10 or v == 0:
        return f"{v:.1f}%" if not float(v).is_integer() else f"{v:.0f}%"
    return f"{v:.2g}%" if abs(v) < 1 else f"{v:.1f}%"


def cell(value: Any, kind: str = "number") -> str:
    """One cell's display text (not yet escaped): "n/a" for NaN/None, numbers by `kind`, lists joined."""
    if hasattr(value, "item") and not isinstance(value, str | bytes) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if _is_na(value):
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "unbounded" if value > 0 else NA
        if kind == "money":
            return money(value)
        if kind == "money2":
            return money(value, cents=True)
        if kind == "fraction":
            return percent(value)
        if kind == "pct":
            return percent(value, already=True)
        return number(value)
    if isinstance(value, list | tuple):
        return ", ".join(cell(v, kind) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v, kind)}" for k, v in value.items())
    return str(value)


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """The table with its index dropped (a default RangeIndex) or moved into the first columns (a named one)."""
    unnamed = all(n is None for n in df.index.names)
    if unnamed and pd.api.types.is_integer_dtype(df.index.dtype):  # row numbers (filtered or not): not data
        out = df.reset_index(drop=True)
    else:  # a named index, or labels (strings, dates): the row's key, kept as the first column
        out = df.reset_index()
        if unnamed:
            out = out.rename(columns={"index": ""})
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(p) for p in c if str(p)) for c in out.columns]
    return out


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as its display string and every header with its unit (nothing escaped yet)."""
    table = flat(df)
    cols = {}
    for i, name in enumerate(table.columns):
        kind = kind_of(str(name))
        cols[i] = [cell(v, kind) for v in table.iloc[:, i].tolist()]
    out = pd.DataFrame({i: cols[i] for i in range(len(table.columns))}, index=range(len(table)))
    out.columns = [header(c) for c in table.columns]
    return out


def width_px(frame: pd.DataFrame) -> float:
    """A rough rendered width of a display frame: each column as wide as its widest header word or cell."""
    total = 0.0
    for i, name in enumerate(frame.columns):
        head = max((len(w) for w in str(name).split()), default=1)
        cells = max((min(len(str(v)), WRAP_CHARS) for v in frame.iloc[:, i]), default=1)
        total += max(head, cells) * CHAR_PX + CELL_PAD_PX
    return total


def split(frame: pd.DataFrame, max_px: float = MAX_WIDTH_PX) -> list[pd.DataFrame]:
    """Column groups that each fit `max_px`, every group after the first repeating column 0 (the row's key)."""
    if frame.shape[1] <= 2 or width_px(frame) <= max_px:
        return [frame]
    parts: list[pd.DataFrame] = []
    current: list[int] = []
    for i in range(1, frame.shape[1]):
        trial = [0, *current, i]
        if current and width_px(frame.iloc[:, trial]) > max_px:
            parts.append(frame.iloc[:, [0, *current]])
            current = [i]
        else:
            current.append(i)
    if current:
        parts.append(frame.iloc[:, [0, *current]])
    return parts


def _uuid(frame: pd.DataFrame, n: int) -> str:
    digest = hashlib.sha1(f"{n}|{list(frame.columns)}|{frame.to_numpy().tolist()}".encode()).hexdigest()
    return digest[:10]


def html(
    df: pd.DataFrame,
    highlight: Iterable[bool] | Callable[[pd.Series], bool] | None = None,
    caption: str | None = None,
    max_px: float = MAX_WIDTH_PX,
) -> str:
    """The table as HTML through pandas Styler: no index, units in headers, formatted and escaped cells.

    `highlight`: one bool per row (or a predicate on the original row) marking rows shown in bold orange
    (class `sizing-adopted`, e.g. the adopted plan). `caption`: a line above the table (escaped).
    A table wider than `max_px` comes out as several tables, each repeating the first column.
    """
    table = flat(df)
    if callable(highlight):
        marks = [bool(highlight(row)) for _, row in table.iterrows()]
    elif highlight is not None:
        marks = [bool(x) for x in highlight]
    else:
        marks = [False] * len(table)
    frame = display_frame(table)
    frame = frame.map(breakable)
    frame.columns = [escape(str(c), quote=True) for c in frame.columns]
    out = []
    for n, part in enumerate(split(frame, max_px)):
        part = part.copy()
        dup = pd.Series(part.columns).duplicated()
        if dup.any():  # Styler needs unique columns: a repeated header gets invisible padding
            part.columns = [
                c + "\u200b" * i if d else c for i, (c, d) in enumerate(zip(part.columns, dup, strict=True))
            ]
        styler = part.style.hide(axis="index")
        styler.set_uuid(_uuid(part, n))
        styler.cell_ids = False
        numeric = [all(_looks_numeric(v) for v in part.iloc[:, i]) and len(part) > 0 for i in range(part.shape[1])]
        classes = pd.DataFrame(
            [
                [
                    " ".join(x for x in ("sizing-adopted" if marks[r] else "", "num" if numeric[c] else "") if x)
                    for c in range(part.shape[1])
                ]
                for r in range(len(part))
            ],
            columns=part.columns,
            index=part.index,
        )
        styler.set_td_classes(classes)
        if caption and n == 0:
            styler.set_caption(escape(caption, quote=True))
        out.append(styler.to_html(table_attributes='class="sizing-table"'))
    body = "".join(out)
    return f'<div class="sizing-table-wrap">{body}</div>'


LONG_TOKEN = re.compile(r"\S{25,}")
BREAK_AFTER = re.compile(r"(?<=[A-Za-z0-9])[/_.,=:;-](?=[A-Za-z0-9])")


def breakable(text: Any) -> str:
    """A cell's text HTML-escaped, with a line-break opportunity (<wbr>) after each / _ . , = : ; - between two
    letters or digits in any word of 25+ characters, so long paths and ids wrap at their separators instead of
    widening the table."""
    s = str(text)
    out, last = [], 0
    for match in LONG_TOKEN.finditer(s):
        out.append(escape(s[last : match.start()], quote=True))
        word, pos = match.group(0), 0
        for sep in BREAK_AFTER.finditer(word):
            out.append(escape(word[pos : sep.end()], quote=True) + "<wbr>")
            pos = sep.end()
        out.append(escape(word[pos:], quote=True))
        last = match.end()
    out.append(escape(s[last:], quote=True))
    return "".join(out)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"-?\$?[\d,]+(\.\d+)?%?|n/a|unbounded", str(text)))


def _repr_html(df: pd.DataFrame) -> str:
    return html(df)


def register() -> bool:
    """Make `html` the HTML view of every DataFrame displayed in this IPython kernel; False outside one."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the kernel
        return False
    ip = get_ipython()
    if ip is None:
        return False
    ip.display_formatter.formatters["text/html"].for_type(pd.DataFrame, _repr_html)
    return True


# --- step 10: a per-level table in the style of `vllm bench serve`'s summary ----------------------------------

VLLM_COLUMNS: tuple[tuple[str, str], ...] = (  # (level key of op.candidates[id].levels, vllm bench serve's label)
    ("concurrency", "Maximum request concurrency"),
    ("rps", "Request throughput (req/s)"),
    ("output_tokens_per_s", "Output token throughput (tok/s)"),
    ("ttft_p50_ms", "Median TTFT (ms)"),
    ("ttft_p99_ms", "P99 TTFT (ms)"),
    ("itl_p50_ms", "Median ITL (ms)"),
    ("itl_p99_ms", "P99 ITL (ms)"),
    ("e2e_p50_ms", "Median E2EL (ms)"),
)


def bench_summary(
    levels: list[dict[str, Any]] | pd.DataFrame,
    gpus_per_instance: int | None = None,
    slo: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per load level, columns named as `vllm bench serve` prints its summary.

    `levels`: the `levels` of one candidate in metrics/operating_point.json `candidates[id]` (keys concurrency,
    rps, output_tokens_per_s, ttft_p50_ms, ttft_p99_ms, itl_p50_ms, itl_p99_ms, e2e_p50_ms; a missing key is
    "n/a"). `gpus_per_instance` (TP x PP) adds "Output token throughput per GPU (tok/s)"; `slo`
    ({ttft_p99_ms, itl_p99_ms}) adds "Meets SLO" (P99 TTFT and P99 ITL within it). Display it (the table
    layer formats it) or pass it to `bench_summary_text` for the console-style block of one level.
    """
    rows = levels.to_dict("records") if isinstance(levels, pd.DataFrame) else list(levels)
    out = []
    for r in rows:
        row: dict[str, Any] = {label: r.get(key) for key, label in VLLM_COLUMNS}
        if gpus_per_instance:
            tps = r.get("output_tokens_per_s")
            row["Output token throughput per GPU (tok/s)"] = (
                None if _is_na(tps) else float(tps) / float(gpus_per_instance)
            )
        if slo:
            ttft, itl = r.get("ttft_p99_ms"), r.get("itl_p99_ms")
            known = not _is_na(ttft) and not _is_na(itl)
            row["Meets SLO"] = (
                None
                if not known
                else bool(float(ttft) <= float(slo["ttft_p99_ms"]) and float(itl) <= float(slo["itl_p99_ms"]))
            )
        out.append(row)
    columns = [label for _, label in VLLM_COLUMNS]
    columns += ["Output token throughput per GPU (tok/s)"] if gpus_per_instance else []
    columns += ["Meets SLO"] if slo else []
    return pd.DataFrame(out, columns=columns)


def bench_summary_text(row: dict[str, Any], title: str = "Serving Benchmark Result") -> str:
    """One level as `vllm bench serve` prints it: a 50-column block of `label: value` lines (a row of
    `bench_summary()`, or a level dict with the op.candidates keys)."""
    if "rps" in row or "concurrency" in row:
        row = bench_summary([row]).iloc[0].to_dict()
    lines = [f"{' ' + title + ' ':=^50}"]
    for label, value in row.items():
        if label == "Median TTFT (ms)":
            lines.append(f"{'Time to First Token':-^50}")
        if label == "Median ITL (ms)":
            lines.append(f"{'Inter-token Latency':-^50}")
        if label == "Median E2EL (ms)":
            lines.append(f"{'End-to-end Latency':-^50}")
        kind = "number"
        lines.append(f"{label + ':':<40}{cell(value, kind):>10}")
    lines.append("=" * 50)
    return "\n".join(lines)
