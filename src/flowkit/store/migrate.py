"""Schema migrations: apply Alembic's scripts shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from alembic import command

from ..errors import SchemaVersionError
from .schema import SCHEMA_REVISION

__all__ = ["current_revision", "ensure_schema", "upgrade"]

_SCRIPTS = Path(__file__).with_name("migrations")
_VERSION_TABLE = "flowkit_alembic_version"
# Any constant works; it only has to be the same for every flowkit process.
_PG_LOCK_KEY = 0x666C6F77  # "flow"


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = conn
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database, or ``None`` for an empty database."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": _VERSION_TABLE})
        return ctx.get_current_revision()


def _known(rev: str) -> bool:
    scripts = ScriptDirectory(str(_SCRIPTS))
    return any(s.revision == rev for s in scripts.walk_revisions())


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
        command.upgrade(_config(conn), "head")
    return before, SCHEMA_REVISION


def ensure_schema(engine: Engine) -> None:
    """Create or upgrade the schema if needed; refuse a newer one.

    Raises:
        SchemaVersionError: the database schema is newer than this flowkit.
    """
    rev = current_revision(engine)
    if rev == SCHEMA_REVISION:
        return
    upgrade(engine)


def _newer(rev: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"the database schema is at revision {rev!r}, newer than this flowkit knows "
        f"(up to {SCHEMA_REVISION!r}): upgrade flowkit, or point it at another database"
    )
