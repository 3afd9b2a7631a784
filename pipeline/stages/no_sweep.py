"""Whether curve.source holds no benchmark sweep at all (issue 14's "no sweep" case).

Shared by the calibrate stage (which then writes a calibration with no deployments) and the curve stage
(which then writes the benchmark plan and stops). Reads the folder's file names only.
"""

from __future__ import annotations

from pathlib import Path

# what a sweep is made of: a manifest or a result file of a supported tool (pipeline.benchmarks)
MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
RESULT_SUFFIXES = (".json", ".jsonl", ".csv")


def no_sweep(folder: Path) -> bool:
    """True when `folder` is a folder holding nothing a sweep is made of: no manifest and no .json / .jsonl /
    .csv file anywhere below it (hidden files and folders, a README, a .gitkeep do not count). A missing
    folder or a file is not this case (False): the readers say what is wrong with those."""
    if not folder.is_dir():
        return False
    for p in folder.rglob("*"):
        if any(part.startswith(".") for part in p.relative_to(folder).parts) or not p.is_file():
            continue
        if p.name in MANIFEST_NAMES or p.suffix.lower() in RESULT_SUFFIXES:
            return False
    return True
