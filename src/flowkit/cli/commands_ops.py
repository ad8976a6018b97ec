"""``flowkit health`` and ``flowkit status``: is it working, and what is waiting."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import datetime, timezone
from typing import Any

from ..config import mask_url
from ..errors import StoreError
from ..queue_depths import queue_depths
from . import exits
from .apps import add_app_arguments, cli_app
from .timeline import print_table


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    h = sub.add_parser(
        "health",
        parents=[common],
        formatter_class=fmt,
        help="check that the broker and the database answer",
        description="Check the broker and the database (of MODULE:ATTR, when given); exit 0 "
        "when both answer, 6 with the reason otherwise. Creates nothing.",
        epilog="examples:\n  flowkit health examples/multiqueue/app.py:app\n"
        "  flowkit health --database-url postgresql://postgres@127.0.0.1/app",
    )
    add_app_arguments(h, "the App whose broker and database to check")
    h.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"ok", "checks": {"database": {"ok", "error"}, '
        '"broker": {...}}} (the exit code is the same)',
    )
    h.set_defaults(handler=health)
    s = sub.add_parser(
        "status",
        parents=[common],
        formatter_class=fmt,
        help="queue depths (RabbitMQ), live workers and runs by status (database)",
        description="Per queue of MODULE:ATTR: messages ready, delayed (.DQ) and "
        "dead-lettered (.XQ), and consumers, as RabbitMQ reports them; the live workers "
        "(host, pid, queues, threads, the steps they run, their last heartbeat), runs by "
        "flow and status and the oldest live run, from the database. With an app, only its "
        "flows' runs are counted (unless --all); without one, every flow the database knows "
        "(queue depths need the app: AMQP cannot list queues). Creates nothing.",
        epilog="examples:\n  flowkit status examples/multiqueue/app.py:app\n"
        "  flowkit status myapp:app --json\n  flowkit status myapp:app --watch 5\n"
        "  flowkit status --database-url postgresql://postgres@127.0.0.1/app",
    )
    add_app_arguments(s, "the App whose queues and flows to show")
    s.add_argument(
        "--all", action="store_true", help="count the runs of every flow, not only the app's"
    )
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until Ctrl+C")
    s.set_defaults(handler=status)


def _app(args: argparse.Namespace) -> Any:
    return cli_app(args, "flowkit-cli", need_flows=False)  # reads only: creates nothing


def health(args: argparse.Namespace) -> int:
    from ..health import check

    app = _app(args)
    problems = check(app, open_store=False)
    if args.json:
        checks = {part: {"ok": p is None, "error": p} for part, p in problems.items()}
        print(json.dumps({"ok": not any(problems.values()), "checks": checks}))
    else:
        for part, problem in problems.items():
            print(f"{part:9} {'ok' if problem is None else 'FAILED: ' + problem}")
    if any(problems.values()):
        return exits.UNAVAILABLE
    return exits.OK


def _snapshot(app: Any, flows: list[str] | None) -> dict[str, Any]:
    """What ``status`` shows; the runs of ``flows`` only, or of every flow (``None``)."""
    from ..runtime.publisher import CONTROL_QUEUE

    queues = sorted(app.queues() | {CONTROL_QUEUE})
    snap: dict[str, Any] = {
        "broker": mask_url(app.settings.broker_url),
        "database": mask_url(app.settings.database_url),
    }
    if app.settings.embedded:
        snap["queues"] = None
        snap["queues_note"] = "queue depths need RabbitMQ (the broker is memory://)"
    elif not app.flows:
        snap["queues"] = None
        snap["queues_note"] = (
            "queue depths need the flow definitions (MODULE:ATTR, FLOWKIT_APP or app in "
            "[tool.flowkit]): AMQP cannot list queues"
        )
    else:
        snap["queues"] = queue_depths(app.settings.broker_url, queues)
    try:
        by_flow = app.store.count_runs_by_flow()
        oldest = app.store.oldest_live_run(flows=flows)
    except StoreError:
        raise
    if flows is not None:
        by_flow = {name: by_flow.get(name, {}) for name in flows}
    snap["flows"] = by_flow
    runs: dict[str, int] = {}
    for counts in by_flow.values():
        for status, n in counts.items():
            runs[status] = runs.get(status, 0) + n
    snap["runs"] = runs
    snap.update(_workers(app))
    snap["oldest_live_run"] = (
        None
        if oldest is None
        else {
            "id": oldest.id,
            "flow": oldest.flow,
            "status": oldest.status.value,
            "age_seconds": round(
                (datetime.now(timezone.utc) - oldest.created_at).total_seconds(), 1
            ),
        }
    )
    return snap


def _workers(app: Any) -> dict[str, Any]:
    """The live workers, and how many stopped beating without stopping (killed)."""
    from ..runtime.heartbeat import heartbeat_seconds

    now = datetime.now(timezone.utc)
    # Three beats: one or two may be late under load without the worker being gone.
    listed = app.store.workers.list(stale_after=3 * heartbeat_seconds())
    live = [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "queues": None if w.queues is None else list(w.queues),
            "threads": w.threads,
            "version": w.version,
            "started_at": w.started_at.isoformat(),
            "heartbeat_age_seconds": round((now - w.heartbeat_at).total_seconds(), 1),
            "running": [
                {"step_id": r.step_id, "run_id": r.run_id, "flow": r.flow, "step": r.name}
                for r in w.running
            ],
        }
        for w in listed
        if w.alive
    ]
    lost = sum(1 for w in listed if not w.alive and w.stopped_at is None)
    return {"workers": live, "workers_lost": lost}


def _print_workers(snap: dict[str, Any]) -> None:
    lost = f" ({snap['workers_lost']} stopped beating)" if snap["workers_lost"] else ""
    if not snap["workers"]:
        print(f"workers none live{lost}")
        return
    table = [["WORKER", "HOST", "PID", "QUEUES", "THREADS", "RUNNING", "HEARTBEAT"]]
    for w in snap["workers"]:
        steps = ", ".join(f"{r['flow']}.{r['step']}" for r in w["running"][:3])
        more = len(w["running"]) - 3
        running = f"{len(w['running'])}" + (
            f" ({steps}{', ...' if more > 0 else ''})" if steps else ""
        )
        queues = "all" if w["queues"] is None else ",".join(w["queues"])
        age = f"{w['heartbeat_age_seconds']}s ago"
        # The id's tail: its head is a timestamp, alike for workers started together.
        table.append(
            ["…" + w["id"][-8:], w["host"], str(w["pid"]), queues, str(w["threads"]), running, age]
        )
    print(f"workers {len(snap['workers'])} live{lost}")
    print_table(table)


def _print(snap: dict[str, Any]) -> None:
    print(f"broker {snap['broker']}   database {snap['database']}")
    if snap["queues"] is None:
        print(snap["queues_note"])
    else:
        table = [["QUEUE", "READY", "DELAYED", "DEAD", "CONSUMERS"]]
        for q, row in snap["queues"].items():
            table.append(
                [q, str(row["ready"]), str(row["delayed"]), str(row["dead"]), str(row["consumers"])]
            )
        print_table(table)
    _print_workers(snap)
    if snap["flows"]:
        table = [["FLOW", "RUNS"]]
        for name, counts in snap["flows"].items():
            table.append([name, "  ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"])
        print_table(table)
    print("runs   " + ("  ".join(f"{k} {v}" for k, v in sorted(snap["runs"].items())) or "none"))
    o = snap["oldest_live_run"]
    if o:
        print(f"oldest live run {o['id']} ({o['flow']}, {o['status']}) for {o['age_seconds']}s")


def status(args: argparse.Namespace) -> int:
    app = _app(args)
    flows = [f.name for f in app.flows] if app.flows and not args.all else None
    stop = threading.Event()
    try:
        while True:
            snap = _snapshot(app, flows)
            if args.json:
                print(json.dumps(snap))
            else:
                if args.watch:
                    sys.stdout.write("\033[2J\033[H")
                _print(snap)
            if not args.watch:
                return exits.OK
            sys.stdout.flush()
            stop.wait(args.watch)
    except KeyboardInterrupt:
        return exits.OK
    finally:
        app.close()
