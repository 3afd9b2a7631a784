"""great-expectations suites (defined in code, ephemeral context) that guard every input.

Nothing is computed from a traffic log until these pass. A failure becomes one InputError that
names the file, the column, how many rows failed, a few example values and what was expected.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError, ParamsError

if TYPE_CHECKING:
    import pandas as pd

INTEGER_RE = r"^\s*[+-]?\d+(\.0*)?\s*$"
# 2100-01-01T00:00:00Z: anything later is a wrong unit (ms read as s), not a timestamp.
MAX_EPOCH_S = 4_102_444_800.0
MAX_TOKENS = 10_000_000
MAX_EXAMPLES = 5

_CONTEXT: Any = None


def defer_import(name: str) -> None:
    """Register module `name` so that it loads on first use instead of now (stdlib LazyLoader)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)  # `from scipy import stats` finds it without loading it


def _gx() -> Any:
    """great_expectations, imported once, quietly, with scipy.stats deferred.

    GX imports scipy.stats when it loads, only for distribution expectations (KL divergence,
    KS tests) that no suite here uses; deferring it saves about 1.2 s in every stage that checks inputs.
    """
    if "great_expectations" not in sys.modules:
        defer_import("scipy.stats")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations

    return great_expectations


def _context() -> Any:
    """One ephemeral GX context per process, progress bars and chatty logs off."""
    global _CONTEXT
    if _CONTEXT is None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT = ctx
    return _CONTEXT


@dataclass
class Rule:
    """One expectation, with the words a user reads when it fails."""

    name: str
    column: str
    expectation: Any
    failure: str
    expected: str


@dataclass
class Outcome:
    """How one rule fared over all chunks."""

    rule: str
    column: str
    source_column: str
    failure: str
    expected: str
    checked: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.failed == 0


@dataclass
class ValidationSummary:
    """What the suite checked and found; shown in the report."""

    suite: str
    rows_checked: int
    chunks: int
    outcomes: list[Outcome]
    result: Any = None  # GX's ExpectationSuiteValidationResult (SQL suites), for data docs
    duckdb_settings: dict[str, str] = field(default_factory=dict)  # of the connection GX validated with

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    def table(self) -> pd.DataFrame:
        """One row per expectation: column, rule, rows checked, rows failed."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "column": o.source_column if o.source_column == o.column else f"{o.source_column} ({o.column})",
                    "expectation": o.rule,
                    "expected": o.expected,
                    "rows_checked": o.checked,
                    "rows_failed": o.failed,
                    "status": "pass" if o.success else "FAIL",
                }
                for o in self.outcomes
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {
            "suite": self.suite,
            "success": self.success,
            "rows_checked": self.rows_checked,
            "expectations": [
                {"column": o.column, "rule": o.rule, "checked": o.checked, "failed": o.failed} for o in self.outcomes
            ],
        }


_SUITES: dict[str, tuple[Any, Any, dict[str, Rule]]] = {}


def _run_suite(name: str, rules: list[Rule], frame: pd.DataFrame) -> list[tuple[Rule, Any]]:
    """Validate one DataFrame; return (rule, GX result) pairs. Suites are built once and reused."""
    gx = _gx()

    key = f"{name}:" + ",".join(f"{r.name}/{r.column}" for r in rules)
    if key not in _SUITES:
        ctx = _context()
        if "traffic" in [d.name for d in ctx.data_sources.all().values()]:
            source = ctx.data_sources.get("traffic")
        else:
            source = ctx.data_sources.add_pandas("traffic")
        asset_name = f"{name}-{len(_SUITES)}"
        batch_def = source.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("whole")
        suite = gx.ExpectationSuite(name=asset_name)
        for rule in rules:
            suite.add_expectation(rule.expectation)
        suite = ctx.suites.add(suite)
        by_id = {exp.id: rule for exp, rule in zip(suite.expectations, rules, strict=True)}
        _SUITES[key] = (batch_def, suite, by_id)
    batch_def, suite, by_id = _SUITES[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite, result_format="SUMMARY")
    return [(by_id[r.expectation_config.id], r) for r in result.results]


def check_columns(label: str, available: list[str], required: dict[str, str], hint: str = "") -> None:
    """GX suite 'source_schema': every mapped source column exists in the file."""
    import pandas as pd

    gx = _gx()

    rules = [
        Rule(
            f"has_{norm}",
            src,
            gx.expectations.ExpectColumnToExist(column=src),
            "is missing",
            f"a column '{src}' holding {norm}",
        )
        for norm, src in required.items()
    ]
    frame = pd.DataFrame({c: pd.Series([], dtype="object") for c in available})
    missing = [
        f"'{rule.column}' ({rule.name.removeprefix('has_')})"
        for rule, r in _run_suite("schema", rules, frame)
        if not r.success
    ]
    if missing:
        raise InputError(
            f"{label}: missing column {', '.join(missing)}. The file has columns: "
            f"{', '.join(available) or 'none'}." + (f" {hint}" if hint else "")
        )


RuleSpec = tuple[str, str, str, dict[str, Any], str, str]  # name, column, expectation type, kwargs, failure, expected


def request_rule_specs(columns: dict[str, str], timestamp_unit: str, optional: Iterable[str] = ()) -> list[RuleSpec]:
    """The 'requests' suite as plain data, without importing great-expectations: per rule its name, column,
    GX expectation type (snake case, as ExpectationConfiguration.type) and kwargs, failure and expected words.
    request_rules builds the GX expectations from exactly these (bounds as floats: GX stores them so)."""
    unit = {
        "datetime": "a date-time",
        "s": "seconds",
        "ms": "milliseconds",
        "us": "microseconds",
        "ns": "nanoseconds",
    }
    words = unit.get(timestamp_unit, timestamp_unit)
    specs: list[RuleSpec] = [
        (
            "arrival_parses",
            "arrival_s",
            "expect_column_values_to_not_be_null",
            {"column": "arrival_s"},
            f"are empty or cannot be parsed as {words}",
            f"a timestamp in {words}",
        ),
        (
            "arrival_plausible",
            "arrival_s",
            "expect_column_values_to_be_between",
            {"column": "arrival_s", "min_value": 0.0, "max_value": MAX_EPOCH_S},
            "lie outside 1970-01-01..2100-01-01 once converted to seconds (is workload.timestamp_unit right?)",
            "a time between 1970 and 2100 (or seconds since the trace start)",
        ),
    ]
    for norm, minimum in (("input_tokens", 1), ("output_tokens", 0)):
        specs += [
            (
                f"{norm}_present",
                norm,
                "expect_column_values_to_not_be_null",
                {"column": norm},
                "are empty or not numbers",
                "a token count",
            ),
            (
                f"{norm}_integer",
                f"_raw_{norm}",
                "expect_column_values_to_match_regex",
                {"column": f"_raw_{norm}", "regex": INTEGER_RE},
                "are not whole numbers",
                "an integer token count",
            ),
            (
                f"{norm}_range",
                norm,
                "expect_column_values_to_be_between",
                {"column": norm, "min_value": float(minimum), "max_value": float(MAX_TOKENS)},
                f"are below {minimum} or above {MAX_TOKENS:,}",
                f"an integer >= {minimum}",
            ),
        ]
    for norm in optional:
        if norm in ("ttft_ms", "e2e_ms"):
            specs.append(
                (
                    f"{norm}_range",
                    norm,
                    "expect_column_values_to_be_between",
                    {"column": norm, "min_value": 0.0},
                    "are negative",
                    "a latency in milliseconds >= 0",
                )
            )
    return specs


def request_rules(columns: dict[str, str], timestamp_unit: str, optional: Iterable[str] = ()) -> list[Rule]:
    """The 'requests' suite over a normalized chunk (typed values plus raw text copies): GX expectations."""
    E = _gx().expectations
    return [
        Rule(name, column, getattr(E, "".join(w.capitalize() for w in kind.split("_")))(**kwargs), failure, expected)
        for name, column, kind, kwargs, failure, expected in request_rule_specs(columns, timestamp_unit, optional)
    ]


def ingest_connection(memory_limit: str = "1GB", temp_directory: str | Path | None = None) -> Any:
    """A DuckDB connection for reading a traffic log: memory capped at `memory_limit` (workload.memory_limit),
    spilling to `temp_directory` (DuckDB creates it and removes it on close), clock in UTC.

    DuckDB 2.0's `type_pushdown` optimizer pushes a TRY_CAST over an all-varchar CSV column into the
    reader as a plain cast, so one bad value would fail the whole scan instead of counting as one bad
    row; it is turned off. preserve_insertion_order keeps LIMIT in file order (stable examples);
    DuckDB's progress bar is off (it writes to stdout).
    """
    import duckdb

    config = {"memory_limit": str(memory_limit)}
    if temp_directory is not None:
        config["temp_directory"] = str(temp_directory)
    try:
        con = duckdb.connect(config=config)
    except duckdb.Error as exc:
        raise ParamsError(
            f"params.yaml: workload.memory_limit = {memory_limit!r}: {str(exc).splitlines()[0]}; "
            "expected a size such as 1GB or 512MB"
        ) from None
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET disabled_optimizers = 'type_pushdown'")
    con.execute("SET preserve_insertion_order = true")
    # DuckDB's bar goes to stdout (it would corrupt --json); in a Jupyter kernel DuckDB refuses any bar
    # setting without ipywidgets, and shows no bar there
    with contextlib.suppress(duckdb.Error):
        con.execute("SET enable_progress_bar = false")
    return con


def connection_settings(con: Any) -> dict[str, str]:
    """memory_limit, temp_directory and threads as the DuckDB connection itself reports them."""
    names = ("memory_limit", "temp_directory", "threads")
    got = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN (?, ?, ?)", list(names)).fetchall())
    return {n: str(got[n]) for n in names}  # names bound as parameters: no SQL built from strings


def _suite(name: str, rules: list[Rule]) -> Any:
    """The GX ExpectationSuite of these rules, added to the context once per process."""
    key = f"sql:{name}:" + ",".join(f"{r.name}/{r.column}" for r in rules)
    if key not in _SUITES:
        gx, ctx = _gx(), _context()
        suite = gx.ExpectationSuite(name=f"{name}-{len(_SUITES)}")
        for rule in rules:
            suite.add_expectation(rule.expectation)
        _SUITES[key] = (None, ctx.suites.add(suite), {})
    return _SUITES[key][1]


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def unexpected_sql(config: Any, params: dict[str, Any], key: str = "p") -> str:
    """The DuckDB condition that marks a row unexpected for one GX expectation configuration.

    GX's own semantics for its SQL engine: nulls are missing, not unexpected, except for
    not_be_null; between is inclusive unless strict_min/strict_max; match_regex is a search (re.search),
    as DuckDB's regexp_matches. Values are bound as $parameters named `key`... (added to `params`),
    never spliced into the SQL.
    """
    kw = config.kwargs
    col = _quote(kw["column"])
    kind = config.type
    if kind == "expect_column_values_to_not_be_null":
        return f"{col} IS NULL"
    if kind == "expect_column_values_to_match_regex":
        params[key] = kw["regex"]
        return f"{col} IS NOT NULL AND NOT regexp_matches({col}, ${key})"
    if kind == "expect_column_values_to_be_between":
        ok = []
        if kw.get("min_value") is not None:
            params[key + "lo"] = kw["min_value"]
            ok.append(f"{col} {'>' if kw.get('strict_min') else '>='} ${key}lo")
        if kw.get("max_value") is not None:
            params[key + "hi"] = kw["max_value"]
            ok.append(f"{col} {'<' if kw.get('strict_max') else '<='} ${key}hi")
        return f"{col} IS NOT NULL AND NOT ({' AND '.join(ok) or 'TRUE'})"
    raise ValueError(f"expectation {kind} has no SQL form here")


@dataclass
class SuiteCounts:
    """The one aggregate that evaluates a suite over a query: its SQL, bound values, each expectation's
    unexpected-row condition (and its own values) and column; `row`, once run."""

    sql: str
    params: dict[str, Any]
    conditions: list[str]
    own: list[dict[str, Any]]
    columns: list[str]
    row: tuple[Any, ...] | None = None

    @classmethod
    def sql_of(cls, configs: list[Any], query: str) -> SuiteCounts:
        """From expectation configurations (anything with .type and .kwargs, as GX's ExpectationConfiguration)."""
        own: list[dict[str, Any]] = [{} for _ in configs]
        conditions = [unexpected_sql(config, own[i], f"p{i}_") for i, config in enumerate(configs)]
        params = {k: v for p in own for k, v in p.items()}
        columns = [config.kwargs["column"] for config in configs]
        select = ["count(*)"]
        for cond, col in zip(conditions, columns, strict=True):
            select += [f"count({_quote(col)})", f"count(*) FILTER (WHERE {cond})"]
        return cls(f"SELECT {', '.join(select)} FROM ({query}) AS q", params, conditions, own, columns)

    def run(self, con: Any) -> tuple[Any, ...]:
        self.row = tuple(con.execute(self.sql, self.params).fetchall()[0])
        return self.row

    def same_query(self, other: SuiteCounts) -> bool:
        """The same SQL text and the same bound values, type for type (0 and 0.0 bind differently)."""

        def typed(params: dict[str, Any]) -> list[tuple[str, type, Any]]:
            return sorted((k, type(v), v) for k, v in params.items())

        return self.row is not None and self.sql == other.sql and typed(self.params) == typed(other.params)


def prefetch_counts(con: Any, query: str, specs: list[RuleSpec]) -> SuiteCounts:
    """The aggregate of run_sql_suite for the suite of `specs` (request_rule_specs) over `query`, run now, before
    great-expectations has loaded (ingest overlaps it with the import). run_sql_suite uses the counts only if
    the SQL it derives from GX's own expectation configurations is this very SQL, with the same values."""
    configs = [SimpleNamespace(type=kind, kwargs=dict(kwargs)) for _, _, kind, kwargs, _, _ in specs]
    counts = SuiteCounts.sql_of(configs, query)
    counts.run(con)
    return counts


def run_sql_suite(
    name: str,
    rules: list[Rule],
    con: Any,
    query: str,
    index_columns: list[str],
    prefetched: SuiteCounts | None = None,
) -> tuple[Any, list[tuple[Rule, Any]]]:
    """The GX suite of `rules` over every row of `query`, run by DuckDB as one aggregate (or `prefetched`: that
    aggregate already run by prefetch_counts, used only when its SQL and bound values are the suite's own).

    Each expectation of the suite becomes its unexpected-row condition (unexpected_sql), and one
    scan counts every condition over the whole query (not chunk by chunk in pandas). Only for an
    expectation that fails, a second query fetches its first MAX_EXAMPLES offending rows in file
    order with `index_columns` (file name, raw text). The counts come back as GX's own
    ExpectationValidationResult objects (SUMMARY format: element_count, missing_count,
    unexpected_count, partial_unexpected_list, partial_unexpected_index_list) inside one
    ExpectationSuiteValidationResult, so suites, results and data docs are GX's.
    """
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

    suite = _suite(name, rules)
    rel = f"({query}) AS q"
    counts = SuiteCounts.sql_of([exp.configuration for exp in suite.expectations], query)
    own, conditions, columns = counts.own, counts.conditions, counts.columns
    # counts already made by prefetch_counts (while GX loaded) stand only for the very same SQL and values
    row = prefetched.row if prefetched is not None and prefetched.same_query(counts) else counts.run(con)
    total = int(row[0])
    results = []
    for i, (exp, cond, col) in enumerate(zip(suite.expectations, conditions, columns, strict=True)):
        present, unexpected = int(row[1 + 2 * i]), int(row[2 + 2 * i])
        missing = total - present
        null_rule = exp.configuration.type == "expect_column_values_to_not_be_null"
        nonmissing = total if null_rule else present
        examples: list[dict[str, Any]] = []
        if unexpected:
            shown = list(dict.fromkeys([col, *index_columns]))
            names = ", ".join(_quote(c) for c in shown)
            found = con.execute(f"SELECT {names} FROM {rel} WHERE {cond} LIMIT {MAX_EXAMPLES}", own[i]).fetchall()
            examples = [dict(zip(shown, values, strict=True)) for values in found]
        result: dict[str, Any] = {
            "element_count": total,
            "unexpected_count": unexpected,
            "unexpected_percent": 100.0 * unexpected / nonmissing if nonmissing else None,
            "partial_unexpected_list": [e[col] for e in examples],
            "partial_unexpected_index_list": examples,
            "unexpected_index_column_names": index_columns,
        }
        if not null_rule:
            result |= {
                "missing_count": missing,
                "missing_percent": 100.0 * missing / total if total else None,
                "unexpected_percent_total": 100.0 * unexpected / total if total else None,
                "unexpected_percent_nonmissing": 100.0 * unexpected / present if present else None,
            }
        results.append(
            ExpectationValidationResult(
                success=unexpected == 0,
                expectation_config=exp.configuration,
                result=result,
                exception_info={"raised_exception": False, "exception_message": None, "exception_traceback": None},
            )
        )
    passed = sum(r.success for r in results)
    suite_result = ExpectationSuiteValidationResult(
        success=passed == len(results),
        results=results,
        suite_name=suite.name,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
            "success_percent": 100.0 * passed / len(results) if results else None,
        },
        meta={
            "engine": "duckdb (one aggregate over the whole table)",
            "rows": total,
            "unexpected_when": [
                f"{exp.configuration.type}: {cond}" for exp, cond in zip(suite.expectations, conditions, strict=True)
            ],
        },
    )
    by_id = {exp.id: rule for exp, rule in zip(suite.expectations, rules, strict=True)}
    return suite_result, [(by_id[r.expectation_config.id], r) for r in results]


def validate_sql(
    label: str,
    con: Any,
    query: str,
    columns: dict[str, str],
    rules: list[Rule],
    prefetched: SuiteCounts | None = None,
) -> ValidationSummary:
    """Run the 'requests' suite over the whole normalized query, in DuckDB; raise InputError on any failure
    (`prefetched`: the suite's aggregate already run, see run_sql_suite).

    `con` is the ingest connection (ingest_connection) whose views `query` reads. The query yields
    the typed columns, `_raw_<col>` text copies and `_file`; the counts are per rule over every row,
    and the examples quote the raw text and file of the first offending rows (only those rows).
    """
    names = [d[0] for d in con.execute(f"SELECT * FROM ({query}) AS q LIMIT 0").description]
    index = ["_file", *(c for c in names if c.startswith("_raw_"))]
    result, pairs = run_sql_suite("requests", rules, con, query, index, prefetched)
    outcomes = []
    for rule, res in pairs:
        norm = rule.column.removeprefix("_raw_")
        out = Outcome(rule.name, norm, columns.get(norm, norm), rule.failure, rule.expected)
        out.checked = int(res.result["element_count"])
        out.failed = int(res.result["unexpected_count"])
        raw_col = f"_raw_{norm}" if f"_raw_{norm}" in names else rule.column
        for row in res.result["partial_unexpected_index_list"]:
            raw = row.get(raw_col)
            out.examples.append("<empty>" if raw is None else repr(str(raw)))
            fname = str(row.get("_file") or "").rsplit("/", 1)[-1]
            if fname and fname not in out.files:
                out.files.append(fname)
        outcomes.append(out)
    rows = int(result.meta["rows"])
    summary = ValidationSummary("requests", rows, 1, outcomes, result=result, duckdb_settings=connection_settings(con))
    if not summary.success:
        raise InputError(failure_message(label, summary))
    return summary


def failure_message(label: str, summary: ValidationSummary) -> str:
    """One readable message for every failed expectation."""
    lines = [f"invalid traffic log {label} ({summary.rows_checked:,} rows checked):"]
    for o in summary.outcomes:
        if o.success:
            continue
        col = f"'{o.source_column}'" + (f" ({o.column})" if o.source_column != o.column else "")
        where = f" (in {', '.join(o.files)})" if o.files else ""
        lines.append(
            f"  - column {col}: {o.failed:,} of {o.checked:,} rows {o.failure}; expected {o.expected}. "
            f"Examples: {', '.join(o.examples)}{where}"
        )
    lines.append("No outputs were written.")
    return "\n".join(lines)


CATALOG_RANGES = {
    "memory_gb": (1, 2000, "a capacity in GB (1e9 bytes)"),
    "visible_memory_gib": (1, 2000, "the total memory torch sees, in GiB"),
    "memory_bw_tbs": (0.05, 50, "an HBM/GDDR bandwidth in TB/s"),
    "bf16_tflops": (1, 100_000, "a dense BF16 peak in TFLOPS"),
    "fp16_tflops": (1, 100_000, "a dense FP16 peak in TFLOPS"),
    "fp8_tflops": (1, 100_000, "a dense FP8 peak in TFLOPS (blank when the chip has none)"),
    "int8_tops": (1, 100_000, "a dense INT8 peak in TOPS (blank when the chip has none)"),
    "fp4_tflops": (1, 100_000, "a dense FP4 peak in TFLOPS (blank when the chip has none)"),
    "interconnect_bw_gbs": (0, 100_000, "a per-GPU scale-up bandwidth in GB/s"),
    "node_gpus": (1, 1024, "GPUs per node"),
    "nvlink_domain": (1, 1024, "GPUs sharing the fast fabric"),
}


def validate_catalog(path: Path) -> ValidationSummary:
    """GX suite 'gpu_catalog' over data/catalog/gpus.csv: names unique, numbers in range, a source on every row."""
    import pandas as pd

    gx = _gx()

    from pipeline.catalog import GPU_REQUIRED, INTERCONNECTS, read_gpu_rows

    rows = read_gpu_rows(path)
    raw = pd.DataFrame(rows, dtype="object")
    frame = pd.DataFrame({"gpu": raw["gpu"].str.strip().replace("", None)})
    E = gx.expectations
    rules = [
        Rule("gpu_present", "gpu", E.ExpectColumnValuesToNotBeNull(column="gpu"), "have no name", "a GPU name"),
        Rule("gpu_unique", "gpu", E.ExpectColumnValuesToBeUnique(column="gpu"), "repeat a name", "one row per GPU"),
        Rule(
            "source_present",
            "source",
            E.ExpectColumnValuesToNotBeNull(column="source"),
            "have no source",
            "where the figures came from (a datasheet URL or a citation)",
        ),
        Rule(
            "interconnect_known",
            "interconnect",
            E.ExpectColumnValuesToBeInSet(column="interconnect", value_set=list(INTERCONNECTS)),
            "name an unknown interconnect",
            f"one of {', '.join(INTERCONNECTS)}",
        ),
        Rule(
            "formats_known",
            "hw_formats",
            E.ExpectColumnValuesToMatchRegex(
                column="hw_formats", regex=r"^\s*(bf16|fp16|int8|fp8|fp4)(\s+(bf16|fp16|int8|fp8|fp4))*\s*$"
            ),
            "list an unknown format",
            "space-separated words from bf16 fp16 int8 fp8 fp4",
        ),
    ]
    frame["source"] = raw["source"].str.strip().replace("", None)
    frame["interconnect"] = raw["interconnect"]
    frame["hw_formats"] = raw["hw_formats"]
    for col, (lo, hi, what) in CATALOG_RANGES.items():
        if col not in raw:
            continue
        text = raw[col].fillna("").str.strip()
        frame[col] = pd.to_numeric(text.replace("", None), errors="coerce")
        frame[f"_raw_{col}"] = text
        rules.append(
            Rule(
                f"{col}_number",
                f"_raw_{col}",
                E.ExpectColumnValuesToMatchRegex(column=f"_raw_{col}", regex=r"^(\d+(\.\d+)?)?$"),
                "are not plain numbers",
                what,
            )
        )
        if col in GPU_REQUIRED:
            rules.append(Rule(f"{col}_present", col, E.ExpectColumnValuesToNotBeNull(column=col), "are empty", what))
        rules.append(
            Rule(
                f"{col}_range",
                col,
                E.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi),
                f"lie outside {lo}..{hi}",
                what,
            )
        )
    outcomes = []
    for rule, result in _run_suite("gpu_catalog", rules, frame):
        bad = result.result.get("partial_unexpected_list") or []
        failed = int(result.result.get("unexpected_count") or 0) if not result.success else 0
        if not result.success and not failed:
            failed = 1
        column = rule.column.removeprefix("_raw_")
        examples = []
        if not result.success:
            bad_values = {str(v) for v in bad}
            source = raw[column] if column in raw else frame[rule.column]
            for name, value in zip(raw["gpu"], source, strict=False):
                if str(value) in bad_values or (
                    rule.name.endswith("_present") and (value is None or str(value).strip() in ("", "nan"))
                ):
                    examples.append(f"{name}: {value!r}")
                if len(examples) >= MAX_EXAMPLES:
                    break
        outcomes.append(Outcome(rule.name, column, column, rule.failure, rule.expected, len(frame), failed, examples))
    summary = ValidationSummary("gpu_catalog", len(frame), 1, outcomes)
    if not summary.success:
        lines = [f"invalid GPU catalog {path} ({len(frame)} rows checked):"]
        for o in summary.outcomes:
            if not o.success:
                lines.append(
                    f"  - column '{o.column}': {o.failed} of {o.checked} rows {o.failure}; expected {o.expected}. Examples: {', '.join(o.examples) or '(see the file)'}"
                )
        lines.append("No outputs were written.")
        raise InputError("\n".join(lines))
    return summary


def validate_curve(frame: pd.DataFrame, label: str) -> ValidationSummary:
    """GX suite 'benchmark_curve' over the normalized curve table: one row per load, sane latencies and counts."""
    import pandas as pd

    gx = _gx()

    E = gx.expectations
    df = frame.copy()
    df["load_finite"] = df["load"].astype(float).where(df["load"].astype(float) < float("inf"))
    rules = [
        Rule(
            "load_present",
            "load",
            E.ExpectColumnValuesToNotBeNull(column="load"),
            "have no load",
            "a concurrency or request rate",
        ),
        Rule(
            "load_positive",
            "load_finite",
            E.ExpectColumnValuesToBeBetween(column="load_finite", min_value=0, strict_min=True),
            "have a load <= 0",
            "a load > 0",
        ),
        Rule(
            "load_unique",
            "load",
            E.ExpectCompoundColumnsToBeUnique(
                column_list=["curve", "load_finite"], ignore_row_if="any_value_is_missing"
            ),
            "repeat a load within one curve",
            "one result per load level (strictly increasing loads)",
        ),
        Rule(
            "kind_known",
            "load_kind",
            E.ExpectColumnValuesToBeInSet(column="load_kind", value_set=["concurrency", "request_rate"]),
            "have an unknown load kind",
            "concurrency or request_rate",
        ),
        Rule(
            "rps_present",
            "rps",
            E.ExpectColumnValuesToNotBeNull(column="rps"),
            "have no achieved RPS",
            "request throughput per level",
        ),
        Rule(
            "rps_range",
            "rps",
            E.ExpectColumnValuesToBeBetween(column="rps", min_value=0, max_value=1e6),
            "have RPS outside 0..1e6",
            "requests per second",
        ),
    ]
    for col in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p50_ms", "e2e_p99_ms"):
        rules.append(
            Rule(
                f"{col}_range",
                col,
                E.ExpectColumnValuesToBeBetween(column=col, min_value=0, max_value=3.6e7),
                "lie outside 0 ms..10 h",
                "a latency in ms (units normalized)",
            )
        )
    for lo, hi in (("ttft_p50_ms", "ttft_p99_ms"), ("itl_p50_ms", "itl_p99_ms"), ("e2e_p50_ms", "e2e_p99_ms")):
        rules.append(
            Rule(
                f"{hi}_ge_{lo}",
                hi,
                E.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A=hi, column_B=lo, or_equal=True, ignore_row_if="either_value_is_missing"
                ),
                f"have {hi} < {lo}",
                "p99 >= p50",
            )
        )
    rules.append(
        Rule(
            "output_tps_range",
            "output_tps",
            E.ExpectColumnValuesToBeBetween(column="output_tps", min_value=0, max_value=1e8),
            "have output tokens/s outside 0..1e8",
            "output tokens per second",
        )
    )
    for col in ("completed", "failed"):
        rules.append(
            Rule(
                f"{col}_range",
                col,
                E.ExpectColumnValuesToBeBetween(column=col, min_value=0),
                "are negative",
                "a request count >= 0",
            )
        )
    for col in [
        c
        for c in df.columns
        if df[c].dtype == object
        and c not in ("curve", "file", "load_kind", "tool", "itl_kind", "e2e_source", "dataset", "goodput_source")
    ]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return _summarize(
        "benchmark_curve",
        _run_suite("benchmark_curve", rules, df),
        len(df),
        lambda rule, result: _curve_examples(frame, df, rule, result),
        f"invalid benchmark results {label} ({len(df)} load levels checked):",
        "levels",
    )


def _summarize(
    suite: str,
    results: list[tuple[Rule, Any]],
    rows: int,
    examples: Callable[[Rule, Any], list[str]],
    header: str,
    noun: str,
    name_column: bool = True,
) -> ValidationSummary:
    """Outcomes of a one-frame suite; any failure is one InputError listing each rule with example rows."""
    outcomes = []
    for rule, result in results:
        failed = int(result.result.get("unexpected_count") or 0) if not result.success else 0
        if not result.success and not failed:
            failed = 1
        shown = examples(rule, result) if not result.success else []
        outcomes.append(Outcome(rule.name, rule.column, rule.column, rule.failure, rule.expected, rows, failed, shown))
    summary = ValidationSummary(suite, rows, 1, outcomes)
    if not summary.success:
        lines = [header]
        for o in summary.outcomes:
            if not o.success:
                where = f"column '{o.column}': " if name_column else ""
                lines.append(
                    f"  - {where}{o.failed} of {o.checked} {noun} {o.failure}; expected {o.expected}. "
                    f"Examples: {'; '.join(o.examples) or '(see the files)'}"
                )
        lines.append("No outputs were written.")
        raise InputError("\n".join(lines))
    return summary


def validate_scrapes(frame: pd.DataFrame, label: str) -> ValidationSummary:
    """GX suite 'prometheus_scrapes' over every parsed sample: known types, counters and buckets >= 0,
    usage fractions in 0..1, DCGM utilization in 0..100 %, framebuffer MiB >= 0."""
    gx = _gx()

    E = gx.expectations
    df = frame.copy()
    kind, metric, value = df["kind"], df["metric"], df["value"].astype(float)
    df["counter_value"] = value.where(kind.isin(["counter", "histogram", "summary"]))
    df["fraction_value"] = value.where(metric.str.endswith(("kv_cache_usage_perc", "cache_hit_rate")))
    df["percent_value"] = value.where(metric == "DCGM_FI_DEV_GPU_UTIL")
    df["mib_value"] = value.where(metric.isin(["DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"]))
    rules = [
        Rule(
            "kind_known",
            "kind",
            E.ExpectColumnValuesToBeInSet(
                column="kind", value_set=["counter", "gauge", "histogram", "summary", "untyped"]
            ),
            "declare an unknown metric type",
            "# TYPE counter, gauge, histogram, summary or untyped",
        ),
        Rule(
            "counter_nonnegative",
            "counter_value",
            E.ExpectColumnValuesToBeBetween(column="counter_value", min_value=0),
            "are negative counters or bucket counts",
            "a count >= 0 (counters only grow, or restart from 0)",
        ),
        Rule(
            "fraction_range",
            "fraction_value",
            E.ExpectColumnValuesToBeBetween(column="fraction_value", min_value=0, max_value=1),
            "lie outside 0..1",
            "a usage fraction (1 means 100%)",
        ),
        Rule(
            "percent_range",
            "percent_value",
            E.ExpectColumnValuesToBeBetween(column="percent_value", min_value=0, max_value=100),
            "lie outside 0..100",
            "a utilization in %",
        ),
        Rule(
            "mib_nonnegative",
            "mib_value",
            E.ExpectColumnValuesToBeBetween(column="mib_value", min_value=0),
            "are negative",
            "framebuffer memory in MiB >= 0",
        ),
    ]

    def examples(rule: Rule, result: Any) -> list[str]:
        bad = {str(v) for v in (result.result.get("partial_unexpected_list") or [])}
        rows = df[df[rule.column].astype(str).isin(bad)].head(MAX_EXAMPLES)
        return [f"{r['file']}: {r['metric']}{{{r['labels']}}} = {r['value']}" for _, r in rows.iterrows()]

    return _summarize(
        "prometheus_scrapes",
        _run_suite("prometheus_scrapes", rules, df),
        len(df),
        examples,
        f"invalid Prometheus scrapes {label} ({len(df)} samples checked):",
        "samples",
        name_column=False,
    )


def _curve_examples(frame: pd.DataFrame, df: pd.DataFrame, rule: Rule, result: Any) -> list[str]:
    """A few offending levels, each as 'file load L: column = value'."""
    col = rule.column
    if rule.name == "load_unique":
        mask = df["load_finite"].notna() & df.duplicated(["curve", "load_finite"], keep=False)
    elif "_ge_" in rule.name:
        lo = rule.name.split("_ge_")[1]
        mask = df[col].astype(float) < df[lo].astype(float)
    elif rule.name.endswith("_present"):
        mask = df[col].isna()
    else:
        bad = {str(v) for v in (result.result.get("partial_unexpected_list") or [])}
        mask = df[col].astype(str).isin(bad)
    rows = frame[mask.to_numpy()].head(MAX_EXAMPLES)
    shown = "load" if col == "load_finite" else col
    return [f"{r['file']} load {r['load']}: {shown} = {r.get(shown)}" for _, r in rows.iterrows()]
