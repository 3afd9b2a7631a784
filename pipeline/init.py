"""`sizing init --log PATH`: point the project's params.yaml at a user's own traffic log.

It reads the log (DuckDB), detects the layout, the column mapping, the timestamp unit and a tier
column, then profiles the log for real (ingest + great-expectations + step 1, in a temp folder) so
that a log that cannot be sized fails here, before anything is written. Only then it backs up
params.yaml and rewrites, keeping its comments (ruamel.yaml round trip):

- workload.source, format, columns, timestamp_unit, tiers {column, rules: [], map: {}};
- validation.source: null (no production window yet), validation.tier: all,
  validation.replicas and benchmark_gpu_util_pct: null (the sample's window);
- model.tiers: {} (the sample's tier -> model map); report.previous: null.

Everything else (SLO, hardware, model.name, curve.source, prices) is left as it is and listed in
the summary, with a note when it still points at the shipped SYNTHETIC sample.
"""

from __future__ import annotations

import io as stdio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from pipeline.errors import InputError

ARRIVAL_PREFIXES = ("arrival", "timestamp", "ts", "time", "created", "request_time", "start")
INPUT_NAMES = (
    "input_tokens",
    "prompt_tokens",
    "input_length",
    "num_prompt_tokens",
    "prompt_len",
    "input_len",
    "context_tokens",
    "request_tokens",
    "tokens_in",
)
OUTPUT_NAMES = (
    "output_tokens",
    "completion_tokens",
    "output_length",
    "num_generated_tokens",
    "generated_tokens",
    "output_len",
    "response_tokens",
    "tokens_out",
)
TIER_CANDIDATES = ("tier", "model", "tenant")
SAMPLE_SWEEPS = "data/raw/benchmarks"


@dataclass
class Detected:
    """What init found in the log, and the params it will write."""

    source: str
    format: str
    columns: dict[str, str]
    timestamp_unit: str
    tier_column: str
    profile: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _project_root(cwd: Path) -> Path:
    if not (cwd / "params.yaml").is_file() or not (cwd / "dvc.yaml").is_file():
        raise InputError(
            f"{cwd}: no params.yaml and dvc.yaml here; expected to run `sizing init` in the project root "
            "(the folder holding params.yaml and dvc.yaml)"
        )
    return cwd


def _source_param(log: str, root: Path) -> str:
    """The log path as params.yaml should hold it: relative to the project root when inside it."""
    path = Path(log).expanduser()
    path = path if path.is_absolute() else (root / path)
    path = path.resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _guess_columns(available: list[str], label: str) -> dict[str, str]:
    """normalized name -> file column for a generic log whose names are common synonyms."""
    lower = {c.lower(): c for c in available}
    found: dict[str, str] = {}
    for norm, names in (("input_tokens", INPUT_NAMES), ("output_tokens", OUTPUT_NAMES)):
        hit = next((lower[n] for n in names if n in lower), None)
        if hit:
            found[norm] = hit
    arrival = next(
        (c for c in available if c.lower() == "arrival_s"),
        next((c for c in available if c.lower().startswith(ARRIVAL_PREFIXES)), None),
    )
    if arrival:
        found["arrival_s"] = arrival
    missing = [k for k in ("arrival_s", "input_tokens", "output_tokens") if k not in found]
    if missing:
        raise InputError(
            f"{label}: cannot tell which column holds {', '.join(missing)} (the file has columns: "
            f"{', '.join(available) or 'none'}); expected a known layout or name them, e.g. "
            "sizing init --log PATH --column arrival_s=ts --column input_tokens=prompt --column output_tokens=completion"
        )
    return found


def detect(
    log: str,
    root: Path,
    columns: dict[str, str] | None = None,
    timestamp_unit: str | None = None,
    fmt: str | None = None,
) -> Detected:
    """Detect layout, mapping, unit and tiers, and profile the log for real (nothing is written)."""
    from pipeline import params, traffic, workload
    from pipeline.stages import workload as workload_stage
    from pipeline.traffic import layouts

    source_param = _source_param(log, root)
    source = traffic.open_source(source_param, None, root)
    label = source.label
    con = duckdb.connect()
    try:
        scan = source.scan_view(con)
        described = traffic._describe(con, scan, label)
        available = [name for name, _ in described]
        types = dict(described)
        guess = fmt or layouts.guess_layout_name(available)
        mapping: dict[str, str] = {}
        if columns:
            guess, mapping = "generic", dict(columns)
        elif guess in (None, "generic"):
            found = _guess_columns(available, label)
            mapping = {k: v for k, v in found.items() if k != v}
            guess = "generic"
        layout = layouts.for_format(guess, available, mapping, label)
        full = {**layout.columns, **{k: v for k, v in layout.optional.items() if v in available}}
        absent = [v for v in layout.columns.values() if v not in available]
        if absent:
            raise InputError(
                f"{label}: missing column {', '.join(repr(a) for a in absent)} for format '{layout.name}'; "
                f"the file has columns: {', '.join(available)}"
            )
        unit = timestamp_unit or (layout.timestamp_unit if layout.timestamp_unit != "auto" else "auto")
        note = None
        if unit == "auto":
            arrival = full["arrival_s"]
            unit, note = traffic._resolve_unit(con, scan, arrival, types[arrival], "auto")
        tier_column = "none"
        for norm in TIER_CANDIDATES:
            col = full.get(norm)
            if col and col in available:
                q = traffic.sql_ident(col)
                distinct = con.execute(f"SELECT count(DISTINCT {q}) FROM {scan}").fetchall()[0][0]
                if 2 <= distinct <= workload.MAX_TIERS:
                    tier_column = norm
                break
    except duckdb.Error as exc:
        raise InputError(f"{label}: cannot be read: {traffic._first_line(exc)}") from None
    finally:
        con.close()

    current = params.load(root / "params.yaml")
    section = {
        **params.section("workload", current),
        "source": source_param,
        "format": layout.name,
        "pattern": None,
        "columns": mapping if layout.name == "generic" else {},
        "timestamp_unit": unit,
        "tiers": {"column": tier_column, "rules": [], "map": {}},
    }
    wl = params.validate_section("workload", section)
    slo = params.section("slo", current)
    settings = workload.ProfileSettings.from_params(wl, slo)
    with tempfile.TemporaryDirectory(prefix="sizing-init-") as tmp:
        req = Path(tmp) / "requests.parquet"
        ingested = traffic.ingest_with(source, req, wl, None)
        profile = workload.build_profile(ingested, req, settings, workload_stage.log_inputs(ingested, root))
    detected = Detected(source_param, layout.name, wl["columns"], unit, tier_column, profile)
    if note:
        detected.notes.append(note["message"])
    return detected


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    y.indent(mapping=2, sequence=4, offset=2)
    y.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )  # `key: null` as params.yaml writes it, not `key:`
    return y


def _flow(value: dict[str, Any] | list[Any]) -> Any:
    """A mapping or list that prints on one line, like the rest of params.yaml."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    out = CommentedMap(value) if isinstance(value, dict) else CommentedSeq(value)
    out.fa.set_flow_style()
    return out


def _backup_path(params_path: Path) -> Path:
    """params.yaml.bak, or .bak.2, .bak.3 ... when an earlier backup exists (never overwritten)."""
    first = params_path.with_name(params_path.name + ".bak")
    if not first.exists():
        return first
    n = 2
    while params_path.with_name(f"{params_path.name}.bak.{n}").exists():
        n += 1
    return params_path.with_name(f"{params_path.name}.bak.{n}")


def rewrite_params(params_path: Path, d: Detected) -> tuple[Path, list[str]]:
    """Back up params.yaml, then set the log's values and clear the sample's; returns (backup, changes)."""
    from pipeline import io, params

    text = params_path.read_text(encoding="utf-8")
    y = _yaml()
    data = y.load(text)
    changes: list[str] = []

    def put(section: str, key: str, value: Any, sub: str | None = None) -> None:
        node = data.setdefault(section, {})
        if sub:
            node = node.setdefault(sub, {})
        old = node.get(key, "<unset>")
        new = _flow(value) if isinstance(value, dict | list) else value
        if old != value:
            changes.append(f"{section}.{sub + '.' if sub else ''}{key}: {_show(old)} -> {_show(value)}")
        node[key] = new

    put("workload", "source", d.source)
    put("workload", "format", d.format)
    put("workload", "pattern", None)
    put("workload", "columns", dict(d.columns))
    put("workload", "timestamp_unit", d.timestamp_unit)
    put("workload", "column", d.tier_column, sub="tiers")
    put("workload", "rules", [], sub="tiers")
    put("workload", "map", {}, sub="tiers")
    put("model", "tiers", {})
    put("validation", "source", None)
    put("validation", "tier", "all")
    put("validation", "replicas", None)
    put("validation", "benchmark_gpu_util_pct", None)
    put("report", "previous", None)

    buf = stdio.StringIO()
    y.dump(data, buf)
    new_text = buf.getvalue()
    params.validate_all(yaml.safe_load(new_text), params_path.parent)  # what dvc and the stages will read
    backup = _backup_path(params_path)
    io.write_text(backup, text)
    io.write_text(params_path, new_text)
    return backup, changes


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def summary(d: Detected, backup: Path, changes: list[str], root: Path) -> str:
    """What init detected, what it changed, and what still points at the sample."""
    from pipeline import params, workload

    p = d.profile
    lines = [
        f"sizing init: {d.source} ({d.format}, timestamps in {d.timestamp_unit}, "
        f"tiers: {d.tier_column if d.tier_column != 'none' else 'none (one pooled fleet)'})",
        workload.describe(p),
        f"params.yaml backed up to {backup.name}; changed:",
        *[f"  {c}" for c in changes],
    ]
    lines += [f"note: {n}" for n in d.notes]
    current = params.load(root / "params.yaml")
    curve = params.section("curve", current).get("source")
    if (
        curve
        and Path(curve).as_posix().rstrip("/") == SAMPLE_SWEEPS
        and any(
            "synthetic: true" in m.read_text(encoding="utf-8", errors="replace")
            for m in (root / SAMPLE_SWEEPS).glob("*/manifest.yaml")
        )
    ):
        lines.append(
            f"note: curve.source ({curve}) still holds the SYNTHETIC sample sweeps: reports carry a SAMPLE banner "
            "until you put your own benchmark sweeps there (README: benchmark results)."
        )
    lines.append(
        f"note: model.name = {params.section('model', current)['name']} and slo are kept; check them, then run: dvc repro"
    )
    return "\n".join(lines)


def run(log: str, cwd: Path | None = None, **kw: Any) -> str:
    """Detect, validate, back up and rewrite params.yaml; return the summary to print."""
    root = _project_root((cwd or Path.cwd()).resolve())
    d = detect(log, root, **kw)
    backup, changes = rewrite_params(root / "params.yaml", d)
    return summary(d, backup, changes, root)
