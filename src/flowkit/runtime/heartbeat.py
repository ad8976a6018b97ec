"""A worker's identity and heartbeats: one ``flowkit_workers`` row per worker process.

:class:`Heartbeat` registers the worker (host, pid, queues, threads, flowkit's
version), refreshes its row every :func:`heartbeat_seconds` from a daemon
thread, and marks it stopped when the worker stops cleanly. It is handed the
store's :class:`~flowkit.store.Workers` part, never the App. Each beat also
writes the worker's evidence from its :class:`~.load.Load` (since when a thread
has been free). The recovery sweep (:mod:`.sweep`) reads both: a worker whose
heartbeat is older than three intervals is dead and its running steps are
resumed, and a free worker's queues hold no ready message, so a queued step
published before is lost and published again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable

from ..__about__ import __version__
from ..errors import ConfigurationError, StoreError
from ..store import Workers
from .load import Load

__all__ = ["HEARTBEAT_SECONDS", "Heartbeat", "heartbeat_seconds", "seconds_from_env"]

log = logging.getLogger("flowkit.worker")

#: How often a worker refreshes its row; ``$FLOWKIT_HEARTBEAT_SECONDS`` overrides it.
HEARTBEAT_SECONDS = 2.0


def heartbeat_seconds() -> float:
    """The heartbeat interval: ``$FLOWKIT_HEARTBEAT_SECONDS`` or :data:`HEARTBEAT_SECONDS`.

    Raises:
        ConfigurationError: the variable is not a positive number of seconds.
    """
    return seconds_from_env("FLOWKIT_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)


def seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds (under a day) from ``$name``, or ``default``.

    Raises:
        ConfigurationError: the variable is set to something else.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < 86_400:
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


class Heartbeat:
    """Registers one worker and keeps its row fresh until :meth:`stop`.

    Parameters:
        workers: the store's workers part.
        queues: the queues the worker serves (``None``: all of its App's).
        threads: its worker threads.
        every: seconds between heartbeats (default :func:`heartbeat_seconds`).
        load: the worker's running steps, whose evidence each beat records.

    Raises:
        ConfigurationError: a bad ``$FLOWKIT_HEARTBEAT_SECONDS``.
        StoreError: the worker could not be registered.
    """

    def __init__(
        self,
        workers: Workers,
        *,
        queues: Iterable[str] | None,
        threads: int,
        every: float | None = None,
        load: Load | None = None,
    ) -> None:
        self.workers = workers
        self.load = load
        self.every = heartbeat_seconds() if every is None else every
        #: this worker's id (``flowkit_workers.id``), recorded on the steps it claims
        self.worker_id = workers.register(
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=None if queues is None else sorted(queues),
            threads=threads,
            version=__version__,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"flowkit-heartbeat-{self.worker_id[-6:]}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                free = None if self.load is None else self.load.free_since
                self.workers.heartbeat(self.worker_id, free_since=free)
            except StoreError as exc:
                # The database comes back or the worker stops: beat again next tick.
                log.warning("worker %s heartbeat failed: %s", self.worker_id, exc)
            except Exception:
                # A heartbeat is never worth killing its thread (and the dashboard's view).
                log.exception("worker %s heartbeat failed", self.worker_id)

    def stop(self) -> None:
        """Stop beating and mark the worker stopped (a lost database only logs a warning)."""
        self._stop.set()
        self._thread.join(self.every + 5.0)
        try:
            self.workers.stopped(self.worker_id)
        except StoreError as exc:
            log.warning("worker %s could not record its stop: %s", self.worker_id, exc)
