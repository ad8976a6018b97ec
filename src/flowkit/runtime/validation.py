"""Checking a payload before anything is stored or sent: the run's input, a signal's data.

One function for both, so every refusal reads the same: which payload, which
stage, and each pydantic error as ``field: message``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from .._types import type_name
from ..errors import InputValidationError
from ..payloads import PayloadLimits

if TYPE_CHECKING:
    from ..graph import FlowGraph
    from ..stage import Stage

__all__ = ["check_input", "check_payload", "check_signal", "validation_errors"]


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as plain ``{"loc", "msg", "type"}`` records."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]


def check_payload(
    value: Any,
    adapter: TypeAdapter[Any],
    dump: Callable[[Any], Any],
    limits: PayloadLimits,
    what: str,
    stage: str,
    mismatch: str,
) -> Any:
    """The JSON form of ``value`` once it validates and fits the payload limits.

    Parameters:
        value: the raw payload (a model, a dict, ...).
        adapter: validates it against the declared type.
        dump: turns the validated value into its JSON form (secrets revealed).
        limits: the size and depth limits.
        what: how messages name the payload (``"input for 'orders'"``).
        stage: the stage it is for.
        mismatch: the sentence that starts a validation error; ``{count}`` in it
            becomes the number of errors.

    Raises:
        InputValidationError: it does not validate (with the pydantic errors).
        PayloadTooLarge: it is over a limit.
    """
    limits.check_raw(value, what=what, stage=stage)
    try:
        typed = adapter.validate_python(value)
    except ValidationError as exc:
        errors = validation_errors(exc)
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors
        )
        head = mismatch.format(count=len(errors))
        raise InputValidationError(f"{head}: {detail}", errors=errors, stage=stage) from None
    return limits.json_form(dump, typed, what=what, stage=stage)


def check_input(flow: FlowGraph, value: Any, limits: PayloadLimits) -> Any:
    """The JSON form of a run's input once it validates against the flow's first stage.

    Needs no store or broker: the CLI checks its input with it before opening either.

    Raises:
        InputValidationError: with the pydantic errors; nothing is stored or sent.
        PayloadTooLarge: over a payload limit.
    """
    entry, what = flow.entry, f"input for {flow.name!r}"
    head = f"{what} does not match stage {entry.name!r}: {{count}} validation error(s)"
    adapter, dump = entry.input_adapter, entry.dump_input
    return check_payload(value, adapter, dump, limits, what, entry.name, head)


def check_signal(stage: Stage[Any, Any], name: str, value: Any, limits: PayloadLimits) -> Any:
    """The JSON form of signal ``name``'s payload once it validates against ``stage``'s type.

    A signal without a payload (``None``) is refused unless the type lists
    ``None`` (``Note | None``): a forgotten payload must not look like a decision.

    Raises:
        InputValidationError: no payload, or one that does not validate; nothing is sent.
        PayloadTooLarge: over a payload limit.
    """
    what = f"signal {name!r}"
    if value is None and not stage.signal_optional:
        raise InputValidationError(
            f"{what} needs a payload: step {stage.name!r} takes "
            f"{type_name(stage.signal_type)}, not None (nothing was sent)",
            errors=[{"loc": [], "msg": "a payload is required", "type": "missing"}],
            stage=stage.name,
        )
    head = f"{what} does not match {stage.name!r}'s payload type"
    adapter, dump = stage.signal_adapter, stage.dump_signal
    return check_payload(value, adapter, dump, limits, what, stage.name, head)
