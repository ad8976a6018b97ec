"""Names: what a stage, flow, App, signal, queue or event may be called.

Every name is checked here, so that a name is judged the same way wherever it
is declared. Names end up in database rows, Dramatiq actor names, RabbitMQ
queue names and CLI arguments, hence the conservative alphabet.

.. versionadded:: 0.2
"""

from __future__ import annotations

import re
from typing import Any

from .errors import FlowDefinitionError

__all__ = [
    "EVENT_NAME",
    "NAME",
    "QUEUE_NAME",
    "validate_event_name",
    "validate_flow_name",
    "validate_name",
    "validate_queue_name",
]

#: stage, flow, App and signal names
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
#: queue names: safe for RabbitMQ and Dramatiq
QUEUE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")
#: event names such as ``loan:application:uploaded``
EVENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}$")


def _require(pattern: re.Pattern[str], value: Any, problem: str) -> str:
    """``value`` if it is a string ``pattern`` matches, else a FlowDefinitionError."""
    if not isinstance(value, str) or pattern.match(value) is None:
        raise FlowDefinitionError(problem)
    return value


def validate_name(value: str, *, what: str) -> str:
    """Check the name of a stage, a signal or an App.

    Parameters:
        value: the name.
        what: what is named, first in the message (``"stage name"``).

    Returns:
        ``value``.

    Raises:
        FlowDefinitionError: ``value`` is not letters, digits and ``_.-``, starting
            with a letter or ``_``, at most 100 characters.
    """
    return _require(
        NAME,
        value,
        f"{what} {value!r} is not a valid name: use letters, digits, '_', '.', '-' "
        "(starting with a letter or '_', at most 100 characters)",
    )


def validate_flow_name(value: str, kind: str) -> str:
    """Check a flow's name (the same rules as :func:`validate_name`).

    Parameters:
        value: the name.
        kind: ``"pipeline"`` or ``"workflow"``, first in the message.

    Raises:
        FlowDefinitionError: naming the flow's kind.
    """
    problem = f"{kind} name {value!r} is not valid: use letters, digits, '_', '.', '-'"
    return _require(NAME, value, problem)


def validate_event_name(value: str, *, what: str) -> str:
    """Check an event name such as ``loan:application:uploaded``.

    Raises:
        FlowDefinitionError: ``value`` is not letters, digits and ``_.:/-``.
    """
    problem = f"{what}: event name {value!r} is not valid: use letters, digits and '_.:/-'"
    return _require(EVENT_NAME, value, problem)


def validate_queue_name(value: str, *, what: str) -> str:
    """Check a queue name is safe for RabbitMQ and Dramatiq.

    Raises:
        FlowDefinitionError: ``value`` has other characters than letters, digits and
            ``_.-``, or ends in ``.DQ``/``.XQ`` (Dramatiq's delay and dead-letter queues).
    """
    _require(
        QUEUE_NAME,
        value,
        f"{what}: queue name {value!r} is not valid: use letters, digits, '_', '.', '-' "
        "(starting with a letter or '_')",
    )
    if value.endswith((".DQ", ".XQ")):
        raise FlowDefinitionError(
            f"{what}: queue name {value!r} ends in .DQ/.XQ, "
            "which Dramatiq reserves for delay and dead-letter queues"
        )
    return value
