"""How busy a worker's threads are: the evidence its heartbeat gives the recovery sweep.

Dramatiq hands each delivered message to a free worker thread at once, and
RabbitMQ delivers a ready message to any consumer with room in its prefetch
(twice the threads). So while one of a worker's threads stays free, every
queue it consumes has no ready message that it would not have received and
started within a moment. :class:`Load` counts the steps running in this process
and keeps :attr:`Load.free_since`: since when a thread has been free without a
break (``None`` while every thread is busy). The heartbeat writes it on the
worker's row; the sweep (:mod:`flowkit.store.sweep`) reads it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from ..store.db import utcnow

__all__ = ["Load"]


class Load:
    """The steps running now in one worker process, against its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0
        self._threads = 0
        self._free_since: datetime | None = None

    def serve(self, threads: int) -> None:
        """The worker starts with ``threads`` threads: all free from now."""
        with self._lock:
            self._threads = threads
            self._free_since = utcnow() if self._busy < threads else None

    def close(self) -> None:
        """The worker is stopping: its consumers take nothing more, so no evidence."""
        with self._lock:
            self._threads = 0
            self._free_since = None

    @property
    def busy(self) -> int:
        """Steps running now."""
        return self._busy

    @property
    def free_since(self) -> datetime | None:
        """Since when a thread has been free without a break; ``None`` when all are
        busy, or when no worker serves from this process."""
        return self._free_since

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count one step as running for the block."""
        with self._lock:
            self._busy += 1
            if self._busy >= self._threads:
                self._free_since = None
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if self._free_since is None and 0 <= self._busy < self._threads:
                    self._free_since = utcnow()
