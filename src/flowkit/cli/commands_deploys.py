"""``flowkit flows diff`` and ``flowkit runs list --stranded``: what a deploy strands.

``flows diff`` compares the flow definitions in the code with the fingerprints of
the live runs in the database, before a deploy: which runs the new definition goes
on with, which it would strand and why. Nothing changes. See ``docs/deploys.md``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import exits
from .apps import add_app_arguments, load_target
from .timeline import print_table, time_text

__all__ = ["flows_diff", "list_stranded", "register"]


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    f = sub.add_parser(
        "flows",
        formatter_class=fmt,
        help="compare the flows in the code with the live runs",
        description="Compare the flow definitions in the code with the live runs stored.",
    )
    fsub = f.add_subparsers(dest="flows_command", metavar="COMMAND")
    fsub.required = True
    d = fsub.add_parser(
        "diff",
        parents=[common],
        formatter_class=fmt,
        help="show which live runs the definitions in the code would strand",
        description="For each flow of MODULE:ATTR, its fingerprint in the code and the live "
        "runs stored under other fingerprints: how many the code's definition goes on with, "
        "and those it would strand, each with its reason. Run it before a deploy; it changes "
        "nothing. Exit 0 when nothing would be stranded, 1 otherwise.",
        epilog="examples:\n  flowkit flows diff myapp.flows:app\n"
        "  flowkit flows diff myapp.flows:app --json",
    )
    add_app_arguments(d, "the App (or one of its flows) about to be deployed")
    d.add_argument("--limit", type=int, default=20, help="stranded runs shown per flow")
    d.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object per flow: {"flow", "fingerprint", "compatible", '
        '"stranded": [{"run_id", "reason"}], "fingerprints": {FINGERPRINT: RUNS}, '
        '"already_stranded"}',
    )
    d.set_defaults(handler=flows_diff)


def flows_diff(args: argparse.Namespace) -> int:
    from ..runtime.stranded import check_flow  # lazy: start-up stays fast

    target = load_target(args)
    app = target.app
    app.configure(broker_url=args.broker_url, database_url=args.database_url, create_schema=False)
    try:
        checks = [check_flow(app.store, f.compile(), mark=False) for f in target.flows]
    finally:
        app.close()
    if args.json:
        for c in checks:
            print(json.dumps(c.as_json()))
    for c in [] if args.json else checks:
        others = sum(c.fingerprints.values())
        print(f"{c.flow}: fingerprint {c.fingerprint}")
        if c.already:
            print(f"  {c.already} run(s) stranded already (flowkit runs list --stranded)")
        if not others:
            print("  every live run started under this definition")
            continue
        print(
            f"  {others} live run(s) under other definitions: {c.compatible} go on, "
            f"{len(c.stranded)} would be stranded"
        )
        for run_id, reason in c.stranded[: args.limit]:
            print(f"  {run_id}  {reason}")
        if len(c.stranded) > args.limit:
            print(f"  ... and {len(c.stranded) - args.limit} more")
    return exits.OK if not any(c.stranded or c.already for c in checks) else exits.UNEXPECTED


def list_stranded(args: argparse.Namespace, store: Any) -> int:
    """``flowkit runs list --stranded``: the stranded runs, oldest first, with the reason."""
    try:
        rows = store.strands.stranded(flow=args.flow, limit=args.limit)
    finally:
        store.dispose()
    if args.json:
        for r in rows:
            created = None if r.created_at is None else r.created_at.isoformat()
            doc = {"id": r.id, "flow": r.flow, "status": r.status, "stranded": r.reason}
            print(json.dumps({**doc, "fingerprint": r.fingerprint, "created_at": created}))
        return exits.OK
    if not rows:
        print("no stranded runs")
        return exits.OK
    table = [["RUN", "FLOW", "STATUS", "CREATED", "STRANDED"]]
    table += [[r.id, r.flow, r.status, time_text(r.created_at), r.reason] for r in rows]
    print_table(table)
    return exits.OK
