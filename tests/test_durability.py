"""Nothing half-written, nothing lost (issue 15): stage transactions, persisted outputs, orphan temp files,
and step 13 without a production window or with scrapes only.

The first tests use real files and real processes (a writer killed with SIGKILL); the e2e ones run
`dvc repro` for real in a temporary copy of the project.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import io, run
from pipeline.errors import InputError
from tests.conftest import ROOT, built_sample, put_back, run_cmd, save_outputs

BIN = Path(sys.executable).parent


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    """A separate Python process (as the notebook kernel is) running `code`; it prints one line when ready."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _killed(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL: no finally block, no atexit
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


WRITER = """
    import sys, time
    from pipeline import io
    with io.atomic_path(sys.argv[1], ".parquet") as tmp:
        tmp.write_bytes(b"x" * 100_000)
        print(tmp, flush=True)
        time.sleep(120)
"""


def test_a_write_killed_with_sigkill_leaves_an_orphan_that_the_next_write_deletes(tmp_path):
    target = tmp_path / "data" / "interim" / "requests.parquet"
    killed = _python(WRITER, str(target))
    orphan = Path(killed.stdout.readline().strip())
    _killed(killed)
    assert orphan.exists() and orphan.stat().st_size == 100_000 and not target.exists()
    folder = target.parent
    older = folder / ".requests.parquet.k2j3h4g5.parquet.tmp"  # the naming before the pid was in it
    nested = folder / f"..requests.parquet.{killed.pid}.ab12cd34.parquet.tmp.{killed.pid}.zz99yy88.parquet.tmp"
    users = [
        folder / "requests.parquet.tmp",  # no leading dot: not ours
        folder / ".requests.parquet.notes",  # not .tmp
        folder / ".curves.parquet.1.abcdefgh.parquet.tmp",  # another output's
        folder / "notes.tmp",
    ]
    for p in (older, nested, *users):
        p.write_text("keep me?")
    live = _python(WRITER, str(target))  # a writer still at work: its temp file stays
    live_tmp = Path(live.stdout.readline().strip())
    try:
        io.write_text(target, "new\n")
        assert target.read_text() == "new\n"
        assert not orphan.exists() and not older.exists() and not nested.exists()
        assert all(p.read_text() == "keep me?" for p in users)
        assert live_tmp.exists()
        left = sorted(p.name for p in folder.iterdir())
        assert left == sorted(["requests.parquet", live_tmp.name, *(p.name for p in users)])
    finally:
        _killed(live)


def _outputs(root: Path) -> dict[str, Path]:
    out = {
        "metrics/a.json": root / "metrics" / "a.json",
        "reports/b.html": root / "reports" / "b.html",
        "data/interim/c.parquet": root / "data" / "interim" / "c.parquet",
    }
    io.write_text(out["metrics/a.json"], '{"a": "old"}\n')
    io.write_text(out["reports/b.html"], "<p>old b</p>\n")
    return out  # c.parquet does not exist before the stage


def _state(paths: dict[str, Path]) -> dict[str, tuple[bytes, int] | None]:
    return {k: (p.read_bytes(), p.stat().st_mtime_ns) if p.exists() else None for k, p in paths.items()}


def test_a_stage_that_fails_late_puts_every_output_back_and_removes_new_ones(tmp_path):
    out = _outputs(tmp_path)
    before = _state(out)
    kernel = (
        "import sys; from pipeline import io; io.write_text(sys.argv[1], 'new a'); io.write_text(sys.argv[2], 'new c')"
    )
    with pytest.raises(InputError, match="notebook 3 of 3"), io.stage_transaction(tmp_path, "report", list(out)):
        # notebooks 1-2 wrote their outputs, from another process (as the kernel does) ...
        args = [str(out["metrics/a.json"]), str(out["data/interim/c.parquet"])]
        subprocess.run([sys.executable, "-c", kernel, *args], cwd=ROOT, check=True)
        assert out["metrics/a.json"].read_text() == "new a"
        raise InputError("notebook 3 of 3 failed")  # ... and notebook 3 fails
    assert _state(out) == before  # bytes and mtimes: the very files that were there
    assert not out["data/interim/c.parquet"].exists()
    assert not (tmp_path / io.JOURNAL / "report").exists()


def test_a_stage_that_succeeds_keeps_its_new_outputs_and_drops_the_journal(tmp_path):
    out = _outputs(tmp_path)
    with io.stage_transaction(tmp_path, "report", list(out)):
        io.write_text(out["metrics/a.json"], "new a")
        io.write_text(out["data/interim/c.parquet"], "new c")
    assert out["metrics/a.json"].read_text() == "new a" and out["data/interim/c.parquet"].read_text() == "new c"
    assert out["reports/b.html"].read_text() == "<p>old b</p>\n"
    assert not (tmp_path / io.JOURNAL / "report").exists()


STAGE = """
    import sys, time
    from pathlib import Path
    from pipeline import io
    root = Path(sys.argv[1])
    with io.stage_transaction(root, "report", ["metrics/a.json", "reports/b.html", "data/interim/c.parquet"]):
        io.write_text(root / "metrics" / "a.json", "new a")
        io.write_text(root / "data" / "interim" / "c.parquet", "new c")
        print("written", flush=True)
        time.sleep(120)
"""


def test_a_stage_killed_mid_way_is_rolled_back_by_the_next_run_and_a_live_one_is_left_alone(tmp_path):
    out = _outputs(tmp_path)
    before = _state(out)
    stage = _python(STAGE, str(tmp_path))
    assert stage.stdout.readline().strip() == "written"
    try:  # while it runs: nobody rolls it back, and a second run of the same stage is refused
        assert io.recover(tmp_path) == []
        assert out["metrics/a.json"].read_text() == "new a"
        with (
            pytest.raises(InputError, match="stage 'report' is already running"),
            io.stage_transaction(tmp_path, "report", list(out)),
        ):
            pass
    finally:
        _killed(stage)
    assert out["metrics/a.json"].read_text() == "new a"  # half-written, until the next run
    with io.stage_transaction(tmp_path, "fleet", []):  # any next stage run rolls it back first
        assert _state(out) == before
    assert not (tmp_path / io.JOURNAL / "report").exists()


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_output_in_dvc_yaml_persists_so_dvc_never_deletes_the_last_good_one():
    outs = 0
    for name, stage in _dvc_stages().items():
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key) or []:
                assert isinstance(item, dict), (name, item)
                (path, opts), *_ = item.items()
                assert (opts or {}).get("persist") is True, (name, path)
                outs += 1
    assert outs >= 22


def test_the_runner_journals_every_report_and_metrics_file_a_stage_writes():
    for name, stage in run.STAGES.items():
        outputs = run.stage_outputs(ROOT, name)
        for nb in stage.notebooks:
            assert f"reports/{nb}.html" in outputs, (name, nb)
        assert any(o.startswith("metrics/") for o in outputs), name


def test_no_production_window_writes_the_verdict_and_an_empty_production_table(tmp_path):
    from pipeline import params, validation
    from pipeline.layout import Layout
    from pipeline.stages import validation as validation_stage

    sections = {name: params.validate_section(name, None) for name in validation.SECTIONS}
    sections["validation"] = params.validate_section("validation", {"source": None})
    result = validation_stage.run(sections, Layout(tmp_path))
    written = json.loads((tmp_path / "metrics" / "validation.json").read_text())
    assert written == result and result["status"] == "no production window"
    assert result["recharacterize"] is False and result["metrics"] == {} and result["window"] is None
    table = pq.read_table(tmp_path / "data" / "interim" / "production.parquet")
    assert table.num_rows == 0 and "ttft_ms" in table.schema.names
    assert validation.table_text(result).startswith("no production window: validation.source is null")


# --- end to end: dvc repro for real in a copy of the project ---------------------------------------


_run = run_cmd  # tests/conftest.py


def _repro(project: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([str(BIN / "dvc"), "repro"], project, check)


def _snapshot(project: Path) -> dict[str, tuple[bytes, int]]:
    """Every output file (metrics, reports, interim tables): bytes and mtime."""
    files = []
    for folder in ("metrics", "reports", "data/interim"):
        files += [p for p in (project / folder).iterdir() if p.is_file() and p.name != ".gitignore"]
    return {str(p.relative_to(project)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def _back_to_good(project: Path, before: dict[str, tuple[bytes, int]], lock: bytes) -> None:
    """With the inputs put back, dvc finds the outputs it recorded: no output stage reruns, nothing moves.

    (The `params` stage, which checks the whole params.yaml and writes nothing, reruns on the restored file.)
    """
    proc = _repro(project)
    assert set(re.findall(r"Running stage '(\w+)'", proc.stdout)) <= {"params"}, proc.stdout
    assert _snapshot(project) == before and (project / "dvc.lock").read_bytes() == lock


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _set_params(project: Path, edit) -> str:
    original = (project / "params.yaml").read_text()
    data = yaml.safe_load(original)
    edit(data)
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return original


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A copy of the project after one successful `dvc repro`: the last good outputs (this module's own copy of
    the session's sample run)."""
    return built_sample(tmp_path_factory, tmp_path_factory.mktemp("durable") / "project")


@pytest.mark.e2e
def test_a_failing_repro_keeps_the_last_good_outputs_and_dvc_agrees(good):
    """A single-row log stops the workload stage: every output and dvc.lock stay as the good run left them."""
    before, lock = _snapshot(good), (good / "dvc.lock").read_bytes()
    (good / "bad").mkdir()  # outside data/raw, so that removing it leaves every dep as it was
    (good / "bad" / "one.csv").write_text("arrival_s,input_tokens,output_tokens\n0,5,5\n")
    original = _set_params(good, lambda d: d["workload"].update(source="bad/one.csv"))
    try:
        proc = _repro(good, check=False)
        assert "Running stage 'workload'" in proc.stdout
        assert "one.csv" in _one_error_line(proc)
        assert _snapshot(good) == before
    finally:
        (good / "params.yaml").write_text(original)
        shutil.rmtree(good / "bad")
    _back_to_good(good, before, lock)


FAIL_CELL = {
    "cell_type": "code",
    "execution_count": None,
    "id": "cell-fail",
    "metadata": {},
    "outputs": [],
    "source": ["from pipeline.errors import InputError\n", 'raise InputError("notebook 3 of 3 fails late")'],
}


@pytest.mark.e2e
def test_a_stage_that_fails_in_its_last_notebook_changes_no_output(good):
    """The report stage: steps 12 and finance ran on a new price and wrote; scenarios fails: nothing changed."""
    before, lock = _snapshot(good), (good / "dvc.lock").read_bytes()
    nb_path = good / "notebooks" / "scenarios.ipynb"
    nb_text = nb_path.read_text(encoding="utf-8")
    nb = json.loads(nb_text)
    nb["cells"].append(FAIL_CELL)
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    original = _set_params(good, lambda d: d["tco"].update(prices={"H100-SXM": 2.0}))  # 12 and finance would change
    try:
        proc = _repro(good, check=False)
        assert "Running stage 'report'" in proc.stdout
        assert _one_error_line(proc) == "error: notebook 3 of 3 fails late"
        assert _snapshot(good) == before
        assert not (good / io.JOURNAL / "report").exists()
    finally:
        (good / "params.yaml").write_text(original)
        nb_path.write_text(nb_text, encoding="utf-8")
    _back_to_good(good, before, lock)


@pytest.mark.e2e
def test_a_production_log_without_ttft_leaves_the_last_production_table(good):
    """Step 13 reads the log (writing production.parquet) before it finds no ttft_ms: the old table stays."""
    before, lock = _snapshot(good), (good / "dvc.lock").read_bytes()
    window = good / "window-no-ttft"
    window.mkdir()
    (window / "requests.csv").write_text(
        "arrival_s,input_tokens,output_tokens,e2e_ms\n" + "".join(f"{i},100,20,{900 + i}\n" for i in range(50))
    )
    original = _set_params(good, lambda d: d["validation"].update(source="window-no-ttft"))
    try:
        proc = _repro(good, check=False)
        assert "Running stage 'validation'" in proc.stdout
        assert "requests.csv: no ttft_ms column" in _one_error_line(proc)
        assert _snapshot(good) == before
    finally:
        (good / "params.yaml").write_text(original)
        shutil.rmtree(window)
    _back_to_good(good, before, lock)


@pytest.mark.e2e
def test_a_scrapes_only_window_passes_dvc_repro_with_an_empty_production_table(good):
    saved = save_outputs(good)
    window = good / "data" / "raw" / "production-scrapes"
    shutil.copytree(good / "data" / "raw" / "production" / "scrapes", window / "scrapes")
    original = _set_params(good, lambda d: d["validation"].update(source="data/raw/production-scrapes"))
    try:
        proc = _repro(good)
        assert "Running stage 'validation'" in proc.stdout and "Running stage 'report'" in proc.stdout
        table = pq.read_table(good / "data" / "interim" / "production.parquet")
        assert table.num_rows == 0
        assert table.schema.names == ["arrival_s", "input_tokens", "output_tokens", "ttft_ms", "e2e_ms"]
        v = json.loads((good / "metrics" / "validation.json").read_text())
        assert v["status"] == "compared" and v["inputs"]["log"] is None
        # the sample scrapes: 7 vLLM servers, 7,597 requests counted by request_success_total
        assert v["window"]["replicas"] == 7 and v["window"]["requests"] == 7597
        assert "histograms over the scrape window" in v["metrics"]["ttft_p99_ms"]["source"]
    finally:
        (good / "params.yaml").write_text(original)
        shutil.rmtree(window)
    put_back(good, saved)  # the good outputs again, byte for byte (dvc status agrees), without a second repro


@pytest.mark.e2e
def test_no_production_window_yet_says_so_and_the_pipeline_reaches_the_finance_report(good):
    """validation.source: null. Also: orphan temp files of a killed write beside the outputs are deleted."""
    interim = good / "data" / "interim"
    orphan = interim / ".production.parquet.q7w8e9r0.parquet.tmp"
    orphan.write_bytes(b"\0" * 4096)
    mine = [interim / ".production.parquet.keep", interim / "production.parquet.tmp"]
    for p in mine:
        p.write_text("a user's file")
    _set_params(good, lambda d: d["validation"].update(source=None))
    assert "source: null" in (good / "params.yaml").read_text()
    proc = _repro(good)
    assert "Running stage 'validation'" in proc.stdout and "Running stage 'report'" in proc.stdout
    v = json.loads((good / "metrics" / "validation.json").read_text())
    assert v["status"] == "no production window"
    assert (v["recharacterize"], v["reasons"], v["metrics"], v["revisit"], v["window"]) == (False, [], {}, [], None)
    html = (good / "reports" / "13_validation.html").read_text()
    assert "No production window yet" in html and "Re-characterize: yes" not in html
    finance = (good / "reports" / "finance.html").read_text()
    assert "<title>" in finance and "Production does not behave like the benchmark" not in finance
    assert (good / "reports" / "scenarios.html").exists()
    assert pq.read_table(interim / "production.parquet").num_rows == 0
    assert not orphan.exists() and all(p.read_text() == "a user's file" for p in mine)
    assert not (good / io.JOURNAL / "validation").exists()
    assert "Running stage" not in _repro(good).stdout  # and it stays up to date
