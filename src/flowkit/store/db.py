"""The bottom of the store: connections, transactions, error translation and the clock.

Every other store module takes a :class:`Database` and imports from here,
never from each other's internals. Two databases are supported: SQLite
(embedded) and PostgreSQL, directly or behind a pooler in transaction mode
(PgBouncer, ``pooler="transaction"``): then no connection carries session state
from one transaction to the next (no startup ``options``, no prepared statements,
only ``SET LOCAL`` and transaction-level advisory locks). See docs/operations.md,
"Many workers: PgBouncer".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.sql.dml import UpdateBase

from .._clock import utcnow  # the clock, re-exported: store modules read it from here
from ..config import mask_url
from ..errors import ConfigurationError, StoreError
from .direct import Direct

__all__ = ["Database", "aware", "create_engine", "normalize_url", "unavailable", "utcnow"]

_S = TypeVar("_S", bound=sa.Executable)
#: ``SET LOCAL synchronous_commit = off`` as a value: in an autocommit statement, its own
#: transaction's commit does not wait for the WAL flush (read at commit, then reset).
_NO_WAL_WAIT: sa.Label[Any] = sa.literal_column(
    "set_config('synchronous_commit', 'off', true)"
).label("no_wal_wait")


def aware(value: datetime | None) -> datetime | None:
    """A timestamp read back from the database, made aware (SQLite returns naive UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


@contextmanager
def unavailable() -> Iterator[None]:
    """Turn a lost or refused database connection into :class:`~flowkit.StoreError`.

    The one place driver errors are translated. Anything else (a bug, bad data)
    propagates as it is; a ``StoreError`` tells the runtime to try again later.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreError(f"database unavailable: {exc.orig!s}".strip()) from exc


class Database:
    """The SQLAlchemy engines of one database URL, and transactions on them.

    Parameters:
        url: a SQLAlchemy URL (``sqlite:///flowkit.db``, ``postgresql://...``).
        pool_size: connections kept open; size it to the worker threads.
        pooler: ``"transaction"``: ``url`` is a pooler in transaction mode (PgBouncer),
            so nothing may rely on session state. ``None``: a direct connection.
        listen_url: where ``LISTEN`` connects (:mod:`.notify`), directly to PostgreSQL,
            if not ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pooler: str | None = None,
        listen_url: str | None = None,
    ) -> None:
        self.url = url
        #: ``"transaction"`` behind a transaction pooler, else ``None``
        self.pooler = pooler
        #: the direct URL ``LISTEN`` uses, if not :attr:`url`
        self.listen_url = listen_url
        #: the SQLAlchemy engine for ordinary transactions
        self.sql = create_engine(url, pool_size=pool_size, pooler=pooler)
        self.dialect = self.sql.dialect.name
        #: PostgreSQL runs the per-step statements in one round trip each
        self.fast = self.dialect == "postgresql"
        self._autocommit: Engine = self.sql.execution_options(isolation_level="AUTOCOMMIT")
        self._claims: Engine = self._autocommit
        if self.fast and pooler is None:
            # A claim lost in a database crash is harmless (the step is queued
            # again and the broker redelivers its message), so claims do not wait
            # for the WAL flush; completions and submits still do.
            # Born in autocommit, so a checkout changes nothing on the connection.
            # Behind a transaction pooler that startup option is refused (and a
            # session setting would not last): there the statement itself says so
            # (:meth:`unflushed`), still one round trip, on the one pool.
            self._claims = create_engine(url, pool_size=pool_size, durable=False, autocommit=True)
        self._unflushed: dict[int, tuple[sa.Executable, sa.Executable]] = {}
        #: PostgreSQL: the hot one-statement transitions, run on the driver (:meth:`first`)
        self.direct = Direct(self.sql, self._claims.engine) if self.fast else None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction, committed on exit; driver errors become ``StoreError``."""
        with unavailable(), self.sql.begin() as conn:
            yield conn

    @contextmanager
    def autocommit(self, *, durable: bool = True) -> Iterator[Connection]:
        """A connection whose every statement commits by itself (one round trip each).

        ``durable=False`` (PostgreSQL) does not wait for the WAL flush: only for
        writes that are safe to lose in a crash, such as a claim. Behind a
        transaction pooler only statements made with :meth:`unflushed` do not wait.
        """
        with unavailable(), (self._autocommit if durable else self._claims).connect() as conn:
            yield conn

    def first(self, statement: sa.Executable, params: dict[str, Any], *, durable: bool) -> Any:
        """PostgreSQL: one statement in autocommit, as :meth:`autocommit` runs it, on the
        driver's connection without SQLAlchemy's execution layer (:mod:`.direct`); its
        first row (a named tuple) or ``None``. Driver errors are SQLAlchemy's, and a
        lost connection a ``StoreError``, as on every other path.
        """
        assert self.direct is not None, "Database.first is for PostgreSQL"
        with unavailable():
            return self.direct.first(statement, params, durable=durable)

    def unflushed(self, statement: _S) -> _S:
        """``statement`` for :meth:`autocommit` with ``durable=False``: as it is, or,
        behind a transaction pooler (no startup ``options`` there), returning one more
        column, ``set_config('synchronous_commit', 'off', true)``: a ``SET LOCAL`` for its
        own transaction, so that commit does not wait for the WAL flush either, and a
        claim is still one round trip.

        Only for a statement (an ``UPDATE``/``INSERT ... RETURNING`` or a ``SELECT`` of
        one) that writes nothing unless it returns a row.
        """
        if self.pooler is None or not self.fast:
            return statement
        made = self._unflushed.get(id(statement))
        if made is None:
            if isinstance(statement, UpdateBase):
                changed: sa.Executable = statement.returning(_NO_WAL_WAIT)
            elif isinstance(statement, sa.Select):
                changed = statement.add_columns(_NO_WAL_WAIT)
            else:
                raise TypeError(f"cannot make {type(statement).__name__} skip the WAL flush")
            # Keyed by id: the statement is kept too, so its id is never reused.
            made = self._unflushed[id(statement)] = (statement, changed)
        return made[1]  # type: ignore[return-value]

    def wait_for_wal(self, conn: Connection, wait: bool) -> None:
        """PostgreSQL: whether this transaction's commit waits for the WAL flush
        (``SET LOCAL synchronous_commit``); a no-op on SQLite.

        Off only for a record safe to lose in a crash: one that tells nobody anything
        (no message published after it, no run ended). Any later commit that waits
        flushes it too.
        """
        if self.fast:
            conn.exec_driver_sql(f"SET LOCAL synchronous_commit = {'on' if wait else 'off'}")

    def dispose(self) -> None:
        self.sql.dispose()
        if self._claims is not self._autocommit:
            self._claims.engine.dispose()


def normalize_url(url: str) -> str:
    """Map the URLs users paste (``postgres://``, ``postgresql://``) to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    durable: bool = True,
    autocommit: bool = False,
    pooler: str | None = None,
) -> Engine:
    """Create the engine for ``url``, tuned for many short transactions from worker threads.

    SQLite gets WAL mode, a busy timeout and ``BEGIN IMMEDIATE`` transactions
    (so concurrent writers queue up instead of failing on lock upgrades);
    PostgreSQL gets psycopg 3 and a pool sized to the worker threads;
    ``durable=False`` makes its commits skip the WAL flush wait
    (``synchronous_commit=off``), for writes that are safe to lose in a crash;
    ``autocommit`` makes its connections commit each statement (PostgreSQL);
    ``pooler="transaction"`` (PostgreSQL behind PgBouncer in transaction mode) turns
    off psycopg's prepared statements, which live on one server connection while the
    pooler hands each transaction any of them.

    Raises:
        ConfigurationError: an unsupported URL or a missing driver (with the extra to install).
    """
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"database URL {mask_url(url)!r} is not valid") from exc
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigurationError(
                "an in-memory SQLite database cannot be shared by worker threads: "
                "use a file, e.g. sqlite:///flowkit.db"
            )
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        kwargs["poolclass"] = sa.pool.QueuePool
    elif backend == "postgresql":
        kwargs.update(_pg_engine_args(pool_size, durable, autocommit, pooler))
    else:
        raise ConfigurationError(
            f"database {backend!r} is not supported: use sqlite:/// or postgresql://"
        )
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigurationError(
            f"no driver for {parsed.drivername}: install flowkit with the 'postgres' extra "
            "(pip install '.[postgres]' from flowkit's source)"
        ) from exc
    if backend == "sqlite":
        _tune_sqlite(engine)
    return engine


def _pg_engine_args(
    pool_size: int, durable: bool, autocommit: bool, pooler: str | None
) -> dict[str, Any]:
    """``sqlalchemy.create_engine``'s arguments for PostgreSQL (see :func:`create_engine`)."""
    kwargs: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": pool_size,
        # No pre-ping: it costs a round trip per transaction. A connection that
        # died is invalidated by the pool on first use, and the runtime retries
        # the message (see Engine.execute).
        "pool_recycle": 1800,
        "connect_args": _pg_connect_args(durable=durable, pooler=pooler),
    }
    if autocommit:
        # Every statement commits by itself: nothing for the pool to roll back.
        kwargs["isolation_level"] = "AUTOCOMMIT"
        kwargs["pool_reset_on_return"] = None
    return kwargs


def _pg_connect_args(*, durable: bool, pooler: str | None) -> dict[str, Any]:
    """psycopg's connection arguments: a session setting when direct, none behind a pooler.

    Raises:
        ConfigurationError: ``durable=False`` behind a pooler (a startup option it refuses).
    """
    if pooler is None:
        return {} if durable else {"options": "-c synchronous_commit=off"}
    if not durable:
        raise ConfigurationError(
            f"behind a {pooler} pooler a connection cannot skip the WAL flush wait: "
            "use SET LOCAL synchronous_commit in the transaction"
        )
    # A prepared statement lives on one server connection; the pooler hands each
    # transaction whichever is free, where it is missing or named twice.
    return {"prepare_threshold": None}


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
        # transaction handling would defer locking and deadlock writers).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
