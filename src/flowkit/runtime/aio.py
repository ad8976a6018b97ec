"""Async steps: an ``async def`` stage's coroutine runs on the process's event loop.

The protocol is a sync step's, with the attempt moved off the worker thread:

1. **Claim**: a worker thread claims the step as for any step (``running``, this
   worker's id, its lease), parses the input and builds the :class:`~flowkit.Context`.
2. **Hand over**: it takes one of ``$FLOWKIT_ASYNC_LIMIT`` slots (256; it waits while
   they are all taken, so a backlog stays in RabbitMQ rather than in memory), submits
   the coroutine to this process's one event loop thread and returns. Dramatiq then
   acknowledges the message: the thread takes the next one while the step awaits.
3. **Attempt**: the coroutine runs under ``asyncio.wait_for`` with the step's timeout
   (which cancels it: :class:`~flowkit.StepTimeout`, retried as for a sync step).
4. **Apply**: what it returned (or raised) is validated and recorded off the loop, by a
   small thread pool, through the same :meth:`StepRunner.finish
   <flowkit.runtime.execute.StepRunner.finish>` as a sync step, except that an async
   step ends a chain and its retry is a timer message (its own message is acknowledged).

A process that dies with coroutines in flight leaves their steps ``running`` under its
worker id, their messages acknowledged: the recovery sweep's heartbeat rule puts them
back to ``queued`` and publishes them once the worker's heartbeat is stale (see
``docs/runtime.md``). On a graceful stop (:func:`drain`, from
:func:`~flowkit.runtime.shutdown.stop_worker`) the coroutines in flight get the rest of
the shutdown timeout to finish; those still running after it are left ``running`` for
the sweep, which takes them once the worker's row is marked stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import tracing
from ..context import Context
from ..errors import BrokerError, ConfigurationError, StepTimeout, StoreError
from ..store import Claim
from .outcomes import Failure, StepFailed

if TYPE_CHECKING:
    from .execute import Job, StepRunner

__all__ = [
    "DEFAULT_LIMIT",
    "AsyncSteps",
    "Step",
    "drain",
    "in_flight",
    "limit_from_env",
    "start",
    "steps",
]

log = logging.getLogger("flowkit.engine")

#: Coroutines in flight per process unless ``$FLOWKIT_ASYNC_LIMIT`` says otherwise.
DEFAULT_LIMIT = 256
#: Threads that record async steps' outcomes (store transaction, then publishes).
APPLY_THREADS = 4
#: How often recording an outcome is tried when the database or broker fails.
_APPLY_TRIES = 5


@dataclass(frozen=True)
class Step:
    """One claimed attempt: its job, claim, parsed input, context and start time."""

    job: Job
    claim: Claim
    value: Any
    ctx: Context
    began: float


def limit_from_env() -> int:
    """``$FLOWKIT_ASYNC_LIMIT``, else :data:`DEFAULT_LIMIT`.

    Raises:
        ConfigurationError: a value that is not an integer >= 1.
    """
    raw = os.environ.get("FLOWKIT_ASYNC_LIMIT", str(DEFAULT_LIMIT))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"FLOWKIT_ASYNC_LIMIT must be an integer >= 1 (got {raw!r})")
    return value


class AsyncSteps:
    """This process's event loop thread, its slots and the threads that apply outcomes.

    Parameters:
        limit: the most coroutines in flight at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._count = 0
        self._idle = threading.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="flowkit-async-apply")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="flowkit-async-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def in_flight(self) -> int:
        """Coroutines handed over and not yet recorded."""
        with self._idle:
            return self._count

    def start(self, runner: StepRunner, step: Step) -> None:
        """Hand ``step`` to the loop (waiting for a slot first); returns at once after."""
        self._slots.acquire()
        with self._idle:
            self._count += 1
        job = step.job
        runner.observers.emit(
            "step_started",
            flow=job.flow.name,
            step=job.stage.name,
            queue=job.stage.queue,
            attempt=step.claim.attempts,
        )
        # The thread's context (log fields, the secrets to hide, the span) goes along.
        context = contextvars.copy_context()
        self._loop.call_soon_threadsafe(context.run, self._spawn, runner, step)

    def _spawn(self, runner: StepRunner, step: Step) -> None:
        task = self._loop.create_task(self._run(runner, step))
        self._tasks.add(task)  # the loop keeps only weak references to its tasks
        task.add_done_callback(self._tasks.discard)

    async def _run(self, runner: StepRunner, step: Step) -> None:
        try:
            result = await _attempt(step)
            apply = partial(_apply, runner, step, result)
            await self._loop.run_in_executor(self._pool, contextvars.copy_context().run, apply)
        except BaseException:  # never lose the slot
            log.exception("async step %s of run %s", step.job.stage.name, step.job.run_id)
        finally:
            self._slots.release()
            with self._idle:
                self._count -= 1
                self._idle.notify_all()

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the coroutines in flight; how many are left."""
        deadline = time.monotonic() + timeout
        with self._idle:
            if self._count:
                log.info("waiting up to %.1fs for %d async step(s) in flight", timeout, self._count)
            while self._count and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            return self._count


async def _attempt(step: Step) -> Any:
    """What the coroutine returned, or the :class:`Failure` it ended with."""
    stage = step.job.stage
    seconds = stage.timeout_ms / 1000 if stage.timeout_ms else None
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        return await asyncio.wait_for(stage.invoke(step.value, step.ctx), seconds)
    except asyncio.TimeoutError as exc:  # ours, or one the step raised
        late = deadline is not None and time.monotonic() >= deadline
        what = f"step {stage.name!r} ran past its timeout of {seconds:g}s"
        return Failure.decide(StepTimeout(what) if late else exc, stage, step.claim.attempts)
    except (Exception, asyncio.CancelledError) as exc:  # a cancel from the step's own code
        return Failure.decide(exc, stage, step.claim.attempts)


def _apply(runner: StepRunner, step: Step, result: Any) -> None:
    """Record the attempt as a sync step's (in an apply thread, never on the loop)."""
    # Its message is acknowledged already: like a chained step's, a retry is a timer message.
    step = replace(step, job=replace(step.job, chained=True))
    if not isinstance(result, Failure):
        try:
            result = runner.settle(step.job, step.claim, step.ctx, result)
        except Exception as exc:
            result = Failure.decide(exc, step.job.stage, step.claim.attempts)
    for tried in range(1, _APPLY_TRIES + 1):
        try:
            # A child of the attempt's span (ended at the hand-over) carries the outcome.
            with tracing.span(f"flowkit.step {step.job.stage.name} outcome", quiet=(StepFailed,)):
                runner.finish(step, result, None)
            return
        except StepFailed:  # the final failure is recorded and logged
            return
        except (StoreError, BrokerError) as exc:
            log.warning("async step %s of run %s: %s", step.job.stage.name, step.job.run_id, exc)
            if tried < _APPLY_TRIES:
                time.sleep(min(2.0**tried, 30.0))
    log.error(
        "async step %s of run %s: its outcome could not be recorded; it stays running "
        "until the recovery sweep resumes it",
        step.job.stage.name,
        step.job.run_id,
    )


_steps: AsyncSteps | None = None
_lock = threading.Lock()


def steps() -> AsyncSteps:
    """This process's :class:`AsyncSteps`, started on first use."""
    global _steps
    with _lock:
        if _steps is None:
            _steps = AsyncSteps(limit_from_env())
        return _steps


def start(runner: StepRunner, step: Step) -> None:
    """Run ``step``'s coroutine on this process's loop (see the module's protocol)."""
    steps().start(runner, step)


def in_flight() -> int:
    """How many async steps this process has in flight."""
    return 0 if _steps is None else _steps.in_flight


def drain(timeout: float) -> int:
    """Wait up to ``timeout`` seconds for this process's async steps; how many are left."""
    return 0 if _steps is None else _steps.drain(timeout)
