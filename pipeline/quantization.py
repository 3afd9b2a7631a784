"""Step 5: precisions, their bytes, and which chips have a hardware path for them.

Rules from the guide (method.md steps 4-5): FP8 compute only where the chip has FP8 tensor
cores (Hopper, Ada, Blackwell; CDNA 3/4 on AMD), FP4 only where it has FP4 (Blackwell, CDNA 4),
INT8 (W8A8) artifacts for A100-class chips, and quantize before choosing parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.catalog import GPU
from pipeline.errors import InputError


@dataclass(frozen=True)
class Precision:
    """A weight or KV format: bytes per element, scale overhead, and the format its matmuls run in."""

    name: str
    bytes: float
    scale_bytes: float
    compute: str
    needs: str | None
    note: str


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", 4.0, 0.0, "bf16", None, "full precision; no serving engine keeps it"),
    "bf16": Precision("bf16", 2.0, 0.0, "bf16", None, "16-bit baseline"),
    "fp16": Precision("fp16", 2.0, 0.0, "fp16", None, "16-bit baseline"),
    "fp8": Precision("fp8", 1.0, 0.0, "fp8", "fp8", "W8A8 FP8 (e4m3): needs FP8 tensor cores"),
    "int8": Precision(
        "int8", 1.0, 0.0, "int8", "int8", "W8A8 INT8 (SmoothQuant-style): the A100 path to 8-bit compute"
    ),
    "int4": Precision("int4", 0.5, 2.5 / 128, "bf16", None, "weight-only 4-bit (AWQ/GPTQ, group 128): 16-bit compute"),
    "fp4": Precision("fp4", 0.5, 1.0 / 16, "fp4", "fp4", "NVFP4 (FP8 scale per 16 values): needs FP4 tensor cores"),
    "mxfp4": Precision(
        "mxfp4",
        0.5,
        1.0 / 32,
        "fp4",
        None,
        "MXFP4 (E8M0 scale per 32): FP4 compute where the chip has it, else dequantized",
    ),
}
WEIGHT_DTYPES = tuple(PRECISIONS)
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8")


def precision(name: str, what: str = "weights") -> Precision:
    """Look a precision up; an unknown name lists the valid ones."""
    allowed = WEIGHT_DTYPES if what == "weights" else KV_DTYPES
    key = name.lower().replace("float", "fp").replace("bfloat16", "bf16")
    if key not in allowed:
        raise InputError(f"unknown {what} precision '{name}'; valid: {', '.join(allowed)}")
    return PRECISIONS[key]


def bytes_per_param(name: str) -> float:
    """The guide's rule: fp32 4, bf16/fp16 2, fp8/int8 1, int4/fp4 0.5 (scales excluded)."""
    return precision(name).bytes


@dataclass(frozen=True)
class Compatibility:
    """Whether a (GPU, weight precision, KV precision) triple can run, the compute format it uses, and why."""

    allowed: bool
    compute: str
    reasons: tuple[str, ...]


def check(gpu: GPU, weights: str, kv: str) -> Compatibility:
    """Apply the guide's hardware rules to one combination."""
    w = precision(weights, "weights")
    k = precision(kv, "kv")
    reasons: list[str] = []
    compute = w.compute
    if w.needs and w.needs not in gpu.hw_formats:
        if w.needs == "fp8":
            alt = " use an INT8 (W8A8) artifact instead" if "int8" in gpu.hw_formats else ""
            reasons.append(
                f"{gpu.name} ({gpu.arch}) has no FP8 tensor cores: FP8 compute needs Hopper, Ada, Blackwell or CDNA3+;{alt}"
            )
        elif w.needs == "fp4":
            reasons.append(f"{gpu.name} ({gpu.arch}) has no FP4 tensor cores: FP4 compute needs Blackwell or CDNA4")
        else:
            reasons.append(f"{gpu.name} has no {w.needs.upper()} tensor-core path")
        return Compatibility(False, compute, tuple(reasons))
    if w.name == "mxfp4" and "fp4" not in gpu.hw_formats:
        compute = "bf16"
        reasons.append(
            f"MXFP4 weights are dequantized to 16-bit on {gpu.name} (no FP4 tensor cores): memory saving only"
        )
    if compute not in gpu.hw_formats:
        compute = "bf16" if "bf16" in gpu.hw_formats else "fp16"
    if k.name == "fp8" and "fp8" not in gpu.hw_formats:
        reasons.append(f"FP8 KV cache on {gpu.name} is stored in 8 bits and upcast for attention (no FP8 tensor cores)")
    return Compatibility(True, compute, tuple(reasons))
