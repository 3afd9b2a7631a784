"""The docs stay current: docs/architecture.md names every module and stage, and the README's
"figure -> JSON key -> function" table names keys that exist and functions that import."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "docs" / "architecture.md"
TABLE_HEADING = "### Where each finance figure comes from"
KEY_RE = re.compile(r"`metrics/(\w+)\.json: ([^`]+)`")
FUNC_RE = re.compile(r"`(pipeline(?:\.\w+)+)`")


def _named(text: str, rel: str) -> bool:
    """`rel` (a path under pipeline/) appears on its own, bare or as pipeline/<rel>: `curve.py` is not `final_curve.py`."""
    return re.search(r"(?<![\w/])(?:pipeline/)?" + re.escape(rel) + r"(?![\w/])", text) is not None


def test_the_architecture_doc_names_every_pipeline_module():
    text = ARCH.read_text(encoding="utf-8")
    modules = sorted(
        p.relative_to(ROOT / "pipeline").as_posix()
        for p in (ROOT / "pipeline").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert "workload.py" in modules and "benchmarks/vllm.py" in modules  # the walk finds subpackages too
    missing = [m for m in modules if not _named(text, m)]
    assert not missing, f"docs/architecture.md does not name {missing}: add them where they belong"


def test_the_architecture_doc_names_every_stage_and_notebook():
    text = ARCH.read_text(encoding="utf-8")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert {"workload", "curve", "report"} <= set(stages)
    missing = [s for s in stages if f"`{s}`" not in text or f"[{s}]" not in text]  # the table and the diagram
    assert not missing, f"docs/architecture.md does not draw the dvc.yaml stages {missing}"
    notebooks = [p.stem for p in (ROOT / "notebooks").glob("*.ipynb")]
    assert not [n for n in notebooks if n not in text], "a notebook is missing from docs/architecture.md"


def test_the_name_check_tells_a_module_from_a_longer_name():
    assert _named("`final_curve.py` and `pipeline/curve.py`", "curve.py")
    assert not _named("`final_curve.py`", "curve.py")
    assert not _named("traffic/__init__.py", "__init__.py") and _named("traffic/__init__.py", "traffic/__init__.py")


def figure_table() -> list[list[str]]:
    """The README's figure table: one list of cells per row (header and rule dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"README.md has no section {TABLE_HEADING!r}"
    section = text.split(TABLE_HEADING, 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows[2:]]
    assert all(len(c) == 4 for c in cells), [c for c in cells if len(c) != 4]
    return cells


def resolve(doc: Any, key: str) -> list[Any]:
    """Every value at `key` ("a.b", "a.*.b": any entry of a dict, "a[].b": any row of a list)."""
    found = [doc]
    for part in key.split("."):
        rows = part.endswith("[]")
        name = part[:-2] if rows else part
        nxt: list[Any] = []
        for d in found:
            if name == "*":
                nxt += list(d.values()) if isinstance(d, dict) else []
            elif isinstance(d, dict) and name in d:
                nxt.append(d[name])
        found = [x for v in nxt for x in v] if rows else nxt
        if rows and not all(isinstance(v, list) for v in nxt):
            return []
    return found


def test_resolve_reads_dicts_stars_and_lists():
    doc = {"a": {"x": {"b": 1}, "y": {"c": 2}}, "rows": [{"v": 1}, {"w": 2}]}
    assert resolve(doc, "a.x.b") == [1] and resolve(doc, "a.*.b") == [1] and resolve(doc, "a.*.c") == [2]
    assert resolve(doc, "rows[].w") == [2] and resolve(doc, "a.*.z") == [] and resolve(doc, "nope") == []


def test_every_json_key_of_the_figure_table_is_in_the_committed_metrics():
    rows = figure_table()
    assert len(rows) >= 20
    docs: dict[str, Any] = {}
    missing = []
    for figure, keys, _, _ in rows:
        found = KEY_RE.findall(keys)
        assert found, f"README figure table: {figure!r} names no `metrics/<file>.json: key`"
        for name, key in found:
            if name not in docs:
                docs[name] = json.loads((ROOT / "metrics" / f"{name}.json").read_text(encoding="utf-8"))
            if not resolve(docs[name], key.strip()):
                missing.append(f"metrics/{name}.json: {key}")
    assert not missing, f"README figure table names keys the metrics files lack: {missing}"


def test_every_function_of_the_figure_table_exists():
    missing = []
    for figure, _, computed, shown in figure_table():
        names = FUNC_RE.findall(computed)
        assert names, f"README figure table: {figure!r} names no computing function"
        for dotted in names + FUNC_RE.findall(shown):
            module, _, attr = dotted.rpartition(".")
            if not callable(getattr(importlib.import_module(module), attr, None)):
                missing.append(dotted)
        for nb in re.findall(r"`(notebooks/[\w.]+\.ipynb)`", shown):
            assert (ROOT / nb).exists(), nb
    assert not missing, f"README figure table names functions that do not exist: {missing}"


def test_every_card_and_chart_of_the_finance_report_has_a_row():
    from pipeline import report

    fixtures = ROOT / "tests" / "data" / "metrics"
    m = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in fixtures.glob("*.json")}
    figures = " ".join(r[0] for r in figure_table())
    labels = [label for label, _, _ in report.first_screen(m)]
    assert "monthly cost" in labels and len(labels) >= 10
    assert not [lbl for lbl in labels if f'card "{lbl}"' not in figures], "a first-screen card has no README row"
    nb = json.loads((ROOT / "notebooks" / "finance.ipynb").read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    called = {f"pipeline.charts.{f}" for f in re.findall(r"\bcharts\.(\w+)\(", code)}
    called |= {f"pipeline.report.{f}" for f in re.findall(r"\brp\.(\w+)\(", code)}
    called -= {
        "pipeline.charts.enable",
        "pipeline.report.load",
        "pipeline.report.headline_html",
    }  # no figure of their own
    assert {"pipeline.charts.cost_by_candidate", "pipeline.report.assumptions"} <= called
    shown = {name for r in figure_table() for name in FUNC_RE.findall(r[2] + r[3])}
    assert not sorted(called - shown), f"finance.ipynb shows {sorted(called - shown)} but the README table has no row"


@pytest.mark.parametrize("path", ["docs/architecture.md", "README.md"])
def test_the_docs_are_text_only(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    assert not re.search(r"!\[[^\]]*\]\(|<img\b", text), f"{path}: images do not render offline; draw in text"
