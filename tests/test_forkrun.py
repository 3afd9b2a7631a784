"""tests/forkrun.py (commands forked from a warm interpreter) returns what a plain `python -m` subprocess returns:
the exit status, stdout and stderr, byte for byte, for a success, a one-line error and an uncaught exception."""

from __future__ import annotations

import os
import subprocess
import sys

from forkrun import run_module

from tests.conftest import ROOT


def _plain(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_forked_command_is_the_plain_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SIZING_ROOT", None)
    bad = tmp_path / "params.yaml"
    bad.write_text("slo:\n  ttft_p99_ms: .nan\n", encoding="utf-8")
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nprint('out')\nprint('err', file=sys.stderr)\nraise SystemExit(3)\n", encoding="utf-8")
    cases = [
        ["pipeline", "curve", "--help"],  # exit 0, text on stdout
        ["pipeline.params", str(bad)],  # exit 1, one line on stderr
        ["pipeline", "fleet", "--usable-rps", "inf"],  # the CLI's own error line
    ]
    for argv in cases:
        plain, forked = _plain(argv, env), run_module(argv, ROOT, env)
        assert (forked.returncode, forked.stdout, forked.stderr) == (plain.returncode, plain.stdout, plain.stderr), argv
    assert run_module(["pipeline.params", str(bad)], ROOT, env).returncode == 1
    # a module outside the package, run from its folder, with its own exit status
    plain = subprocess.run([sys.executable, "-m", "crash"], cwd=tmp_path, env=env, capture_output=True, text=True)
    forked = run_module(["crash"], tmp_path, env)
    assert (
        (forked.returncode, forked.stdout, forked.stderr)
        == (3, "out\n", "err\n")
        == (
            plain.returncode,
            plain.stdout,
            plain.stderr,
        )
    )
