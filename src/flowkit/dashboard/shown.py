"""What the dashboard may show of a payload or an error: secrets masked, passwords redacted.

The database keeps secrets (pydantic ``SecretStr``) in the clear so that the
next step gets them. With the flow's definitions, a payload is validated by the
model it was stored by and dumped as pydantic shows it (secrets as
``**********``), as ``flowkit runs show --app`` does; every payload then also has
its secret-looking keys masked (:func:`~flowkit.redact.mask_secret_fields`), and
every text is passed through :func:`~flowkit.redact.redact` (URL passwords, known
keys).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..graph import FlowGraph
from ..records import RunInfo, StepInfo
from ..redact import mask_secret_fields, redact
from ..stage import Stage

__all__ = ["error_dict", "pretty", "run_input", "run_output", "shown", "step_input", "step_output"]


def shown(value: Any, adapter: TypeAdapter[Any] | None = None) -> Any:
    """A stored payload as it may be shown: dumped by its model when known, secrets masked."""
    if value is None:
        return None
    if adapter is not None:
        # Stored by another version of the flow, it does not validate: the key names decide.
        with contextlib.suppress(ValidationError):
            value = adapter.dump_python(adapter.validate_python(value), mode="json")
    return mask_secret_fields(value)


def pretty(value: Any) -> str:
    """Indented JSON text, redacted."""
    return redact(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def _stage(graph: FlowGraph | None, name: str) -> Stage[Any, Any] | None:
    return None if graph is None else graph.steps.get(name)


def run_input(run: RunInfo, graph: FlowGraph | None) -> Any:
    return shown(run.input, graph.entry.input_adapter if graph is not None else None)


def run_output(run: RunInfo, graph: FlowGraph | None) -> Any:
    adapter = None
    if graph is not None and run.stop_reason is None:
        adapter = TypeAdapter(graph.output_type)
    return shown(run.output, adapter)


def step_input(step: StepInfo, graph: FlowGraph | None) -> Any:
    stage = _stage(graph, step.name)
    if stage is None or step.input is None:
        return shown(step.input)
    if stage.wait_for and isinstance(step.input, dict):
        signal = step.input.get("signal")
        waited = {
            "value": shown(step.input.get("value"), stage.input_adapter),
            "signal": shown(signal, stage.signal_adapter) if signal is not None else None,
        }
        if step.input.get("timed_out"):  # ran with flowkit.TimedOut: the signal never came
            waited["timed_out"] = True
        return waited
    return shown(step.input, stage.input_adapter)


def step_output(step: StepInfo, graph: FlowGraph | None) -> Any:
    stage = _stage(graph, step.name)
    return shown(step.output, stage.output_adapter if stage is not None else None)


def error_dict(err: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored error's type, message, traceback, step and attempt, redacted."""
    if not err:
        return None
    out = {k: err.get(k) for k in ("type", "message", "traceback", "step", "attempt")}
    for k in ("message", "traceback"):
        text = out[k]
        if isinstance(text, str):
            out[k] = redact(text)
    return out
