"""The signal form: inputs built from the signal type's JSON schema, and reading them back.

Simple top-level fields of an object (text, numbers, booleans, choices) get an
input each; anything else goes through the raw-JSON textarea, which wins
whenever it is filled in. The payload is then validated by ``App.signal``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import InputValidationError
from ..graph import FlowGraph

__all__ = ["signal_data", "signal_forms"]

SIMPLE = ("string", "integer", "number", "boolean")


def _object_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    defs = schema.get("$defs", {})
    candidates = [schema, *schema.get("anyOf", [])]
    for c in candidates:
        if "$ref" in c:
            c = defs.get(c["$ref"].rsplit("/", 1)[-1], {})
        if c.get("type") == "object" and c.get("properties"):
            return dict(c)
    return None


def _field(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any] | None:
    kind = prop.get("type")
    if kind is None:  # Optional[X]: anyOf X and null
        kinds = [p.get("type") for p in prop.get("anyOf", []) if p.get("type") != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind not in SIMPLE:
        return None
    return {
        "name": name,
        "type": kind,
        "title": prop.get("title", name),
        "required": required,
        "enum": [str(v) for v in prop.get("enum", [])],
        "default": prop.get("default"),
    }


def fields_of(signal_type: Any, adapter: Any) -> list[dict[str, Any]]:
    """The inputs of a signal's form (none: only the raw-JSON textarea)."""
    try:
        schema = adapter.json_schema()
    except Exception:  # a type pydantic cannot describe: raw JSON only
        return []
    obj = _object_schema(schema)
    if obj is None:
        return []
    required = set(obj.get("required", []))
    out = [_field(n, p, n in required) for n, p in obj["properties"].items()]
    return [f for f in out if f is not None]


def signal_forms(graph: FlowGraph | None, names: list[str]) -> list[dict[str, Any]]:
    """One form per signal the run may still take."""
    if graph is None:
        return []
    forms = []
    for name in names:
        step = next(s for s in graph.steps.values() if s.wait_for == name)
        forms.append(
            {
                "name": name,
                "step": step.name,
                "fields": fields_of(step.signal_type, step.signal_adapter),
                "optional": step.signal_optional,
            }
        )
    return forms


def signal_data(form: Mapping[str, Any], fields: list[dict[str, Any]]) -> Any:
    """The payload a signal form describes: its raw JSON if given, else its fields.

    Raises:
        InputValidationError: the raw JSON does not parse.
    """
    raw = str(form.get("raw_json") or "").strip()
    if raw:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InputValidationError(
                f"the raw JSON is not valid JSON: {exc}",
                errors=[{"loc": ["raw_json"], "msg": "not valid JSON", "type": "json_invalid"}],
                stage="",
            ) from None
    data: dict[str, Any] = {}
    for f in fields:
        value = str(form.get(f"field.{f['name']}") or "").strip()
        if value == "":
            continue  # missing: its default applies, or pydantic names it
        if f["type"] == "boolean":
            data[f["name"]] = value == "true"
        else:
            data[f["name"]] = value  # pydantic turns "3" into 3 for an int field
    return data
