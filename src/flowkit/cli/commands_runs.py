"""``flowkit submit``, ``flowkit runs list|show`` and ``flowkit recover``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .._types import parse_duration_ms
from ..app import App, Run
from ..config import Settings
from ..errors import ConfigurationError, InputValidationError, PayloadTooLarge, RunNotFound
from ..records import RunInfo, StepInfo
from ..redact import mask_secret_fields
from ..status import RunStatus
from . import exits
from .loader import load
from .timeline import print_run, print_table, secs_text, time_text

_APP_HELP = (
    "the App (MODULE:ATTR) whose models say which output fields are secret "
    "(default: $FLOWKIT_APP; without it, fields named like password, token or api_key are masked)"
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
    s.add_argument("target", metavar="MODULE:ATTR", help="an App, Pipeline or Workflow")
    s.add_argument(
        "--data",
        "-d",
        required=True,
        metavar="JSON|@FILE|-",
        help="the input: inline JSON, @path to a JSON file, or - for stdin",
    )
    s.add_argument("--key", "-k", help="idempotency key: a second submit returns the same run")
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
        "  flowkit runs list --flow exceptions --json",
    )
    ls.add_argument("--flow", "-f", help="only runs of this flow")
    ls.add_argument(
        "--status", "-s", choices=[s.value for s in RunStatus], help="only runs in this status"
    )
    ls.add_argument("--limit", "-n", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.add_argument("--app", "-a", metavar="MODULE:ATTR", help=_APP_HELP)
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
    show.add_argument("--app", "-a", metavar="MODULE:ATTR", help=_APP_HELP)
    show.set_defaults(handler=runs_show)

    rec = sub.add_parser(
        "recover",
        parents=[common],
        formatter_class=fmt,
        help="re-publish steps whose message was lost",
        description="Re-publish queued steps older than --older-than whose message may have "
        "been lost (a crash between commit and publish) and running steps past their lease "
        "(their worker died). Copies are harmless: a step is claimed by one message only.",
        epilog="examples:\n  flowkit recover --older-than 60s\n"
        "  flowkit recover --older-than 5m --broker-url amqp://guest:guest@127.0.0.1/",
    )
    rec.add_argument(
        "--older-than",
        default="60s",
        metavar="DURATION",
        help="only steps queued at least this long (default 60s)",
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
    data = read_data(args.data)
    target = load(args.target)
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
                f"{args.target} has several flows; pick one with --flow ({names})"
            )
    app.configure(
        broker_url=args.broker_url, database_url=args.database_url, embedded_worker=bool(args.wait)
    )
    try:
        run = app.submit(flow, data, key=args.key)
    except InputValidationError as exc:
        print_validation_errors(flow.name, exc)
        return exits.INVALID_INPUT
    print(run.id)
    if not run.created:
        print(
            f"flowkit: key {args.key!r} already names run {run.id}; nothing was enqueued",
            file=sys.stderr,
        )
    if args.wait:
        return wait_and_print(app, [run], args.timeout)
    if app.settings.embedded:
        print(
            "flowkit: the broker is memory:// (in-process): the run is stored and will run "
            "when `flowkit dev` serves this flow",
            file=sys.stderr,
        )
    return exits.OK


def print_validation_errors(what: str, exc: InputValidationError) -> None:
    if isinstance(exc, PayloadTooLarge):
        print(f"flowkit: error: {exc}", file=sys.stderr)
        return
    print(f"flowkit: invalid input for {what!r} (nothing was enqueued):", file=sys.stderr)
    for err in exc.errors:
        loc = ".".join(str(p) for p in err.get("loc", [])) or "(root)"
        print(f"  {loc}: {err.get('msg')}", file=sys.stderr)


def wait_and_print(app: App, runs: list[Run], timeout: float | None) -> int:
    """Wait for each run (in this process with the memory broker) and print its result."""
    try:
        results = [run.result(timeout=timeout) for run in runs]
    finally:
        app.close()
    for result in results:
        print(json.dumps(_jsonable(result), indent=2, default=str))
    return exits.OK


def _jsonable(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")


def _store(args: argparse.Namespace) -> Any:
    from ..store import Store

    settings = Settings.resolve(None, args.database_url)
    store = Store(settings.database_url, pool_size=1)
    store.check_schema()
    return store


def runs_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    store = _store(args)
    try:
        rows = store.list_runs(flow=args.flow, status=args.status, limit=args.limit)
    finally:
        store.dispose()
    if args.json:
        app = _flows_app(args)
        for r in rows:
            print(json.dumps(_run_dict(r, app)))
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


def runs_show(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        run = store.get_run(args.run_id)
        if run is None:
            raise RunNotFound(f"no run {args.run_id!r}")
        steps = store.get_steps(args.run_id)
    finally:
        store.dispose()
    if args.json:
        doc = {**_run_dict(run, _flows_app(args)), "steps": [_step_dict(s) for s in steps]}
        print(json.dumps(doc, indent=2))
        return exits.OK
    print_run(run, steps, items=args.items)
    return exits.OK


def recover(args: argparse.Namespace) -> int:
    ms = parse_duration_ms(args.older_than, what="--older-than")
    app = App(
        "flowkit-recover",
        broker_url=args.broker_url,
        database_url=args.database_url,
        embedded_worker=False,
    )
    if app.settings.embedded:
        raise ConfigurationError(
            "the broker is memory:// (in-process), which no other process can reach: "
            "`flowkit dev` recovers its runs when it starts"
        )
    try:
        count = app.recover(older_than=(ms or 0) / 1000)
    finally:
        app.close()
    print(f"re-published {count} step(s)")
    return exits.OK


def _flows_app(args: argparse.Namespace) -> App | None:
    spec = getattr(args, "app", None) or os.environ.get("FLOWKIT_APP")
    return load(spec).app if spec else None


def shown_output(run: RunInfo, app: App | None) -> Any:
    """A run's stored output as the CLI may print it: secret fields masked.

    The database keeps secrets (pydantic ``SecretStr``) in the clear, so the
    next step gets them. With the flow's App, its output model masks exactly
    the fields it declares secret; without it (or for a ``Stop`` output, which
    has no model), fields whose names look secret are masked instead.
    """
    if run.output is None:
        return None
    if app is not None and run.stop_reason is None and run.flow in {f.name for f in app.flows}:
        adapter = TypeAdapter(app.flow(run.flow).output_type)
        try:
            return adapter.dump_python(adapter.validate_python(run.output), mode="json")
        except ValidationError:
            pass  # stored by another version of the flow
    return mask_secret_fields(run.output)


def _run_dict(r: RunInfo, app: App | None = None) -> dict[str, Any]:
    return {
        "id": r.id,
        "flow": r.flow,
        "key": r.key,
        "status": r.status.value,
        "created_at": r.created_at.isoformat(),
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "duration": r.duration,
        "error": _public_error(r.error),
        "output": shown_output(r, app),
    }


def _step_dict(s: StepInfo) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "item": s.item,
        "status": s.status.value,
        "queue": s.queue,
        "attempts": s.attempts,
        "started_at": s.started_at.isoformat() if s.started_at else None,
        "finished_at": s.finished_at.isoformat() if s.finished_at else None,
        "duration": s.duration,
        "error": s.error,
    }


def _public_error(err: dict[str, Any] | None) -> dict[str, Any] | None:
    if not err:
        return None
    return {k: err.get(k) for k in ("type", "message", "step", "attempt")}
