"""``flowkit worker`` and ``flowkit dev``: serve a flow's queues with Dramatiq workers."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, NotFoundError
from ..logs import formatter
from ..redact import protect
from . import exits, log_format
from .apps import add_app_arguments, load_target, project_setting
from .loader import Target
from .reload import CHILD_ENV, run_reloading

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("flowkit.worker")


def register(sub: Any, common: argparse.ArgumentParser, fmt: type) -> None:
    w = sub.add_parser(
        "worker",
        parents=[common],
        formatter_class=fmt,
        help="run Dramatiq worker processes for a flow's stages",
        description="Run worker processes that execute the steps of MODULE:ATTR "
        "(an App, a Pipeline or a Workflow) from a shared broker (RabbitMQ).",
        epilog=(
            "examples:\n"
            "  flowkit worker examples/exceptions/app.py:pipeline\n"
            "  flowkit worker examples/exceptions/app.py:pipeline --stages triage --threads 4\n"
            "  flowkit worker myapp.flows:app --queues ml --processes 2 "
            "--log-file 'logs/worker_{index}.log'"
        ),
    )
    _serve_options(w)
    w.add_argument(
        "--processes",
        "-p",
        type=int,
        default=None,
        metavar="N",
        help="worker processes to run (default: processes in [tool.flowkit], else 1)",
    )
    w.add_argument("--process-index", type=int, default=None, help=argparse.SUPPRESS)
    w.set_defaults(handler=run_worker)

    d = sub.add_parser(
        "dev",
        parents=[common],
        formatter_class=fmt,
        help="run everything in one process (embedded default)",
        description="Run workers for MODULE:ATTR inside this process, on the embedded default "
        "(memory broker + SQLite) or the configured URLs. At start it re-publishes steps left "
        "queued or running by a previous run, so an embedded run stopped with Ctrl+C resumes; "
        "with the memory broker it also picks up runs submitted by other processes "
        "(flowkit submit) within a few seconds.",
        epilog="examples:\n  flowkit dev examples/exceptions/app.py:pipeline --threads 8\n"
        "  flowkit dev examples/approvals/app.py:app --dashboard-port 8080\n"
        "  flowkit dev myapp.flows:app --reload",
    )
    _serve_options(d)
    d.add_argument(
        "--dashboard-port",
        type=int,
        metavar="N",
        help="also serve the dashboard on 127.0.0.1:N in this process, actions without a "
        "token (as flowkit dashboard --no-auth); needs the dashboard extra",
    )
    d.add_argument(
        "--reload",
        action="store_true",
        help="restart when a *.py file under the app's folder changes, as dramatiq --watch "
        "does; needs the reload extra (watchfiles)",
    )
    d.set_defaults(handler=run_dev, processes=1, process_index=None)


def _serve_options(p: argparse.ArgumentParser) -> None:
    add_app_arguments(p, "the App, Pipeline or Workflow to serve")
    p.add_argument("--queues", "-Q", nargs="+", metavar="Q", help="serve only these queues")
    p.add_argument("--stages", "-s", nargs="+", metavar="S", help="serve only these stages' queues")
    p.add_argument(
        "--threads",
        "-t",
        type=int,
        default=None,
        metavar="N",
        help="worker threads per process (default: threads in [tool.flowkit], else 8)",
    )
    p.add_argument(
        "--no-chain",
        action="store_true",
        help="always hop through the broker between steps (by default a step whose "
        "successor is on a queue this worker serves runs it next in the same thread)",
    )
    p.add_argument(
        "--log-file",
        metavar="PATTERN",
        help="also log to this file, in the --log-format of the console; {index} and {pid} "
        "are replaced",
    )
    log_format.add_option(p)
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running steps may take to finish",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port (plus the process index)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="serve /live and /ready on this port (plus the process index)",
    )


def select_queues(target: Target, queues: list[str] | None, stages: list[str] | None) -> set[str]:
    """The queues a worker serves: named ones, the named stages' ones, or all of the target's.

    Raises:
        NotFoundError: an unknown stage or queue (listing the known ones).
    """
    by_stage: dict[str, set[str]] = {}
    for flow in target.flows:
        for stage in flow.steps.values():
            by_stage.setdefault(stage.name, set()).add(stage.queue)
    known_queues = set().union(*by_stage.values()) if by_stage else set()
    selected: set[str] = set()
    if stages:
        for name in stages:
            if name not in by_stage:
                raise NotFoundError(
                    f"no stage {name!r} in {target.spec} (stages: {', '.join(by_stage)})"
                )
            selected |= by_stage[name]
    if queues:
        for q in queues:
            if q not in known_queues:
                raise NotFoundError(
                    f"no stage of {target.spec} uses queue {q!r} "
                    f"(queues: {', '.join(sorted(known_queues))})"
                )
            selected.add(q)
    if not selected:
        selected = known_queues
    if stages:
        others = sorted(n for n, qs in by_stage.items() if n not in stages and qs & selected)
        if others:
            log.warning(
                "stages %s share a queue with %s and will run here too",
                ", ".join(others),
                ", ".join(stages),
            )
    return selected


def _setup_log_file(pattern: str | None, index: int, kind: str) -> None:
    if not pattern:
        return
    path = pattern.replace("{index}", str(index)).replace("{pid}", str(os.getpid()))
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter(kind))  # the console's format: one grep for both
    protect(handler)  # secrets masked in the file too
    logging.getLogger().addHandler(handler)


def _load(args: argparse.Namespace) -> Target:
    target = load_target(args)
    args.threads = project_setting("threads", args.threads, 8)
    if args.threads < 1:
        raise ConfigurationError("--threads must be at least 1")
    target.app.configure(
        broker_url=args.broker_url,
        database_url=args.database_url,
        threads=args.threads,
        embedded_worker=False,
    )
    return target


def run_worker(args: argparse.Namespace) -> int:
    args.processes = project_setting("processes", args.processes, 1)
    if args.processes < 1:
        raise ConfigurationError("--processes must be at least 1")
    target = _load(args)
    if target.app.settings.embedded:
        raise ConfigurationError(
            "flowkit worker needs a broker shared between processes, but the broker is "
            "memory:// (in-process): use `flowkit dev` to run everything in one process, "
            "or set FLOWKIT_BROKER_URL=amqp://..."
        )
    queues = select_queues(target, args.queues, args.stages)
    if args.processes > 1:
        return _supervise(args)
    return _serve(args, target, queues, dev=False)


def run_dev(args: argparse.Namespace) -> int:
    if args.reload and not os.environ.get(CHILD_ENV):
        return run_reloading(args, sys.argv[1:])
    if args.dashboard_port is not None:
        from .commands_dashboard import missing_extra_hint  # the CLI loads commands lazily

        hint = missing_extra_hint()
        if hint is not None:
            print(hint, file=sys.stderr)
            return exits.USAGE
        if not 0 < args.dashboard_port < 65536:
            raise ConfigurationError("--dashboard-port must be in 1..65535")
    target = _load(args)
    queues = select_queues(target, args.queues, args.stages)
    return _serve(args, target, queues, dev=True)


def _serve(args: argparse.Namespace, target: Target, queues: set[str], *, dev: bool) -> int:
    from ..runtime.brokers import check_broker

    index = args.process_index or 0
    _setup_log_file(args.log_file, index, log_format.chosen(args))
    app = target.app
    app.store  # noqa: B018 - creates or upgrades the schema, or fails clearly now
    check_broker(app.broker, app.settings.broker_url)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info(
            "received %s, stopping (running steps may take up to %gs)",
            signal.Signals(signum).name,
            args.shutdown_timeout,
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if dev:
        recovered = app.recover(older_than=0, all_running=app.settings.embedded)
        if recovered:
            log.info("resumed %d step(s) left by a previous run", recovered)
    servers: list[Any] = []
    if args.metrics_port:
        from ..metrics import serve_metrics

        servers.append(serve_metrics(app, args.metrics_port + index))
    if args.health_port:
        from ..health import serve_health

        servers.append(serve_health(app, args.health_port + index))
    app.start_worker(queues=queues, threads=args.threads, chain=not args.no_chain)
    dashboard = _start_dashboard(app, args.dashboard_port) if dev and args.dashboard_port else None
    flows = ",".join(f.name for f in target.flows)
    log.info(
        "flowkit %s pid=%d flows=%s queues=%s threads=%d %s",
        "dev" if dev else "worker",
        os.getpid(),
        flows,
        ",".join(sorted(queues)),
        args.threads,
        app.describe(),
    )
    try:
        while not stop.is_set():
            # Short waits: a signal taken by another thread only sets a flag that
            # the main thread sees when it next wakes. The worker sweeps for lost
            # messages itself, in a thread (runtime/sweep.py).
            stop.wait(1.0)
    finally:
        if dashboard is not None:
            _stop_dashboard(*dashboard)
        for server in servers:
            server.shutdown()
        app.stop_worker(timeout=args.shutdown_timeout)
        app.close()
        log.info("flowkit worker pid=%d stopped", os.getpid())
    return exits.OK


def _start_dashboard(app: App, port: int) -> tuple[Any, threading.Thread]:
    """``dev --dashboard-port``: the dashboard on 127.0.0.1 in a thread of this process.

    It binds 127.0.0.1 only, so actions need no token (as ``dashboard --no-auth``).
    """
    from .commands_dashboard import dashboard_server  # uvicorn only when asked for

    server = dashboard_server(app, "127.0.0.1", port, token=None)
    thread = threading.Thread(target=server.run, name="flowkit-dashboard", daemon=True)
    thread.start()
    return server, thread


def _stop_dashboard(server: Any, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=10)


def _child_argv(args: argparse.Namespace, index: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "flowkit",
        "worker",
        # The app as given; none given: the child finds it as this process did.
        *([args.target or args.app] if args.target or args.app else []),
        "--processes",
        "1",
        "--process-index",
        str(index),
        "--threads",
        str(args.threads),
        "--shutdown-timeout",
        str(args.shutdown_timeout),
    ]
    if args.queues:
        argv += ["--queues", *args.queues]
    if args.stages:
        argv += ["--stages", *args.stages]
    if args.no_chain:
        argv.append("--no-chain")
    if args.log_file:
        argv += ["--log-file", args.log_file]
    if args.log_format:
        argv += ["--log-format", args.log_format]
    if args.broker_url:
        argv += ["--broker-url", args.broker_url]
    if args.database_url:
        argv += ["--database-url", args.database_url]
    if args.verbose:
        argv.append("--verbose")
    for opt in ("metrics_port", "health_port"):
        if getattr(args, opt):
            argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return argv


#: Exit codes of a child that a restart cannot fix.
_FATAL = frozenset({exits.USAGE, exits.LOAD, exits.SCHEMA})
_RESTART_MAX = 30.0


def _supervise(args: argparse.Namespace) -> int:
    """Run ``--processes`` children, restart one that dies, stop them all on a signal."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    for i in range(args.processes):
        children[i] = subprocess.Popen(_child_argv(args, i))
        started[i] = time.monotonic()
    log.info(
        "flowkit worker supervisor pid=%d started %d processes: %s",
        os.getpid(),
        args.processes,
        ", ".join(str(c.pid) for c in children.values()),
    )
    code = exits.OK
    due: dict[int, float] = {}  # when a dead child is started again
    crashes: dict[int, int] = dict.fromkeys(children, 0)
    while not stopping.is_set():
        stopping.wait(0.5)
        for i, child in list(children.items()):
            rc = child.poll()
            if rc is None or stopping.is_set():
                continue
            if rc in _FATAL:
                # A mistake restarting cannot fix (usage, load, schema): stop all.
                log.error("worker process %d exited with %s; stopping", i, rc)
                code = rc
                stopping.set()
                break
            if i not in due:
                # Crashes in a row back off (0.5 s doubling to 30 s), as systemd's
                # Restart= would; a child that lived 30 s resets the count.
                lived = time.monotonic() - started[i]
                crashes[i] = 0 if lived > _RESTART_MAX else crashes[i] + 1
                delay = min(_RESTART_MAX, 0.5 * 2 ** max(0, crashes[i] - 1))
                due[i] = time.monotonic() + delay
                log.warning(
                    "worker process %d (pid %d) exited with %s; restarting in %.1fs",
                    i,
                    child.pid,
                    rc,
                    delay,
                )
            if time.monotonic() >= due[i]:
                del due[i]
                children[i] = subprocess.Popen(_child_argv(args, i))
                started[i] = time.monotonic()
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + args.shutdown_timeout + 10
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return code
