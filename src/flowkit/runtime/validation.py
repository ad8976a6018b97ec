"""Checking a payload before anything is stored or sent: the run's input, a signal's data.

One function for both, so every refusal reads the same: which payload, which
stage, and each pydantic error as ``field: message``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import InputValidationError
from ..payloads import PayloadLimits

__all__ = ["check_payload", "validation_errors"]


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
