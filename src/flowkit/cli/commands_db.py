"""``flowkit db``: the schema."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings, mask_url
from . import exits


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    db = sub.add_parser(
        "db",
        formatter_class=fmt,
        help="manage flowkit's database schema",
        description="Manage flowkit's tables in the configured database.",
    )
    dbsub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    dbsub.required = True
    up = dbsub.add_parser(
        "upgrade",
        parents=[common],
        formatter_class=fmt,
        help="create or upgrade flowkit's tables",
        description="Create flowkit's tables, or apply the migrations this version ships. "
        "Safe to run again and from several processes.",
        epilog="examples:\n  flowkit db upgrade --database-url postgresql://postgres@127.0.0.1/app",
    )
    up.set_defaults(handler=upgrade)


def upgrade(args: argparse.Namespace) -> int:
    from ..store.db import create_engine
    from ..store.migrate import upgrade as do_upgrade

    settings = Settings.resolve(None, args.database_url)
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        before, after = do_upgrade(engine)
    finally:
        engine.dispose()
    where = mask_url(settings.database_url)
    if before == after:
        print(f"{where}: schema already at revision {after}")
    else:
        print(f"{where}: schema upgraded from {before or 'empty'} to revision {after}")
    return exits.OK
