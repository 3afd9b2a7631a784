"""Ingest at scale: the great-expectations suite runs in DuckDB over the whole log (exact per-row counts,
examples from the bad rows only), and workload.memory_limit caps every DuckDB connection of the ingest."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import params, quality, traffic
from pipeline.errors import InputError, ParamsError
from tests.conftest import profile_of, write_csv, write_parquet

HEADER = "arrival_s,input_tokens,output_tokens"
BAD_AT = {100: "abc", 1500: "", 2999: "yesterday"}  # row index -> bad timestamp text


def _three_bad_timestamps(path: Path) -> Path:
    """3,000 requests, one every 0.5 s from epoch 1767571200; rows 100, 1500 and 2999 have bad timestamps."""
    rows = []
    for i in range(3000):
        ts = BAD_AT.get(i, f"{1767571200 + i * 0.5:.1f}")
        rows.append(f"{ts},{10 + i % 50},{5 + i % 20}")
    return write_csv(path, HEADER, rows)


def _fails(tmp_path: Path, path: Path, **kw) -> str:
    with pytest.raises(InputError) as err:
        profile_of(path, tmp_path, **kw)
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), "a failed ingest left files behind"
    return str(err.value)


def test_three_bad_timestamps_of_3000_are_three(tmp_path):
    msg = _fails(tmp_path, _three_bad_timestamps(tmp_path / "log.csv"))
    assert "(3,000 rows checked)" in msg
    assert (
        "column 'arrival_s': 3 of 3,000 rows are empty or cannot be parsed as seconds; "
        "expected a timestamp in seconds. Examples: 'abc', <empty>, 'yesterday' (in log.csv)"
    ) in msg
    # Only the arrival rule failed: the 2,997 good rows are blamed for nothing.
    assert msg.count("  - column") == 1
    assert msg.endswith("No outputs were written.")


def test_suite_result_is_gx_with_exact_counts_and_only_bad_rows_as_examples(tmp_path):
    """The suite's GX result over the whole table: 3 unexpected of 3,000, the 3 bad rows' raw text and file."""
    from great_expectations.core import ExpectationSuiteValidationResult

    path = _three_bad_timestamps(tmp_path / "log.csv")
    mapping = {c: c for c in HEADER.split(",")}
    con = quality.ingest_connection("256MB")
    scan = traffic.open_source(str(path)).scan_view(con)
    query = traffic._normalized_sql(scan, mapping, "s", True)
    rules = quality.request_rules(mapping, "s")
    result, pairs = quality.run_sql_suite("requests", rules, con, query, ["_file", "_raw_arrival_s"])
    assert isinstance(result, ExpectationSuiteValidationResult)
    assert not result.success
    assert result.statistics["evaluated_expectations"] == len(rules) == 8
    assert result.statistics["unsuccessful_expectations"] == 1
    by_rule = {rule.name: res for rule, res in pairs}
    bad = by_rule["arrival_parses"]
    assert bad.expectation_config.type == "expect_column_values_to_not_be_null"
    assert bad.result["element_count"] == 3000
    assert bad.result["unexpected_count"] == 3
    assert bad.result["unexpected_percent"] == pytest.approx(0.1)
    assert [r["_raw_arrival_s"] for r in bad.result["partial_unexpected_index_list"]] == ["abc", None, "yesterday"]
    assert {r["_file"] for r in bad.result["partial_unexpected_index_list"]} == {str(path)}
    # The range rule does not count the 3 unparsable rows again (missing, not unexpected).
    plausible = by_rule["arrival_plausible"]
    assert plausible.success and plausible.result["unexpected_count"] == 0
    assert plausible.result["missing_count"] == 3
    assert all(res.success for name, res in by_rule.items() if name != "arrival_parses")


def test_counts_and_files_across_files_and_formats(tmp_path):
    """Bad rows only in b.parquet: counted exactly (2 nulls, 1 zero input), blamed on b.parquet only."""
    n = 1000
    good = {
        "arrival_s": [1767571200.0 + i for i in range(n)],
        "input_tokens": [100] * n,
        "output_tokens": [10] * n,
    }
    bad = {k: list(v) for k, v in good.items()}
    bad["arrival_s"] = [1767572200.0 + i for i in range(n)]
    bad["arrival_s"][7] = None
    bad["arrival_s"][8] = None
    bad["input_tokens"][500] = 0
    write_parquet(tmp_path / "logs" / "a.parquet", good)
    write_parquet(tmp_path / "logs" / "b.parquet", bad)
    msg = _fails(tmp_path, tmp_path / "logs")
    assert "(2,000 rows checked)" in msg
    assert "column 'arrival_s': 2 of 2,000 rows are empty or cannot be parsed" in msg
    assert "Examples: <empty>, <empty> (in b.parquet)" in msg
    assert "column 'input_tokens': 1 of 2,000 rows are below 1 or above 10,000,000" in msg
    assert "Examples: '0' (in b.parquet)" in msg
    assert "a.parquet" not in msg


def test_memory_limit_param_reaches_duckdb(tmp_path):
    """workload.memory_limit (default 1GB) is what DuckDB reports on the ingest connection; spills go beside the output."""
    assert params.validate_section("workload", {})["memory_limit"] == "1GB"
    # documented once, in the models (params.yaml leaves the default out; `sizing params --defaults` shows it)
    assert "DuckDB memory cap" in params.Workload.model_fields["memory_limit"].description
    path = write_csv(tmp_path / "ok.csv", HEADER, [f"{1767571200 + i},{10 + i},{5 + i}" for i in range(50)])
    wl = params.validate_section("workload", {"memory_limit": "256MiB"})
    _, ing = profile_of(path, tmp_path, memory_limit=wl["memory_limit"])
    settings = ing.validation.duckdb_settings
    assert settings["memory_limit"] == "256.0 MiB"
    assert settings["temp_directory"] == str(tmp_path / "out" / "requests.parquet.duckdb-tmp")
    _, ing = profile_of(path, tmp_path / "default")
    assert ing.validation.duckdb_settings["memory_limit"] == "953.6 MiB"  # 1 GB = 1e9 bytes = 953.67 MiB
    con = quality.ingest_connection("300MB")
    assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "286.1 MiB"  # 3e8 / 2**20


def test_bad_memory_limit_is_one_params_error(tmp_path):
    path = write_csv(tmp_path / "ok.csv", HEADER, [f"{1767571200 + i},{10 + i},{5 + i}" for i in range(5)])
    with pytest.raises(ParamsError) as err:
        profile_of(path, tmp_path, memory_limit="lots")
    assert str(err.value).startswith("params.yaml: workload.memory_limit = 'lots'")
    assert "expected a size such as 1GB or 512MB" in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_passing_suite_renders_as_gx_data_docs(tmp_path):
    """The validation result is GX's own: its data-docs renderer turns it into an HTML page."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    path = write_csv(tmp_path / "ok.csv", HEADER, [f"{1767571200 + i},{10 + i},{5 + i}" for i in range(20)])
    _, ing = profile_of(path, tmp_path)
    result = ing.validation.result
    assert result.success and ing.validation.rows_checked == 20
    assert all(r.result["element_count"] == 20 for r in result.results)
    html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    assert "expect_column_values_to_be_between" in html or "values must be" in html.lower()


def test_cli_passes_memory_limit_from_params(tmp_path, capsys):
    """`sizing profile --params` hands workload.memory_limit to DuckDB: a bad size is one error line, exit 1."""
    from pipeline import cli

    path = write_csv(tmp_path / "ok.csv", HEADER, [f"{1767571200 + i},{10 + i},{5 + i}" for i in range(5)])
    bad = tmp_path / "params.yaml"
    bad.write_text("workload:\n  memory_limit: lots\n", encoding="utf-8")
    assert cli.main(["profile", str(path), "--quiet", "--params", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sizing: error: params.yaml: workload.memory_limit = 'lots'") and "Traceback" not in err
    good = tmp_path / "good.yaml"
    good.write_text("workload:\n  memory_limit: 200MB\n", encoding="utf-8")
    assert cli.main(["profile", str(path), "--quiet", "--json", "--params", str(good)]) == 0
    assert '"requests": 5' in capsys.readouterr().out
