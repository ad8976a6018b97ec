"""The hot path's one-statement transitions, executed on the driver's connection.

A claim, a chained completion and a submit are each one SQL statement in autocommit;
on PostgreSQL SQLAlchemy's per-execution work (the execution context, the result
object, the connection wrapper and its events) cost about twice the driver's own
CPU for them, measured on this project's benchmark machine: 335 against 114
microseconds for one short statement. :class:`Direct` keeps the statement as
SQLAlchemy builds it (:mod:`.transitions`), compiled once for the dialect, and runs
it on the pooled psycopg connection with the same bind processors, so the values
sent are the ones SQLAlchemy would send; psycopg returns rows already typed (JSON
parsed, timestamps aware) as SQLAlchemy gets them on this driver.

Driver errors are raised as SQLAlchemy's (``OperationalError``, ``IntegrityError``,
...), so :func:`.db.unavailable` and the callers' handlers see what they saw before,
and a connection found broken is dropped from the pool rather than handed out again.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, StatementError

__all__ = ["Direct"]


class _Compiled:
    """One statement's SQL for the driver, its bind processors and its row type."""

    def __init__(self, statement: sa.Executable, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if "POSTCOMPILE" in compiled.string:
            raise TypeError("a statement with expanding parameters cannot run directly")
        self.statement = statement  # kept: the cache is keyed by its id
        self.compiled = compiled
        self.sql = compiled.string
        self.processors = dict(compiled._bind_processors)
        self.row: Any = None

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = self.compiled.construct_params(values)
        for name, process in self.processors.items():
            if name in params:
                params[name] = process(params[name])
        return params

    def make_row(self, description: Any, values: Any) -> Any:
        if self.row is None:
            self.row = namedtuple("Row", [c.name for c in description])  # type: ignore[misc]
        return self.row(*values)


class Direct:
    """Runs hot statements in autocommit on the pooled connections of ``durable`` (its
    commits wait for the WAL flush) or ``unflushed`` (they do not: its connections were
    born with ``synchronous_commit=off``; behind a pooler, the statement itself says
    so, :meth:`.db.Database.unflushed`), without SQLAlchemy's execution layer.

    A connection of a pool for transactions has autocommit turned on for the statement
    and off again before it goes back.
    """

    def __init__(self, durable: Engine, unflushed: Engine) -> None:
        self.durable, self.unflushed = durable, unflushed
        self._compiled: dict[int, _Compiled] = {}

    def first(self, statement: sa.Executable, values: dict[str, Any], *, durable: bool) -> Any:
        """The statement's first row (a named tuple), or ``None``."""
        engine = self.durable if durable else self.unflushed
        made = self._compiled.get(id(statement))
        if made is None:
            made = self._compiled[id(statement)] = _Compiled(statement, engine.dialect)
        params = made.params(values)
        error = engine.dialect.loaded_dbapi.Error
        try:
            pooled = engine.raw_connection()  # the pool's connect is not wrapped by SQLAlchemy
        except error as exc:
            raise _wrapped(made.sql, params, exc, engine) from exc
        driver: Any = pooled.driver_connection
        flip = not driver.autocommit  # a connection of the transactions' pool
        try:
            if flip:
                driver.autocommit = True
            try:
                cursor = driver.execute(made.sql, params)
                row = cursor.fetchone()
                description = cursor.description
            finally:
                if flip and not driver.closed:
                    driver.autocommit = False
        except Exception as exc:
            if getattr(driver, "closed", False) or getattr(driver, "broken", False):
                pooled.invalidate(exc)
            if isinstance(exc, error):
                raise _wrapped(made.sql, params, exc, engine) from exc
            raise
        finally:
            pooled.close()
        return None if row is None else made.make_row(description, row)


def _wrapped(sql: str, params: dict[str, Any], exc: Exception, engine: Engine) -> StatementError:
    """A driver error as SQLAlchemy raises it (``OperationalError``, ``IntegrityError``...)."""
    error = engine.dialect.loaded_dbapi.Error
    return DBAPIError.instance(sql, params, exc, error, dialect=engine.dialect)
