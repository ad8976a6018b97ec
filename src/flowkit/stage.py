"""``@flowkit.stage``: a typed function plus the options of the step that runs it."""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, Generic, Protocol, TypeVar, cast, overload

from pydantic import TypeAdapter, create_model
from typing_extensions import Unpack

from ._secrets import contains_secret, dump_json_revealed, secret_values
from ._types import strip_type, type_name
from .context import Context
from .errors import FlowDefinitionError
from .options import Option, OptionKeywords, StageKeywords, StepOptions, check_keywords
from .queues import Queue, StepLimits
from .waits import PayloadSpec, TimedOut, read_payload

__all__ = ["Stage", "StageDecorator", "Stop", "stage"]

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


class Stage(Generic[In, Out]):
    """A typed step function and its options; created by :func:`stage`.

    Calling a ``Stage`` calls the function directly (handy in unit tests);
    running it durably is the job of a flow bound to an :class:`~flowkit.App`.
    ``Stage[In, Out]`` is typed by its function's input and return types. Its
    options are parsed once into :attr:`options` (a frozen
    :class:`~flowkit.options.StepOptions`) and read as attributes (``stage.retries``);
    they cannot be changed afterwards.
    """

    #: the step's name in its flow
    name = Option[str]()
    #: the broker queue's name
    queue = Option[str]()
    #: the :class:`~flowkit.Queue` given as ``queue=``, if one was
    queue_obj = Option[Queue | None]()
    #: how many times a failing attempt is retried
    retries = Option[int]()
    #: the first retry delay, and the longest
    min_backoff_ms = Option[int]()
    max_backoff_ms = Option[int]()
    #: the longest one attempt may run
    timeout_ms = Option[int | None]()
    #: 0 (first) to 255
    priority = Option[int]()
    #: the rate and concurrency limits this step's claims respect
    limits = Option[StepLimits]()
    #: for a step with several parents: the parameter names, one per parent
    inputs = Option[tuple[str, ...] | None]()
    #: the signal this step waits for (``wait_for=``)
    wait_for = Option[str | None]()
    #: how long to wait before running once the step is ready (``delay=``)
    delay_ms = Option[int | None]()
    #: for a signal wait: how long to wait for the signal once the parents are done
    wait_timeout_ms = Option[int | None]()
    #: whether the step may run in its parent's thread, with no broker hop (``chain=``)
    chain = Option[bool]()
    #: a step that is another flow (``Workflow.call``): that flow, run as a child run
    child: Any = None

    def __init__(self, fn: Callable[..., Any], **options: Unpack[OptionKeywords]) -> None:
        if not callable(fn):
            raise FlowDefinitionError(f"@flowkit.stage expects a function, got {fn!r}")
        self.fn = fn
        #: an ``async def`` step: its coroutine runs on the worker's event loop, holding
        #: no worker thread while it awaits (``runtime/aio.py``, ``docs/async-steps.md``)
        self.is_async = inspect.iscoroutinefunction(fn)
        #: the step's options, parsed and checked (read them as attributes too)
        self.options = StepOptions.parse(options.get("name") or fn.__name__, **options)
        self._context_param: str | None = None
        #: for a signal wait: the signal's payload type (without flowkit.TimedOut)
        self.signal_type: Any = None
        #: for a signal wait: what its payload annotation says (see :mod:`flowkit.waits`)
        self.signal_spec: PayloadSpec | None = None
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
        self.signal_spec = self._check_payload(read_payload(hints[rest[1].name]))
        self.signal_type = self.signal_spec.type
        return hints[rest[0].name], strip_type(hints["return"], Stop), bool(ctx_params)

    def _check_payload(self, spec: PayloadSpec) -> PayloadSpec:
        what = f"step {self.name!r} waits for signal {self.wait_for!r}"
        if spec.takes_timeout and spec.type is TimedOut:
            raise FlowDefinitionError(
                f"{what}: name the payload's type beside flowkit.TimedOut "
                "(approval: Approval | flowkit.TimedOut)"
            )
        if spec.takes_timeout and self.wait_timeout_ms is None:
            raise FlowDefinitionError(
                f"{what} and takes flowkit.TimedOut, but its wait has no timeout= (timeout='24h')"
            )
        if spec.nullable and not spec.takes_timeout and self.wait_timeout_ms is not None:
            warnings.warn(
                f"{what}: on a timeout it runs with None, as if a signal came without a "
                f"payload; annotate the payload {type_name(spec.type)} | flowkit.TimedOut to "
                "tell the two apart (running with None on a timeout is deprecated)",
                DeprecationWarning,
                # the decorator's line: past _check_payload, _signature_wait, __init__, wrap
                stacklevel=5,
            )
        return spec

    @property
    def signal_optional(self) -> bool:
        """Whether a signal may come without a payload: its type lists ``None``.

        .. versionchanged:: 0.2
           ``None`` must be spelled out (``Note | None``); ``Any`` no longer counts.
        """
        return self.signal_spec is not None and self.signal_spec.nullable

    @property
    def runs_on_timeout(self) -> bool:
        """Whether a timeout runs the step (with :class:`~flowkit.TimedOut`) rather than fail it.

        Also true, deprecated, for a payload type that lists ``None`` without
        ``TimedOut``: the step then runs with ``None``.
        """
        spec = self.signal_spec
        return spec is not None and (spec.takes_timeout or spec.nullable)

    @cached_property
    def signal_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.signal_type)

    def parse_input(self, stored: Any) -> Any:
        """Validate a step's stored input (for a signal wait: ``{"value", "signal"}``)."""
        if self.wait_for:
            stored = stored or {}
            value = self.input_adapter.validate_python(stored.get("value"))
            if stored.get("timed_out"):
                return (value, self._timed_out())
            signal = stored.get("signal")
            return (value, None if signal is None else self.signal_adapter.validate_python(signal))
        return self.input_adapter.validate_python(stored)

    def _timed_out(self) -> TimedOut | None:
        if self.signal_spec is None or not self.signal_spec.takes_timeout:
            return None  # deprecated: a payload type that admits None gets None
        waited = timedelta(milliseconds=self.wait_timeout_ms or 0)
        return TimedOut(signal=self.wait_for or "", waited=waited)

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

    def __call__(self, *args: Any, **kwargs: Any) -> Out:
        return cast(Out, self.fn(*args, **kwargs))

    def __repr__(self) -> str:
        return (
            f"<Stage {self.name} ({type_name(self.input_type)}) -> "
            f"{type_name(self.output_type)} queue={self.queue}>"
        )


class StageDecorator(Protocol):
    """What ``flowkit.stage(...)`` and ``Workflow.step(...)`` return: it makes the :class:`Stage`.

    A function of one input (and optionally a :class:`~flowkit.Context`) gives a
    ``Stage[Input, Output]``; any other (a step with several parents, a signal
    wait) gives a ``Stage[Any, Any]``.

    .. versionadded:: 0.2
    """

    @overload
    def __call__(self, fn: Callable[[In], Coroutine[Any, Any, Out]], /) -> Stage[In, Out]: ...

    @overload
    def __call__(
        self, fn: Callable[[In, Context], Coroutine[Any, Any, Out]], /
    ) -> Stage[In, Out]: ...

    @overload
    def __call__(self, fn: Callable[[In], Out], /) -> Stage[In, Out]: ...

    @overload
    def __call__(self, fn: Callable[[In, Context], Out], /) -> Stage[In, Out]: ...

    @overload
    def __call__(self, fn: Callable[..., Any], /) -> Stage[Any, Any]: ...


@overload
def stage(fn: Callable[[In], Coroutine[Any, Any, Out]], /) -> Stage[In, Out]: ...


@overload
def stage(fn: Callable[[In, Context], Coroutine[Any, Any, Out]], /) -> Stage[In, Out]: ...


@overload
def stage(fn: Callable[[In], Out], /) -> Stage[In, Out]: ...


@overload
def stage(fn: Callable[[In, Context], Out], /) -> Stage[In, Out]: ...


@overload
def stage(fn: None = None, /, **options: Unpack[StageKeywords]) -> StageDecorator: ...


def stage(
    fn: Callable[..., Any] | None = None, /, **options: Unpack[StageKeywords]
) -> Stage[Any, Any] | StageDecorator:
    """Declare a pipeline stage: a plain function from one typed value to another.

    The function takes its input (a pydantic model or a JSON-compatible type)
    and, optionally, a :class:`~flowkit.Context` as second parameter; both its
    input and return type must be annotated. It may be an ``async def``: the
    coroutine then runs on the worker's event loop and holds no worker thread
    while it awaits (see the Async steps guide). Usable bare (``@flowkit.stage``)
    or with options::

        @flowkit.stage(queue="triage", retries=5, timeout="30s")
        def triage(exc: Normalized, ctx: flowkit.Context) -> Triaged: ...

    Parameters:
        name: the step's name in its flow (default: the function's name).
        queue: the broker queue its messages go to: a name or a
            :class:`~flowkit.Queue` (default ``"default"``).
        retries: how many times a failing step is retried before the run fails
            (default 3).
        min_backoff: first retry delay (default ``"1s"``), doubled on each retry,
            with jitter.
        max_backoff: the longest retry delay (default ``"5m"``).
        timeout: the longest one attempt may run (``"30s"``; default: no limit); past
            it the attempt fails with :class:`~flowkit.StepTimeout` and is retried.
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
        chain: ``True`` (default): when the step before it completes in a worker that
            also serves this step's queue, the same thread runs it at once, with no
            broker hop (see the Performance guide); ``False``: it always gets its own
            message.

    Returns:
        a :class:`Stage`, still callable as the plain function. Type checkers see
        ``Stage[Input, Output]``, from the function's annotations.

    Raises:
        FlowDefinitionError: a missing annotation or a bad name.
        ConfigurationError: an option value out of range.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       typed: ``Stage[Input, Output]`` rather than ``Stage[Any, Any]``.
    .. versionchanged:: 0.3
       ``chain``.
    .. versionchanged:: 0.4
       ``async def`` functions.
    """

    check_keywords(options, StageKeywords, what="stage")

    def wrap(f: Callable[..., Any]) -> Stage[Any, Any]:
        return Stage(f, **options)

    if fn is not None:
        return wrap(fn)
    return wrap
