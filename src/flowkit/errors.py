"""The exceptions flowkit raises.

Every error flowkit raises on purpose derives from :class:`FlowkitError`, so
``except flowkit.FlowkitError`` catches them all::

    FlowkitError
    ├── ConfigurationError        bad URL, missing optional extra, bad option value
    │   └── InvalidQuery          a run query's filter or page cursor is malformed
    ├── FlowDefinitionError       a stage, pipeline or workflow that cannot work
    ├── LoadError                 the CLI's MODULE:ATTR cannot be imported or names no flow
    ├── InputValidationError      a payload that does not match a stage's input type
    │   └── PayloadTooLarge       a payload over the size or nesting-depth limit
    ├── NotFoundError
    │   ├── FlowNotFound          no flow of that name in the App
    │   ├── EventNotSubscribed    app.emit() of an event no flow subscribes to
    │   └── RunNotFound           no run with that id in the store
    ├── RunError                  about a run's outcome or state
    │   ├── RunFailed             the run ended ``failed``; carries the recorded error
    │   ├── ResultTimeout         the run did not finish within the timeout
    │   └── RunStateError         the run's state forbids it (a signal to a finished run)
    │       └── SignalRejected    a signal for a finished run, or sent twice
    ├── StepTimeout               a step ran past its ``timeout`` (recorded, then retried)
    ├── WorkerLost                a step's worker died in every attempt (then dead-lettered)
    ├── PermanentError            raised by a step: fail it now, without retries
    ├── RetryAfter                raised by a step: retry after this delay (an attempt)
    ├── LLMError                  a flowkit.llm call failed
    │   ├── LLMUnavailable        a 5xx, 408, 409, timeout or lost connection (retried)
    │   ├── LLMRequestError       any other 4xx; also a PermanentError (not retried)
    │   └── LLMOutputError        no answer matched the schema; also a PermanentError
    ├── StoreError                the database could not be used
    │   └── SchemaVersionError    the schema is missing, or newer than this flowkit
    └── BrokerError               the broker could not be reached or refused a message

``InputValidationError`` also carries the pydantic errors in :attr:`errors`.
The ``LLM*`` errors are also importable from :mod:`flowkit.llm`, and
``LoadError`` from ``flowkit.cli.loader``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "EventNotSubscribed",
    "FlowDefinitionError",
    "FlowNotFound",
    "FlowkitError",
    "InputValidationError",
    "InvalidQuery",
    "LLMError",
    "LLMOutputError",
    "LLMRequestError",
    "LLMUnavailable",
    "LoadError",
    "NotFoundError",
    "PayloadTooLarge",
    "PermanentError",
    "ResultTimeout",
    "RetryAfter",
    "RunError",
    "RunFailed",
    "RunNotFound",
    "RunStateError",
    "SchemaVersionError",
    "SignalRejected",
    "StepTimeout",
    "StoreError",
    "WorkerLost",
]


class FlowkitError(Exception):
    """Base class of every error flowkit raises on purpose."""


class ConfigurationError(FlowkitError):
    """A configuration value (URL, option, environment variable) is unusable."""


class InvalidQuery(ConfigurationError):
    """A run query (``store.queries.page``) got a malformed page cursor or filter value.

    The message says which; a dashboard answers it with a 400.

    .. versionadded:: 0.2
    """


class FlowDefinitionError(FlowkitError):
    """A stage, pipeline or workflow is declared in a way that cannot work."""


class LoadError(FlowkitError):
    """``MODULE:ATTR`` could not be imported or does not name an App or a flow.

    Raised by the ``flowkit`` command's loader (exit code 3).
    """


class InputValidationError(FlowkitError):
    """A payload does not validate against the input type of the stage it is for.

    Attributes:
        errors: the pydantic error list (``ValidationError.errors()``), JSON-safe.
        stage: the name of the stage whose input type rejected the payload.
    """

    def __init__(self, message: str, *, errors: list[dict[str, Any]], stage: str) -> None:
        super().__init__(message)
        self.errors = errors
        self.stage = stage


class PayloadTooLarge(InputValidationError):
    """A payload is bigger, or nested deeper, than the configured limits allow.

    Raised by ``submit``, ``emit`` and ``signal`` before anything is stored or
    sent; a message over the limits that reaches a worker is dead-lettered. A
    step whose output is over them fails with it at once, without retries (the
    output is not stored).

    Attributes:
        limit: ``"bytes"`` (``FLOWKIT_MAX_PAYLOAD_BYTES``) or ``"depth"``
            (``FLOWKIT_MAX_PAYLOAD_DEPTH``).

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, limit: str, stage: str = "") -> None:
        super().__init__(
            message,
            errors=[{"loc": [], "msg": message, "type": f"payload_too_large_{limit}"}],
            stage=stage,
        )
        self.limit = limit


class NotFoundError(FlowkitError):
    """Something looked up by name or id does not exist."""


class FlowNotFound(NotFoundError):
    """No flow of that name is registered in the App."""


class EventNotSubscribed(NotFoundError):
    """``app.emit()`` named an event that no flow of the App subscribes to."""


class RunNotFound(NotFoundError):
    """No run with that id exists in the store."""


class RunError(FlowkitError):
    """Base class of errors about the outcome of a run."""


class RunFailed(RunError):
    """The run ended ``failed``.

    Attributes:
        run_id: the run's id.
        step: the name of the step that failed.
        error_type: the exception type recorded for the failing step.
        error_message: its message.
        traceback: the formatted traceback recorded in the worker, if any.
    """

    def __init__(
        self,
        run_id: str,
        *,
        step: str | None,
        error_type: str,
        error_message: str,
        traceback: str | None = None,
    ) -> None:
        where = f" in step {step!r}" if step else ""
        super().__init__(f"run {run_id} failed{where}: {error_type}: {error_message}")
        self.run_id = run_id
        self.step = step
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class ResultTimeout(RunError):
    """``Run.result(timeout=...)`` gave up before the run finished."""


class RunStateError(RunError):
    """The run's state forbids the operation (e.g. retrying a run that is still live)."""


class SignalRejected(RunStateError):
    """A signal for a run that is over, for no waiting step, or a second one of a name."""


class StepTimeout(FlowkitError):
    """A step ran longer than its ``timeout``; recorded as the step's error, then retried."""


class WorkerLost(FlowkitError):
    """Recorded as a step's error when its worker stopped during every one of its attempts.

    A step whose process dies mid-step (``SIGKILL``, the OOM killer, a crash
    in native code) is delivered again and counts an attempt each time. Once
    the attempts pass the stage's ``retries``, the next delivery does not run
    it again: the step and its run fail with this error and the message is
    dead-lettered, so a poison message cannot crash workers forever.
    """


class PermanentError(FlowkitError):
    """Raise it from a step to fail the step (and its run) at once, without retries.

    For errors that another attempt cannot fix: bad data, a rejected request.
    A pydantic ``ValidationError`` raised by a step is treated the same way.

    .. versionadded:: 0.1
    """


class RetryAfter(FlowkitError):
    """Raise it from a step to be retried after ``delay`` seconds (e.g. a 429's Retry-After).

    The attempt counts against the step's ``retries`` like any other failure.

    Parameters:
        message: what happened.
        delay: seconds to wait before the next attempt; ``None`` uses the backoff.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay_ms = None if delay is None else max(0, int(delay * 1000))


class StoreError(FlowkitError):
    """The database could not be used."""


class SchemaVersionError(StoreError):
    """The database schema is missing or newer than this version of flowkit knows."""


class BrokerError(FlowkitError):
    """The message broker could not be reached or did not accept a message."""


class LLMError(FlowkitError):
    """Base class of the errors of :mod:`flowkit.llm`.

    .. versionadded:: 0.1
    """


class LLMUnavailable(LLMError):
    """The model server failed (5xx, 408, 409, timeout, connection error).

    A plain error, so the step is retried with its backoff.

    .. versionadded:: 0.1
    """


class LLMRequestError(LLMError, PermanentError):
    """The server refused the request (a 4xx other than 408, 409 and 429).

    A :class:`~flowkit.PermanentError`: retrying the same request will not help,
    so the step fails at once.

    .. versionadded:: 0.1
    """


class LLMOutputError(LLMError, PermanentError):
    """The model's answers did not validate against the schema, even after re-asking.

    A :class:`~flowkit.PermanentError`: the step fails at once, without retries.

    Attributes:
        model: the model that answered.
        schema: the name of the pydantic model the answer had to match.
        last_error: the validation error of the last answer.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        schema: str | None = None,
        last_error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.schema = schema
        self.last_error = last_error
