"""The `sizing` command line: each verb is a thin call into the functions the notebooks use.

    sizing init --log PATH [--column NAME=COLUMN] [--timestamp-unit s|ms|us|ns|datetime]
    sizing profile PATH [--format auto|generic|azure|burstgpt|mooncake] [--json]
    sizing memory --model NAME_OR_CONFIG --gpu NAME --weights fp8 --kv fp8 [--tp N]
                  --concurrency N --context-tokens N [--json]
    sizing curve PATH... --ttft-p99-ms N [--itl-p99-ms N] [--input-tokens N --output-tokens N] [--json]
    sizing fleet --peak-rps N --usable-rps N --tp N [--pp N] [--burst-rps N] [--safety F] [--headroom F]
                 [--spares N] [--params PATH] [--json]   (defaults: params.yaml's fleet section)
    sizing simulate LOG --model M --gpu G --tp N --weights D --kv D --replicas N
                 [--router least-outstanding|round-robin|prefix-affinity] [--rate-scale X]
                 [--window busiest-hour|all|START:END] [--calibrate PATH...] [--json]
    sizing predict --model M --gpu G --tp N [--pp N] --weights D --kv D --input-tokens N --output-tokens N
                 --concurrency N[,N...] [--request-rate R[,R...]] [--calibrate PATH...] [--manifest FILE]
                 [--lengths-from LOG] [--json]
    sizing calibrate PATH... [--manifest FILE] [--json]
    sizing bench-plan [--candidate ID] [--out DIR] [--root DIR] [--top N] [--burst-multiplier X]
    sizing params [--defaults] [--params PATH] [--json]   (every key: value, default, description)

Bad input prints one message (file, column, examples, what was expected) and exits 1.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, one_line
from pipeline.params import FORMATS, SIZING_RATES, TIMESTAMP_UNITS

BIG = 1e12  # no flag is a number beyond this (RPS, tokens, ms): 1e308 is a typo, and x 1.2 overflows to inf
TINY = 1e-6  # ... nor a positive one below this: peak / 1e-308 usable RPS is infinite instances


def _number(
    flag: str, low: float = 0.0, high: float = BIG, *, open_low: bool = True, integer: bool = False
) -> Callable[[str], float]:
    """An argparse `type` for a numeric flag: finite, within [low, high] (low excluded when open_low), else one
    line naming the flag. It raises InputError, which argparse does not catch, so `main` prints
    `sizing: error: --concurrency = 'nan'; ...` and exits 1, as for any other bad input (not argparse's exit 2)."""
    floor = max(low, TINY) if open_low and low == 0 else low
    word = "an integer" if integer else "a number"
    bound = f"> {low:g}" if open_low else f">= {low:g}"
    span = f"from {floor:g} up to {high:g}" if floor != low else f"up to {high:g}"
    expected = f"expected a finite {word.split()[1]} {bound}, {span}"

    def parse(text: str) -> float:
        try:
            value: float = int(text) if integer else float(text)
        except ValueError:
            raise InputError(f"{flag} = {text!r}; {expected}") from None
        if not math.isfinite(value) or value < floor or value > high or (open_low and value == low):
            raise InputError(f"{flag} = {text!r}; {expected}")
        return value

    return parse


def _column_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=COLUMN (e.g. arrival_s=ts), got {text!r}")
    name, col = text.split("=", 1)
    return name.strip(), col.strip()


def _params_sections(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """workload and slo sections from params.yaml (the project's, if present), else defaults."""
    from pipeline import params, paths

    candidate = path or paths.PARAMS
    data = params.load(candidate) if (path or candidate.exists()) else {}
    return params.section("workload", data), params.section("slo", data)


def cmd_profile(args: argparse.Namespace) -> int:
    """Profile any traffic log without touching the pipeline's outputs."""
    from pipeline import io, params, traffic, workload
    from pipeline.stages import workload as workload_stage

    wl_params, slo = _params_sections(args.params)
    overrides: dict[str, Any] = {"source": args.path}
    if args.format:
        overrides["format"] = args.format
    if args.pattern:
        overrides["pattern"] = args.pattern
    if args.column:
        overrides["columns"] = dict(args.column)
    elif args.format and args.format != "generic":
        overrides["columns"] = {}
    if args.timestamp_unit:
        overrides["timestamp_unit"] = args.timestamp_unit
    if args.sizing_rate:
        overrides["sizing_rate"] = args.sizing_rate
    if args.tier_column:
        overrides["tiers"] = {"column": args.tier_column, "rules": []}
    if args.source_from_params:
        overrides.pop("source")
    wl_params = params.validate_section("workload", {**wl_params, **overrides})
    settings = workload.ProfileSettings.from_params(wl_params, slo)
    source = traffic.open_source(wl_params["source"], wl_params["pattern"], Path.cwd())
    with tempfile.TemporaryDirectory(prefix="sizing-profile-") as tmp:
        req = Path(tmp) / "requests.parquet"
        ingested = traffic.ingest_with(source, req, wl_params, traffic.Progress(not args.quiet))
        profile = workload.build_profile(ingested, req, settings, workload_stage.log_inputs(ingested))
    sys.stdout.write(io.dumps(profile) if args.json else workload.describe(profile) + "\n")
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    """Steps 4-6 for one candidate: the same entry the memory stage writes to metrics/memory.json."""
    from pipeline import candidates, catalog, io, params, paths, quantization

    candidate = args.params or paths.PARAMS
    data = params.load(candidate) if (args.params or candidate.exists()) else {}
    sections = {name: params.validate_section(name, data.get(name)) for name in candidates.SECTIONS}
    if args.overhead_gb is not None:
        sections["memory"]["overhead_gb"] = args.overhead_gb
    if args.gpu_memory_utilization is not None:
        sections["engine"] = params.validate_section(
            "engine", {**sections["engine"], "gpu_memory_utilization": args.gpu_memory_utilization}
        )
    for flag, value in (("--concurrency", args.concurrency), ("--context-tokens", args.context_tokens)):
        if value <= 0:
            raise InputError(f"{flag} = {value:g}; expected a number > 0")
    if args.tp is not None and args.tp < 1:
        raise InputError(f"--tp = {args.tp}; expected a TP degree >= 1")
    settings = candidates.Settings.from_params(sections)
    model = catalog.load_model(args.model, paths.ROOT if not Path(args.model).exists() else Path.cwd())
    if getattr(args, "max_model_len", None) is not None:
        from dataclasses import replace

        from pipeline import memory

        memory.check_max_model_len(model, int(args.max_model_len))
        settings.engine = replace(settings.engine, max_model_len=int(args.max_model_len))
    gpu = catalog.find_gpu(args.gpu, catalog.load_gpus())
    quantization.precision(args.weights, "weights")
    quantization.precision(args.kv, "kv")
    target = candidates.Target(
        tier="cli",
        concurrency=args.concurrency,
        context_tokens=args.context_tokens,
        input_tokens=args.input_tokens or args.context_tokens,
        output_tokens=args.output_tokens or 0.0,
        archetype="chat",
        source="command line",
    )
    cand = candidates.evaluate(model, gpu, args.weights, args.kv, target, settings, tp=args.tp)
    entry = {
        "id": f"{model.name}/{gpu.name}/w-{args.weights}/kv-{args.kv}",
        **{k: v for k, v in cand.entry.items() if k != "tier"},
    }
    if args.json:
        sys.stdout.write(io.dumps(entry))
        return 0
    lines = [model.describe(), f"{gpu.name}: {gpu.memory_gb:g} GB, {gpu.memory_bw_tbs:g} TB/s"]
    for key in ("weights_gb", "kv_gb", "activations_gb", "overhead_gb", "lora_gb", "total_gb"):
        lines.append(f"  {key:<16} {entry[key]:>10.1f}   {entry['formula'].get(key, '')}")
    lines.append(f"  min_gpus {entry['min_gpus']}, with headroom {entry['gpus_with_headroom']}")
    eng = entry.get("engine") or {}
    if eng:
        verdict = "starts" if eng.get("refusal") is None else f"refuses to start ({eng['refusal']})"
        lines.append(
            f"  vLLM: {eng['kv_cache_gib']:.2f} GiB KV per GPU = {eng['kv_cache_tokens']:,} tokens; one request of "
            f"max_model_len {eng['max_model_len']:,} needs {eng['kv_needed_gib']:.2f} GiB: {verdict}"
        )
    if entry["fits"]:
        lines.append(
            f"  TP {entry['tp']} PP {entry['pp']} EP {entry['ep']}: {entry['max_concurrency_per_replica']} sequences of "
            f"{args.context_tokens:,.0f} tokens per replica; predicted TTFT {entry['predicted_ttft_ms']:,.0f} ms, "
            f"ITL {entry['predicted_itl_ms']:,.1f} ms; meets SLO: {entry['meets_slo']}"
        )
    else:
        lines.append("  does not fit")
    lines += [f"  - {r}" for r in entry["reasons"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    """The operating point of any set of benchmark result files (steps 7-10), without touching the pipeline."""
    from pipeline import final_curve, io, params, paths

    candidate = args.params or paths.PARAMS
    data = params.load(candidate) if (args.params or candidate.exists()) else {}
    workload = final_curve.Workload()
    if args.input_tokens or args.output_tokens:
        if not (args.input_tokens and args.output_tokens):
            raise InputError("--input-tokens and --output-tokens go together (the workload's p95 lengths)")
        workload = final_curve.Workload(input_p95=args.input_tokens, output_p95=args.output_tokens)
    from pipeline.stages import curve as curve_stage

    res = curve_stage.from_paths(
        [Path(p) for p in args.paths], args.ttft_p99_ms, args.itl_p99_ms, data, paths.ROOT, workload
    )
    m = res.metrics()
    if args.json:
        sys.stdout.write(io.dumps(m))
        return 0
    op = res.chosen
    unit = "concurrent requests" if op.load_kind == "concurrency" else "req/s offered"
    lines = [
        f"curve: {op.curve} ({res.sweeps[0].tool if len(res.sweeps) == 1 else 'several sweeps'})",
        f"  why: {res.selection}",
        f"  C_max {op.c_max:.2f} {unit} ({op.binding.upper()} binds; percentile {m['percentile_used']})",
        f"  usable RPS {op.usable_rps:.3f} req/s per replica ({op.replicas} replica(s) in the benchmark)",
        f"  knee: {'none' if op.knee is None else f'{op.knee:g}'} ({op.knee_note})",
        f"  Little's law: ceiling {op.ceiling_rps:.3f} req/s, gap {op.gap:.2f}x"
        + ("  <-- FLAGGED" if op.gap_flag else ""),
    ]
    if op.goodput_rps_at_c_max is not None:
        lines.append(f"  goodput at C_max {op.goodput_rps_at_c_max:.3f} req/s")
    for _name, err in sorted(res.errors.items()):
        lines.append(f"  not usable: {err.splitlines()[0]}")
    lines += [f"  warning: {w}" for w in m["warnings"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    """Step 11's arithmetic: instances, safety factor, headroom, spares and GPUs (method.md)."""
    from pipeline import fleet, io, params, paths

    candidate = args.params or paths.PARAMS
    data = params.load(candidate) if (args.params or candidate.exists()) else {}
    fp = params.validate_section("fleet", data.get("fleet"))
    for flag, value in (
        ("--peak-rps", args.peak_rps),
        ("--usable-rps", args.usable_rps),
        ("--burst-rps", args.burst_rps),
    ):
        if value is not None and not math.isfinite(value):
            raise InputError(f"{flag} = {value!r}; expected a finite number (not NaN or infinity)")
    if args.burst_rps is not None and args.burst_rps < 0:
        raise InputError(f"--burst-rps = {args.burst_rps:g}; expected a request rate >= 0")
    safety = fp["safety_factor"] if args.safety is None else args.safety
    burst = max(0.0, args.burst_rps / args.peak_rps - 1) if args.burst_rps is not None and args.peak_rps > 0 else 0.0
    room = fleet.headroom(fp["expected_growth"], burst) if args.headroom is None else args.headroom
    spares = fleet.spare_instances(fp["critical"], fp["failure_domains"]) if args.spares is None else args.spares
    try:
        f = fleet.size(args.peak_rps, args.usable_rps, args.tp, args.pp, safety, room, spares)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if args.headroom is None and args.burst_rps is None and not args.json:
        print(
            f"note: headroom = fleet.expected_growth {fp['expected_growth']:g} only; give --burst-rps (the "
            f"fleet.burst_rate, {fp['burst_rate']}) for the burst absorption the pipeline also counts",
            file=sys.stderr,
        )
    sys.stdout.write(io.dumps(f.as_dict()) if args.json else f.formula + "\n")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Step 13 on a production window against this project's curves and plan (dvc repro first); writes nothing."""
    import tempfile

    from pipeline import io, params, paths, validation
    from pipeline.layout import Layout
    from pipeline.stages import validation as validation_stage

    data = params.load(args.params or paths.PARAMS)
    sections = {name: params.section(name, data) for name in validation.SECTIONS}
    overrides = {"source": str(Path(args.source).resolve()) if args.source else None, "tier": args.tier}
    overrides["replicas"] = args.replicas
    overrides["benchmark_gpu_util_pct"] = args.benchmark_gpu_util
    v = {**sections["validation"], **{k: val for k, val in overrides.items() if val is not None}}
    sections["validation"] = params.validate_section("validation", v)
    with tempfile.TemporaryDirectory(prefix="sizing-validate-") as tmp:
        result = validation_stage.evaluate(sections, Layout(paths.ROOT), Path(tmp) / "production.parquet")
    sys.stdout.write(io.dumps(result) if args.json else validation.table_text(result))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Point this project's params.yaml at your own traffic log (backup kept; sample-specific values cleared)."""
    from pipeline import init

    sys.stdout.write(
        init.run(args.log, columns=dict(args.column) if args.column else None, timestamp_unit=args.timestamp_unit)
        + "\n"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Replay a log's window through N replicas of one deployment with the engine model (method.md 7b)."""
    from pipeline import io
    from pipeline.sim import replay

    res = replay.simulate_log(
        args.log,
        args.model,
        args.gpu,
        int(args.tp),
        args.weights,
        args.kv,
        int(args.replicas),
        router=args.router,
        rate_scale=args.rate_scale,
        window=args.window,
        calibrate_paths=args.calibrate,
        params_path=args.params,
    )
    sys.stdout.write(io.dumps(res) if args.json else replay.describe(res))
    return 0


def _int_list(flag: str) -> Callable[[str], list[int]]:
    """An argparse `type` for N[,N...]: integers >= 1, else one line naming the flag (`--concurrency 0`)."""

    def parse(text: str) -> list[int]:
        out = []
        for part in text.split(","):
            try:
                value = int(part.strip())
            except ValueError:
                raise InputError(f"{flag} = {text!r}; expected integers >= 1, comma-separated (e.g. 1,8,32)") from None
            if value < 1 or value > BIG:
                raise InputError(f"{flag} = {text!r}; expected integers >= 1, comma-separated (e.g. 1,8,32)")
            out.append(value)
        return out

    return parse


def _rate_list(flag: str) -> Callable[[str], list[float]]:
    """An argparse `type` for R[,R...]: finite rates > 0."""
    one = _number(flag)

    def parse(text: str) -> list[float]:
        return [one(part.strip()) for part in text.split(",")]

    return parse


def cmd_predict(args: argparse.Namespace) -> int:
    """The curve of one deployment at given loads through the engine model (basis calibrated/transferred/roofline).
    The roofline prior is params.yaml's `roofline` section (--params, else the project's, else the defaults)."""
    from pipeline import io, params, paths
    from pipeline.sim import calibrate

    if args.engine is not None and args.engine.lower() not in calibrate.ENGINE_DEFAULTS:
        raise InputError(
            f"--engine {args.engine!r}: unknown engine; expected one of {', '.join(calibrate.ENGINE_DEFAULTS)}"
        )
    pred = calibrate.predict(
        args.model,
        args.gpu,
        int(args.tp),
        args.weights,
        args.kv,
        args.input_tokens,
        args.output_tokens,
        concurrency=args.concurrency,
        request_rate=args.request_rate,
        pp=int(args.pp),
        calibrate_paths=args.calibrate,
        manifests=args.manifest,
        lengths_from=args.lengths_from,
        engine=args.engine,
        params_path=args.params,
        roofline=params.section("roofline", params.load(args.params) if (args.params or paths.PARAMS.exists()) else {}),
    )
    sys.stdout.write(io.dumps(pred) if args.json else calibrate.describe_prediction(pred))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """The engine-model coefficients per deployment and pooled, with the residual table (`--json`: the document
    the calibrate stage writes to metrics/calibration.json, targets included)."""
    from pipeline import io
    from pipeline.sim import calibrate
    from pipeline.stages import calibrate as calibrate_stage

    cal = calibrate.calibrate(
        [Path(p) for p in args.paths],
        args.manifest,
        max_nfev=int(args.refine_passes),
        lolo_nfev=int(args.lolo_passes),
        first_round_replay=bool(args.first_round_replay),
    )
    if args.json:
        sys.stdout.write(io.dumps(calibrate_stage.build(cal, " ".join(args.paths), Path.cwd())))
    else:
        sys.stdout.write(cal.describe())
    return 0


def cmd_bench_plan(args: argparse.Namespace) -> int:
    """Step 7's input side: trace, commands and manifest for the chosen and the top benchmark_next candidates."""
    from pipeline import bench_plan_io, paths

    root = Path(args.root) if args.root else paths.ROOT
    out = Path(args.out) if args.out else root / "data" / "benchmark_plan"
    plans = bench_plan_io.build_plans(root, args.candidate, int(args.top), float(args.burst_multiplier))
    for folder, plan in zip(bench_plan_io.write_plans(plans, out), plans, strict=True):
        f = plan.facts
        print(
            f"{plan.candidate.id} ({plan.candidate.role}): {paths.display_path(folder, root)}/ "
            f"trace {f['trace_requests']} requests, sweep {','.join(str(x) for x in f['levels'])}, "
            f"burst {f['burst_multiplier']:g} x {f['peak_rps']:g} req/s"
        )
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """The keys params.yaml sets (--defaults: every key) with the effective value, the default and the description."""
    import json

    from pipeline import params, params_doc, paths

    path = args.params or (paths.PARAMS if paths.PARAMS.exists() else None)
    table = params_doc.rows(params.load(path) if path else {})
    if args.json:
        print(json.dumps(params_doc.as_json(table, path, args.defaults), indent=2, default=str))
    else:
        print(params_doc.text(table, path, args.defaults))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every verb."""
    ap = argparse.ArgumentParser(prog="sizing", description="Size an LLM inference fleet from real traffic.")
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser(
        "profile",
        help="step 1: the workload profile of a traffic log (same object as metrics/workload.json)",
    )
    p.add_argument("path", nargs="?", default=".", help="a log file, a folder of files, or a quoted glob")
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="log layout (default: params.yaml's workload.format, auto)",
    )
    p.add_argument("--pattern", help="glob inside a folder, e.g. '**/*.parquet'")
    p.add_argument(
        "--column",
        action="append",
        type=_column_pair,
        metavar="NAME=COLUMN",
        help="generic layout mapping, repeatable",
    )
    p.add_argument("--timestamp-unit", choices=TIMESTAMP_UNITS)
    p.add_argument("--sizing-rate", choices=SIZING_RATES)
    p.add_argument("--tier-column", help="column that names routing tiers (auto, none, or a column)")
    p.add_argument(
        "--params",
        type=Path,
        help="params.yaml to take thresholds and SLOs from (default: the project's)",
    )
    p.add_argument(
        "--source-from-params",
        action="store_true",
        help="profile params.yaml's workload.source instead of PATH",
    )
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_profile)

    m = sub.add_parser("memory", help="steps 4-6: memory floor, TP, KV capacity and roofline for one candidate")
    m.add_argument("--model", required=True, help="a data/catalog/models name or a path to a config.json")
    m.add_argument("--gpu", required=True, help="a data/catalog/gpus.csv name or alias")
    m.add_argument("--weights", default="bf16", help="weight precision: fp32 bf16 fp16 fp8 int8 int4 fp4 mxfp4")
    m.add_argument("--kv", default="bf16", help="KV-cache precision: fp32 bf16 fp16 fp8")
    m.add_argument(
        "--tp",
        type=_number("--tp", 1, 64, open_low=False, integer=True),
        help="force a TP degree (default: the lowest that fits)",
    )
    m.add_argument(
        "--concurrency", type=_number("--concurrency"), required=True, help="concurrent sequences to hold (p95)"
    )
    m.add_argument(
        "--context-tokens",
        type=_number("--context-tokens"),
        required=True,
        help="context per sequence (p95 input + output)",
    )
    m.add_argument(
        "--input-tokens",
        type=_number("--input-tokens"),
        help="prompt length for the TTFT prediction (default: the context)",
    )
    m.add_argument("--output-tokens", type=_number("--output-tokens", open_low=False), help="mean output length")
    m.add_argument(
        "--overhead-gb",
        type=_number("--overhead-gb", open_low=False),
        help="fixed framework overhead instead of memory.overhead_frac",
    )
    m.add_argument(
        "--gpu-memory-utilization", type=_number("--gpu-memory-utilization", 0, 1), help="vLLM's gpu_memory_utilization"
    )
    m.add_argument(
        "--max-model-len",
        type=_number("--max-model-len", 1, 10**8, open_low=False, integer=True),
        help="vLLM's max_model_len: the engine refuses to start unless one request this long fits in KV "
        "(default: the context tokens)",
    )
    m.add_argument("--params", type=Path, help="params.yaml to take the other settings from")
    m.add_argument("--json", action="store_true", help="print the candidate as JSON")
    m.set_defaults(func=cmd_memory)

    c = sub.add_parser("curve", help="steps 7-10: the SLO-constrained operating point of benchmark result files")
    c.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="result files or sweep folders (vLLM, SGLang, AIPerf, GenAI-Perf, GuideLLM, LLMPerf, inference-perf)",
    )
    c.add_argument("--ttft-p99-ms", type=_number("--ttft-p99-ms"), required=True, help="TTFT p99 SLO in ms")
    c.add_argument("--itl-p99-ms", type=_number("--itl-p99-ms"), help="ITL p99 SLO in ms (default: none)")
    c.add_argument(
        "--input-tokens", type=_number("--input-tokens"), help="workload p95 prompt length, to pick the matching curve"
    )
    c.add_argument(
        "--output-tokens",
        type=_number("--output-tokens"),
        help="workload p95 output length, to pick the matching curve",
    )
    c.add_argument("--params", type=Path, help="params.yaml to take curve thresholds from (default: the project's)")
    c.add_argument(
        "--json",
        action="store_true",
        help="print the operating point as JSON (the shape of metrics/operating_point.json)",
    )
    c.set_defaults(func=cmd_curve)

    f = sub.add_parser("fleet", help="step 11: instances and GPUs from the peak rate and the usable RPS per instance")
    f.add_argument(
        "--peak-rps",
        type=_number("--peak-rps", open_low=False),
        required=True,
        help="peak (sizing) request rate, req/s",
    )
    f.add_argument(
        "--usable-rps", type=_number("--usable-rps"), required=True, help="usable RPS per instance at C_max (step 10)"
    )
    f.add_argument(
        "--tp",
        type=_number("--tp", 1, 64, open_low=False, integer=True),
        required=True,
        help="tensor-parallel degree of one instance",
    )
    f.add_argument(
        "--pp",
        type=_number("--pp", 1, 1024, open_low=False, integer=True),
        default=1,
        help="pipeline-parallel degree (default 1)",
    )
    f.add_argument(
        "--safety",
        type=_number("--safety", 1, 100, open_low=False),
        help="safety factor (default: params fleet.safety_factor)",
    )
    f.add_argument(
        "--burst-rps",
        type=_number("--burst-rps", open_low=False),
        help="the burst rate (params fleet.burst_rate, e.g. per-minute p99): burst absorption = this / peak - 1",
    )
    f.add_argument(
        "--headroom",
        type=_number("--headroom", 0, 100, open_low=False),
        help="headroom (default: max(params fleet.expected_growth, burst absorption from --burst-rps))",
    )
    f.add_argument(
        "--spares",
        type=_number("--spares", 0, 1e6, open_low=False, integer=True),
        help="spare instances (default: N+1, N+2 if fleet.critical, x fleet.failure_domains)",
    )
    f.add_argument("--params", type=Path, help="params.yaml to take the fleet defaults from (default: the project's)")
    f.add_argument("--json", action="store_true", help="print every intermediate as JSON")
    f.set_defaults(func=cmd_fleet)
    v = sub.add_parser(
        "validate",
        help="step 13: a production window (request log and/or Prometheus scrapes) against the benchmark at the same rate",
    )
    v.add_argument(
        "source", nargs="?", help="a folder with requests.* and/or scrapes/*.prom (default: validation.source)"
    )
    v.add_argument("--tier", help="the fleet the window comes from: all or a routing tier (default: validation.tier)")
    v.add_argument(
        "--replicas",
        type=_number("--replicas", 1, 1e6, open_low=False, integer=True),
        help="replicas serving the window (default: from the scrapes)",
    )
    v.add_argument(
        "--benchmark-gpu-util",
        type=_number("--benchmark-gpu-util", 0, 100, open_low=False),
        help="DCGM GPU util %% during the benchmark at this rate",
    )
    v.add_argument("--params", type=Path, help="params.yaml to read (default: the project's)")
    v.add_argument("--json", action="store_true", help="print the whole result (as metrics/validation.json) as JSON")
    v.set_defaults(func=cmd_validate)

    i = sub.add_parser(
        "init",
        help="rewrite params.yaml (in the project root) for your own traffic log: layout, columns, timestamp unit, "
        "tiers; clears the sample's settings; keeps params.yaml.bak",
    )
    i.add_argument("--log", required=True, help="your traffic log: a file, a folder of files, or a quoted glob")
    i.add_argument(
        "--column",
        action="append",
        type=_column_pair,
        metavar="NAME=COLUMN",
        help="map a normalized name to your column when it cannot be detected, repeatable",
    )
    i.add_argument("--timestamp-unit", choices=[u for u in TIMESTAMP_UNITS if u != "auto"], help="default: detected")
    i.set_defaults(func=cmd_init)

    sm = sub.add_parser(
        "simulate",
        help="step 7b: replay a log's busiest hour (or a window) through N replicas behind a router with the "
        "engine model; TTFT/ITL/E2E percentiles, SLO attainment, per-replica busy share and preemptions",
    )
    sm.add_argument("log", help="a traffic log (any supported layout) or a normalized requests.parquet")
    sm.add_argument("--model", required=True, help="a data/catalog/models name or a path to a config.json")
    sm.add_argument("--gpu", required=True, help="a data/catalog/gpus.csv name or alias")
    sm.add_argument("--tp", type=_number("--tp", 1, 64, open_low=False, integer=True), required=True, help="TP degree")
    sm.add_argument("--weights", required=True, help="weight precision: bf16 fp16 fp8 int8 int4 fp4 mxfp4")
    sm.add_argument("--kv", required=True, help="KV-cache precision: bf16 fp16 fp8")
    sm.add_argument(
        "--replicas",
        type=_number("--replicas", 1, 1e5, open_low=False, integer=True),
        required=True,
        help="replicas behind the router",
    )
    sm.add_argument(
        "--router", default="least-outstanding", help="least-outstanding (default), round-robin or prefix-affinity"
    )
    sm.add_argument(
        "--rate-scale", type=_number("--rate-scale", 0, 1e6), default=1.0, help="arrival rate multiplier (default 1)"
    )
    sm.add_argument(
        "--window",
        default="busiest-hour",
        help="busiest-hour (default), all, or START:END seconds from the first arrival",
    )
    sm.add_argument(
        "--calibrate", nargs="+", type=Path, metavar="PATH", help="sweeps to fit the coefficients on (sizing calibrate)"
    )
    sm.add_argument("--params", type=Path, help="params.yaml to take the SLO and engine settings from")
    sm.add_argument("--json", action="store_true", help="print the result as JSON")
    sm.set_defaults(func=cmd_simulate)

    pr = sub.add_parser(
        "predict",
        help="step 7b: one deployment's TTFT/ITL/E2E and throughput at given loads through the engine model "
        "(basis calibrated, transferred or roofline, with the prediction interval)",
    )
    pr.add_argument("--model", required=True, help="a data/catalog/models name or a path to a config.json")
    pr.add_argument("--gpu", required=True, help="a data/catalog/gpus.csv name or alias")
    pr.add_argument("--tp", type=_number("--tp", 1, 64, open_low=False, integer=True), required=True, help="TP degree")
    pr.add_argument(
        "--pp", type=_number("--pp", 1, 1024, open_low=False, integer=True), default=1, help="PP degree (default 1)"
    )
    pr.add_argument("--weights", required=True, help="weight precision: bf16 fp16 fp8 int8 int4 fp4 mxfp4")
    pr.add_argument("--kv", required=True, help="KV-cache precision: bf16 fp16 fp8")
    pr.add_argument("--input-tokens", type=_number("--input-tokens", 1, open_low=False), help="prompt length")
    pr.add_argument("--output-tokens", type=_number("--output-tokens", 1, open_low=False), help="output length")
    pr.add_argument(
        "--concurrency", type=_int_list("--concurrency"), help="closed-loop levels: concurrent requests, N[,N...]"
    )
    pr.add_argument(
        "--request-rate", type=_rate_list("--request-rate"), help="open-loop levels: requests/s, R[,R...] (Poisson)"
    )
    pr.add_argument("--calibrate", nargs="+", type=Path, metavar="PATH", help="result files or sweep folders to fit on")
    pr.add_argument(
        "--manifest",
        action="append",
        type=Path,
        metavar="FILE",
        help="manifest.yaml for sweeps without one (read-only folders): one for all, or one per sweep in order",
    )
    pr.add_argument("--lengths-from", metavar="LOG", help="replay this traffic log's input/output lengths")
    pr.add_argument("--engine", help="the engine of the calibrated deployment to use (vllm, sglang; default: any)")
    pr.add_argument(
        "--params",
        type=Path,
        help="params.yaml for reading --lengths-from and the roofline prior (default: the project's)",
    )
    pr.add_argument("--json", action="store_true", help="print the prediction as JSON")
    pr.set_defaults(func=cmd_predict)

    ca = sub.add_parser(
        "calibrate",
        help="step 7b: fit the engine model on benchmark sweeps: coefficients per deployment and pooled, with "
        "in-sample, leave-one-level-out and leave-one-deployment-out residuals",
    )
    ca.add_argument("paths", nargs="+", metavar="PATH", help="result files or sweep folders with manifests")
    ca.add_argument(
        "--manifest",
        action="append",
        type=Path,
        metavar="FILE",
        help="manifest.yaml for sweeps without one (read-only folders): one for all, or one per sweep in order",
    )
    ca.add_argument(
        "--refine-passes",
        type=_number("--refine-passes", 0, 10000, open_low=False, integer=True),
        default=60,
        help="simulator passes of each deployment's step-2 refinement (default 60)",
    )
    ca.add_argument(
        "--lolo-passes",
        type=_number("--lolo-passes", 0, 10000, open_low=False, integer=True),
        default=12,
        help="refinement passes of each leave-one-level-out refit (default 12)",
    )
    ca.add_argument(
        "--first-round-replay",
        action="store_true",
        help="replay a closed-loop sweep without its first round where its files' TTFT p99 lacks that burst's tail "
        "(params.yaml calibration.first_round_replay; docs/engine_model.md 17)",
    )
    ca.add_argument("--json", action="store_true", help="print the calibration as JSON")
    ca.set_defaults(func=cmd_calibrate)

    bp = sub.add_parser(
        "bench-plan",
        help="step 7's input side: a mooncake_trace sampled from the log, vLLM/AIPerf commands and a manifest.yaml "
        "for the chosen and the top benchmark_next candidates",
    )
    bp.add_argument(
        "--candidate", metavar="ID", help="one candidate id of metrics/tco.json (e.g. all/H100-SXM/w-fp8/kv-fp8)"
    )
    bp.add_argument("--out", metavar="DIR", help="output folder (default: data/benchmark_plan)")
    bp.add_argument("--root", metavar="DIR", help="project folder with metrics/, data/interim/ and params.yaml")
    bp.add_argument(
        "--top",
        type=_number("--top", 0, 1000, open_low=False, integer=True),
        default=3,
        help="benchmark_next candidates to plan per tier (default 3)",
    )
    bp.add_argument(
        "--burst-multiplier",
        type=_number("--burst-multiplier", 2, 3, open_low=False),
        default=2.5,
        help="the step burst's rate as a multiple of the peak rate, 2 to 3 (default 2.5)",
    )
    bp.set_defaults(func=cmd_bench_plan)

    pa = sub.add_parser(
        "params",
        help="the keys params.yaml sets, or every key (--defaults), with value, default and description "
        "(the defaults live in pipeline/params.py)",
    )
    pa.add_argument("--defaults", action="store_true", help="every key of the schema, set or not")
    pa.add_argument("--params", type=Path, help="params.yaml to read (default: the project's)")
    pa.add_argument("--json", action="store_true", help="print the rows as JSON")
    pa.set_defaults(func=cmd_params)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one verb; bad input is one line on stderr and exit status 1."""
    try:
        args = build_parser().parse_args(argv)  # a bad numeric flag raises InputError (see _number)
        code = int(args.func(args))
    except InputError as exc:
        print(f"sizing: error: {one_line(exc)}", file=sys.stderr)  # one line, whatever the message
        return 1
    except KeyboardInterrupt:
        return 130
    if argv is None and args.func is cmd_profile:  # the command line's own process (not a caller's)
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End this process now, its output flushed. `sizing profile` writes no file (its table lives in a temp
    folder, already removed): the interpreter's teardown would only walk great-expectations' objects in its
    final garbage collections, about 0.7 s after the profile is printed (issue 15, speed)."""
    import contextlib
    import logging
    import os

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
