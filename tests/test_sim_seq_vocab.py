"""The per-sequence term weighted by vocabulary (pipeline/sim/cost.py SEQ_TERM "vocab"): figures by hand.

b4 is seconds per sequence of a REF_VOCAB (128,256, Llama 3) vocabulary: a sequence of a 32,000-entry model
(Llama 2, Mixtral) weighs 32000 / 128256 = 0.2495, one of Qwen2.5 (152,064) 1.1856. A deployment's own fit is the
same in seconds per sequence whatever the weighting; only what the pool transfers between vocabularies changes.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import catalog
from pipeline.sim import calibrate as C
from pipeline.sim import cost as K
from tests.conftest import calibration_level


@pytest.fixture(scope="module")
def h100() -> catalog.GPU:
    return catalog.load_gpus()["H100-SXM"]


def _deployment_set(model: str, gpu: catalog.GPU, levels: list) -> C.DeploymentSet:
    m = catalog.load_model(model)
    s = K.for_deployment(m, gpu, "bf16", "bf16", 1)
    assert not isinstance(s, str)
    dep = C.Deployment(model, gpu.name, 1, 1, "bf16", "bf16", "bf16", "vllm")
    return C.DeploymentSet(dep, gpu.arch, s, levels, ["x.json"])


def test_a_sequence_weighs_its_vocabulary_over_llama3s(h100):
    assert K.SEQ_TERM == "vocab" and K.REF_VOCAB == 128256
    llama3 = K.for_deployment(catalog.load_model("Llama-3.1-8B"), h100, "bf16", "bf16", 1)
    qwen = K.for_deployment(catalog.load_model("Qwen2.5-7B"), h100, "bf16", "bf16", 1)
    assert llama3.seq_weight == 1.0  # 128256 / 128256: Llama-3 models keep the seconds per sequence they had
    assert qwen.seq_weight == pytest.approx(152064 / 128256, rel=1e-15)  # 1.18563...
    # the per-sequence column of the terms: n x weight
    assert qwen.terms(1.0, 1.0, 1.0, 1.0, 1.0, 256.0)[4] == pytest.approx(256 * 1.185628, rel=1e-6)


def test_b4_costs_each_sequence_in_proportion_to_its_vocabulary(h100):
    b = (0.0, 1.0, 1.0, 1.0, 4e-5, 1.0)
    qwen = K.for_deployment(catalog.load_model("Qwen2.5-7B"), h100, "bf16", "bf16", 1)
    with_b4 = qwen.with_coeffs(K.Coefficients(b, "calibrated", "t"))
    without = qwen.with_coeffs(K.Coefficients((*b[:4], 0.0, b[5]), "calibrated", "t"))
    # 256 sequences x 4e-5 s x 152064 / 128256 = 12.141 ms more per decode iteration
    assert with_b4.decode_step_s(256, 1000) - without.decode_step_s(256, 1000) == pytest.approx(12.1406e-3, rel=1e-4)
    # the numba kernel the engine runs reads the same weight (packed slot 13)
    agg = (256.0, 256e3, 256e3, 256e3, 256e3, 256.0)
    assert with_b4.packed()[13] == qwen.seq_weight
    assert K.step_time(with_b4.packed(), *agg) == pytest.approx(float(with_b4.step_s(*agg)), rel=1e-12)


def test_count_weighting_is_one_per_sequence(h100, monkeypatch):
    monkeypatch.setattr(K, "SEQ_TERM", "count")
    assert K.for_deployment(catalog.load_model("Qwen2.5-7B"), h100, "bf16", "bf16", 1).seq_weight == 1.0
    monkeypatch.setattr(K, "SEQ_TERM", "per-token")
    with pytest.raises(ValueError, match="allowed: count, vocab"):
        K.for_deployment(catalog.load_model("Qwen2.5-7B"), h100, "bf16", "bf16", 1)


def test_the_prior_pull_and_floor_of_b4_are_in_seconds_per_sequence(h100):
    qwen = K.for_deployment(catalog.load_model("Qwen2.5-7B"), h100, "bf16", "bf16", 1)
    w = qwen.seq_weight
    assert C._zero_scale(4, w) == pytest.approx(C.ZERO_SCALES[4] / w)  # 1e-4 s per sequence / 1.1856
    assert C._zero_scale(0, w) == C.ZERO_SCALES[0] and C._zero_scale(6, w) == C.H_SCALE
    assert C.floor_of(qwen)[4] * w == pytest.approx(C.FLOOR[4]) and C.floor_of(qwen)[1] == C.FLOOR[1]


def test_step1_finds_the_same_seconds_per_sequence_under_either_weighting():
    # decode rows of iterations whose time is exactly b . terms at b = (1e-4 s, -, 1.2, 1.1, 5e-5 s/seq, -):
    # 1 + weights + KV + sequences, batches 1..256 at two contexts (so KV and sequences are told apart); the same
    # rows with the sequence column weighing 0.25 fit b4 four times larger, the same 5e-5 s per sequence
    truth = np.array([1e-4, 1.0, 1.2, 1.1, 5e-5, 1.0, 0.0])
    raw = []
    for batch in (1, 8, 64, 256):
        for ctx in (500, 4000):
            raw.append([1.0, 0.0, 5e-3, batch * ctx * 1.31e5 / 3.35e12, float(batch), 0.0, 0.0])
    raw = np.array(raw)
    fits = []
    for w in (1.0, 0.25):
        cols = raw.copy()
        cols[:, 4] *= w
        rows = cols / (cols @ (truth / np.array([1, 1, 1, 1, w, 1, 1])))[:, None]  # each row's time is 1 (relative)
        prior = np.array([0.0, 2.0, 1.25, 1.25, 0.0, 1.0, 0.0])
        t = C.fit_aggregates(rows, np.zeros((0, C.NPAR)), prior, seq_weight=w)
        fits.append(t * np.array([1, 1, 1, 1, w, 1, 1]))
    assert fits[0][4] == pytest.approx(5e-5, rel=0.05)  # the prior pull costs a little
    np.testing.assert_allclose(fits[1], fits[0], rtol=1e-6, atol=1e-12)
    # without the weight-aware pull (seq_weight left at 1) the weighted fit would be pulled 4x harder: not equal
    cols = raw.copy()
    cols[:, 4] *= 0.25
    rows = cols / (cols @ (truth / np.array([1, 1, 1, 1, 0.25, 1, 1])))[:, None]
    naive = C.fit_aggregates(rows, np.zeros((0, C.NPAR)), np.array([0.0, 2.0, 1.25, 1.25, 0.0, 1.0, 0.0]))
    assert abs(naive[4] * 0.25 - fits[0][4]) > 1e-9


def test_the_pool_transfers_b4_per_vocabulary_entry(h100):
    # two deployments' own fits, in their own units: b4 = 6e-5 (Llama 3, weight 1) and 2e-5 (Qwen2.5, weight
    # 1.1856); the median-of-fits pool is 4e-5 in REF_VOCAB units, so a Llama-2-size vocabulary (32000) pays
    # 4e-5 x 32000 / 128256 = 9.98e-6 s per sequence where the pool is transferred
    lv = [calibration_level()]
    a, b = _deployment_set("Llama-3.1-8B", h100, lv), _deployment_set("Qwen2.5-7B", h100, lv)
    ta = np.array([1e-5, 1.1, 1.5, 1.4, 6e-5, 1.0, 0.01])
    tb = np.array([1e-5, 1.1, 1.5, 1.4, 2e-5, 1.0, 0.01])
    pool = C.pool_of_fits([a, b], {a.deployment.key: ta, b.deployment.key: tb}, C.fit_pooled([a, b]))
    assert pool.theta[4] == pytest.approx(4e-5)
    mixtral = catalog.load_model("Mixtral-8x7B-v0.1")  # vocab 32000
    s = K.for_deployment(mixtral, h100, "bf16", "bf16", 2)
    assert not isinstance(s, str) and mixtral.vocab == 32000
    s = s.with_coeffs(K.Coefficients(tuple(pool.theta_for("hopper")[0][:6]), "transferred", "pool"))
    assert s.terms(0.0, 0.0, 0.0, 0.0, 0.0, 1.0)[4] * pool.theta[4] == pytest.approx(9.98e-6, rel=1e-3)
