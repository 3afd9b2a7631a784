"""How long the pipeline takes on the sample: a full `dvc repro` from scratch, a no-op rerun, a price-only rerun.

Runs in a temporary git copy of the project (tracked and unignored files, no outputs). Targets on
the 2-core machine (issue 6): full <= 60 s, no-op <= 3 s, price-only <= 10 s. Prints the figures
and which stages each run executed.

    python benchmarks/pipeline_time.py [--repeat N] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env.pop("SIZING_ROOT", None)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.stdout


def copy_project(dest: Path) -> None:
    """A git repo at `dest` holding the project's tracked and unignored files, no outputs (also the e2e tests' copy)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("metrics/", "data/interim/")) and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)


def stages(out: str) -> str:
    ran = re.findall(r"Running stage '([^']+)'", out)
    return ", ".join(ran) if ran else "none"


def once(tmp: Path, price: float) -> list[tuple[float, str]]:
    """One round in a fresh copy: full repro, no-op repro, price-only repro (wall s, dvc output) each."""
    project = tmp / "project"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    copy_project(project)
    dvc = str(BIN / "dvc")
    runs = [sh([dvc, "repro"], project), sh([dvc, "repro"], project)]
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tco"]["prices"] = {"H100-SXM": price}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    runs.append(sh([dvc, "repro"], project))
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (fresh copy each); prints each and the median")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sizing-pipeline-time-"))
    rounds = [once(tmp, 4.5 + i / 100) for i in range(max(1, args.repeat))]
    print(f"{'run':<34}{'wall s':>8}{'target s':>10}  stages run")
    for i, (name, target) in enumerate(
        (("full dvc repro from scratch", 60), ("no-op rerun", 3), ("price-only rerun (tco.prices)", 10))
    ):
        walls = sorted(r[i][0] for r in rounds)
        wall = statistics.median(walls)
        each = f"   (runs: {', '.join(f'{w:.1f}' for w in walls)})" if len(walls) > 1 else ""
        over = "" if wall <= target else "   (over target)"
        print(f"{name:<34}{wall:>8.1f}{target:>10}  {stages(rounds[-1][i][1])}{over}{each}")
    if not args.keep:
        shutil.rmtree(tmp)
    else:
        print(f"kept {tmp / 'project'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
