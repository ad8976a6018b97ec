"""Quarantine on the worker side: a decoder that says why a message is refused, and a recorder.

Dramatiq dead-letters (nacks) a message it cannot decode, one naming an
unknown actor, and one whose retries are exhausted; RabbitMQ moves it to
``<queue>.XQ``. flowkit records each in its database with the reason, and
the worker keeps processing.

Messages are JSON only: nothing a worker receives is unpickled or
evaluated, and a message runs an actor only if one of that exact name was
declared (Dramatiq's ``broker.get_actor``). Before its JSON is decoded, a
body is checked against the process's :class:`~flowkit.runtime.wire.WirePolicy`
(size, and the signature when signing keys are set).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any, NoReturn

import dramatiq
from dramatiq.encoder import JSONEncoder, MessageData
from dramatiq.errors import DecodeError
from dramatiq.middleware import Middleware

from .wire import Rejected, WirePolicy

__all__ = ["DeadLetterRecorder", "RecordingEncoder", "decode_stored"]

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
    message fields), so every undecodable message gets one clear reason, and
    applies the :class:`~flowkit.runtime.wire.WirePolicy` (signature, size,
    depth) before and after decoding the JSON.
    """

    def __init__(self) -> None:
        self.recorder: Recorder | None = None
        #: signing keys and limits; set for the whole process by ``set_wire_policy``
        self.policy = WirePolicy()

    def encode(self, data: MessageData) -> bytes:
        return self.policy.seal(super().encode(data))

    def decode(self, data: bytes) -> Any:
        return self._decode(data, record=True)

    def _decode(self, data: bytes, *, record: bool) -> Any:
        try:
            body = self.policy.open(data)
        except Rejected as exc:
            self._fail(data, "rejected message", exc.reason, record)
        try:
            fields = super().decode(body)
        except DecodeError as exc:
            cause = exc.args[2] if len(exc.args) > 2 else exc.__cause__
            kind = "not UTF-8" if isinstance(cause, UnicodeDecodeError) else "not JSON"
            self._fail(data, "undecodable message", kind, record)
        except RecursionError:
            self._fail(data, "rejected message", "nested too deeply to decode", record)
        try:
            self.policy.check_depth(fields)
        except Rejected as exc:
            self._fail(data, "rejected message", exc.reason, record)
        problem = _check_fields(fields)
        if problem:
            self._fail(data, "malformed message", problem, record)
        return fields

    def _fail(self, data: bytes, what: str, why: str, record: bool) -> NoReturn:
        if record:
            self._reject(data, f"{what}: {why}")
        # Never the body in the error: Dramatiq logs this error with its traceback.
        error = DecodeError(f"{what} ({why})", b"", ValueError(why))  # type: ignore[no-untyped-call]
        raise error from None

    def _reject(self, data: bytes, reason: str) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder(reason=reason, body=_body_text(data)[:100_000])
        except Exception:  # recording must never stop the consumer
            log.warning("could not record a dead letter (%s)", reason, exc_info=True)


def decode_stored(body: str) -> dramatiq.Message[Any]:
    """A dead letter's stored body as a message, checked like a delivery but not recorded again.

    With signing keys, only a body that was verified when it arrived (and
    stored signed) decodes: a forged message is never re-driven.

    Raises:
        DecodeError: the body is not a valid message for this process.
    """
    encoder = dramatiq.get_encoder()
    data = body.encode("utf-8")
    fields = (
        encoder._decode(data, record=False)
        if isinstance(encoder, RecordingEncoder)
        else encoder.decode(data)
    )
    fields["args"] = tuple(fields["args"])
    return dramatiq.Message(**fields)


def _stored_body(message: Any) -> str:
    text = json.dumps(message.asdict(), default=str)
    encoder = dramatiq.get_encoder()
    if isinstance(encoder, RecordingEncoder) and encoder.policy.signs:
        # It passed verification on arrival: keep it signed, so `flowkit dead
        # retry` can tell it from a forged body.
        text = encoder.policy.seal(text.encode("utf-8")).decode("utf-8")
    return text


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
                body=_stored_body(message)[:100_000],
                queue=message.queue_name,
                actor=message.actor_name,
                message_id=message.message_id,
                run_id=kwargs.get("run_id") if isinstance(kwargs.get("run_id"), str) else None,
                step_id=kwargs.get("step_id") if isinstance(kwargs.get("step_id"), str) else None,
            )
        except Exception:
            log.warning("could not record a dead letter (%s)", reason, exc_info=True)
