"""``flowkit emit`` and ``flowkit graph``: events and pictures of flows."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, InputValidationError
from ..payloads import PayloadLimits
from ..runtime.validation import check_input
from . import exits
from .apps import add_app_arguments, load_target
from .commands_runs import (
    note_started,
    print_validation_errors,
    quiet_step_logs,
    read_data,
)
from .waiting import finish


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    e = sub.add_parser(
        "emit",
        parents=[common],
        formatter_class=fmt,
        help="emit an event: start every workflow subscribed to it",
        description="Start every flow of MODULE:ATTR subscribed to NAME (Workflow(on=NAME)) "
        "with --data. The data is validated for every subscriber first; if any rejects it, "
        "nothing starts. Prints one line per run: FLOW RUN_ID.",
        epilog=(
            "examples:\n"
            "  flowkit emit examples/lending/app.py:app loan:application:uploaded "
            "--data '{\"application_id\": 1}'\n"
            "  flowkit emit myapp:app lender:document:uploaded --data @event.json --key doc-7"
        ),
    )
    add_app_arguments(e, "the App (or one of its flows) whose subscribed workflows start")
    e.add_argument("event", metavar="NAME", help="the event's name")
    e.add_argument(
        "--data",
        "-d",
        required=True,
        metavar="JSON|@FILE|-",
        help="the payload: inline JSON, @path to a JSON file, or - for stdin",
    )
    e.add_argument("--key", "-k", help="idempotency key, applied per flow")
    e.add_argument("--wait", action="store_true", help="wait for the runs and print results")
    e.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up after this long",
    )
    e.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object, {"event": NAME, "runs": [...]}, with one entry per run '
        "started (as flowkit submit --json prints them) instead of FLOW RUN_ID lines",
    )
    e.set_defaults(handler=emit)

    g = sub.add_parser(
        "graph",
        formatter_class=fmt,
        help="draw a flow as a Mermaid (or DOT) diagram",
        description="Print the steps and edges of MODULE:ATTR as a Mermaid flowchart (paste it "
        "into any Mermaid viewer) or Graphviz DOT; with --output FILE.svg or .png, render it "
        "with Graphviz `dot` or mermaid-cli `mmdc` when one is installed.",
        epilog=(
            "examples:\n"
            "  flowkit graph examples/lending/app.py:loan_matching\n"
            "  flowkit graph examples/lending/app.py:app --format dot\n"
            "  flowkit graph examples/lending/app.py:app --output lending.svg"
        ),
    )
    add_app_arguments(g, "the App, Pipeline or Workflow to draw")
    g.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    g.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write to FILE; .svg/.png are rendered, anything else gets the text",
    )
    g.set_defaults(handler=graph)

    q = sub.add_parser(
        "queues",
        formatter_class=fmt,
        help="list the queues of a flow or App and what runs on them",
        description="Each queue of MODULE:ATTR with its steps and limits, to plan one "
        "`flowkit worker --queues Q` per queue.",
        epilog="examples:\n  flowkit queues examples/multiqueue/app.py:app\n"
        "  flowkit queues myapp:app --json",
    )
    add_app_arguments(q, "the App, Pipeline or Workflow whose queues to list")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=queues)


def emit(args: argparse.Namespace) -> int:
    quiet_step_logs(args)
    data = read_data(args.data)
    target = load_target(args)
    app = target.app
    # Only --wait, which runs the steps in this process, creates a missing schema.
    wait = bool(args.wait)
    app.configure(
        broker_url=args.broker_url,
        database_url=args.database_url,
        embedded_worker=wait,
        create_schema=wait,
    )
    try:
        limits = PayloadLimits.of(app.settings)
        for flow in app.flows:  # every subscriber accepts the data before any store opens
            if args.event in flow.events:
                check_input(flow.compile(), data, limits)
        runs = app.emit(args.event, data, key=args.key)
    except InputValidationError as exc:
        print_validation_errors(args.event, exc)
        return exits.INVALID_INPUT
    if not args.json:
        for run in runs:
            print(f"{run.flow} {run.id}", flush=True)
    note_started(app, runs, args.key, wait=wait)
    return finish(app, [(run, args.key) for run in runs], args, event=args.event)


def graph(args: argparse.Namespace) -> int:
    from ..drawing import dot, mermaid

    target = load_target(args)
    flows = target.flows
    out = Path(args.output) if args.output else None
    render = out is not None and out.suffix.lower() in {".svg", ".png"}
    text = (dot if args.format == "dot" or (render and not shutil.which("mmdc")) else mermaid)(
        flows
    )
    if out is None:
        sys.stdout.write(text)
        return exits.OK
    if not render:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
        return exits.OK
    fmt = out.suffix.lower()[1:]
    if shutil.which("mmdc") and args.format == "mermaid":
        src = out.with_suffix(".mmd")
        src.write_text(text, encoding="utf-8")
        cmd = ["mmdc", "-i", str(src), "-o", str(out)]
    elif shutil.which("dot"):
        cmd = ["dot", f"-T{fmt}", "-o", str(out)]
    else:
        raise ConfigurationError(
            f"rendering {out.name} needs Graphviz (`apt-get install graphviz`) or mermaid-cli "
            "(`mmdc`); without them, omit --output to print the Mermaid text"
        )
    done = subprocess.run(
        cmd, input=text if cmd[0] == "dot" else None, text=True, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise ConfigurationError(f"{cmd[0]} failed: {done.stderr.strip()[:300]}")
    print(f"wrote {out}")
    return exits.OK


def queues(args: argparse.Namespace) -> int:
    import json

    from .timeline import print_table

    target = load_target(args)
    rows: dict[str, dict[str, Any]] = {}
    for flow in target.flows:
        for stage in flow.steps.values():
            row = rows.setdefault(stage.queue, {"queue": stage.queue, "steps": [], "limits": []})
            row["steps"].append(f"{flow.name}.{stage.name}")
            lim = stage.limits
            if lim.queue_concurrency:
                row["limits"].append(f"concurrency {lim.queue_concurrency}")
            if lim.queue_rate:
                row["limits"].append(f"rate {lim.queue_rate}")
            if lim.concurrency:
                per = " per key" if lim.concurrency_key else ""
                row["limits"].append(f"{stage.name}: concurrency {lim.concurrency}{per}")
            if lim.rate:
                per = " per key" if lim.rate_key else ""
                row["limits"].append(f"{stage.name}: rate {lim.rate}{per}")
    for row in rows.values():
        row["limits"] = sorted(set(row["limits"]))
    if args.json:
        print(json.dumps(sorted(rows.values(), key=lambda r: r["queue"]), indent=2))
        return exits.OK
    table = [["QUEUE", "STEPS", "LIMITS"]]
    for name in sorted(rows):
        r = rows[name]
        table.append([name, ", ".join(r["steps"]), "; ".join(r["limits"]) or "-"])
    print_table(table)
    return exits.OK
