"""Benchmark flowkit against raw Dramatiq, Celery and DBOS on the same RabbitMQ and
PostgreSQL, side by side in one run.

    python -m bench [--items 2000] [--latency 200] [--fan 1000] [--store-runs 1000000]
                    [--submit-runs 2000] [--submit-many 10000] [--batch 1000]
                    [--concurrency-runs 200] [--stage-threads N] [--async-runs 200]
                    [--peers raw,raw_confirm,celery,dbos,flowkit] [--only SCENARIO,...]
                    [--out bench/results]

The scenarios, in the order the default run takes them (about 20 minutes in all on a
2-core machine, measured 2026-12-01; each is bounded in time and runs in fresh databases
and vhosts):

    pipeline     6-stage no-op pipeline, 2,000 items submitted one by one, 1 x 8 threads
                 and 2 x 8, two pairs each in A B A B order; each pair runs every peer:
                 raw Dramatiq confirms off (the baseline) and on, Celery, DBOS, flowkit
                 chained (the default worker)                                  (~11 min)
    stages       flowkit with one ``--stages sN`` worker per stage (no chaining possible)
                 against raw Dramatiq confirms off, same pairs                  (~4 min)
    latency      200 items one at a time, every peer                            (~1 min)
    submit       2,000 sequential ``submit`` and 10,000 ``submit_many`` (1,000 a batch),
                 no worker running                                               (~10 s)
    fanout       1,000 children -> join against a raw Dramatiq group callback    (~15 s)
    concurrency  200 one-second steps on a stage limited to 2 at once, 1 x 8 threads:
                 how busy the two slots are kept (100 s at the least)           (~2 min)
    store        1,000,000 runs: CLI and in-process query times                  (~40 s)
    dashboard    the dashboard's pages and API on 1,000,000 runs                 (~30 s)
    memory       a worker's RSS, idle and after each 2,000 steps                 (~15 s)
    embedded     the exceptions example on the memory broker and SQLite          (~15 s)
    prune        ``flowkit db prune`` of 1,000,000 finished runs (6 steps each) while a
                 worker runs the pipeline, in pairs of rounds against the pipeline
                 alone (bench/prune.py)                                       (~5-9 min)
    async        200 one-second ``async def`` steps at once on 1 x 8 threads, then the
                 same as sync steps (bench/async_steps.py)                      (~40 s)

Celery and DBOS are optional (``pip install '.[bench]'``): a peer that is not installed
is shown as such and the run goes on. ``flowkit_nochain`` (``flowkit worker --no-chain``)
is a peer on request (``--peers ...,flowkit_nochain``).

Needs RabbitMQ and PostgreSQL (``BENCH_AMQP``, ``BENCH_PG``; defaults are the local
ones). The table is printed and the figures are written as JSON under ``--out``; the
workers' output goes to ``--out``/logs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench import harness
from bench.async_steps import scenario_async
from bench.harness import PY, ROOT, Env, start, stop
from bench.peers import DEFAULT_PEERS, PEERS
from bench.prune import scenario_prune
from bench.scenarios import (
    scenario_concurrency,
    scenario_fanout,
    scenario_latency,
    scenario_pipeline,
    scenario_stages,
    scenario_submit,
)
from bench.table import table


def scenario_store(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with Env() as env:
        e = env.env()
        subprocess.run(
            [PY, "-m", "flowkit", "db", "upgrade"], env=e, check=True, capture_output=True
        )
        n = args.store_runs
        with psycopg.connect(env.pg, autocommit=True) as c:
            c.execute(
                "INSERT INTO flowkit_runs (id, flow, key, status, input, created_at, finished_at) "
                "SELECT lpad(to_hex(g), 32, '0'), 'bench6', NULL, "
                "CASE WHEN g %% 100 = 0 THEN 'failed' ELSE 'succeeded' END, '1'::jsonb, "
                "now() - (g || ' seconds')::interval, now() FROM generate_series(1, %s) g",
                (n,),
            )
            c.execute(
                "INSERT INTO flowkit_steps (id, run_id, name, status, queue, attempts, created_at) "
                "SELECT lpad(to_hex(g), 31, '0') || 's', lpad(to_hex(g), 32, '0'), 's0', "
                "'succeeded', 'fk.s0', 1, now() FROM generate_series(1, %s) g",
                (n,),
            )
            c.execute("ANALYZE")

        def timed(argv: list[str]) -> float:
            t = time.perf_counter()
            subprocess.run(
                [PY, "-m", "flowkit", *argv], env=e, check=True, capture_output=True, cwd=ROOT
            )
            return round((time.perf_counter() - t) * 1000, 1)

        from flowkit.store import Store

        store = Store(env.pg.replace("postgresql://", "postgresql+psycopg://"), pool_size=1)

        def query_ms(fn: Callable[[], Any]) -> float:
            fn()  # a warm connection, as a long-lived process has
            times = []
            for _ in range(5):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return round(sorted(times)[2] * 1000, 1)

        queries = {
            "runs_list_failed_ms": query_ms(lambda: store.list_runs(status="failed", limit=50)),
            "runs_show_ms": query_ms(
                lambda: (store.get_run("0" * 30 + "64"), store.get_steps("0" * 30 + "64"))
            ),
            "status_ms": query_ms(lambda: (store.count_runs(), store.oldest_live_run())),
        }
        store.dispose()
        startup = timed(["--version"])
        some_run = "0" * 30 + "64"
        results["store"] = {
            "runs": n,
            "cli_startup_ms": startup,
            "runs_list_failed_ms": timed(["runs", "list", "--status", "failed", "--limit", "50"]),
            "runs_show_ms": timed(["runs", "show", some_run]),
            "status_ms": timed(["status", "bench/fk_app.py:app", "--json"]),
            "note": "CLI wall times include the interpreter start (cli_startup_ms)",
            "queries": queries,
        }


def _fill_runs(pg: str, n: int, fan_items: int) -> str:
    """``n`` runs over three flows and five statuses, keys, error types; one fan-out run."""
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(
            "INSERT INTO flowkit_runs (id, flow, key, status, input, error, error_type, "
            "created_at, finished_at) "
            "SELECT lpad(to_hex(g), 32, '0'), (ARRAY['bench6','bench-fan','other'])[g %% 3 + 1], "
            "'tenant-' || (g %% 1000) || ':' || g, "
            "(ARRAY['succeeded','failed','running','cancelled','succeeded'])[g %% 5 + 1], "
            "'1'::jsonb, NULL, "
            "CASE WHEN g %% 5 = 1 THEN (ARRAY['ValueError','Timeout','PermanentError'])"
            "[g %% 3 + 1] END, now() - (g || ' seconds')::interval, now() "
            "FROM generate_series(1, %s) g",
            (n,),
        )
        fan_run = "f" * 32
        c.execute(
            "INSERT INTO flowkit_runs (id, flow, status, input, created_at) "
            "VALUES (%s, 'bench-fan', 'succeeded', %s, now())",
            (fan_run, str(fan_items)),
        )
        c.execute(
            "INSERT INTO flowkit_steps (id, run_id, name, item, status, queue, attempts, "
            "input, output, created_at, started_at, finished_at) "
            "SELECT lpad(to_hex(g), 31, '0') || 'c', %s, 'child', g, 'succeeded', 'fk.fan', 1, "
            "to_jsonb(g), to_jsonb(g), now(), now(), now() FROM generate_series(0, %s - 1) g",
            (fan_run, fan_items),
        )
        c.execute("ANALYZE")
    return fan_run


def scenario_dashboard(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The dashboard's pages and API on ``--store-runs`` runs, timed inside the server process."""
    from starlette.testclient import TestClient

    import bench.fk_app as fk
    from flowkit.dashboard import create_app

    with Env() as env:
        e = env.env()
        subprocess.run(
            [PY, "-m", "flowkit", "db", "upgrade"], env=e, check=True, capture_output=True
        )
        fan_run = _fill_runs(env.pg, args.store_runs, 1000)
        fk.app.configure(
            database_url=env.pg.replace("postgresql://", "postgresql+psycopg://"),
            broker_url=env.amqp,
            embedded_worker=False,
        )
        client = TestClient(create_app(fk.app, read_only=True))

        def ms(url: str) -> float:
            assert client.get(url).status_code == 200, url
            times = []
            for _ in range(5):
                t = time.perf_counter()
                r = client.get(url)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, url
            return round(sorted(times)[2] * 1000, 1)

        pages = {
            "runs_page": "/runs",
            "api_runs": "/api/runs",
            "api_runs_flow_status": "/api/runs?flow=bench6&status=failed",
            "api_runs_key_prefix": "/api/runs?key_prefix=tenant-42:",
            "api_runs_error_type": "/api/runs?error_type=Timeout",
            "api_runs_since": "/api/runs?since=2026-01-01T00:00:00%2B00:00&flow=other",
            "run_page_fanout_1000": f"/runs/{fan_run}",
            "api_run_fanout_1000": f"/api/runs/{fan_run}",
        }
        timings = {name: ms(url) for name, url in pages.items()}
        # The counts on top of /runs are cached for 5 s; this is what a refresh costs.
        queries = fk.app.store.queries
        times = []
        for _ in range(3):
            queries.clear_cache()
            t = time.perf_counter()
            queries.counts()
            times.append(time.perf_counter() - t)
        timings["counts_uncached"] = round(sorted(times)[1] * 1000, 1)
        fk.app.close()
        results["dashboard"] = {"runs": args.store_runs, **timings}


def scenario_memory(args: argparse.Namespace, results: dict[str, Any]) -> None:
    def rss(pid: int) -> float:
        total = 0
        for p in [pid, *_children(pid)]:
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return round(total / 1024, 1)

    with Env() as env:
        argv = [PY, "-m", "flowkit", "worker", "bench/fk_app.py:app", "--threads", "8"]
        proc = start(env, argv, "fk-memory")
        from bench import fk_app

        app = fk_app.app
        app.close()
        app.configure(broker_url=env.amqp, database_url=env.pg, embedded_worker=False)
        try:
            fk_app.pipeline.submit(-1).wait(60)
            idle = rss(proc.pid)
            samples = []
            for _batch in range(5):
                runs = [fk_app.pipeline.submit(i) for i in range(334)]
                for r in runs:
                    r.wait(120)
                samples.append(rss(proc.pid))
            results["memory"] = {"idle_mb": idle, "after_each_2000_steps_mb": samples}
        finally:
            app.close()
            stop([proc])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def scenario_embedded(args: argparse.Namespace, results: dict[str, Any]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = subprocess.run(
            [PY, str(ROOT / "examples/exceptions/run.py"), "--count", "1000", "--timeout", "300"],
            cwd=tmp,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")},
        )
        secs = time.perf_counter() - t
    results["embedded"] = {
        "exceptions": 1000,
        "seconds": round(secs, 2),
        "runs_per_s": round(1000 / secs, 1),
        "ok": out.returncode == 0,
    }


SCENARIOS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], None]] = {
    "pipeline": scenario_pipeline,
    "stages": scenario_stages,
    "latency": scenario_latency,
    "submit": scenario_submit,
    "fanout": scenario_fanout,
    "concurrency": scenario_concurrency,
    "store": scenario_store,
    "dashboard": scenario_dashboard,
    "memory": scenario_memory,
    "embedded": scenario_embedded,
    "prune": scenario_prune,
    "async": scenario_async,
}


def _versions() -> dict[str, str | None]:
    """The versions of the peers' packages (``None``: not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("flowkit", "dramatiq", "celery", "dbos", "psycopg", "SQLAlchemy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _peer_errors(node: Any, path: str = "") -> list[str]:
    """Where a peer's run recorded an error, anywhere in the results."""
    if isinstance(node, dict):
        found = [path] if "error" in node else []
        for k, v in node.items():
            found += _peer_errors(v, f"{path}.{k}" if path else str(k))
        return found
    if isinstance(node, list):
        return [e for i, v in enumerate(node) for e in _peer_errors(v, f"{path}[{i}]")]
    return []


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--items", type=int, default=2000, help="pipeline and stages items")
    p.add_argument("--latency", type=int, default=200, help="latency: sequential items")
    p.add_argument("--fan", type=int, default=1000, help="fanout: children")
    p.add_argument("--store-runs", type=int, default=1_000_000, help="store, dashboard: runs")
    p.add_argument("--submit-runs", type=int, default=2000, help="submit: sequential runs")
    p.add_argument("--submit-many", type=int, default=10_000, help="submit: submit_many runs")
    p.add_argument("--batch", type=int, default=1000, help="submit: submit_many batch size")
    p.add_argument(
        "--concurrency-runs", type=int, default=200, help="concurrency: one-second steps"
    )
    p.add_argument(
        "--stage-threads",
        type=int,
        default=None,
        help="stages: threads per stage worker (default: ceil(8 x processes / 6))",
    )
    p.add_argument("--prune-runs", type=int, default=1_000_000, help="prune: finished runs")
    p.add_argument("--prune-steps", type=int, default=6, help="prune: steps per seeded run")
    p.add_argument("--prune-items", type=int, default=2000, help="prune: items per round")
    p.add_argument(
        "--prune-rounds", type=int, default=3, help="prune: pairs of rounds at the least"
    )
    p.add_argument("--prune-batch", type=int, default=1000, help="prune: runs per batch")
    p.add_argument(
        "--prune-rate", type=float, default=None, help="prune: --rate of flowkit db prune"
    )
    p.add_argument("--async-runs", type=int, default=200, help="async: one-second steps")
    p.add_argument("--peers", default=",".join(DEFAULT_PEERS), help="pipeline, latency: peers")
    p.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    return p


def main() -> int:
    p = _parser()
    args = p.parse_args()
    names = args.only.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)} (scenarios: {', '.join(SCENARIOS)})")
    bad = [n for n in args.peers.split(",") if n not in PEERS]
    if bad:
        p.error(f"unknown peer(s) {', '.join(bad)} (peers: {', '.join(PEERS)})")
    harness.LOG_DIR = Path(args.out) / "logs"
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "versions": _versions(),
    }
    failed = []
    for name in names:
        t = time.perf_counter()
        print(f"# {name} ...", flush=True)
        try:
            SCENARIOS[name](args, results)
        except Exception as exc:  # one broken scenario does not lose the others' figures
            failed.append(name)
            results[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            print(f"# {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"# {name} done in {time.perf_counter() - t:.1f}s", flush=True)
    errors = _peer_errors({k: v for k, v in results.items() if not k.endswith("_error")})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(table(results))
    for where in errors:
        print(f"# a peer failed at {where} (its workers' output: {harness.LOG_DIR})")
    print(f"written to {path}")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
