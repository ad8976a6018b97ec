"""The 6-stage pipeline run by each peer: raw Dramatiq, Celery, DBOS and flowkit.

Each ``run_*`` starts its workers in ``env``, warms them up with one item, submits
``items`` one by one from this thread (or, ``sequential``, each after the last one
finished), and returns :func:`~bench.harness.figures`: throughput from the first
submit to the last item finished, latency from an item's submit to its end. A peer
whose package is missing returns ``{"skipped": "not installed"}`` instead.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import psycopg

from .harness import (
    PY,
    Env,
    check_alive,
    declare_done,
    done_reports,
    figures,
    fk_app,
    fk_finished,
    fk_workers,
    raw_app,
    raw_workers,
    start,
    stop,
    upgrade_db,
    wait_for,
    worker_flags,
)

Runner = Callable[[Env, int, int, bool], dict[str, Any]]
NOT_INSTALLED = {"skipped": "not installed"}


def _report_figures(
    items: int, t0: float, reports: list[tuple[float, float]], submitted: float
) -> dict[str, Any]:
    """The figures, plus ``submit_seconds``: how long the submit loop took, which bounds the
    throughput when it is close to ``seconds`` (the submitter, not the workers, was slow)."""
    wall = max(f for _, f in reports) - t0
    out = figures(items, wall, sorted(f - s for s, f in reports))
    return {**out, "submit_seconds": round(submitted - t0, 3)}


def _through_reports(
    env: Env, items: int, sequential: bool, send: Callable[[int], None]
) -> dict[str, Any]:
    """Warm up, send ``items`` with ``send``, and time them by their bench.done reports."""
    send(-1)
    done_reports(env, 1, 60)
    t0 = time.time()
    reports: list[tuple[float, float]] = []
    if sequential:
        for i in range(items):
            send(i)
            reports += done_reports(env, 1, 30)
        submitted = time.time()
    else:
        for i in range(items):
            send(i)
        submitted = time.time()
        reports = done_reports(env, items, 300)
    return _report_figures(items, t0, reports, submitted)


def run_raw(
    env: Env, items: int, processes: int, sequential: bool = False, confirm: bool = False
) -> dict[str, Any]:
    """Raw Dramatiq's ``pipeline`` of six actors, publisher confirms off (or on)."""
    procs = raw_workers(env, processes, confirm=confirm)
    try:
        app = raw_app(env, confirm=confirm)
        out = _through_reports(env, items, sequential, lambda i: app.pipeline_for(i).run())
        return {**out, "confirms": confirm}
    finally:
        stop(procs)


def run_raw_confirm(
    env: Env, items: int, processes: int, sequential: bool = False
) -> dict[str, Any]:
    return run_raw(env, items, processes, sequential, confirm=True)


def run_celery(env: Env, items: int, processes: int, sequential: bool = False) -> dict[str, Any]:
    """A Celery chain of six: ``processes`` x ``celery worker --pool threads --concurrency 8``."""
    if importlib.util.find_spec("celery") is None:
        return dict(NOT_INSTALLED)
    from . import celery_app

    declare_done(env)
    argv = [PY, "-m", "celery", "-A", "bench.celery_app", "worker", "--pool", "threads"]
    argv += ["--concurrency", "8", "-Q", ",".join(celery_app.QUEUES), "--loglevel", "WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    procs = [start(env, [*argv, "-n", f"w{k}@%h"], f"celery-{k}") for k in range(processes)]
    client = celery_app.make_app(env.amqp)
    try:
        return _through_reports(
            env, items, sequential, lambda i: celery_app.pipeline_for(client, i)
        )
    finally:
        client.close()
        stop(procs)


def _dbos_ready(env: Env, procs: list[Any], n: int) -> None:
    """Wait until ``n`` DBOS workers printed ``ready`` (launched, queue registered)."""
    from .harness import LOG_DIR

    def ready() -> bool:
        check_alive(procs, "DBOS worker")
        text = ""
        for k in range(n):
            path = LOG_DIR / f"{env.tag}-dbos-{k}.log"
            text += path.read_text(errors="replace") if path.exists() else ""
        return text.count("bench-dbos ready") >= n

    wait_for(ready, 120, "DBOS worker start", every=0.1)


def run_dbos(env: Env, items: int, processes: int, sequential: bool = False) -> dict[str, Any]:
    """DBOS: a 6-step workflow enqueued one by one with a DBOSClient, timed by its rows."""
    if importlib.util.find_spec("dbos") is None:
        return dict(NOT_INSTALLED)
    from dbos import DBOSClient

    from . import dbos_app

    # One at a time: the first one creates DBOS's schema, which two at once would race for.
    procs = [start(env, [PY, "-m", "bench.dbos_app"], "dbos-0")]
    _dbos_ready(env, procs, 1)
    procs += [start(env, [PY, "-m", "bench.dbos_app"], f"dbos-{k}") for k in range(1, processes)]
    _dbos_ready(env, procs, processes)
    client = DBOSClient(system_database_url=env.pg, application_name=dbos_app.NAME)
    options: Any = {"workflow_name": dbos_app.WORKFLOW, "queue_name": dbos_app.QUEUE}
    try:
        with psycopg.connect(env.pg, autocommit=True) as c:

            def succeeded(ids: list[str], every: float, timeout: float) -> None:
                def done() -> bool:
                    row = c.execute(
                        "SELECT count(*) FROM dbos.workflow_status "
                        "WHERE status = 'SUCCESS' AND workflow_uuid = ANY(%s)",
                        (ids,),
                    ).fetchone()
                    return row is not None and int(row[0]) >= len(ids)

                wait_for(done, timeout, f"{len(ids)} DBOS workflows", every=every)

            succeeded([client.enqueue(options, -1).get_workflow_id()], 0.01, 60)  # warm-up
            t0 = time.time()
            ids: list[str] = []
            for i in range(items):
                ids.append(client.enqueue(options, i).get_workflow_id())
                if sequential:
                    succeeded(ids[-1:], 0.002, 30)
            submitted = time.time()
            succeeded(ids, 0.2, 600)
            rows = c.execute(
                "SELECT created_at, updated_at FROM dbos.workflow_status "
                "WHERE workflow_uuid = ANY(%s)",
                (ids,),
            ).fetchall()
    finally:
        client.destroy()
        stop(procs)
    reports = [(int(s) / 1000, int(f) / 1000) for s, f in rows]
    return _report_figures(items, t0, reports, submitted)


def run_flowkit(
    env: Env,
    items: int,
    processes: int,
    sequential: bool = False,
    extra: tuple[str, ...] = (),
    stage_threads: int | None = None,
) -> dict[str, Any]:
    """flowkit's ``Pipeline`` of six: one worker for every stage (chained, by default), or,
    with ``stage_threads``, one ``--stages sN`` worker per stage with that many threads.

    A worker flag this flowkit does not know (``--no-chain`` before chaining lands) is
    dropped, and the figures say so in ``note``.
    """
    note = None
    unknown = [f for f in extra if f.startswith("--") and f not in worker_flags()]
    if unknown:
        extra = tuple(f for f in extra if f not in unknown)
        note = f"{' '.join(unknown)} unknown to `flowkit worker`: ran without it"
    if stage_threads is None:
        procs = fk_workers(env, processes, extra=list(extra))
    else:
        upgrade_db(env)  # six workers would otherwise race to create the tables
        procs = []
        for i in range(6):
            argv = ["--stages", f"s{i}", *extra]
            procs += fk_workers(env, 1, stage_threads, argv, name=f"fk-stage{i}")
    fk = fk_app(env)
    try:
        fk.pipeline.submit(-1).wait(timeout=60)  # warm-up: every stage's worker is up
        check_alive(procs, "flowkit worker")
        t0 = time.time()
        if sequential:
            runs = []
            for i in range(items):
                run = fk.pipeline.submit(i)
                run.wait(timeout=30)
                runs.append(run.id)
        else:
            runs = [fk.pipeline.submit(i).id for i in range(items)]
        submitted = time.time()
        out = _report_figures(items, t0, fk_finished(env.pg, runs, 300), submitted)
    finally:
        fk.app.close()
        stop(procs)
    return out if note is None else {**out, "note": note}


def run_flowkit_nochain(
    env: Env, items: int, processes: int, sequential: bool = False
) -> dict[str, Any]:
    return run_flowkit(env, items, processes, sequential, extra=("--no-chain",))


#: The pipeline's peers, in the order a pair runs them: key -> (row label, runner).
PEERS: dict[str, tuple[str, Runner]] = {
    "raw": ("raw Dramatiq, confirms off (the baseline)", run_raw),
    "raw_confirm": ("raw Dramatiq, confirms on", run_raw_confirm),
    "celery": ("Celery chain (threads pool, no result backend)", run_celery),
    "dbos": ("DBOS 6-step workflow (queue polled every 50 ms)", run_dbos),
    "flowkit": ("flowkit, chained (the default worker)", run_flowkit),
    "flowkit_nochain": (
        "flowkit, `--no-chain` (every step through the broker)",
        run_flowkit_nochain,
    ),
}
#: What ``--peers`` runs unless told otherwise (flowkit_nochain is there on request).
DEFAULT_PEERS = ["raw", "raw_confirm", "celery", "dbos", "flowkit"]
