"""Prometheus text-format scrapes of vLLM, SGLang and the DCGM exporter, read into window figures (step 13).

The text itself is read by prometheus_client's parser (`text_string_to_metric_families`); this module adds the
scrape time, the name normalization below, the NaN rule and the window arithmetic.

Two or more scrapes of the same servers over a window: counters become rates (increase / seconds,
counter resets handled), histograms become percentiles (bucket increases over the window, linear
interpolation inside the bucket as PromQL's histogram_quantile does), gauges become the mean of the
scrapes. Metric names are normalized across versions: the `vllm:`/`sglang:` prefix is kept apart,
a counter's `_total` suffix is dropped, and renamed metrics map to one name
(`gpu_cache_usage_perc` -> `kv_cache_usage_perc`, `time_per_output_token_seconds` ->
`inter_token_latency_seconds`, SGLang's `num_queue_reqs` -> `num_requests_waiting`, ...).
A percentile that lands in a bucket too wide to resolve it (the first bucket, the +Inf bucket, or a
bucket whose upper bound is more than `coarse_ratio` x its lower one) is reported with `coarse: true`
and the reason: vLLM's ITL buckets start at 10 ms, so a p99 ITL under 10 ms is only "< 10 ms".
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline.errors import InputError

# engine metric (after the prefix, without _total) -> the one name used here
ALIASES = {
    "gpu_cache_usage_perc": "kv_cache_usage_perc",
    "time_per_output_token_seconds": "inter_token_latency_seconds",
    "num_queue_reqs": "num_requests_waiting",  # SGLang
    "num_running_reqs": "num_requests_running",  # SGLang
    "token_usage": "kv_cache_usage_perc",  # SGLang: share of KV token slots in use
    "gpu_prefix_cache_hits": "prefix_cache_hits",  # vLLM v0
    "gpu_prefix_cache_queries": "prefix_cache_queries",  # vLLM v0
    "num_preemptions": "num_preemptions",
    "e2e_request_latency_seconds": "e2e_request_latency_seconds",
}
ENGINE_PREFIXES = ("vllm:", "sglang:")
READ_PREFIXES = (*ENGINE_PREFIXES, "DCGM_")  # the families step 13 reads: a NaN or infinite sample there is an error
SCRAPED_AT_RE = re.compile(r"^#\s*scraped_at:\s*(\S+)\s*$", re.IGNORECASE)  # this project's comment, not Prometheus'
EPOCH_IN_NAME_RE = re.compile(r"(?<!\d)(\d{10})(?!\d)")
FLOAT_ERROR_RE = re.compile(r"^could not convert string to float: '(.*)'$|^Invalid value: '(.*)'$")
EXPECTED_SAMPLE = '`name{label="v"} value [timestamp_ms]`'

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One scrape: its time, the samples by (family, labels), and each family's declared type."""

    path: str
    time_s: float
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    synthetic: bool = False  # the file opens with "# SYNTHETIC" (the project's generated sample)


@dataclass(frozen=True)
class _Sample:
    """One sample line as prometheus_client read it, with its line number and the name as written."""

    name: str
    labels: Labels
    value: float
    timestamp_s: float | None
    lineno: int


def _number(text: str, path: str, lineno: int) -> float:
    t = text.strip()
    if t in ("+Inf", "Inf"):
        return math.inf
    if t == "-Inf":
        return -math.inf
    try:
        return float(t)
    except ValueError:
        raise InputError(
            f"{path}, line {lineno}: value {text!r} is not a number; expected Prometheus text format "
            '`name{label="v"} value [timestamp_ms]`'
        ) from None


def normalize(name: str, kind: str | None = None) -> str:
    """'vllm:gpu_cache_usage_perc' -> 'vllm:kv_cache_usage_perc'; 'vllm:prompt_tokens_total' -> 'vllm:prompt_tokens'."""
    prefix = next((p for p in ENGINE_PREFIXES if name.startswith(p)), "")
    base = name[len(prefix) :]
    for suffix in ("_bucket", "_sum", "_count"):
        if kind == "histogram" and base.endswith(suffix):
            base = base[: -len(suffix)]
    if base.endswith("_total") and kind in (None, "counter", "untyped"):
        base = base[: -len("_total")]
    base = ALIASES.get(base, base)
    return prefix + base


def _families(text: str, path: str) -> tuple[list[_Sample], dict[str, str]]:
    """Every sample in file order and each declared family's type, read by prometheus_client's text parser.

    prometheus_client yields the families in file order and each family's samples in line order, so the n-th
    sample is the n-th sample line: that is how a sample gets its line number back. A family declared by
    `# TYPE` away from its samples (the project's sample writes every TYPE line first) comes out empty and its
    samples as untyped one-sample families: the declared types are kept apart and applied by name (`_family`).
    """
    lines = text.split("\n")  # how prometheus_client's StringIO splits the text
    sample_lines = [i for i, line in enumerate(lines, start=1) if line.strip() and not line.strip().startswith("#")]
    samples: list[_Sample] = []
    types: dict[str, str] = {}
    try:
        for fam in text_string_to_metric_families(text):
            if fam.type == "counter":  # prometheus_client names a counter family without its `_total`
                types[fam.name] = types[fam.name + "_total"] = "counter"
            elif fam.type != "unknown":  # untyped (declared or not): the name decides, as for an undeclared family
                types[fam.name] = fam.type
            for s in fam.samples:
                lineno = sample_lines[len(samples)]
                name = s.name
                written = lines[lineno - 1].lstrip()
                if (
                    fam.type == "counter"
                    and not written.startswith(name)
                    and written.startswith(name[: -len("_total")])
                ):
                    name = name[: -len("_total")]  # `# TYPE x counter` + `x 1`: prometheus_client renamed it x_total
                ts = None if s.timestamp is None else float(s.timestamp)
                samples.append(_Sample(name, tuple(sorted(s.labels.items())), float(s.value), ts, lineno))
    except (ValueError, IndexError) as exc:
        raise _syntax_error(lines, path, exc) from None
    return samples, types


def _syntax_error(lines: list[str], path: str, exc: Exception) -> InputError:
    """The one-line error for text prometheus_client cannot read: the first line that fails alone, and why."""
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        try:
            list(text_string_to_metric_families(s + "\n"))
        except (ValueError, IndexError) as line_exc:
            return _line_error(s, path, lineno, str(line_exc))
    return InputError(f"{path}: not Prometheus text format ({exc}); expected {EXPECTED_SAMPLE} lines")


def _line_error(s: str, path: str, lineno: int, why: str) -> InputError:
    where = f"{path}, line {lineno}"
    if s.startswith("#"):
        return InputError(
            f"{where}: {s[:80]!r} is not a valid TYPE or HELP comment{f' ({why})' if why else ''}; "
            "expected `# TYPE name counter|gauge|histogram|summary|untyped` or `# HELP name text`"
        )
    if why.startswith("Invalid labels: "):
        return InputError(
            f'{where}: cannot read the labels {{{why[len("Invalid labels: ") :]}}}; expected name="value"'
        )
    m = FLOAT_ERROR_RE.match(why)
    bad = next((g for g in m.groups() if g is not None), None) if m else None
    if bad and bad in s.split()[1:] and not any(c in bad for c in '{}"'):
        return InputError(f"{where}: value {bad!r} is not a number; expected Prometheus text format {EXPECTED_SAMPLE}")
    return InputError(f'{where}: {s[:80]!r} is not a Prometheus sample; expected `name{{label="v"}} value`')


def parse(text: str, path: str, time_s: float | None = None) -> Scrape:
    """One scrape in Prometheus text exposition format (HELP/TYPE comments, labels, optional ms timestamps).

    The text is read by `prometheus_client.parser.text_string_to_metric_families`; what is this project's own:
    the scrape time (the `time_s` argument, a `# scraped_at:` comment, the samples' timestamps or the epoch in
    the file name), the normalized names (`normalize`) and the NaN rule (an error in a family step 13 reads).
    """
    raw, types = _families(text, path)
    if time_s is None:
        for lineno, line in enumerate(text.split("\n"), start=1):
            m = SCRAPED_AT_RE.match(line.strip())
            if m:
                time_s = _time(m.group(1), path, lineno)
                break
    if not raw:
        raise InputError(f"{path}: no samples; expected a Prometheus text-format scrape (/metrics)")
    if time_s is None:
        stamps = [s.timestamp_s for s in raw if s.timestamp_s is not None]
        if stamps:
            time_s = max(stamps)
    if time_s is None:
        m = EPOCH_IN_NAME_RE.search(Path(path).name)
        if m:
            time_s = float(m.group(1))
    if time_s is None:
        raise InputError(
            f"{path}: no scrape time. Expected sample timestamps (ms), a `# scraped_at: 2026-01-05T10:00:00Z` line, "
            "or the epoch seconds in the file name (vllm-1767607200.prom)"
        )
    family_type = dict(types)
    for s in raw:  # an undeclared family with _bucket{le=...} series is a histogram
        if s.name.endswith("_bucket") and any(k == "le" for k, _ in s.labels):
            family_type.setdefault(s.name[: -len("_bucket")], "histogram")
    scrape = Scrape(path, float(time_s), synthetic=text.lstrip().startswith("# SYNTHETIC"))
    for s in raw:
        fam, kind = _family(s.name, family_type)
        if not math.isfinite(s.value):
            if s.name.startswith(READ_PREFIXES):
                shown = ",".join(f'{k}="{v}"' for k, v in s.labels)
                raise InputError(
                    f"{path}, line {s.lineno}: {s.name}{{{shown}}} = {s.value}; expected a finite number: a NaN or "
                    "infinite sample cannot be averaged or differenced (fix the exporter, or drop the scrape)"
                )
            continue  # NaN in a family sizing never reads (go_gc_duration_seconds of an idle Go exporter): not kept
        key = (normalize(fam, kind) + _suffix(s.name, fam, kind), s.labels)
        scrape.samples[key] = s.value
        scrape.types[normalize(fam, kind)] = kind or "untyped"
    return scrape


# the series names a family of each type owns besides its own name
FAMILY_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count", "_total", "_created"),
    "summary": ("_sum", "_count", "_total", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def _family(name: str, types: dict[str, str]) -> tuple[str, str | None]:
    """The metric family a sample belongs to (histogram series carry _bucket/_sum/_count, a counter _total)."""
    if name in types:
        return name, types[name]
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in types and suffix in FAMILY_SUFFIXES.get(types[base], ()):
            return base, types[base]
    return name, None


def _suffix(name: str, fam: str, kind: str | None) -> str:
    return name[len(fam) :] if kind == "histogram" else ""


def _time(text: str, path: str, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputError(f"{path}, line {lineno}: scraped_at {text!r} is neither epoch seconds nor ISO 8601") from None


def read(paths_: list[Path], root: Path | None = None) -> list[Scrape]:
    """Every scrape file, sorted by time."""
    from pipeline import io
    from pipeline.paths import display_path

    scrapes = [parse(io.read_text(p, display_path(p, root)), display_path(p, root)) for p in paths_]
    return sorted(scrapes, key=lambda s: (s.time_s, s.path))


def samples_frame(scrapes: list[Scrape]) -> Any:
    """Every sample of every scrape as a table (file, metric, kind, labels, value) for the GX suite."""
    import pandas as pd

    rows = []
    for s in scrapes:
        for (name, labels), value in sorted(s.samples.items()):
            fam = next(
                (
                    name[: -len(x)]
                    for x in ("_bucket", "_sum", "_count")
                    if name.endswith(x) and name[: -len(x)] in s.types
                ),
                name,
            )
            rows.append(
                {
                    "file": s.path,
                    "metric": name,
                    "kind": s.types.get(fam, "untyped"),
                    "labels": ",".join(f'{k}="{v}"' for k, v in labels),
                    "value": value,
                }
            )
    return pd.DataFrame(rows, columns=["file", "metric", "kind", "labels", "value"])


@dataclass(frozen=True)
class Window:
    """Scrapes of one source (a file-name group: vllm, sglang, dcgm) from the first to the last."""

    source: str
    scrapes: tuple[Scrape, ...]

    @property
    def seconds(self) -> float:
        return self.scrapes[-1].time_s - self.scrapes[0].time_s

    def names(self) -> set[str]:
        return {n for s in self.scrapes for n, _ in s.samples}

    def _series(self, name: str) -> dict[tuple[tuple[str, str], ...], list[float]]:
        out: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for s in self.scrapes:
            for (n, labels), v in s.samples.items():
                if n == name:
                    out.setdefault(labels, []).append(v)
        return out

    def increase(self, name: str) -> float | None:
        """Sum over series of the counter's increase across the window (a drop is a restart: count from zero)."""
        series = self._series(name)
        if not series:
            return None
        total = 0.0
        for values in series.values():
            for a, b in itertools.pairwise(values):
                total += b - a if b >= a else b
        return total

    def rate(self, name: str) -> float | None:
        """Counter increase per second over the window."""
        inc = self.increase(name)
        return inc / self.seconds if inc is not None and self.seconds > 0 else None

    def gauge(self, name: str, how: str = "mean") -> float | None:
        """A gauge over the window: the mean of each scrape's mean across series (or the max)."""
        per_scrape = []
        for s in self.scrapes:
            vals = [v for (n, _), v in s.samples.items() if n == name]
            if vals:
                per_scrape.append(sum(vals) / len(vals))
        if not per_scrape:
            return None
        return max(per_scrape) if how == "max" else sum(per_scrape) / len(per_scrape)

    def instances(self, name: str) -> int:
        """How many distinct servers (the `instance` label, else label sets) report `name`."""
        labels = {lb for s in self.scrapes for (n, lb), _ in s.samples.items() if n == name}
        inst = {dict(lb).get("instance") for lb in labels}
        return len(inst - {None}) or (1 if labels else 0)

    def histogram(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, count increase over the window) per bucket, summed over series, sorted by bound."""
        buckets: dict[float, float] = {}
        for labels, values in self._series(name + "_bucket").items():
            le = dict(labels).get("le")
            if le is None:
                continue
            bound = _number(le, self.source, 0)
            inc = sum((b - a if b >= a else b) for a, b in itertools.pairwise(values))
            buckets[bound] = buckets.get(bound, 0.0) + inc
        out = sorted(buckets.items())
        for (b0, c0), (b1, c1) in itertools.pairwise(out):
            if c1 < c0:
                files = ", ".join(s.path for s in self.scrapes)
                raise InputError(
                    f"{files}: histogram {name}: the count of bucket le={_le(b1)} grew by {c1:g} over the window but "
                    f"le={_le(b0)} by {c0:g}; expected cumulative buckets (each le counts everything at or below it)"
                )
        return out


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def quantile(buckets: list[tuple[float, float]], q: float, coarse_ratio: float = 2.0) -> dict[str, Any] | None:
    """histogram_quantile over cumulative buckets: the value, its bucket, and whether the bucket is too coarse."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(bound):
                return {
                    "value": prev_bound,
                    "bucket": [prev_bound, None],
                    "coarse": True,
                    "why": f"p{q * 100:g} lies above the highest finite bucket ({prev_bound:g}): only a lower bound",
                    "observations": total,
                }
            inside = (rank - prev_count) / (count - prev_count) if count > prev_count else 1.0
            value = prev_bound + (bound - prev_bound) * inside
            coarse, why = False, ""
            if i == 0:
                coarse, why = (
                    True,
                    f"p{q * 100:g} lies in the first bucket (<= {bound:g}): the buckets cannot resolve it",
                )
            elif prev_bound > 0 and bound / prev_bound > coarse_ratio:
                coarse = True
                why = f"p{q * 100:g} lies in a wide bucket ({prev_bound:g}, {bound:g}]: interpolated, uncertain by up to {bound - prev_bound:g}"
            return {"value": value, "bucket": [prev_bound, bound], "coarse": coarse, "why": why, "observations": total}
        prev_bound, prev_count = bound, count
    return None


def windows(scrapes: list[Scrape]) -> dict[str, Window]:
    """Group scrapes by source: the file name up to its first '-', '_' or digit (vllm-..., dcgm_..., sglang...)."""
    groups: dict[str, list[Scrape]] = {}
    for s in scrapes:
        stem = Path(s.path).name
        src = re.split(r"[-_.\d]", stem, maxsplit=1)[0] or stem
        groups.setdefault(src.lower(), []).append(s)
    out = {}
    for src, group in sorted(groups.items()):
        if len(group) < 2:
            raise InputError(
                f"{group[0].path}: only one '{src}' scrape; expected two or more over the window "
                "(counters become rates and histograms percentiles from the change between scrapes)"
            )
        if group[-1].time_s <= group[0].time_s:
            raise InputError(f"{src} scrapes all carry the same time {group[0].time_s:g}; expected a window of time")
        out[src] = Window(src, tuple(group))
    return out
