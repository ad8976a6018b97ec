"""``@flowkit.stage``: a typed function plus the options of the step that runs it."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, overload

from pydantic import TypeAdapter, create_model

from ._secrets import contains_secret, dump_json_revealed, secret_values
from ._types import parse_duration_ms, strip_type, type_name
from .context import Context
from .errors import ConfigurationError, FlowDefinitionError
from .queues import Queue, RateLimit, StepLimits, check_key_fn, parse_rate

__all__ = ["Stage", "Stop", "stage"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
QUEUE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")

DEFAULT_RETRIES = 3
DEFAULT_MIN_BACKOFF_MS = 1_000
DEFAULT_MAX_BACKOFF_MS = 300_000
DEFAULT_QUEUE = "default"

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Stop:
    """Returned by a stage to end its run early, successfully.

    The remaining stages are recorded as ``skipped`` and the run ends
    ``succeeded`` with ``output`` as its result. Annotate the stage's return
    type as ``MyOutput | flowkit.Stop``; the edge type check ignores ``Stop``.

    Parameters:
        output: JSON-compatible value (or pydantic model) stored as the run's result.
        reason: a short human explanation, shown by ``flowkit runs show``.

    .. versionadded:: 0.1
    """

    output: Any = None
    reason: str = ""


def _validate_name(value: str, *, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise FlowDefinitionError(
            f"{what} {value!r} is not a valid name: use letters, digits, '_', '.', '-' "
            "(starting with a letter or '_', at most 100 characters)"
        )
    return value


_EVENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}$")


def validate_event_name(value: str, *, what: str) -> str:
    """Check an event name such as ``loan:application:uploaded``."""
    if not isinstance(value, str) or not _EVENT.match(value):
        raise FlowDefinitionError(
            f"{what}: event name {value!r} is not valid: use letters, digits and '_.:/-'"
        )
    return value


def validate_queue_name(value: str, *, what: str) -> str:
    """Check a queue name is safe for RabbitMQ and Dramatiq."""
    if not isinstance(value, str) or not QUEUE_NAME.match(value):
        raise FlowDefinitionError(
            f"{what}: queue name {value!r} is not valid: use letters, digits, '_', '.', '-' "
            "(starting with a letter or '_')"
        )
    if value.endswith((".DQ", ".XQ")):
        raise FlowDefinitionError(
            f"{what}: queue name {value!r} ends in .DQ/.XQ, "
            "which Dramatiq reserves for delay and dead-letter queues"
        )
    return value


class Stage(Generic[In, Out]):
    """A typed step function and its options; created by :func:`stage`.

    Calling a ``Stage`` calls the function directly (handy in unit tests);
    running it durably is the job of a flow bound to an :class:`~flowkit.App`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        queue: str | Queue | None = None,
        retries: int = DEFAULT_RETRIES,
        min_backoff: str | float | None = None,
        max_backoff: str | float | None = None,
        timeout: str | float | None = None,
        priority: int | None = None,
        inputs: Sequence[str] | None = None,
        wait_for: str | None = None,
        delay: str | float | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        rate_limit: str | RateLimit | None = None,
        rate_limit_key: Callable[[Any], Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise FlowDefinitionError(f"@flowkit.stage expects a function, got {fn!r}")
        self.fn = fn
        self.name = _validate_name(name or fn.__name__, what="stage name")
        what = f"stage {self.name!r}"
        self.queue_obj = queue if isinstance(queue, Queue) else None
        self.queue = validate_queue_name(
            queue.name if isinstance(queue, Queue) else (queue or DEFAULT_QUEUE), what=what
        )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(f"{what}: retries must be an integer >= 0, got {retries!r}")
        self.retries = retries
        self.min_backoff_ms = parse_duration_ms(min_backoff, what=f"{what} min_backoff")
        self.max_backoff_ms = parse_duration_ms(max_backoff, what=f"{what} max_backoff")
        if self.min_backoff_ms is None:
            self.min_backoff_ms = DEFAULT_MIN_BACKOFF_MS
        if self.max_backoff_ms is None:
            self.max_backoff_ms = max(DEFAULT_MAX_BACKOFF_MS, self.min_backoff_ms)
        if self.max_backoff_ms < self.min_backoff_ms:
            raise ConfigurationError(f"{what}: max_backoff is smaller than min_backoff")
        self.timeout_ms = parse_duration_ms(timeout, what=f"{what} timeout")
        if priority is None:
            priority = self.queue_obj.priority if self.queue_obj and self.queue_obj.priority else 0
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255:
            raise ConfigurationError(f"{what}: priority must be an integer in 0..255")
        self.priority = priority
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError(f"{what}: concurrency must be an integer >= 1")
        q = self.queue_obj
        #: the rate and concurrency limits this step's claims respect
        self.limits = StepLimits(
            queue=self.queue,
            queue_concurrency=q.concurrency if q else None,
            queue_rate=q.rate_limit if q else None,
            concurrency=concurrency,
            concurrency_key=check_key_fn(concurrency_key, what=f"{what} concurrency_key"),
            rate=parse_rate(rate_limit, what=what),
            rate_key=check_key_fn(rate_limit_key, what=f"{what} rate_limit_key"),
        )
        if concurrency_key is not None and concurrency is None:
            raise ConfigurationError(f"{what}: concurrency_key needs concurrency=N")
        if rate_limit_key is not None and rate_limit is None:
            raise ConfigurationError(f"{what}: rate_limit_key needs rate_limit='N/period'")
        #: for a step with several parents: the parameter names, one per parent
        self.inputs: tuple[str, ...] | None = tuple(inputs) if inputs else None
        self._context_param: str | None = None
        #: the signal this step waits for (``wait_for=``), and its payload type
        self.wait_for = _validate_name(wait_for, what=f"{what} wait_for") if wait_for else None
        self.signal_type: Any = None
        #: how long to wait before running once the step is ready (``delay=``)
        self.delay_ms = parse_duration_ms(delay, what=f"{what} delay")
        #: for a signal wait: how long to wait for the signal once the parents are done
        self.wait_timeout_ms: int | None = None
        if self.wait_for and self.inputs:
            raise FlowDefinitionError(
                f"{what}: a step that waits for a signal has at most one parent"
            )
        if self.wait_for:
            self.input_type, self.output_type, self.takes_context = self._signature_wait()
        elif self.inputs:
            self.input_type, self.output_type, self.takes_context = self._signature_multi()
        else:
            self.input_type, self.output_type, self.takes_context = self._signature()
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def _signature(self) -> tuple[Any, Any, bool]:
        what = f"stage {self.name!r}"
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception as exc:  # a forward reference the module cannot resolve
            raise FlowDefinitionError(f"{what}: cannot resolve its type hints ({exc})") from exc
        params = [
            p
            for p in inspect.signature(self.fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not 1 <= len(params) <= 2:
            raise FlowDefinitionError(
                f"{what}: a stage takes its input and, optionally, a flowkit.Context "
                f"(found {len(params)} positional parameters)"
            )
        first = params[0]
        if first.name not in hints:
            raise FlowDefinitionError(
                f"{what}: annotate the input parameter {first.name!r} with its type "
                "(a pydantic model or a JSON type)"
            )
        if "return" not in hints:
            raise FlowDefinitionError(
                f"{what}: annotate the return type (use '-> None' if it returns nothing)"
            )
        takes_context = False
        if len(params) == 2:
            ann = hints.get(params[1].name)
            if ann is not None and ann is not Context:
                raise FlowDefinitionError(
                    f"{what}: its second parameter must be a flowkit.Context, not {type_name(ann)}"
                )
            takes_context = True
        output = strip_type(hints["return"], Stop)
        return hints[first.name], output, takes_context

    def _signature_multi(self) -> tuple[Any, Any, bool]:
        """A step with several parents takes one parameter per parent, by name."""
        what = f"step {self.name!r}"
        assert self.inputs is not None
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception as exc:
            raise FlowDefinitionError(f"{what}: cannot resolve its type hints ({exc})") from exc
        params = list(inspect.signature(self.fn).parameters.values())
        takes_context = False
        fields: dict[str, Any] = {}
        for p in params:
            ann = hints.get(p.name)
            if ann is Context:
                takes_context = True
                self._context_param = p.name
                continue
            if ann is None:
                raise FlowDefinitionError(f"{what}: annotate parameter {p.name!r} with its type")
            fields[p.name] = (ann, ...)
        if set(fields) != set(self.inputs):
            raise FlowDefinitionError(
                f"{what} follows {', '.join(self.inputs)}: name one parameter after each "
                f"parent step (found {', '.join(fields) or 'none'})"
            )
        if "return" not in hints:
            raise FlowDefinitionError(
                f"{what}: annotate the return type (use '-> None' if it returns nothing)"
            )
        model = create_model(f"{self.name}_inputs", **fields)
        return model, strip_type(hints["return"], Stop), takes_context

    def _signature_wait(self) -> tuple[Any, Any, bool]:
        """``def approve(request: Request, approval: Approval, ctx) -> Decision``."""
        what = f"step {self.name!r}"
        hints = typing.get_type_hints(self.fn)
        params = list(inspect.signature(self.fn).parameters.values())
        ctx_params = [p for p in params if hints.get(p.name) is Context]
        rest = [p for p in params if hints.get(p.name) is not Context]
        if len(rest) != 2 or len(ctx_params) > 1:
            raise FlowDefinitionError(
                f"{what} waits for signal {self.wait_for!r}: it takes its input, then the "
                "signal's payload (and optionally a flowkit.Context)"
            )
        for p in rest:
            if p.name not in hints:
                raise FlowDefinitionError(f"{what}: annotate parameter {p.name!r} with its type")
        if "return" not in hints:
            raise FlowDefinitionError(
                f"{what}: annotate the return type (use '-> None' if it returns nothing)"
            )
        self._context_param = ctx_params[0].name if ctx_params else None
        self.signal_type = hints[rest[1].name]
        return hints[rest[0].name], strip_type(hints["return"], Stop), bool(ctx_params)

    @property
    def signal_optional(self) -> bool:
        """Whether the signal's type admits ``None``: then a timeout runs the step with None."""
        from ._types import is_assignable

        return self.signal_type is not None and is_assignable(type(None), self.signal_type)

    @cached_property
    def signal_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.signal_type)

    def parse_input(self, stored: Any) -> Any:
        """Validate a step's stored input (for a signal wait: ``{"value", "signal"}``)."""
        if self.wait_for:
            stored = stored or {}
            value = self.input_adapter.validate_python(stored.get("value"))
            signal = stored.get("signal")
            return (value, None if signal is None else self.signal_adapter.validate_python(signal))
        return self.input_adapter.validate_python(stored)

    def param_type(self, name: str) -> Any:
        """The declared type of one parent's parameter (several-parent steps)."""
        fields = self.input_type.model_fields
        return fields[name].annotation

    def invoke(self, value: Any, ctx: Context) -> Any:
        """Call the function with a validated input (and the context if it takes one)."""
        if self.wait_for:
            args = list(value)
            if self._context_param:
                return self.fn(*args, **{self._context_param: ctx})
            return self.fn(*args)
        if self.inputs:
            kwargs = {n: getattr(value, n) for n in self.inputs}
            if self._context_param:
                kwargs[self._context_param] = ctx
            return self.fn(**kwargs)
        return self.fn(value, ctx) if self.takes_context else self.fn(value)

    @cached_property
    def input_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.input_type)

    @cached_property
    def output_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.output_type)

    # Secrets (SecretStr, SecretBytes): the database keeps their real values, so
    # that the next step gets them. Whether a type declares one is decided once;
    # types without secrets keep pydantic's plain (faster) dump.
    @cached_property
    def _secret_input(self) -> bool:
        return contains_secret(self.input_type)

    @cached_property
    def _secret_output(self) -> bool:
        return contains_secret(self.output_type)

    @cached_property
    def _secret_signal(self) -> bool:
        return self.signal_type is not None and contains_secret(self.signal_type)

    def dump_input(self, value: Any) -> Any:
        """The JSON form of a validated input, as stored (secrets with their values)."""
        if self._secret_input:
            return dump_json_revealed(self.input_adapter, value)
        return self.input_adapter.dump_python(value, mode="json")

    def dump_output(self, value: Any) -> Any:
        """The JSON form of a validated output, as stored (secrets with their values)."""
        if self._secret_output:
            return dump_json_revealed(self.output_adapter, value)
        return self.output_adapter.dump_python(value, mode="json")

    def dump_signal(self, value: Any) -> Any:
        """The JSON form of a validated signal payload, as stored."""
        if self._secret_signal:
            return dump_json_revealed(self.signal_adapter, value)
        return self.signal_adapter.dump_python(value, mode="json")

    def secrets_in(self, value: Any) -> list[str]:
        """The secret values inside a parsed input (see :meth:`parse_input`), to redact."""
        if self._secret_input or self._secret_signal:
            return secret_values(value)
        return []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<Stage {self.name} ({type_name(self.input_type)}) -> "
            f"{type_name(self.output_type)} queue={self.queue}>"
        )


@overload
def stage(fn: Callable[..., Any], /) -> Stage[Any, Any]: ...


@overload
def stage(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    queue: str | Queue | None = None,
    retries: int = DEFAULT_RETRIES,
    min_backoff: str | float | None = None,
    max_backoff: str | float | None = None,
    timeout: str | float | None = None,
    priority: int | None = None,
    concurrency: int | None = None,
    concurrency_key: Callable[[Any], Any] | None = None,
    rate_limit: str | RateLimit | None = None,
    rate_limit_key: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[..., Any]], Stage[Any, Any]]: ...


def stage(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | Queue | None = None,
    retries: int = DEFAULT_RETRIES,
    min_backoff: str | float | None = None,
    max_backoff: str | float | None = None,
    timeout: str | float | None = None,
    priority: int | None = None,
    concurrency: int | None = None,
    concurrency_key: Callable[[Any], Any] | None = None,
    rate_limit: str | RateLimit | None = None,
    rate_limit_key: Callable[[Any], Any] | None = None,
) -> Stage[Any, Any] | Callable[[Callable[..., Any]], Stage[Any, Any]]:
    """Declare a pipeline stage: a plain function from one typed value to another.

    The function takes its input (a pydantic model or a JSON-compatible type)
    and, optionally, a :class:`~flowkit.Context` as second parameter; both its
    input and return type must be annotated. Usable bare (``@flowkit.stage``)
    or with options::

        @flowkit.stage(queue="triage", retries=5, timeout="30s")
        def triage(exc: Normalized, ctx: flowkit.Context) -> Triaged: ...

    Parameters:
        name: the step's name in its flow (default: the function's name).
        queue: the broker queue its messages go to: a name or a
            :class:`~flowkit.Queue` (default ``"default"``).
        retries: how many times a failing step is retried before the run fails.
        min_backoff: first retry delay (``"1s"``), doubled on each retry, with jitter.
        max_backoff: the longest retry delay (``"5m"``).
        timeout: the longest one attempt may run (``"30s"``); past it the attempt
            fails with :class:`~flowkit.StepTimeout` and is retried.
        priority: 0 (first) to 255, the order in which a worker takes the steps it
            holds (default: the queue's). RabbitMQ priorities are per run:
            ``submit(priority=...)`` with ``App(max_priority=N)``.
        concurrency: at most this many attempts of this step run at once over all
            workers (per value of ``concurrency_key`` when given).
        concurrency_key: a function of the input, e.g. ``lambda e: e.tenant_id``.
        rate_limit: at most this many starts per window over all workers (``"10/s"``),
            per value of ``rate_limit_key`` when given. A step over a limit waits;
            it is not failed and the wait is not a retry.
        rate_limit_key: a function of the input.

    Returns:
        a :class:`Stage`, still callable as the plain function.

    Raises:
        FlowDefinitionError: a missing annotation or a bad name.
        ConfigurationError: an option value out of range.

    .. versionadded:: 0.1
    """

    def wrap(f: Callable[..., Any]) -> Stage[Any, Any]:
        return Stage(
            f,
            name=name,
            queue=queue,
            retries=retries,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            timeout=timeout,
            priority=priority,
            concurrency=concurrency,
            concurrency_key=concurrency_key,
            rate_limit=rate_limit,
            rate_limit_key=rate_limit_key,
        )

    if fn is not None:
        return wrap(fn)
    return wrap
