"""Bad input: one clear message (file, column, count, examples, what was expected), nothing written."""

from __future__ import annotations

import pytest
from forkrun import run_module

from pipeline import cli
from pipeline.errors import InputError
from tests.conftest import ROOT, profile_of, write_csv

HEADER = "arrival_s,input_tokens,output_tokens"


def _fails(tmp_path, path, **kw) -> str:
    with pytest.raises(InputError) as err:
        profile_of(path, tmp_path, **kw)
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), "a failed ingest left files behind"
    return str(err.value)


def test_missing_column_names_it_and_lists_columns(tmp_path):
    path = write_csv(tmp_path / "log.csv", "arrival_s,input_tokens,completion", ["0,5,5"])
    msg = _fails(tmp_path, path, fmt="generic")
    assert "missing column 'output_tokens' (output_tokens)" in msg
    assert "The file has columns: arrival_s, input_tokens, completion" in msg
    assert "workload.columns" in msg


def test_negative_and_zero_input_tokens(tmp_path):
    rows = ["0,5,5", "1,-3,5", "2,0,5", "3,7,-1"]
    msg = _fails(tmp_path, write_csv(tmp_path / "neg.csv", HEADER, rows))
    assert "log" in msg and "neg.csv" in msg
    assert "column 'input_tokens': 2 of 4 rows are below 1" in msg
    assert "Examples: '-3', '0'" in msg
    assert "column 'output_tokens': 1 of 4 rows are below 0" in msg
    assert msg.endswith("No outputs were written.")


def test_fractional_tokens_are_not_integers(tmp_path):
    msg = _fails(tmp_path, write_csv(tmp_path / "f.csv", HEADER, ["0,5.5,5", "1,6,5"]))
    assert (
        "column 'input_tokens': 1 of 2 rows are not whole numbers; expected an integer token count. Examples: '5.5'"
        in msg
    )


def test_garbage_timestamp(tmp_path):
    rows = ["2026-01-05 00:00:00,5,5", "yesterday,5,5", "2026-01-05 00:00:02,5,5"]
    msg = _fails(tmp_path, write_csv(tmp_path / "ts.csv", HEADER, rows), timestamp_unit="datetime")
    assert "column 'arrival_s': 1 of 3 rows are empty or cannot be parsed as a date-time" in msg
    assert "'yesterday'" in msg and "(in ts.csv)" in msg


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "the file is empty" in _fails(tmp_path, empty)
    header_only = write_csv(tmp_path / "h.csv", HEADER, [])
    assert "has a header but no rows" in _fails(tmp_path, header_only)


def test_truncated_last_line_csv(tmp_path):
    path = tmp_path / "trunc.csv"
    path.write_text(HEADER + "\n0,5,5\n1,6,6\n2,7")
    msg = _fails(tmp_path, path)
    assert "column 'output_tokens': 1 of 3 rows are empty or not numbers" in msg
    assert "<empty>" in msg


def test_truncated_last_line_jsonl(tmp_path):
    path = tmp_path / "trunc.jsonl"
    path.write_text('{"arrival_s": 0, "input_tokens": 5, "output_tokens": 5}\n{"arrival_s": 1, "input_tok')
    msg = _fails(tmp_path, path)
    assert "trunc.jsonl" in msg and "cannot be read" in msg and "Malformed JSON" in msg


def test_wrong_format_flag_suggests_the_right_one(tmp_path):
    path = write_csv(tmp_path / "azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens", ["2023-11-16 18:15:46.68,5,5"])
    msg = _fails(tmp_path, path, fmt="mooncake")
    assert "missing column 'timestamp' (arrival_s)" in msg
    assert "It looks like the 'azure' layout" in msg


def test_unknown_layout_lists_known_ones(tmp_path):
    msg = _fails(tmp_path, write_csv(tmp_path / "x.csv", "a,b,c", ["1,2,3"]))
    assert "cannot detect the traffic log layout" in msg and "azure: TIMESTAMP" in msg and "mooncake" in msg


def test_too_many_failed_requests(tmp_path):
    rows = ["0,5,5", "1,5,0", "2,5,5"]
    msg = _fails(tmp_path, write_csv(tmp_path / "f.csv", HEADER, rows), max_failed_share=0.05)
    assert "1 of 3 requests (33.33%) have 0 output tokens" in msg and "max_failed_share = 5%" in msg


def test_wrong_timestamp_unit_is_caught_by_range_or_span(tmp_path):
    # epoch milliseconds read as seconds land in the year 55,000: outside the plausible range
    rows = ["1767571200000,5,5", "1767571201000,5,5"]
    msg = _fails(tmp_path, write_csv(tmp_path / "ms.csv", HEADER, rows), timestamp_unit="s")
    assert "lie outside 1970-01-01..2100-01-01" in msg
    # trace-relative milliseconds over 2 days read as seconds span ~2,000 days
    rows = ["0,5,5", "172800000,5,5"]
    msg = _fails(tmp_path, write_csv(tmp_path / "rel.csv", HEADER, rows), timestamp_unit="s")
    assert "spans 2,000 days" in msg and "workload.timestamp_unit" in msg


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="traffic log not found"):
        profile_of(tmp_path / "nope.csv", tmp_path)


def test_cli_reports_error_without_traceback(tmp_path, capsys):
    path = write_csv(tmp_path / "neg.csv", HEADER, ["0,-1,5"])
    assert cli.main(["profile", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sizing: error: invalid traffic log") and "Traceback" not in err


def test_cli_subprocess_has_no_traceback(tmp_path):
    path = write_csv(tmp_path / "neg.csv", HEADER, ["0,5,5", "x,5,5"])
    proc = run_module(["pipeline", "profile", str(path), "--timestamp-unit", "s", "--quiet"], ROOT, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "column 'arrival_s': 1 of 2 rows are empty or cannot be parsed as seconds" in proc.stderr
