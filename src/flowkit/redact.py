"""Keeping secrets out of logs, stored errors and the CLI's output.

What counts as a secret here:

- passwords in URLs (``amqp://user:PASSWORD@host``, ``?password=...``), wherever
  they appear in a text;
- the values of ``OPENAI_API_KEY``, of the signing keys and of the configured
  URLs' passwords (:func:`remember`, :func:`remember_environment`);
- the values of the fields a step's input declares secret (pydantic
  ``SecretStr``, ``SecretBytes``), while that step runs (:func:`secret_scope`);
- pydantic's ``input_value=...`` in validation error texts, which repeats
  the payload.

:func:`redact` applies all of it to a text; :class:`RedactingFilter` applies
it to every log record that passes through a handler (the CLI installs it
on its handlers); :class:`MessageFilter` keeps Dramatiq's log lines to a
message's actor and id, never its arguments.

Values shorter than 6 characters are not hidden: they would match ordinary
words and ids.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .config import url_passwords

__all__ = [
    "MessageFilter",
    "RedactingFilter",
    "exception_texts",
    "mask_secret_fields",
    "note",
    "protect",
    "redact",
    "remember",
    "remember_environment",
    "secret_scope",
]

MASK = "***"
MIN_SECRET_LENGTH = 6

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s@/]+(?=@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&#\s'\"]+", re.IGNORECASE)
_INPUT_VALUE = re.compile(r"input_value=.*?, input_type=")

_lock = threading.Lock()
_known: tuple[str, ...] = ()  # replaced whole, so readers never see it change
_scope: ContextVar[list[str] | None] = ContextVar("flowkit_secret_scope", default=None)


def _variants(value: str) -> list[str]:
    # How a value shows up in texts: as is, and inside a repr (escaped quotes, newlines).
    inner = repr(value)[1:-1]
    return [value] if inner == value else [value, inner]


def remember(*values: str) -> None:
    """Hide these values from every redacted text of this process from now on."""
    global _known
    new = {v for value in values if len(value) >= MIN_SECRET_LENGTH for v in _variants(value)}
    if not new - set(_known):
        return
    with _lock:
        _known = tuple(sorted(set(_known) | new, key=len, reverse=True))


def remember_environment() -> None:
    """Remember ``OPENAI_API_KEY``, ``FLOWKIT_SIGNING_KEY`` and the URLs' passwords."""
    env = os.environ
    values = [env.get("OPENAI_API_KEY", "").strip()]
    values += [k.strip() for k in env.get("FLOWKIT_SIGNING_KEY", "").split(",")]
    for name in ("FLOWKIT_BROKER_URL", "FLOWKIT_DATABASE_URL"):
        values += url_passwords(env.get(name, ""))
    remember(*values)


@contextmanager
def secret_scope() -> Iterator[None]:
    """Within the block, values passed to :func:`note` are hidden too (one step's secrets)."""
    token = _scope.set([])
    try:
        yield
    finally:
        _scope.reset(token)


def note(values: Iterable[str]) -> None:
    """Hide these values until the current :func:`secret_scope` ends (no-op outside one)."""
    current = _scope.get()
    if current is not None:
        current.extend(
            v for value in values if len(value) >= MIN_SECRET_LENGTH for v in _variants(value)
        )


def redact(text: str) -> str:
    """``text`` with URL passwords, known secrets and pydantic's input values masked."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    if "input_value=" in text:
        text = _INPUT_VALUE.sub("input_value=<hidden>, input_type=", text)
    scoped = _scope.get()
    for value in (*sorted(scoped, key=len, reverse=True), *_known) if scoped else _known:
        if value in text:
            text = text.replace(value, MASK)
    return text


def exception_texts(exc: BaseException, *, limit: int = 30) -> tuple[str, str]:
    """An exception's message and formatted traceback, both redacted.

    A pydantic ``ValidationError`` is described by its error locations and
    messages only, never by the values it was given.
    """
    from pydantic import ValidationError

    message = validation_summary(exc) if isinstance(exc, ValidationError) else str(exc)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=limit))
    return redact(message), redact(tb)


def validation_summary(exc: Any) -> str:
    """``N validation error(s): loc: msg; ...`` from a pydantic ``ValidationError``."""
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ())) or '(root)'}: {e.get('msg', '')}"
        for e in exc.errors()
    ]
    return f"{exc.error_count()} validation error(s): " + "; ".join(parts)


_SECRET_NAME = re.compile(
    r"pass(word|phrase|wd)?|pwd|secret|token|api_?key|private_?key|credential|authorization",
    re.IGNORECASE,
)
#: how pydantic shows a secret field
SECRET_MASK = "**********"


def mask_secret_fields(doc: Any) -> Any:
    """A copy of a JSON document with the values of secret-looking keys masked.

    For when the models that declare which fields are secret are not at hand
    (``flowkit runs show`` without ``--app``): the string value of a key whose
    name contains password, secret, token, api_key, private_key, credential
    or authorization.
    """
    if isinstance(doc, dict):
        return {
            k: SECRET_MASK
            if isinstance(doc[k], str) and doc[k] and _SECRET_NAME.search(str(k).replace("-", "_"))
            else mask_secret_fields(doc[k])
            for k in doc
        }
    if isinstance(doc, list):
        return [mask_secret_fields(v) for v in doc]
    return doc


def _is_message(value: Any) -> bool:
    return hasattr(value, "message_id") and hasattr(value, "actor_name")


def describe_message_args(record: logging.LogRecord) -> None:
    """Replace Dramatiq messages among a record's arguments with ``actor [message id]``.

    ``str(message)`` prints its arguments; a log line needs only which message it was.
    """
    args = record.args
    if isinstance(args, tuple) and any(_is_message(a) for a in args):
        record.args = tuple(_name_message(a) if _is_message(a) else a for a in args)


def _name_message(message: Any) -> str:
    return f"{message.actor_name} [{message.message_id}]"


class MessageFilter(logging.Filter):
    """Names a Dramatiq message by its actor and id in a log line, never by its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        describe_message_args(record)
        return True


class RedactingFilter(MessageFilter):
    """Masks secrets in every record's message and traceback; drops nothing.

    Install it on handlers (it then sees the records of every logger)::

        handler.addFilter(flowkit.redact.RedactingFilter())
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        describe_message_args(record)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def protect(handler: logging.Handler) -> None:
    """Add the (shared) :class:`RedactingFilter` to ``handler``, once."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(_FILTER)
