"""Fields declared secret (pydantic ``SecretStr``, ``SecretBytes``, ``Secret[...]``).

pydantic's JSON dump replaces a secret with ``"**********"``, which would
store the mask, not the value, and hand the mask to the next step. flowkit
stores payloads in its database (trusted storage), so a stage whose types
declare a secret dumps it with the real value (:func:`dump_json_revealed`);
stages without one keep pydantic's plain dump. :func:`secret_values` lists
the secrets of a validated value, so that logs and stored errors can hide them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any

from pydantic import BaseModel, Secret, SecretBytes, SecretStr, TypeAdapter

__all__ = ["contains_secret", "dump_json_revealed", "secret_values"]

_SECRET_TYPES = (SecretStr, SecretBytes, Secret)
_Path = tuple[Any, ...]


def contains_secret(tp: Any, _seen: set[int] | None = None) -> bool:
    """Whether the type ``tp`` declares a secret anywhere inside (models, containers, unions)."""
    seen = set() if _seen is None else _seen
    if id(tp) in seen:
        return False
    seen.add(id(tp))
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return contains_secret(typing.get_args(tp)[0], seen)
    if origin is not None:
        if isinstance(origin, type) and issubclass(origin, _SECRET_TYPES):
            return True
        return any(contains_secret(arg, seen) for arg in typing.get_args(tp))
    if not isinstance(tp, type):
        return False
    if issubclass(tp, _SECRET_TYPES):
        return True
    if issubclass(tp, BaseModel):
        return any(contains_secret(f.annotation, seen) for f in tp.model_fields.values())
    if dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
        try:
            hints = typing.get_type_hints(tp)
        except Exception:  # an unresolvable forward reference: assume the worst
            return True
        return any(contains_secret(h, seen) for h in hints.values())
    return False


def _reveal(secret: Any) -> Any:
    value = secret.get_secret_value()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return TypeAdapter(Any).dump_python(value, mode="json")


def _secret_paths(value: Any, path: _Path, out: list[tuple[_Path, Any]]) -> None:
    if isinstance(value, _SECRET_TYPES):
        out.append((path, _reveal(value)))
    elif isinstance(value, dict):
        for k, v in value.items():
            _secret_paths(v, (*path, k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _secret_paths(v, (*path, i), out)


def _put(doc: Any, path: _Path, real: Any) -> Any:
    if not path:
        return real
    node = doc
    for step in path[:-1]:
        node = _child(node, step)
        if node is None:
            return doc
    last = path[-1]
    if isinstance(node, dict):
        key = last if last in node else str(last)
        if key in node:
            node[key] = real
    elif isinstance(node, list) and isinstance(last, int) and 0 <= last < len(node):
        node[last] = real
    return doc


def _child(node: Any, step: Any) -> Any:
    if isinstance(node, dict):
        return node.get(step, node.get(str(step)))
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return None


def dump_json_revealed(adapter: TypeAdapter[Any], value: Any) -> Any:
    """``adapter.dump_python(value, mode="json")`` with every secret's real value in place.

    The JSON dump stays pydantic's own; only the places where the Python
    dump holds a secret get the secret's value instead of the mask.
    """
    doc = adapter.dump_python(value, mode="json")
    found: list[tuple[_Path, Any]] = []
    _secret_paths(adapter.dump_python(value, mode="python"), (), found)
    for path, real in found:
        doc = _put(doc, path, real)
    return doc


def secret_values(value: Any) -> list[str]:
    """The secrets inside a validated value, as text (for redaction)."""
    out: list[str] = []
    stack = [value]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, _SECRET_TYPES):
            real = node.get_secret_value()
            out.append(real.decode("utf-8", "replace") if isinstance(real, bytes) else str(real))
        elif isinstance(node, BaseModel):
            stack.extend(node.__dict__.values())
            stack.extend((node.__pydantic_extra__ or {}).values())
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend(node)
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            stack.extend(vars(node).values())
    return out
