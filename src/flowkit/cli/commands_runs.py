"""``flowkit submit``, ``flowkit runs list|show`` and ``flowkit recover``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._types import parse_duration_ms
from ..app import App, Run
from ..config import Settings
from ..errors import ConfigurationError, InputValidationError, PayloadTooLarge, RunNotFound
from ..payloads import PayloadLimits
from ..records import RunInfo
from ..runtime.validation import check_input
from ..status import RunStatus
from . import exits
from .apps import add_app_arguments, load_optional, load_target
from .commands_deploys import list_stranded
from .shown import knows, run_dict, shown_input, shown_output, step_dict, unreached_steps
from .submit_lines import submit_lines
from .timeline import in_flow_order, print_family, print_run, print_table, secs_text, time_text
from .waiting import finish

if TYPE_CHECKING:
    from ..store import RunFilter

_APP_HELP = (
    "the App (MODULE:ATTR) whose models say which output fields are secret; without one, "
    "fields named like password, token or api_key are masked"
)


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    s = sub.add_parser(
        "submit",
        parents=[common],
        formatter_class=fmt,
        help="start a run of a flow and print its id",
        description="Validate --data against the flow's first stage, store the run, publish "
        "its first step and print the run id. Invalid data prints the validation errors and "
        "enqueues nothing.",
        epilog=(
            "examples:\n"
            "  flowkit submit examples/exceptions/app.py:pipeline --data @exception.json\n"
            '  flowkit submit myapp:pipeline --data \'{"tenant_id": "t1"}\' --key t1:42\n'
            "  flowkit submit myapp:app --flow exceptions --data - < input.json --wait"
        ),
    )
    add_app_arguments(s, "the App, Pipeline or Workflow to start a run of")
    given = s.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--data",
        "-d",
        metavar="JSON|@FILE|-",
        help="the input: inline JSON, @path to a JSON file, or - for stdin",
    )
    given.add_argument(
        "--jsonl",
        metavar="FILE|-",
        help="one run per line of a JSON Lines file (- for stdin); every line is validated "
        "before the first run is stored, and progress is shown on stderr",
    )
    s.add_argument(
        "--key",
        "-k",
        help="idempotency key: a second submit returns the same run "
        "(with --jsonl, line N gets the key KEY:N)",
    )
    s.add_argument("--flow", "-f", help="which flow, when MODULE:ATTR is an App with several")
    s.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run and print its result (runs it in this process "
        "with the memory broker)",
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up after this long",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per run (run_id, flow, key, duplicate; with --wait "
        "also status, output and error) instead of the run id",
    )
    s.set_defaults(handler=submit)

    runs = sub.add_parser(
        "runs",
        formatter_class=fmt,
        help="list and inspect runs",
        description="List and inspect runs stored in the database.",
    )
    rsub = runs.add_subparsers(dest="runs_command", metavar="COMMAND")
    rsub.required = True
    ls = rsub.add_parser(
        "list",
        parents=[common],
        formatter_class=fmt,
        help="list the newest runs",
        epilog="examples:\n  flowkit runs list --status failed --limit 20\n"
        "  flowkit runs list --flow exceptions --json\n"
        "  flowkit runs list --key tenant-1: --since 2h --error-type TimeoutError\n"
        "  flowkit runs list --stopped --stop-reason rejected\n"
        "  flowkit runs list --stranded --json",
    )
    ls.add_argument("--flow", "-f", help="only runs of this flow")
    ls.add_argument(
        "--status", "-s", choices=[s.value for s in RunStatus], help="only runs in this status"
    )
    ls.add_argument("--key", metavar="PREFIX", help="only runs whose key starts with PREFIX")
    ls.add_argument(
        "--since",
        metavar="DURATION|ISO",
        help="only runs created this recently (2h, 1d) or at or after this time "
        "(2026-03-01T12:00; without an offset, local time)",
    )
    ls.add_argument("--until", metavar="ISO", help="only runs created before this time")
    ls.add_argument("--error-type", metavar="TYPE", help="only runs that ended with this error")
    ls.add_argument(
        "--stopped", action="store_true", help="only runs a step ended early with flowkit.Stop"
    )
    ls.add_argument("--stop-reason", metavar="TEXT", help="only runs stopped with this reason")
    ls.add_argument("--parent", metavar="RUN", help="only the child runs of run RUN")
    ls.add_argument(
        "--stranded",
        action="store_true",
        help="only the live runs a deploy stranded, oldest first, with the reason "
        '(with --json: {"id", "flow", "status", "stranded", "fingerprint", "created_at"})',
    )
    ls.add_argument("--limit", "-n", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    add_app_arguments(ls, _APP_HELP, positional=False)
    ls.set_defaults(handler=runs_list)
    show = rsub.add_parser(
        "show",
        parents=[common],
        formatter_class=fmt,
        help="show a run and its step timeline",
        epilog="examples:\n  flowkit runs show 01a2030990c3...\n  flowkit runs show ID --json",
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument(
        "--items",
        action="store_true",
        help="list every fanned-out item instead of one line per step",
    )
    add_app_arguments(show, _APP_HELP, positional=False)
    show.set_defaults(handler=runs_show)

    rec = sub.add_parser(
        "recover",
        parents=[common],
        formatter_class=fmt,
        help="re-publish steps whose message was lost",
        description="Run one pass of the recovery sweep every worker runs every few seconds: "
        "resume the running steps of workers whose heartbeat stopped, and re-publish queued "
        "steps whose message is gone by the evidence of a free worker on their queue (never "
        "a healthy backlog). With --force, re-publish every queued step older than "
        "--older-than whatever the evidence (after purging a queue, or with no worker "
        "running). Copies are harmless: a step is claimed by one message only.",
        epilog="examples:\n  flowkit recover\n  flowkit recover --force --older-than 5m\n"
        "  flowkit recover --broker-url amqp://guest:guest@127.0.0.1/",
    )
    rec.add_argument(
        "--force",
        action="store_true",
        help="re-publish every queued step older than --older-than, and running steps past "
        "their lease, whatever the evidence",
    )
    rec.add_argument(
        "--older-than",
        default="60s",
        metavar="DURATION",
        help="with --force: only steps queued at least this long (default 60s)",
    )
    rec.set_defaults(handler=recover)


def read_data(raw: str) -> Any:
    if raw == "-":
        text = sys.stdin.read()
        origin = "stdin"
    elif raw.startswith("@"):
        path = Path(raw[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"--data {raw}: cannot read {path}: {exc.strerror}") from None
        origin = str(path)
    else:
        text, origin = raw, "--data"
    try:
        return json.loads(text)
    except RecursionError:
        raise PayloadTooLarge(
            f"{origin} is nested too deeply to parse (FLOWKIT_MAX_PAYLOAD_DEPTH); "
            "nothing was enqueued",
            limit="depth",
        ) from None
    except json.JSONDecodeError as exc:
        raise InputValidationError(
            f"{origin} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            errors=[{"loc": [], "msg": exc.msg, "type": "json_invalid"}],
            stage="",
        ) from None


def quiet_step_logs(args: argparse.Namespace) -> None:
    """With --wait the steps run in this process: their failures are reported as the
    command's one-line error (and by `flowkit runs show`), not as logs."""
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
        for name in ("flowkit.engine", "dramatiq"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def submit(args: argparse.Namespace) -> int:
    quiet_step_logs(args)
    data = None if args.jsonl else read_data(args.data)
    target = load_target(args)
    app = target.app
    flow = target.flow
    if flow is None:
        if args.flow:
            flow = app.flow(args.flow)
        elif len(app.flows) == 1:
            flow = app.flows[0]
        else:
            names = ", ".join(f.name for f in app.flows)
            raise ConfigurationError(
                f"{target.spec} has several flows; pick one with --flow ({names})"
            )
    # Only --wait, which runs the steps in this process, creates a missing schema.
    wait = bool(args.wait)
    app.configure(
        broker_url=args.broker_url,
        database_url=args.database_url,
        embedded_worker=wait,
        create_schema=wait,
    )
    if args.jsonl:
        return submit_lines(app, flow, args)
    try:
        check_input(flow.compile(), data, PayloadLimits.of(app.settings))  # before any store
        run = app.submit(flow, data, key=args.key)
    except InputValidationError as exc:
        print_validation_errors(flow.name, exc)
        return exits.INVALID_INPUT
    if not args.json:
        print(run.id, flush=True)
    note_started(app, [run], args.key, wait=wait)
    return finish(app, [(run, args.key)], args)


def note_started(app: App, runs: list[Run], key: str | None, *, wait: bool) -> None:
    """On stderr: which runs a key already named (no new run), and, with the memory
    broker and no ``--wait``, that the runs still to run need `flowkit dev`.

    A duplicate's queued entry steps may be published again (see ``App.submit``), so
    the note says no new run was started, not that nothing was enqueued; and it
    promises `flowkit dev` only for a run that has not started yet.
    """
    pending = [r for r in runs if r.created]
    for run in runs:
        if run.created:
            continue
        status = run.status()
        print(
            f"flowkit: key {key!r} already names run {run.id} of flow {run.flow!r} "
            f"({status.value}); no new run was started",
            file=sys.stderr,
        )
        if status is RunStatus.PENDING:
            pending.append(run)
    if wait or not pending or not app.settings.embedded:
        return
    which = "the run is" if len(pending) == 1 else "the runs are"
    flows = "this flow" if len({r.flow for r in pending}) == 1 else "these flows"
    print(
        f"flowkit: the broker is memory:// (in-process): {which} stored and will run "
        f"when `flowkit dev` serves {flows}",
        file=sys.stderr,
    )


def print_validation_errors(what: str, exc: InputValidationError) -> None:
    if isinstance(exc, PayloadTooLarge):
        print(f"flowkit: error: {exc}", file=sys.stderr)
        return
    print(f"flowkit: invalid input for {what!r} (nothing was enqueued):", file=sys.stderr)
    for err in exc.errors:
        loc = ".".join(str(p) for p in err.get("loc", [])) or "(root)"
        print(f"  {loc}: {err.get('msg')}", file=sys.stderr)


def _store(args: argparse.Namespace) -> Any:
    from ..store import Store

    settings = Settings.resolve(None, args.database_url)
    return Store.open(  # creates nothing
        settings.database_url, pool_size=1, create=False, pooler=settings.database_pooler
    )


def runs_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    from ..store.queries import MAX_PAGE  # lazy, as in _store: start-up stays fast

    if args.stranded:
        return list_stranded(args, _store(args))
    filter = _run_filter(args)
    store = _store(args)
    try:
        rows: list[RunInfo] = []
        cursor = None
        while len(rows) < args.limit:
            page = store.queries.page(
                filter, limit=min(args.limit - len(rows), MAX_PAGE), cursor=cursor
            )
            rows += page.runs
            cursor = page.next_cursor
            if cursor is None:
                break
    finally:
        store.dispose()
    if args.json:
        app = _flows_app(args)
        for r in rows:
            print(json.dumps(run_dict(r, app)))
        return exits.OK
    if not rows:
        print("no runs")
        return exits.OK
    table = [["RUN", "FLOW", "STATUS", "KEY", "CREATED", "DURATION"]]
    table += [
        [r.id, r.flow, r.status.value, r.key or "-", time_text(r.created_at), secs_text(r.duration)]
        for r in rows
    ]
    print_table(table)
    return exits.OK


def _run_filter(args: argparse.Namespace) -> RunFilter:
    """The filter of ``runs list``; a bad value is a usage error (exit 2)."""
    from ..store import RunFilter  # lazy, as in _store: start-up stays fast

    until = _iso_time(args.until, "--until") if args.until else None
    since = None
    if args.since:
        try:
            ms = parse_duration_ms(args.since, what="--since") or 0
            since = datetime.now(timezone.utc) - timedelta(milliseconds=ms)
        except ConfigurationError:
            since = _iso_time(args.since, "--since", duration=True)
    if since is not None and until is not None and since >= until:
        raise ConfigurationError(f"--since {args.since} is not before --until {args.until}")
    return RunFilter(
        flow=args.flow,
        status=args.status,
        key_prefix=args.key,
        since=since,
        until=until,
        error_type=args.error_type,
        stopped=True if args.stopped or args.stop_reason is not None else None,
        stop_reason=args.stop_reason,
        parent=args.parent,
    )


def _iso_time(value: str, what: str, *, duration: bool = False) -> datetime:
    """An ISO 8601 time; without an offset, local time (as the tables print times)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        expected = "a duration like '2h' or '1d', or " if duration else ""
        raise ConfigurationError(
            f"{what}: expected {expected}an ISO time like '2026-03-01T12:00', got {value!r}"
        ) from None
    return at if at.tzinfo is not None else at.astimezone()


def runs_show(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        run = store.get_run(args.run_id)
        if run is None:
            raise RunNotFound(f"no run {args.run_id!r}")
        steps = store.get_steps(args.run_id)
        family = store.calls.parent(args.run_id), store.calls.children(args.run_id)
    finally:
        store.dispose()
    app = _flows_app(args)
    graph = app.flow(run.flow).compile() if app and knows(app, run.flow) else None
    if graph is not None:
        steps = in_flow_order(steps, graph.order())
    if args.json:
        doc = {**run_dict(run, app), "steps": [step_dict(s) for s in steps]}
        doc.update(parent=family[0], children=family[1])
        print(json.dumps(doc, indent=2))
        return exits.OK
    if graph is not None and graph.kind == "workflow" and run.status.terminal:
        # A pipeline stores its unreached stages as skipped rows; a workflow creates
        # rows as it goes, so the steps it never reached have none: show them too.
        steps = in_flow_order(steps + unreached_steps(run, steps, graph), graph.order())
    print_run(run, steps, items=args.items, shown=(shown_input(run, app), shown_output(run, app)))
    print_family(*family)
    return exits.OK


def recover(args: argparse.Namespace) -> int:
    ms = parse_duration_ms(args.older_than, what="--older-than")
    app = App(
        "flowkit-recover",
        broker_url=args.broker_url,
        database_url=args.database_url,
        embedded_worker=False,
    )
    app.configure(create_schema=False)
    if app.settings.embedded:
        raise ConfigurationError(
            "the broker is memory:// (in-process), which no other process can reach: "
            "`flowkit dev` recovers its runs when it starts"
        )
    try:
        count = app.recover(older_than=(ms or 0) / 1000, force=args.force)
    finally:
        app.close()
    print(f"re-published {count} step(s)")
    return exits.OK


def _flows_app(args: argparse.Namespace) -> App | None:
    target = load_optional(args)
    return target.app if target is not None else None
