"""The stage runner: `python -m pipeline.run <stage>` executes a stage's notebooks on a real kernel.

It passes only that stage's params sections, creates output folders, scrubs run metadata
(timestamps, random cell ids, stderr progress) so an unchanged rerun gives byte-identical
reports and dvc.lock, and renders each notebook to one self-contained HTML file with no code.
Bad input ends with one clear message and exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import runtime

if __name__ == "__main__":  # before any third-party import: without the project's packages, rerun in .venv
    runtime.ensure_project_python("pipeline.run", sys.argv[1:])

from pipeline import io, params, paths
from pipeline.errors import InputError, one_line
from pipeline.runtime import CHART_SPECS_ENV  # run.CHART_SPECS_ENV: the name kept

TEMPLATES = Path(__file__).parent / "templates"
USER_ERRORS = ("InputError", "ParamsError")


@dataclass(frozen=True)
class Stage:
    """A DVC stage: its notebooks (in order), the params sections it reads, the folders it writes."""

    notebooks: tuple[str, ...]
    sections: tuple[str, ...]
    titles: tuple[str, ...]


STAGES: dict[str, Stage] = {
    "workload": Stage(("01_workload",), ("workload", "slo"), ("Step 1: workload profile",)),
    "routing": Stage(("03_routing",), ("routing", "model"), ("Step 3: routing tiers",)),
    "memory": Stage(
        ("02_hardware", "04_memory", "05_quantization", "06_parallelism"),
        ("hardware", "model", "quantization", "memory", "lora", "engine", "parallelism", "roofline", "slo"),
        (
            "Step 2: hardware candidates",
            "Step 4: memory floor",
            "Step 5: quantization",
            "Step 6: parallelism and the roofline check",
        ),
    ),
    "calibrate": Stage(  # step 7b: metrics/calibration.json (pipeline/stages/calibrate.py); reads curve.source only
        ("07b_calibration",), ("calibration", "curve", "roofline"), ("Step 7b: engine-model calibration",)
    ),
    "curve": Stage(
        ("07_benchmark", "08_kv_cache", "09_batching", "10_final_curve"),
        ("curve", "recommend", "slo", "roofline", "parallelism"),
        (
            "Step 7: benchmark curves",
            "Step 8: KV-cache strategy",
            "Step 9: batching",
            "Step 10: the final curve and the operating point",
        ),
    ),
    "fleet": Stage(  # engine, workload: the fleet replay's engine knobs and how rows map to tiers
        ("11_fleet",), ("fleet", "routing", "slo", "engine", "workload"), ("Step 11: fleet size",)
    ),
    "validation": Stage(
        ("13_validation",), ("validation", "slo", "workload"), ("Step 13: post-deployment validation",)
    ),
    "deploy": Stage(("deploy",), ("engine",), ("Deployment sheet: what to run",)),  # pipeline/stages/deploy.py
    "report": Stage(  # step 12 and the reports: anything that reruns the cost reruns the reports
        ("12_tco", "finance", "scenarios"),
        ("report", "slo", "fleet", "tco", "curve", "routing"),
        (
            "Step 12: total cost of ownership",
            "LLM inference fleet: GPUs and cost",
            "What-if scenarios side by side",
        ),
    ),
    "bench_plan": Stage(  # after the report stage: tco.json's chosen plan and benchmark_next (stages/bench_plan.py)
        ("benchmark_plan",), ("workload", "fleet", "slo"), ("The benchmark plan: what to measure next",)
    ),
}


def scrub(nb: Any) -> Any:
    """Remove what changes from run to run: papermill timings, execution metadata, cell ids, stderr."""
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    return nb


VEGALITE_MIME = re.compile(r"application/vnd\.vegalite\.v\d+\+json")
SCHEMA_VERSION = re.compile(r"/vega-lite/v(\d+)\.(\d+)[.\d]*\.json$")


def to_svg(spec: dict[str, Any]) -> str:
    """One Vega-Lite chart as SVG (vl-convert), at the Vega-Lite version its `$schema` names, as Altair does."""
    import vl_convert as vlc

    match = SCHEMA_VERSION.search(spec.get("$schema", ""))
    return vlc.vegalite_to_svg(spec, vl_version=f"v{match[1]}_{match[2]}" if match else None)


def _chart_specs(out: Any) -> list[tuple[str, dict[str, Any]]]:
    data = out.get("data") or {}
    return [(key, data[key]) for key in data if VEGALITE_MIME.fullmatch(key)]


def warm_charts() -> None:
    """Start vl-convert's JavaScript engine (the first chart costs about a second) while the kernel boots."""
    to_svg({"mark": "point", "data": {"values": [{"x": 0}]}, "encoding": {"x": {"field": "x"}}})


def svg_charts(nb: Any) -> Any:
    """Replace every Vega-Lite chart output with its SVG, so the report carries no JavaScript.

    Done here, on the report thread, rather than in the kernel: the kernel then never starts
    vl-convert's engine, and the runner, idle while the kernel works, has warmed it already.
    """
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for key, spec in _chart_specs(out):
                del out["data"][key]
                out["data"].pop("text/plain", None)
                out["data"]["image/svg+xml"] = to_svg(spec)
    return nb


@functools.cache
def _exporter() -> Any:
    """nbconvert's HTML exporter with the offline template, built once per process."""
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="offline",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def to_html(nb: Any, title: str) -> str:
    """One self-contained HTML page: outputs only, inline CSS and SVG, nothing fetched."""
    nb.metadata["title"] = title
    body, _ = _exporter().from_notebook_node(nb)
    return body


def execute(name: str, parameters: dict[str, Any], title: str, root: Path) -> None:
    """Run one notebook (papermill's parameters convention), scrub it and write reports/<name>.html."""
    execute_all((name,), parameters, (title,), root)


def _client(nb: Any, km: Any, root: Path) -> Any:
    """An nbclient NotebookClient on `km` that also echoes the kernel's printed progress to this process, live."""
    from nbclient import NotebookClient

    class Echo(NotebookClient):  # type: ignore[misc]
        def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> Any:
            if msg["msg_type"] == "stream":
                stream = sys.stderr if msg["content"].get("name") == "stderr" else sys.stdout
                stream.write(msg["content"].get("text", ""))
                stream.flush()
            return super().output(outs, msg, display_id, cell_index)

    return Echo(nb, km=km, kernel_name="python3", timeout=None, resources={"metadata": {"path": str(root)}})


def start_kernel(root: Path) -> Any:
    """A python3 kernel in the project root that imports the heavy libraries as it boots."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(
        cwd=str(root),
        # charts come back as specs (svg_charts() renders them); SIZING_STAGE_RUN: the notebooks write outputs
        env={**os.environ, CHART_SPECS_ENV: "1", "SIZING_STAGE_RUN": "1"},
        extra_arguments=[
            "--IPKernelApp.log_level=CRITICAL",
            "--HistoryManager.enabled=False",
            "--IPKernelApp.exec_lines=import pandas, altair, pyarrow",
        ],
    )
    return km


def stop_kernel(km: Any) -> None:
    """Kill the kernel at once (SIGKILL), then let jupyter_client clean up its ports and connection file.

    Why not `km.shutdown_kernel(now=True)` alone: it sends SIGINT first, and a kernel still booting (the
    runner starts it before checking params, so a bad params.yaml stops it mid-import) answers SIGINT
    with a KeyboardInterrupt traceback on the stderr it shares with this process, which must end with
    one clear line. A SIGKILLed process runs no more code, so nothing is printed; the kernel holds no
    unwritten output (every notebook writes its files in its own cells).
    """
    import signal

    if km.has_kernel:
        km.signal_kernel(signal.SIGKILL)
    km.shutdown_kernel(now=True)  # waits for the process, then frees its ports and connection file


def prelude(parameters: dict[str, Any], validated: bool) -> str:
    """The cell run before each notebook: a cleared namespace and, when the runner validated the parameters
    (run: params.validate_all), those sections marked as validated in the kernel (params.mark_validated), so
    the stage does not validate them a second time. The cell is removed before the report is rendered."""
    code = 'get_ipython().run_line_magic("reset", "-f")'
    if validated:
        code += f"\n__import__('pipeline.params').params.mark_validated({parameters!r})"
    return code


def execute_all(
    names: tuple[str, ...],
    parameters: dict[str, Any],
    titles: tuple[str, ...],
    root: Path,
    km: Any = None,
    validated: bool = False,
) -> None:
    """Run a stage's notebooks in order in one kernel (imports paid once), each on a cleared namespace.

    Parameters are injected after the cell tagged `parameters`, as papermill does; each executed
    notebook is scrubbed and rendered to reports/<name>.html. `km`: a kernel already booting (run()
    starts it first, so it boots while this process validates params and loads nbconvert). `validated`: the
    parameters are validate_all's sections, marked so in the kernel (prelude).
    """
    from concurrent.futures import ThreadPoolExecutor

    from nbformat.v4 import new_code_cell
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    km = km or start_kernel(root)
    pool = ThreadPoolExecutor(max_workers=1)  # each report is rendered while the next notebook runs
    pending = [pool.submit(warm_charts)]
    _exporter()  # nbconvert and its template, loaded while the kernel boots
    try:
        for name, title in zip(names, titles, strict=True):
            nb = load_notebook_node(str(root / "notebooks" / f"{name}.ipynb"))  # papermill's loader: tags defaulted
            nb = parameterize_notebook(nb, parameters, kernel_name="python3", language="python")
            nb.cells.insert(0, new_code_cell(prelude(parameters, validated)))
            client = _client(nb, km, root)
            try:
                client.execute()
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()
            nb.cells.pop(0)
            pending.append(pool.submit(_write_report, root / "reports" / f"{name}.html", scrub(nb), title))
        stop_kernel(km)  # while the last report renders
        for job in pending:
            job.result()
    finally:
        pool.shutdown(wait=True)
        if km.has_kernel:
            stop_kernel(km)


def _write_report(path: Path, nb: Any, title: str) -> None:
    io.write_text(path, to_html(svg_charts(nb), title))


def run(stage_name: str, root: Path | None = None) -> None:
    """Validate the stage's params (once: the kernel's stages reuse them, see prelude), then execute its notebooks."""
    root = root or paths.ROOT
    if stage_name not in STAGES:
        raise InputError(f"unknown stage '{stage_name}'; stages: {', '.join(STAGES)}")
    stage = STAGES[stage_name]
    km = start_kernel(root)  # boots while the params are checked
    try:
        data = params.load(root / "params.yaml")
        every = params.validate_all(data, root)  # the whole file, before this stage computes anything
    except InputError:
        stop_kernel(km)
        raise
    sections = {name: every[name] for name in stage.sections}
    for folder in ("data/interim", "metrics", "reports"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    try:
        outputs = stage_outputs(root, stage_name)
    except BaseException:
        stop_kernel(km)
        raise
    # all or nothing: a notebook that fails puts back every output of the stage (io.stage_transaction)
    with io.stage_transaction(root, stage_name, outputs):
        execute_all(stage.notebooks, sections, stage.titles, root, km, validated=True)
        finish = AFTER.get(stage_name)
        if finish is not None:
            finish(root)


def _after_report(root: Path) -> None:
    """After the report stage's notebooks: metrics/summary.json (the one dvc `metrics:` file) and the cost plot."""
    import json

    from pipeline import plots, summary

    summary.write(root)
    plots.write_report(root, json.loads((root / "metrics" / "tco.json").read_text(encoding="utf-8")))


AFTER = {"report": _after_report}  # outputs the runner writes itself once a stage's notebooks have run


def stage_outputs(root: Path, stage_name: str) -> list[str]:
    """The outputs dvc.yaml declares for a stage (outs, metrics, plots), relative to the project root.

    Without a dvc.yaml (the runner used on its own), the stage's reports, as the runner names them.
    """
    import yaml

    path = root / "dvc.yaml"
    if not path.exists():
        return [f"reports/{name}.html" for name in STAGES[stage_name].notebooks]
    stage = (yaml.safe_load(path.read_text(encoding="utf-8")).get("stages") or {}).get(stage_name) or {}
    found = []
    for key in ("outs", "metrics", "plots"):
        for item in stage.get(key) or []:
            found.append(item if isinstance(item, str) else next(iter(item)))
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 1 with one message on bad input."""
    from nbclient.exceptions import CellExecutionError

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            f"usage: python -m pipeline.run <stage>   (stages: {', '.join(STAGES)})",
            file=sys.stderr,
        )
        return 2
    try:
        run(argv[0])
    except InputError as exc:  # ParamsError is one too
        print(f"error: {one_line(exc)}", file=sys.stderr)  # one line
        return 1
    except CellExecutionError as exc:
        if exc.ename in USER_ERRORS:
            print(f"error: {one_line(exc.evalue)}", file=sys.stderr)  # one line
            return 1
        raise
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every output is written and closed, the kernel is down: skip ~0.3 s of interpreter teardown
