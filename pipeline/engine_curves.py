"""Step 7b inside the curve stage: every candidate deployment on a curve at the workload's own lengths.

Pure: every input is an argument (the memory stage's candidates, metrics/calibration.json as a dict,
length arrays, the measured picks of pipeline.final_curve); nothing is read or written here.

Method (method.md 7b, issue 14 "The curve of every candidate"):

- Candidates. Every entry of metrics/memory.json `candidates` that fits (tier x GPU x weight/KV
  precision at the TP x PP the memory stage picked), plus, per fleet, every benchmarked deployment of
  that fleet's sweeps: when the memory stage picked another TP x PP for the same GPU and precisions, the
  benchmarked one is a candidate of its own, `<id>/tp<N>` (`-pp<M>` when PP > 1); when the memory stage
  rejects it, `memory_rejected` says why.
- Lengths. `LENGTH_POOL` requests sampled from the fleet's own rows of the log with a fixed seed:
  stratified on the prompt length (the rows sorted by input tokens, cut into `LENGTH_POOL` equal strata,
  one row drawn from each, so each row keeps its own output length); of `LENGTH_DRAWS` such draws the one
  whose p50 and p95 (input and output) are nearest the fleet's is kept, then shuffled. The pool's p50
  and p95 match the fleet's within about 1% on the input and 2% on the output.
- Basis, in this order:
  1. `measured`: a sweep of this deployment for this fleet whose p95 lengths are within
     `curve.length_tolerance` of the workload's (final_curve's selection), or the fleet's sizing curve when
     its mismatch is within `curve.max_length_mismatch` (it sizes the fleet, flagged); its C_max and usable
     RPS are the measured curve's (pipeline/curve.py), its interval null;
  2. `calibrated`: the deployment is in metrics/calibration.json with its own fit (the b's and the
     per-request overhead h of that deployment; a deployment whose levels could not identify b carries
     the pooled b and is `transferred`);
  3. `transferred`: the pooled b x the GPU family's scale (`PooledFit.theta_for`);
  4. `roofline`: no calibration: the roofline prior (b1 = 1/MFU, b2 = b3 = 1/bandwidth efficiency).
- Curve. Closed-loop levels through the simulator (pipeline/sim/engine.py), the benchmark's own
  protocol (as `sizing predict`): at concurrency c, max(`MIN_REQUESTS`, `REQUESTS_PER_SLOT` x c)
  measured requests (at most `MAX_REQUESTS`), every slot starting at t = 0, so TTFT p99 holds the
  start-up burst as the benchmark's does; lengths in pool order. Concurrency doubles from 1 (`GRID`)
  until a level misses an SLO (past the crossing), then the geometric midpoint of the bracket where
  the SLO is crossed is added. KV capacity in blocks is the memory stage's engine profile
  of that candidate (a benchmarked TP the memory stage did not pick: the calibration's engine limits
  at that TP); max_num_seqs and max_num_batched_tokens the calibrated deployment's, else vLLM's
  defaults. h is added to every TTFT and E2E and closed-loop throughput scales by E2E / (E2E + h).
  ITL is the per-request mean inter-token latency (TPOT), as the measured readers take it.
- C_max and usable RPS: `pipeline.curve.operating_point` on the predicted levels (the same SLO-crossing
  and interpolation rules as a measured curve).
- 80% prediction interval (the basis's residuals in metrics/calibration.json: leave-one-level-out of
  the deployment for `calibrated`, leave-one-deployment-out of the pooled fit for `transferred`;
  residual r = predicted / measured - 1, p10 and p90). A measured latency is predicted / (1 + r), so
  the measured curve crosses the SLO where the predicted one crosses SLO x (1 + r): C_max_lo is the
  crossing of the predicted TTFT p99 at SLO x (1 + p10 of the TTFT residuals) and of the predicted ITL
  at SLO x (1 + p10 of the ITL residuals), whichever is lower; C_max_hi the same at p90. Usable RPS lo/hi
  is the predicted RPS at C_max_lo / C_max_hi divided by (1 + p90) / (1 + p10) of the throughput
  residuals. Both ends take the two error sources at their 10th/90th percentiles together, so the band
  is at least 80% wide (conservative). A bound beyond the highest level simulated is capped there
  (`capped`). The band need not contain the point estimate when the residuals are one-sided (a biased
  fit). `roofline` has no residuals of its own here: null, with why.
- Like for like (`anchor`): a sweep runs at one fixed length near the workload's p95, the engine model at the
  fleet's sampled length mix (mean far below p95), so raw engine-model figures are not comparable with a measured
  one (several times higher on the sample, whatever the hardware). Where a fleet's sizing curve is measured, its
  benchmarked deployment D_b is also simulated at the mix, on its own basis (u_model, C_max_model) and, when that
  is its own fit, on the pooled fit too; every model-based candidate's usable RPS and band are scaled by measured
  usable RPS / u_model(D_b) of the candidate's basis (C_max and its band by measured C_max / C_max_model), the raw
  figures kept as usable_rps_model, c_max_model, interval_model. A fleet without a measured sizing curve (no
  sweep) or whose D_b has no model C_max is not anchored (factor null, why).
- Carried (`carry`): a fleet whose sizing curve is beyond curve.max_length_mismatch keeps the measured figure,
  carried to the workload's p95 lengths like for like on the sweep's p95-point convention: usable = measured usable
  RPS x u_model(D_b, every request at the workload's p95 input / output) / u_model(D_b, every request at the sweep's
  own lengths), same coefficients; C_max likewise. D_b's basis stays calibrated / transferred, with a `carried`
  block; the fleet is then anchored on the carried figure as a measured fleet is (factor = carried usable RPS /
  u_model(D_b at the mix)). At a ratio near 1 the carry factor is near 1: crossing the threshold does not move
  the sizing.
- Length match (LengthMatch): curve / workload p95 ratios on input and output; within tolerance when
  both |ratio - 1| <= curve.length_tolerance; used for sizing when both ratios are within
  curve.max_length_mismatch either way (1/m <= ratio <= m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline import curve as cv
from pipeline.errors import InputError

LENGTH_POOL = 1024
"""Requests in a fleet's length sample (stratified on the prompt length)."""
LENGTH_SEED = 0
LENGTH_DRAWS = 16
"""Stratified draws of a fleet's lengths; the one nearest the rows' p50 and p95 is kept."""
MIN_REQUESTS = 100
"""Measured requests of a predicted level, at least (the sample sweeps: num_prompts = max(100, 10 x concurrency))."""
REQUESTS_PER_SLOT = 10
"""... and this many per concurrent slot (vLLM bench's num_prompts = 10 x max_concurrency habit)."""
MAX_REQUESTS = 1500
"""... and at most this many (a level of 512 slots measures 1,500 requests: its start-up burst is a third of them)."""
GRID = tuple(2**k for k in range(11))
"""Concurrencies tried in order, 1 .. 1024, until one misses an SLO (then one more and a midpoint)."""
LEVEL_KEYS = cv.LEVEL_KEYS  # pipeline.curve: one level's figures
ENGINE_DEFAULTS = {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "block_size": 16, "mixed_prefill": True}
LEVEL_LEVEL = 0.8  # the interval's level (p10..p90)
BASES = ("measured", "calibrated", "transferred", "roofline")
RESIDUAL_METRICS = {"ttft": "ttft", "itl": "itl_mean", "rps": "throughput"}


# ------------------------------------------------------------------------------------------- lengths


@dataclass(frozen=True)
class LengthSample:
    """A fleet's sampled (input, output) lengths, in simulation order, and where they came from."""

    input_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str
    rows: int  # rows of the log they were drawn from

    def stats(self) -> dict[str, Any]:
        """The `lengths` block of a candidate: source, requests, p50 and p95 of input and output."""
        i, o = self.input_tokens, self.output_tokens
        return {
            "source": self.source,
            "requests": len(i),
            "input_tokens_p50": round(float(np.percentile(i, 50)), 1),
            "input_tokens_p95": round(float(np.percentile(i, 95)), 1),
            "output_tokens_p50": round(float(np.percentile(o, 50)), 1),
            "output_tokens_p95": round(float(np.percentile(o, 95)), 1),
        }


def sample_lengths(
    input_tokens: np.ndarray, output_tokens: np.ndarray, n: int = LENGTH_POOL, seed: int = LENGTH_SEED, source: str = ""
) -> LengthSample:
    """`n` rows stratified on the prompt length (one random row per equal-count stratum), then shuffled.

    Of `LENGTH_DRAWS` such draws (one generator, `seed`), the one whose p50 and p95 of input and output are nearest
    the rows' own (the largest relative gap smallest) is kept: the output length is not stratified, and one draw
    can miss its median by 5%. Fewer rows than `n`: every row, shuffled. Rows with a non-positive length are
    dropped first."""
    ins = np.asarray(input_tokens, np.int64).ravel()
    outs = np.asarray(output_tokens, np.int64).ravel()
    if len(ins) != len(outs):
        raise InputError(f"{source or 'lengths'}: input and output lengths differ in count ({len(ins)} vs {len(outs)})")
    keep = (ins >= 1) & (outs >= 1)
    ins, outs = ins[keep], outs[keep]
    if len(ins) == 0:
        raise InputError(f"{source or 'lengths'}: no request with input and output tokens >= 1 to sample lengths from")
    rng = np.random.default_rng(seed)
    if len(ins) <= n:
        pick = np.arange(len(ins))
    else:
        order = np.lexsort((outs, ins))  # by input, ties by output: a stable, data-only order
        edges = np.linspace(0, len(ins), n + 1).round().astype(np.int64)
        want = np.percentile(ins, [50, 95]), np.percentile(outs, [50, 95])
        best = None
        for _ in range(LENGTH_DRAWS):
            p = order[edges[:-1] + (rng.random(n) * (edges[1:] - edges[:-1])).astype(np.int64)]
            gap = max(
                float(np.max(np.abs(np.percentile(ins[p], [50, 95]) / want[0] - 1))),
                float(np.max(np.abs(np.percentile(outs[p], [50, 95]) / want[1] - 1))),
            )
            if best is None or gap < best[0]:
                best = (gap, p)
        pick = best[1]  # type: ignore[index]
    pick = pick[rng.permutation(len(pick))]
    return LengthSample(ins[pick], outs[pick], source, len(ins))


def length_match(
    curve_in: float | None,
    curve_out: float | None,
    want_in: float | None,
    want_out: float | None,
    tolerance: float,
    max_mismatch: float,
) -> dict[str, Any] | None:
    """LengthMatch of a measured curve against the workload's p95 lengths (None when either side is unknown)."""
    if not curve_in or not curve_out or not want_in or not want_out:
        return None
    ri, ro = curve_in / want_in, curve_out / want_out
    within = abs(ri - 1) <= tolerance and abs(ro - 1) <= tolerance
    used = all(1 / max_mismatch <= r <= max_mismatch for r in (ri, ro))
    return {
        "curve_input_tokens": round(float(curve_in), 1),
        "curve_output_tokens": round(float(curve_out), 1),
        "workload_input_tokens_p95": round(float(want_in), 1),
        "workload_output_tokens_p95": round(float(want_out), 1),
        "input_ratio": round(ri, 4),
        "output_ratio": round(ro, 4),
        "tolerance": tolerance,
        "max_mismatch": max_mismatch,
        "within_tolerance": bool(within),
        "used_for_sizing": bool(used),
    }


def mismatch_message(tier: str, curve: str, lm: dict[str, Any]) -> str:
    """The loud sentence of one length mismatch (report 10 and op.length_mismatch)."""
    head = (
        f"LENGTH MISMATCH ({'pooled fleet' if tier == 'all' else 'tier ' + tier}): curve {curve} was measured at "
        f"{lm['curve_input_tokens']:.0f} in / {lm['curve_output_tokens']:.0f} out, the workload's p95 is "
        f"{lm['workload_input_tokens_p95']:.0f} / {lm['workload_output_tokens_p95']:.0f} "
        f"(ratios {lm['input_ratio']:.2f} / {lm['output_ratio']:.2f}; tolerance {lm['tolerance']:.0%})"
    )
    if lm["used_for_sizing"]:
        return (
            head
            + f": it still sizes the fleet (within curve.max_length_mismatch = {lm['max_mismatch']:g}x); benchmark at the workload's lengths"
        )
    return head + (
        f": beyond curve.max_length_mismatch = {lm['max_mismatch']:g}x, so it does NOT size the fleet as measured; "
        "its figures are carried to the workload's p95 lengths with the engine model of the same deployment (both "
        "points at one fixed length, as a sweep runs); benchmark at the workload's lengths"
    )


# ------------------------------------------------------------------------------------------- calibration.json


@dataclass(frozen=True)
class CalDeployment:
    """One fitted deployment of metrics/calibration.json."""

    key: str
    model: str
    gpu: str
    tp: int
    pp: int
    weights: str
    kv: str
    engine: str | None
    basis: str  # calibrated | transferred (its levels could not identify b)
    theta: tuple[float, ...]  # b0..b5, h
    limits: dict[str, Any]
    residuals: dict[str, Any]
    warning: str | None = None

    def matches(self, model: str, gpu: str, tp: int, pp: int, weights: str, kv: str) -> bool:
        return (self.model, self.gpu, self.tp, self.pp, self.weights, self.kv) == (model, gpu, tp, pp, weights, kv)


PHYSICAL_LOWER = (0.0, 1.0, 1.0, 1.0, 0.0, 0.0)
"""b0..b5 lower bounds of a scaled pooled fit: b1..b3 >= 1 (no deployment beats peak FLOPS or bandwidth);
pipeline.sim.calibrate.PHYSICAL_LOWER's first six (mirrored: importing that module pulls in scipy, seconds)."""


@dataclass(frozen=True)
class Pooled:
    """The pooled fit of metrics/calibration.json: theta (b0..b5, h) and the scale per GPU family."""

    theta: tuple[float, ...]
    scale: dict[str, float]

    def theta_for(self, arch: str) -> tuple[tuple[float, ...], str]:
        """theta for a GPU family, as pipeline.sim.calibrate.PooledFit.theta_for computes it."""
        if arch in self.scale:
            s = self.scale[arch]
            b = tuple(max(v * s, lo) for v, lo in zip(self.theta[:6], PHYSICAL_LOWER, strict=True))
            return (*b, self.theta[6]), f"pooled coefficients x {s:.3f} ({arch} scale)"
        return self.theta, f"pooled coefficients (no {arch} deployment in the pool: scale 1)"


@dataclass
class CalibrationDoc:
    """What the curve stage needs from metrics/calibration.json: per deployment and pooled coefficients,
    their residuals, the iteration-time form."""

    deployments: list[CalDeployment]
    pooled: Pooled | None
    pooled_residuals: dict[str, Any]
    form: str
    label: str

    @classmethod
    def from_document(cls, doc: Any, label: str = "metrics/calibration.json") -> CalibrationDoc:
        """Parse and check the document; InputError `<label>: <field>: ...` on anything missing or malformed."""
        from pipeline.sim.cost import FORM_CODE, STEP_FORM, TERMS

        if not isinstance(doc, dict):
            raise InputError(f"{label}: not a JSON object; expected the calibrate stage's document")
        form = str((doc.get("settings") or {}).get("step_form") or doc.get("step_form") or STEP_FORM)
        if form not in FORM_CODE:
            raise InputError(f"{label}: settings.step_form = {form!r}; expected one of {', '.join(FORM_CODE)}")

        def theta_of(block: Any, where: str) -> tuple[float, ...]:
            coeffs = (block or {}).get("coefficients") if isinstance(block, dict) else None
            if not isinstance(coeffs, dict):
                raise InputError(f"{label}: {where}.coefficients: missing; expected {{{', '.join(TERMS)}}}")
            out = []
            for t in TERMS:
                v = coeffs.get(t)
                if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                    raise InputError(f"{label}: {where}.coefficients.{t} = {v!r}; expected a finite number >= 0")
                out.append(float(v))
            h = block.get("request_overhead_s", 0.0) or 0.0
            if not isinstance(h, int | float) or not math.isfinite(h) or h < 0:
                raise InputError(f"{label}: {where}.request_overhead_s = {h!r}; expected seconds >= 0")
            return (*out, float(h))

        deps = []
        raw = doc.get("deployments")
        if not isinstance(raw, list):
            raise InputError(f"{label}: deployments: missing; expected a list (the calibrate stage's output)")
        for i, d in enumerate(raw):
            where = f"deployments[{i}]"
            if not isinstance(d, dict):
                raise InputError(f"{label}: {where}: not an object")
            for k in ("key", "model", "gpu", "tp", "weight_dtype", "kv_dtype"):
                if d.get(k) in (None, ""):
                    raise InputError(f"{label}: {where}.{k}: missing; expected the deployment's identity")
            deps.append(
                CalDeployment(
                    key=str(d["key"]),
                    model=str(d["model"]),
                    gpu=str(d["gpu"]),
                    tp=int(d["tp"]),
                    pp=int(d.get("pp") or 1),
                    weights=str(d["weight_dtype"]),
                    kv=str(d["kv_dtype"]),
                    engine=d.get("engine"),
                    basis=str(d.get("basis") or "calibrated"),
                    theta=theta_of(d, where),
                    limits=dict(d.get("engine_limits") or {}),
                    residuals=dict(d.get("residuals") or {}),
                    warning=d.get("warning"),
                )
            )
        pooled = None
        pooled_res: dict[str, Any] = {}
        p = doc.get("pooled")
        if isinstance(p, dict) and p.get("coefficients") is not None:
            scale = {str(k): float(v) for k, v in (p.get("gpu_arch_scale") or {}).items()}
            pooled = Pooled(theta_of(p, "pooled"), scale)
            pooled_res = dict(p.get("residuals") or {})
        return cls(sorted(deps, key=lambda d: d.key), pooled, pooled_res, form, label)

    def find(self, model: str, gpu: str, tp: int, pp: int, weights: str, kv: str) -> CalDeployment | None:
        """The fitted deployment with this identity (the first in key order whatever its engine)."""
        return next((d for d in self.deployments if d.matches(model, gpu, tp, pp, weights, kv)), None)


# ------------------------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """One candidate deployment of one fleet (what is simulated or read from a measured curve)."""

    id: str
    tier: str
    model: str
    gpu: str
    weights: str
    kv: str
    tp: int
    pp: int
    kv_blocks: int | None
    memory_rejected: str | None = None
    note: str = ""  # why this candidate exists beyond the memory stage's list


@dataclass
class Measured:
    """A measured curve of one benchmarked deployment for one fleet (final_curve's pick among its curves)."""

    model: str
    gpu: str
    tp: int
    pp: int
    weights: str
    kv: str
    curve: str
    point: cv.OperatingPoint | None  # None: the curve could not be evaluated
    error: str | None
    levels: pd.DataFrame  # its rows of the level table
    curve_input_tokens: float | None
    curve_output_tokens: float | None
    replicas: int
    sizing: bool  # the fleet's sizing curve
    kv_blocks: int | None = None  # the calibration's engine limits at this TP (None: unknown)


@dataclass
class Fleet:
    """One fleet (tier `all` = pooled) and what its candidates need: model, p95 lengths, sample, measured curves."""

    tier: str
    model: str
    input_p95: float | None
    output_p95: float | None
    lengths: LengthSample | None
    measured: list[Measured] = field(default_factory=list)
    lengths_error: str | None = None


def widened(band: dict[str, Any] | None, fitted: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per metric, the p10..p90 of `band` (leave-one-level-out) stretched to cover `fitted`'s (in-sample).

    Why: the calibrate stage refits the held-out levels with step 1 only (calibration.lolo_passes), while the
    curve uses the refined fit; where the refinement trades one metric for another (a sweep whose TTFT the
    simulator cannot match), the refined fit's own in-sample error lies outside the step-1 band, and a band
    that excludes the error of the very fit in use would overstate confidence."""
    if not band:
        return band
    out: dict[str, Any] = {}
    for metric, r in band.items():
        f = (fitted or {}).get(metric) or {}
        r = dict(r or {})
        for key, pick in (("p10_rel", min), ("p90_rel", max)):
            a, b = r.get(key), f.get(key)
            if isinstance(a, int | float) and isinstance(b, int | float) and math.isfinite(a) and math.isfinite(b):
                r[key] = pick(a, b)
        out[metric] = r
    return out


@dataclass(frozen=True)
class Resolution:
    """Which coefficients a candidate's curve uses, and the residuals of its interval."""

    basis: str
    why: str
    deployment_key: str | None
    theta: tuple[float, ...] | None  # b0..b5, h (None: roofline prior)
    limits: dict[str, Any]
    residuals: dict[str, Any] | None
    interval_source: str


def resolve(c: Candidate, cal: CalibrationDoc | None, arch: str, pooled_only: bool = False) -> Resolution:
    """calibrated (its own fit) > transferred (its fit fell back, or the pooled fit x the family's scale) > roofline.
    `pooled_only`: the pooled fit even for a calibrated deployment (the anchor of transferred candidates)."""
    dep = cal.find(c.model, c.gpu, c.tp, c.pp, c.weights, c.kv) if cal and not pooled_only else None
    if cal is not None and dep is not None:
        if dep.basis == "calibrated":
            return Resolution(
                "calibrated",
                f"its own coefficients (metrics/calibration.json {dep.key}), simulated at the workload's lengths",
                dep.key,
                dep.theta,
                dep.limits,
                widened((dep.residuals or {}).get("leave_one_level_out"), (dep.residuals or {}).get("in_sample")),
                f"leave-one-level-out residuals of {dep.key}, widened to cover its in-sample residuals (the "
                "refined fit the curve uses can sit outside the step-1 refits' band)",
            )
        return Resolution(
            "transferred",
            f"{dep.key} is calibrated but its levels could not identify b ({dep.warning or 'pooled'}): pooled coefficients",
            dep.key,
            dep.theta,
            dep.limits,
            cal.pooled_residuals.get("leave_one_deployment_out"),
            "leave-one-deployment-out residuals of the pooled fit",
        )
    if cal is not None and cal.pooled is not None:
        t, how = cal.pooled.theta_for(arch)
        return Resolution(
            "transferred",
            f"no sweep of this deployment: {how}, over {len(cal.deployments)} calibrated deployment(s)",
            None,
            tuple(float(v) for v in t),
            {},
            cal.pooled_residuals.get("leave_one_deployment_out"),
            "leave-one-deployment-out residuals of the pooled fit",
        )
    return Resolution(
        "roofline",
        "no calibration: the roofline prior (b1 = 1/MFU, b2 = b3 = 1/bandwidth efficiency)",
        None,
        None,
        {},
        None,
        "none: no calibration levels to measure the roofline prior's residuals on",
    )


# ------------------------------------------------------------------------------------------- simulation


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def simulate_level(cost: Any, cfg: Any, lengths: LengthSample, c: int, overhead_s: float) -> dict[str, Any]:
    """One closed-loop level at concurrency c (the benchmark's protocol, see the module docstring)."""
    from pipeline.sim.engine import simulate_closed

    n = max(MIN_REQUESTS, min(REQUESTS_PER_SLOT * c, MAX_REQUESTS))
    res = simulate_closed(cost, cfg, lengths.input_tokens, lengths.output_tokens, concurrency=int(c), requests=n)
    # SimResult.summary()'s definitions (rps = measured requests / duration, numpy's linear percentiles), on the
    # per-request arrays only: the percentiles of every inter-token gap are not needed here (ITL is TPOT)
    d = float(res.duration_s)
    e2e = float(np.mean(res.e2e_s)) if len(res.e2e_s) else math.nan
    scale = e2e / (e2e + overhead_s) if e2e > 0 else 1.0

    def pct(values: np.ndarray, shift_s: float = 0.0) -> tuple[float | None, float | None]:
        v = values[np.isfinite(values)]
        if not len(v):
            return None, None
        p50, p99 = np.percentile(v, [50, 99])
        return (float(p50) + shift_s) * 1e3, (float(p99) + shift_s) * 1e3

    ttft, tpot, e2e_q = pct(res.ttft_s, overhead_s), pct(res.itl_mean_s), pct(res.e2e_s, overhead_s)
    return {
        "concurrency": int(c),
        "rps": (res.requests / d if d > 0 else 0.0) * scale,
        "output_tokens_per_s": (res.output_tokens_total / d if d > 0 else 0.0) * scale,
        "ttft_p50_ms": ttft[0],
        "ttft_p99_ms": ttft[1],
        "itl_p50_ms": tpot[0],
        "itl_p99_ms": tpot[1],
        "e2e_p50_ms": e2e_q[0],
        "e2e_mean_ms": (e2e + overhead_s) * 1e3 if math.isfinite(e2e) else None,
        "requests": int(res.requests),
        "preemptions": int(res.preemptions_total),
    }


def _fails(lv: dict[str, Any], s: cv.Settings) -> bool:
    t = lv["ttft_p99_ms"]
    i = lv["itl_p99_ms"]
    return (t is not None and t > s.ttft_p99_ms) or (s.itl_p99_ms is not None and i is not None and i > s.itl_p99_ms)


def simulate_curve(
    cost: Any, cfg: Any, lengths: LengthSample, overhead_s: float, s: cv.Settings, grid: tuple[int, ...] = GRID
) -> list[dict[str, Any]]:
    """Levels along `grid` until one misses an SLO, then the geometric midpoint of the crossing bracket."""
    levels: list[dict[str, Any]] = []
    failed_at = None
    for c in grid:
        levels.append(simulate_level(cost, cfg, lengths, c, overhead_s))
        if _fails(levels[-1], s):
            failed_at = len(levels) - 1
            break
    if failed_at is not None and failed_at > 0:
        lo, hi = levels[failed_at - 1]["concurrency"], levels[failed_at]["concurrency"]
        mid = round(math.sqrt(lo * hi))
        if lo < mid < hi:
            levels.append(simulate_level(cost, cfg, lengths, mid, overhead_s))
    return sorted(levels, key=lambda lv: lv["concurrency"])


def predicted_point(levels: list[dict[str, Any]], s: cv.Settings) -> tuple[float, float, str] | str:
    """(C_max, usable RPS, binding SLO) of predicted levels, or why there is none: pipeline.curve.operating_point's
    rules (`cv.crossing` per SLO, the lowest crossing binds, RPS interpolated at C_max) without its table."""
    loads = [float(lv["concurrency"]) for lv in levels]
    limits = [("ttft", "ttft_p99_ms", s.ttft_p99_ms)]
    if s.itl_p99_ms is not None:
        limits.append(("itl", "itl_p99_ms", s.itl_p99_ms))
    found = []
    for metric, col, slo in limits:
        vals = [math.inf if lv[col] is None else float(lv[col]) for lv in levels]
        status, c, _ = cv.crossing(loads, vals, slo)
        if status == "below_lowest":
            return (
                f"{metric.upper()} p99 is {vals[0]:,.1f} ms at concurrency {loads[0]:g}, above the SLO of {slo:g} ms: "
                "the SLO is missed at the lowest load"
            )
        if status == "ok":
            found.append((float(c), metric))  # type: ignore[arg-type]
    if not found:
        return f"every level up to concurrency {loads[-1]:g} meets the SLO: C_max is at least that"
    c_max, binding = min(found)
    return c_max, float(np.interp(c_max, loads, [float(lv["rps"]) for lv in levels])), binding


def levels_frame(name: str, levels: list[dict[str, Any]], lengths: LengthSample | None) -> pd.DataFrame:
    """Predicted levels in the measured level table's columns, so pipeline.curve.operating_point reads them."""
    rows = []
    for lv in levels:
        rows.append(
            {
                "curve": name,
                "tool": "engine model",
                "file": "engine model",
                "load_kind": "concurrency",
                "load": float(lv["concurrency"]),
                "ttft_p50_ms": lv["ttft_p50_ms"],
                "ttft_p99_ms": lv["ttft_p99_ms"],
                "itl_p50_ms": lv["itl_p50_ms"],
                "itl_p99_ms": lv["itl_p99_ms"],
                "e2e_p50_ms": lv["e2e_p50_ms"],
                "e2e_mean_ms": lv.get("e2e_mean_ms"),
                "e2e_source": "simulated",
                "rps": lv["rps"],
                "output_tps": lv["output_tokens_per_s"],
                "completed": float(lv.get("requests") or 0),
                "failed": 0.0,
                "input_tokens_mean": float(lengths.input_tokens.mean()) if lengths is not None else None,
                "output_tokens_mean": float(lengths.output_tokens.mean()) if lengths is not None else None,
                "goodput_rps": None,
            }
        )
    df = pd.DataFrame(rows)
    for col in df.columns:
        if col not in ("curve", "tool", "file", "load_kind", "e2e_source"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def interval(
    levels: list[dict[str, Any]], s: cv.Settings, residuals: dict[str, Any] | None, source: str
) -> tuple[dict[str, Any] | None, str]:
    """The 80% band on C_max and usable RPS from the residuals (module docstring), or (None, why)."""
    if not residuals:
        return None, source if source.startswith("none") else f"none: no residuals ({source})"
    q: dict[str, tuple[float, float]] = {}
    for key, metric in RESIDUAL_METRICS.items():
        if key == "itl" and s.itl_p99_ms is None:
            continue
        r = residuals.get(metric) or {}
        lo, hi = _finite(r.get("p10_rel")), _finite(r.get("p90_rel"))
        if not r.get("n") or lo is None or hi is None or 1 + lo <= 0 or 1 + hi <= 0:
            return None, f"none: {source} has no usable {metric} residuals (n = {r.get('n')})"
        q[key] = (lo, hi)
    loads = [float(lv["concurrency"]) for lv in levels]
    rps = [float(lv["rps"]) for lv in levels]
    at = ([0.0, *loads], [0.0, *rps])  # closed loop: no load, no throughput (C_max below the lowest level)

    def cmax(side: int) -> tuple[float, bool]:
        """The lowest crossing over the SLOs at SLO x (1 + residual quantile), and whether it is capped."""
        found = []
        limits = [("ttft", "ttft_p99_ms", s.ttft_p99_ms)]
        if s.itl_p99_ms is not None:
            limits.append(("itl", "itl_p99_ms", s.itl_p99_ms))
        for key, col, slo in limits:
            vals = [math.inf if lv[col] is None else float(lv[col]) for lv in levels]
            status, c, _ = cv.crossing(loads, vals, slo * (1 + q[key][side]))
            if status == "below_lowest":
                found.append((0.0, False))
            elif status == "above_highest":
                found.append((loads[-1], True))
            else:
                found.append((float(c), False))  # type: ignore[arg-type]
        return min(found)

    (c_lo, capped_lo), (c_hi, capped_hi) = cmax(0), cmax(1)
    capped = capped_lo or capped_hi
    r_lo, r_hi = float(np.interp(c_lo, *at)), float(np.interp(c_hi, *at))
    thr_lo, thr_hi = q["rps"]
    band = {
        "c_max_lo": round(c_lo, 4),
        "c_max_hi": round(c_hi, 4),
        "usable_rps_lo": round(r_lo / (1 + thr_hi), 4),
        "usable_rps_hi": round(r_hi / (1 + thr_lo), 4),
        "level": LEVEL_LEVEL,
        "source": source + ("; the upper C_max is capped at the highest level simulated" if capped else ""),
        "capped": capped,
    }
    return band, source


def measured_levels(m: Measured) -> list[dict[str, Any]]:
    """The measured curve's levels in the candidate `levels` shape, per instance (load and rates / replicas)."""
    out = []
    r = max(int(m.replicas), 1)
    for row in m.levels.sort_values("load").itertuples():
        if not math.isfinite(float(row.load)):
            continue
        out.append(
            {
                "concurrency": float(row.load) / r,
                "rps": None if _finite(row.rps) is None else float(row.rps) / r,
                "output_tokens_per_s": None if _finite(row.output_tps) is None else float(row.output_tps) / r,
                "ttft_p50_ms": _finite(row.ttft_p50_ms),
                "ttft_p99_ms": _finite(row.ttft_p99_ms),
                "itl_p50_ms": _finite(row.itl_p50_ms),
                "itl_p99_ms": _finite(row.itl_p99_ms),
                "e2e_p50_ms": _finite(row.e2e_p50_ms),
            }
        )
    return out


# ------------------------------------------------------------------------------------------- orchestration


def memory_rejection(entry: dict[str, Any] | None, rejected: str | None, tp: int, pp: int, gpu: str) -> str | None:
    """Why the memory stage does not take this TP x PP for the deployment (None: it takes it, or a larger one fits
    and the memory stage merely picked the lowest TP that fits)."""
    if rejected:
        return f"the memory stage rejects it: {rejected}"
    if entry is None:
        return "not a memory-stage candidate (its GPU or precisions are not in params hardware.gpus / quantization)"
    if not entry.get("fits", True):
        return "the memory stage says it does not fit: " + "; ".join(str(r) for r in entry.get("reasons") or [])
    need = int(entry.get("gpus_with_headroom") or 0)
    if tp * pp < need:
        return (
            f"the memory floor with headroom ({float(entry.get('total_gb') or 0):.0f} GB) needs {need} x {gpu}; "
            f"TP{tp} x PP{pp} gives {tp * pp} (the memory stage picked TP{entry.get('tp')} x PP{entry.get('pp') or 1})"
        )
    return None


def candidate_list(memory: dict[str, Any], fleets: list[Fleet]) -> list[Candidate]:
    """Every fitting memory-stage candidate of a fleet that exists, plus every benchmarked deployment (`/tpN` when
    the memory stage picked another TP x PP)."""
    tiers = {f.tier for f in fleets}
    cands = memory.get("candidates") or {}
    rejected = memory.get("rejected") or {}
    out: dict[str, Candidate] = {}
    for cid, e in sorted(cands.items()):
        if e.get("tier") not in tiers or not e.get("fits") or not e.get("tp"):
            continue
        blocks = (e.get("engine") or {}).get("kv_cache_blocks")
        out[cid] = Candidate(
            cid,
            e["tier"],
            e["model"],
            e["gpu"],
            e["weights"],
            e["kv"],
            int(e["tp"]),
            int(e.get("pp") or 1),
            int(blocks) if blocks else None,
        )
    for f in fleets:
        for m in f.measured:
            base = f"{f.tier}/{m.gpu}/w-{m.weights}/kv-{m.kv}"
            e = cands.get(base)
            same = e is not None and e.get("fits") and (int(e.get("tp") or 0), int(e.get("pp") or 1)) == (m.tp, m.pp)
            if same:
                continue
            cid = base if (e is None or not e.get("fits")) else f"{base}/tp{m.tp}" + (f"-pp{m.pp}" if m.pp > 1 else "")
            if cid in out:
                continue
            reason = memory_rejection(e, rejected.get(base), m.tp, m.pp, m.gpu)
            picked = f"TP{e.get('tp')} x PP{e.get('pp') or 1}" if e is not None and e.get("tp") else "none"
            out[cid] = Candidate(
                cid,
                f.tier,
                m.model,
                m.gpu,
                m.weights,
                m.kv,
                m.tp,
                m.pp,
                m.kv_blocks,
                reason,
                f"the benchmarked deployment (TP{m.tp} x PP{m.pp}); the memory stage's pick: {picked}",
            )
    return [out[k] for k in sorted(out)]


def _measured_for(c: Candidate, f: Fleet) -> Measured | None:
    return next(
        (
            m
            for m in f.measured
            if (m.model, m.gpu, m.tp, m.pp, m.weights, m.kv) == (c.model, c.gpu, c.tp, c.pp, c.weights, c.kv)
        ),
        None,
    )


def _round_levels(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in lv.items() if k in LEVEL_KEYS} for lv in levels
    ]


def evaluate(
    c: Candidate,
    f: Fleet,
    cal: CalibrationDoc | None,
    s: cv.Settings,
    max_mismatch: float,
    models: Any,
    gpus: dict[str, Any],
    memo: dict[Any, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """One candidate's op.candidates entry (plus `_levels`, the full level dicts, for the parquet). `memo`: curves
    already simulated, by (packed step cost, engine config, h, lengths): two candidates with the same physics
    (e.g. FP8 and INT8 weights on one GPU) are simulated once, with the same result.

    A measured candidate keeps its measured figures and also gets `usable_rps_model` / `c_max_model` (and
    `model_basis`, `model_note`): what the engine model says of the same deployment at the workload's length mix,
    the denominator of its fleet's anchor (`anchor`). Every other candidate's figures are the raw engine-model ones
    here; `anchor` scales them."""
    m = _measured_for(c, f)
    lm = None
    if m is not None:
        lm = length_match(
            m.curve_input_tokens, m.curve_output_tokens, f.input_p95, f.output_p95, s.length_tolerance, max_mismatch
        )
    entry: dict[str, Any] = {
        "tier": c.tier,
        "model": c.model,
        "gpu": c.gpu,
        "weights": c.weights,
        "kv": c.kv,
        "tp": c.tp,
        "pp": c.pp,
        "basis": None,
        "basis_why": "",
        "deployment_key": None,
        "c_max": None,
        "usable_rps": None,
        "binding_slo": None,
        "interval": None,
        "length_match": lm,
        "lengths": f.lengths.stats() if f.lengths is not None else None,
        "levels": [],
        "memory_rejected": c.memory_rejected,
    }
    if c.note:
        entry["note"] = c.note
    cal_dep = cal.find(c.model, c.gpu, c.tp, c.pp, c.weights, c.kv) if cal else None
    entry["deployment_key"] = cal_dep.key if cal_dep else None
    if (
        m is not None
        and m.point is not None
        and lm is not None
        and (lm["within_tolerance"] or (m.sizing and lm["used_for_sizing"]))
    ):
        p = m.point
        r = max(int(m.replicas), 1)
        why = f"measured: curve {m.curve}"
        # an open-loop curve's C_max is a rate: as concurrency per instance by Little's law (usable RPS x E2E)
        c_inst = p.c_max / r if p.load_kind == "concurrency" else p.usable_rps * p.e2e_s_at_c_max
        if p.load_kind != "concurrency":
            why += " (open loop: C_max as concurrency = usable RPS x E2E at C_max)"
        why += (
            f" within curve.length_tolerance ({s.length_tolerance:.0%}) of the workload's p95 lengths"
            if lm["within_tolerance"]
            else f" outside curve.length_tolerance but within curve.max_length_mismatch ({max_mismatch:g}x): it sizes the fleet, flagged"
        )
        entry.update(
            basis="measured",
            basis_why=why,
            c_max=round(c_inst, 4),
            usable_rps=round(p.usable_rps, 4),
            binding_slo=p.binding,
            levels=_round_levels(measured_levels(m)),
            lengths={
                "source": f"the sweep's own lengths (curve {m.curve})",
                "requests": None,
                "input_tokens_p50": None,
                "input_tokens_p95": lm["curve_input_tokens"],
                "output_tokens_p50": None,
                "output_tokens_p95": lm["curve_output_tokens"],
            },
        )
        entry["_levels"] = measured_levels(m)
        sim = model_curve(c, f, cal, s, models, gpus, memo, "")
        # the benchmarked deployment under each coefficient source a model-based candidate may use: its own basis
        # (the rules above) and, when that is its own fit, the pooled fit too (the anchor of transferred candidates)
        by_basis = {sim["basis"]: (sim.get("usable_rps"), sim.get("c_max"), sim["basis_why"])}
        if sim["basis"] == "calibrated" and cal is not None and cal.pooled is not None:
            pooled = model_curve(c, f, cal, s, models, gpus, memo, "", pooled_only=True)
            by_basis[pooled["basis"]] = (pooled.get("usable_rps"), pooled.get("c_max"), pooled["basis_why"])
        entry["_model_by_basis"] = by_basis
        entry.update(
            usable_rps_model=sim.get("usable_rps"),
            c_max_model=sim.get("c_max"),
            model_basis=sim["basis"],
            model_note=(
                "the engine model of this deployment at the workload's length mix ("
                + sim["basis_why"]
                + ")"
                + ("" if sim.get("usable_rps") is not None else ": no usable RPS")
            ),
        )
        return entry
    why = ""
    if m is not None:
        if m.point is None:
            why = f"its measured curve {m.curve} could not be evaluated ({(m.error or '').splitlines()[0]}); "
        elif lm is None:
            why = f"its measured curve {m.curve} states no lengths; "
        else:
            why = (
                f"its measured curve {m.curve} is at other lengths (ratios {lm['input_ratio']:.2f} in / "
                f"{lm['output_ratio']:.2f} out)"
                + ("" if lm["used_for_sizing"] else f", beyond {max_mismatch:g}x")
                + "; "
            )
    entry.update(model_curve(c, f, cal, s, models, gpus, memo, why))
    if m is not None and m.sizing and m.point is not None and lm is not None and not lm["used_for_sizing"]:
        carry(entry, c, f, m, cal, s, models, gpus, memo)
    return entry


def constant_lengths(f: Fleet, input_tokens: float, output_tokens: float) -> Fleet:
    """The fleet with every sampled request at one fixed (input, output) point: a sweep's convention."""
    n = len(f.lengths.input_tokens) if f.lengths is not None else LENGTH_POOL
    i, o = max(round(float(input_tokens)), 1), max(round(float(output_tokens)), 1)
    sample = LengthSample(
        np.full(n, i, np.int64),
        np.full(n, o, np.int64),
        f"constant {i} in / {o} out",
        f.lengths.rows if f.lengths else n,
    )
    return Fleet(f.tier, f.model, f.input_p95, f.output_p95, sample, f.measured, f.lengths_error)


def carry(
    entry: dict[str, Any],
    c: Candidate,
    f: Fleet,
    m: Measured,
    cal: CalibrationDoc | None,
    s: cv.Settings,
    models: Any,
    gpus: dict[str, Any],
    memo: dict[Any, list[dict[str, Any]]] | None,
) -> None:
    """The fleet's sizing curve is beyond curve.max_length_mismatch: carry its measured figures to the workload's
    p95 lengths with the engine model, like for like on the sweep's p95-point convention, in place.

    usable = measured usable RPS x u_model(this deployment, every request at the workload's p95 input / output) /
    u_model(this deployment, every request at the sweep's own lengths), same coefficients; C_max likewise. Adds
    `carried` {measured_usable_rps, model_at_sweep_lengths, model_at_workload_p95, factor, usable_rps, measured_c_max,
    c_max_model_at_sweep_lengths, c_max_model_at_workload_p95, c_max_factor, c_max, note} (factor null and the note
    why when the engine model gives no C_max at either point), `usable_rps_model` / `c_max_model` (the raw figures at
    the mix) and `_model_by_basis` (the deployment at the mix on each coefficient source: `anchor` scales it, and
    every other candidate of the fleet, onto the carried figure)."""
    p = m.point
    r = max(int(m.replicas), 1)
    u_meas = round(p.usable_rps, 4)
    c_meas = round(p.c_max / r if p.load_kind == "concurrency" else p.usable_rps * p.e2e_s_at_c_max, 4)
    at_sweep = model_curve(
        c, constant_lengths(f, m.curve_input_tokens, m.curve_output_tokens), cal, s, models, gpus, memo
    )
    at_p95 = model_curve(c, constant_lengths(f, f.input_p95, f.output_p95), cal, s, models, gpus, memo)
    u_sw, u_wl = at_sweep.get("usable_rps"), at_p95.get("usable_rps")
    c_sw, c_wl = at_sweep.get("c_max"), at_p95.get("c_max")
    k = u_wl / u_sw if u_sw and u_wl is not None and u_sw > 0 else None
    kc = c_wl / c_sw if c_sw and c_wl is not None and c_sw > 0 else None
    lengths = (
        f"{m.curve_input_tokens:.0f} in / {m.curve_output_tokens:.0f} out to the workload's p95 "
        f"{f.input_p95:.0f} / {f.output_p95:.0f}"
    )
    carried: dict[str, Any] = {
        "curve": m.curve,
        "measured_usable_rps": u_meas,
        "model_at_sweep_lengths": u_sw,
        "model_at_workload_p95": u_wl,
        "factor": None if k is None else round(k, 4),
        "usable_rps": None if k is None else round(u_meas * k, 4),
        "measured_c_max": c_meas,
        "c_max_model_at_sweep_lengths": c_sw,
        "c_max_model_at_workload_p95": c_wl,
        "c_max_factor": None if k is None or kc is None else round(kc, 4),
        "c_max": None if k is None or kc is None else round(c_meas * kc, 4),
        "basis": entry.get("basis"),
    }
    if k is None:
        why = at_sweep.get("basis_why") if u_sw is None else at_p95.get("basis_why")
        carried["note"] = (
            f"not carried: the engine model ({entry.get('basis')}) gives this deployment no usable RPS at one of the "
            f"two fixed points ({why}); the mismatched measured curve sizes the fleet as measured"
        )
    else:
        carried["note"] = (
            f"the measured curve {m.curve} carried from its lengths {lengths} with the engine model of the same "
            f"deployment ({entry.get('basis')} coefficients), every request at one fixed length as the sweep runs: "
            f"{u_meas:.3f} req/s per instance x {u_wl:.3f} / {u_sw:.3f} = {u_meas * k:.3f}"
            + (
                f"; C_max {c_meas:.1f} x {c_wl:.1f} / {c_sw:.1f} = {c_meas * kc:.1f}"
                if kc is not None
                else "; C_max is not carried (the engine model gives no C_max at one of the two points)"
            )
        )
    entry["carried"] = carried
    if k is None or entry.get("usable_rps") is None:
        return
    by_basis = {entry["basis"]: (entry.get("usable_rps"), entry.get("c_max"), entry["basis_why"])}
    if entry["basis"] == "calibrated" and cal is not None and cal.pooled is not None:
        pooled = model_curve(c, f, cal, s, models, gpus, memo, "", pooled_only=True)
        by_basis[pooled["basis"]] = (pooled.get("usable_rps"), pooled.get("c_max"), pooled["basis_why"])
    entry["_model_by_basis"] = by_basis
    entry.update(usable_rps_model=entry.get("usable_rps"), c_max_model=entry.get("c_max"), model_basis=entry["basis"])


def model_curve(
    c: Candidate,
    f: Fleet,
    cal: CalibrationDoc | None,
    s: cv.Settings,
    models: Any,
    gpus: dict[str, Any],
    memo: dict[Any, list[dict[str, Any]]] | None,
    why_prefix: str = "",
    pooled_only: bool = False,
) -> dict[str, Any]:
    """The engine-model figures of a candidate at its fleet's sampled lengths: basis, basis_why, and (when it can be
    simulated) levels, `_levels`, c_max, usable_rps, binding_slo, interval (and interval_note). Raw: no anchor.
    `pooled_only`: on the pooled coefficients whatever the calibration holds for this deployment."""
    from pipeline import catalog
    from pipeline.sim.cost import Coefficients, for_deployment
    from pipeline.sim.engine import EngineConfig

    out: dict[str, Any] = {}
    try:
        gpu = catalog.find_gpu(c.gpu, gpus)
        model = models(c.model)
    except InputError as exc:
        return {"basis": "roofline", "basis_why": why_prefix + f"not simulated: {str(exc).splitlines()[0]}"}
    res = resolve(c, cal, gpu.arch, pooled_only)
    out.update(basis=res.basis, basis_why=why_prefix + res.why)
    if f.lengths is None:
        out["basis_why"] += f"; not simulated: {f.lengths_error or 'no workload lengths'}"
        return out
    coeffs = None
    if res.theta is not None:
        coeffs = Coefficients(tuple(res.theta[:6]), res.basis, res.why, cal.form if cal else "additive")  # type: ignore[arg-type]
    cost = for_deployment(model, gpu, c.weights, c.kv, c.tp, c.pp, coeffs)
    if isinstance(cost, str):
        out["basis_why"] += f"; not simulated: {cost}"
        return out
    lim = {**ENGINE_DEFAULTS, **{k: res.limits[k] for k in ENGINE_DEFAULTS if k in res.limits}}
    blocks = c.kv_blocks or (int(res.limits["kv_blocks"]) if res.limits.get("kv_blocks") else None)
    cfg = EngineConfig(
        max_num_seqs=int(lim["max_num_seqs"]),
        max_num_batched_tokens=int(lim["max_num_batched_tokens"]),
        block_size=int(lim["block_size"]),
        kv_blocks=int(blocks or 10**9),
        enable_prefix_caching=False,
        mixed_prefill=bool(lim["mixed_prefill"]),
    )
    lengths = f.lengths
    fit = (lengths.input_tokens + lengths.output_tokens - 1 + cfg.block_size - 1) // cfg.block_size <= cfg.kv_blocks
    if not fit.all():
        if not fit.any():
            out["basis_why"] += f"; not simulated: no sampled request fits its {cfg.kv_blocks:,} KV blocks"
            return out
        out["basis_why"] += (
            f"; {int((~fit).sum())} of {len(fit)} sampled requests exceed its KV capacity and are left out"
        )
        lengths = LengthSample(lengths.input_tokens[fit], lengths.output_tokens[fit], lengths.source, lengths.rows)
    h = float(res.theta[6]) if res.theta is not None else 0.0
    key = (cost.packed().tobytes(), cfg, h, lengths.input_tokens.tobytes(), lengths.output_tokens.tobytes())
    if memo is not None and key in memo:
        levels = [dict(lv) for lv in memo[key]]
    else:
        levels = simulate_curve(cost, cfg, lengths, h, s)
        if memo is not None:
            memo[key] = levels
    out["_levels"] = levels
    out["levels"] = _round_levels(levels)
    point = predicted_point(levels, s)
    if isinstance(point, str):
        out["basis_why"] += f"; no C_max: {point}"
        return out
    out.update(c_max=round(point[0], 4), usable_rps=round(point[1], 4), binding_slo=point[2])
    band, why_band = interval(levels, s, res.residuals, res.interval_source)
    out["interval"] = band
    if band is None:
        out["interval_note"] = why_band
    return out


# ------------------------------------------------------------------------------------------- the anchor

ANCHOR_RULE = (
    "A measured sweep runs at one fixed length near the workload's p95; the engine model runs at the workload's "
    "sampled length mix (mean far below p95). To price like for like, the fleet's benchmarked deployment is also "
    "simulated at the mix (u_model), on the coefficients of each basis: its own fit for calibrated candidates, the "
    "pooled fit for transferred ones (so the pooled fit's error on the benchmarked GPU cancels too), the prior for "
    "roofline ones. Every model-based candidate's usable RPS (and its band) is scaled by factor = measured usable "
    "RPS / u_model of its basis, its C_max (and band) by measured C_max / C_max_model. The raw engine-model figures "
    "stay as usable_rps_model, c_max_model and interval_model."
)
ANCHOR_KEYS = (
    "deployment",
    "measured_usable_rps",
    "model_usable_rps",
    "factor",
    "measured_c_max",
    "model_c_max",
    "c_max_factor",
)


def _identity(e: dict[str, Any]) -> tuple[Any, ...]:
    gpu = "".join(ch for ch in str(e["gpu"]).lower() if ch.isalnum())
    return (e["model"], gpu, e["tp"], e["pp"], e["weights"], e["kv"])


def _ratio(num: Any, den: Any) -> float | None:
    return float(num) / float(den) if num and den and float(den) > 0 else None


def _lengths_text(e: dict[str, Any], m: Measured) -> str:
    lm = e.get("length_match") or {}
    i = lm.get("curve_input_tokens") or m.curve_input_tokens or 0
    o = lm.get("curve_output_tokens") or m.curve_output_tokens or 0
    return f"{i:.0f} in / {o:.0f} out, near the workload's p95"


def fleet_anchor(cands: dict[str, dict[str, Any]], f: Fleet) -> dict[str, Any]:
    """The anchor of one fleet: {deployment, measured_usable_rps, model_usable_rps, factor, measured_c_max,
    model_c_max, c_max_factor, model_basis, by_basis, note}, the model figures those of the benchmarked deployment
    on its own basis (`by_basis`: on each coefficient source, {model_usable_rps, model_c_max, factor,
    c_max_factor}). factor null (and note why) when no measured curve sizes the fleet, or the engine model gives the
    benchmarked deployment no usable RPS at the workload's lengths."""
    none: dict[str, Any] = {**dict.fromkeys(ANCHOR_KEYS), "model_basis": None, "by_basis": {}}
    where = "the pooled fleet" if f.tier == "all" else f"tier {f.tier}"
    m = next((x for x in f.measured if x.sizing), None)
    if m is None:
        return {
            **none,
            "note": f"no measured curve sizes {where} (no sweep of it): every figure is the engine model's at the "
            "workload's lengths, not anchored",
        }
    ident = (m.model, "".join(ch for ch in m.gpu.lower() if ch.isalnum()), m.tp, m.pp, m.weights, m.kv)
    found = [(cid, e) for cid, e in sorted(cands.items()) if e["tier"] == f.tier and _identity(e) == ident]
    cid, e = found[0] if found else (None, None)
    carried = (e or {}).get("carried") or {}
    if e is None or (e.get("basis") != "measured" and carried.get("factor") is None):
        lm = (e or {}).get("length_match") or {}
        why = (
            f"beyond curve.max_length_mismatch ({lm.get('max_mismatch', 2.0):g}x; ratios {lm['input_ratio']:.2f} in / "
            f"{lm['output_ratio']:.2f} out)"
            if lm and not lm.get("used_for_sizing")
            else "it cannot be evaluated"
        )
        return {
            **none,
            "deployment": cid,
            "note": f"the measured curve {m.curve} of {where} is not used for sizing ({why}): the figures are the raw "
            "engine model's at the workload's lengths, not anchored",
        }
    u_meas, c_meas = (carried["usable_rps"], carried["c_max"]) if carried else (e.get("usable_rps"), e.get("c_max"))
    by_basis = {}
    for basis, (u, c, _why) in sorted((e.get("_model_by_basis") or {}).items()):
        k, kc = _ratio(u_meas, u), _ratio(c_meas, c)
        by_basis[basis] = {
            "model_usable_rps": u,
            "model_c_max": c,
            "factor": None if k is None else round(k, 4),
            "c_max_factor": None if k is None or kc is None else round(kc, 4),
        }
    own = e.get("model_basis")
    u_model, c_model = e.get("usable_rps_model"), e.get("c_max_model")
    out = {
        **none,
        **({"carried": carried} if carried else {}),
        "deployment": cid,
        "measured_usable_rps": u_meas,
        "model_usable_rps": u_model,
        "measured_c_max": c_meas,
        "model_c_max": c_model,
        "model_basis": own,
        "by_basis": by_basis,
    }
    k = _ratio(u_meas, u_model)
    if k is None:
        return {
            **out,
            "note": f"the engine model gives the benchmarked deployment {cid} no usable RPS at the workload's lengths "
            f"({e.get('model_note') or 'no C_max'}): the figures are the raw engine model's, not anchored",
        }
    kc = _ratio(c_meas, c_model)
    out.update(factor=round(k, 4), c_max_factor=None if kc is None else round(kc, 4))
    others = "; ".join(
        f"on the {'pooled' if b == 'transferred' else b} coefficients it gives {x['model_usable_rps']:.3f}, so "
        f"{b} candidates are scaled by {x['factor']:.3f}"
        for b, x in by_basis.items()
        if b != own and x["factor"] is not None
    )
    source = (
        f"its sweep carried from its lengths to the workload's p95 with the engine model at one fixed length "
        f"({carried['measured_usable_rps']:.3f} x {carried['model_at_workload_p95']:.3f} / "
        f"{carried['model_at_sweep_lengths']:.3f})"
        if carried
        else f"the sweep at its own lengths ({_lengths_text(e, m)})"
    )
    out["note"] = (
        f"priced like for like with the measured curve {m.curve}: the engine model at the workload's length mix gives "
        f"{u_model:.3f} req/s per instance for the benchmarked deployment {cid} ({own}), {source} gives "
        f"{u_meas:.3f}, so every {own} model-based candidate's usable RPS is scaled by "
        f"{u_meas:.3f} / {u_model:.3f} = {k:.3f}"
        + (
            f" and its C_max by {c_meas:.1f} / {c_model:.1f} = {kc:.3f}"
            if kc is not None
            else " (its C_max is not scaled: the engine model gives no C_max for the benchmarked deployment)"
        )
        + (f"; {others}" if others else "")
    )
    return out


def candidate_anchor(a: dict[str, Any], basis: str | None, cid: str) -> dict[str, Any]:
    """A candidate's anchor: its fleet's, with the model figures and factors of the benchmarked deployment on the
    candidate's own basis when the fleet has them (else the deployment's own basis, and the note says so)."""
    out = {k: v for k, v in a.items() if k not in ("by_basis", "carried")}
    if a.get("factor") is None or basis == "measured" or basis is None:
        return out
    x = (a.get("by_basis") or {}).get(str(basis))
    if x is not None and x.get("factor") is not None:
        out.update(x, model_basis=basis)
    u, m, k = out["model_usable_rps"], out["measured_usable_rps"], out["factor"]
    same = (
        "the same pooled coefficients"
        if out["model_basis"] == "transferred"
        else f"its {out['model_basis']} coefficients"
    )
    out["note"] = (
        f"priced like for like with the measured {a['deployment']}: on {same}, at the workload's length mix, the "
        f"engine model gives it {u:.3f} req/s per instance, its sweep "
        + ("carried to the workload's p95 lengths" if a.get("carried") else "at the sweep's own lengths")
        + f" {m:.3f}, so this "
        f"candidate's usable RPS (and band) is the engine model's x {m:.3f} / {u:.3f} = {k:.3f}"
        + (f", its C_max x {out['c_max_factor']:.3f}" if out["c_max_factor"] is not None else "")
        + (
            f" (the benchmarked deployment has no {basis} curve: its {out['model_basis']} one is used)"
            if out["model_basis"] != basis
            else ""
        )
    )
    return out


def anchor(cands: dict[str, dict[str, Any]], fleets: list[Fleet]) -> dict[str, dict[str, Any]]:
    """Scale every model-based candidate of each fleet by its fleet's anchor (`fleet_anchor`, `candidate_anchor`),
    in place.

    A candidate that is not measured keeps its raw figures as usable_rps_model, c_max_model and interval_model;
    usable_rps, c_max and the interval bounds become raw x factor (C_max and its bounds x c_max_factor). Without a
    factor they stay the raw ones. Every candidate gets its `anchor`. Returns {tier: the fleet's anchor}."""
    out: dict[str, dict[str, Any]] = {}
    for f in fleets:
        a = fleet_anchor(cands, f)
        out[f.tier] = a
        for cid, e in sorted(cands.items()):
            if e["tier"] != f.tier:
                continue
            ca = candidate_anchor(a, e.get("basis"), cid)
            e["anchor"] = ca
            if e.get("basis") == "measured":
                continue
            raw_u, raw_c, raw_iv = e.get("usable_rps"), e.get("c_max"), e.get("interval")
            e.update(usable_rps_model=raw_u, c_max_model=raw_c, interval_model=None if raw_iv is None else dict(raw_iv))
            if ca["factor"] is None:
                continue
            # the exact ratios of the (rounded) figures the anchor states, so that a candidate with the benchmarked
            # deployment's physics and coefficients comes out at exactly its measured figures
            k = ca["measured_usable_rps"] / ca["model_usable_rps"]
            kc = ca["measured_c_max"] / ca["model_c_max"] if ca["c_max_factor"] is not None else None
            if raw_u is not None:
                e["usable_rps"] = round(raw_u * k, 4)
            if raw_c is not None and kc is not None:
                e["c_max"] = round(raw_c * kc, 4)
            if raw_iv is not None:
                iv = dict(raw_iv)
                for key in ("usable_rps_lo", "usable_rps_hi"):
                    if iv.get(key) is not None:
                        iv[key] = round(iv[key] * k, 4)
                if kc is not None:
                    for key in ("c_max_lo", "c_max_hi"):
                        if iv.get(key) is not None:
                            iv[key] = round(iv[key] * kc, 4)
                iv["source"] = f"{raw_iv.get('source', '')}; x the anchor ({k:.3f} on req/s)"
                e["interval"] = iv
    return out


def build(
    memory: dict[str, Any],
    fleets: list[Fleet],
    cal: CalibrationDoc | None,
    s: cv.Settings,
    max_mismatch: float,
    models: Any,
    gpus: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """op.candidates: every candidate of every fleet, evaluated (ids sorted). `models(name)` loads a catalog model."""
    by_tier = {f.tier: f for f in fleets}
    memo: dict[Any, list[dict[str, Any]]] = {}
    return {
        c.id: evaluate(c, by_tier[c.tier], cal, s, max_mismatch, models, gpus, memo)
        for c in candidate_list(memory, fleets)
    }


def levels_table(candidates: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """data/interim/candidate_curves.parquet: one row per candidate x level (id, tier, basis and the level keys)."""
    rows = [
        {"id": cid, "tier": e["tier"], "basis": e["basis"], **{k: lv.get(k) for k in LEVEL_KEYS}}
        for cid, e in sorted(candidates.items())
        for lv in e.get("_levels") or []
    ]
    df = pd.DataFrame(rows, columns=["id", "tier", "basis", *LEVEL_KEYS])
    for k in LEVEL_KEYS:
        df[k] = pd.to_numeric(df[k], errors="coerce").astype("float64")
    return df


def public(candidates: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The candidates without the private full-precision levels (what operating_point.json holds)."""
    return {cid: {k: v for k, v in e.items() if not k.startswith("_")} for cid, e in sorted(candidates.items())}


def basis_counts(candidates: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many candidates per basis (the four in order, then anything else)."""
    counts = dict.fromkeys(BASES, 0)
    for e in candidates.values():
        counts[str(e.get("basis"))] = counts.get(str(e.get("basis")), 0) + 1
    return counts
