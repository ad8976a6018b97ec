"""The options of a step, written once: their keywords, their parsed form, their checks.

``@flowkit.stage(...)`` and ``Workflow.step(...)`` take the options as keywords
(:class:`StageKeywords`, :class:`StepKeywords`); :meth:`StepOptions.parse` turns
them into a frozen :class:`StepOptions` (durations in milliseconds, the queue's
name and object, the limits), checking every value once. A
:class:`~flowkit.Stage` holds its options and reads them through
:class:`Option` attributes.

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypedDict, TypeVar, overload

from typing_extensions import Self, Unpack

from ._types import parse_duration_ms
from .errors import ConfigurationError, FlowDefinitionError
from .names import validate_name, validate_queue_name
from .queues import Queue, RateLimit, StepLimits, check_key_fn, parse_rate

__all__ = [
    "DEFAULT_MAX_BACKOFF_MS",
    "DEFAULT_MIN_BACKOFF_MS",
    "DEFAULT_QUEUE",
    "DEFAULT_RETRIES",
    "Option",
    "OptionKeywords",
    "StageKeywords",
    "StepKeywords",
    "StepOptions",
    "check_keywords",
]

DEFAULT_RETRIES = 3
DEFAULT_MIN_BACKOFF_MS = 1_000
DEFAULT_MAX_BACKOFF_MS = 300_000
DEFAULT_QUEUE = "default"

#: a duration: ``"30s"``, ``"5m"``, ``"250ms"`` or a number of seconds
Duration = str | float | None
T = TypeVar("T")


class StageKeywords(TypedDict, total=False):
    """The keyword options of :func:`flowkit.stage`, all optional.

    ``name``: the step's name in its flow (default: the function's name).
    ``queue``: a queue name or a :class:`~flowkit.Queue` (default ``"default"``).
    ``retries`` (default 3), ``min_backoff`` (``"1s"``), ``max_backoff`` (``"5m"``),
    ``timeout``, ``priority`` (0..255, default: the queue's), ``concurrency``,
    ``concurrency_key``, ``rate_limit`` (``"10/s"``), ``rate_limit_key`` and ``chain``
    (default ``True``): see :func:`flowkit.stage`.

    .. versionadded:: 0.2
    .. versionchanged:: 0.3
       ``chain``.
    """

    name: str | None
    queue: str | Queue | None
    retries: int
    min_backoff: Duration
    max_backoff: Duration
    timeout: Duration
    priority: int | None
    concurrency: int | None
    concurrency_key: Callable[[Any], Any] | None
    rate_limit: str | RateLimit | None
    rate_limit_key: Callable[[Any], Any] | None
    chain: bool


class StepKeywords(StageKeywords, total=False):
    """The keyword options of :meth:`flowkit.Workflow.step`: a stage's, ``wait_for``, ``delay``.

    .. versionadded:: 0.2
    """

    wait_for: str | None
    delay: Duration


class OptionKeywords(StepKeywords, total=False):
    """Every option :meth:`StepOptions.parse` takes: a step's, plus what its workflow decides.

    ``inputs``: the parents' names, for a step with several parents.
    ``wait_timeout``: for a signal wait, how long to wait for the signal.

    .. versionadded:: 0.2
    """

    inputs: Sequence[str] | None
    wait_timeout: Duration


@dataclass(frozen=True)
class StepOptions:
    """A step's options, parsed and checked: build it with :meth:`parse`.

    Attributes:
        name: the step's name in its flow.
        queue: the broker queue's name.
        queue_obj: the :class:`~flowkit.Queue` given as ``queue=``, if one was.
        retries: how many times a failing attempt is retried.
        min_backoff_ms: the first retry delay.
        max_backoff_ms: the longest retry delay.
        timeout_ms: the longest one attempt may run (``None``: no limit).
        priority: 0 (first) to 255.
        limits: the rate and concurrency limits its claims respect.
        inputs: for a step with several parents, the parameter names, one per parent.
        wait_for: the signal the step waits for.
        delay_ms: how long to wait before running once the step is ready.
        wait_timeout_ms: for a signal wait, how long to wait for the signal once the
            parents are done (``None``: forever).
        chain: whether the step may run in its parent's thread, with no broker hop.

    .. versionadded:: 0.2
    """

    name: str
    queue: str
    queue_obj: Queue | None
    retries: int
    min_backoff_ms: int
    max_backoff_ms: int
    timeout_ms: int | None
    priority: int
    limits: StepLimits
    inputs: tuple[str, ...] | None
    wait_for: str | None
    delay_ms: int | None
    wait_timeout_ms: int | None
    chain: bool = True

    @classmethod
    def parse(cls, default_name: str, /, **options: Unpack[OptionKeywords]) -> Self:
        """Check the raw keyword values of a step and parse them.

        Parameters:
            default_name: the name when ``name`` is not given (the function's name).
            options: see :class:`OptionKeywords`.

        Returns:
            the parsed options.

        Raises:
            FlowDefinitionError: a bad name, queue name or signal name, or a signal
                wait with several parents.
            ConfigurationError: a value out of range or a malformed duration or rate.
        """
        check_keywords(options, OptionKeywords, what="Stage")
        name = validate_name(options.get("name") or default_name, what="stage name")
        what = f"stage {name!r}"
        queue = options.get("queue")
        queue_obj = queue if isinstance(queue, Queue) else None
        queue_name = validate_queue_name(
            queue.name if isinstance(queue, Queue) else (queue or DEFAULT_QUEUE), what=what
        )
        retries = options.get("retries", DEFAULT_RETRIES)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(f"{what}: retries must be an integer >= 0, got {retries!r}")
        min_backoff = parse_duration_ms(options.get("min_backoff"), what=f"{what} min_backoff")
        max_backoff = parse_duration_ms(options.get("max_backoff"), what=f"{what} max_backoff")
        if min_backoff is None:
            min_backoff = DEFAULT_MIN_BACKOFF_MS
        if max_backoff is None:
            max_backoff = max(DEFAULT_MAX_BACKOFF_MS, min_backoff)
        if max_backoff < min_backoff:
            raise ConfigurationError(f"{what}: max_backoff is smaller than min_backoff")
        timeout_ms = parse_duration_ms(options.get("timeout"), what=f"{what} timeout")
        priority = options.get("priority")
        if priority is None:
            priority = queue_obj.priority if queue_obj and queue_obj.priority else 0
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255:
            raise ConfigurationError(f"{what}: priority must be an integer in 0..255")
        limits = _limits(what, queue_name, queue_obj, options)
        inputs = options.get("inputs")
        wait_for = options.get("wait_for")
        wait_for = validate_name(wait_for, what=f"{what} wait_for") if wait_for else None
        delay_ms = parse_duration_ms(options.get("delay"), what=f"{what} delay")
        chain = options.get("chain", True)
        if not isinstance(chain, bool):
            raise ConfigurationError(f"{what}: chain must be True or False, got {chain!r}")
        if wait_for and inputs:
            raise FlowDefinitionError(
                f"{what}: a step that waits for a signal has at most one parent"
            )
        return cls(
            name=name,
            queue=queue_name,
            queue_obj=queue_obj,
            retries=retries,
            min_backoff_ms=min_backoff,
            max_backoff_ms=max_backoff,
            timeout_ms=timeout_ms,
            priority=priority,
            limits=limits,
            inputs=tuple(inputs) if inputs else None,
            wait_for=wait_for,
            delay_ms=delay_ms,
            wait_timeout_ms=parse_duration_ms(options.get("wait_timeout"), what=f"step {name!r}"),
            chain=chain,
        )


def check_keywords(options: Mapping[str, object], allowed: Any, *, what: str) -> None:
    """Reject a keyword that is not one of the ``allowed`` TypedDict's keys, as Python would.

    Raises:
        TypeError: ``what() got an unexpected keyword argument 'x'``.
    """
    known = allowed.__required_keys__ | allowed.__optional_keys__
    for key in options:
        if key not in known:
            raise TypeError(f"{what}() got an unexpected keyword argument {key!r}")


def _limits(what: str, queue: str, q: Queue | None, options: OptionKeywords) -> StepLimits:
    concurrency = options.get("concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigurationError(f"{what}: concurrency must be an integer >= 1")
    concurrency_key = options.get("concurrency_key")
    rate_limit = options.get("rate_limit")
    rate_limit_key = options.get("rate_limit_key")
    limits = StepLimits(
        queue=queue,
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
    return limits


class Option(Generic[T]):
    """A read-only attribute that reads the field of the same name of ``obj.options``.

    ::

        class Stage:
            retries = Option[int]()     # stage.retries is stage.options.retries

    .. versionadded:: 0.2
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._field = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object, owner: type | None = None) -> T | Self:
        if obj is None:
            return self
        value: T = getattr(obj.options, self._field)  # type: ignore[attr-defined]
        return value

    def __set__(self, obj: object, value: NoReturn) -> NoReturn:
        raise AttributeError(
            f"{self._field!r} is a step option: pass it to the decorator, it cannot be changed"
        )
