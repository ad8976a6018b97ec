"""Runs written in the host application's own transaction (``submit(connection=...)``).

The caller hands over its SQLAlchemy ``Connection``, or a ``Session`` (whose
``session.connection()`` is used), on the database of flowkit's store. :meth:`Outbox.write`
checks that it is that database, then writes the runs' rows on it with
:func:`~.submits.store_batch` (``INSERT … ON CONFLICT (flow, key) DO NOTHING``: a known key
never aborts the caller's transaction), and commits nothing: the rows are committed, or
rolled back, with whatever else the caller does in that transaction.

Which database a connection is on (:func:`identity`):

* PostgreSQL: ``current_database()`` on one server, the server told apart by its port
  (``current_setting('port')``) and ``pg_postmaster_start_time()``, which are the same
  whichever address, socket or pooler reaches it (``inet_server_addr()`` is only shown);
* SQLite: the database file's real path (``PRAGMA database_list``).

Each URL's identity is read once, then cached; a mismatch is read again before it is
refused (a server restarted in between changes its start time).

After the commit: a Session has an ``after_commit`` event, and :meth:`Outbox.after_commit`
runs a callback there (the first messages' publish), dropped if its transaction, or the
savepoint it was made in, rolls back or ends without a commit. A bare ``Connection`` has
none that fires after the COMMIT, so its runs' entry steps are written
:data:`~.sweep.UNSENT`, for the recovery sweep to publish.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from ..config import mask_url
from ..errors import ConfigurationError
from .db import Database, unavailable
from .submits import NewRun, Submitted, store_batch

__all__ = ["Caller", "Identity", "Outbox", "Written", "identity"]

log = logging.getLogger("flowkit.outbox")

#: What ``submit(connection=...)`` takes: the host application's transaction.
Caller: TypeAlias = "Connection | Session | scoped_session[Session]"

_PENDING = "flowkit.outbox"
_PG_IDENTITY = sa.text(
    "SELECT current_database(), host(inet_server_addr()), inet_server_port(), "
    "current_setting('port'), pg_postmaster_start_time()"
)
_identities: dict[str, Identity] = {}


@dataclass(frozen=True)
class Identity:
    """One database: ``same`` is compared, ``shown`` names it in an error."""

    same: tuple[Any, ...]
    shown: str


@dataclass(frozen=True)
class Written:
    """What :meth:`Outbox.write` stored, and the caller's Session (``None``: a bare
    Connection, whose new entry steps the sweep publishes)."""

    done: list[Submitted]
    session: Session | None


class Outbox:
    """Runs stored in a caller's transaction, over one :class:`~.db.Database` (the store's)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(
        self,
        caller: Caller,
        flow: str,
        new: Sequence[NewRun],
        *,
        entries: Sequence[str],
        deadline_ms: int | None = None,
        priority: int | None = None,
        trace_context: dict[str, str] | None = None,
        fingerprint: str | None = None,
    ) -> Written:
        """Store the runs on the caller's connection, inside its transaction.

        Raises:
            ConfigurationError: ``caller`` is not a Connection or Session, or it is on
                another database than the store (both named, passwords masked); nothing
                was written.
            StoreError: the database is unavailable, or a conflicting run was deleted.
        """
        session = self.session_of(caller)
        with unavailable():
            conn = self.connection(caller)
            done = store_batch(
                conn,
                flow,
                new,
                entries=entries,
                deadline_ms=deadline_ms,
                priority=priority,
                trace_context=trace_context,
                fingerprint=fingerprint,
                unsent=session is None,
            )
        return Written(done, session)

    def connection(self, caller: Caller) -> Connection:
        """The caller's connection, once it is on the store's database.

        Raises:
            ConfigurationError: as :meth:`write`.
        """
        caller = _unscoped(caller)
        if isinstance(caller, Session):
            conn = caller.connection()
        elif isinstance(caller, Connection):
            conn = caller
        else:
            raise ConfigurationError(
                f"connection= takes a SQLAlchemy Connection or Session, not {type(caller).__name__}"
            )
        theirs, ours = identity(conn), self.identity()
        if theirs.same != ours.same:
            _identities.clear()  # a server may have restarted: read both again
            theirs, ours = identity(conn), self.identity()
        if theirs.same != ours.same:
            raise ConfigurationError(
                f"connection= is on {theirs.shown}, but flowkit's store is on {ours.shown}: "
                "a run is written in your transaction only on the store's own database; "
                "pass a connection to it, or set FLOWKIT_DATABASE_URL to your database"
            )
        return conn

    def session_of(self, caller: Caller) -> Session | None:
        """``caller`` if it is a Session (its publish follows the commit), else ``None``;
        a ``scoped_session`` stands for its current Session."""
        caller = _unscoped(caller)
        return caller if isinstance(caller, Session) else None

    def holds_lock(self, caller: Caller) -> bool:
        """Whether the caller's transaction may hold a lock every other write of this
        process would wait for: SQLite, with the caller's transaction begun (by a write,
        or ``BEGIN IMMEDIATE``). A worker started now would wait for its commit.

        Raises:
            ConfigurationError: as :meth:`write`.
        """
        if self.db.dialect != "sqlite":
            return False
        with unavailable():
            dbapi = self.connection(caller).connection.dbapi_connection
        return bool(getattr(dbapi, "in_transaction", True))

    def identity(self) -> Identity:
        """The store's database."""
        url = self.db.sql.url
        key = url.render_as_string(hide_password=False)
        found = _identities.get(key)
        if found is None:
            if self.db.dialect == "sqlite":  # no connection: one would wait for the caller's lock
                found = _sqlite_identity(url.database or "", key)
            else:
                with self.db.autocommit() as conn:
                    found = _read_identity(conn, key)
            _identities[key] = found
        return found

    def after_commit(self, session: Session, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the Session's transaction commits; never if it (or the
        savepoint in progress now) rolls back, or the Session closes without a commit.
        Callbacks run in the order they were added; one that raises is logged."""
        pending: list[tuple[SessionTransaction, Callable[[], None]]] | None
        pending = session.info.get(_PENDING)
        if pending is None:
            pending = session.info[_PENDING] = []
            event.listen(session, "after_commit", _committed)
            event.listen(session, "after_soft_rollback", _rolled_back)
            event.listen(session, "after_transaction_end", _ended)
        made_in = session.get_nested_transaction() or session.get_transaction()
        assert made_in is not None  # session.connection() began one
        pending.append((made_in, callback))


def identity(conn: Connection) -> Identity:
    """The database ``conn`` is on, read once per URL.

    Raises:
        ConfigurationError: not SQLite or PostgreSQL.
    """
    engine: Engine = conn.engine
    key = engine.url.render_as_string(hide_password=False)
    found = _identities.get(key)
    if found is None:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("PRAGMA database_list").all()
            found = _sqlite_identity(next((r[2] for r in rows if r[1] == "main"), ""), key)
        elif conn.dialect.name == "postgresql":
            found = _read_identity(conn, key)
        else:
            raise ConfigurationError(
                f"connection= is a {conn.dialect.name} connection: flowkit's store is "
                "SQLite or PostgreSQL"
            )
        _identities[key] = found
    return found


def _unscoped(caller: Any) -> Any:
    """The current Session of a ``scoped_session`` (Flask-SQLAlchemy's ``db.session``)."""
    return caller() if isinstance(caller, scoped_session) else caller


def _read_identity(conn: Connection, url: str) -> Identity:
    name, host, port, setting, started = conn.execute(_PG_IDENTITY).one()
    where = f"{host}:{port}" if host is not None else f"a local socket (port {setting})"
    shown = f"PostgreSQL database {name!r} at {where} ({mask_url(url)})"
    return Identity(("postgresql", name, setting, started), shown)


def _sqlite_identity(path: str, url: str) -> Identity:
    if path in ("", ":memory:"):
        return Identity(("sqlite", "memory", url), f"an in-memory SQLite database ({url})")
    real = os.path.realpath(path)
    return Identity(("sqlite", real), f"SQLite file {real}")


def _pending(session: Session) -> list[tuple[SessionTransaction, Callable[[], None]]]:
    found: list[tuple[SessionTransaction, Callable[[], None]]] = session.info.get(_PENDING, [])
    return found


def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: its callbacks wait for the outer commit
    pending = _pending(session)
    callbacks = [callback for _, callback in pending]
    pending.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a callback after the commit of a Session failed")


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    """A rollback of ``previous``: drop what was made in it or a savepoint inside it."""
    pending = _pending(session)
    pending[:] = [(tx, cb) for tx, cb in pending if not _within(tx, previous)]


def _ended(session: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction ended: whatever is left was never committed."""
    if transaction.parent is None:
        _pending(session).clear()


def _within(tx: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while tx is not None:
        if tx is outer:
            return True
        tx = tx.parent
    return False
