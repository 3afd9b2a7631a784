"""The GPU catalog (data/catalog/gpus.csv): memory, bandwidth, dense peak per format, fabric, sources.

The memory stage also runs the great-expectations catalog suite (quality.validate_catalog) over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import paths
from pipeline.catalog_csv import norm_name, parse_number, read_csv_rows
from pipeline.errors import InputError

GPUS_CSV = "gpus.csv"

GPU_NUMERIC = (
    "memory_gb",
    "visible_memory_gib",
    "memory_bw_tbs",
    "bf16_tflops",
    "fp16_tflops",
    "fp8_tflops",
    "int8_tops",
    "fp4_tflops",
    "interconnect_bw_gbs",
    "nvlink_domain",
    "node_gpus",
    "host_bw_gbs",
    "tdp_w",
)
GPU_REQUIRED = (
    "gpu",
    "vendor",
    "arch",
    "memory_gb",
    "memory_bw_tbs",
    "bf16_tflops",
    "hw_formats",
    "interconnect",
    "source",
)
GPU_COLUMNS = (
    "gpu",
    "aliases",
    "vendor",
    "arch",
    *GPU_NUMERIC[:2],
    "visible_memory_basis",
    *GPU_NUMERIC[2:7],
    "hw_formats",
    "interconnect",
    *GPU_NUMERIC[7:],
    "source",
)
INTERCONNECTS = ("nvlink", "nvlink-bridge", "infinity-fabric", "pcie")
GPU_POSITIVE = ("memory_gb", "visible_memory_gib", "memory_bw_tbs", "bf16_tflops")
FORMATS = ("bf16", "fp16", "int8", "fp8", "fp4")
PEAK_COLUMN = {
    "bf16": "bf16_tflops",
    "fp16": "fp16_tflops",
    "fp8": "fp8_tflops",
    "int8": "int8_tops",
    "fp4": "fp4_tflops",
}


@dataclass(frozen=True)
class GPU:
    """One accelerator SKU: memory, bandwidth, dense peak per format, fabric, and where the facts came from."""

    name: str
    aliases: tuple[str, ...]
    vendor: str
    arch: str
    memory_gb: float
    visible_memory_gib: float
    visible_memory_basis: str
    memory_bw_tbs: float
    peak_tflops: dict[str, float]
    hw_formats: frozenset[str]
    interconnect: str
    interconnect_bw_gbs: float
    nvlink_domain: int
    node_gpus: int
    host_bw_gbs: float
    tdp_w: float
    source: str

    def peak(self, compute_dtype: str) -> float:
        """Dense peak in FLOP/s (or OP/s for int8) for a compute format; 0 when the chip has no path."""
        return self.peak_tflops.get(compute_dtype, 0.0) * 1e12

    def ridge_flops_per_byte(self, compute_dtype: str) -> float:
        """Roofline ridge point: peak FLOP/s over HBM bytes/s."""
        return self.peak(compute_dtype) / (self.memory_bw_tbs * 1e12)


def read_gpu_rows(path: Path) -> list[dict[str, str]]:
    """The raw rows of gpus.csv, with a clear error for a missing file, missing columns or a short row."""
    if not path.exists():
        raise InputError(f"GPU catalog not found: {path}; expected a CSV with columns {', '.join(GPU_COLUMNS)}")
    return read_csv_rows(path, GPU_REQUIRED, GPU_COLUMNS)


def load_gpus(root: Path | None = None) -> dict[str, GPU]:
    """Read data/catalog/gpus.csv into GPU records keyed by canonical name."""
    path = (root or paths.ROOT) / "data" / "catalog" / GPUS_CSV
    gpus: dict[str, GPU] = {}
    for i, row in enumerate(read_gpu_rows(path), start=2):
        nums = {c: parse_number(path, i, c, row.get(c, ""), c in GPU_REQUIRED) for c in GPU_NUMERIC}
        for col in GPU_POSITIVE:  # memory and bandwidth divide: 0 is an error here, not a ZeroDivisionError later
            if nums[col] is not None and nums[col] <= 0:
                raise InputError(f"{path}: row {i} column '{col}' = {row[col]!r}; expected a number > 0")
        for col in ("nvlink_domain", "node_gpus"):
            if nums[col] is not None and (nums[col] < 1 or not float(nums[col]).is_integer()):
                raise InputError(f"{path}: row {i} column '{col}' = {row[col]!r}; expected a whole number of GPUs >= 1")
        formats = frozenset(row.get("hw_formats", "").split())
        bad = sorted(formats - set(FORMATS))
        if bad:
            raise InputError(
                f"{path}: row {i} column 'hw_formats' has {bad[0]!r}; expected words from {', '.join(FORMATS)}"
            )
        if row["interconnect"] not in INTERCONNECTS:
            raise InputError(
                f"{path}: row {i} column 'interconnect' = {row['interconnect']!r}; expected one of {', '.join(INTERCONNECTS)}"
            )
        if not row.get("source", "").strip():
            raise InputError(f"{path}: row {i} ({row['gpu']}) has no 'source'; every catalog fact needs one")
        peaks = {fmt: nums[col] for fmt, col in PEAK_COLUMN.items() if nums[col]}
        for fmt in formats:
            if fmt not in peaks:
                raise InputError(
                    f"{path}: row {i} ({row['gpu']}) lists {fmt} in hw_formats but '{PEAK_COLUMN[fmt]}' is empty"
                )
        name = row["gpu"].strip()
        gpus[name] = GPU(
            name=name,
            aliases=tuple(a.strip() for a in row.get("aliases", "").split(";") if a.strip()),
            vendor=row["vendor"],
            arch=row["arch"],
            memory_gb=nums["memory_gb"] or 0.0,
            visible_memory_gib=nums["visible_memory_gib"] or (nums["memory_gb"] or 0.0) * 0.99,
            visible_memory_basis=row.get("visible_memory_basis", "") or "estimate: nominal x 0.99",
            memory_bw_tbs=nums["memory_bw_tbs"] or 0.0,
            peak_tflops=peaks,
            hw_formats=formats,
            interconnect=row["interconnect"],
            interconnect_bw_gbs=nums["interconnect_bw_gbs"] or 0.0,
            nvlink_domain=int(nums["nvlink_domain"] or 1),
            node_gpus=int(nums["node_gpus"] or 8),
            host_bw_gbs=nums["host_bw_gbs"] or 0.0,
            tdp_w=nums["tdp_w"] or 0.0,
            source=row["source"],
        )
    return gpus


def find_gpu(name: str, gpus: dict[str, GPU]) -> GPU:
    """Resolve a GPU by name or alias (case and punctuation ignored); unknown names list the valid ones."""
    key = norm_name(name)
    for gpu in gpus.values():
        if key in {norm_name(gpu.name), *(norm_name(a) for a in gpu.aliases)}:
            return gpu
    raise InputError(f"unknown GPU '{name}'; valid names: {', '.join(gpus)} (data/catalog/gpus.csv)")
