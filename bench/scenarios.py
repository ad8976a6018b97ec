"""The scenarios of issue 15's benchmarks: pipeline, stages, latency, submit, fanout and
concurrency. Each runs every measurement in a fresh database and vhost (:class:`Env`)
and is bounded in time; a peer that fails records its error and the others go on.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from typing import Any

import pika
import psycopg

from .harness import Env, done_reports, fk_app, fk_finished, fk_workers, raw_app, stop
from .peers import PEERS, Runner, run_flowkit, run_raw


def ratios(fig: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float]:
    """``fig``'s throughput and p50 over the baseline's; empty when either has no figures."""
    if base is None or "throughput" not in fig or "throughput" not in base:
        return {}
    return {
        "throughput_ratio": round(fig["throughput"] / base["throughput"], 3),
        "p50_ratio": round(fig["p50_ms"] / base["p50_ms"], 3),
    }


def run_peer(
    name: str, runner: Runner, items: int, processes: int, sequential: bool = False
) -> dict[str, Any]:
    """One peer's run in its own Env; a failure is recorded, so the others still run."""
    t = time.perf_counter()
    with Env() as env:
        try:
            fig = runner(env, items, processes, sequential)
        except Exception as exc:
            fig = {"error": f"{type(exc).__name__}: {exc}"}
    shown = fig.get("throughput", fig.get("skipped", fig.get("error")))
    print(f"#   {name}: {shown} ({time.perf_counter() - t:.0f}s)", flush=True)
    return fig


def _pair(peers: dict[str, tuple[str, Runner]], items: int, processes: int) -> dict[str, Any]:
    pair: dict[str, Any] = {k: run_peer(k, r, items, processes) for k, (_l, r) in peers.items()}
    base = pair.get("raw")
    pair["ratios"] = {k: ratios(pair[k], base) for k in peers if k != "raw"}
    return pair


def chosen_peers(args: argparse.Namespace) -> dict[str, tuple[str, Runner]]:
    """The peers of ``--peers``, in the order a pair runs them."""
    names = args.peers.split(",")
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)} (peers: {', '.join(PEERS)})")
    return {k: v for k, v in PEERS.items() if k in names}


def scenario_pipeline(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Every peer, 1 x 8 threads then 2 x 8, two pairs each (A B A B)."""
    peers = chosen_peers(args)
    for processes in (1, 2):
        results[f"pipeline_{processes}p"] = [_pair(peers, args.items, processes) for _ in range(2)]


def stage_threads(args: argparse.Namespace, processes: int) -> int:
    """Threads per stage worker: at least as many threads over the six as raw has."""
    return int(args.stage_threads or math.ceil(8 * processes / 6))


def scenario_stages(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """flowkit with one ``--stages sN`` worker per stage (no chaining possible) against raw
    Dramatiq with confirms off, 1 x 8 and 2 x 8, two pairs each."""
    for processes in (1, 2):
        threads = stage_threads(args, processes)
        runner = functools.partial(run_flowkit, stage_threads=threads)
        pairs = []
        for _ in range(2):
            raw = run_peer("raw", run_raw, args.items, processes)
            fk = run_peer(f"flowkit 6 x {threads} threads", runner, args.items, processes)
            pairs.append(
                {
                    "raw": raw,
                    "flowkit_stages": fk,
                    "stage_workers": 6,
                    "stage_threads": threads,
                    "ratios": {"flowkit_stages": ratios(fk, raw)},
                }
            )
        results[f"stages_{processes}p"] = pairs


def scenario_latency(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``--latency`` items one at a time (each sent when the last one ended), every peer."""
    peers = chosen_peers(args)
    out: dict[str, Any] = {
        k: run_peer(k, r, args.latency, 1, sequential=True) for k, (_l, r) in peers.items()
    }
    out["ratios"] = {k: ratios(out[k], out.get("raw")) for k in peers if k != "raw"}
    results["latency"] = out


def _queued(env: Env, queue: str) -> int | None:
    """Messages ready in ``queue`` (``None`` when it does not exist)."""
    conn = pika.BlockingConnection(pika.URLParameters(env.amqp))
    try:
        ok = conn.channel().queue_declare(queue, passive=True)
        return int(ok.method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        return None
    finally:
        if conn.is_open:
            conn.close()


def _timed_close(app: Any) -> float:
    t = time.perf_counter()
    app.close()  # flushes what the publisher still holds
    return time.perf_counter() - t


def scenario_submit(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``submit`` alone, with no worker running: ``--submit-runs`` sequential submits, then
    ``--submit-many`` runs in batches of ``--batch`` with ``submit_many`` when it exists."""
    n, many_n, batch = args.submit_runs, args.submit_many, args.batch
    out: dict[str, Any] = {}
    with Env() as env:
        fk = fk_app(env)
        try:
            fk.app.store  # noqa: B018 - creates the tables, as a worker's start does
            for _ in range(20):  # warm-up: the pools' connections, the broker's channel
                fk.pipeline.submit(-1)
            t = time.perf_counter()
            for i in range(n):
                fk.pipeline.submit(i)
            secs = time.perf_counter() - t
            flush = _timed_close(fk.app)
            out["sequential"] = {
                "runs": n,
                "seconds": round(secs, 3),
                "runs_per_s": round(n / secs, 1),
                "flush_seconds": round(flush, 3),
                "runs_per_s_with_flush": round(n / (secs + flush), 1),
            }
            fk = fk_app(env)
            submit_many = getattr(fk.pipeline, "submit_many", None)
            if submit_many is None:
                out["many"] = {"skipped": "not available (no Flow.submit_many yet)"}
            else:
                submit_many([-1] * 10)  # warm-up
                t = time.perf_counter()
                for b in range(0, many_n, batch):
                    submit_many(list(range(b, min(b + batch, many_n))))
                secs = time.perf_counter() - t
                flush = _timed_close(fk.app)
                out["many"] = {
                    "runs": many_n,
                    "batch": batch,
                    "seconds": round(secs, 3),
                    "runs_per_s": round(many_n / secs, 1),
                    "flush_seconds": round(flush, 3),
                    "runs_per_s_with_flush": round(many_n / (secs + flush), 1),
                }
        finally:
            fk.app.close()
        with psycopg.connect(env.pg) as c:
            row = c.execute("SELECT count(*) FROM flowkit_runs").fetchone()
        out["stored_runs"] = int(row[0]) if row else 0
        out["queued_messages"] = _queued(env, "fk.s0")  # each stored run's first step, sent
    results["submit"] = out


def scenario_fanout(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``--fan`` children then a join, against raw Dramatiq's group and its callback."""
    with Env() as env:
        import dramatiq

        raw = raw_app(env)
        # Dramatiq's group barrier lives in an in-memory backend here, so the
        # group runs in this process: a worker elsewhere would not see it.
        worker = dramatiq.Worker(raw.broker, queues={"raw.fan"}, worker_threads=8)
        worker.start()
        try:
            started = time.time()
            g = dramatiq.group(
                [raw.raw_child.message(i) for i in range(args.fan)], broker=raw.broker
            )
            g.add_completion_callback(raw.raw_callback.message(started))
            g.run()
            ((s, f),) = done_reports(env, 1, 300)
            raw_s = f - s
        finally:
            worker.stop()
    with Env() as env:
        procs = fk_workers(env, 1)
        fk = fk_app(env)
        try:
            fk.fan.submit(2).wait(60)
            run = fk.fan.submit(args.fan)
            run.wait(300)
            info = run.info()
            fk_s = (info.finished_at - info.created_at).total_seconds()
        finally:
            fk.app.close()
            stop(procs)
    results["fanout"] = {
        "children": args.fan,
        "raw_confirms": False,
        "raw_seconds": round(raw_s, 3),
        "flowkit_seconds": round(fk_s, 3),
        "ratio": round(fk_s / raw_s, 3),
    }


def scenario_concurrency(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``--concurrency-runs`` one-second steps on a stage limited to 2 at once, submitted at
    once to 1 worker x 8 threads: how busy the two slots are kept."""
    n = args.concurrency_runs
    with Env() as env:
        procs = fk_workers(env, 1, name="fk-concurrency")
        fk = fk_app(env)
        limit, step_s = fk.OCR_CONCURRENCY, fk.OCR_SECONDS
        try:
            fk.pipeline.submit(-1).wait(60)  # the worker is up
            submit_many = getattr(fk.limited, "submit_many", None)
            if submit_many is not None:
                runs = [r.id for r in submit_many(list(range(n)))]
            else:
                runs = [fk.limited.submit(i).id for i in range(n)]
            fk_finished(env.pg, runs, n * step_s / limit * 4 + 60)  # 25% busy at the least
            with psycopg.connect(env.pg) as c:
                row = c.execute(
                    "SELECT extract(epoch from min(started_at)), "
                    "extract(epoch from max(finished_at)), "
                    "extract(epoch from sum(finished_at - started_at)), sum(attempts) "
                    "FROM flowkit_steps WHERE run_id = ANY(%s)",
                    (runs,),
                ).fetchone()
        finally:
            fk.app.close()
            stop(procs)
    assert row is not None
    first, last, busy, attempts = (float(x) for x in row)
    wall = last - first
    results["concurrency"] = {
        "runs": n,
        "limit": limit,
        "step_seconds": step_s,
        "submitted_with": "submit_many" if submit_many is not None else "submit",
        "wall_seconds": round(wall, 2),
        "busy_fraction": round(n * step_s / (limit * wall), 3),
        "busy_fraction_measured": round(busy / (limit * wall), 3),
        "attempts": int(attempts),
    }
