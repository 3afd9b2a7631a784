"""The overlap forms of the iteration time (pipeline/sim/cost.py STEP_FORMS), their fit (calibrate.fit_step1) and the
roofline params reaching the prior (issue 13 review leftovers).

Hand figures: Llama-3.1-8B on one H100-SXM at the roofline prior (b1 = 1/0.45, b2 = b3 = 1/0.8), constants as in
tests/test_sim_cost.py (8,030,261,248 params in bf16; 131,072 KV bytes per token; 524,288 attention FLOPs per
(token, context) pair; 989.4 TFLOPS; 3.35 TB/s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import catalog
from pipeline.sim import calibrate as C
from pipeline.sim import cost, engine

PARAMS_8B = 8_030_261_248
KV_8B = 131_072
PAIR_8B = 524_288
PEAK = 989.4e12
BW = 3.35e12
MFU, BWE = 0.45, 0.8


@pytest.fixture(scope="module")
def h100() -> catalog.GPU:
    return catalog.load_gpus()["H100-SXM"]


def llama8b(h100: catalog.GPU, form: str) -> cost.StepCost:
    s = cost.for_deployment(catalog.load_model("Llama-3.1-8B"), h100, "bf16", "bf16", 1)
    assert not isinstance(s, str)
    return s.with_coeffs(cost.Coefficients.prior(MFU, BWE, form=form))


def test_decode_step_of_256_long_sequences_by_hand(h100):
    """256 sequences decoding at 4,000 tokens of context: the linear layers are compute-bound (256 tokens), attention
    is KV-bound. Worked on paper:
    linear FLOPs 2 x 8,030,261,248 x 256 / 989.4e12 / 0.45 = 9.2343e-3 s; weights 16,060,522,496 B / 3.35e12 / 0.8
    = 5.9927e-3 s; attention 524,288 x 1,024,000 / 989.4e12 / 0.45 = 1.2058e-3 s; KV 131,072 x 1,024,000 / 3.35e12
    / 0.8 = 5.0081e-2 s."""
    lin = 2 * PARAMS_8B * 256 / PEAK / MFU
    w = 2 * PARAMS_8B / BW / BWE
    attn = PAIR_8B * 1_024_000 / PEAK / MFU
    kv = KV_8B * 1_024_000 / BW / BWE
    assert (lin, w, attn, kv) == pytest.approx((9.2343e-3, 5.9927e-3, 1.2058e-3, 5.0081e-2), rel=1e-4)
    expected = {
        "additive": lin + w + attn + kv,  # 6.6514e-2
        "overlap": max(lin + attn, w + kv),  # 5.6074e-2: the memory side
        "overlap-phase": max(lin, w) + max(attn, kv),  # 5.9315e-2: linear compute-bound + attention KV-bound
    }
    assert expected["overlap"] == pytest.approx(5.6074e-2, rel=1e-4)
    assert expected["overlap-phase"] == pytest.approx(5.9315e-2, rel=1e-4)
    for form, want in expected.items():
        s = llama8b(h100, form)
        got = s.decode_step_s(256, 4000)
        assert got == pytest.approx(want, rel=1e-12), form
        # the numba kernel the engine calls agrees with the numpy path
        agg = (256.0, 256 * 4000.0, 256 * 4000.0, 256 * 4000.0, 256 * 4000.0, 256.0)
        assert cost.step_time(s.packed(), *agg) == pytest.approx(want, rel=1e-12), form
        # active_terms . b is the iteration time exactly: one side of each max kept
        cols = s.active_terms(*agg)
        assert float(cols @ np.asarray(s.coeffs.b)) == pytest.approx(want, rel=1e-12)
    phase = llama8b(h100, "overlap-phase").active_terms(*agg)
    assert phase[2] == 0.0 and phase[3] > 0  # weights hidden under the GEMMs, KV read in full
    assert phase[1] == pytest.approx(2 * PARAMS_8B * 256 / PEAK, rel=1e-12)  # linear FLOPs only (b1 excluded)


def test_prefill_alone_is_compute_bound_in_the_overlap_forms(h100):
    """3,000 prompt tokens in one chunk: FLOPs 2 x 8,030,261,248 x 3,000 + 524,288 x 3,000 x 3,001 / 2 over 0.45 x
    peak = 0.113518 s (5.05416e13 FLOPs); the weight (5.99e-3 s) and KV (1.47e-4 s) reads hide under them."""
    flops = 2 * PARAMS_8B * 3000 + PAIR_8B * 3000 * 3001 / 2
    want = flops / PEAK / MFU
    assert want == pytest.approx(0.113518, rel=1e-5)
    for form in ("overlap", "overlap-phase"):
        assert llama8b(h100, form).prefill_s(3000, 8192) == pytest.approx(want, rel=1e-12)
    additive = llama8b(h100, "additive").prefill_s(3000, 8192)
    assert additive == pytest.approx(want + 2 * PARAMS_8B / BW / BWE + KV_8B * 3000 / BW / BWE, rel=1e-12)


@pytest.mark.parametrize("form", ["overlap", "overlap-phase"])
def test_engine_lone_request_follows_the_form(h100, form):
    """The engine's kernels use the form (a stale numba cache of engine.py would not): a lone request's TTFT is the
    cost model's own sum over its prefill chunks, and its decode gaps are single-sequence decode steps."""
    s = llama8b(h100, form)
    tr = engine.Trace(np.array([0.0]), np.array([3000]), np.array([3]))
    r = engine.simulate_open(s, engine.EngineConfig(max_num_batched_tokens=1024), tr)
    assert r.ttft_s[0] == pytest.approx(s.prefill_s(3000, 1024), rel=1e-12)
    assert r.ttft_s[0] < llama8b(h100, "additive").prefill_s(3000, 1024)
    gaps = np.asarray(r.itl_gaps_s)
    assert gaps[0] == pytest.approx(s.decode_step_s(1, 3001), rel=1e-12)


def test_coefficients_form_is_checked_and_recorded():
    with pytest.raises(ValueError, match="form"):
        cost.Coefficients((0, 1, 1, 1, 0, 1), form="nope")
    c = cost.Coefficients((0, 1, 1, 1, 0, 1), "calibrated", "x", "overlap")
    assert c.as_dict()["form"] == "overlap"


# ------------------------------------------------------------------------------------------------ the fit


TRUE_B = (0.0, 1.6, 1.3, 1.4, 0.0, 1.0)
TRUE_H = 0.02


def write_sweep(folder: Path, b: tuple[float, ...], form: str, h100: catalog.GPU) -> None:
    """vLLM result files of the simulator at coefficients b in `form` (closed loop 1..64 and 5 req/s)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = catalog.load_model("Llama-3.1-8B")
    s = cost.for_deployment(model, h100, "bf16", "bf16", 1, 1, cost.Coefficients(b, "calibrated", "truth", form))  # type: ignore[arg-type]
    assert not isinstance(s, str)
    limits = C.engine_limits({"engine": "vllm", "weight_dtype": "bf16", "kv_dtype": "bf16"}, model, h100, s, 1, 1)
    rng = np.random.default_rng(3)
    n = 200
    ins = rng.integers(100, 2000, n).astype(np.int64)
    outs = rng.integers(50, 400, n).astype(np.int64)
    for kind, load in (("c", 1), ("c", 4), ("c", 16), ("c", 64), ("qps", 5.0)):
        if kind == "c":
            res = engine.simulate_closed(s, limits.config(), ins, outs, concurrency=int(load), requests=n)
        else:
            arr = np.cumsum(np.random.default_rng(0).exponential(1.0 / load, n))
            arr = (arr - arr[0]) * (n - 1) / load / (arr[-1] - arr[0])
            res = engine.simulate_open(s, limits.config(), engine.Trace(arr, ins, outs))
        ttft, e2e, tpot = (res.ttft_s + TRUE_H) * 1e3, (res.e2e_s + TRUE_H) * 1e3, res.itl_mean_s * 1e3
        summ = res.summary()
        tps = float(summ["output_tokens_per_s"])
        if kind == "c":
            tps *= float(np.mean(res.e2e_s)) / (float(np.mean(res.e2e_s)) + TRUE_H)
        rec = {
            "backend": "vllm",
            "model_id": "meta-llama/Llama-3.1-8B-Instruct",
            "num_prompts": n,
            "request_rate": "inf" if kind == "c" else load,
            "max_concurrency": int(load) if kind == "c" else None,
            "duration": n / float(summ["rps"]),
            "completed": n,
            "total_input_tokens": int(ins.sum()),
            "total_output_tokens": int(outs.sum()),
            "request_throughput": float(summ["rps"]),
            "output_throughput": tps,
            "mean_ttft_ms": float(ttft.mean()),
            "median_ttft_ms": float(np.median(ttft)),
            "p99_ttft_ms": float(np.percentile(ttft, 99)),
            "mean_tpot_ms": float(np.nanmean(tpot)),
            "median_tpot_ms": float(np.nanmedian(tpot)),
            "p99_tpot_ms": float(np.nanpercentile(tpot, 99)),
            "mean_e2el_ms": float(e2e.mean()),
            "median_e2el_ms": float(np.median(e2e)),
            "p99_e2el_ms": float(np.percentile(e2e, 99)),
            "input_lens": ins.tolist(),
            "output_lens": outs.tolist(),
        }
        (folder / f"{kind}_{load:g}.json").write_text(json.dumps(rec))
    (folder / "manifest.yaml").write_text(
        "model: Llama-3.1-8B\ngpu: H100-SXM\ngpu_count: 1\ntp: 1\nweight_dtype: bf16\nkv_dtype: bf16\n"
        "engine: vllm\nload_mode: closed\n"
    )


def test_overlap_fit_recovers_the_coefficients_the_simulator_generated(tmp_path, h100, monkeypatch):
    """Curves the simulator generated in the overlap-phase form: step 1 (active sets) then the replay refinement
    recover b1 (prefill, compute-bound), b2 (decode weights) and b3 (decode KV) and h."""
    monkeypatch.setattr(cost, "STEP_FORM", "overlap-phase")
    write_sweep(tmp_path / "s", TRUE_B, "overlap-phase", h100)
    cal = C.calibrate([tmp_path / "s"], lodo=False, lolo=False)
    (ds,) = cal.sets
    assert ds.cost.coeffs.form == "overlap-phase"
    fit = cal.fits[ds.deployment.key]
    assert fit.basis == "calibrated"
    for k in (1, 2, 3):
        assert fit.theta[k] == pytest.approx(TRUE_B[k], rel=0.05), (k, fit.theta)
    assert fit.theta[6] == pytest.approx(TRUE_H, rel=0.1)
    assert cal.coefficients(ds.deployment.key).form == "overlap-phase"
    assert cal.as_dict()["settings"]["step_form"] == "overlap-phase"


def test_active_set_step1_on_exact_rows(h100):
    """Rows generated exactly by the overlap-phase model (decode rows at several batches, prefill rows at several
    prompt lengths) are fitted back to the generating b by the active-set NNLS (prior weight 0)."""
    s = llama8b(h100, "overlap-phase")
    true = np.array([0.0, 1.7, 1.25, 1.35, 0.0, 1.0, 0.0])
    dec = []
    for n in (1, 8, 32, 128, 256):
        agg = (n, n * 2000.0, n * 2000.0, n * 2000.0, n * 2000.0, n)
        row = np.append(s.active_terms(*agg, b=true[:6]), 0.0)
        dec.append(row / float(row @ true))
    pre = []
    for L in (500, 1000, 4000):
        full = L * (L + 1) / 2
        row = np.append(s.active_terms(L, full, full, L, L, 1, b=true[:6]), 0.0)
        pre.append(row / float(row @ true))
    prior = C.prior_theta(s)
    got = C.fit_aggregates(np.array(dec), np.array(pre), prior, weight=0.0)
    assert got[1:4] == pytest.approx(true[1:4], rel=1e-6)


# ------------------------------------------------------------------------------------- roofline params


def test_roofline_params_reach_the_prior(h100):
    """params.yaml's roofline section (prefill_mfu 0.5, bandwidth_efficiency 0.64) gives b1 = 2, b2 = b3 = 1.5625;
    the defaults stay 1/0.45 and 1/0.8."""
    m = catalog.load_model("Llama-3.1-8B")
    sec = {"prefill_mfu": 0.5, "bandwidth_efficiency": 0.64, "decode_mfu": 0.3}
    s = cost.for_deployment(m, h100, "bf16", "bf16", 1, roofline=sec)
    assert not isinstance(s, str)
    assert s.coeffs.b == (0.0, 2.0, 1.5625, 1.5625, 0.0, 1.0)
    assert s.coeffs.basis == "roofline"
    assert list(C.prior_theta(s)) == [0.0, 2.0, 1.5625, 1.5625, 0.0, 1.0, 0.0]
    d = cost.for_deployment(m, h100, "bf16", "bf16", 1)
    assert not isinstance(d, str)
    assert d.coeffs.b == pytest.approx((0.0, 1 / 0.45, 1.25, 1.25, 0.0, 1.0))
    assert list(C.prior_theta(d, roofline=sec)) == [0.0, 2.0, 1.5625, 1.5625, 0.0, 1.0, 0.0]
    # the pydantic-validated section (what the stage passes) works the same
    from pipeline import params

    v = params.validate_section("roofline", sec)
    assert cost.roofline_prior(v).b == (0.0, 2.0, 1.5625, 1.5625, 0.0, 1.0)


def test_calibrate_stage_passes_the_roofline_section(tmp_path, h100):
    """The calibrate stage reads the roofline section: every deployment's prior coefficients in
    metrics/calibration.json follow it (before this fix they were 1/0.45 and 1/0.8 whatever params.yaml said)."""
    from pipeline.layout import Layout
    from pipeline.stages import calibrate as stage

    write_sweep(tmp_path / "bench" / "s", TRUE_B, cost.STEP_FORM, h100)
    sections = {
        "calibration": {"refine_passes": 0, "lolo_passes": 0},
        "curve": {"source": "bench"},
        "roofline": {"prefill_mfu": 0.5, "bandwidth_efficiency": 0.64, "decode_mfu": 0.3},
    }
    doc = stage.compute(sections, Layout(tmp_path))
    (dep,) = doc["deployments"]
    assert dep["prior_coefficients"]["flops"] == 2.0
    assert dep["prior_coefficients"]["weight_bytes"] == 1.5625
    assert dep["prior_coefficients"]["kv_bytes"] == 1.5625
    sets = C.deployment_sets([tmp_path / "bench" / "s"])  # no section: the defaults
    assert sets[0].cost.coeffs.b[1] == pytest.approx(1 / 0.45)
