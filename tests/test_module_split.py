"""Issue 16's split by concern and its stage layer, for workload, catalog and validation.

workload.py (1,061 lines) and catalog.py (716) were split into modules of one concern each; every public
name of the old modules stays importable from them (other modules, notebooks and users' scripts import
them). The step functions that read files from a `root` they were given (workload.build_profile for the
log's provenance, validation.run for the window, the metrics and the curves) now get what they need from
the stage layer, which alone reads.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from pipeline import catalog, validation, workload
from pipeline.stages import validation as validation_stage

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"

# every public top-level name of workload.py and catalog.py before the split
WORKLOAD_NAMES = [
    "PERCENTILES",
    "RESOLUTION_CANDIDATES_S",
    "EPOCH_2000_S",
    "TIER_COLUMNS",
    "MAX_TIERS",
    "RATE_KEYS",
    "MOONCAKE_BLOCK_TOKENS",
    "PER_MINUTE_BUCKETS",
    "BATCHED_DEFINITION",
    "ProfileSettings",
    "Requests",
    "Groups",
    "GroupRequests",
    "archetype",
    "profile_requests",
    "tier_expression",
    "compute_profile",
    "chart_data",
    "build_profile",
    "describe",
    "StageResult",
    "lengths_table",
    "rates_table",
    "tiers_table",
    "provenance_table",
    "time_axis",
]
CATALOG_NAMES = [
    "GPUS_CSV",
    "MODELS_CSV",
    "MODELS_DIR",
    "GPU_NUMERIC",
    "GPU_REQUIRED",
    "GPU_COLUMNS",
    "INTERCONNECTS",
    "GPU_POSITIVE",
    "FORMATS",
    "PEAK_COLUMN",
    "GPU",
    "read_csv_rows",
    "read_gpu_rows",
    "load_gpus",
    "find_gpu",
    "ParamBreakdown",
    "Model",
    "DTYPE_NAMES",
    "MAX_COUNT",
    "MAX_LAYERS",
    "parse_config",
    "read_config",
    "model_files",
    "load_model",
    "ModelCard",
    "load_model_cards",
    "MEASUREMENTS_CSV",
    "load_measurements",
    "PRICES_CSV",
    "PRICE_COLUMNS",
    "Price",
    "load_prices",
]
VALIDATION_NAMES = ["PRODUCTION_PARQUET", "LOG_SUFFIXES", "production_log", "scrape_figures", "write_empty_production"]
PARTS = {
    "workload": ("workload_settings", "workload_arrivals", "workload_requests", "workload_tiers", "workload_views"),
    "catalog": ("catalog_csv", "catalog_gpus", "catalog_models", "catalog_prices"),
}


@pytest.mark.parametrize(
    ("module", "names"),
    [(workload, WORKLOAD_NAMES), (catalog, CATALOG_NAMES), (validation, VALIDATION_NAMES)],
    ids=["workload", "catalog", "validation"],
)
def test_every_old_public_name_is_still_importable(module, names):
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module.__name__} lost {missing}"


def test_each_name_is_defined_once_in_its_part_and_the_old_module_re_exports_it():
    """The old module holds the same objects as the parts (not copies), and no part is a grab-bag again."""
    import importlib

    for old, parts in PARTS.items():
        facade = importlib.import_module(f"pipeline.{old}")
        homes: dict[str, str] = {}
        for part in parts:
            mod = importlib.import_module(f"pipeline.{part}")
            src = ast.parse((PIPELINE / f"{part}.py").read_text(encoding="utf-8"))
            for node in src.body:
                if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                    assert node.name not in homes, f"{node.name} defined in {homes[node.name]} and {part}"
                    homes[node.name] = part
                    if hasattr(facade, node.name):
                        assert getattr(facade, node.name) is getattr(mod, node.name), (old, node.name)
            lines = (PIPELINE / f"{part}.py").read_text(encoding="utf-8").count("\n")
            assert lines < 500, f"{part}.py has {lines} lines: split it by concern"
    assert workload.Requests.__module__ == "pipeline.workload_requests"
    assert workload.Groups.__module__ == "pipeline.workload_tiers"
    assert catalog.GPU.__module__ == "pipeline.catalog_gpus" and catalog.Price.__module__ == "pipeline.catalog_prices"


READS = ("read_metrics(", "read_table(", ".read_text(", ".read_bytes(", "open(", "is_sample(", "glob(")


@pytest.mark.parametrize(
    "module",
    ["workload", *PARTS["workload"], "validation"],
)
def test_step_modules_read_no_project_file(module):
    """Only the stage layer reads: the step modules take what they compute on as arguments (the ingested
    table's path is the one thing DuckDB reads, inside compute_profile and chart_data)."""
    text = (PIPELINE / f"{module}.py").read_text(encoding="utf-8")
    found = [r for r in READS if r in text]
    assert not found, f"pipeline/{module}.py reads files ({found}); move the reading into pipeline/stages/"
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            args = [a.arg for a in (*node.args.args, *node.args.kwonlyargs)]
            assert "root" not in args, f"{module}.{node.name} takes a project root"


def test_build_profile_takes_the_inputs_the_stage_read_and_validation_compares_what_the_stage_read():
    assert list(inspect.signature(workload.build_profile).parameters) == [
        "ingested",
        "requests_path",
        "settings",
        "inputs",
    ]
    assert not hasattr(validation, "run")  # reading the window and the documents is the stage's (evaluate)
    assert list(inspect.signature(validation.compare).parameters) == [
        "sections",
        "log",
        "scr",
        "inputs",
        "curve_levels",
    ]
    assert list(inspect.signature(validation_stage.evaluate).parameters) == ["sec", "layout", "scratch"]
