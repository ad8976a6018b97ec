"""What every scenario shares: a fresh database and vhost, worker processes, the figures."""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pika
import psycopg

ROOT = Path(__file__).resolve().parent.parent
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PY = sys.executable
#: Where worker processes' output goes, one file per process (``main`` points it at --out).
LOG_DIR = ROOT / "bench" / "results" / "logs"
#: The queue the raw and Celery peers report each finished item to: (x, started, finished).
DONE_QUEUE = "bench.done"
DONE_ARGS = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "bench.done.XQ"}
#: The six stage queues of raw Dramatiq's pipeline, plus its fan-out queue.
RAW_QUEUES = [f"raw.s{i}" for i in range(6)] + ["raw.fan"]


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(sql)


class Env:
    """A fresh database and RabbitMQ vhost for one benchmark run."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.db = f"flowkit_bench_{self.tag}"
        self.vhost = f"flowkit-bench-{self.tag}"

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
            "BENCH_DBOS_URL": self.pg,
            "FLOWKIT_BROKER_URL": self.amqp,
            "FLOWKIT_DATABASE_URL": self.pg,
            "PYTHONPATH": str(ROOT),
        }


def wait_for(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    """Poll ``pred`` every ``every`` seconds; a benchmark harness polling its own results."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {timeout}s")
        time.sleep(every)


def start(
    env: Env, argv: list[str], name: str, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start one worker process; its output goes to ``LOG_DIR/<vhost tag>-<name>.log``."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = (LOG_DIR / f"{env.tag}-{name}.log").open("wb")
    try:
        return subprocess.Popen(
            argv, env={**env.env(), **(extra or {})}, stdout=log, stderr=log, cwd=ROOT
        )
    finally:
        log.close()  # the child holds its own descriptor


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def check_alive(procs: list[subprocess.Popen[bytes]], what: str) -> None:
    """Fail at once, naming the log, when a worker died (rather than time out later)."""
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited with {p.returncode}: see {LOG_DIR}")


def figures(items: int, wall: float, lat: list[float]) -> dict[str, Any]:
    """Throughput over ``wall`` seconds and latency percentiles of ``lat`` (seconds, sorted)."""

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


def declare_done(env: Env) -> None:
    """Declare the report queue (as raw Dramatiq declares it) before anyone reports to it."""
    conn = pika.BlockingConnection(pika.URLParameters(env.amqp))
    conn.channel().queue_declare(DONE_QUEUE, durable=True, arguments=DONE_ARGS)
    conn.close()


def done_reports(env: Env, n: int, timeout: float) -> list[tuple[float, float]]:
    """Consume ``n`` reports from the bench.done queue: (started, finished) per item."""
    conn = pika.BlockingConnection(pika.URLParameters(env.amqp))
    ch = conn.channel()
    ch.queue_declare(DONE_QUEUE, durable=True, arguments=DONE_ARGS)
    out: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    for _method, _props, body in ch.consume(DONE_QUEUE, auto_ack=True, inactivity_timeout=1):
        if body is not None:
            args = json.loads(body)["args"]
            out.append((args[1], args[2]))
        if len(out) >= n or time.monotonic() > deadline:
            break
    ch.cancel()
    conn.close()
    if len(out) < n:
        raise TimeoutError(f"{len(out)} of {n} items reported in {timeout}s")
    return out


def raw_app(env: Env, confirm: bool = False) -> Any:
    """``bench.raw_app`` with its broker pointed at ``env``'s vhost (each Env is a new vhost).

    ``confirm`` turns publisher confirms on for this process's publishes, as
    ``BENCH_RAW_CONFIRM=1`` does for the workers.
    """
    sys.path.insert(0, str(ROOT))
    os.environ["BENCH_AMQP"] = env.amqp
    module = importlib.import_module("bench.raw_app")
    broker = module.broker
    broker.close()
    broker.state.__dict__.clear()  # the thread-local connection and channel of the old vhost
    broker.parameters = pika.URLParameters(env.amqp)
    broker.confirm_delivery = confirm
    broker.queues_pending = set(broker.queues)  # declare them again in the new vhost
    return module


def raw_workers(
    env: Env, processes: int, threads: int = 8, confirm: bool = False
) -> list[subprocess.Popen[bytes]]:
    argv = [PY, "-m", "dramatiq", "bench.raw_app", "--processes", str(processes)]
    argv += ["--threads", str(threads), "--queues", *RAW_QUEUES]
    extra = {"BENCH_RAW_CONFIRM": "1" if confirm else "0"}
    return [start(env, argv, f"raw-{processes}p-confirm{int(confirm)}", extra)]


@functools.cache
def worker_flags() -> frozenset[str]:
    """The long options ``flowkit worker`` knows (``--no-chain`` arrives with chaining)."""
    out = subprocess.run(
        [PY, "-m", "flowkit", "worker", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    return frozenset(w.strip(",[]") for w in out.split() if w.startswith("--"))


def fk_workers(
    env: Env,
    processes: int,
    threads: int = 8,
    extra: list[str] | None = None,
    name: str = "fk",
) -> list[subprocess.Popen[bytes]]:
    argv = [PY, "-m", "flowkit", "worker", "bench/fk_app.py:app"]
    argv += ["--processes", str(processes), "--threads", str(threads), *(extra or [])]
    return [start(env, argv, f"{name}-{processes}p")]


def fk_app(env: Env) -> Any:
    """``bench.fk_app`` configured for ``env`` as a client (no embedded worker)."""
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module("bench.fk_app")
    module.app.close()
    module.app.configure(broker_url=env.amqp, database_url=env.pg, embedded_worker=False)
    return module


def upgrade_db(env: Env) -> None:
    """Create flowkit's tables before several workers start at once (so none race for it)."""
    subprocess.run(
        [PY, "-m", "flowkit", "db", "upgrade"], env=env.env(), check=True, capture_output=True
    )


def fk_finished(pg: str, runs: list[str], timeout: float) -> list[tuple[float, float]]:
    """Wait until every run in ``runs`` succeeded: (created, finished) epoch seconds each.

    Polls every 0.2 s: the figures come from the rows' own times, so the poll's
    period does not bias them, and a slower poll takes less CPU from the workers.
    """
    with psycopg.connect(pg) as c:

        def done() -> bool:
            row = c.execute(
                "SELECT count(*) FROM flowkit_runs WHERE status = 'succeeded' AND id = ANY(%s)",
                (runs,),
            ).fetchone()
            c.commit()
            return row is not None and int(row[0]) >= len(runs)

        wait_for(done, timeout, f"{len(runs)} flowkit runs", every=0.2)
        rows = c.execute(
            "SELECT extract(epoch from created_at), extract(epoch from finished_at) "
            "FROM flowkit_runs WHERE id = ANY(%s)",
            (runs,),
        ).fetchall()
    return [(float(s), float(f)) for s, f in rows]
