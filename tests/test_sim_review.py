"""Regression tests for the review of the engine model: each failed on the code before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline import catalog
from pipeline.sim import calibrate, cost, engine, replay
from tests.conftest import toy_step_cost


def test_a_tp_vllm_refuses_is_refused_by_the_engine_model():
    """TP 3 does not divide Llama-3.1-70B's 64 heads: vLLM will not start it, so no curve is predicted."""
    h100 = catalog.load_gpus()["H100-SXM"]
    why = cost.for_deployment(catalog.load_model("Llama-3.1-70B"), h100, "fp8", "fp8", 3)
    assert isinstance(why, str) and "TP 3 does not divide the 64 attention heads" in why
    assert not isinstance(cost.for_deployment(catalog.load_model("Llama-3.1-70B"), h100, "fp8", "fp8", 4), str)


def test_interval_bounds_by_hand():
    """Residual = predicted / measured - 1 with p10 -10%, p90 +20%: measured lies in [v / 1.2, v / 0.9]."""
    res = {"throughput": {"n": 5, "p10_rel": -0.1, "p90_rel": 0.2}}
    level = {"output_tokens_per_s": 120.0, "itl_ms": {"mean": 10.0}, "ttft_ms": {"p99": 100.0}}
    band = calibrate._interval(level, res, "test")["output_tokens_per_s"]
    assert band == {"low": 100.0, "high": pytest.approx(133.333333), "n": 5}
    assert band["low"] <= 120.0 <= band["high"]


def test_itl_percentiles_beyond_the_exact_gap_buffer_come_from_the_gap_histogram(monkeypatch):
    """Past MAX_EXACT_GAPS the level's ITL is the gap histogram's, not per-request means (which hide the tail)."""
    cfg = engine.EngineConfig(max_num_seqs=8, max_num_batched_tokens=64, kv_blocks=10**6)
    ins = np.array([60, 8, 8, 8], dtype=np.int64)
    outs = np.array([4, 40, 40, 40], dtype=np.int64)
    exact = engine.simulate_closed(toy_step_cost(), cfg, ins, outs, concurrency=4, requests=40)
    monkeypatch.setattr(engine, "MAX_EXACT_GAPS", 0)
    hist = engine.simulate_closed(toy_step_cost(), cfg, ins, outs, concurrency=4, requests=40)
    assert exact.itl_gaps_s is not None and hist.itl_gaps_s is None
    want = float(np.percentile(exact.itl_gaps_s, 99)) * 1e3  # every gap, exactly
    got = calibrate._level_out({"concurrency": 4}, hist, 0.0, True)["itl_ms"]["p99"]
    per_request = float(np.nanpercentile(hist.itl_mean_s, 99)) * 1e3
    assert got == pytest.approx(want, rel=0.01)  # the histogram's bins are <= 0.39% wide
    assert abs(per_request - want) > abs(got - want)


def test_a_request_the_fleet_never_serves_is_an_slo_miss():
    """One of four requests needs more KV than the engine has: it is rejected, counted as a miss, and the SLO
    is not met even though every served request was fast."""
    cfg = engine.EngineConfig(max_num_seqs=8, max_num_batched_tokens=64, block_size=16, kv_blocks=4)
    trace = engine.Trace(
        arrival_s=np.array([0.0, 1.0, 2.0, 3.0]),
        input_tokens=np.array([10, 10, 500, 10], dtype=np.int64),
        output_tokens=np.array([2, 2, 2, 2], dtype=np.int64),
    )
    res = engine.simulate_open(toy_step_cost(), cfg, trace)
    assert res.rejected == 1
    slo = replay.slo_figures(res, {"ttft_p99_ms": 10_000.0, "itl_p99_ms": 10_000.0})
    assert slo["met"] is False
    assert slo["attainment"] == pytest.approx(3 / 4)


def test_the_kernel_cache_is_keyed_by_every_numba_source():
    """numba's cache ignores edits to inlined callees (cost.step_time inside engine/router kernels): the cache
    folder must change whenever any of the three sources does, or an old step time would run silently."""
    import hashlib

    import pipeline.sim as sim

    here = Path(sim.__file__).resolve().parent
    digest = hashlib.sha256(b"".join((here / n).read_bytes() for n in ("cost.py", "engine.py", "router.py")))
    base = os.environ.get("SIZING_NUMBA_CACHE_DIR") or str(here / "__pycache__")
    assert sim._kernel_cache_dir() == str(Path(base) / f"numba-{digest.hexdigest()[:12]}")
    locator = cost.pair_sums_kernel._cache._impl._locator  # the locator numba chose for a kernel
    assert type(locator).__name__ == "KernelCacheLocator"
    assert locator.get_cache_path() == sim._kernel_cache_dir()


_CACHE_PROBE = """
import json
from pipeline.sim import cost
cost.pair_sums_kernel(0.0, 8.0, 4.0)
stats, folder = cost.pair_sums_kernel.stats, cost.pair_sums_kernel._cache._impl._locator.get_cache_path()
print(json.dumps([cost.__file__, folder, len(stats.cache_hits), len(stats.cache_misses)]))
"""


@pytest.mark.e2e
def test_a_copy_of_the_project_elsewhere_loads_the_kernels_another_copy_compiled(tmp_path):
    """Two copies of the package at different paths, one SIZING_NUMBA_CACHE_DIR: the first compiles a kernel, the
    second loads it (numba's NUMBA_CACHE_DIR would file each under a hash of its own path and compile twice). A
    copy whose cost.py differs by one comment compiles afresh, in a folder of its own. Where the folder cannot be
    created (here: below a plain file), the kernels go to a user-wide folder of the same source hash."""
    import json
    import shutil
    import subprocess
    import sys

    import pipeline

    src = Path(pipeline.__file__).resolve().parent
    env = {**os.environ, "SIZING_NUMBA_CACHE_DIR": str(tmp_path / "kernels")}
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    unwritable = {"SIZING_NUMBA_CACHE_DIR": str(tmp_path / "a-file" / "x"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    seen = []
    for name in ("a", "b", "edited", "unwritable"):
        shutil.copytree(src, tmp_path / name / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        if name == "edited":
            with (tmp_path / name / "pipeline" / "sim" / "cost.py").open("a", encoding="utf-8") as f:
                f.write("# an edit\n")
        out = subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE],
            cwd=tmp_path / name,
            env={**env, "PYTHONPATH": str(tmp_path / name), **(unwritable if name == "unwritable" else {})},
            capture_output=True,
            text=True,
            check=True,
        )
        seen.append(json.loads(out.stdout.strip().splitlines()[-1]))
    (a_file, a_dir, a_hits, a_misses), (b_file, b_dir, b_hits, b_misses), (e_file, e_dir, e_hits, _), u = seen
    assert a_file.startswith(str(tmp_path / "a")) and b_file.startswith(str(tmp_path / "b"))
    assert (a_hits, a_misses) == (0, 1), "the first copy compiles"
    assert (b_dir, b_hits, b_misses) == (a_dir, 1, 0), "the second copy, elsewhere, loads what the first compiled"
    assert e_file.startswith(str(tmp_path / "edited")) and e_dir != a_dir and e_hits == 0
    assert any(Path(a_dir).glob("cost.pair_sums_kernel-*.nbi")), "filed directly in the source-hash folder"
    assert Path(a_dir).parent == tmp_path / "kernels"
    assert u[1] == str(tmp_path / "xdg" / "llm-fleet-sizing" / Path(a_dir).name) and u[3] == 1
    assert any(Path(u[1]).glob("cost.pair_sums_kernel-*.nbi"))


def test_sizing_simulate_judges_itl_per_request_as_the_curves_do():
    """A 1,000-token prompt arriving at 0.1 s stalls a running 50-token decode for one 1.011 s step. By hand
    (t = 0.01 s + 1 ms per scheduled token): the decode's 49 gaps are 47 x 11 ms + 1,011 ms + 12 ms = 1.540 s, a
    mean ITL of 31.43 ms; the long request's only gap is 12 ms. The p99 over requests (linear) is 12 + 0.99 x 19.43
    = 31.23 ms: inside a 50 ms SLO, although the p99 over every gap (the stall) is ~521 ms. `sizing simulate` judges
    the per-request figure, as the curves and the fleet replay do."""
    cfg = engine.EngineConfig(max_num_seqs=8, max_num_batched_tokens=2048, block_size=16, kv_blocks=1000)
    trace = engine.Trace(
        arrival_s=np.array([0.0, 0.1]),
        input_tokens=np.array([10, 1000], dtype=np.int64),
        output_tokens=np.array([50, 2], dtype=np.int64),
    )
    res = engine.simulate_open(toy_step_cost(), cfg, trace)
    s = res.summary()
    assert s["tpot_ms"]["p99"] == pytest.approx(12 + 0.99 * (1540 / 49 - 12), abs=1e-3)
    assert s["itl_ms"]["p99"] > 500
    slo = replay.slo_figures(res, {"ttft_p99_ms": 10_000.0, "itl_p99_ms": 50.0})
    assert slo["met"] is True and slo["itl_attainment"] == 1.0
    assert replay.slo_figures(res, {"ttft_p99_ms": 10_000.0, "itl_p99_ms": 30.0})["met"] is False
