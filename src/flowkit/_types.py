"""Type contracts between steps: assignability checks and durations."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Union

from .errors import ConfigurationError

_NONE = type(None)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(tp)
    return None


def strip_type(tp: Any, drop: type) -> Any:
    """Return ``tp`` without ``drop`` among its union members (``X | Stop`` → ``X``)."""
    args = _union_args(tp)
    if args is None:
        return tp
    kept = tuple(a for a in args if a is not drop)
    if not kept:
        return _NONE
    if len(kept) == 1:
        return kept[0]
    return Union[kept]  # noqa: UP007 - building a union at runtime


def is_assignable(src: Any, dst: Any) -> bool:
    """Whether a value of type ``src`` is always accepted where ``dst`` is expected.

    Deliberately conservative but not pedantic: ``Any`` on either side passes,
    subclasses pass, unions are checked member by member, generic containers
    are checked argument by argument (``list[Sub]`` → ``list[Base]`` passes).
    """
    if src is Any or dst is Any or src == dst:
        return True
    if dst is object:
        return True
    src_args = _union_args(src)
    if src_args is not None:
        return all(is_assignable(a, dst) for a in src_args)
    dst_args = _union_args(dst)
    if dst_args is not None:
        return any(is_assignable(src, d) for d in dst_args)
    if src is None:
        src = _NONE
    if dst is None:
        dst = _NONE
    # int is accepted where float is expected (pydantic and PEP 484 agree).
    if src is int and dst is float:
        return True
    s_origin, d_origin = typing.get_origin(src), typing.get_origin(dst)
    if s_origin is None and d_origin is None:
        if isinstance(src, type) and isinstance(dst, type):
            return issubclass(src, dst)
        return False
    s_base = s_origin or src
    d_base = d_origin or dst
    if not (isinstance(s_base, type) and isinstance(d_base, type) and issubclass(s_base, d_base)):
        return False
    d_params = typing.get_args(dst)
    if not d_params:
        return True
    s_params = typing.get_args(src)
    if not s_params or len(s_params) != len(d_params):
        return False
    return all(
        s is Ellipsis or d is Ellipsis or is_assignable(s, d)
        for s, d in zip(s_params, d_params, strict=True)
    )


def type_name(tp: Any) -> str:
    """A short human name for a type, as a user would write it (``list[Match]``)."""
    if tp is None or tp is _NONE:
        return "None"
    if tp is Any:
        return "Any"
    args = _union_args(tp)
    if args is not None:
        return " | ".join(type_name(a) for a in args)
    origin = typing.get_origin(tp)
    if origin is not None:
        params = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(tp))
        base = getattr(origin, "__name__", str(origin).replace("typing.", ""))
        return f"{base}[{params}]"
    if isinstance(tp, type):
        return tp.__qualname__
    return str(tp).replace("typing.", "")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(value: str | float | int | None, *, what: str) -> int | None:
    """Turn ``"30s"``, ``"5m"``, ``"250ms"``, ``"24h"`` or a number of seconds into milliseconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected a duration like '30s', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigurationError(f"{what}: a duration cannot be negative ({value!r})")
        return int(value * 1000)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigurationError(
            f"{what}: expected a duration like '250ms', '30s', '5m', '2h' or '1d', got {value!r}"
        )
    number, unit = match.groups()
    return int(float(number) * _UNIT_MS[unit or "s"])
