"""Every project path the stages read or write, in one place: `Layout(root)`.

The stages (`pipeline/stages/`) take a Layout and never spell a path themselves; step modules take
none at all. `pipeline.paths` keeps its module-level names (`paths.ROOT`, `paths.WORKLOAD_JSON`, ...)
for existing callers and takes them from `Layout(project_root())`. Standard library only: the
stage runner and `pipeline.params` import it before any third-party package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "SIZING_ROOT"  # points the package at another checkout (tests, `sizing init`)


def project_root() -> Path:
    """The folder that holds params.yaml: $SIZING_ROOT if set, else the checkout this package lives in."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def display_path(path: str | os.PathLike[str], root: Path) -> str:
    """A path as people should read it in reports and messages: relative to `root` when inside it."""
    resolved = Path(path).resolve()
    base = Path(root).resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else str(path)


@dataclass(frozen=True)
class Layout:
    """The project's files under `root`, each a property named after the file."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def default(cls) -> Layout:
        """The layout of the project this package serves (`project_root()`)."""
        return cls(project_root())

    # folders
    @property
    def params_yaml(self) -> Path:
        """params.yaml: the only file a user edits."""
        return self.root / "params.yaml"

    @property
    def notebooks(self) -> Path:
        """notebooks/: one notebook per report."""
        return self.root / "notebooks"

    @property
    def data(self) -> Path:
        """data/."""
        return self.root / "data"

    @property
    def raw(self) -> Path:
        """data/raw/: the user's inputs (traffic, benchmarks, production)."""
        return self.data / "raw"

    @property
    def interim(self) -> Path:
        """data/interim/: the parquet tables passed between stages."""
        return self.data / "interim"

    @property
    def catalog(self) -> Path:
        """data/catalog/: GPUs, models, memory measurements, prices."""
        return self.data / "catalog"

    @property
    def metrics(self) -> Path:
        """metrics/: the JSON documents the stages write."""
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        """metrics/plots/: the data files of `dvc plots`."""
        return self.metrics / "plots"

    @property
    def reports(self) -> Path:
        """reports/: the rendered notebooks."""
        return self.root / "reports"

    # the catalog
    @property
    def gpus_csv(self) -> Path:
        """data/catalog/gpus.csv."""
        return self.catalog / "gpus.csv"

    @property
    def models_csv(self) -> Path:
        """data/catalog/models.csv."""
        return self.catalog / "models.csv"

    @property
    def models_dir(self) -> Path:
        """data/catalog/models/: one Hugging Face config.json per model."""
        return self.catalog / "models"

    @property
    def vllm_memory_measurements_csv(self) -> Path:
        """data/catalog/vllm_memory_measurements.csv."""
        return self.catalog / "vllm_memory_measurements.csv"

    @property
    def prices_csv(self) -> Path:
        """data/catalog/prices.csv."""
        return self.catalog / "prices.csv"

    # interim tables
    @property
    def requests_parquet(self) -> Path:
        """data/interim/requests.parquet: the normalized request table (workload stage)."""
        return self.interim / "requests.parquet"

    @property
    def rps_per_minute_parquet(self) -> Path:
        """data/interim/rps_per_minute.parquet."""
        return self.interim / "rps_per_minute.parquet"

    @property
    def predicted_curve_parquet(self) -> Path:
        """data/interim/predicted_curve.parquet: the roofline curves per candidate (memory stage)."""
        return self.interim / "predicted_curve.parquet"

    @property
    def curves_parquet(self) -> Path:
        """data/interim/curves.parquet: measured and predicted levels per curve (curve stage)."""
        return self.interim / "curves.parquet"

    @property
    def candidate_curves_parquet(self) -> Path:
        """data/interim/candidate_curves.parquet: every candidate's curve, one row per level (curve stage)."""
        return self.interim / "candidate_curves.parquet"

    @property
    def production_parquet(self) -> Path:
        """data/interim/production.parquet: the production window's requests (validation stage)."""
        return self.interim / "production.parquet"

    # metrics documents
    def metrics_json(self, name: str) -> Path:
        """metrics/<name>.json."""
        return self.metrics / f"{name}.json"

    @property
    def workload_json(self) -> Path:
        """metrics/workload.json (workload stage)."""
        return self.metrics_json("workload")

    @property
    def tiers_json(self) -> Path:
        """metrics/tiers.json (routing stage)."""
        return self.metrics_json("tiers")

    @property
    def memory_json(self) -> Path:
        """metrics/memory.json (memory stage)."""
        return self.metrics_json("memory")

    @property
    def operating_point_json(self) -> Path:
        """metrics/operating_point.json (curve stage)."""
        return self.metrics_json("operating_point")

    @property
    def fleet_json(self) -> Path:
        """metrics/fleet.json (fleet stage)."""
        return self.metrics_json("fleet")

    @property
    def validation_json(self) -> Path:
        """metrics/validation.json (validation stage)."""
        return self.metrics_json("validation")

    @property
    def tco_json(self) -> Path:
        """metrics/tco.json (report stage)."""
        return self.metrics_json("tco")

    @property
    def deploy_json(self) -> Path:
        """metrics/deploy.json: the deployment sheet (deploy stage)."""
        return self.metrics_json("deploy")

    @property
    def deploy_dir(self) -> Path:
        """data/deploy/: one YAML per tier of the adopted plan, what to run (deploy stage)."""
        return self.data / "deploy"

    @property
    def calibration_json(self) -> Path:
        """metrics/calibration.json (calibrate stage): the engine model's coefficients."""
        return self.metrics_json("calibration")

    @property
    def benchmark_plan_dir(self) -> Path:
        """data/benchmark_plan/: one folder per candidate to benchmark (bench_plan stage, `sizing bench-plan`)."""
        return self.data / "benchmark_plan"

    @property
    def benchmark_plan_json(self) -> Path:
        """metrics/benchmark_plan.json: what the bench_plan stage planned (bench_plan stage)."""
        return self.metrics_json("benchmark_plan")

    @property
    def benchmark_plan_report(self) -> Path:
        """reports/benchmark_plan.html (bench_plan stage)."""
        return self.report("benchmark_plan")

    @property
    def summary_json(self) -> Path:
        """metrics/summary.json: the one `dvc metrics` file (report stage)."""
        return self.metrics_json("summary")

    # plot data
    @property
    def rps_over_time_csv(self) -> Path:
        """metrics/plots/rps_over_time.csv."""
        return self.plots / "rps_over_time.csv"

    @property
    def input_length_cdf_csv(self) -> Path:
        """metrics/plots/input_length_cdf.csv."""
        return self.plots / "input_length_cdf.csv"

    @property
    def output_length_cdf_csv(self) -> Path:
        """metrics/plots/output_length_cdf.csv."""
        return self.plots / "output_length_cdf.csv"

    @property
    def ttft_vs_load(self) -> Path:
        """metrics/plots/ttft_vs_load/: one CSV per curve."""
        return self.plots / "ttft_vs_load"

    @property
    def itl_vs_load(self) -> Path:
        """metrics/plots/itl_vs_load/: one CSV per curve."""
        return self.plots / "itl_vs_load"

    @property
    def cost_per_candidate_csv(self) -> Path:
        """metrics/plots/cost_per_candidate.csv."""
        return self.plots / "cost_per_candidate.csv"

    # reports
    def report(self, notebook: str) -> Path:
        """reports/<notebook>.html: a rendered notebook."""
        return self.reports / f"{notebook}.html"

    @property
    def workload_report(self) -> Path:
        """reports/01_workload.html."""
        return self.report("01_workload")

    def relative(self, path: Path) -> str:
        """`path` relative to the root, POSIX style (how messages and dvc.yaml name files)."""
        return Path(path).relative_to(self.root).as_posix()
