"""dvc.yaml's deps are exactly the code each stage runs, and `pipeline/` has no import cycle (issue 16).

The import graph is built statically with `ast` from the source files, never by importing them:
module-level and function-local imports (`import pipeline.x`, `from pipeline import x`,
`from pipeline.x import y`, relative imports, `importlib.import_module("pipeline.x")`), with
`if TYPE_CHECKING:` blocks left out (they never run). Importing `pipeline.a.b` runs `pipeline/__init__.py`
and `pipeline/a/__init__.py` first, so those count too. A stage's code is its entry point
(`python3 -m <module>` in its cmd) plus, for the stage runner, the code cells of the notebooks
`pipeline/run.py` STAGES lists for it (IPython magics and shell lines skipped), followed transitively.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shlex
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pipeline"
RUNNER_TEMPLATES = "pipeline/templates"

# Import edges allowed to close a cycle, each a (importer, imported) pair with the reason. Empty: none is.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    """One import: `target` is imported by `source` at `line` (`where` names the file or notebook cell)."""

    source: str
    target: str
    where: str
    line: int
    implicit: bool = False  # a parent package, run because one of its modules is imported


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of `package` under `root`, by dotted name (a package by its `__init__.py`)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _ancestors(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`]: the packages Python imports before `a.b.c`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except those inside an `if TYPE_CHECKING:` body (its `else:` does run)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            todo.append(node.test)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports_in(tree: ast.AST, importer: str, is_package: bool, modules: set[str]) -> list[tuple[str, int]]:
    """The modules of `modules` that code `tree` (of module `importer`) imports when it runs, with line numbers.

    A module imported as `pipeline.a.b` brings `pipeline` and `pipeline.a` with it; `from p import x`
    imports module `p.x` when there is one (else `x` is a name defined in `p`).
    """
    here = importer if is_package else importer.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def add(name: str, line: int) -> None:
        for candidate in [*_ancestors(name), name]:
            if candidate in modules:
                found.append((candidate, line))

    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            add(base, node.lineno)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    add(f"{base}.{alias.name}", node.lineno)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value, node.lineno)
    return found


@functools.cache  # one parse per tree and session: every parametrized test reads the same graph
def import_graph(root: Path, package: str = PACKAGE) -> dict[str, list[Edge]]:
    """Each module of `package` -> the imports it runs (explicit ones, then the parents of its own name)."""
    files = module_files(root, package)
    names = set(files)
    graph: dict[str, list[Edge]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(root).as_posix()
        own = set(_ancestors(name))  # `from pipeline import x` names the package pipeline.x already runs in
        edges = [
            Edge(name, target, rel, line, implicit=target in own)
            for target, line in imports_in(tree, name, path.name == "__init__.py", names)
            if target != name
        ]
        edges += [Edge(name, parent, rel, 0, implicit=True) for parent in _ancestors(name) if parent in names]
        graph[name] = edges
    return graph


MAGIC = re.compile(r"^\s*[%!]")


def notebook_code(path: Path) -> list[tuple[int, str]]:
    """The code cells of a notebook as Python, by cell index: `%%` cells dropped, `%` and `!` lines blanked."""
    cells = []
    for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if source.lstrip().startswith("%%"):
            continue
        cells.append((index, "\n".join("" if MAGIC.match(line) else line for line in source.splitlines())))
    return cells


def notebook_imports(path: Path, root: Path, modules: set[str]) -> list[Edge]:
    """The `pipeline` modules a notebook's code cells import, as edges from the notebook's path."""
    rel = path.relative_to(root).as_posix()
    edges = []
    for index, source in notebook_code(path):
        try:
            tree = ast.parse(source, filename=f"{rel} cell {index}")
        except SyntaxError as exc:
            raise AssertionError(f"{rel}: code cell {index} is not Python once magics are skipped: {exc}") from exc
        edges += [
            Edge(rel, target, f"{rel} cell {index}", line) for target, line in imports_in(tree, "", True, modules)
        ]
    return edges


def closure(starts: list[Edge], graph: dict[str, list[Edge]]) -> dict[str, list[str]]:
    """Every module reached from `starts`, each with one import chain that reaches it (for the message)."""
    chain: dict[str, list[str]] = {}
    todo: deque[tuple[str, list[str]]] = deque((e.target, [e.source, e.target]) for e in starts)
    while todo:
        name, path = todo.popleft()
        if name in chain:
            continue
        chain[name] = path
        todo.extend((e.target, [*path, e.target]) for e in graph[name] if e.target not in chain)
    return chain


def entry_point(cmd: str) -> tuple[str, list[str]]:
    """`python3 -m pipeline.run memory` -> ("pipeline.run", ["memory"])."""
    words = shlex.split(cmd)
    assert "-m" in words, f"cmd {cmd!r}: expected `python3 -m <module> ...`"
    at = words.index("-m")
    return words[at + 1], words[at + 2 :]


def stage_code(stage: dict, root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The modules a dvc.yaml stage runs (module -> an import chain), and the other files of the package it reads.

    Those files: for the stage runner, the stage's notebooks and the runner's HTML template folder.
    """
    graph = import_graph(root)
    files = module_files(root)
    module, args = entry_point(stage["cmd"])
    assert module in files, f"cmd {stage['cmd']!r}: no module {module} under {PACKAGE}/"
    starts = [Edge("cmd", target, "cmd", 0) for target in [*_ancestors(module), module] if target in files]
    notebooks = []
    if module == f"{PACKAGE}.run":
        from pipeline.run import STAGES

        assert args and args[0] in STAGES, f"cmd {stage['cmd']!r}: not a stage of pipeline/run.py STAGES"
        for name in STAGES[args[0]].notebooks:
            path = root / "notebooks" / f"{name}.ipynb"
            notebooks.append(path.relative_to(root).as_posix())
            starts += notebook_imports(path, root, set(files))
        notebooks.append(RUNNER_TEMPLATES)  # nbconvert renders every report with it (pipeline/run.py TEMPLATES)
    return closure(starts, graph), notebooks


def covers(dep: str, path: str) -> bool:
    """A dvc dep covers a file when it is that file or a folder above it."""
    return path == dep.rstrip("/") or path.startswith(dep.rstrip("/") + "/")


def _deps(stage: dict) -> list[str]:
    return [str(d) for d in stage.get("deps") or [] if "${" not in str(d)]


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.mark.parametrize("stage_name", list(_stages()))
def test_stage_deps_list_every_module_and_notebook_it_runs(stage_name: str) -> None:
    """A stage whose deps miss a module it imports (even function-locally, even via a notebook) is stale-prone."""
    stage = _stages()[stage_name]
    files = module_files(ROOT)
    chains, notebooks = stage_code(stage, ROOT)
    deps = _deps(stage)
    missing = [
        f"{files[name].relative_to(ROOT).as_posix()} (imported: {' -> '.join(chain)})"
        for name, chain in sorted(chains.items())
        if not any(covers(d, files[name].relative_to(ROOT).as_posix()) for d in deps)
    ]
    missing += [f"{nb} (read by the stage runner)" for nb in notebooks if not any(covers(d, nb) for d in deps)]
    assert not missing, f"dvc.yaml stage '{stage_name}' misses deps:\n  " + "\n  ".join(missing)


@pytest.mark.parametrize("stage_name", list(_stages()))
def test_stage_deps_list_no_module_it_does_not_run(stage_name: str) -> None:
    """The other half of exact: a `pipeline/` dep the stage never imports would rerun it for nothing."""
    stage = _stages()[stage_name]
    files = module_files(ROOT)
    chains, notebooks = stage_code(stage, ROOT)
    used = [files[name].relative_to(ROOT).as_posix() for name in chains] + notebooks
    extra = [
        d
        for d in _deps(stage)
        if (d.startswith(f"{PACKAGE}/") or d.startswith("notebooks/")) and not any(covers(d, u) for u in used)
    ]
    assert not extra, f"dvc.yaml stage '{stage_name}' lists deps it never runs: {', '.join(extra)}"


def find_cycles(graph: dict[str, list[Edge]], allowed: set[tuple[str, str]]) -> list[list[Edge]]:
    """One cycle per strongly connected component of the import graph (Tarjan), ignoring `allowed` edges.

    Implicit edges (a module to its own parent packages) are left out: Python has already run a
    package's `__init__` by the time one of its modules runs, so they never close a loop.
    """
    edges = {
        name: [e for e in out if not e.implicit and (e.source, e.target) not in allowed] for name, out in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in edges[v]:
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in on_stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)

    cycles = []
    for component in sorted(components):
        members = set(component)
        start = component[0]  # shortest way back to `start`, inside the component (BFS)
        back: dict[str, Edge] = {}
        todo = deque([start])
        while todo and start not in back:
            v = todo.popleft()
            for e in edges[v]:
                if e.target in members and e.target not in back:
                    back[e.target] = e
                    todo.append(e.target)
        cycle = [back[start]]
        while cycle[0].source != start:
            cycle.insert(0, back[cycle[0].source])
        cycles.append(cycle)
    return cycles


def _describe(cycle: list[Edge]) -> str:
    return " -> ".join([cycle[0].source, *(f"{e.target} ({e.where}:{e.line})" for e in cycle)])


def test_no_import_cycle_in_pipeline() -> None:
    """No module of pipeline/ imports, even function-locally, one that imports it back."""
    cycles = find_cycles(import_graph(ROOT), set(KNOWN_CYCLE_EDGES))
    assert not cycles, "import cycles in pipeline/:\n  " + "\n  ".join(map(_describe, cycles))


def test_known_cycle_exceptions_still_needed() -> None:
    """An exception left in KNOWN_CYCLE_EDGES after its cycle is broken would hide the next one."""
    graph = import_graph(ROOT)
    for edge in KNOWN_CYCLE_EDGES:
        rest = set(KNOWN_CYCLE_EDGES) - {edge}
        assert any((e.source, e.target) == edge for cycle in find_cycles(graph, rest) for e in cycle), (
            f"{edge} closes no cycle any more: remove it from KNOWN_CYCLE_EDGES"
        )


# The graph builder on a package whose graph is known by hand.
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def test_import_graph_on_a_package_known_by_hand(tmp_path: Path) -> None:
    """Every import form counts, function-local ones too; TYPE_CHECKING blocks and outside packages don't."""
    _write(
        tmp_path,
        {
            "pipeline/__init__.py": '"""doc"""\n',
            "pipeline/a.py": "import os\nfrom pipeline import b\n\ndef f():\n    from pipeline.c import VALUE\n",
            "pipeline/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline import a\n"
            "else:\n    import pipeline.sub.leaf\n",
            "pipeline/c.py": "import importlib\n\ndef g():\n    return importlib.import_module('pipeline.b')\n",
            "pipeline/d.py": "def h():\n    import pipeline.a as x\n    return x\n",
            "pipeline/sub/__init__.py": "from . import leaf\nfrom .leaf import NAME\n",
            "pipeline/sub/leaf.py": "from .. import c\nNAME = 1\n",
        },
    )
    graph = import_graph(tmp_path)
    explicit = {name: sorted({(e.target, e.line) for e in out if not e.implicit}) for name, out in graph.items()}
    assert explicit == {
        "pipeline": [],
        "pipeline.a": [("pipeline.b", 2), ("pipeline.c", 5)],
        "pipeline.b": [("pipeline.sub", 5), ("pipeline.sub.leaf", 5)],
        "pipeline.c": [("pipeline.b", 4)],
        "pipeline.d": [("pipeline.a", 2)],
        "pipeline.sub": [("pipeline.sub.leaf", 1), ("pipeline.sub.leaf", 2)],
        "pipeline.sub.leaf": [("pipeline.c", 1)],
    }
    assert {e.target for e in graph["pipeline.sub.leaf"] if e.implicit} == {"pipeline", "pipeline.sub"}
    # b -> sub.leaf -> c -> b (sub joins it: b -> sub -> sub.leaf): one cycle, reported by its shortest loop
    cycles = find_cycles(graph, set())
    assert [[(e.source, e.target) for e in c] for c in cycles] == [
        [("pipeline.b", "pipeline.sub.leaf"), ("pipeline.sub.leaf", "pipeline.c"), ("pipeline.c", "pipeline.b")]
    ]
    assert find_cycles(graph, {("pipeline.c", "pipeline.b")}) == []
    reached = closure([Edge("cmd", "pipeline.d", "cmd", 0)], graph)
    assert sorted(reached) == [
        "pipeline",
        "pipeline.a",
        "pipeline.b",
        "pipeline.c",
        "pipeline.d",
        "pipeline.sub",
        "pipeline.sub.leaf",
    ]
    assert reached["pipeline.c"] == ["cmd", "pipeline.d", "pipeline.a", "pipeline.c"]


def test_notebook_cells_parsed_with_magics_skipped(tmp_path: Path) -> None:
    """A notebook's imports count; `%` / `!` lines and `%%` cells are skipped, markdown cells ignored."""
    _write(tmp_path, {"pipeline/__init__.py": "", "pipeline/a.py": "", "pipeline/b.py": "", "pipeline/c.py": ""})
    cells = [
        {"cell_type": "markdown", "source": ["from pipeline import c\n"]},
        {"cell_type": "code", "source": ["%load_ext autoreload\n", "!ls\n", "from pipeline import a as x\n"]},
        {"cell_type": "code", "source": "%%bash\nfrom pipeline import c\n"},
        {"cell_type": "code", "source": ["def f():\n", "    import pipeline.b\n"]},
    ]
    nb = tmp_path / "notebooks" / "x.ipynb"
    nb.parent.mkdir()
    nb.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    edges = notebook_imports(nb, tmp_path, set(module_files(tmp_path)))
    assert sorted({(e.target, e.where) for e in edges}) == [
        ("pipeline", "notebooks/x.ipynb cell 1"),
        ("pipeline", "notebooks/x.ipynb cell 3"),
        ("pipeline.a", "notebooks/x.ipynb cell 1"),
        ("pipeline.b", "notebooks/x.ipynb cell 3"),
    ]


def test_covers() -> None:
    """A folder dep covers the modules below it, and only those; a file dep covers that file."""
    assert covers("pipeline/traffic", "pipeline/traffic/sources.py")
    assert covers("pipeline/traffic/", "pipeline/traffic/__init__.py")
    assert not covers("pipeline/traffic", "pipeline/traffic_x.py")
    assert covers("pipeline/io.py", "pipeline/io.py")
    assert not covers("pipeline/io.py", "pipeline/io.pyc")


def test_nothing_in_pipeline_imports_the_stage_runner() -> None:
    """pipeline/run.py is the top layer (dvc's entry point); a module importing it (charts did) inverts the layers."""
    graph = import_graph(ROOT)
    importers = sorted(f"{e.where}:{e.line}" for out in graph.values() for e in out if e.target == f"{PACKAGE}.run")
    assert importers == [], f"pipeline.run imported by {', '.join(importers)}"


def test_no_module_imports_a_private_name_of_another() -> None:
    """`from pipeline.x import _name` across modules (validation used workload._connect) hides a dependency."""
    files = module_files(ROOT)
    found = []
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith(PACKAGE):
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and node.module != name
                ]
    assert found == [], "private names imported across modules: " + ", ".join(found)
