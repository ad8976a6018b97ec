"""Quarantine on the worker side: a decoder that says why a message is refused, and a recorder.

Dramatiq dead-letters (nacks) a message it cannot decode, one naming an
unknown actor, and one whose retries are exhausted; RabbitMQ moves it to
``<queue>.XQ``. flowkit records each in its database with the reason and the
queue it came from, logs one WARNING line with that reason (Dramatiq's own
lines about it, tracebacks included, are demoted to DEBUG by
:class:`DramatiqNoise`), and the worker keeps processing.

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
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import dramatiq
from dramatiq.encoder import JSONEncoder, MessageData
from dramatiq.errors import DecodeError
from dramatiq.middleware import Middleware

from .outcomes import Refused
from .shutdown import handing_back
from .wire import Rejected, WirePolicy

__all__ = ["DeadLetterRecorder", "DramatiqNoise", "RecordingEncoder", "decode_stored"]

log = logging.getLogger("flowkit.deadletters")

#: The queue the current consumer thread reads (bodies are decoded on that thread).
_consuming = threading.local()
#: Dramatiq's lines about a message flowkit dead-letters and logs itself (most with a
#: traceback), and about one it handed back at a stop: DEBUG, not WARNING or ERROR.
_DEMOTED = frozenset(
    {
        "Failed to decode message using encoder %r.",
        "Received message for undefined actor %r. Moving it to the DLQ.",
        "Failed to process message %s with expected exception %s.",
        "Aborting message %r.",
    }
)
_UNKNOWN_TAG = "Failed to ack message: not in known tags."
#: Dramatiq's loggers that say these (the per-queue consumer threads' are added as they boot).
NOISY_LOGGERS = (
    "dramatiq.brokers.rabbitmq._RabbitmqConsumer",
    "dramatiq.middleware.retries.Retries",
    "dramatiq.worker.WorkerThread",
)


class DramatiqNoise(logging.Filter):
    """Demotes Dramatiq's lines about a dead letter flowkit logs itself to DEBUG
    (without their traceback): shown with ``-v``, dropped otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _DEMOTED or (record.msg == _UNKNOWN_TAG and handing_back()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_dramatiq_noise(logger: logging.Logger) -> None:
    """Install :class:`DramatiqNoise` on ``logger`` (once)."""
    if not any(isinstance(f, DramatiqNoise) for f in logger.filters):
        logger.addFilter(DramatiqNoise())


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
        queue = getattr(_consuming, "queue", None)
        log.warning("dead letter from queue %s: %s", queue or "?", reason)
        if self.recorder is None:
            return
        try:
            self.recorder(reason=reason, body=_body_text(data)[:100_000], queue=queue)
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


def _reason(message: Any) -> str:
    exc = getattr(message, "_exception", None)
    if exc is None:
        return "dead-lettered"
    if type(exc).__name__ == "ActorNotFound":
        return f"unknown stage: no actor named {message.actor_name!r}"
    if isinstance(exc, Refused):
        return str(exc)
    if type(exc).__name__ == "StepFailed":
        return f"step failed for good: {exc}"
    return f"{type(exc).__name__}: {exc}"


class DeadLetterRecorder(Middleware):
    """Records every message Dramatiq is about to dead-letter, with the reason."""

    def __init__(self) -> None:
        self.recorder: Recorder | None = None
        #: ``(actor, run_id, step_id) -> bool``: strands the run of a step its flow no
        #: longer has (then no dead letter is kept); see :mod:`.stranded`
        self.unknown_step: Callable[[str, str, str], bool] | None = None

    def after_consumer_thread_boot(self, broker: Any, thread: Any) -> None:
        # Bodies are decoded on the consumer thread: an undecodable one is recorded
        # with this queue. Dramatiq's lines about dead letters give way to ours.
        _consuming.queue = getattr(thread, "queue_name", None)
        for name in NOISY_LOGGERS:
            quiet_dramatiq_noise(logging.getLogger(name))
        if isinstance(getattr(thread, "logger", None), logging.Logger):
            quiet_dramatiq_noise(thread.logger)

    def before_nack(self, broker: Any, message: Any) -> None:
        if self._stranded(message):
            return
        reason = _reason(message)
        log.warning(
            "dead letter from queue %s: %s (message %s)",
            message.queue_name,
            reason,
            message.message_id,
        )
        if self.recorder is None:
            return
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

    def _stranded(self, message: Any) -> bool:
        """A step message for an actor this worker lacks, whose step its flow no longer has:
        the run is stranded instead (see :mod:`.stranded`)."""
        check = self.unknown_step
        exc = getattr(message, "_exception", None)
        if check is None or exc is None or type(exc).__name__ != "ActorNotFound":
            return False
        kwargs = message.kwargs if isinstance(message.kwargs, dict) else {}
        run_id, step_id = kwargs.get("run_id"), kwargs.get("step_id")
        if not isinstance(run_id, str) or not isinstance(step_id, str):
            return False
        try:
            return check(str(message.actor_name), run_id, step_id)
        except Exception:  # the database is away: a dead letter, as before
            log.warning("could not check message %s's step", message.message_id, exc_info=True)
            return False
