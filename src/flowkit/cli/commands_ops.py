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
from .loader import load
from .timeline import print_table


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    h = sub.add_parser(
        "health",
        parents=[common],
        formatter_class=fmt,
        help="check that the broker and the database answer",
        description="Check the broker and the database of MODULE:ATTR; exit 0 when both "
        "answer, 6 with the reason otherwise.",
        epilog="examples:\n  flowkit health examples/multiqueue/app.py:app",
    )
    h.add_argument("target", metavar="MODULE:ATTR")
    h.set_defaults(handler=health)
    s = sub.add_parser(
        "status",
        parents=[common],
        formatter_class=fmt,
        help="queue depths (RabbitMQ), live workers and runs by status (database)",
        description="Per queue of MODULE:ATTR: messages ready, delayed (.DQ) and "
        "dead-lettered (.XQ), and consumers, as RabbitMQ reports them; the live workers "
        "(host, pid, queues, threads, the steps they run, their last heartbeat), runs by "
        "status and the oldest live run, from the database.",
        epilog="examples:\n  flowkit status examples/multiqueue/app.py:app\n"
        "  flowkit status myapp:app --json\n  flowkit status myapp:app --watch 5",
    )
    s.add_argument("target", metavar="MODULE:ATTR")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until Ctrl+C")
    s.set_defaults(handler=status)


def _app(args: argparse.Namespace) -> Any:
    app = load(args.target).app
    app.configure(broker_url=args.broker_url, database_url=args.database_url, embedded_worker=False)
    return app


def health(args: argparse.Namespace) -> int:
    from ..health import check

    app = _app(args)
    problems = check(app, open_store=False)
    for part, problem in problems.items():
        print(f"{part:9} {'ok' if problem is None else 'FAILED: ' + problem}")
    if any(problems.values()):
        return exits.UNAVAILABLE
    return exits.OK


def _snapshot(app: Any) -> dict[str, Any]:
    from ..runtime.publisher import CONTROL_QUEUE

    queues = sorted(app.queues() | {CONTROL_QUEUE})
    snap: dict[str, Any] = {
        "broker": mask_url(app.settings.broker_url),
        "database": mask_url(app.settings.database_url),
    }
    if app.settings.embedded:
        snap["queues"] = None
        snap["queues_note"] = "queue depths need RabbitMQ (the broker is memory://)"
    else:
        snap["queues"] = queue_depths(app.settings.broker_url, queues)
    try:
        runs = app.store.count_runs()
        oldest = app.store.oldest_live_run()
    except StoreError:
        raise
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
    print("runs   " + ("  ".join(f"{k} {v}" for k, v in sorted(snap["runs"].items())) or "none"))
    o = snap["oldest_live_run"]
    if o:
        print(f"oldest live run {o['id']} ({o['flow']}, {o['status']}) for {o['age_seconds']}s")


def status(args: argparse.Namespace) -> int:
    app = _app(args)
    stop = threading.Event()
    try:
        while True:
            snap = _snapshot(app)
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
