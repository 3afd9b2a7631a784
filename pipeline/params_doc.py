"""`sizing params`: every params.yaml key with its effective value, its default and its description.

params.yaml holds only what a site sets; the pydantic models of pipeline/params.py hold every default and its
explanation. This module reads both back as one table, so a user sees the full picture without the file
repeating the defaults:

    sizing params                 the keys params.yaml sets: value, default, description
    sizing params --defaults      every key of the schema: effective value, default, where it comes from
    sizing params --json          the same rows as JSON

A key is a leaf of the schema: a nested fixed-key mapping (workload.tiers) is walked into; any other mapping or
list (tco.prices, report.scenarios, hardware.gpus) is one key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline import params

_UNSET = object()


@dataclass(frozen=True)
class Row:
    """One params key: dotted name, effective value, default, whether params.yaml sets it, what it means."""

    key: str
    value: Any
    default: Any
    set_here: bool
    description: str

    @property
    def repeats_default(self) -> bool:
        """params.yaml sets it to the default's value (2000 and 2000.0 count as the same value)."""
        return self.set_here and self.value == self.default


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The fixed-key model a field holds directly (workload.tiers), else None (a leaf)."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _leaves(model: type[BaseModel], prefix: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(dotted key, path inside the section, description) of every leaf of a section model, in declaration order."""
    out: list[tuple[str, tuple[str, ...], str]] = []

    def walk(m: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, field in m.model_fields.items():
            sub = _nested_model(field.annotation)
            if sub is not None and not issubclass(sub, params.Sparse):
                walk(sub, (*path, name))
            else:
                out.append((".".join((prefix, *path, name)), (*path, name), field.description or ""))

    walk(model, ())
    return out


def _get(mapping: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(mapping, dict) or part not in mapping:
            return _UNSET
        mapping = mapping[part]
    return mapping


def rows(data: dict[str, Any]) -> list[Row]:
    """Every key of the schema for params.yaml's `data` (validated first: a bad key stops with one ParamsError)."""
    effective = params.validate_schema(data)
    defaults = params.defaults()
    out = []
    for name, model in params.SECTION_MODELS.items():
        raw = data.get(name)
        for key, path, description in _leaves(model, name):
            written = _get(raw, path)
            out.append(
                Row(key, _get(effective[name], path), _get(defaults[name], path), written is not _UNSET, description)
            )
    return out


def show(value: Any) -> str:
    """A value as params.yaml writes it, on one line: null, true, 2000.0, [a, b], {k: v}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value and ": " not in value else repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{show(k)}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def text(table: list[Row], path: Path | None, every: bool) -> str:
    """The table as lines: `key = value  [where; default ...]`, its description indented below, by section."""
    where = path.as_posix() if path else "no params.yaml: every key at its default"
    set_rows = [r for r in table if r.set_here]
    lines = [
        f"{where}: sets {len(set_rows)} of {len(table)} keys ({sum(r.repeats_default for r in set_rows)} at their "
        f"default value); defaults and descriptions: pipeline/params.py"
        + ("" if every else "; every key: sizing params --defaults")
    ]
    section = None
    for r in table if every else set_rows:
        name = r.key.split(".", 1)[0]
        if name != section:
            section = name
            doc = (params.SECTION_MODELS[name].__doc__ or "").strip().splitlines()[0]
            lines += ["", f"{name}: {doc}"]
        if r.set_here:
            origin = "params.yaml, the default" if r.repeats_default else "params.yaml"
            tag = f"[{origin}; default {show(r.default)}]" if not r.repeats_default else f"[{origin}]"
        else:
            tag = "[default]"
        lines.append(f"  {r.key} = {show(r.value)}  {tag}")
        if r.description:
            lines.append(f"      {r.description}")
    return "\n".join(lines)


def as_json(table: list[Row], path: Path | None, every: bool) -> dict[str, Any]:
    """The rows as a JSON document: {params, keys: [{key, value, default, set_here, description}]}."""
    keys = [asdict(r) for r in table if every or r.set_here]
    return {"params": path.as_posix() if path else None, "keys": keys}
