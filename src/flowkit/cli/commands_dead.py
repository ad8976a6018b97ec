"""``flowkit dead``: messages that could not run, with their reason."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._types import parse_duration_ms
from ..app import App
from ..dead_retry import redrive_dead_letters
from ..errors import ConfigurationError
from ..progress import Progress
from . import exits
from .apps import add_app_arguments, cli_app
from .timeline import print_table, time_text


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    dead = sub.add_parser(
        "dead",
        formatter_class=fmt,
        help="list, re-drive or purge dead letters",
        description="Messages that could not run (undecodable, unknown stage, wrong fields, "
        "retries exhausted), recorded with their reason beyond RabbitMQ's 7-day dead-letter TTL.",
    )
    dsub = dead.add_subparsers(dest="dead_command", metavar="COMMAND")
    dsub.required = True
    ls = dsub.add_parser(
        "list",
        parents=[common],
        formatter_class=fmt,
        help="newest first",
        epilog="examples:\n  flowkit dead list --limit 20\n  flowkit dead list --json",
    )
    ls.add_argument("--limit", "-n", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=dead_list)
    rt = dsub.add_parser(
        "retry",
        parents=[common],
        formatter_class=fmt,
        help="re-drive dead letters: retry their run, or re-send the message",
        description="A dead letter of a failed step retries its run from the failed step "
        "(needs --app); any other dead letter that is a valid message is sent again to its "
        "queue. Re-driven letters are removed from the list.",
        epilog="examples:\n  flowkit dead retry 01a2... --app myapp.flows:app\n"
        "  flowkit dead retry --all --app myapp.flows:app",
    )
    rt.add_argument("ids", metavar="ID", nargs="*")
    rt.add_argument("--all", action="store_true", help="every dead letter")
    add_app_arguments(rt, "the App (MODULE:ATTR), for retrying runs", positional=False)
    rt.set_defaults(handler=dead_retry)
    pg = dsub.add_parser(
        "purge",
        parents=[common],
        formatter_class=fmt,
        help="delete dead letters",
        epilog="examples:\n  flowkit dead purge --older-than 30d\n  flowkit dead purge --all",
    )
    pg.add_argument("ids", metavar="ID", nargs="*")
    pg.add_argument("--all", action="store_true")
    pg.add_argument("--older-than", metavar="DURATION")
    pg.set_defaults(handler=dead_purge)


def _app(args: argparse.Namespace) -> App:
    return cli_app(args, "flowkit-dead", need_flows=False)


def dead_list(args: argparse.Namespace) -> int:
    app = _app(args)
    try:
        letters = app.store.dead_letters.newest(limit=args.limit)
    finally:
        app.close()
    if args.json:
        for d in letters:
            print(json.dumps({**d.__dict__, "created_at": d.created_at.isoformat()}))
        return exits.OK
    if not letters:
        print("no dead letters")
        return exits.OK
    table = [["ID", "WHEN", "QUEUE", "ACTOR", "RUN", "REASON"]]
    for d in letters:
        reason = d.reason if len(d.reason) <= 70 else d.reason[:67] + "..."
        table.append(
            [d.id, time_text(d.created_at), d.queue or "-", d.actor or "-", d.run_id or "-", reason]
        )
    print_table(table)
    return exits.OK


def dead_retry(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        raise ConfigurationError("name dead letters to retry, or pass --all")
    app = _app(args)
    try:
        with Progress("dead letters", total=None) as progress:
            done, skipped = redrive_dead_letters(
                app, None if args.all else args.ids, progress=progress
            )
    finally:
        app.close()
    print(f"re-drove {done} dead letter(s); {skipped} cannot be re-driven (not a valid message)")
    return exits.OK


def dead_purge(args: argparse.Namespace) -> int:
    if not args.ids and not args.all and not args.older_than:
        raise ConfigurationError("name dead letters to purge, or pass --all or --older-than")
    app = _app(args)
    try:
        older = None
        if args.older_than:
            older = (parse_duration_ms(args.older_than, what="--older-than") or 0) / 1000
        n = app.store.dead_letters.delete(args.ids or None, older_than=older)
    finally:
        app.close()
    print(f"purged {n} dead letter(s)")
    return exits.OK
