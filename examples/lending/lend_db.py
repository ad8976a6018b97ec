"""The lending platform's own tables, kept in the database flowkit uses.

One PostgreSQL database (or one SQLite file) holds the runs and the business
rows: :func:`engine` follows the App's database URL (steps pass ``ctx.app``),
else ``FLOWKIT_DATABASE_URL`` (default ``sqlite:///flowkit.db``), as flowkit
does. flowkit's tables are all named ``flowkit_*``; these are ``lenders``,
``loan_applications`` and ``matches``. :func:`create_tables` creates them if
missing; engines are opened on first use, never at import.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

import flowkit

DEFAULT_DATABASE_URL = "sqlite:///flowkit.db"


def _now() -> datetime:
    return datetime.now(timezone.utc)


#: JSON columns store Python ``None`` as SQL NULL, not as the JSON text ``null``
_JSON = sa.JSON(none_as_null=True)
metadata = sa.MetaData()

lenders = sa.Table(
    "lenders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    #: the uploaded file (.txt or .pdf), or the document's text when uploaded inline
    sa.Column("document_path", sa.String(1000)),
    sa.Column("document_text", sa.Text),
    #: LendingCriteria as JSON, its derived flags, and "llm" or "rules"
    sa.Column("criteria", _JSON),
    sa.Column("flags", _JSON),
    sa.Column("extraction", sa.String(20)),
    #: uploaded -> processing -> processed | needs_review
    sa.Column("status", sa.String(20), nullable=False, default="uploaded"),
    sa.Column("updated_at", sa.DateTime(timezone=True), default=_now, onupdate=_now),
)

loan_applications = sa.Table(
    "loan_applications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("business_name", sa.String(200), nullable=False),
    sa.Column("industry", sa.String(100), nullable=False),
    sa.Column("state", sa.String(2), nullable=False),
    sa.Column("credit_score", sa.Integer, nullable=False),
    sa.Column("requested_amount", sa.Float, nullable=False),
    sa.Column("time_in_business_months", sa.Integer, nullable=False),
    sa.Column("annual_revenue", sa.Float, nullable=False),
    #: submitted -> matching -> matched
    sa.Column("status", sa.String(20), nullable=False, default="submitted"),
    #: Ranking as JSON, written by the matching workflow's last step
    sa.Column("ranking", _JSON),
    sa.Column("updated_at", sa.DateTime(timezone=True), default=_now, onupdate=_now),
)

matches = sa.Table(
    "matches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("application_id", sa.ForeignKey("loan_applications.id"), nullable=False),
    sa.Column("lender_id", sa.ForeignKey("lenders.id"), nullable=False),
    #: pending (created by prepare) -> scored (written by match)
    sa.Column("status", sa.String(20), nullable=False, default="pending"),
    sa.Column("eligible", sa.Boolean),
    sa.Column("score", sa.Float),
    sa.Column("reasons", _JSON),
    sa.Column("updated_at", sa.DateTime(timezone=True), default=_now, onupdate=_now),
    # One row per (application, lender): writing a match again updates it.
    sa.UniqueConstraint("application_id", "lender_id", name="uq_matches_application_lender"),
)


def database_url(app: flowkit.App | None = None) -> str:
    """The App's database (else ``FLOWKIT_DATABASE_URL`` or the default), for psycopg 3.

    Following the App's settings keeps these tables next to flowkit's even when
    the URL comes from ``flowkit worker --database-url`` or ``flowkit.testing``.
    """
    url = app.settings.database_url if app is not None else None
    url = url or os.environ.get("FLOWKIT_DATABASE_URL") or DEFAULT_DATABASE_URL
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def engine(app: flowkit.App | None = None) -> Engine:
    """The engine for :func:`database_url`, created once per process and URL on first use.

    Steps pass ``ctx.app``, the App running them.
    """
    url = database_url(app)
    with _lock:
        if url not in _engines:
            _engines[url] = _create_engine(url)
        return _engines[url]


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    eng = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    # The same tuning as flowkit's own SQLite engine: WAL with synchronous=NORMAL
    # (no fsync per commit), a busy timeout, and BEGIN IMMEDIATE so that worker
    # threads queue up for the write lock instead of failing on a lock upgrade.
    @sa.event.listens_for(eng, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(eng, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return eng


def create_tables(app: flowkit.App | None = None) -> None:
    """Create the three tables if they do not exist (safe to call again)."""
    metadata.create_all(engine(app), checkfirst=True)


def upsert(
    conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], key: list[str]
) -> None:
    """Insert ``rows``, or update the row with the same ``key`` columns (one statement).

    Used wherever a step writes: a retried or redelivered step then updates
    its earlier row instead of adding a second one.
    """
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    columns = {name for row in rows for name in row} | {"updated_at"}
    update = {c: stmt.excluded[c] for c in columns if c not in key and c != "id"}
    conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=update), list(rows))


def reset(app: flowkit.App | None = None) -> None:
    """Delete every lender, application and match (the sample data is seeded afresh)."""
    with engine(app).begin() as conn:
        for table in (matches, loan_applications, lenders):
            conn.execute(table.delete())
