"""Run queries for browsing many runs: filtered keyset pages, counts, error types.

:meth:`Queries.page` reads one page of runs, newest first, by ``(created_at,
id)`` with an opaque cursor (keyset pagination: page 1000 costs what page 1
costs, and a run inserted meanwhile never shifts a page). Each filter has an
index on PostgreSQL: ``flow``, ``status`` and ``error_type`` each with
``created_at``, ``created_at`` alone, and ``key`` with ``text_pattern_ops`` for
a key prefix whatever the database's collation.

:meth:`Queries.counts` and friends are ``GROUP BY`` queries cached for
:data:`COUNT_CACHE_SECONDS`, never counters kept up to date by the runtime.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import sqlalchemy as sa

from ..errors import InvalidQuery
from ..records import RunInfo
from ..status import RunStatus
from .db import Database, aware
from .reads import run_info
from .schema import runs

__all__ = ["COUNT_CACHE_SECONDS", "MAX_PAGE", "Queries", "RunFilter", "RunPage"]

#: How long :meth:`Queries.counts`, :meth:`Queries.counts_by_flow` and
#: :meth:`Queries.error_types` answer from their cache.
COUNT_CACHE_SECONDS = 5.0
#: The largest page :meth:`Queries.page` reads.
MAX_PAGE = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class RunFilter:
    """Which runs :meth:`Queries.page` returns; every field given must match.

    Parameters:
        flow: the flow's name.
        status: a :class:`~flowkit.RunStatus` value (``"failed"``).
        key_prefix: runs whose idempotency key starts with this (``%`` and
            ``_`` are plain characters here, not wildcards).
        since: created at or after this time.
        until: created before this time.
        error_type: ``error["type"]`` of a run that ended failed or timed out.
        stopped: ``True``: only runs a step ended early with :class:`~flowkit.Stop`
            (``stop_reason`` set); ``False``: only the others.
        stop_reason: runs stopped with exactly this reason.
        parent: the child runs of this run (``Workflow.call``).

    .. versionadded:: 0.2
    .. versionchanged:: 0.3
       ``stopped`` and ``stop_reason`` (no index of their own: they narrow what the
       other conditions and ``created_at`` read).
    .. versionchanged:: 0.5
       ``parent``.
    """

    flow: str | None = None
    status: str | None = None
    key_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error_type: str | None = None
    stopped: bool | None = None
    stop_reason: str | None = None
    parent: str | None = None


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest first; ``next_cursor`` reads the next (``None``: the last).

    .. versionadded:: 0.2
    """

    runs: list[RunInfo]
    next_cursor: str | None


class Queries:
    """Run queries for a dashboard or an API, over one :class:`~.db.Database`.

    The counts are ``GROUP BY`` queries, not counters: a counter row per status
    would be updated by every run's start and end, and every worker would
    queue on its lock. The price is a scan of an index per count (about a
    second on 10M runs in PostgreSQL), so the answers are cached for
    :data:`COUNT_CACHE_SECONDS` in this object: they may be that much behind,
    and however many dashboards poll, the database counts once per interval.

    Parameters:
        db: the database.
        cache_seconds: how long counts and error types are cached (``0``: not).
    """

    def __init__(self, db: Database, *, cache_seconds: float = COUNT_CACHE_SECONDS) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def page(self, filter: RunFilter, *, limit: int = 50, cursor: str | None = None) -> RunPage:
        """One page of the runs that match ``filter``, newest first.

        Parameters:
            filter: which runs.
            limit: runs per page, 1 to :data:`MAX_PAGE`.
            cursor: the ``next_cursor`` of the previous page; ``None`` for the first.

        Returns:
            the runs, and the cursor of the next page if there may be more.

        Raises:
            InvalidQuery: a malformed cursor, an unknown status or a bad limit.
            StoreError: the database is unavailable.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE}, not {limit!r}")
        stmt = sa.select(runs).where(*self._conditions(filter))
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            # created_at <= at bounds the index scan; the rest breaks ties by id.
            stmt = stmt.where(
                runs.c.created_at <= at, sa.or_(runs.c.created_at < at, runs.c.id < last_id)
            )
        stmt = stmt.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
        with self.db.transaction() as conn:
            rows = conn.execute(stmt).all()
        found = [run_info(r) for r in rows[:limit]]
        more = len(rows) > limit
        return RunPage(found, encode_cursor(found[-1]) if more else None)

    def counts(self, *, flow: str | None = None) -> dict[str, int]:
        """How many runs have each status (every status, zeros included), cached.

        Raises:
            StoreError: the database is unavailable.
        """

        def count() -> dict[str, int]:
            stmt = sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
            if flow is not None:
                stmt = stmt.where(runs.c.flow == flow)
            with self.db.transaction() as conn:
                rows = conn.execute(stmt).all()
            return {**_zeros(), **{r[0]: int(r[1]) for r in rows}}

        return dict(self._cached(("counts", flow), count))

    def counts_by_flow(self) -> dict[str, dict[str, int]]:
        """Per flow that has runs, how many have each status (zeros included), cached.

        Raises:
            StoreError: the database is unavailable.
        """

        def count() -> dict[str, dict[str, int]]:
            stmt = sa.select(runs.c.flow, runs.c.status, sa.func.count()).group_by(
                runs.c.flow, runs.c.status
            )
            with self.db.transaction() as conn:
                rows = conn.execute(stmt).all()
            out: dict[str, dict[str, int]] = {}
            for flow, status, n in rows:
                out.setdefault(flow, _zeros())[status] = int(n)
            return dict(sorted(out.items()))

        return {k: dict(v) for k, v in self._cached(("by_flow",), count).items()}

    def error_types(self, *, flow: str | None = None, limit: int = 50) -> list[str]:
        """The distinct error types of runs that ended with an error, sorted, cached.

        For a filter's choices: the values :attr:`RunFilter.error_type` can match.

        Raises:
            StoreError: the database is unavailable.
        """

        def read() -> list[str]:
            stmt = (
                sa.select(runs.c.error_type)
                .where(runs.c.error_type.is_not(None))
                .distinct()
                .order_by(runs.c.error_type)
                .limit(limit)
            )
            if flow is not None:
                stmt = stmt.where(runs.c.flow == flow)
            with self.db.transaction() as conn:
                return [str(r[0]) for r in conn.execute(stmt).all()]

        return list(self._cached(("errors", flow, limit), read))

    def clear_cache(self) -> None:
        """Forget the cached counts and error types (the next call reads them again)."""
        with self._lock:
            self._cache.clear()

    def _cached(self, key: tuple[Any, ...], read: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        # Read outside the lock: a slow count must not block cached answers.
        fresh = read()
        with self._lock:
            self._cache[key] = (now + self.cache_seconds, fresh)
        return fresh

    def _conditions(self, f: RunFilter) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = []
        if f.flow is not None:
            where.append(runs.c.flow == f.flow)
        if f.status is not None:
            where.append(runs.c.status == _status(f.status))
        if f.error_type is not None:
            where.append(runs.c.error_type == f.error_type)
        if f.since is not None:
            where.append(runs.c.created_at >= _utc(f.since))
        if f.until is not None:
            where.append(runs.c.created_at < _utc(f.until))
        if f.key_prefix:
            where.extend(key_prefix(f.key_prefix, self.db.dialect))
        if f.stopped is not None:
            stopped = runs.c.stop_reason.is_not(None)
            where.append(stopped if f.stopped else sa.not_(stopped))
        if f.stop_reason is not None:
            where.append(runs.c.stop_reason == f.stop_reason)
        if f.parent is not None:
            where.append(runs.c.parent_run_id == f.parent)
        return where


def key_prefix(prefix: str, dialect: str) -> list[sa.ColumnElement[bool]]:
    """``key LIKE :prefix || '%'``, with the prefix's ``\\``, ``%`` and ``_`` escaped.

    PostgreSQL reads ``ix_flowkit_runs_key`` (``text_pattern_ops``) for it. On
    SQLite, whose ``LIKE`` ignores ASCII case and uses no index, the byte range
    ``[prefix, next)`` is added: exact under SQLite's BINARY collation, and
    read from the same index.
    """
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = sa.bindparam("key_prefix", escaped, type_=sa.String) + sa.literal_column("'%'")
    where: list[sa.ColumnElement[bool]] = [runs.c.key.like(pattern, escape="\\")]
    if dialect == "sqlite":
        where.append(runs.c.key >= prefix)
        upper = _next_string(prefix)
        if upper is None:  # the last character cannot be incremented: compare the head
            where.append(sa.func.substr(runs.c.key, 1, len(prefix)) == prefix)
        else:
            where.append(runs.c.key < upper)
    return where


def _next_string(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix``."""
    last = ord(prefix[-1])
    nxt = last + 1 if last != 0xD7FF else 0xE000  # skip the surrogates (not UTF-8)
    return None if nxt > 0x10FFFF else prefix[:-1] + chr(nxt)


def encode_cursor(run: RunInfo) -> str:
    """The opaque, URL-safe cursor of the page after ``run``."""
    raw = f"{_utc(run.created_at).isoformat()}|{run.id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at, id)`` of a cursor made by :func:`encode_cursor`.

    Raises:
        InvalidQuery: it was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, sep, run_id = raw.decode("utf-8").partition("|")
        created = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidQuery(f"malformed page cursor {cursor[:60]!r}") from None
    if not sep or not run_id or len(run_id) > 32 or created.tzinfo is None:
        raise InvalidQuery(f"malformed page cursor {cursor[:60]!r}")
    return _utc(created), run_id


def _status(value: str) -> str:
    try:
        return RunStatus(value).value
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise InvalidQuery(f"unknown run status {value!r} (statuses: {known})") from None


def _utc(value: datetime) -> datetime:
    """An aware UTC time (naive: taken as UTC), as the store writes them."""
    return (aware(value) or value).astimezone(timezone.utc)


def _zeros() -> dict[str, int]:
    return {s.value: 0 for s in RunStatus}
