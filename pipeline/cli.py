"""The `sizing` command line: each verb is a thin call into the functions the notebooks use.

    sizing profile PATH [--format auto|generic|azure|burstgpt|mooncake] [--json]

Bad input prints one message (file, column, examples, what was expected) and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.params import FORMATS, SIZING_RATES, TIMESTAMP_UNITS


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
        ingested = traffic.ingest(
            source,
            req,
            fmt=wl_params["format"],
            columns=wl_params["columns"],
            timestamp_unit=wl_params["timestamp_unit"],
            max_failed_share=wl_params["max_failed_share"],
            max_span_days=wl_params["max_span_days"],
            chunk_rows=wl_params["chunk_rows"],
            progress=traffic.Progress(not args.quiet),
        )
        profile = workload.build_profile(ingested, req, settings)
    sys.stdout.write(io.dumps(profile) if args.json else workload.describe(profile) + "\n")
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
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one verb; bad input is one line on stderr and exit status 1."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"sizing: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
