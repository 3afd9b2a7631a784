"""The stage runner's pieces that are not a whole stage: chart conversion, and the deferred scipy.stats."""

from __future__ import annotations

import math
import subprocess
import sys

import altair as alt
import nbformat
import pandas as pd
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
