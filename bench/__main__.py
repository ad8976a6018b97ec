"""Benchmark flowkit against raw Dramatiq on the same RabbitMQ, side by side.

    python -m bench [--items 2000] [--latency 200] [--fan 1000] [--store-runs 1000000]
                    [--only pipeline,latency,fanout,store,dashboard,memory,embedded]
                    [--out bench/results]

Needs RabbitMQ and PostgreSQL (``BENCH_AMQP``, ``BENCH_PG``; defaults are the
local ones). Each scenario is bounded in time; the table is printed and the
figures are written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import psycopg

ROOT = Path(__file__).resolve().parent.parent
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PY = sys.executable


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(sql)


class Env:
    """A fresh database and RabbitMQ vhost for one benchmark run."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.db = f"flowkit_bench_{tag}"
        self.vhost = f"flowkit-bench-{tag}"

    def __enter__(self) -> Env:
        _pg_admin(f'CREATE DATABASE "{self.db}"')
        subprocess.run(["rabbitmqctl", "add_vhost", self.vhost], capture_output=True, check=True)
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
            capture_output=True,
            check=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["rabbitmqctl", "delete_vhost", self.vhost], capture_output=True)
        _pg_admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    @property
    def amqp(self) -> str:
        return AMQP.rstrip("/") + "/" + self.vhost

    @property
    def pg(self) -> str:
        return PG.rsplit("/", 1)[0] + "/" + self.db

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BENCH_AMQP": self.amqp,
            "FLOWKIT_BROKER_URL": self.amqp,
            "FLOWKIT_DATABASE_URL": self.pg,
            "PYTHONPATH": str(ROOT),
        }


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {timeout}s")
        time.sleep(0.02)  # a benchmark harness polling its own results


def _start(env: Env, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, env=env.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def _workers(
    env: Env, kind: str, processes: int, threads: int = 8
) -> list[subprocess.Popen[bytes]]:
    if kind == "raw":
        queues = [f"raw.s{i}" for i in range(6)] + ["raw.fan"]
        argv = [
            PY,
            "-m",
            "dramatiq",
            "bench.raw_app",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--queues",
            *queues,
        ]
        return [_start(env, argv)]
    argv = [
        PY,
        "-m",
        "flowkit",
        "worker",
        "bench/fk_app.py:app",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]
    return [_start(env, argv)]


def _raw_app(env: Env) -> Any:
    """``bench.raw_app`` with its broker pointed at ``env``'s vhost (each Env is a new vhost)."""
    import importlib

    sys.path.insert(0, str(ROOT))
    os.environ["BENCH_AMQP"] = env.amqp
    raw_app = importlib.import_module("bench.raw_app")
    broker = raw_app.broker
    broker.close()
    broker.state.__dict__.clear()  # the thread-local connection and channel of the old vhost
    broker.parameters = pika.URLParameters(env.amqp)
    broker.queues_pending = set(broker.queues)  # declare them again in the new vhost
    return raw_app


def _done_reports(env: Env, n: int, timeout: float) -> list[tuple[float, float]]:
    """Consume ``n`` reports from raw Dramatiq's bench.done queue: (started, finished)."""
    conn = pika.BlockingConnection(pika.URLParameters(env.amqp))
    ch = conn.channel()
    ch.queue_declare(
        "bench.done",
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "bench.done.XQ"},
    )
    out: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    for _method, _props, body in ch.consume("bench.done", auto_ack=True, inactivity_timeout=1):
        if body is not None:
            args = json.loads(body)["args"]
            out.append((args[1], args[2]))
        if len(out) >= n or time.monotonic() > deadline:
            break
    ch.cancel()
    conn.close()
    if len(out) < n:
        raise TimeoutError(f"raw Dramatiq finished {len(out)} of {n} items in {timeout}s")
    return out


def run_raw_pipeline(
    env: Env, items: int, processes: int, sequential: bool = False
) -> dict[str, Any]:
    procs = _workers(env, "raw", processes)
    try:
        raw_app = _raw_app(env)
        raw_app.pipeline_for(-1).run()  # warm-up, also declares the queues
        _done_reports(env, 1, 60)
        t0 = time.time()
        reports = []
        if sequential:
            for i in range(items):
                raw_app.pipeline_for(i).run()
                reports += _done_reports(env, 1, 30)
        else:
            for i in range(items):
                raw_app.pipeline_for(i).run()
            reports = _done_reports(env, items, 300)
        wall = max(f for _, f in reports) - t0
        lat = sorted(f - s for s, f in reports)
        return _figures(items, wall, lat)
    finally:
        _stop(procs)


def run_fk_pipeline(
    env: Env, items: int, processes: int, sequential: bool = False
) -> dict[str, Any]:
    procs = _workers(env, "fk", processes)
    sys.path.insert(0, str(ROOT))
    from bench import fk_app

    app = fk_app.app
    app.close()
    app.configure(broker_url=env.amqp, database_url=env.pg, embedded_worker=False)
    try:
        fk_app.pipeline.submit(-1).wait(timeout=60)  # warm-up
        t0 = time.time()
        runs = []
        if sequential:
            for i in range(items):
                run = fk_app.pipeline.submit(i)
                run.wait(timeout=30)
                runs.append(run.id)
        else:
            runs = [fk_app.pipeline.submit(i).id for i in range(items)]
            with psycopg.connect(env.pg) as c:

                def done() -> bool:
                    n = c.execute(
                        "SELECT count(*) FROM flowkit_runs WHERE status = 'succeeded' "
                        "AND id = ANY(%s)",
                        (runs,),
                    ).fetchone()[0]
                    c.commit()
                    return int(n) >= items

                _wait(done, 300, "flowkit pipeline")
        with psycopg.connect(env.pg) as c:
            rows = c.execute(
                "SELECT extract(epoch from created_at), extract(epoch from finished_at) "
                "FROM flowkit_runs WHERE id = ANY(%s)",
                (runs,),
            ).fetchall()
        wall = max(float(f) for _, f in rows) - t0
        lat = sorted(float(f) - float(s) for s, f in rows)
        return _figures(items, wall, lat)
    finally:
        app.close()
        _stop(procs)


def _figures(items: int, wall: float, lat: list[float]) -> dict[str, Any]:
    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    return {
        "items": items,
        "seconds": round(wall, 3),
        "throughput": round(items / wall, 1),
        "p50_ms": round(pct(0.5), 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
    }


def scenario_pipeline(args: argparse.Namespace, results: dict[str, Any]) -> None:
    for processes in (1, 2):
        pairs = []
        for _ in range(2):  # A B A B
            with Env() as env:
                raw = run_raw_pipeline(env, args.items, processes)
            with Env() as env:
                fk = run_fk_pipeline(env, args.items, processes)
            pairs.append(
                {
                    "raw": raw,
                    "flowkit": fk,
                    "throughput_ratio": round(fk["throughput"] / raw["throughput"], 3),
                    "p50_ratio": round(fk["p50_ms"] / raw["p50_ms"], 3),
                }
            )
        results[f"pipeline_{processes}p"] = pairs


def scenario_latency(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with Env() as env:
        raw = run_raw_pipeline(env, args.latency, 1, sequential=True)
    with Env() as env:
        fk = run_fk_pipeline(env, args.latency, 1, sequential=True)
    results["latency"] = {
        "raw": raw,
        "flowkit": fk,
        "p50_ratio": round(fk["p50_ms"] / raw["p50_ms"], 3),
    }


def scenario_fanout(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with Env() as env:
        import dramatiq

        raw_app = _raw_app(env)
        # Dramatiq's group barrier lives in an in-memory backend here, so the
        # group runs in this process: a worker elsewhere would not see it.
        worker = dramatiq.Worker(raw_app.broker, queues={"raw.fan"}, worker_threads=8)
        worker.start()
        try:
            started = time.time()
            g = dramatiq.group(
                [raw_app.raw_child.message(i) for i in range(args.fan)], broker=raw_app.broker
            )
            g.add_completion_callback(raw_app.raw_callback.message(started))
            g.run()
            ((s, f),) = _done_reports(env, 1, 300)
            raw_s = f - s
        finally:
            worker.stop()
    with Env() as env:
        procs = _workers(env, "fk", 1)
        from bench import fk_app

        app = fk_app.app
        app.close()
        app.configure(broker_url=env.amqp, database_url=env.pg, embedded_worker=False)
        try:
            fk_app.fan.submit(2).wait(60)
            run = fk_app.fan.submit(args.fan)
            run.wait(300)
            info = run.info()
            fk_s = (info.finished_at - info.created_at).total_seconds()  # type: ignore[operator]
        finally:
            app.close()
            _stop(procs)
    results["fanout"] = {
        "children": args.fan,
        "raw_seconds": round(raw_s, 3),
        "flowkit_seconds": round(fk_s, 3),
        "ratio": round(fk_s / raw_s, 3),
    }


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
        proc = _start(env, [PY, "-m", "flowkit", "worker", "bench/fk_app.py:app", "--threads", "8"])
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
            _stop([proc])


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


SCENARIOS = {
    "pipeline": scenario_pipeline,
    "latency": scenario_latency,
    "fanout": scenario_fanout,
    "store": scenario_store,
    "dashboard": scenario_dashboard,
    "memory": scenario_memory,
    "embedded": scenario_embedded,
}


def main() -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--latency", type=int, default=200)
    p.add_argument("--fan", type=int, default=1000)
    p.add_argument("--store-runs", type=int, default=1_000_000)
    p.add_argument("--only", default=",".join(SCENARIOS))
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    }
    failed = []
    for name in args.only.split(","):
        t = time.perf_counter()
        try:
            SCENARIOS[name](args, results)
        except Exception as exc:  # one broken scenario does not lose the others' figures
            failed.append(name)
            results[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            print(f"# {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"# {name} done in {time.perf_counter() - t:.1f}s", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"written to {path}")
    return 1 if failed else 0


def table(r: dict[str, Any]) -> str:
    """The figures as a Markdown table (the docs' Performance page shows the same)."""
    rows = ["| scenario | raw Dramatiq | flowkit | ratio |", "|---|---|---|---|"]
    for shape in ("1p", "2p"):
        for i, pair in enumerate(r.get(f"pipeline_{shape}", []), 1):
            raw, fk = pair["raw"], pair["flowkit"]
            rows.append(
                f"| 6-stage pipeline, {shape[0]} process(es) x 8 threads, pair {i}: throughput "
                f"| {raw['throughput']} items/s | {fk['throughput']} items/s "
                f"| {pair['throughput_ratio']} |"
            )
            rows.append(
                f"| same pair: p50 latency under load | {raw['p50_ms']} ms | {fk['p50_ms']} ms "
                f"| {pair['p50_ratio']} |"
            )
    if "latency" in r:
        raw, fk = r["latency"]["raw"], r["latency"]["flowkit"]
        rows.append(
            f"| single item latency p50 / p95 / p99 ({raw['items']} sequential) "
            f"| {raw['p50_ms']} / {raw['p95_ms']} / {raw['p99_ms']} ms "
            f"| {fk['p50_ms']} / {fk['p95_ms']} / {fk['p99_ms']} ms | {r['latency']['p50_ratio']} |"
        )
    if "fanout" in r:
        f = r["fanout"]
        rows.append(
            f"| fan-out {f['children']} -> join | {f['raw_seconds']} s (group callback) "
            f"| {f['flowkit_seconds']} s (durable join) | {f['ratio']} |"
        )
    if "store" in r:
        st = r["store"]
        rows.append(
            f"| {st['runs']:,} runs, CLI wall time: runs list --status failed / runs show / "
            f"status (interpreter start {st['cli_startup_ms']} ms included) | | "
            f"{st['runs_list_failed_ms']} / {st['runs_show_ms']} / {st['status_ms']} ms | |"
        )
        q = st.get("queries")
        if q:
            rows.append(
                f"| {st['runs']:,} runs, the same queries in a running process (median of 5) "
                f"| | {q['runs_list_failed_ms']} / {q['runs_show_ms']} / {q['status_ms']} ms | |"
            )
    if "dashboard" in r:
        d = dict(r["dashboard"])
        n = d.pop("runs")
        for name, value in d.items():
            rows.append(
                f"| dashboard on {n:,} runs: {name} (server time, median of 5) | | {value} ms | |"
            )
    if "memory" in r:
        m = r["memory"]
        rows.append(
            f"| worker RSS idle / after each 2,000 steps | | {m['idle_mb']} MB / "
            f"{', '.join(str(x) for x in m['after_each_2000_steps_mb'])} MB | |"
        )
    if "embedded" in r:
        e = r["embedded"]
        rows.append(
            f"| embedded (memory broker + SQLite): exception example | | "
            f"{e['runs_per_s']} runs/s ({e['exceptions']} in {e['seconds']} s) | |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
