"""Scale check for step 1: `sizing profile` on a 10-million-row Parquet log, beside the bare DuckDB floor.

The log has a realistic column set: arrival_s, input_tokens, output_tokens, tenant (8 values, so
the profile also runs per tier), session_id and hash_ids (prefix blocks). Each measurement is a
fresh child process, so its wall time and peak RSS (os.wait4's ru_maxrss of that child) are its own:

- floor: bare DuckDB doing the same ingest work: the rules `sizing profile` checks (no nulls,
  input >= 1, output >= 0, timestamps in 1970..2100) as one aggregate, then sort by arrival and
  write Parquet. No memory cap, default settings.
- `sizing profile LOG --json --quiet`: the whole command (ingest: one streamed first pass for the row
  count, span, duplicates and whether the log is already in order, the great-expectations suite, DuckDB
  memory capped by workload.memory_limit, the write of requests.parquet (as read when already in
  order, else sorted: the same bytes; made while great-expectations still imports when the first pass and
  the suite's counts show the log passes), then the profile).

The generated log is in arrival order, as most exported logs are; `--shuffled` writes it in random
order instead, so that the ingest must sort (the slow path, spilling under the 1 GB cap).

The two alternate `--repeat` times on the same machine and the ratio printed is the median of the
per-pair ratios (a shared 2-core machine is noisy). Targets: `sizing profile` <= 2 GiB peak RSS and
within 3x the floor's wall time.

    python benchmarks/profile_scale.py [--rows 10000000] [--repeat 3] [--breakdown] [--shuffled] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_GIB = 2.0
TARGET_RATIO = 3.0

MAKE_LOG = """
import duckdb, sys
duckdb.connect().execute('''
COPY (
  SELECT 1767571200 + i * (86400.0 / $rows) + (hash(i) % 1000) / 1e6 AS arrival_s,
         1 + CAST(exp(6.5 + 0.9 * ((hash(i * 7 + 1) % 100000) / 100000.0 - 0.5) * 3.4) AS BIGINT) AS input_tokens,
         1 + CAST(exp(5.0 + 0.8 * ((hash(i * 13 + 5) % 100000) / 100000.0 - 0.5) * 3.4) AS BIGINT) AS output_tokens,
         'tenant-' || (hash(i * 3) % 8)::VARCHAR AS tenant,
         's-' || (hash(i // 4) % 2000000)::VARCHAR AS session_id,
         [(hash(i // 4) % 50000)::BIGINT, (hash(i * 17) % 50000)::BIGINT] AS hash_ids
  FROM range($rows) t(i) ORDER BY ''' + ("hash(i * 31)" if sys.argv[3] == "shuffled" else "arrival_s") + '''
) TO ''' + "'" + sys.argv[1].replace("'", "''") + "'" + ''' (FORMAT parquet, COMPRESSION zstd)
''', {"rows": int(sys.argv[2])})
"""


def ingest_write_settings() -> tuple[str, str]:
    """(zstd level, row group rows) of the ingest's Parquet write, read from pipeline/traffic/__init__.py's source,
    not imported: this process must stay small (see run_child's callers) for the children's peak memory."""
    import re

    src = (ROOT / "pipeline" / "traffic" / "__init__.py").read_text(encoding="utf-8")
    level = re.search(r"^ZSTD_LEVEL = (\d+)", src, re.M)
    rows = re.search(r"^ROW_GROUP_ROWS = ([\d_]+)", src, re.M)
    assert level and rows, "pipeline/traffic/__init__.py: ZSTD_LEVEL or ROW_GROUP_ROWS not found"
    return level.group(1), rows.group(1).replace("_", "")


FLOOR = """
import duckdb, json, sys, time
t0 = time.perf_counter()
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
scan = "read_parquet($path)"
row = con.execute(
    "SELECT count(*), count(*) FILTER (WHERE arrival_s IS NULL), "
    "count(*) FILTER (WHERE arrival_s < 0 OR arrival_s > 4102444800), "
    "count(*) FILTER (WHERE input_tokens IS NULL), count(*) FILTER (WHERE input_tokens < 1), "
    "count(*) FILTER (WHERE output_tokens IS NULL), count(*) FILTER (WHERE output_tokens < 0) "
    f"FROM {scan}", {"path": sys.argv[1]}).fetchall()[0]
out = sys.argv[2].replace("'", "''")
# the same Parquet settings as the ingest's write (pipeline.traffic ROW_GROUP_ROWS, ZSTD_LEVEL): the same work
con.execute(f"COPY (SELECT * FROM {scan} ORDER BY arrival_s) TO '{out}' (FORMAT parquet, COMPRESSION zstd, "
            f"COMPRESSION_LEVEL {sys.argv[3]}, ROW_GROUP_SIZE {sys.argv[4]})", {"path": sys.argv[1]})
print(json.dumps({"rows": row[0], "bad_rows": sum(row[1:]), "compute_s": time.perf_counter() - t0}))
"""

INGEST = """
import sys
from pathlib import Path
from pipeline import traffic
print(traffic.ingest(traffic.open_source(sys.argv[1]), Path(sys.argv[2])).written)
"""


def run_child(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in GiB and stdout of one child process, reaped by os.wait4 so that the
    peak is the child's own ru_maxrss (the whole process: Python, DuckDB, great-expectations)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark step failed ({' '.join(argv[:3])} ...): {err.read().strip()[-2000:]}")
        return wall, usage.ru_maxrss / 1024**2, out.read().strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows in the generated log (default 10,000,000)")
    ap.add_argument("--repeat", type=int, default=3, help="floor / sizing profile pairs (median ratio reported)")
    ap.add_argument("--keep", action="store_true", help="keep the generated log and outputs")
    ap.add_argument("--shuffled", action="store_true", help="generate the log out of arrival order (ingest sorts)")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the ingest alone and `sizing profile --tier-column none` (where the time goes)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sizing-bench-"))
    try:
        measure_all(tmp, args.rows, args.repeat, args.breakdown, args.shuffled)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def measure_all(tmp: Path, rows: int, repeat: int, breakdown: bool, shuffled: bool = False) -> None:
    """Generate the log in `tmp` (in arrival order, or `shuffled`), then time the floor and `sizing profile`
    (and the breakdown) and print them."""
    log = tmp / "log.parquet"
    t = time.perf_counter()
    # In a child: a child's ru_maxrss starts at its parent's high-water mark (Linux records the forked
    # memory's peak at exec), so this process must stay small for the children's peaks to be their own.
    run_child([sys.executable, "-c", MAKE_LOG, str(log), str(rows), "shuffled" if shuffled else "ordered"], ROOT)
    print(
        f"generated {rows:,} rows ({log.stat().st_size / 1e6:,.0f} MB; arrival_s, input_tokens, "
        f"output_tokens, tenant, session_id, hash_ids; {'shuffled' if shuffled else 'in arrival order'}) "
        f"in {time.perf_counter() - t:.1f} s"
    )
    sizing = [sys.executable, "-m", "pipeline", "profile", str(log), "--json", "--quiet"]
    floor_cmd = [sys.executable, "-c", FLOOR, str(log), str(tmp / "floor.parquet"), *ingest_write_settings()]
    pairs = []
    for _ in range(max(1, repeat)):
        floor = run_child(floor_cmd, ROOT)
        prof = run_child(sizing, ROOT)
        pairs.append((floor, prof))
    pairs.sort(key=lambda p: p[1][0] / p[0][0])
    floor, prof = pairs[len(pairs) // 2]
    profile = json.loads(prof[2])
    floor_out = json.loads(floor[2])
    if profile["requests"] != floor_out["rows"] - floor_out["bad_rows"]:
        raise SystemExit(f"row counts differ: sizing profile {profile['requests']:,}, floor {floor_out['rows']:,}")
    ratio = prof[0] / floor[0]
    ratios = ", ".join(f"{p[1][0] / p[0][0]:.2f}" for p in pairs)
    peak = max(p[1][1] for p in pairs)
    print(f"{'step (own process)':<62}{'wall s':>9}{'peak RSS GiB':>14}")
    print(f"{'floor: bare DuckDB rules aggregate + sort by arrival + Parquet':<62}{floor[0]:>9.2f}{floor[1]:>14.2f}")
    print(f"{'sizing profile (ingest + GX suite + write + profile)':<62}{prof[0]:>9.2f}{prof[1]:>14.2f}")
    print(
        f"sizing profile / floor: {ratio:.2f}x wall (median of {len(pairs)} pairs: {ratios}; target <= {TARGET_RATIO:g}x): "
        f"{'ok' if ratio <= TARGET_RATIO else 'MISSED'}; peak RSS {peak:.2f} GiB over all runs "
        f"(target <= {TARGET_GIB:g} GiB): {'ok' if peak <= TARGET_GIB else 'MISSED'}"
    )
    print(
        f"profile: {profile['requests']:,} requests, {len(profile.get('tiers') or {})} tiers, "
        f"validation {profile['validation']['rows_checked']:,} rows checked"
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the end: a loaded machine slows both")
    if breakdown:
        ingest_only = [sys.executable, "-c", INGEST, str(log), str(tmp / "requests.parquet")]
        for name, argv in (
            ("ingest alone (traffic.ingest: first pass + GX suite + write)", ingest_only),
            ("sizing profile --tier-column none", [*sizing, "--tier-column", "none"]),
            ("floor again", floor_cmd),
        ):
            wall, gib, out = run_child(argv, ROOT)
            how = f"  (requests.parquet written {out})" if argv is ingest_only else ""
            print(f"{name:<62}{wall:>9.2f}{gib:>14.2f}{how}")


if __name__ == "__main__":
    raise SystemExit(main())
