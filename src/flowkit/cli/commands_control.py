"""``flowkit signal``, ``cancel``, ``retry`` and ``scheduler``: durable control."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal as os_signal
import sys
import threading
from typing import Any

from ..app import App
from ..errors import InputValidationError
from ..status import RunStatus
from . import exits, log_format
from .apps import add_app_arguments, cli_app, load_target
from .commands_runs import print_validation_errors, read_data
from .retry_runs import retry_runs

log = logging.getLogger("flowkit.cli")

_APP_HELP = "the App (MODULE:ATTR) whose flows the run belongs to"
# The statuses `flowkit retry --status` accepts, in the order --help lists them.
_RETRY_STATUSES = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT, RunStatus.SUCCEEDED)


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    s = sub.add_parser(
        "signal",
        parents=[common],
        formatter_class=fmt,
        help="send a signal (e.g. an approval) to a run",
        description="Deliver signal NAME with --data to RUN_ID. A step waiting for it runs "
        "with the data; a signal sent before the step waits is kept until it does. Without "
        "--data the signal is refused (exit 4, nothing sent) unless the step's payload type "
        "lists None. A signal for a finished run, a second one of the same name, or one "
        "after its wait timed out is refused (exit 9).",
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
        metavar="JSON|@FILE|-",
        help="the signal's payload; required unless the step's payload type lists None "
        "(Note | None), then it defaults to null",
    )
    add_app_arguments(s, _APP_HELP, positional=False)
    s.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"run_id", "name", "accepted": true, "delivered"} '
        "(delivered: a waiting step was released now; false: kept until the step waits)",
    )
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
    add_app_arguments(
        c, "the App (MODULE:ATTR), optional, whose observers see the run end", positional=False
    )
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
            "  flowkit retry --status failed --flow exceptions --since 1h --app myapp.flows:app\n"
            "  flowkit retry --stranded --flow expenses --from approve --app myapp.flows:app"
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
    r.add_argument(
        "--stranded",
        action="store_true",
        help="bulk: the runs a deploy stranded (flowkit runs list --stranded), onto the "
        "deployed definition; needs --from",
    )
    r.add_argument("--flow", "-f", help="bulk: only runs of this flow")
    r.add_argument("--since", metavar="DURATION", help="bulk: only runs created this recently")
    r.add_argument("--limit", type=int, default=1000, help="bulk: at most this many runs")
    r.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"dry_run", "runs": [{"run_id", "requeued"} or the '
        'dry run\'s plan], "not_retried": [{"run_id", "error"}]}',
    )
    add_app_arguments(r, _APP_HELP, positional=False)
    r.set_defaults(handler=retry)

    sch = sub.add_parser(
        "scheduler",
        parents=[common],
        formatter_class=fmt,
        help="start scheduled runs (cron) and sweep for stuck work",
        description="Start a run of every flow with schedule= at each cron tick (UTC), once "
        "per tick even with several schedulers running, and run the recovery sweep every 30s. "
        "Ticks missed while no scheduler ran are skipped and logged (--catch-up latest starts "
        "the most recent one). While RabbitMQ is down it keeps running: one warning, quiet "
        "retries ($FLOWKIT_BROKER_RETRY_SECONDS, default 1, doubling to 30 s), one line when "
        "it is back.",
        epilog="examples:\n  flowkit scheduler examples/approvals/app.py:app",
    )
    add_app_arguments(sch, "the App, Pipeline or Workflow whose schedules to start")
    sch.add_argument("--catch-up", choices=["skip", "latest"], default="skip")
    sch.add_argument(
        "--sweep-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between recovery sweeps (0: never)",
    )
    log_format.add_option(sch)
    sch.set_defaults(handler=scheduler)


def _app(args: argparse.Namespace, *, need_flows: bool) -> App:
    # Signals, cancels and retries change stored runs: they never create a schema.
    return cli_app(args, "flowkit-cli", need_flows=need_flows)


def send_signal(args: argparse.Namespace) -> int:
    data = None if args.data is None else read_data(args.data)
    app = _app(args, need_flows=True)
    try:
        released = app.signal(args.run_id, args.name, data)
    except InputValidationError as exc:
        if args.data is None:  # the one thing wrong is the missing payload: say so, once
            print(f"flowkit: error: {exc}; pass it with --data JSON", file=sys.stderr)
        else:
            print_validation_errors(args.name, exc)
        return exits.INVALID_INPUT
    finally:
        app.close()
    if args.json:
        doc = {"run_id": args.run_id, "name": args.name, "accepted": True, "delivered": released}
        print(json.dumps(doc))
    elif released:
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


def retry(args: argparse.Namespace) -> int:
    app = _app(args, need_flows=True)
    try:
        return retry_runs(app, args)
    finally:
        app.close()


def scheduler(args: argparse.Namespace) -> int:
    from ..scheduling import Scheduler

    target = load_target(args)
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
