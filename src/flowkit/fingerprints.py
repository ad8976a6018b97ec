"""A flow definition's fingerprint: what a run started under, to compare with what is deployed.

:func:`describe` reduces a compiled :class:`~flowkit.graph.FlowGraph` to the parts
that decide whether a stored run can go on under it: the steps, the edges
between them (and which fan out), the signal each wait step waits for, and the
field names and types of each step's input, output and signal payload. Descriptions,
docstrings, titles and examples are left out, and so are
the step options (queues, retries, timeouts): editing them changes nothing a
stored run depends on. :func:`fingerprint` is a short hash of that description;
every run records the one of the definition it started under (see
``docs/deploys.md``).

.. versionadded:: 0.4
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from ._types import type_name

if TYPE_CHECKING:
    from .graph import FlowGraph

__all__ = ["describe", "describe_type", "fingerprint"]

#: JSON Schema keys that describe rather than constrain: left out of a fingerprint.
_WORDS = frozenset({"description", "title", "examples", "$comment"})


def describe_type(tp: Any) -> Any:
    """The shape of a type: its JSON Schema without descriptions, titles or examples.

    A type pydantic cannot describe is named instead (``type_name``).
    """
    try:
        schema = TypeAdapter(tp).json_schema()
    except Exception:  # an arbitrary type: its name is all there is
        return {"type_name": type_name(tp)}
    return _strip(schema)


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in sorted(node.items()) if k not in _WORDS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def describe(graph: FlowGraph) -> dict[str, Any]:
    """The parts of ``graph`` a stored run depends on, as JSON-compatible data.

    ``{"flow", "steps": {name: {"after", "each", "wait_for", "input", "output",
    "signal"}}}``, steps in declaration order.
    """
    steps: dict[str, Any] = {}
    for name, stage in graph.steps.items():
        steps[name] = {
            "after": graph.parents(name),
            "each": graph.is_each(name),
            "wait_for": stage.wait_for,
            "input": describe_type(stage.input_type),
            "output": describe_type(stage.output_type),
            "signal": None if stage.signal_type is None else describe_type(stage.signal_type),
        }
    return {"flow": graph.name, "steps": steps}


def fingerprint(graph: FlowGraph) -> str:
    """A 16-hex-digit hash of :func:`describe`: equal for definitions a run cannot tell apart."""
    text = json.dumps(describe(graph), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
