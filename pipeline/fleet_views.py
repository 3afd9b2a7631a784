"""Tables of report 11 (the fleet): numbers as numbers, units in the figure names, so the one table layer
(pipeline/tables.py) formats them (thousands separators, percentages, "n/a"); no notebook cell shapes them."""

from __future__ import annotations

from typing import Any

import pandas as pd


def per_tier_table(t: dict[str, Any]) -> pd.DataFrame:
    """How one fleet of metrics/fleet.json `per_tier` is sized: (figure with its unit, value, where it comes from).

    Values stay numbers (headroom in percent: 0.323 -> 32.3 under "headroom (%)"); the sources are prose.
    """
    prov = t["provenance"]
    rows = [
        ("peak (sizing) rate (req/s)", t["peak_rps"], prov["peak_rps"]),
        ("usable RPS per instance (req/s)", t["usable_rps"], prov["usable_rps"]),
        ("instances", t["instances"], "ceil(peak / usable)"),
        (
            "with safety factor (instances)",
            t["instances_with_safety"],
            f"ceil(instances x {t['safety']:g}) (fleet.safety_factor)",
        ),
        (
            "headroom (%)",
            100.0 * float(t["headroom"]),
            f"max(growth {t['expected_growth']:.0%}, burst {t['burst_absorption']:.1%}): " + prov["burst_absorption"],
        ),
        ("with headroom (instances)", t["instances_with_headroom"], "ceil(x (1 + headroom))"),
        ("spares (instances)", t["spares"], prov["spares"]),
        ("instances in total", t["total_instances"], ""),
        (f"GPUs ({t['gpu']})", t["gpus"], f"instances x TP{t['tp']} x PP{t['pp']}"),
    ]
    return pd.DataFrame(rows, columns=["figure", "value", "where it comes from"])


def replay_table(rep: dict[str, Any]) -> pd.DataFrame:
    """The fleet replay (metrics/fleet.json `replay`) one row per fleet (and "all tiers" when routed), numbers kept:
    the capacity correction factor (None, "n/a", when not applied), requests, the formula's N and the smallest N meeting the SLO, TTFT/ITL p99 as logged and scaled (ms), the rate
    scale (x), the SLO attainment scaled (a fraction, shown in %), and whether the formula's N passes (yes/NO).

    Offered for the replay paragraph of notebook 11 (its owner decides; see the notebook's replay cell): it reads
    the keys that cell reads (per_tier[*].as_logged/scaled, formula_replicas, min_replicas_meeting_slo, rate_scale,
    passes, window.requests)."""
    w = rep["window"]
    fleets = list(rep["per_tier"].items()) + ([("all tiers", rep)] if len(rep["per_tier"]) > 1 else [])
    rows = []
    for name, r in fleets:
        lg, sc = r.get("as_logged") or {}, r.get("scaled") or {}
        rows.append(
            {
                "fleet": name,
                "deployment": r.get("deployment", ""),
                "capacity x (corrected to the benchmark)": (
                    cc.get("capacity_factor", 1.0)
                    if (cc := r.get("capacity_correction") or {}).get("applied")
                    else None
                ),
                "requests": (r.get("window") or w)["requests"],
                "formula N": r.get("formula_replicas"),
                "smallest N meeting the SLO": r.get("min_replicas_meeting_slo"),
                "TTFT p99 as logged (ms)": lg.get("ttft_p99_ms"),
                "ITL p99 as logged (ms)": lg.get("itl_p99_ms"),
                "rate scale (x)": r.get("rate_scale"),
                "TTFT p99 scaled (ms)": sc.get("ttft_p99_ms"),
                "ITL p99 scaled (ms)": sc.get("itl_p99_ms"),
                "SLO attainment scaled": sc.get("slo_attainment"),
                "formula N passes": {True: "yes", False: "NO"}.get(r.get("passes")),
            }
        )
    return pd.DataFrame(rows)
