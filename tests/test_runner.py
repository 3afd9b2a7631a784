"""The stage runner's pieces that are not a whole stage: chart conversion, and the deferred scipy.stats."""

from __future__ import annotations

import math
import subprocess
import sys

import altair as alt
import nbformat
import pandas as pd
import pytest
from altair.utils.mimebundle import spec_to_mimebundle
from nbformat.v4 import new_code_cell, new_notebook, new_output

from pipeline import charts, run
from tests.conftest import ROOT


def _chart() -> alt.Chart:
    data = pd.DataFrame({"gpus": [4, 8, 16], "usd": [1.5, 2.5, 4.0]})
    return alt.Chart(data).mark_line().encode(x="gpus:Q", y="usd:Q").properties(width=200, height=100)


def test_runner_turns_the_kernels_vegalite_output_into_the_svg_altair_itself_renders():
    spec = _chart().to_dict()
    bundle = charts.spec_bundle(spec)
    (key,) = bundle
    assert key == f"application/vnd.vegalite.{alt.SCHEMA_VERSION.split('.')[0]}+json"
    out = new_output("display_data", data={**bundle, "text/plain": "<VegaLite chart>"})
    nb = new_notebook(cells=[new_code_cell("chart", outputs=[out, new_output("stream", text="kept\n")])])
    nbformat.validate(nb)  # the +json key is one nbformat accepts as JSON
    run.svg_charts(nb)
    data = nb.cells[0].outputs[0]["data"]
    assert list(data) == ["image/svg+xml"]
    # the same SVG Altair's own SVG renderer gives (vl-convert called by Altair, at Altair's Vega-Lite version)
    expected = spec_to_mimebundle(spec, format="svg", mode="vega-lite", vegalite_version=alt.SCHEMA_VERSION[1:])
    assert data["image/svg+xml"] == expected["image/svg+xml"]
    assert nb.cells[0].outputs[1]["text"] == "kept\n"


def test_great_expectations_loads_without_scipy_stats_which_still_works_on_first_use():
    code = (
        "import sys; from pipeline import quality; gx = quality._gx();"
        "print('scipy.stats._stats_py' in sys.modules, hasattr(gx, 'expectations'));"
        "from scipy import stats; print(stats.entropy([0.5, 0.5]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    deferred, has_expectations, entropy = proc.stdout.split()
    assert (deferred, has_expectations) == ("False", "True")
    assert float(entropy) == math.log(2)  # ln 2 nats: two equally likely outcomes


def test_charts_leave_the_runners_kernel_as_specs_and_anywhere_else_as_svg(monkeypatch):
    code = (
        "import altair as alt, pandas as pd\n"
        "from pipeline import charts\n"
        "charts.enable()\n"
        "alt.Chart(pd.DataFrame({'x': [1, 2]})).mark_point().encode(x='x:Q')"
    )
    nb = new_notebook(cells=[new_code_cell(code)])
    km = run.start_kernel(ROOT)
    try:
        client = run._client(nb, km, ROOT)
        client.execute()
        client.kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    (key,) = [k for k in nb.cells[0].outputs[0]["data"] if k != "text/plain"]
    assert run.VEGALITE_MIME.fullmatch(key), key  # the runner's kernel hands back the spec
    monkeypatch.delenv(run.CHART_SPECS_ENV, raising=False)
    charts.enable()  # a notebook opened outside the runner renders SVG itself
    assert alt.renderers.active == "svg"
    monkeypatch.setenv(run.CHART_SPECS_ENV, "1")
    charts.enable()
    assert alt.renderers.active == "spec"
    monkeypatch.delenv(run.CHART_SPECS_ENV)
    charts.enable()  # leave this process as it was


STOP_WHILE_BOOTING = """
import signal, sys, time
from pathlib import Path
from pipeline import run

km = run.start_kernel(Path({root!r}))
sent = []
real = km.signal_kernel
km.signal_kernel = lambda signum: (sent.append(signum), real(signum))[1]  # a spy on the public call; the real one runs
time.sleep(0.1)  # mid-boot (a warm boot takes ~0.4 s here): the kernel is importing pandas, altair and pyarrow (exec_lines)
{stop}
time.sleep(0.5)  # any traceback the kernel prints lands on this process's stderr within this
print(",".join(signal.Signals(s).name for s in sent), km.has_kernel)
"""


@pytest.mark.parametrize(
    ("stop", "signals", "traceback"),
    [
        # the runner's way: SIGKILL first, so a booting kernel prints nothing (bad params.yaml stops it mid-import)
        ("run.stop_kernel(km)", "SIGKILL", False),
        # control, by hand: a SIGINT that reaches a booting kernel is a KeyboardInterrupt traceback on stderr
        ("km.signal_kernel(signal.SIGINT); time.sleep(0.3); km.shutdown_kernel(now=True)", "SIGINT", True),
    ],
)
def test_a_kernel_stopped_while_booting_prints_no_traceback(stop: str, signals: str, traceback: bool) -> None:
    """Found by a fresh-clone CI run: no .pyc caches, so the kernel was still importing zmq when the runner
    stopped it over a bad params.yaml, and shutdown_kernel's SIGINT put a traceback above the one-line error."""
    code = STOP_WHILE_BOOTING.format(root=str(ROOT), stop=stop)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [signals, "False"]
    assert ("KeyboardInterrupt" in proc.stderr) is traceback, proc.stderr[-2000:]
