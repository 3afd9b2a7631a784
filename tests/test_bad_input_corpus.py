"""The bad-input corpus (issue 15): every input kind, broken one way per case, through the real entry points.

Each case builds one bad input in a temporary folder (a copy of the catalog, params, sweep or scrape files
it needs), runs a real entry point in a subprocess -- the `sizing` CLI (`python -m pipeline ...`), the DVC
params stage (`python -m pipeline.params`) or the stage runner (`python -m pipeline.run`) -- and asserts the
README's promise: exit status 1, stderr ONE line starting `error:` (the CLI prefixes `sizing: `), naming the
file and the field, no traceback, and nothing written. tests/test_bad_input.py checks the traffic-log
messages in detail in-process; the few traffic-log cases here check the same promise at the command line.

The subprocesses import the code of this checkout (PYTHONPATH), so the module can be run against another
tree of the project to see which cases fail there. They are forked from a warm interpreter that has imported
the third-party libraries once (tests/forkrun.py; FORKRUN=0 runs each as a plain `python -m`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from forkrun import run_module

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "data" / "catalog"
SWEEP = ROOT / "data" / "raw" / "benchmarks" / "sample_vllm_h100x4_long"
SWEEP_8B = ROOT / "data" / "raw" / "benchmarks" / "sample_vllm_l40s_8b_small"
SCRAPES = ROOT / "data" / "raw" / "production" / "scrapes"
CURVE = ["pipeline", "curve", "sweep", "--ttft-p99-ms", "2000", "--itl-p99-ms", "50"]
MEMORY = ["--gpu", "H100-SXM", "--concurrency", "8", "--context-tokens", "4096"]
LATIN1 = b"# caf\xe9 (Latin-1, not UTF-8)\n"


@dataclass(frozen=True)
class Case:
    """One bad input: `build(tmp)` writes it under tmp and returns the command (after `python -m`)."""

    name: str
    build: Callable[[Path], list[str]]
    needles: tuple[str, ...]  # the file, the field, and what was expected, as the one line must name them
    env: Callable[[Path], dict[str, str]] | None = None


# --------------------------------------------------------------------------- builders


def project(tmp: Path) -> Path:
    """A minimal project root: params.yaml and data/catalog (what the params check and the catalogs read)."""
    dest = tmp / "project"
    shutil.copytree(CATALOG, dest / "data" / "catalog")
    shutil.copy2(ROOT / "params.yaml", dest / "params.yaml")
    return dest


def params_check(tmp: Path) -> list[str]:
    """The DVC `params` stage's command on the project copy."""
    return ["pipeline.params", str(tmp / "project" / "params.yaml")]


def with_params(change: Callable[[dict], None]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        root = project(tmp)
        data = yaml.safe_load((root / "params.yaml").read_text())
        change(data)
        (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return params_check(tmp)

    return build


def set_key(dotted: str, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        *path, last = dotted.split(".")
        node = data
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def with_catalog(name: str, edit: Callable[[bytes], bytes]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = project(tmp) / "data" / "catalog" / name
        path.write_bytes(edit(path.read_bytes()))
        return params_check(tmp)

    return build


def line_edit(line_no: int, edit: Callable[[str], str]) -> Callable[[bytes], bytes]:
    """Edit one physical line (1 = the header) of a CSV."""

    def apply(data: bytes) -> bytes:
        lines = data.decode("utf-8").split("\n")
        lines[line_no - 1] = edit(lines[line_no - 1])
        return "\n".join(lines).encode("utf-8")

    return apply


def first_fields(n: int) -> Callable[[str], str]:
    return lambda line: ",".join(line.split(",")[:n])


def set_field(index: int, value: str) -> Callable[[str], str]:
    def edit(line: str) -> str:
        fields = line.split(",")
        fields[index] = value
        return ",".join(fields)

    return edit


def latin1(data: bytes) -> bytes:
    """A non-UTF-8 byte in the second line (a comment line would be data in a CSV: it goes in a field)."""
    first, rest = data.split(b"\n", 1)
    return (
        first
        + b"\n"
        + rest.replace(b"NVIDIA", b"NVIDI\xc4", 1)
        .replace(b"AWS", b"AW\xc4", 1)
        .replace(b"Llama", b"Ll\xe4ma", 1)
        .replace(b"llama", b"ll\xe4ma", 1)
    )


def config(change: Callable[[str], str]) -> Callable[[Path], list[str]]:
    """A user's config.json (Llama-3.1-70B's, edited as text so NaN/Infinity/strings survive) for `sizing memory`."""

    def build(tmp: Path) -> list[str]:
        text = (CATALOG / "models" / "Llama-3.1-70B.json").read_text()
        path = tmp / "my-model" / "config.json"
        path.parent.mkdir()
        path.write_text(change(text))
        return ["pipeline", "memory", "--model", str(path), *MEMORY]

    return build


def field(key: str, raw: str) -> Callable[[str], str]:
    """Replace the value of a top-level key of config.json (or add it) with raw JSON text."""

    def change(text: str) -> str:
        new, n = re.subn(rf'"{key}": [^,\n}}]+', f'"{key}": {raw}', text)
        return new if n else text.replace("{", f'{{"{key}": {raw},', 1)

    return change


def sweep(edit: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A copy of the 70B sample sweep (manifest + 8 vLLM levels), edited, read by `sizing curve`."""

    def build(tmp: Path) -> list[str]:
        dest = tmp / "sweep"
        shutil.copytree(SWEEP, dest)
        edit(dest)
        return list(CURVE)

    return build


def level(dest: Path, concurrency: int) -> Path:
    return dest / f"vllm-{concurrency}concurrency-Llama-3.1-70B-6000-1000.json"


def edit_level(concurrency: int, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(dest: Path) -> None:
        path = level(dest, concurrency)
        obj = json.loads(path.read_text())
        change(obj)
        path.write_text(json.dumps(obj))

    return edit


def per_request(itls: list, **extra: object) -> Callable[[dict], None]:
    """vLLM --save-detailed arrays on a level (100 requests)."""

    def change(obj: dict) -> None:
        n = int(obj["completed"])
        obj.update(ttfts=[0.2] * n, itls=[[0.02] * 3 for _ in range(n)], output_lens=[4] * n, errors=[""] * n)
        obj["itls"][: len(itls)] = itls
        obj.update(extra)

    return change


def mix_8b(dest: Path) -> None:
    for src in sorted(SWEEP_8B.glob("vllm-*concurrency-*.json"))[:2]:
        shutil.copy2(src, dest / src.name)


def only_8b_files(dest: Path) -> None:
    for f in dest.glob("vllm-*.json"):
        f.unlink()
    for src in SWEEP_8B.glob("vllm-*.json"):
        shutil.copy2(src, dest / src.name)


def guidellm(metrics: object) -> Callable[[Path], None]:
    def edit(dest: Path) -> None:
        for f in dest.glob("vllm-*.json"):
            f.unlink()
        bench = {
            "config": {"strategy": {"type_": "concurrent", "streams": 4}},
            "metrics": metrics,
            "duration": 60,
        }
        (dest / "benchmarks.json").write_text(json.dumps({"benchmarks": [bench]}))

    return edit


def nested_sweep(dest: Path) -> None:
    inner = dest / "rerun"
    inner.mkdir()
    shutil.copy2(dest / "manifest.yaml", inner / "manifest.yaml")
    shutil.copy2(level(dest, 8), inner / level(dest, 8).name)


def scrapes(edit: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A production window of the sample's Prometheus scrapes, edited, read by `sizing validate`."""

    def build(tmp: Path) -> list[str]:
        dest = tmp / "window" / "scrapes"
        shutil.copytree(SCRAPES, dest)
        edit(dest)
        return ["pipeline", "validate", str(tmp / "window"), "--tier", "all"]

    return build


def replace_in(name: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(dest: Path) -> None:
        path = dest / name
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))

    return edit


def traffic(rows: list[str]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / "log.csv").write_text("\n".join(["arrival_s,input_tokens,output_tokens", *rows]) + "\n")
        return ["pipeline", "profile", str(tmp / "log.csv"), "--quiet"]

    return build


def flags(*argv: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["pipeline", *argv]


def sizing_root(tmp: Path) -> dict[str, str]:
    """For a CLI verb that reads the project's catalog: point the project root at the copy."""
    return {"SIZING_ROOT": str(tmp / "project")}


def gpus_for_memory(edit: Callable[[bytes], bytes]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = project(tmp) / "data" / "catalog" / "gpus.csv"
        path.write_bytes(edit(path.read_bytes()))
        return ["pipeline", "memory", "--model", "Llama-3.1-70B", *MEMORY]

    return build


def stage_with_params(change: Callable[[dict], None]) -> Callable[[Path], list[str]]:
    """`python -m pipeline.run workload` (the stage runner) on a project whose params.yaml is bad."""

    def build(tmp: Path) -> list[str]:
        with_params(change)(tmp)
        return ["pipeline.run", "workload"]

    return build


def misspell(old: str, new: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data[new] = data.pop(old)

    return change


def nan_scenario(data: dict) -> None:
    data["report"]["scenarios"]["traffic +30%"]["traffic_scale"] = float("nan")


# --------------------------------------------------------------------------- the corpus

NAN, INF = float("nan"), float("inf")
CASES = [
    # params.yaml: every number finite, every section known (the DVC params stage, python -m pipeline.params)
    Case("params slo nan", with_params(set_key("slo.ttft_p99_ms", NAN)), ("params.yaml", "slo.ttft_p99_ms", "finite")),
    Case("params safety inf", with_params(set_key("fleet.safety_factor", INF)), ("fleet.safety_factor", "finite")),
    Case("params growth -inf", with_params(set_key("fleet.expected_growth", -INF)), ("fleet.expected_growth",)),
    Case("params itl nan", with_params(set_key("slo.itl_p99_ms", NAN)), ("slo.itl_p99_ms", "finite")),
    Case("params concurrency inf", with_params(set_key("memory.concurrency", INF)), ("memory.concurrency", "finite")),
    Case(
        "params scenario scale nan",
        with_params(nan_scenario),
        ("report.scenarios.traffic +30%.traffic_scale", "finite"),
    ),
    Case("params price inf", with_params(set_key("tco.prices", {"H100-SXM": INF})), ("tco.prices.H100-SXM", "finite")),
    Case(
        "params allreduce nan",
        with_params(set_key("parallelism.allreduce_pcie", {2: NAN})),
        ("parallelism.allreduce_pcie.2", "finite"),
    ),
    Case(
        "params visible memory nan",
        with_params(set_key("engine.visible_memory_gib", {"H100-SXM": NAN})),
        ("engine.visible_memory_gib.H100-SXM", "finite"),
    ),
    Case(
        "params section fleets",
        with_params(misspell("fleet", "fleets")),
        ("params.yaml", "unknown section 'fleets'", "did you mean 'fleet'?"),
    ),
    Case(
        "params section routin",
        with_params(misspell("routing", "routin")),
        ("unknown section 'routin'", "did you mean 'routing'?"),
    ),
    Case(
        "params key typo",
        with_params(set_key("tco.planned_utilisation", 0.7)),
        ("unknown key tco.planned_utilisation", "did you mean 'planned_utilization'?"),
    ),
    Case(
        "params not utf-8",
        lambda tmp: (
            project(tmp).joinpath("params.yaml").write_bytes(LATIN1 + (ROOT / "params.yaml").read_bytes()),
            params_check(tmp),
        )[1],
        ("params.yaml", "line 1, column 6", "0xe9 is not UTF-8"),
    ),
    # the catalogs: UTF-8, no short or long rows, finite numbers (read by the params stage before any stage)
    Case(
        "gpus.csv short row",
        with_catalog("gpus.csv", line_edit(3, first_fields(5))),
        ("gpus.csv", "line 3", "column 'visible_memory_gib' is missing"),
    ),
    Case(
        "gpus.csv long row",
        with_catalog("gpus.csv", line_edit(3, lambda line: line + ",extra")),
        ("gpus.csv", "line 3", "extra value(s) 'extra'"),
    ),
    Case("gpus.csv not utf-8", with_catalog("gpus.csv", latin1), ("gpus.csv", "line 2", "0xc4 is not UTF-8")),
    Case(
        "gpus.csv memory nan",
        with_catalog("gpus.csv", line_edit(3, set_field(4, "nan"))),
        ("gpus.csv", "row 3 column 'memory_gb' = 'nan'", "expected a number >= 0"),
    ),
    Case(
        "gpus.csv bandwidth 0",
        with_catalog("gpus.csv", line_edit(3, set_field(7, "0"))),
        ("gpus.csv", "row 3 column 'memory_bw_tbs' = '0'", "expected a number > 0"),
    ),
    Case(
        "params tier model not a name",
        with_params(set_key("model.tiers", {"small": 8})),
        ("params.yaml", "model.tiers.small = 8", "expected a model name"),
    ),
    Case(
        "prices.csv short row",
        with_catalog("prices.csv", line_edit(4, first_fields(4))),
        ("prices.csv", "line 4", "column 'usd_per_gpu_hour' is missing"),
    ),
    Case("prices.csv not utf-8", with_catalog("prices.csv", latin1), ("prices.csv", "line 2", "0xc4 is not UTF-8")),
    Case(
        "prices.csv price nan",
        with_catalog("prices.csv", line_edit(4, set_field(4, "nan"))),
        ("prices.csv", "column 'usd_per_gpu_hour'", "line 4: 'A10G' 'nan'"),
    ),
    Case("models.csv not utf-8", with_catalog("models.csv", latin1), ("models.csv", "line 2", "is not UTF-8")),
    Case(
        "models.csv short row",
        with_catalog("models.csv", line_edit(2, first_fields(3))),
        ("models.csv", "line 2", "column 'stated_total_params_b' is missing"),
    ),
    Case(
        "measurements not utf-8",
        with_catalog("vllm_memory_measurements.csv", latin1),
        ("vllm_memory_measurements.csv", "line 2", "is not UTF-8"),
    ),
    Case(
        "measurements weights inf",
        with_catalog("vllm_memory_measurements.csv", line_edit(2, set_field(10, "inf"))),
        ("vllm_memory_measurements.csv", "column 'weights_gib' = 'inf'"),
    ),
    Case(
        "catalog config not utf-8",
        with_catalog("models/Llama-3.1-70B.json", lambda data: data.replace(b'"llama"', b'"ll\xe4ma"', 1)),
        ("params.yaml: model.name", "Llama-3.1-70B.json", "is not UTF-8"),
    ),
    Case(
        "sizing memory gpus.csv short row",
        gpus_for_memory(line_edit(5, first_fields(2))),
        ("gpus.csv", "line 5", "column 'vendor' is missing"),
        env=sizing_root,
    ),
    # a user's config.json (sizing memory --model PATH)
    Case("config 0 heads", config(field("num_attention_heads", "0")), ("config.json", "'num_attention_heads' = 0")),
    Case("config -80 layers", config(field("num_hidden_layers", "-80")), ("config.json", "'num_hidden_layers' = -80")),
    Case(
        "config sliding_window string",
        config(field("sliding_window", '"4096"')),
        ("config.json", "'sliding_window' = '4096'", "whole number"),
    ),
    Case("config hidden Infinity", config(field("hidden_size", "Infinity")), ("config.json", "'hidden_size' = inf")),
    Case("config heads NaN", config(field("num_attention_heads", "NaN")), ("config.json", "'num_attention_heads'")),
    Case(
        "config kv heads not a divisor",
        config(field("num_key_value_heads", "7")),
        ("config.json", "'num_key_value_heads' = 7", "divisor"),
    ),
    Case(
        "config 1e12 layers",
        config(field("num_hidden_layers", "1000000000000")),
        ("config.json", "'num_hidden_layers' = 1000000000000", "from 1 to 10,000"),
    ),
    Case("config vocab string", config(field("vocab_size", '"128256"')), ("config.json", "'vocab_size' = '128256'")),
    Case(
        "config not utf-8",
        lambda tmp: (
            config(lambda t: t)(tmp),
            (tmp / "my-model" / "config.json").write_bytes(
                (tmp / "my-model" / "config.json").read_bytes().replace(b'"llama"', b'"ll\xe4ma"')
            ),
        )[0],
        ("config.json", "is not UTF-8"),
    ),
    # numeric flags: finite, in range (one line, exit 1, before anything runs)
    Case(
        "flag concurrency nan",
        flags(
            "memory",
            "--model",
            "Llama-3.1-70B",
            "--gpu",
            "H100-SXM",
            "--concurrency",
            "nan",
            "--context-tokens",
            "4096",
        ),
        ("--concurrency = 'nan'", "finite"),
    ),
    Case(
        "flag context 1e308",
        flags(
            "memory", "--model", "Llama-3.1-70B", "--gpu", "H100-SXM", "--concurrency", "8", "--context-tokens", "1e308"
        ),
        ("--context-tokens = '1e308'", "up to 1e+12"),
    ),
    Case(
        "flag usable 1e-308",
        flags("fleet", "--peak-rps", "10", "--usable-rps", "1e-308", "--tp", "4"),
        ("--usable-rps = '1e-308'", "from 1e-06"),
    ),
    Case(
        "flag peak 1e308",
        flags("fleet", "--peak-rps", "1e308", "--usable-rps", "1", "--tp", "4"),
        ("--peak-rps = '1e308'",),
    ),
    Case(
        "flag usable inf",
        flags("fleet", "--peak-rps", "10", "--usable-rps", "inf", "--tp", "4"),
        ("--usable-rps = 'inf'", "finite"),
    ),
    Case(
        "flag safety nan",
        flags("fleet", "--peak-rps", "10", "--usable-rps", "2", "--tp", "4", "--safety", "nan"),
        ("--safety = 'nan'",),
    ),
    Case("flag tp 0", flags("fleet", "--peak-rps", "10", "--usable-rps", "2", "--tp", "0"), ("--tp = '0'", ">= 1")),
    Case("flag ttft nan", flags("curve", str(SWEEP), "--ttft-p99-ms", "nan"), ("--ttft-p99-ms = 'nan'",)),
    Case(
        "flag util 1.5",
        flags(
            "memory",
            "--model",
            "Llama-3.1-70B",
            "--gpu",
            "H100-SXM",
            "--concurrency",
            "8",
            "--context-tokens",
            "4096",
            "--gpu-memory-utilization",
            "1.5",
        ),
        ("--gpu-memory-utilization = '1.5'",),
    ),
    Case("flag gpu util inf", flags("validate", "--benchmark-gpu-util", "inf"), ("--benchmark-gpu-util = 'inf'",)),
    # benchmark results (sizing curve)
    Case(
        "vllm itls strings",
        sweep(edit_level(16, per_request([["0.02", "abc"]]))),
        ("vllm-16concurrency", "field 'itls[0][0]' = '0.02'", "expected a finite number"),
    ),
    Case(
        "vllm itls not lists",
        sweep(edit_level(16, per_request([0.02]))),
        ("vllm-16concurrency", "field 'itls[0]' = 0.02", "expected a list"),
    ),
    Case(
        "vllm output_lens mappings",
        sweep(edit_level(8, per_request([], output_lens=[{"n": 4}] * 100))),
        (
            "vllm-8concurrency",
            "field 'output_lens[0]'",
        ),
    ),
    Case(
        "vllm errors not a list",
        sweep(edit_level(8, per_request([], errors=-1))),
        ("vllm-8concurrency", "field 'errors' = -1"),
    ),
    Case("guidellm metrics null", sweep(guidellm(None)), ("benchmarks.json", "'benchmarks[0].metrics' = None")),
    Case(
        "guidellm ttft not a mapping",
        sweep(guidellm({"time_to_first_token_ms": "fast"})),
        ("benchmarks.json", "benchmarks[0].metrics", "field 'time_to_first_token_ms' = 'fast'", "mapping"),
    ),
    Case(
        "vllm json not utf-8",
        sweep(lambda d: level(d, 4).write_bytes(level(d, 4).read_bytes().replace(b"openai", b"open\xe4i"))),
        ("vllm-4concurrency", "is not UTF-8"),
    ),
    Case(
        "manifest not utf-8",
        sweep(lambda d: (d / "manifest.yaml").write_bytes(LATIN1 + (d / "manifest.yaml").read_bytes())),
        ("manifest.yaml", "line 1, column 6", "is not UTF-8"),
    ),
    Case(
        "8B levels in a 70B sweep",
        sweep(mix_8b),
        (
            "sweep",
            "different models",
            "model_id 'meta-llama/Llama-3.1-8B-Instruct'",
            "vllm-128concurrency-Llama-3.1-8B",
        ),
    ),
    Case(
        "70B manifest over 8B files",
        sweep(only_8b_files),
        ("manifest.yaml", "model = 'Llama-3.1-70B'", "model_id 'meta-llama/Llama-3.1-8B-Instruct'"),
    ),
    Case(
        "levels of another workload",
        sweep(edit_level(64, lambda o: o.update(total_input_tokens=o["total_input_tokens"] * 2.2))),
        ("sweep", "column 'input_tokens_mean'", "13,200", "vllm-64concurrency"),
    ),
    Case(
        "lengths contradict the manifest",
        sweep(replace_in("manifest.yaml", "input_tokens: 6000", "input_tokens: 2000")),
        ("manifest.yaml", "input_tokens = 2000", "6,000"),
    ),
    Case(
        "manifest input_tokens nan",
        sweep(replace_in("manifest.yaml", "input_tokens: 6000", "input_tokens: .nan")),
        ("manifest.yaml", "input_tokens = nan", "finite token count"),
    ),
    Case(
        "manifest load_mode a list",
        sweep(replace_in("manifest.yaml", "load_mode: closed", "load_mode: [closed]")),
        ("manifest.yaml", "load_mode = ['closed']", "expected a name"),
    ),
    Case("a sweep inside a sweep", sweep(nested_sweep), ("sweep", "holds several sweeps", "rerun")),
    # Prometheus scrapes (sizing validate): NaN is an error, never "ok"
    Case(
        "prom kv usage NaN",
        scrapes(replace_in("vllm-1775469600.prom", "} 0.5797", "} NaN")),
        ("vllm-1775469600.prom", "line 15", "vllm:kv_cache_usage_perc", "= nan", "finite"),
    ),
    Case(
        "prom dcgm util NaN",
        scrapes(replace_in("dcgm-1775473200.prom", 'Hostname="node-0"} 40', 'Hostname="node-0"} NaN')),
        ("dcgm-1775473200.prom", "line 5", "DCGM_FI_DEV_GPU_UTIL{", "= nan"),
    ),
    Case(
        "prom counter +Inf",
        scrapes(replace_in("vllm-1775473200.prom", 'Instruct"} 5430.0', 'Instruct"} +Inf')),
        ("vllm-1775473200.prom", "line 19", "vllm:request_success_total{", "= inf"),
    ),
    Case(  # prometheus_client's parser loses line numbers: the message still names the line
        "prom unquoted label",
        scrapes(replace_in("vllm-1775469600.prom", "} 0.5797", "} 0.5797\nvllm:kv_cache_usage_perc{engine=0} 0.5")),
        ("vllm-1775469600.prom", "line 16", "cannot read the labels {engine=0}", 'expected name="value"'),
    ),
    Case(
        "prom not utf-8",
        scrapes(lambda d: (d / "vllm-1775469600.prom").write_bytes(LATIN1 + (d / "vllm-1775469600.prom").read_bytes())),
        ("vllm-1775469600.prom", "line 1", "is not UTF-8"),
    ),
    # traffic logs at the command line (messages in detail: tests/test_bad_input.py)
    Case("log negative tokens", traffic(["0,5,5", "1,-3,5"]), ("log.csv", "column 'input_tokens'", "below 1")),
    Case("log header only", traffic([]), ("log.csv", "header but no rows")),
    Case(
        "log missing", lambda tmp: ["pipeline", "profile", str(tmp / "nope.csv"), "--quiet"], ("nope.csv", "not found")
    ),
    # the stage runner stops before its kernel computes anything
    Case(
        "stage runner section fleets",
        stage_with_params(misspell("fleet", "fleets")),
        ("params.yaml", "unknown section 'fleets'", "did you mean 'fleet'?"),
        env=sizing_root,
    ),
    Case(
        "stage runner slo nan",
        stage_with_params(set_key("slo.ttft_p99_ms", NAN)),
        ("params.yaml", "slo.ttft_p99_ms", "finite"),
        env=sizing_root,
    ),
]


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
    env.pop("SIZING_ROOT", None)
    return {**env, **extra}


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needles: tuple[str, ...]) -> str:
    """Exit 1; stderr is one line `error: ...` (or `sizing: error: ...`) holding every needle; no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(err.splitlines()) == 1, err
    assert re.match(r"^(sizing: )?error: ", err), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _run_case(case: Case, tmp: Path) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Build the case in `tmp`, run its command; (the process, whether the folder is unchanged)."""
    tmp.mkdir(parents=True)
    argv = case.build(tmp)
    before = _snapshot(tmp)
    proc = run_module(argv, tmp, _env(case.env(tmp) if case.env else {}), timeout=120)
    return proc, _snapshot(tmp) == before


@pytest.fixture(scope="module")
def corpus_runs(request, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], bool]]:
    """Every selected case's real subprocess, run a few at a time (each is ~0.6 s of imports and one check)."""
    from concurrent.futures import ThreadPoolExecutor

    wanted = {
        item.callspec.params["case"].name
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_bad_input_is_one_clear_line_and_writes_nothing"
    }
    root = tmp_path_factory.mktemp("corpus")
    cases = [c for c in CASES if c.name in wanted]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        runs = pool.map(lambda ic: _run_case(ic[1], root / f"case{ic[0]:03d}"), enumerate(cases))
        return {c.name: run for c, run in zip(cases, runs, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(case: Case, corpus_runs) -> None:
    proc, unchanged = corpus_runs[case.name]
    assert_one_line_error(proc, case.needles)
    assert unchanged, "a failed run wrote or changed files"


def test_the_corpus_is_broad() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def test_a_folder_of_sweeps_is_read_as_its_sweeps() -> None:
    """`sizing curve data/raw/benchmarks/` (4 sweeps, each with its manifest) once failed with "32 of 32 levels
    repeat a load"; read as 4 sweeps it picks the 6000/1000 sweep for those lengths, as the curve stage does:
    usable RPS 1.563 (C_max 61.63 concurrent / E2E), the figure metrics/operating_point.json records."""
    cmd = ["pipeline", "curve", str(ROOT / "data" / "raw" / "benchmarks")]
    cmd += ["--ttft-p99-ms", "2000", "--itl-p99-ms", "50", "--input-tokens", "6000", "--output-tokens", "1000"]
    proc = run_module(cmd, ROOT, _env({}), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "curve: sample_vllm_h100x4_long (closed loop) (several sweeps)" in proc.stdout
    assert "usable RPS 1.563 req/s per replica" in proc.stdout
    proc = run_module([*cmd, "--json"], ROOT, _env({}), timeout=120)
    m = json.loads(proc.stdout)
    assert {name.split(" (")[0] for name in m["curves"]} == {
        "sample_vllm_h100x4_chat",
        "sample_vllm_h100x4_large",
        "sample_vllm_h100x4_long",
        "sample_vllm_l40s_8b_small",
    }


def test_a_nan_sample_in_a_family_sizing_does_not_read_is_dropped_not_an_error() -> None:
    """A Go exporter's idle summary (go_gc_duration_seconds NaN) is legal Prometheus and read by nothing here:
    it is dropped; the same NaN in a vllm:/sglang:/DCGM_ family is the error above, never a mean of NaN, "ok"."""
    from pipeline import prometheus

    text = (SCRAPES / "dcgm-1775469600.prom").read_text() + 'go_gc_duration_seconds{quantile="0.5"} NaN\n'
    scrape = prometheus.parse(text, "dcgm-1775469600.prom")
    assert not any(name.startswith("go_") for name, _ in scrape.samples)
    util = [v for (name, _), v in scrape.samples.items() if name == "DCGM_FI_DEV_GPU_UTIL"]
    assert util and all(v == v for v in util)  # the DCGM samples are kept, none NaN
