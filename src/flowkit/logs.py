"""Log lines as text or as JSON, each carrying the run, step and trace it belongs to.

While a worker runs a step attempt, :func:`step_fields` binds the run id, step,
attempt (and item) to the thread, so every record logged meanwhile — flowkit's
own, ``ctx.logger``'s, your libraries' — can say which run it belongs to.
:class:`JsonFormatter` writes one JSON object per line with those fields and the
current span's ``trace_id`` and ``span_id`` (see :mod:`flowkit.tracing`).

``flowkit worker``, ``dev`` and ``scheduler`` take ``--log-format json`` (or
``FLOWKIT_LOG_FORMAT=json``); in your own process::

    handler = logging.StreamHandler()
    handler.setFormatter(flowkit.logs.JsonFormatter())
    flowkit.redact.protect(handler)  # secrets masked, as the CLI does

.. versionadded:: 0.3
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from . import tracing
from .errors import ConfigurationError

__all__ = ["FORMATS", "TEXT_FORMAT", "JsonFormatter", "formatter", "step_fields"]

#: The line of ``--log-format text`` (the default), on the console and in ``--log-file``.
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
FORMATS = ("text", "json")
#: The step fields a line carries when they are known, in this order.
_STEP_KEYS = ("flow", "run_id", "step", "attempt", "item", "key", "tenant_id")

_fields: ContextVar[dict[str, Any] | None] = ContextVar("flowkit_log_fields", default=None)


@contextmanager
def step_fields(**fields: Any) -> Iterator[None]:
    """Within the block, log records of this thread carry ``fields`` (``None`` ones left out)."""
    token = _fields.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _fields.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, ``pid``,
    the step's ``run_id``, ``step``, ``attempt`` (and ``flow``, ``item``, ``key``,
    ``tenant_id``) when there is one, ``trace_id`` and ``span_id`` inside a span, and
    ``exc``, the formatted traceback, when the record has one.

    Put it after :class:`flowkit.redact.RedactingFilter` (the CLI does): the filter
    masks the message and traceback this formatter writes.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        prefix = getattr(record, "flowkit_prefix", None)
        if prefix and message.startswith(prefix):
            message = message[len(prefix) :]  # ctx.logger's [run_id=...] tags: fields here
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
        }
        bound = _fields.get() or {}
        for key in _STEP_KEYS:
            value = getattr(record, key, None)
            value = bound.get(key) if value is None else value
            if value is not None:
                line[key] = value
        found = tracing.ids()
        if found is not None:
            line["trace_id"], line["span_id"] = found
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    """The formatter of ``--log-format`` ``kind`` (``text`` or ``json``).

    Raises:
        ConfigurationError: another kind (say, a typo in ``FLOWKIT_LOG_FORMAT``).
    """
    if kind == "json":
        return JsonFormatter()
    if kind == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ConfigurationError(f"log format {kind!r} is not one of: {', '.join(FORMATS)}")
