"""`python -m MODULE ARGS...` as a real child process, forked from a warm interpreter (tests only).

Most of a `sizing` command's time in a test is Python importing numpy, pandas, scipy, numba, DuckDB and
great-expectations (1-3 s a process). A few tests run dozens of such commands (the bad-input corpus, the
calibrate verbs). `run_module` keeps one server interpreter per pytest worker that has imported those
third-party libraries once, and forks it for each command: the child is a separate process with its own
cwd, environment, stdin (/dev/null), stdout and stderr, runs the module as `__main__` the way `python -m`
does (runpy, sys.path[0] = cwd), and its exit status, stdout and stderr are returned exactly as
subprocess.run would return them. An uncaught exception prints its traceback and exits 1, as python does.

The project's own heavy modules (params, the readers, the engine model) are imported before the fork too,
but only for commands run without $SIZING_ROOT (pipeline.paths reads it at import) and with this checkout on
the path: such a child gets the very modules a fresh `python -m` would import, none of them having run
anything yet. The module the command runs is never one of them (runpy runs it afresh as `__main__`). A
command with $SIZING_ROOT set is forked from a server that has imported no `pipeline` module. Set FORKRUN=0
to run every command as a plain subprocess instead (the same results, slower).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# third-party libraries the commands import; none reads the cwd or the environment at import in a way the
# commands depend on
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "pyarrow.compute",
    "duckdb",
    "yaml",
    "pydantic",
    "scipy.optimize",
    "numba",
    "great_expectations",
)
# the project's modules a command imports anyway, none of which reads the cwd or the environment at import but
# pipeline.paths ($SIZING_ROOT: such commands use a server without them)
PRELOAD_PIPELINE = (
    "pipeline.params",
    "pipeline.final_curve",
    "pipeline.sim.calibrate",
    "pipeline.traffic",
    "pipeline.quality",
    "pipeline.memory",
    "pipeline.candidates",
    "pipeline.prometheus",
    "pipeline.validation",
)

SERVER = r"""
import importlib, json, os, runpy, sys, traceback
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass
proto_in, proto_out = sys.stdin.buffer, os.fdopen(os.dup(1), "w")
sys.stdout.flush()

def child(req):
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.stdin = open(0, closefd=False)
        sys.argv = [req["argv"][0], *req["argv"][1:]]
        sys.path[0] = os.getcwd()
        sys.modules.pop(req["argv"][0], None)  # run afresh as __main__, as python -m does
        try:
            runpy.run_module(req["argv"][0], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        try:
            import atexit, threading
            threading._shutdown()
            atexit._run_exitfuncs()
        except BaseException:
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code & 0xFF)

for line in proto_in:
    req = json.loads(line)
    proto_out.flush()
    pid = os.fork()
    if pid == 0:
        proto_out.close()
        child(req)
    _, status = os.waitpid(pid, 0)
    proto_out.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\n")
    proto_out.flush()
"""


class _Server:
    def __init__(self, env: dict[str, str], preload: tuple[str, ...]) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(preload)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.TemporaryDirectory() as d:
            out, err = Path(d) / "stdout", Path(d) / "stderr"
            req = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            got: list[str] = []
            reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            reader.join(timeout)
            if not got or not got[0]:
                self.proc.kill()
                raise subprocess.TimeoutExpired(argv, timeout)
            code = int(json.loads(got[0]))
            return code, out.read_text(errors="replace"), err.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_idle: dict[bool, queue.SimpleQueue[_Server]] = {True: queue.SimpleQueue(), False: queue.SimpleQueue()}
_all: list[_Server] = []
_lock = threading.Lock()


def _server_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SIZING_ROOT", None)
    return env


def run_module(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Like subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True)."""
    env = dict(os.environ if env is None else env)
    cmd = [sys.executable, "-m", *argv]
    if os.environ.get("FORKRUN") == "0" or not hasattr(os, "fork") or env.get("PYTHONPATH", str(ROOT)) != str(ROOT):
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    own = "SIZING_ROOT" not in env  # the project's modules may be imported before the fork
    try:
        server = _idle[own].get_nowait()
    except queue.Empty:
        server = _Server(_server_env(), PRELOAD + (PRELOAD_PIPELINE if own else ()))
        with _lock:
            _all.append(server)
    try:
        code, out, err = server.run(argv, cwd, env, timeout)
    except BaseException:
        server.close()
        raise
    _idle[own].put(server)
    return subprocess.CompletedProcess(cmd, code, out, err)


def close_all() -> None:
    """Stop the servers (conftest calls this at the end of the session)."""
    with _lock:
        for server in _all:
            server.close()
        _all.clear()
