"""The length percentiles of the shared-pass profile (workload.Groups.lengths) are the very doubles DuckDB's
quantile_cont gives over every row (issue 15, ingest speed: they now come from counts of each distinct length,
not a sort of every row per group), for the whole log and every tier, ties and wide ranges included."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import workload
from pipeline.workload_settings import PERCENTILES

QS = list(PERCENTILES.values())


def _log(path, rng: random.Random, n: int, top: int, tiers: int) -> None:
    pq.write_table(
        pa.table(
            {
                "arrival_s": [1000.0 + i * 0.5 for i in range(n)],
                "input_tokens": pa.array([rng.randint(1, top) for _ in range(n)], pa.int64()),
                "output_tokens": pa.array([rng.randint(1, top) for _ in range(n)], pa.int64()),
                "tenant": [f"t{rng.randrange(tiers)}" for _ in range(n)],
            }
        ),
        path,
    )


@pytest.mark.parametrize(
    ("n", "top", "tiers"), [(2, 5, 1), (3, 10**9, 2), (17, 3, 3), (401, 32_000, 4), (2_500, 10**12, 8), (5_000, 40, 5)]
)
def test_group_percentiles_are_quantile_cont_exactly(tmp_path, n, top, tiers):
    path = tmp_path / "requests.parquet"
    _log(path, random.Random(n * 7 + tiers), n, top, tiers)
    con = workload.connect()
    expr, _, values = workload.tier_expression(
        ["arrival_s", "input_tokens", "output_tokens", "tenant"], workload.ProfileSettings()
    )
    groups = workload.Groups(con, path, expr, values)
    groups.use_tiers(True)
    got = groups.lengths()
    assert set(got) == {None, *range(len(groups.names))}
    lengths = ("input_tokens", "output_tokens", "input_tokens + output_tokens")
    select = ", ".join(f"quantile_cont({e}, {QS})" for e in lengths)
    for key, (nine, _, _) in got.items():
        where = "TRUE" if key is None else "tenant = $t"
        args = {"p": str(path)} | ({} if key is None else {"t": groups.names[key]})
        want = con.execute(f"SELECT {select} FROM read_parquet($p) WHERE {where}", args).fetchall()[0]
        assert [list(nine[0]), list(nine[3]), list(nine[6])] == [list(w) for w in want], key  # the same doubles
    untiered = workload.Groups(con, path, None, {})
    untiered.use_tiers(False)
    (nine, _, _) = untiered.lengths()[None]
    assert list(nine[0]) == list(
        con.execute(f"SELECT quantile_cont(input_tokens, {QS}) FROM read_parquet($p)", {"p": str(path)}).fetchall()[0][
            0
        ]
    )
