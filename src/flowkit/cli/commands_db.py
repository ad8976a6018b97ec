"""``flowkit db``: the schema, and pruning finished runs (retention)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from .._types import parse_duration_ms
from ..config import Settings, mask_url
from ..errors import ConfigurationError
from ..retention import TERMINAL, parse_statuses
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
    _register_prune(dbsub, common, fmt)


def _register_prune(dbsub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    pr = dbsub.add_parser(
        "prune",
        parents=[common],
        formatter_class=fmt,
        help="delete finished runs older than a duration",
        description="Delete finished runs (succeeded, failed, cancelled, timed out) that ended "
        "longer ago than --older-than, with their steps, signals and attempts, in batches of "
        "--batch runs (one short transaction each, safe while workers run). Without --status "
        "or --flow, the rate log and dead letters older than that go too. A run that is not "
        "finished is never deleted. FLOWKIT_RETENTION makes the workers do this by themselves.",
        epilog="examples:\n  flowkit db prune --older-than 30d --dry-run\n"
        "  flowkit db prune --older-than 30d\n"
        "  flowkit db prune --older-than 7d --status succeeded --flow exceptions",
    )
    pr.add_argument(
        "--older-than",
        required=True,
        metavar="DURATION",
        help="runs that ended longer ago than this (e.g. 30d, 12h)",
    )
    pr.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help="only runs in this status (repeatable; default every finished status: "
        f"{', '.join(s.value for s in TERMINAL)})",
    )
    pr.add_argument(
        "--flow", action="append", metavar="FLOW", help="only runs of this flow (repeatable)"
    )
    pr.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    pr.add_argument(
        "--batch", type=int, default=1000, metavar="N", help="runs per transaction (default 1000)"
    )
    pr.add_argument(
        "--rate",
        type=float,
        metavar="RUNS",
        help="delete at most this many runs a second, to leave the database to busy workers "
        "(default: as fast as it goes)",
    )
    pr.set_defaults(handler=prune)


def upgrade(args: argparse.Namespace) -> int:
    from ..store.db import create_engine
    from ..store.migrate import upgrade as do_upgrade

    settings = Settings.resolve(None, args.database_url)
    engine = create_engine(settings.database_url, pool_size=1, pooler=settings.database_pooler)
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


def prune(args: argparse.Namespace) -> int:
    from ..app import App  # the CLI loads the App (and SQLAlchemy) only when a command needs it
    from ..progress import Progress
    from ..store.db import utcnow
    from ..store.prune import everything

    if args.older_than.strip().startswith("-"):
        raise ConfigurationError(f"--older-than cannot be negative, got {args.older_than!r}")
    ms = parse_duration_ms(args.older_than, what="--older-than")
    statuses = parse_statuses(args.status, what="--status") if args.status else TERMINAL
    flows = tuple(args.flow or ())
    if not 1 <= args.batch <= 10_000:
        raise ConfigurationError(f"--batch must be 1..10000 runs, got {args.batch}")
    if args.rate is not None and not args.rate > 0:
        raise ConfigurationError(
            f"--rate must be a positive number of runs a second, got {args.rate}"
        )
    app = App("flowkit-prune", database_url=args.database_url, embedded_worker=False)
    app.configure(create_schema=False)
    before = utcnow() - timedelta(milliseconds=ms or 0)
    try:
        if args.dry_run:
            counts = app.store.prune.count(before=before, statuses=statuses, flows=flows)
        else:
            with Progress("runs deleted") as shown:
                counts = app.store.prune.all(
                    before=before,
                    statuses=statuses,
                    flows=flows,
                    batch=args.batch,
                    rate=args.rate,
                    progress=lambda total: shown.update(total.runs),
                )
    finally:
        app.close()
    old = everything(statuses, flows)
    rows = ", ".join(f"{n} {what}" for what, n in counts.items(old=old))
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {rows} (ended before {before.isoformat(timespec='seconds')})")
    return exits.OK
