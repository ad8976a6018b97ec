"""Dead letters on the worker side: a decoder that says why, and a recording middleware.

Dramatiq dead-letters (nacks) a message it cannot decode, one naming an
unknown actor, and one whose retries are exhausted; RabbitMQ moves it to
``<queue>.XQ``. flowkit records each in its database with the reason, and
the worker keeps processing.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError
from dramatiq.middleware import Middleware

__all__ = ["DeadLetterRecorder", "RecordingEncoder"]

log = logging.getLogger("flowkit.deadletters")

Recorder = Callable[..., Any]
_FIELDS = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}


def _body_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")


class RecordingEncoder(JSONEncoder):
    """Dramatiq's JSON encoding; a message that cannot be decoded is recorded first.

    It checks what Dramatiq would only discover later (missing or mistyped
    message fields), so every undecodable message gets one clear reason.
    """

    def __init__(self) -> None:
        self.recorder: Recorder | None = None

    def decode(self, data: bytes) -> Any:
        try:
            fields = super().decode(data)
        except DecodeError as exc:
            cause = exc.args[2] if len(exc.args) > 2 else exc.__cause__
            kind = "not UTF-8" if isinstance(cause, UnicodeDecodeError) else "not JSON"
            self._reject(data, f"undecodable message: {kind}")
            raise DecodeError(  # type: ignore[no-untyped-call]
                f"undecodable message ({kind})", b"", exc
            ) from None
        problem = _check_fields(fields)
        if problem:
            self._reject(data, f"malformed message: {problem}")
            raise DecodeError(  # type: ignore[no-untyped-call]
                f"malformed message ({problem})", b"", ValueError(problem)
            )
        return fields

    def _reject(self, data: bytes, reason: str) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder(reason=reason, body=_body_text(data)[:100_000])
        except Exception:  # recording must never stop the consumer
            log.warning("could not record a dead letter (%s)", reason, exc_info=True)


def _check_fields(fields: Any) -> str | None:
    if not isinstance(fields, dict):
        return f"a JSON {type(fields).__name__}, not an object"
    missing = [k for k in _FIELDS if k not in fields]
    if missing:
        return f"missing {', '.join(missing)}"
    for key, kind in _FIELDS.items():
        if not isinstance(fields[key], kind) or isinstance(fields[key], bool):
            return f"{key} is not a {kind.__name__}"
    extra = sorted(set(fields) - set(_FIELDS))
    if extra:
        return f"unexpected field(s) {', '.join(extra)}"
    return None


class DeadLetterRecorder(Middleware):
    """Records every message Dramatiq is about to dead-letter, with the reason."""

    def __init__(self) -> None:
        self.recorder: Recorder | None = None

    def before_nack(self, broker: Any, message: Any) -> None:
        if self.recorder is None:
            return
        exc = getattr(message, "_exception", None)
        if exc is None:
            reason = "dead-lettered"
        elif type(exc).__name__ == "ActorNotFound":
            reason = f"unknown stage: no actor named {message.actor_name!r}"
        elif type(exc).__name__ == "StepFailed":
            reason = f"step failed for good: {exc}"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        kwargs = message.kwargs if isinstance(message.kwargs, dict) else {}
        try:
            self.recorder(
                reason=reason,
                body=json.dumps(message.asdict(), default=str)[:100_000],
                queue=message.queue_name,
                actor=message.actor_name,
                message_id=message.message_id,
                run_id=kwargs.get("run_id") if isinstance(kwargs.get("run_id"), str) else None,
                step_id=kwargs.get("step_id") if isinstance(kwargs.get("step_id"), str) else None,
            )
        except Exception:
            log.warning("could not record a dead letter (%s)", reason, exc_info=True)
