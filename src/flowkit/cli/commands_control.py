"""``flowkit signal``, ``cancel``, ``retry`` and ``scheduler``: durable control."""

from __future__ import annotations

import argparse
import logging
import os
import signal as os_signal
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from .._types import parse_duration_ms
from ..app import App
from ..errors import ConfigurationError, FlowkitError, InputValidationError
from ..status import RunStatus
from . import exits
from .commands_runs import print_validation_errors, read_data
from .loader import load

log = logging.getLogger("flowkit.cli")

_APP_HELP = "the App (MODULE:ATTR) whose flows the run belongs to (default: $FLOWKIT_APP)"
# The statuses `flowkit retry --status` accepts, in the order --help lists them.
_RETRY_STATUSES = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT, RunStatus.SUCCEEDED)


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    s = sub.add_parser(
        "signal",
        parents=[common],
        formatter_class=fmt,
        help="send a signal (e.g. an approval) to a run",
        description="Deliver signal NAME with --data to RUN_ID. A step waiting for it runs "
        "with the data; a signal sent before the step waits is kept until it does. A signal "
        "for a finished run, or a second one of the same name, is refused (exit 9).",
        epilog=(
            "examples:\n"
            '  flowkit signal 01a2... approval --data \'{"approver": "ana", "ok": true}\' '
            "--app examples/approvals/app.py:app\n"
            "  FLOWKIT_APP=myapp.flows:app flowkit signal 01a2... approval --data @ok.json"
        ),
    )
    s.add_argument("run_id", metavar="RUN_ID")
    s.add_argument("name", metavar="NAME", help="the signal's name (wait_for= on the step)")
    s.add_argument(
        "--data",
        "-d",
        default="null",
        metavar="JSON|@FILE|-",
        help="the signal's payload (default: null)",
    )
    s.add_argument("--app", "-a", metavar="MODULE:ATTR", help=_APP_HELP)
    s.set_defaults(handler=send_signal)

    c = sub.add_parser(
        "cancel",
        parents=[common],
        formatter_class=fmt,
        help="cancel a run",
        description="End RUN_ID cancelled: its queued and waiting steps are cancelled; running "
        "steps finish their attempt (they can check ctx.cancelled) and their results are "
        "dropped.",
        epilog="examples:\n  flowkit cancel 01a2030990c3...",
    )
    c.add_argument("run_id", metavar="RUN_ID")
    c.set_defaults(handler=cancel)

    r = sub.add_parser(
        "retry",
        parents=[common],
        formatter_class=fmt,
        help="re-run finished runs from their failed step",
        description="Re-run a finished run from its failed step (or --from STEP), reusing the "
        "stored outputs of the steps before it. Without RUN_ID, retries every run matching "
        "--status/--flow/--since.",
        epilog=(
            "examples:\n"
            "  flowkit retry 01a2... --app myapp.flows:app\n"
            "  flowkit retry 01a2... --from policy --dry-run --app myapp.flows:app\n"
            "  flowkit retry --status failed --flow exceptions --since 1h --app myapp.flows:app"
        ),
    )
    r.add_argument("run_id", metavar="RUN_ID", nargs="?")
    r.add_argument("--from", dest="from_step", metavar="STEP", help="start from this step")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="show the steps that would run again and those reusing stored outputs; change nothing",
    )
    r.add_argument(
        "--status",
        default=None,
        choices=[s.value for s in _RETRY_STATUSES],
        help="bulk: runs in this status (default failed)",
    )
    r.add_argument("--flow", "-f", help="bulk: only runs of this flow")
    r.add_argument("--since", metavar="DURATION", help="bulk: only runs created this recently")
    r.add_argument("--limit", type=int, default=1000, help="bulk: at most this many runs")
    r.add_argument("--app", "-a", metavar="MODULE:ATTR", help=_APP_HELP)
    r.set_defaults(handler=retry)

    sch = sub.add_parser(
        "scheduler",
        parents=[common],
        formatter_class=fmt,
        help="start scheduled runs (cron) and sweep for stuck work",
        description="Start a run of every flow with schedule= at each cron tick (UTC), once "
        "per tick even with several schedulers running, and run the recovery sweep every 30s. "
        "Ticks missed while no scheduler ran are skipped and logged (--catch-up latest starts "
        "the most recent one).",
        epilog="examples:\n  flowkit scheduler examples/approvals/app.py:app",
    )
    sch.add_argument("target", metavar="MODULE:ATTR", help="an App, Pipeline or Workflow")
    sch.add_argument("--catch-up", choices=["skip", "latest"], default="skip")
    sch.add_argument(
        "--sweep-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between recovery sweeps (0: never)",
    )
    sch.set_defaults(handler=scheduler)


def _app(args: argparse.Namespace, *, need_flows: bool) -> App:
    spec = getattr(args, "app", None) or os.environ.get("FLOWKIT_APP")
    if spec:
        app = load(spec).app
    elif need_flows:
        raise ConfigurationError(
            "this needs the flow definitions: pass --app MODULE:ATTR or set FLOWKIT_APP"
        )
    else:
        app = App("flowkit-cli")
    app.configure(broker_url=args.broker_url, database_url=args.database_url, embedded_worker=False)
    return app


def send_signal(args: argparse.Namespace) -> int:
    data = read_data(args.data)
    app = _app(args, need_flows=True)
    try:
        released = app.signal(args.run_id, args.name, data)
    except InputValidationError as exc:
        print_validation_errors(args.name, exc)
        return exits.INVALID_INPUT
    finally:
        app.close()
    if released:
        print(f"signal {args.name!r} delivered: run {args.run_id} continues")
    else:
        print(f"signal {args.name!r} stored: the step waiting for it will use it")
    return exits.OK


def cancel(args: argparse.Namespace) -> int:
    app = _app(args, need_flows=False)
    try:
        done = app.cancel(args.run_id)
    finally:
        app.close()
    print(f"run {args.run_id} cancelled" if done else f"run {args.run_id} had already ended")
    return exits.OK


def _retry_one(app: App, run_id: str, args: argparse.Namespace) -> None:
    if args.dry_run:
        p = app.retry_preview(run_id, from_step=args.from_step)
        kept = f"; keeps {p.kept_items} succeeded item(s) of {p.start}" if p.kept_items else ""
        reused = ", ".join(p.reused) or "nothing"
        print(f"run {run_id}: would re-run {', '.join(p.rerun)}; reuses {reused}{kept}")
        return
    names = app.retry(run_id, from_step=args.from_step)
    print(f"run {run_id}: re-queued {', '.join(names) or 'nothing'}")


def retry(args: argparse.Namespace) -> int:
    app = _app(args, need_flows=True)
    try:
        if args.run_id:
            _retry_one(app, args.run_id, args)
            return exits.OK
        since = None
        if args.since:
            ms = parse_duration_ms(args.since, what="--since") or 0
            since = datetime.now(timezone.utc) - timedelta(milliseconds=ms)
        status = RunStatus(args.status or RunStatus.FAILED)
        runs = [
            r
            for r in app.runs(flow=args.flow, status=status, limit=args.limit)
            if since is None or r.created_at >= since
        ]
        failed = 0
        for info in runs:
            try:
                _retry_one(app, info.id, args)
            except FlowkitError as exc:
                failed += 1
                print(f"run {info.id}: not retried: {exc}", file=sys.stderr)
        done = "would retry" if args.dry_run else "retried"
        print(f"{done} {len(runs) - failed} of {len(runs)} {status.value} run(s)")
        return exits.OK if not failed else exits.UNEXPECTED
    finally:
        app.close()


def scheduler(args: argparse.Namespace) -> int:
    from ..scheduling import Scheduler

    target = load(args.target)
    app = target.app
    app.configure(broker_url=args.broker_url, database_url=args.database_url, embedded_worker=False)
    sched = Scheduler(app, catch_up=args.catch_up, sweep_every=args.sweep_every)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    os_signal.signal(os_signal.SIGTERM, on_signal)
    os_signal.signal(os_signal.SIGINT, on_signal)
    app.store  # noqa: B018 - create or check the schema now
    flows = ", ".join(f"{f.name} ({f.schedule})" for f in sched.flows) or "none"
    log.info("flowkit scheduler pid=%d schedules: %s; %s", os.getpid(), flows, app.describe())
    try:
        sched.run(stop)
    finally:
        app.close()
    log.info("flowkit scheduler stopped")
    return exits.OK
