"""Security (issue 15): input strings reach the reports as text, SQL takes no string-built input, git refs are checked.

The end-to-end part runs the whole pipeline (`dvc repro`) once in a temporary copy of the project
holding three hostile inputs, then parses every report with the stdlib HTML parser:

- the sweep folder that sizes the pooled fleet is renamed `<svg onload=alert(2)>`;
- a sweep folder holds a file whose name carries backticks and an `<img onerror>` (it is skipped,
  so step 7 lists it by name);
- the traffic log's tenant `support-chat` is renamed `[click](javascript:alert(7))`; with no
  `workload.tiers.map` entry it keeps its own name, so it becomes a routing tier (model.tiers and
  the 8B sweep's manifest `tier:` follow) named in most reports.

Before the fix the payloads were live in 02, 03, 07, 10, 11, 12 and finance. This run is its own
(about 35 s): the payloads rename the sample's sweep and tier, which test_e2e_dvc's figures rely on.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from pipeline import run
from tests.conftest import ROOT, run_cmd, shared_project

BIN = Path(sys.executable).parent
SVG = "<svg onload=alert(2)>"
LINK = "[click](javascript:alert(7))"
FILE = "notes`<img src=x onerror=alert(3)>`.txt"
SWEEP = "sample_vllm_h100x4_long"  # the sweep that sizes the pooled fleet in the sample (metrics curve_source)

# Where each payload is shown after the fix (the test fails if a value is dropped rather than escaped):
# prose, tables and headings of these reports name the renamed sweep, the skipped file, the tenant's tier.
SHOWN = {
    SVG: {"07_benchmark", "10_final_curve"},
    FILE: {"07_benchmark"},
    LINK: {
        "01_workload",
        "02_hardware",
        "03_routing",
        "04_memory",
        "06_parallelism",
        "08_kv_cache",
        "09_batching",
        "10_final_curve",
        "11_fleet",
        "12_tco",
        "finance",
        "deploy",
    },
}


_run = run_cmd  # tests/conftest.py


def inject(project: Path) -> None:
    """Put the three payloads into a project copy: a sweep folder, a file name, a tenant of the traffic log."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    bench = project / "data" / "raw" / "benchmarks"
    (bench / SWEEP).rename(bench / SVG)
    (bench / "sample_vllm_h100x4_chat" / FILE).write_text("a note kept beside the results\n", encoding="utf-8")
    log = project / "data" / "raw" / "traffic" / "sample_traffic.parquet"
    table = pq.read_table(log)
    i = table.schema.get_field_index("tenant")
    tenant = pc.replace_substring(table.column("tenant"), "support-chat", LINK)
    pq.write_table(table.set_column(i, "tenant", tenant), log)
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    tiers_map = params["workload"]["tiers"]["map"]
    tiers_map.pop("support-chat")  # the tenant keeps its own name as its routing tier
    params["model"]["tiers"] = {LINK: params["model"]["tiers"].pop("small")}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    manifest = bench / "sample_vllm_l40s_8b_small" / "manifest.yaml"
    m = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    m["tier"] = LINK
    manifest.write_text(yaml.safe_dump(m, sort_keys=False), encoding="utf-8")


def build_hostile(dest: Path) -> None:
    """A project copy at `dest` with the three payloads, after a full `dvc repro`."""
    from benchmarks.pipeline_time import copy_project

    copy_project(dest)
    inject(dest)
    _run([str(BIN / "dvc"), "repro"], dest)


@pytest.fixture(scope="session")
def hostile(tmp_path_factory) -> Path:
    """The hostile project, built once per session for every worker (tests/test_browser.py and
    tests/test_deploy.py open the same reports; conftest.shared_project). Read-only."""
    return shared_project(tmp_path_factory, "hostile", build_hostile)


class Page(HTMLParser):
    """Every element with its attributes, and the page's text nodes (entities decoded; not <style>/<script>)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self._raw = 0  # inside <style> or <script>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._raw += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self._raw -= tag in ("style", "script") and self._raw > 0

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        if not self._raw:
            self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def live_payloads(page: Page) -> list[str]:
    """Elements or attributes that would run script: <svg>/<img> tags from text, on* handlers, javascript: URLs."""
    found = []
    for tag, attrs in page.tags:
        for name, value in attrs:
            v = "".join((value or "").split()).lower()
            if name.startswith("on"):
                found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action", "formaction", "xlink:href") and v.startswith("javascript:"):
                found.append(f"<{tag} {name}={value}>")
        if tag == "svg":  # charts are base64 <img> data, never inline <svg> elements
            found.append("<svg>")
    return found


@pytest.mark.e2e
def test_no_payload_is_live_in_any_report_and_each_is_shown_as_text(hostile):
    reports = sorted((hostile / "reports").glob("*.html"))
    assert [p.stem for p in reports] == sorted(nb for stage in run.STAGES.values() for nb in stage.notebooks)
    problems = []
    for path in reports:
        html = path.read_text(encoding="utf-8")
        page = parse(html)
        live = live_payloads(page)
        if live:
            problems.append(f"{path.name}: live {live}")
        for raw in ("<svg onload", "<img src=x onerror", 'href="javascript:', "href='javascript:"):
            if raw in html:
                problems.append(f"{path.name}: raw {raw!r}")
        text = "".join(page.text)
        for payload, where in SHOWN.items():
            if path.stem in where and payload not in text:
                problems.append(f"{path.name}: {payload!r} is not shown as text")
    assert not problems, "\n".join(problems)


@pytest.mark.e2e
def test_the_hostile_names_are_what_the_metrics_hold(hostile):
    """The payloads really flowed: the pooled curve is the renamed sweep, the tenant is a routing tier."""
    op = json.loads((hostile / "metrics" / "operating_point.json").read_text())
    assert op["curve_source"]["sweep"] == SVG
    assert LINK in json.loads((hostile / "metrics" / "fleet.json").read_text())["per_tier"]
    skipped = op.get("skipped_files") or {}
    assert any(FILE in f for files in skipped.values() for f in files), skipped


# --- report text: the helper every notebook cell uses -------------------------------------------


def test_txt_values_are_text_in_any_markdown_context():
    from pipeline.text import to_html, txt

    html = to_html(
        f"### {txt(LINK)}\n\n**Plan: {txt(LINK)}** on `{txt(FILE)}`; curve {txt(SVG)}.\n\n- `{txt('a`b')}`: {txt('<b>x</b>')}"
    )
    page = parse(html)
    assert not live_payloads(page) and not any(tag in ("a", "img", "svg", "b") for tag, _ in page.tags)
    text = "".join(page.text)
    for value in (LINK, FILE, SVG, "a`b", "<b>x</b>"):
        assert value in text, value
    # the trusted prose around the values is still Markdown: a heading, bold, code spans, a list
    assert [t for t, _ in page.tags] == ["h3", "p", "strong", "code", "ul", "li", "code"]
    assert "\ue000" not in html and "\ue001" not in html


def test_a_forged_token_inside_a_value_stays_text():
    from pipeline.text import to_html, txt

    forged = "\ue000" + b"<svg onload=alert(1)>".hex() + "\ue001"
    html = to_html(f"x {txt(forged)}")
    assert "<svg" not in html and "&lt;svg" not in html and "\ufffd" in html


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_renders_composed_text_as_markdown(nb):
    """Markdown() takes only constant prose; anything composed goes through text.md() with txt() around input strings."""
    bad = []
    for i, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            markdown = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Markdown"
            if markdown and not (len(node.args) == 1 and isinstance(node.args[0], ast.Constant)):
                bad.append(f"cell {i}: {ast.unparse(node)[:80]}")
    assert not bad, "\n".join(bad)


# --- SQL: no value or path is spliced into DuckDB SQL --------------------------------------------

SQLISH = re.compile(
    r"\b(SELECT|FROM|WHERE|CASE|WHEN|THEN|COPY|DESCRIBE|CREATE|INSERT|ATTACH|PRAGMA|TRY_CAST|CAST)\b|read_(parquet|csv|json)\("
)
LITERAL_HELPER = r"sql_(str|lit|literal|quote|string)"
SQL_CALLS = {"execute", "executemany", "sql", "query", "from_query"}
# Interpolated into SQL: identifiers (sql_ident), and SQL fragments and numbers the code builds itself.
# Never a string value or a path; those are bound parameters.
# Reviewed: interpolations whose names look like values but are identifiers quoted by the module.
REVIEWED = {("pipeline/quality.py", "names")}  # ", ".join(_quote(c) for c in shown): quoted column names
IDENT_HELPERS = ("sql_ident(", "_quote(")
VALUE_LIKE = re.compile(r"(path|file|name|label|source|tier|tenant|model|gpu|str\(|as_posix|repr\()", re.IGNORECASE)


def _sql_problems(path: Path, base: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(base).as_posix()
    out = []

    def sqlish(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(SQLISH.search(node.value))

    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.FunctionDef) and re.fullmatch(LITERAL_HELPER, node.name):
            out.append(f"{where}: {node.name}() builds SQL string literals; bind the value as a parameter")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and re.fullmatch(LITERAL_HELPER, node.func.id)
        ):
            out.append(f"{where}: {node.func.id}() call: a value as a SQL literal; bind it as a parameter")
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            text = "".join(p.value for p in parts if isinstance(p, ast.Constant))
            if not SQLISH.search(text):
                continue
            for i, part in enumerate(parts):
                if not isinstance(part, ast.FormattedValue):
                    continue
                src = ast.unparse(part.value)
                before = parts[i - 1].value if i and isinstance(parts[i - 1], ast.Constant) else ""
                if before.endswith(("'", '"')):
                    out.append(f"{where}: a value quoted into SQL: ...{before[-12:]}{{{src}}}")
                elif part.conversion != -1:
                    out.append(f"{where}: {{{src}!{chr(part.conversion)}}} in SQL")
                elif not src.startswith(IDENT_HELPERS) and (rel, src) not in REVIEWED and VALUE_LIKE.search(src):
                    out.append(f"{where}: {{{src}}} looks like a value or a path spliced into SQL")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and sqlish(node.left):
            out.append(f"{where}: SQL built with %")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "format" and sqlish(node.func.value):
                out.append(f"{where}: SQL built with .format()")
            if node.func.attr in SQL_CALLS and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add | ast.Mod):
                    out.append(f"{where}: SQL passed to {node.func.attr}() is built with {type(arg.op).__name__}")
    return out


def test_no_sql_is_built_from_strings_in_the_pipeline():
    files = sorted((ROOT / "pipeline").rglob("*.py"))
    problems = [p for f in files for p in _sql_problems(f)]
    assert not problems, "\n".join(problems)


def test_the_sql_grep_catches_the_old_patterns(tmp_path):
    """The grep is able to fail: each pattern it forbids, once, in a scratch module."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        'def sql_str(v):\n    return "\'" + v + "\'"\n'
        "def a(con, out):\n    con.execute(f\"SELECT 1 FROM read_parquet('{out.as_posix()}')\")\n"
        'def b(con, path):\n    con.execute(f"SELECT 1 FROM read_parquet({sql_str(str(path))})")\n'
        "def c(con, name):\n    con.execute(\"SELECT * FROM t WHERE x = '%s'\" % name)\n"
        "def d(con, name):\n    con.execute(\"SELECT * FROM t WHERE x = '{}'\".format(name))\n"
        'def e(con, tier):\n    con.execute("SELECT * FROM t WHERE x = " + tier)\n'
        'def f(con, tier):\n    con.execute(f"SELECT * FROM t WHERE x = {tier!r}")\n',
        encoding="utf-8",
    )
    joined = "\n".join(_sql_problems(bad, tmp_path))
    for expected in (
        "sql_str()",
        "a value quoted",
        "looks like a value",
        "built with %",
        ".format()",
        "built with Add",
        "!r",
    ):
        assert expected in joined, (expected, joined)


def test_a_quote_in_the_production_window_path_is_data_not_sql(tmp_path):
    """The parquet that `sizing validate` writes sits under a folder named with quotes and a statement: read as a path."""
    from pipeline import validation

    window = tmp_path / "w"
    window.mkdir()
    (window / "requests.csv").write_text(
        "arrival_s,input_tokens,output_tokens,ttft_ms,e2e_ms\n0,10,11,100,200\n1,10,11,200,400\n2,10,11,300,600\n"
    )
    evil = tmp_path / "x'); COPY (SELECT 42 AS pwned) TO 'pwned.csv' (FORMAT csv); SELECT * FROM read_parquet('x"
    evil.mkdir()
    log = validation.production_log(window, tmp_path, out=evil / "production.parquet")
    assert log["requests"] == 3 and log["ttft_p99_ms"] == pytest.approx(298.0)  # 200 + 0.98 x (300 - 200)
    assert not list(tmp_path.rglob("pwned*")) and not (ROOT / "pwned.csv").exists()


def test_tier_names_and_folders_with_quotes_are_values_not_sql(tmp_path):
    """A tenant named with a quote and a log in a folder named with a quote profile like any other."""
    from tests.conftest import profile_of, write_csv

    name = "o'brien' OR '1'='1"
    rows = [f"{i},{10 + i},5,{name if i % 2 else 'plain'}" for i in range(40)]
    log = write_csv(tmp_path / "it's here" / "log.csv", "arrival_s,input_tokens,output_tokens,tenant", rows)
    prof, _ = profile_of(log, tmp_path)
    from pipeline import workload

    out = tmp_path / "out" / "requests.parquet"
    profile = workload.compute_profile(out, workload.ProfileSettings())
    assert prof["requests"] == 40 and set(profile["tiers"]) == {name, "plain"}
    assert profile["tiers"][name]["requests"] == 20 and profile["tiers"]["plain"]["requests"] == 20


# --- git: report.previous is a revision name, never an option -------------------------------------


def _git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    (repo / "metrics" / "tco.json").write_text('{"monthly_usd": 1234.5}', encoding="utf-8")
    (repo / "metrics" / "fleet.json").write_text('{"total_gpus": 7}', encoding="utf-8")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for cmd in (["git", "init", "-q"], [*git, "add", "metrics"], [*git, "commit", "-qm", "q3"], ["git", "tag", "q3"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    return repo


@pytest.mark.parametrize(
    "ref, why",
    [
        ("--output={out}", "starts with '-'"),
        ("-p", "starts with '-'"),
        ("q3 --output={out}", "whitespace or control"),
        ("q3\n", "whitespace or control"),
        ("q3..HEAD", "'..'"),
        ("q3:metrics/tco.json", "characters a git tag"),
    ],
)
def test_an_option_or_a_malformed_ref_is_a_clear_error_and_writes_nothing(tmp_path, ref, why):
    from pipeline import report
    from pipeline.errors import InputError

    repo = _git_repo(tmp_path)
    # `git show --output=DIR/out:metrics/workload.json` would write into this folder (the old code did)
    (tmp_path / "out:metrics").mkdir()
    ref = ref.format(out=tmp_path / "out")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError, match=re.escape(why)) as err:
        report.previous_metrics(ref, repo)
    assert str(err.value).startswith(f"params.yaml: report.previous = {ref!r} is not a folder and not a git revision")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not list((tmp_path / "out:metrics").iterdir())


def test_a_real_git_tag_and_a_commit_still_work(tmp_path):
    from pipeline import report

    repo = _git_repo(tmp_path)
    prev, where = report.previous_metrics("q3", repo)
    assert where == "git revision q3" and prev == {"tco": {"monthly_usd": 1234.5}, "fleet": {"total_gpus": 7}}
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert report.previous_metrics(sha, repo)[0] == prev
    assert report.previous_metrics("HEAD~0", repo)[0] == prev


def test_a_bad_ref_stops_the_first_stage_through_params(tmp_path):
    """validate_all checks report.previous, so a bad one stops any stage before it writes."""
    from pipeline import params
    from pipeline.errors import InputError

    data = params.load(ROOT / "params.yaml")
    data["report"]["previous"] = f"--output={tmp_path / 'x'}"
    with pytest.raises(InputError, match="starts with '-'"):
        params.validate_all(data, ROOT)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "data, what",
    [
        (b'{"monthly_usd": 1', "not valid JSON at line 1, column 18"),
        (b'{"provider": "\xff"}', "byte 14 is not UTF-8"),
        (b"[1, 2]", "holds a JSON list, not an object"),
    ],
)
def test_malformed_previous_json_names_the_file_and_the_ref(tmp_path, data, what):
    from pipeline import report
    from pipeline.errors import InputError

    folder = tmp_path / "q2"
    folder.mkdir()
    (folder / "tco.json").write_bytes(data)
    with pytest.raises(InputError, match=re.escape(what)) as err:
        report.previous_metrics(str(folder), tmp_path)
    assert str(err.value).startswith(f"{folder / 'tco.json'}: ") and f"report.previous = {str(folder)!r}" in str(
        err.value
    )
    repo = _git_repo(tmp_path)
    (repo / "metrics" / "tco.json").write_bytes(data)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "commit", "-qam", "bad"], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "tag", "bad"], cwd=repo, check=True, capture_output=True)
    with pytest.raises(InputError, match=re.escape(what)) as err:
        report.previous_metrics("bad", repo)
    assert str(err.value).startswith("metrics/tco.json at git revision bad: ")
