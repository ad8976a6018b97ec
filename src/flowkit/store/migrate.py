"""Schema migrations: apply Alembic's scripts shipped inside the package."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from ..config import mask_url
from ..errors import SchemaVersionError, StoreError
from .schema import SCHEMA_REVISION

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["check_schema", "current_revision", "ensure_schema", "require_database", "upgrade"]

log = logging.getLogger("flowkit.store")

_SCRIPTS = Path(__file__).with_name("migrations")
_VERSION_TABLE = "flowkit_alembic_version"
# Any constant works; it only has to be the same for every flowkit process.
_PG_LOCK_KEY = 0x666C6F77  # "flow"


F = TypeVar("F", bound=Callable[..., Any])


def _unavailable(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(engine: Engine, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(engine, *args, **kwargs)
        except OperationalError as exc:
            where = mask_url(engine.url.render_as_string(hide_password=True))
            raise StoreError(f"database {where} unavailable: {str(exc.orig).strip()}") from exc

    return wrapper  # type: ignore[return-value]


def _config(conn: Connection) -> Config:
    from alembic.config import Config  # Alembic loads only when the schema changes

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = conn
    return cfg


@_unavailable
def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database, or ``None`` for an empty database.

    Read with one query (Alembic's own reader costs an import of Alembic,
    which most commands never need).
    """
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(_VERSION_TABLE):
            return None
        rows = conn.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).all()
    if len(rows) > 1:
        raise SchemaVersionError(f"the database records several schema revisions: {rows}")
    return str(rows[0][0]) if rows else None


def _known(rev: str) -> bool:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(_SCRIPTS))
    return any(s.revision == rev for s in scripts.walk_revisions())


@_unavailable
def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to this flowkit's head; returns ``(before, after)`` revisions.

    Safe to run from several processes at once on PostgreSQL (an advisory lock
    serialises them).

    Raises:
        SchemaVersionError: the database is at a revision this flowkit does not know.
    """
    before = current_revision(engine)
    if before is not None and not _known(before):
        raise _newer(before)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        from alembic import command

        command.upgrade(_config(conn), "head")
    if before != SCHEMA_REVISION:
        log.debug("flowkit schema upgraded from %s to %s", before or "empty", SCHEMA_REVISION)
    return before, SCHEMA_REVISION


@_unavailable
def ensure_schema(engine: Engine) -> None:
    """Create or upgrade the schema if needed; refuse a newer one.

    Raises:
        SchemaVersionError: the database schema is newer than this flowkit.
    """
    rev = current_revision(engine)
    if rev == SCHEMA_REVISION:
        return
    upgrade(engine)


@_unavailable
def check_schema(engine: Engine) -> None:
    """Make sure the schema is exactly this flowkit's, without changing anything.

    A SQLite file that does not exist is not created: it is reported missing.

    Raises:
        SchemaVersionError: missing, older (run ``flowkit db upgrade``) or newer.
    """
    require_database(engine)
    rev = current_revision(engine)
    if rev == SCHEMA_REVISION:
        return
    if rev is None:
        raise SchemaVersionError(
            "this database has no flowkit tables: run `flowkit db upgrade` (or start a worker)"
        )
    if not _known(rev):
        raise _newer(rev)
    raise SchemaVersionError(
        f"the database schema is at revision {rev!r}, older than this flowkit's "
        f"{SCHEMA_REVISION!r}: run `flowkit db upgrade`"
    )


def require_database(engine: Engine) -> None:
    """Refuse a SQLite URL whose file does not exist (connecting would create an empty one).

    Raises:
        SchemaVersionError: no such file.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.query.get("uri"):
        return
    path = Path(url.database)
    if not path.exists():
        raise SchemaVersionError(
            f"no flowkit database at {path.resolve()}: run `flowkit db upgrade` (or start a worker)"
        )


def _newer(rev: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"the database schema is at revision {rev!r}, newer than this flowkit knows "
        f"(up to {SCHEMA_REVISION!r}): upgrade flowkit, or point it at another database"
    )
