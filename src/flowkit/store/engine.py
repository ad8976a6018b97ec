"""SQLAlchemy engines for flowkit's two databases: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..config import mask_url
from ..errors import ConfigurationError

__all__ = ["create_engine", "normalize_url"]


def normalize_url(url: str) -> str:
    """Map the URLs users paste (``postgres://``, ``postgresql://``) to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(url: str, *, pool_size: int = 10, durable: bool = True) -> Engine:
    """Create the engine for ``url``, tuned for many short transactions from worker threads.

    SQLite gets WAL mode, a busy timeout and ``BEGIN IMMEDIATE`` transactions
    (so concurrent writers queue up instead of failing on lock upgrades);
    PostgreSQL gets psycopg 3 and a pool sized to the worker threads;
    ``durable=False`` makes its commits skip the WAL flush wait
    (``synchronous_commit=off``), for writes that are safe to lose in a crash.

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
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        # No pre-ping: it costs a round trip per transaction. A connection that
        # died is invalidated by the pool on first use, and the runtime retries
        # the message (see Engine.execute).
        kwargs["pool_recycle"] = 1800
        if not durable:
            kwargs["connect_args"] = {"options": "-c synchronous_commit=off"}
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
