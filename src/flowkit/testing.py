"""Helpers for testing your own flows: an embedded App on a throwaway database.

Point your App at the in-process memory broker and a temporary SQLite file,
submit runs, and wait for them; nothing else needs to be running::

    from flowkit import StepStatus
    from flowkit.testing import embedded, run_to_completion
    from myapp.flows import pipeline

    def test_triage_marks_critical(tmp_path):
        with embedded(pipeline, tmp_path) as app:
            run = pipeline.submit({"tenant_id": "t1", "exception_id": "e1", ...})
            result = run_to_completion(run)
            assert result.severity == "critical"
            assert [s.status for s in run.steps()] == [StepStatus.SUCCEEDED] * 6

With pytest, add ``pytest_plugins = ["flowkit.testing"]`` to your
``conftest.py`` and use the :func:`flowkit_embedded` fixture instead.

A :class:`VirtualClock` skips time: a 24-hour approval timeout, a ``delay=``
or a run's deadline passes when the test says so, in milliseconds.

.. versionadded:: 0.1
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ._clock import Clock
from ._clock import current as current_clock
from ._clock import install as install_clock
from .app import App, Run
from .errors import ConfigurationError, ResultTimeout
from .flows import Flow
from .status import RunStatus

__all__ = [
    "VirtualClock",
    "drain",
    "embedded",
    "flowkit_clock",
    "flowkit_embedded",
    "run_to_completion",
    "wait_for_status",
]

log = logging.getLogger("flowkit.testing")

#: A timer a VirtualClock holds: due, order of arrival, its message's id, how to send it.
_Timer = tuple[datetime, int, str, Callable[[], object]]


class VirtualClock(Clock):
    """A clock a test moves forward: what falls due by its time happens at once.

    Hand it to :func:`embedded` (or ``flowkit_embedded(app, clock=...)``) and
    the embedded App reads every due time from it, and keeps its delayed
    messages on it instead of in the broker. It runs at the wall clock's pace,
    ahead of it by however far :meth:`advance` moved it::

        clock = VirtualClock()
        with embedded(approvals, tmp_path, clock=clock):
            run = approvals.submit(expense)
            wait_for_status(run, RunStatus.WAITING)
            clock.advance(seconds=30)          # the approval's 30-second timeout
            assert run_to_completion(run).outcome == "rejected"

    What it moves: a step's ``delay=``, a retry's backoff, a signal wait's
    ``timeout=``, a run's deadline, rate-limit windows and the timestamps
    flowkit stores. What it does not: a step's own attempt ``timeout=`` (the
    function runs in real time) and ``flowkit scheduler``'s cron ticks.

    .. versionadded:: 0.2
    """

    def __init__(self) -> None:
        self._ahead = timedelta(0)
        self._cond = threading.Condition()
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._firing = 0
        # Message ids advance() sent and waits for, and those a worker is done with.
        self._awaited: set[str] = set()
        self._handled: set[str] = set()
        self._generation = 0
        self._thread: threading.Thread | None = None

    def now(self) -> datetime:
        """The clock's time: the wall clock's, plus every :meth:`advance` so far."""
        return super().now() + self._ahead

    @property
    def ahead(self) -> timedelta:
        """How far ahead of the wall clock it is."""
        return self._ahead

    @property
    def pending(self) -> list[datetime]:
        """When the timers it holds come due, soonest first."""
        with self._cond:
            return sorted(t[0] for t in self._timers)

    def advance(
        self,
        by: timedelta | None = None,
        /,
        *,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        milliseconds: float = 0,
        timeout: float = 30.0,
    ) -> datetime:
        """Move the clock forward; the timers due by its new time go off at once.

        It returns once the embedded worker has handled each of their messages:
        a wait's timeout is decided (the step runs with :class:`~flowkit.TimedOut`
        or fails), a delayed step or a retry has run its attempt, a run past its
        deadline is ``timed_out``. What those start (the next steps) runs on, as
        usual: wait for it with :func:`run_to_completion` or :func:`wait_for_status`.

        Parameters:
            by: how far, as a :class:`~datetime.timedelta`; added to the keywords.
            timeout: how long to wait, in seconds, for the worker to handle them.

        Returns:
            the clock's new time.

        Raises:
            ConfigurationError: a step backwards.
            ResultTimeout: the worker did not handle them within ``timeout``
                (is the embedded worker started?).
        """
        step = (by or timedelta(0)) + timedelta(
            days=days, hours=hours, minutes=minutes, seconds=seconds, milliseconds=milliseconds
        )
        if step < timedelta(0):
            raise ConfigurationError(f"a VirtualClock only moves forward, not by {step}")
        with self._cond:
            self._ahead += step
            due = self._take_due()
            sent = {t[2] for t in due}
            self._awaited |= sent
            self._cond.notify_all()
        self._fire(due)
        with self._cond:
            done = self._cond.wait_for(lambda: sent <= self._handled, timeout=timeout)
            self._awaited -= sent
            self._handled -= sent
        if not done:
            raise ResultTimeout(
                f"VirtualClock.advance: {len(sent)} timer(s) went off, but the embedded worker "
                f"did not handle them within {timeout:g}s (is it started?)"
            )
        return self.now()

    def hold(
        self,
        delay_ms: int,
        fire: Callable[[], object],
        message_id: str,
        due: datetime | None = None,
    ) -> bool:
        """Keep a delayed message of the memory broker (which calls it); ``fire`` sends it.

        A timer that carries its row's ``due`` time fires by it, even when the test
        moved the clock between the row's commit and this call.
        """
        with self._cond:
            if due is None:
                due = self.now() + timedelta(milliseconds=delay_ms)
            heapq.heappush(self._timers, (due, next(self._order), message_id, fire))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self._generation,),
                    name="flowkit-virtual-clock",
                    daemon=True,
                )
                self._thread.start()
            self._cond.notify_all()
        return True

    def handled(self, message_id: str) -> None:
        """A worker is done with a message (the memory broker's middleware calls it)."""
        with self._cond:
            if message_id in self._awaited:
                self._handled.add(message_id)
                self._cond.notify_all()

    def _wait_next(self, within: float) -> bool:
        """Wait for the next held timer if it comes due within ``within`` seconds.

        Returns whether one was sent (:func:`drain` then waits for what it started).
        """
        with self._cond:
            if not self._timers or self._timers[0][0] - self.now() > timedelta(seconds=within):
                return False
            first = self._timers[0][1]

            def sent() -> bool:
                return (not self._timers or self._timers[0][1] != first) and not self._firing

            return self._cond.wait_for(sent, timeout=max(within, 0.0))

    def _discard(self) -> None:
        """Drop the timers it holds and stop its thread (:func:`embedded` does, on exit)."""
        with self._cond:
            self._timers.clear()
            self._generation += 1
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None:
            thread.join()

    def _take_due(self) -> list[_Timer]:
        now, due = self.now(), []
        while self._timers and self._timers[0][0] <= now:
            due.append(heapq.heappop(self._timers))
        self._firing += len(due)
        return due

    def _fire(self, due: list[_Timer]) -> None:
        for _, _, message_id, fire in due:
            try:
                fire()
            except Exception:  # one lost timer must not stop the others; recover() re-sends
                log.exception("a timer of the virtual clock could not be sent")
                self.handled(message_id)  # nothing will come of it: advance() must not wait
        with self._cond:
            self._firing -= len(due)
            self._cond.notify_all()

    def _run(self, generation: int) -> None:
        # The timers whose time comes with the wall clock, as a broker would send them.
        while True:
            with self._cond:
                due = self._take_due()
                while not due and generation == self._generation:
                    nearest = self._timers[0][0] if self._timers else None
                    left = None if nearest is None else (nearest - self.now()).total_seconds()
                    self._cond.wait(left)
                    due = self._take_due()
                if generation != self._generation:
                    self._firing -= len(due)
                    return
            self._fire(due)


@contextmanager
def embedded(
    target: App | Flow,
    directory: str | Path,
    *,
    threads: int = 4,
    clock: VirtualClock | None = None,
) -> Iterator[App]:
    """Run ``target``'s App on the memory broker and a fresh SQLite file in ``directory``.

    The App's worker threads start with the first submit. On exit the App is
    closed and its previous settings restored, so the next test can embed it again.

    Parameters:
        target: your App, or a flow (its App is used).
        directory: where to put the throwaway database (pytest's ``tmp_path``).
        threads: worker threads.
        clock: a :class:`VirtualClock` to read time from until the block ends
            (the process's clock: every App of the test reads it), so that
            :meth:`VirtualClock.advance` fires delays, timeouts and deadlines.

    Yields:
        the App, configured and ready.

    .. versionchanged:: 0.2
       ``clock=``.
    """
    app = target.app if isinstance(target, Flow) else target
    saved = (app._broker_url, app._database_url, app.threads, app._embedded_worker)
    app.close()
    previous = install_clock(clock) if clock is not None else None
    db = Path(directory) / "flowkit-test.db"
    app.configure(
        broker_url="memory://",
        database_url=f"sqlite:///{db}",
        threads=threads,
        embedded_worker=True,
    )
    try:
        yield app
    finally:
        app.close()
        if clock is not None:
            clock._discard()  # its timers were the closed broker's
            install_clock(previous)
        app._broker_url, app._database_url, app.threads, app._embedded_worker = saved
        app._settings = None


def run_to_completion(*runs: Run, timeout: float = 30.0) -> Any:
    """Wait for each run and return its result (a list when given several runs).

    Raises:
        RunFailed: a run failed; the error carries the step, type, message and traceback.
        ResultTimeout: a run did not finish within ``timeout`` seconds.
    """
    results = [run.result(timeout=timeout) for run in runs]
    return results[0] if len(results) == 1 else results


def wait_for_status(run: Run, *statuses: RunStatus | str, timeout: float = 30.0) -> RunStatus:
    """Wait until ``run`` is in one of ``statuses`` (e.g. ``RunStatus.WAITING`` for a signal).

    Raises:
        ResultTimeout: not reached within ``timeout`` seconds (the message says
            which status the run is in instead).
    """
    wanted = {RunStatus(s) for s in statuses}
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        status = run.status()
        if status in wanted:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            names = ", ".join(sorted(s.value for s in wanted))
            raise ResultTimeout(f"run {run.id} is {status.value}, not {names}, after {timeout:g}s")
        run.app.finishes.wait(min(pause, left))
        pause = min(pause * 2, 0.1)


def drain(app: App, *, timeout: float = 30.0) -> None:
    """Wait until the embedded broker's queues are empty and its workers idle
    (``async def`` steps in flight included).

    Useful after submitting runs whose handles you did not keep. Retries
    scheduled with a backoff count as pending work, so keep backoffs short in tests.
    Under a :class:`VirtualClock`, so do the timers it holds that come due
    within ``timeout``; later ones wait for :meth:`VirtualClock.advance`.
    """
    from dramatiq.brokers.stub import StubBroker

    from .runtime import aio  # the runtime loads on first use

    worker = app.start_worker()
    broker = app.broker
    if not isinstance(broker, StubBroker):
        raise ConfigurationError("drain() works on the embedded memory broker only")
    clock = current_clock()
    ms = int(timeout * 1000)
    end = time.monotonic() + timeout
    for _ in range(100):
        for queue in list(broker.queues):
            broker.join(queue, fail_fast=False, timeout=ms)
        worker.join()
        aio.drain(max(0.0, end - time.monotonic()))  # async steps still awaiting
        if all(broker.queues[q].qsize() == 0 for q in broker.queues):
            if not isinstance(clock, VirtualClock):
                return
            if not clock._wait_next(end - time.monotonic()):
                return


try:  # pytest is a test-time dependency only
    import pytest
except ImportError:  # pragma: no cover
    pass
else:

    @pytest.fixture
    def flowkit_clock() -> VirtualClock:
        """A :class:`VirtualClock` for the current test: ``flowkit_embedded(app, clock=...)``.

        .. versionadded:: 0.2
        """
        return VirtualClock()

    @pytest.fixture
    def flowkit_embedded(tmp_path: Path) -> Iterator[Callable[..., App]]:
        """A function that embeds an App (or a flow's App) for the current test.

        ``app = flowkit_embedded(pipeline)`` returns the App running on the memory
        broker and a SQLite file in ``tmp_path``; it is closed after the test.
        ``flowkit_embedded(pipeline, clock=flowkit_clock)`` also skips time on
        the :func:`flowkit_clock` fixture's clock.

        .. versionchanged:: 0.2
           ``clock=``.
        """
        stack: list[Any] = []

        def embed(target: App | Flow, *, clock: VirtualClock | None = None) -> App:
            cm = embedded(target, tmp_path / f"app{len(stack)}", clock=clock)
            (tmp_path / f"app{len(stack)}").mkdir(exist_ok=True)
            stack.append(cm)
            return cm.__enter__()

        yield embed
        while stack:
            stack.pop().__exit__(None, None, None)
