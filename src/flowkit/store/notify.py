"""``RunListener``: the runs that end, as PostgreSQL announces them.

Migration 0006 gives ``flowkit_runs`` a trigger that runs
``pg_notify('flowkit_run_finished', id)`` when a run's status becomes terminal, whichever
process and statement ended it. A listener keeps one dedicated autocommit connection,
outside the pool, in a daemon thread: it ``LISTEN``\\ s on that channel and hands each run id
to a callback (:class:`flowkit.run.Finishes` wakes that run's ``Run.wait``). If the
connection drops it connects again with a backoff; notifications sent meanwhile are lost,
so it calls its ``on_gap`` callback when the connection is lost and once ``LISTEN`` is back,
and the waiters check their run's status themselves.

Imported only on PostgreSQL, where psycopg (the ``postgres`` extra) is installed.
``FLOWKIT_LISTEN=0`` keeps this off. Behind a transaction pooler ``LISTEN`` does not work
(the session it was issued in is not this connection's for long), so a listener connects
to the database's :attr:`~.db.Database.listen_url` (``FLOWKIT_LISTEN_URL``, directly to
PostgreSQL) when it has one, and :class:`flowkit.run.Finishes` polls when it has none.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from .db import Database, normalize_url

__all__ = ["CHANNEL", "RunListener", "supported"]

log = logging.getLogger("flowkit.store")

#: The channel of migration 0006's trigger; each payload is a run id.
CHANNEL = "flowkit_run_finished"
#: Seconds between two looks at :meth:`RunListener.close` while no notification comes.
TICK = 0.2
#: The first and the longest wait before connecting again after a failure.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
#: Libpq settings a listener gets unless its URL sets them: a connection that hangs or
#: dies silently is noticed (the keepalives) and replaced.
_LIBPQ_DEFAULTS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "application_name": "flowkit listen",
}


def supported() -> bool:
    """Whether this psycopg can wait for notifications with a timeout (3.2 and later)."""
    return "timeout" in inspect.signature(psycopg.Connection.notifies).parameters


def connect_params(db: Database) -> dict[str, Any]:
    """psycopg's connection parameters for ``db``'s listen URL (else its URL), as its
    SQLAlchemy engine would have them."""
    url = db.sql.url if db.listen_url is None else make_url(normalize_url(db.listen_url))
    _args, params = db.sql.dialect.create_connect_args(url)
    params = {k: v for k, v in params.items() if k != "context"}
    return {**_LIBPQ_DEFAULTS, **params}


class RunListener:
    """Calls ``on_finished(run_id)`` for each run that ends, from a daemon thread.

    Parameters:
        db: the store's database (PostgreSQL); the listener opens its own connection,
            to its ``listen_url`` if it has one (never through a transaction pooler).
        on_finished: called with the id of each run that ended, in the listener's thread.
        on_gap: called when notifications may have been missed: the connection was lost,
            or ``LISTEN`` has just started (runs may have ended before it).
    """

    def __init__(
        self,
        db: Database,
        on_finished: Callable[[str], None],
        on_gap: Callable[[], None],
    ) -> None:
        self._params = connect_params(db)
        self._on_finished = on_finished
        self._on_gap = on_gap
        self._stop = threading.Event()
        self._live = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowkit-listen", daemon=True)
        #: notifications received
        self.notifications = 0
        #: connections on which ``LISTEN`` succeeded (more than one: it reconnected)
        self.connects = 0
        #: the PostgreSQL backend pid of the current connection
        self.backend_pid: int | None = None

    def start(self) -> RunListener:
        """Start the thread (it connects in the background); returns the listener."""
        self._thread.start()
        return self

    @property
    def live(self) -> bool:
        """Whether ``LISTEN`` is active now, so every run that ends is announced."""
        return self._live.is_set()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close its connection, waiting at most ``timeout`` seconds."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        pause = BACKOFF_FIRST
        while not self._stop.is_set():
            before = self.connects
            try:
                self._listen()
            except Exception as exc:  # whatever went wrong: connect again, later
                if self._stop.is_set():
                    break
                if self.connects > before:  # it was listening: connect again soon, then back off
                    pause = BACKOFF_FIRST
                # One warning per outage; the attempts that fail again are debug lines.
                log.log(
                    logging.WARNING if pause == BACKOFF_FIRST else logging.DEBUG,
                    "flowkit listener: %s; waiting runs poll, connecting again in %.1fs",
                    str(exc).strip() or type(exc).__name__,
                    pause,
                )
            finally:
                if self._live.is_set():
                    self._live.clear()
                    self._on_gap()
            self._stop.wait(pause)
            pause = min(pause * 2, BACKOFF_MAX)

    def _listen(self) -> None:
        """One connection: ``LISTEN``, then hand over notifications until stopped or lost."""
        with psycopg.connect(**self._params, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            self.connects += 1
            self._live.set()
            self._on_gap()  # runs that ended before LISTEN: let their waiters look
            while not self._stop.is_set():
                for note in conn.notifies(timeout=TICK):
                    self.notifications += 1
                    self._on_finished(note.payload)
