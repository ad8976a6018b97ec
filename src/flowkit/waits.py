"""What a signal wait's step declares about its payload: its type, a timeout, ``None``.

A step declared with ``wait_for=`` takes the signal's payload as its second
parameter. Its annotation says three things, read once by :func:`read_payload`:

- the payload's type, which a signal is validated against;
- whether a timeout runs the step, with a :class:`TimedOut` in place of the
  payload (``approval: Approval | flowkit.TimedOut``), or fails it
  (:class:`~flowkit.StepTimeout`);
- whether a signal may come without a payload (``None`` among the members:
  ``Note | None``).

.. versionadded:: 0.2
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ._types import strip_type

__all__ = ["PayloadSpec", "TimedOut", "read_payload"]

_NONE = type(None)


@dataclass(frozen=True)
class TimedOut:
    """What a waiting step receives instead of the signal's payload when its timeout passed.

    Add it to the payload's annotation to handle the timeout in the step
    rather than fail it::

        @wf.step(after=check_budget, wait_for="approval", timeout="24h")
        def review(expense: Budgeted, approval: Approval | flowkit.TimedOut) -> Decision:
            if isinstance(approval, flowkit.TimedOut):
                ...  # nobody decided within approval.waited

    It cannot be confused with a payload: a signal's data is validated against
    the other members of the annotation only, so no sender can send a
    ``TimedOut``, and a ``null`` payload stays ``None``.

    Attributes:
        signal: the signal's name.
        waited: how long the step waited (its ``timeout=``).

    .. versionadded:: 0.2
    """

    signal: str
    waited: timedelta


@dataclass(frozen=True)
class PayloadSpec:
    """A signal wait's payload annotation, read by :func:`read_payload`.

    Attributes:
        type: the payload's type, without :class:`TimedOut`.
        takes_timeout: the annotation names :class:`TimedOut`: a timeout runs the step.
        nullable: ``None`` is a member: a signal may come without a payload.
    """

    type: Any
    takes_timeout: bool
    nullable: bool


def read_payload(annotation: Any) -> PayloadSpec:
    """Read a payload annotation (``Approval``, ``Approval | TimedOut``, ``Note | None``)."""
    takes_timeout = TimedOut in _members(annotation)
    payload = strip_type(annotation, TimedOut) if takes_timeout else annotation
    if typing.get_origin(payload) is typing.Annotated:  # Annotated[Note | None, ...]
        nullable = _NONE in _members(typing.get_args(payload)[0])
    else:
        nullable = _NONE in _members(payload) or payload is None
    return PayloadSpec(payload, takes_timeout, nullable)


def _members(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)
