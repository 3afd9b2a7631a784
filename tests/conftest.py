"""Shared helpers: write tiny logs, ingest them for real (DuckDB + great-expectations), profile them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Every project copy a test runs (and this process) files compiled simulator kernels in this checkout's own
# cache (pipeline/sim/__init__.py): compiled once a session, not once per copy (~8 s a kernel). Set before any
# import of pipeline.sim.
os.environ.setdefault("SIZING_NUMBA_CACHE_DIR", str(ROOT / "pipeline" / "sim" / "__pycache__"))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from pipeline import traffic, workload  # noqa: E402
from pipeline.stages import workload as workload_stage  # noqa: E402

SHARED = ROOT.parent / "shared" / "fixtures"
METRICS_FIXTURE = ROOT / "tests" / "data" / "metrics"  # frozen metrics/*.json of the sample: unit tests read these
# The keys of metrics/operating_point.json that issue 4 names (a contract users' scripts rely on).
OPERATING_POINT_KEYS = (
    "load_kind",
    "c_max",
    "usable_rps",
    "knee",
    "littles_law_ceiling_rps",
    "littles_law_gap",
    "gap_flag",
    "slo",
    "percentile_used",
    "curve_source",
    "manifest",
    "recommendations",
)


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def profile_of(source: Path | str, tmp_path: Path, settings: workload.ProfileSettings | None = None, **ingest_kw: Any):
    """Ingest a log into tmp_path/requests.parquet and profile it; returns (profile, ingested)."""
    src = traffic.open_source(str(source), ingest_kw.pop("pattern", None), Path.cwd())
    out = tmp_path / "out" / "requests.parquet"
    ing = traffic.ingest(src, out, progress=None, **ingest_kw)
    prof = workload.build_profile(ing, out, settings or workload.ProfileSettings(), workload_stage.log_inputs(ing))
    return prof, ing


@pytest.fixture
def shared_fixtures() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/fixtures is not present")
    return SHARED


def run_cmd(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a project command (the venv's bin first on PATH, no analytics) in `cwd`; fail the test with its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("SIZING_ROOT", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


OUTPUT_DIRS = ("metrics", "reports", "data/interim", "data/deploy", "data/benchmark_plan")


def save_outputs(project: Path) -> dict[Path, bytes]:
    """Every pipeline output, dvc.lock and params.yaml of `project`, as bytes: what a test puts back after an edit."""
    files = {p: p.read_bytes() for d in OUTPUT_DIRS for p in sorted((project / d).rglob("*")) if p.is_file()}
    return {
        **files,
        project / "dvc.lock": (project / "dvc.lock").read_bytes(),
        project / "params.yaml": (project / "params.yaml").read_bytes(),
    }


def put_back(project: Path, saved: dict[Path, bytes]) -> None:
    """Restore the outputs a test's edit changed, byte for byte, instead of a second `dvc repro` (tens of seconds
    of test time each); dvc then finds every stage up to date, which `dvc status` checks here."""
    for d in OUTPUT_DIRS:
        for p in sorted((project / d).rglob("*"), reverse=True):
            if p.is_file() and p not in saved:
                p.unlink()
    for p, data in saved.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_bytes() != data:
            p.write_bytes(data)
    status = run_cmd([str(Path(sys.executable).parent / "dvc"), "status", "--quiet"], project, check=False)
    assert status.returncode == 0, status.stdout + status.stderr


def shared_project(tmp_path_factory: Any, name: str, build: Any) -> Path:
    """A project copy built once per test session by `build(dest)` and shared by every pytest-xdist worker.

    A session fixture alone runs once per worker; this one builds under the workers' common temp folder,
    behind an flock, so the first worker to ask runs the pipeline and the others wait and reuse it (read-only
    use only). A failed build is recorded: the other workers fail with its message instead of rebuilding.
    """
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # popen-gwN's parent: one folder per session, common to the workers
    folder = base / f"shared-{name}"
    with open(base / f"shared-{name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failed, done = base / f"shared-{name}.failed", folder / ".built"
        if failed.exists():
            raise AssertionError(f"the shared '{name}' project failed to build:\n{failed.read_text()}")
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            try:
                build(folder / "project")
            except BaseException as exc:
                failed.write_text(str(exc)[-20_000:], encoding="utf-8")
                raise
            done.touch()
    return folder / "project"


def built_sample(tmp_path_factory: Any, dest: Path) -> Path:
    """A writable copy at `dest` of the project after one full `dvc repro` of the shipped sample (a fresh git copy:
    benchmarks/pipeline_time.py copy_project). The run happens once per test session (shared_project); each caller
    gets its own copy of the result (git, dvc cache and lock included), so tests that edit and rerun it stay apart."""
    import shutil

    from benchmarks.pipeline_time import copy_project

    def build(project: Path) -> None:
        copy_project(project)
        run_cmd([str(Path(sys.executable).parent / "dvc"), "repro"], project)

    shutil.copytree(shared_project(tmp_path_factory, "sample", build), dest, symlinks=True)
    return dest


AZURE_CONV = SHARED / "traces" / "azure2023_conv.csv"


def azure_walked(tmp_path_factory: Any, dest: Path) -> tuple[Path, str]:
    """A writable copy at `dest` of the project walked through the README's "Your own log" on the real Azure 2023
    conversation trace (../shared/fixtures): `sizing init --log azure2023_conv.csv`, then the site's own engine
    concurrency (memory.concurrency 8: the memory stage then picks TP2 for the H100 fp8/fp8 that the TP4 sample
    sweep measured, the mismatch that crashed step 12), then `dvc repro`. One run per test session
    (shared_project), shared by tests/test_issue15_acceptance.py and tests/test_real_logs.py, which each used to
    run the whole pipeline on this trace. Returns the copy and init's stdout."""
    import shutil

    from benchmarks.pipeline_time import copy_project

    bin_dir = Path(sys.executable).parent

    def build(project: Path) -> None:
        copy_project(project)
        init = run_cmd([str(bin_dir / "sizing"), "init", "--log", str(AZURE_CONV)], project)
        (project.parent / "init.stdout").write_text(init.stdout, encoding="utf-8")
        path = project / "params.yaml"
        text = path.read_text(encoding="utf-8")
        assert text.count("\nmemory: {}") == 1, "params.yaml after init has no empty memory section"
        path.write_text(text.replace("\nmemory: {}", "\nmemory: {concurrency: 8}"), encoding="utf-8")
        run_cmd([str(bin_dir / "dvc"), "repro"], project)

    built = shared_project(tmp_path_factory, "azure-init", build)
    shutil.copytree(built, dest, symlinks=True)
    return dest, (built.parent / "init.stdout").read_text(encoding="utf-8")


def calibration_level(**over: Any) -> Any:
    """A measured open-loop level for the calibration tests (pipeline.sim.calibrate.LevelData): rate 2 req/s,
    8 requests of 547 prompt / 50 output tokens, TTFT p50 100 ms / p99 200 ms, mean ITL 10 ms; `over` replaces
    any field."""
    import numpy as np

    from pipeline.sim import calibrate

    base: dict[str, Any] = {
        "name": "x (rate 2)",
        "curve": "x",
        "load_kind": "request_rate",
        "load": 2.0,
        "rps": 2.0,
        "output_tps": 100.0,
        "ttft_s": {"p50": 0.1, "p99": 0.2},
        "itl_s": 0.01,
        "itl_kind": "tpot",
        "itl_stat": "mean",
        "e2e_s": 1.0,
        "input_mean": 547.0,
        "output_mean": 50.0,
        "input_lens": np.full(8, 547, np.int64),
        "output_lens": np.full(8, 50, np.int64),
        "lengths_source": "the mean length",
        "requests": 20,
        "saturation": False,
    }
    base.update(over)
    return calibrate.LevelData(**base)


def load_fidelity() -> Any:
    """benchmarks/fidelity.py as a module (benchmarks/ is a folder of scripts, not a package), loaded once."""
    import importlib.util

    name = "benchmarks_fidelity"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "fidelity.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def catalog_model(name: str) -> Any:
    """The project's catalog model `name`: what the stages pass to the step functions' `load_model`."""
    from pipeline import catalog

    return catalog.load_model(name, ROOT)


def toy_step_cost(fixed_s: float = 0.01, per_token_s: float = 0.001):
    """A hand-computable iteration cost for the simulator tests: t = fixed_s + per_token_s x tokens scheduled
    (b0 = fixed_s, b1 = 1 on one FLOP per token over a 1/per_token_s peak; every other term is zero)."""
    from pipeline.sim import cost

    return cost.StepCost(
        linear_flops_per_token=1.0,
        attn_flops_full_per_pair=0.0,
        attn_flops_sliding_per_pair=0.0,
        peak_flops=1.0 / per_token_s,
        dense_weight_bytes=0.0,
        routed_weight_bytes=0.0,
        expert_share=0.0,
        kv_full_bytes_per_token=0.0,
        kv_sliding_bytes_per_token=0.0,
        hbm_bw=1.0,
        allreduce_bytes_per_token=0.0,
        link_bw=0.0,
        allreduce_latency_s=0.0,
        window=cost.BIG_WINDOW,
        coeffs=cost.Coefficients((fixed_s, 1.0, 1.0, 1.0, 0.0, 0.0)),
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the warm interpreters tests/forkrun.py started for this worker."""
    import forkrun

    forkrun.close_all()


HEAVIEST_FIRST = (
    "test_e2e_dvc.py",
    "test_issue15_acceptance.py",
    "test_durability.py",  # after a long file: the sample run it copies (built_sample) is done by then
    "test_real_logs.py",
    "test_notebooks_by_hand.py",
    "test_security.py",
    "test_no_sweep.py",
    "test_init.py",
    # then the longest of `make test-fast` (no e2e)
    "test_sim_calibrate.py",
    "test_bench_plan.py",
    "test_bad_input_corpus.py",
    "test_ingest_order_and_progress.py",
    "test_runner.py",
    "test_final_curve.py",
    "test_report.py",
)
"""The test files that run whole pipelines, longest first (measured with --junitxml): pytest-xdist's loadfile
hands files to the workers in collection order (the Makefile passes --no-loadscope-reorder), so starting the
longest ones first keeps one worker from finishing a long file alone at the end (longest-processing-time order)."""


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the files of HEAVIEST_FIRST to the front, in that order; every other test keeps its place."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
