"""Ingest of a log already in order skips the sort and writes the same bytes (issue 15, speed), and ingest
progress goes to stderr: rows, rate and ETA, as plain lines when stderr is not a terminal (issue 16)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
from forkrun import run_module

from pipeline import traffic
from tests.conftest import ROOT, write_csv

GENERIC = {"arrival_s": "ts", "input_tokens": "prompt", "output_tokens": "completion", "tenant": "tenant"}


def _log(path: Path, rows: int, order: str, zero_every: int = 0) -> Path:
    """`rows` requests with strictly increasing arrivals (10 ms apart, plus up to 1 ms jitter), 4 tenants;
    `order`: 'ts' (already in order) or 'shuffled'; every `zero_every`-th request has 0 output tokens."""
    completion = "1 + (hash(i * 13) % 400)::BIGINT"
    if zero_every:
        completion = f"CASE WHEN i % {zero_every} = 3 THEN 0 ELSE {completion} END"
    sql = (
        "SELECT 1767571200 + i * 0.01 + (hash(i) % 1000) / 1e6 AS ts, 1 + (hash(i * 7) % 3000)::BIGINT AS prompt, "
        f"{completion} AS completion, 't' || (hash(i * 3) % 4)::VARCHAR AS tenant FROM range({rows}) r(i) "
        f"ORDER BY {'ts' if order == 'ts' else 'hash(i * 31)'}"
    )
    duckdb.connect().execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    return path


def _ingest(src: Path, out: Path, **kw) -> traffic.Ingested:
    return traffic.ingest(traffic.open_source(str(src)), out, columns=GENERIC, progress=None, **kw)


def test_a_log_in_order_is_written_as_read_with_the_bytes_of_the_sorted_write(tmp_path):
    """1.05 million rows: nine row groups. The ordered log skips the sort; its shuffled copy is sorted (as every
    log was before): the two files are byte-identical, and hold the rows in (arrival, input, output, tenant) order."""
    ordered = _ingest(_log(tmp_path / "ordered.parquet", 1_050_000, "ts"), tmp_path / "a.parquet")
    shuffled = _ingest(_log(tmp_path / "shuffled.parquet", 1_050_000, "shuffled"), tmp_path / "b.parquet")
    assert ordered.written == "as read (already in order)" and shuffled.written == "sorted"
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    con = duckdb.connect()
    groups = con.execute(
        f"SELECT any_value(row_group_num_rows) FROM parquet_metadata('{tmp_path / 'a.parquet'}') GROUP BY row_group_id"
    )
    assert (
        sorted(n for (n,) in groups.fetchall()) == [66_960] + [122_880] * 8
    )  # 8 x 60 vectors of 2,048 rows, then the rest
    out_of_order = con.execute(
        f"SELECT count(*) FROM (SELECT arrival_s < lag(arrival_s) OVER (ORDER BY file_row_number) AS down "
        f"FROM read_parquet('{tmp_path / 'a.parquet'}', file_row_number = true)) WHERE down"
    ).fetchall()[0][0]
    assert out_of_order == 0
    assert ordered.rows_written == shuffled.rows_written == 1_050_000 and ordered.duplicate_rows == 0


def test_failed_requests_in_an_ordered_log_still_give_the_sorted_bytes(tmp_path):
    """Rows with 0 output tokens are left out of the write, which would move the row-group boundaries of a
    write as read: such a log is sorted (one write), and its bytes are those of its shuffled copy."""
    kw = {"max_failed_share": 0.5}
    ordered = _ingest(_log(tmp_path / "o.parquet", 1_050_000, "ts", zero_every=50), tmp_path / "a.parquet", **kw)
    shuffled = _ingest(_log(tmp_path / "s.parquet", 1_050_000, "shuffled", zero_every=50), tmp_path / "b.parquet", **kw)
    assert ordered.written == shuffled.written == "sorted"
    assert ordered.failed_rows == shuffled.failed_rows == 21_000  # i % 50 == 3 for i < 1,050,000
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_ties_and_duplicates_in_order_and_out_of_order(tmp_path):
    """Counted by hand: rows 2-3 and 5-6-7 repeat (arrival, input, output), so 3 duplicate rows whether the log
    is in order (adjacent repeats) or not (count DISTINCT). Ties on arrival with a tenant column cannot be proven
    in order from the numbers alone: sorted; without another column they can: written as read."""
    rows = ["100.0,5,7", "100.5,3,1", "100.5,4,1", "100.5,4,1", "101.0,1,1", "102.0,9,9", "102.0,9,9", "102.0,9,9"]
    header = "ts,prompt,completion"
    cols = {k: v for k, v in GENERIC.items() if k != "tenant"}
    in_order = traffic.ingest(
        traffic.open_source(str(write_csv(tmp_path / "in.csv", header, rows))), tmp_path / "a.parquet", columns=cols
    )
    shuffled = rows[::-1]
    reversed_ = traffic.ingest(
        traffic.open_source(str(write_csv(tmp_path / "rev.csv", header, shuffled))),
        tmp_path / "b.parquet",
        columns=cols,
    )
    assert in_order.duplicate_rows == reversed_.duplicate_rows == 3
    assert in_order.written == "as read (already in order)" and reversed_.written == "sorted"
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    with_tenant = [f"{r},t{9 - i}" for i, r in enumerate(rows)]  # tenants descend within the ties
    ing = traffic.ingest(
        traffic.open_source(str(write_csv(tmp_path / "t.csv", header + ",tenant", with_tenant))),
        tmp_path / "c.parquet",
        columns=GENERIC,
    )
    assert ing.written == "sorted" and ing.duplicate_rows == 3
    got = duckdb.connect().execute(f"SELECT * FROM '{tmp_path / 'c.parquet'}'").fetchall()
    expected = sorted((float(a), int(b), int(c), t) for a, b, c, t in (r.split(",") for r in with_tenant))
    assert got == expected


def test_plain_progress_lines_with_rows_rate_and_eta_off_a_terminal():
    """Off a terminal each pass prints at most one line per interval (here: every update) and its total."""
    out = io.StringIO()  # not a TTY
    progress = traffic.Progress(stream=out, every_s=0.0)
    bar = progress.track("writing", 1_000)
    bar.update(250)
    bar.close(1_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("  writing: 250 of 1,000 rows (25%), ") and " rows/s, about " in lines[0]
    assert lines[0].endswith(" s left")
    assert lines[1].startswith("  writing: 1,000 rows in ") and lines[1].endswith(" rows/s)")
    quiet = io.StringIO()
    traffic.Progress(enabled=False, stream=quiet).track("writing", 10).close(10)
    assert quiet.getvalue() == ""


def test_sizing_profile_reports_progress_on_a_non_tty_stderr_and_keeps_stdout_json(tmp_path):
    """`sizing profile --json` with stderr a pipe: plain lines (no bar, no carriage return) with the rows and
    rate of each pass; stdout is the JSON profile alone, with no rate or time in it."""
    rows = [f"{1767571200 + i * 0.5:.1f},{10 + i % 50},{5 + i % 20}" for i in range(3000)]
    log = write_csv(tmp_path / "log.csv", "arrival_s,input_tokens,output_tokens", rows)
    proc = run_module(["pipeline", "profile", str(log), "--json", "--tier-column", "none"], ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    profile = json.loads(proc.stdout)
    assert profile["requests"] == 3000
    assert "rows/s" not in proc.stdout and "\r" not in proc.stderr
    for step in ("reading", "validating", "writing"):
        line = next((x for x in proc.stderr.splitlines() if x.startswith(f"  {step}: ")), None)
        assert line is not None, proc.stderr
        assert line.startswith(f"  {step}: 3,000 rows in ") and line.endswith(" rows/s)"), line
