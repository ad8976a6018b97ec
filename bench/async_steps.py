"""The async benchmark: ``--async-runs`` one-second steps submitted at once to one
``flowkit worker`` process with 8 threads, as ``async def`` steps and as sync ones.

The async steps are handed to the worker's event loop after their claim, so the 8
threads keep claiming while the steps await: the run takes about one step's time plus
the claims and completions (target: 200 in under 3 s). The sync steps hold a thread
each: 200 / 8 x 1 s, about 25 s. Both figures come from the rows' own times (first
run created to last run finished), with the peak of steps running at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any

import psycopg

from .harness import PY, ROOT, Env, fk_finished, start, stop, upgrade_db


def _app(env: Env) -> Any:
    """``bench.aio_app`` configured for ``env`` as a client (no embedded worker)."""
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module("bench.aio_app")
    module.app.close()
    module.app.configure(broker_url=env.amqp, database_url=env.pg, embedded_worker=False)
    return module


def _peak(pg: str, runs: list[str]) -> int:
    """The most steps of ``runs`` running at one time (from their started/finished times)."""
    with psycopg.connect(pg) as c:
        rows = c.execute(
            "SELECT started_at, finished_at FROM flowkit_steps WHERE run_id = ANY(%s)", (runs,)
        ).fetchall()
    events = sorted([(s, 1) for s, _ in rows] + [(f, -1) for _, f in rows])
    peak = now = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def _one(flow: Any, pg: str, n: int) -> dict[str, Any]:
    flow.submit(-1).wait(60)  # warm: the worker is up, its loop and pools started
    runs = [r.id for r in flow.submit_many(list(range(n)))]
    times = fk_finished(pg, runs, 120 + n * 2)
    wall = max(f for _, f in times) - min(s for s, _ in times)
    return {"runs": n, "wall_seconds": round(wall, 2), "peak_running": _peak(pg, runs)}


def scenario_async(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """One worker x 8 threads: ``--async-runs`` one-second async steps, then sync ones."""
    n = args.async_runs
    out: dict[str, Any] = {"threads": 8}
    with Env() as env:
        upgrade_db(env)
        argv = [PY, "-m", "flowkit", "worker", "bench/aio_app.py:app", "--threads", "8"]
        procs = [start(env, argv, "fk-async")]
        module = _app(env)
        try:
            t = time.perf_counter()
            out["async"] = _one(module.async_naps, env.pg, n)
            out["sync"] = _one(module.sync_naps, env.pg, n)
            out["seconds"] = round(time.perf_counter() - t, 1)
        finally:
            module.app.close()
            stop(procs)
    out["speedup"] = round(out["sync"]["wall_seconds"] / out["async"]["wall_seconds"], 1)
    results["async"] = out
