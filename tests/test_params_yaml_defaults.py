"""params.yaml holds only what a site sets (issue 16): every default and its explanation live once, in the pydantic
models of pipeline/params.py. A key params.yaml writes at its default value must be on the short allowlist below,
each with the reason it stays; `sizing params` shows the full picture (every key, its value, default, description);
and what dvc.yaml and the README rely on is still in params.yaml (dvc fails on a tracked param the file lacks)."""

from __future__ import annotations

import json
import re

import yaml

from pipeline import cli, params, params_doc
from tests.conftest import ROOT

# Keys params.yaml writes although they equal the default, and why. Everything else at its default is left out.
KEPT_AT_DEFAULT = {
    "slo.ttft_p99_ms": "the site's SLO: every site sets its own",
    "slo.itl_p99_ms": "the site's SLO: every site sets its own",
    "workload.format": "the site's log layout; dvc.yaml's validation stage tracks workload.format",
    "workload.columns": "the site's column names (generic layout); dvc.yaml's validation stage tracks workload.columns",
    "workload.sizing_rate": "the site's sizing policy; the README's what-if sets it with `-S workload.sizing_rate=...`",
    "hardware.gpus": "the GPUs the site can buy",
    "model.name": "the model the site serves",
    "curve.source": "where the site's sweeps are; dvc.yaml's calibrate stage tracks curve.source, sample.py reads it",
    "fleet.safety_factor": "a site judgement; dvc.yaml's bench_plan tracks it; the README's what-if sets it",
    "tco.pricing": "the site's price list (on-demand or capacity blocks)",
    "tco.provider": "the site's provider",
    "tco.prices": "the site's negotiated prices",
    "tco.planned_utilization": "finance's target; the README flow (tests/test_e2e_dvc.py) runs `-S tco.planned_utilization=`",
    "validation.source": "where the site's production window is; sample.py reads it from the file",
    "report.previous": "the quarterly review sets it (README: Quarterly review)",
}


def _data() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def repeated_defaults(data: dict) -> list[str]:
    """The keys `data` sets to the default's value (2000 counts as 2000.0)."""
    return [r.key for r in params_doc.rows(data) if r.repeats_default]


def extra_defaults(data: dict) -> list[str]:
    """The keys `data` repeats at their default outside the allowlist."""
    return [k for k in repeated_defaults(data) if k not in KEPT_AT_DEFAULT]


def test_params_yaml_repeats_no_default_outside_the_allowlist():
    extra = extra_defaults(_data())
    assert not extra, (
        f"params.yaml repeats the default of {extra}: remove them (the default and its description live in "
        "pipeline/params.py; `sizing params --defaults` shows them), or add each to KEPT_AT_DEFAULT with its reason"
    )


def test_every_allowlisted_key_is_still_in_params_yaml():
    """A stale allowlist entry (the key gone, or now set to another value) is removed, so the list stays short."""
    repeated = set(repeated_defaults(_data()))
    assert sorted(set(KEPT_AT_DEFAULT) - repeated) == []
    assert len(KEPT_AT_DEFAULT) <= 16


def test_a_params_yaml_writing_every_default_fails_the_check():
    """As the file before issue 16 did (98 keys, 92 at their default): the site's six values kept (by hand:
    workload.source, workload.tiers.map, model.tiers, validation.tier, validation.benchmark_gpu_util_pct,
    report.scenarios), every other key written out at its default."""
    full = _data()
    for name, section in params.defaults().items():
        full[name] = {**section, **(full.get(name) or {})}
    full["workload"]["tiers"] = {**params.defaults()["workload"]["tiers"], **full["workload"]["tiers"]}
    table = params_doc.rows(full)
    assert [r.key for r in table if r.set_here and not r.repeats_default] == [
        "workload.source",
        "workload.tiers.map",
        "model.tiers",
        "validation.tier",
        "validation.benchmark_gpu_util_pct",
        "report.scenarios",
    ]
    extra = extra_defaults(full)
    assert "fleet.init_s" in extra and "engine.max_num_seqs" in extra and "slo.ttft_p99_ms" not in extra
    assert len(extra) == len(table) - 6 - len(KEPT_AT_DEFAULT)


def _tracked_params() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    names = []
    for stage in stages.values():
        for item in stage.get("params") or []:
            names += [item] if isinstance(item, str) else []  # `params.yaml:` (the whole file) is a mapping
        for dep in stage.get("deps") or []:
            names += re.findall(r"\$\{([\w.]+)\}", dep)  # templated deps: ${workload.source}
    return names


def test_every_param_dvc_tracks_is_in_params_yaml():
    """`dvc repro` stops with "Parameters 'X' are missing from 'params.yaml'" for a tracked section or dotted key the
    file lacks (checked with dvc 3.67): a section whose keys are all defaults stays as `{}`."""
    data = _data()
    missing = []
    for dotted in _tracked_params():
        node = data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    assert missing == [], f"dvc.yaml tracks {missing}, which params.yaml must hold (an empty section: `name: {{}}`)"
    assert set(params.SECTION_MODELS) <= set(data), "every section is written, empty if need be"
    assert all(isinstance(data[name], dict) for name in params.SECTION_MODELS), "`lora: {}`, not `lora:` (null)"


def test_readme_set_param_examples_name_keys_params_yaml_holds():
    """`dvc exp run -S key=value` fails for a key params.yaml leaves out (Hydra: "Could not override ... To append
    to your config use +key=value"); the README's examples either name a key the file holds or use `++key=value`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    overrides = re.findall(r"-S '([^']+)'", readme)
    assert overrides, "the README's what-if examples"
    data = _data()
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("++"):
            continue
        section, name = key.split(".", 1)
        assert name in (data.get(section) or {}), (
            f"README: -S '{override}': params.yaml has no {key}; use '++{key}=...'"
        )
    assert "++" in readme, "the README says how to set a key params.yaml leaves out"


def test_sizing_params_lists_set_keys_with_value_default_and_description(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("fleet:\n  safety_factor: 1.5\n  init_s: 60\nworkload: {}\n", encoding="utf-8")
    assert cli.main(["params", "--params", str(path), "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["keys"]}
    assert list(rows) == ["fleet.safety_factor", "fleet.init_s"]
    assert rows["fleet.safety_factor"] == {
        "key": "fleet.safety_factor",
        "value": 1.5,
        "default": 1.2,  # method.md: 1.2 for predictable traffic
        "set_here": True,
        "description": "1.2 predictable traffic, 1.5 new or high variance",
    }
    assert rows["fleet.init_s"]["value"] == rows["fleet.init_s"]["default"] == 60
    assert cli.main(["params", "--params", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sets 2 of " in out and "(1 at their default value)" in out
    assert "  fleet.safety_factor = 1.5  [params.yaml; default 1.2]\n      1.2 predictable traffic" in out
    assert "  fleet.init_s = 60  [params.yaml, the default]" in out


def test_sizing_params_defaults_lists_every_key_with_its_default(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("workload:\n  tiers:\n    column: tenant\n", encoding="utf-8")
    assert cli.main(["params", "--defaults", "--params", str(path), "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["keys"]}
    # one row per leaf field of every section model; the nested tiers mapping is walked into
    leaves = sum(len(m.model_fields) for m in params.SECTION_MODELS.values()) - 1 + len(params.Tiers.model_fields)
    assert len(rows) == leaves
    assert rows["workload.tiers.column"] | {"description": ""} == {
        "key": "workload.tiers.column",
        "value": "tenant",
        "default": "auto",
        "set_here": True,
        "description": "",
    }
    assert rows["workload.tiers.map"]["set_here"] is False and rows["workload.tiers.map"]["value"] == {}
    assert rows["engine.max_num_seqs"] == {
        "key": "engine.max_num_seqs",
        "value": 256,  # vLLM's default
        "default": 256,
        "set_here": False,
        "description": "sequences in flight per replica",
    }
    assert all(r["description"] for r in rows.values()), "every key explains itself (pipeline/params.py)"


def test_sizing_params_bad_key_is_one_line(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("fleet:\n  safety_factr: 1.5\n", encoding="utf-8")
    assert cli.main(["params", "--params", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sizing: error: params.yaml: unknown key fleet.safety_factr (did you mean 'safety_factor'?)")
    assert len(err.strip().splitlines()) == 1


def test_a_source_left_at_its_default_still_counts_as_the_shipped_sample():
    """pipeline/sample.py reads params.yaml itself (the SAMPLE banner): curve.source and validation.source left out
    are their defaults, data/raw/benchmarks and data/raw/production, which hold the synthetic sweeps and window."""
    from pipeline import sample

    found = sample.sample_inputs(ROOT, {"workload": {"source": "own.csv"}})
    assert [f.split(" (")[0] for f in found] == ["benchmark sweeps", "the production window"]
