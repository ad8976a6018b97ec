"""``Run``: a handle on one run (its status, result and timeline), and waiting for runs."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from .errors import ConfigurationError, ResultTimeout, RunError, RunFailed, RunNotFound
from .records import RetryPreview, RunInfo, StepInfo
from .status import RunStatus

if TYPE_CHECKING:
    from .app import App
    from .store import Store
    from .store.notify import RunListener

__all__ = ["Finishes", "Run", "Watch", "check_submit", "listen_enabled"]

log = logging.getLogger("flowkit")


def check_submit(key: str | None, priority: int | None, max_priority: int | None) -> None:
    """Refuse a run key or a priority that cannot be stored or sent.

    Raises:
        ConfigurationError: naming what is wrong.
    """
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
        raise ConfigurationError("key must be a non-empty string of at most 255 characters")
    if priority is not None and (
        max_priority is None or not isinstance(priority, int) or not 0 <= priority <= max_priority
    ):
        raise ConfigurationError(
            f"priority must be an integer in 0..max_priority ({max_priority}); "
            "enable priorities with App(max_priority=N)"
        )


#: Seconds between a waiter's status checks while the listener is up: only a missed
#: notification (none is known to be lost) would need it.
LISTEN_FALLBACK = 1.0
#: The longest pause between status checks while polling.
POLL_MAX = 0.25


def listen_enabled() -> bool:
    """``$FLOWKIT_LISTEN``: whether ``Run.wait`` may listen for finished runs (default yes).

    Raises:
        ConfigurationError: the variable is set to something other than 1 or 0.
    """
    raw = os.environ.get("FLOWKIT_LISTEN", "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(
        f"FLOWKIT_LISTEN must be 1 (listen for finished runs on PostgreSQL) or 0 (poll), "
        f"not {raw!r}"
    )


class Finishes:
    """Wakes the threads waiting for a run when it ends.

    A run this process ends wakes its waiters at once (:meth:`notify`, the Engine's
    on-finished callback). On PostgreSQL the first :meth:`Run.wait` also starts a
    :class:`~flowkit.store.notify.RunListener` (unless ``FLOWKIT_LISTEN=0``, or behind a
    transaction pooler without ``FLOWKIT_LISTEN_URL``), so a run ended by any process
    wakes the waiters of that run, and only those. Otherwise, and while the listener is
    reconnecting, a run finished elsewhere is seen by polling.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lock = threading.Lock()
        self._watches: dict[str, set[threading.Event]] = {}
        self._listener: RunListener | None = None
        self._unsupported = False
        #: seconds between a waiter's status checks while the listener is up
        self.fallback = LISTEN_FALLBACK
        #: notifications from the database that found a waiter of their run (one per waiter)
        self.notified = 0

    def notify(self, run_id: str | None = None, *_ended: Any) -> None:
        """A run ended (the Engine's on-finished callback): wake its waiters, and every
        poller of :meth:`wait`."""
        with self._cond:
            self._cond.notify_all()
        if run_id is not None:
            self._wake(run_id)

    def wait(self, seconds: float) -> None:
        """Sleep until a run ends in this process, or ``seconds`` pass."""
        with self._cond:
            self._cond.wait(seconds)

    @property
    def listener(self) -> RunListener | None:
        """The listener, once a wait on PostgreSQL started it."""
        return self._listener

    def listen(self, store: Store) -> RunListener | None:
        """The listener on ``store``'s database, started by the first call; ``None`` on
        SQLite, with ``FLOWKIT_LISTEN=0``, behind a transaction pooler without a direct
        ``FLOWKIT_LISTEN_URL``, or with a psycopg older than 3.2."""
        if self._listener is not None or store.dialect != "postgresql" or self._unsupported:
            return self._listener
        if not listen_enabled() or (store.db.pooler and store.db.listen_url is None):
            return None
        # psycopg is the optional postgres extra, present whenever the database is PostgreSQL
        from .store import notify

        with self._lock:
            if self._listener is None:
                if not notify.supported():
                    log.warning("psycopg < 3.2 cannot wait for notifications: Run.wait polls")
                    self._unsupported = True
                    return None
                self._listener = notify.RunListener(store.db, self._on_notify, self._wake_all)
                self._listener.start()
            return self._listener

    @contextmanager
    def watch(self, run_id: str, store: Store) -> Iterator[Watch]:
        """Wait for ``run_id`` from here on: a :class:`Watch` woken when it ends."""
        listener = self.listen(store)
        if listener is None:
            yield Watch(self, None, None)
            return
        event = threading.Event()
        with self._lock:
            self._watches.setdefault(run_id, set()).add(event)
        try:
            yield Watch(self, listener, event)
        finally:
            with self._lock:
                events = self._watches.get(run_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._watches[run_id]

    def close(self) -> None:
        """Stop the listener (bounded); the next wait on PostgreSQL starts a new one."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._wake_all()

    def waiters(self, run_id: str) -> int:
        """How many threads wait for ``run_id``'s notification now."""
        with self._lock:
            return len(self._watches.get(run_id, ()))

    def _on_notify(self, run_id: str) -> None:
        self.notified += self._wake(run_id)

    def _wake(self, run_id: str) -> int:
        """Wake the waiters of ``run_id``; returns how many there are."""
        with self._lock:
            events = list(self._watches.get(run_id, ()))
        for event in events:
            event.set()
        return len(events)

    def _wake_all(self) -> None:
        with self._lock:
            events = [e for es in self._watches.values() for e in es]
        for event in events:
            event.set()


class Watch:
    """One waiter's wake-ups (see :meth:`Finishes.watch`).

    With a live listener it sleeps until its run's notification, checking the status
    every :attr:`Finishes.fallback` seconds anyway; without one it polls as before,
    the pause doubling from 2 ms to 250 ms, woken at once when this process ends a run.
    """

    def __init__(
        self, finishes: Finishes, listener: RunListener | None, event: threading.Event | None
    ) -> None:
        self._finishes = finishes
        self._listener = listener
        self._event = event
        self._pause = 0.002

    @property
    def notified(self) -> bool:
        """Whether a notification of the run's end will wake this watch."""
        return self._event is not None

    def wait(self, left: float | None) -> None:
        """Sleep until woken, or the next check is due (at most ``left`` seconds)."""
        if self._listener is not None and self._listener.live:
            seconds = self._finishes.fallback
        else:
            seconds, self._pause = self._pause, min(self._pause * 2, POLL_MAX)
        if left is not None:
            seconds = min(seconds, left)
        if self._event is None:
            self._finishes.wait(seconds)
        else:
            self._event.wait(seconds)
            self._event.clear()  # before the status is read: a later end sets it again


class Run:
    """A handle on one run: its status, result and timeline.

    .. versionadded:: 0.1
    """

    def __init__(self, app: App, run_id: str, flow: str, *, created: bool) -> None:
        self.app = app
        #: the run's id
        self.id = run_id
        #: the name of the run's flow
        self.flow = flow
        #: whether the submit that returned this handle created the run
        #: (``False`` when an existing run was found by its key).
        self.created = created

    def info(self) -> RunInfo:
        """The run as stored now.

        Raises:
            RunNotFound: the run was deleted.
        """
        info = self.app.store.get_run(self.id)
        if info is None:
            raise RunNotFound(f"no run {self.id!r}")
        return info

    def status(self) -> RunStatus:
        """The run's status now."""
        state = self.app.store.run_state(self.id)
        if state is None:
            raise RunNotFound(f"no run {self.id!r}")
        return RunStatus(state[0])

    def steps(self) -> list[StepInfo]:
        """The run's timeline: one record per step (and per fanned-out item)."""
        return self.app.store.get_steps(self.id)

    def signal(self, name: str, data: Any = None) -> bool:
        """Deliver a signal to this run; see :meth:`App.signal`."""
        return self.app.signal(self.id, name, data)

    def cancel(self) -> bool:
        """Cancel this run; see :meth:`App.cancel`."""
        return self.app.cancel(self.id)

    def retry(self, *, from_step: str | None = None) -> list[str]:
        """Re-run this finished run from its failed step; see :meth:`App.retry`."""
        return self.app.retry(self.id, from_step=from_step)

    def retry_preview(self, *, from_step: str | None = None) -> RetryPreview:
        """What :meth:`retry` would do; see :meth:`App.retry_preview`."""
        return self.app.retry_preview(self.id, from_step=from_step)

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Block until the run reaches a terminal status; return it.

        On PostgreSQL the first wait starts the App's listener (``LISTEN``, see
        :mod:`flowkit.store.notify`): a run ended by any process wakes its waiters at
        once, and the status is checked every second anyway. On SQLite, with
        ``FLOWKIT_LISTEN=0``, behind a transaction pooler without ``FLOWKIT_LISTEN_URL``,
        or while the listener reconnects, the status is polled
        (every 2 ms, doubling to 250 ms); a run ended in this process wakes its waiters
        at once everywhere.

        Raises:
            ConfigurationError: ``$FLOWKIT_LISTEN`` is neither 1 nor 0.
            ResultTimeout: not finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        status = self.status()
        if status.terminal:
            return status
        with self.app.finishes.watch(self.id, self.app.store) as watch:
            if watch.notified:  # it may have ended before the watch was registered
                status = self.status()
            while not status.terminal:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResultTimeout(f"run {self.id} is still {status.value} after {timeout:g}s")
                watch.wait(left)
                status = self.status()
        return status

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run and return its result, typed as the flow's output.

        A run ended early by :class:`~flowkit.Stop` returns ``Stop.output``.

        Raises:
            RunFailed: the run failed; carries the recorded error and traceback.
            RunError: the run was cancelled or timed out.
            ResultTimeout: not finished within ``timeout`` seconds.
        """
        status = self.wait(timeout)
        state = self.app.store.run_state(self.id)
        assert state is not None
        _, output, error, stop_reason = state
        if status is RunStatus.SUCCEEDED:
            if stop_reason is not None:
                return output  # ended early by Stop: its own value, as stored
            flow = self.app.flow(self.flow)
            try:
                return TypeAdapter(flow.output_type).validate_python(output)
            except ValidationError:  # pragma: no cover - stored by this flow's own output type
                return output
        if status is RunStatus.FAILED:
            err = error or {}
            raise RunFailed(
                self.id,
                step=err.get("step"),
                error_type=err.get("type", "Error"),
                error_message=err.get("message", ""),
                traceback=err.get("traceback"),
            )
        raise RunError(f"run {self.id} ended {status.value}")

    def __repr__(self) -> str:
        return f"<Run {self.id} flow={self.flow}>"
