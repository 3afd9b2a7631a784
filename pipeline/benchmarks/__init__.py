"""Step 7 readers: the result files of the benchmark tools people already run, normalized.

`read_sweep(path)` reads one sweep (a folder, or a list of files) whatever the tool, detected
from the file's content: vLLM, SGLang, AIPerf, GenAI-Perf, GuideLLM, LLMPerf, inference-perf.
A sweep folder carries `manifest.yaml` (model, GPU, TP/PP, dtypes, engine, lengths, loop):
the files rarely say which hardware produced them, and sizing never guesses it.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.benchmarks import aiperf, genai_perf, guidellm, inference_perf, llmperf, sglang, vllm
from pipeline.benchmarks.common import COLUMNS, LOAD_KINDS, Level, read_json_records
from pipeline.errors import InputError

TOOLS = ("vllm", "sglang", "aiperf", "genai-perf", "guidellm", "llmperf", "inference-perf")
MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
MANIFEST_REQUIRED = ("model", "gpu", "gpu_count", "tp", "weight_dtype", "kv_dtype", "engine", "load_mode")
MANIFEST_OPTIONAL = (
    "pp",
    "engine_version",
    "input_tokens",
    "output_tokens",
    "phase",
    "tier",
    "synthetic",
    "notes",
    "source",
)
LOAD_MODES = {"closed": "concurrency", "open": "request_rate"}
PHASES = ("baseline", "final")
SKIP_SUFFIXES = {".commands", ".sh", ".md", ".txt", ".log", ".yaml", ".yml", ".png", ".html", ".svg", ".ipynb"}


@dataclass
class Sweep:
    """One benchmark sweep: its levels (normalized), its manifest, the files it skipped and why."""

    name: str
    path: Path
    tool: str
    levels: list[Level]
    manifest: dict[str, Any] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def notes(self) -> list[str]:
        """What the readers had to derive or assume, once each with the files it applies to (provenance)."""
        by_note: dict[str, list[str]] = {}
        for lv in self.levels:
            for note in lv.notes:
                by_note.setdefault(note, []).append(lv.row["file"])
        return [f"{note} ({len(files)} of {len(self.levels)} levels)" for note, files in sorted(by_note.items())]

    def frame(self) -> pd.DataFrame:
        """The levels as one table (COLUMNS), curves assigned, sorted by curve then load."""
        rows = [lv.row for lv in self.levels]
        df = pd.DataFrame(rows, columns=list(COLUMNS))
        return df.sort_values(["curve", "load"], kind="stable").reset_index(drop=True)


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def read_manifest(path: Path) -> dict[str, Any]:
    """manifest.yaml of a sweep, checked: every required key, known dtypes and loop, TP x PP dividing the GPUs."""
    import yaml

    from pipeline import io, quantization

    try:
        data = yaml.safe_load(io.read_text(path)) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with keys {', '.join(MANIFEST_REQUIRED)}")
    missing = [k for k in MANIFEST_REQUIRED if data.get(k) in (None, "")]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}; a manifest needs {', '.join(MANIFEST_REQUIRED)}")
    unknown = sorted(set(data) - set(MANIFEST_REQUIRED) - set(MANIFEST_OPTIONAL))
    if unknown:
        raise InputError(
            f"{path}: unknown key '{unknown[0]}'; allowed: {', '.join(MANIFEST_REQUIRED + MANIFEST_OPTIONAL)}"
        )
    out = dict(data)
    out.setdefault("pp", 1)
    for key in ("model", "gpu", "engine", "weight_dtype", "kv_dtype", "load_mode", "phase"):
        if key in out and not isinstance(out[key], str):
            raise InputError(f"{path}: {key} = {out[key]!r}; expected a name (a string)")
    for key in ("gpu_count", "tp", "pp"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise InputError(f"{path}: {key} = {out[key]!r}; expected an integer >= 1")
    if out["gpu_count"] % (out["tp"] * out["pp"]):
        raise InputError(
            f"{path}: gpu_count {out['gpu_count']} is not a multiple of TP {out['tp']} x PP {out['pp']}; "
            "expected whole replicas"
        )
    out["replicas"] = out["gpu_count"] // (out["tp"] * out["pp"])
    if out["weight_dtype"] not in quantization.WEIGHT_DTYPES:
        raise InputError(
            f"{path}: weight_dtype = {out['weight_dtype']!r}; allowed: {', '.join(quantization.WEIGHT_DTYPES)}"
        )
    if out["kv_dtype"] not in quantization.KV_DTYPES:
        raise InputError(f"{path}: kv_dtype = {out['kv_dtype']!r}; allowed: {', '.join(quantization.KV_DTYPES)}")
    if out["load_mode"] not in LOAD_MODES:
        raise InputError(
            f"{path}: load_mode = {out['load_mode']!r}; allowed: closed (fixed concurrency), open (fixed request rate)"
        )
    if out.get("phase", "baseline") not in PHASES:
        raise InputError(f"{path}: phase = {out['phase']!r}; allowed: {', '.join(PHASES)}")
    out.setdefault("phase", "baseline")
    if "tier" in out and (not isinstance(out["tier"], str) or not out["tier"]):
        raise InputError(f"{path}: tier = {out['tier']!r}; expected the name of a routing tier (metrics/tiers.json)")
    for key in ("input_tokens", "output_tokens"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf):
            raise InputError(f"{path}: {key} = {v!r}; expected a finite token count > 0")
    out["file"] = path.as_posix()
    return out


def _skip_reason(path: Path, siblings: set[str]) -> str | None:
    name = path.name
    if name in MANIFEST_NAMES:
        return "manifest"
    if path.suffix.lower() in SKIP_SUFFIXES:
        return "not a result file"
    if name.endswith("_prometheus_metrics.json"):
        return "server-side Prometheus scrape (the client lifecycle files are used)"
    if name.startswith("summary_") and name.endswith("_metrics.json"):
        return "inference-perf summary over all stages (each stage file is read)"
    if name == "profile_export.jsonl":
        return "AIPerf per-request records (attached to profile_export_aiperf.json)"
    if name.startswith("individual_") or name.endswith("_individual_responses.json"):
        return "LLMPerf per-request records (attached to the summary)"
    if path.suffix.lower() == ".csv" and f"{path.stem}.json" in siblings:
        return "CSV twin of the JSON export (the JSON is read)"
    if path.suffix.lower() not in (".json", ".jsonl", ".csv"):
        return "not a result file"
    return None


def _levels_from_file(path: Path, file: str) -> tuple[str, list[Level]] | tuple[None, str]:
    """(tool, levels) for a result file, or (None, skip reason) for a known non-result JSON."""
    from pipeline import io

    if path.suffix.lower() == ".csv":
        head = io.read_text(path, file)[:4000].lower()
        tool = "aiperf" if "inter chunk latency" in head or "aiperf" in path.name else "genai-perf"
        try:
            return tool, [genai_perf.read_csv(path, file, tool)]
        except (TypeError, ValueError, KeyError, IndexError, csv.Error) as exc:
            raise InputError(f"{file}: cannot read the {tool} CSV export ({type(exc).__name__}: {exc})") from None
    records = read_json_records(path, file)
    if len(records) == 1 and isinstance(records[0], list):
        first = records[0][0] if records[0] else None
        if isinstance(first, dict) and "Test name" in first:
            return None, "vLLM CI summary table (repeats the per-level files)"
        if llmperf.is_individual(records[0]):
            return None, "LLMPerf per-request records"
    tools: list[str] = []
    levels: list[Level] = []
    for i, obj in enumerate(records):
        try:
            tool, got = _read_record(obj, file, path, i, len(records))
        except InputError:
            raise
        except (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            # the readers check the fields they know (common.section, numbers, name_field); a layout they
            # do not expect still ends as one line naming the file, never as a traceback
            where = f" (record {i + 1})" if len(records) > 1 else ""
            raise InputError(
                f"{file}{where}: a field has an unexpected type or value ({type(exc).__name__}: {exc}); expected "
                "the result file as the benchmark tool writes it"
            ) from None
        tools.append(tool)
        levels.extend(got)
    if len(set(tools)) > 1:
        raise InputError(
            f"{file}: mixed formats in one file ({', '.join(sorted(set(tools)))}); expected one tool per file"
        )
    return tools[0], levels


def _read_record(obj: Any, file: str, path: Path, i: int, n: int) -> tuple[str, list[Level]]:
    """One JSON record of a result file: (tool, levels), the tool detected from the record's keys."""
    if guidellm.looks_like(obj):
        tool, got = "guidellm", guidellm.read(obj, file)
    elif inference_perf.looks_like(obj):
        tool, got = "inference-perf", [inference_perf.read(obj, file)]
    elif llmperf.looks_like(obj):
        tool, got = "llmperf", [llmperf.read(obj, file, path)]
    elif sglang.looks_like(obj):
        tool, got = "sglang", [sglang.read(obj, file)]
    elif vllm.looks_like(obj):
        tool, got = "vllm", [vllm.read(obj, file)]
    elif aiperf.looks_like(obj, path.name):
        tool, got = "aiperf", [aiperf.read(obj, file, path)]
    elif genai_perf.looks_like(obj, path.name):
        tool, got = "genai-perf", [genai_perf.read(obj, file, path)]
    else:
        keys = ", ".join(list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
        where = f" (record {i + 1})" if n > 1 else ""
        raise InputError(
            f"{file}{where}: unknown benchmark format (top-level keys: {keys}); expected a result file of "
            f"{', '.join(TOOLS)}"
        )
    return tool, got


def read_sweep(paths: list[Path], name: str | None = None, root: Path | None = None) -> Sweep:
    """Read one sweep: a folder (recursively) or a list of files; levels grouped into curves."""
    files: list[Path] = []
    manifest_path: Path | None = None
    base = paths[0] if len(paths) == 1 and paths[0].is_dir() else paths[0].parent
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            nested = sorted({m.parent for m in p.rglob("*") if m.name in MANIFEST_NAMES and m.parent != p})
            if nested:
                names = ", ".join(_display(d, root) for d in nested[:3])
                raise InputError(
                    f"{_display(p, root)}: holds several sweeps ({len(nested)} subfolders with their own manifest: "
                    f"{names}); expected one sweep per folder: pass the folder of sweeps (each subfolder is read as "
                    "its own sweep) or each sweep folder"
                )
            files.extend(sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")))
            for m in MANIFEST_NAMES:
                if (p / m).exists():
                    manifest_path = p / m
        else:
            files.append(p)
            for m in MANIFEST_NAMES:
                if (p.parent / m).exists():
                    manifest_path = p.parent / m
    skipped: list[tuple[str, str]] = []
    by_tool: dict[str, list[str]] = {}
    levels: list[Level] = []
    for f in files:
        file = _display(f, root)
        siblings = {x.name for x in f.parent.iterdir()}
        reason = _skip_reason(f, siblings)
        if reason is not None:
            if reason != "manifest":
                skipped.append((file, reason))
            continue
        tool, got = _levels_from_file(f, file)
        if tool is None:
            skipped.append((file, str(got)))
            continue
        by_tool.setdefault(tool, []).append(file)
        levels.extend(got)  # type: ignore[arg-type]
    if not by_tool:
        raise InputError(
            f"{_display(base, root)}: no benchmark result files found; expected files of {', '.join(TOOLS)}"
        )
    if len(by_tool) > 1:
        detail = "; ".join(f"{t}: {', '.join(fs[:2])}" for t, fs in sorted(by_tool.items()))
        raise InputError(
            f"{_display(base, root)}: mixed formats in one sweep ({detail}); put each tool's results in its own folder"
        )
    manifest = read_manifest(manifest_path) if manifest_path else None
    if manifest is not None and root is not None:
        manifest["file"] = _display(manifest_path, root)  # type: ignore[arg-type]
    sweep_name = name or base.name
    _assign_curves(sweep_name, levels, manifest)
    check_consistency(_display(base, root), levels, manifest)
    return Sweep(sweep_name, base, next(iter(by_tool)), levels, manifest, skipped)


# the field each tool records its model in (Level.model), for the messages
MODEL_FIELDS = {
    "vllm": "model_id",
    "llmperf": "model",
    "aiperf": "input_config.endpoint.model_names",
    "genai-perf": "input_config.model",
}
SIZE_RE = re.compile(r"(?<![a-z0-9.])(?:\d+x)?\d+(?:\.\d+)?b(?![a-z0-9])")
LENGTH_SPREAD = 1.5  # measured mean lengths of one curve's levels agree within this factor in any real sweep
LENGTH_ABOVE = 1.5  # ... and never exceed the manifest's nominal lengths by more than this


def model_sizes(name: str) -> frozenset[str]:
    """The parameter-size tokens of a model name: 'meta-llama/Llama-3.1-70B-Instruct' -> {'70b'}, 'Mixtral-8x7B' ->
    {'8x7b'}; empty when the name states none ('/models/my-finetune'), which then contradicts nothing."""
    return frozenset(SIZE_RE.findall(name.lower()))


def check_consistency(where: str, levels: list[Level], manifest: dict[str, Any] | None) -> None:
    """Result files of one sweep folder must agree with each other and with the manifest: the model they
    record (by its size, 8B vs 70B) and the mean lengths they measured. 8B levels copied into a 70B folder
    would otherwise give a usable RPS of the wrong model."""
    named = [(lv, model_sizes(lv.model)) for lv in levels if lv.model and model_sizes(lv.model)]
    by_size: dict[frozenset[str], list[Level]] = {}
    for lv, size in named:
        by_size.setdefault(size, []).append(lv)
    if len(by_size) > 1:
        parts = [
            f"{len(lvs)} say {MODEL_FIELDS.get(lvs[0].row['tool'], 'model')} {lvs[0].model!r} (e.g. {lvs[0].row['file']})"
            for _size, lvs in sorted(by_size.items(), key=lambda kv: (-len(kv[1]), sorted(kv[0])))
        ]
        raise InputError(
            f"{where}: result files of different models in one sweep folder: {'; '.join(parts)}; expected one model "
            "per sweep (put each model's results in its own folder with its manifest.yaml)"
        )
    if manifest and by_size:
        stated = model_sizes(str(manifest["model"]))
        size, lvs = next(iter(by_size.items()))
        if stated and not stated & size:
            files = ", ".join(lv.row["file"] for lv in lvs[:3])
            raise InputError(
                f"{manifest['file']}: model = {manifest['model']!r} but {len(lvs)} of {len(levels)} result files say "
                f"{MODEL_FIELDS.get(lvs[0].row['tool'], 'model')} {lvs[0].model!r} ({files}); expected the manifest "
                "of the model the files measured"
            )
    curves: dict[str, list[Level]] = {}
    for lv in levels:
        curves.setdefault(lv.row["curve"], []).append(lv)
    for kind in ("input", "output"):
        col = f"{kind}_tokens_mean"
        for lvs in curves.values():
            got = [(lv.row[col], lv) for lv in lvs if lv.row[col] is not None and math.isfinite(lv.row[col])]
            got = [(v, lv) for v, lv in got if v > 0]
            if len(got) > 1:
                (lo, lo_lv), (hi, hi_lv) = min(got, key=lambda t: t[0]), max(got, key=lambda t: t[0])
                if hi > LENGTH_SPREAD * lo:
                    raise InputError(
                        f"{where}: column '{col}': the levels of one curve measured mean {kind} lengths "
                        f"{lo:,.0f} ({lo_lv.row['file']}) and {hi:,.0f} ({hi_lv.row['file']}); expected one workload "
                        f"per curve (within {LENGTH_SPREAD:g}x): these files come from different sweeps"
                    )
            stated_len = manifest.get(f"{kind}_tokens") if manifest else None
            if stated_len and got:
                hi, hi_lv = max(got, key=lambda t: t[0])
                if hi > LENGTH_ABOVE * float(stated_len):
                    raise InputError(
                        f"{manifest['file']}: {kind}_tokens = {stated_len:g} but {hi_lv.row['file']} measured a mean "
                        f"of {hi:,.0f} {kind} tokens ({col}); expected the manifest of the sweep the files come from"
                    )


def _fmt_tokens(v: Any) -> str:
    return "?" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):g}"


def _assign_curves(sweep: str, levels: list[Level], manifest: dict[str, Any] | None) -> None:
    """One curve per (load kind, dataset, nominal lengths); manifest lengths fill missing nominal ones."""
    for lv in levels:
        r = lv.row
        if r["load_kind"] not in LOAD_KINDS or r["load"] is None:
            raise InputError(f"{r['file']}: the file does not say its load (concurrency or request rate)")
        if manifest:
            if r["nominal_input_tokens"] is None and manifest.get("input_tokens"):
                r["nominal_input_tokens"] = float(manifest["input_tokens"])
            if r["nominal_output_tokens"] is None and manifest.get("output_tokens"):
                r["nominal_output_tokens"] = float(manifest["output_tokens"])
    keys = sorted(
        {
            (
                lv.row["dataset"] or "",
                _fmt_tokens(lv.row["nominal_input_tokens"]),
                _fmt_tokens(lv.row["nominal_output_tokens"]),
            )
            for lv in levels
        }
    )
    for lv in levels:
        r = lv.row
        key = (r["dataset"] or "", _fmt_tokens(r["nominal_input_tokens"]), _fmt_tokens(r["nominal_output_tokens"]))
        label = sweep
        if len(keys) > 1:
            label += f" [{key[0] or 'data'} {key[1]}/{key[2]}]"
        r["curve"] = f"{label} ({'closed loop' if r['load_kind'] == 'concurrency' else 'open loop'})"


def read_source(source: Path, root: Path | None = None) -> list[Sweep]:
    """Every sweep under a benchmarks folder: each subfolder is one sweep (loose files form one more)."""
    if not source.exists():
        raise InputError(f"{_display(source, root)}: benchmarks folder not found; put one folder per sweep there")
    if source.is_file():
        return [read_sweep([source], root=root)]
    subdirs = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(
        p for p in source.iterdir() if p.is_file() and not p.name.startswith(".") and _skip_reason(p, set()) is None
    )
    sweeps = []
    for d in subdirs:  # a subfolder that is itself a folder of sweeps (h100/sweep-a/manifest.yaml) is read as such
        sweeps.extend(read_source(d, root) if is_collection(d) else [read_sweep([d], root=root)])
    if loose:
        sweeps.append(read_sweep(loose, name=source.name, root=root))
    if not sweeps:
        raise InputError(
            f"{_display(source, root)}: no benchmark sweeps found; expected one folder per sweep with a manifest.yaml"
        )
    return sweeps


def is_collection(folder: Path) -> bool:
    """A folder of sweeps rather than one sweep: no manifest of its own, and a subfolder somewhere below holds one."""
    if not folder.is_dir() or any((folder / m).exists() for m in MANIFEST_NAMES):
        return False
    return any(m.name in MANIFEST_NAMES for m in folder.rglob("*") if m.parent != folder)


def read_paths(paths: list[Path], root: Path | None = None) -> list[Sweep]:
    """`sizing curve PATH...`: a sweep folder is one sweep, a folder of sweeps (data/raw/benchmarks) is each of
    its sweeps, and the loose files given form one more sweep."""
    sweeps: list[Sweep] = []
    for d in (p for p in paths if p.is_dir()):
        sweeps.extend(read_source(d, root) if is_collection(d) else [read_sweep([d], root=root)])
    files = [p for p in paths if not p.is_dir()]
    if files:
        sweeps.append(read_sweep(files, root=root))
    return sweeps


__all__ = [
    "COLUMNS",
    "LOAD_MODES",
    "TOOLS",
    "Level",
    "Sweep",
    "check_consistency",
    "is_collection",
    "read_manifest",
    "read_paths",
    "read_source",
    "read_sweep",
]
