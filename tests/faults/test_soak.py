"""The soak (``nox -s soak``, outside CI): steady load for up to 30 minutes under faults.

Three ``flowkit worker`` processes run the fault suite's ledger flow under a
steady stream of submits. Every minute one of two *victim* workers is
SIGKILLed and a replacement started; every three minutes RabbitMQ closes every
connection of the soak's workers (found by their client-provided names,
``flowkit <worker id> <pid>``: other processes' connections stay open). The
*steady* worker is never killed, so its resident memory over the whole soak
says whether a worker leaks: it is sampled every few seconds and must be flat
(the mean of the last quarter within 20 % of the first quarter's, after a
warm-up). At the end the checker counts 0 lost, 0 stuck, 0 duplicated effects,
and re-executions bounded by the kills.

``FLOWKIT_SOAK_MINUTES`` sets the duration (at most 30, what ``nox -s soak``
sets by default; ``3`` for a quick try) and ``FLOWKIT_SOAK_RATE`` the submits
per second (default 10). It is deselected by default (``-m "not soak"`` in
pyproject's addopts) and skipped unless ``FLOWKIT_SOAK_MINUTES`` is set.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from faultkit import TARGET, Checker, Submitter
from helpers import (  # noqa: F401 - fixtures
    WorkerProcess,
    Workers,
    bound_app,
    env_fixture,
    query,
    wait_until,
    workers_fixture,
)
from rmq_conns import connections, rabbitmqctl, vhost_of

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(
        "FLOWKIT_SOAK_MINUTES" not in os.environ,
        reason="the soak runs in `nox -s soak` (or with FLOWKIT_SOAK_MINUTES set)",
    ),
]

MINUTES = min(30.0, float(os.environ.get("FLOWKIT_SOAK_MINUTES", "30")))
RATE = float(os.environ.get("FLOWKIT_SOAK_RATE", "10"))
THREADS = 4
KILL_EVERY_S = 60.0
CLOSE_EVERY_S = 180.0
SAMPLE_EVERY_S = 5.0
#: RSS may grow while caches and pools fill: the first samples are not compared.
WARM_UP = 0.2
FLAT = 0.20


@pytest.fixture
def fk(pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import fault_flows
    import psycopg

    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for ddl in fault_flows.LEDGER_DDL:
            conn.execute(ddl)
    with bound_app(fault_flows.app, pg_url, rabbitmq_url):
        yield fault_flows


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Samples the RSS of the live workers every few seconds, by pid."""

    def __init__(self, procs: list[WorkerProcess]) -> None:
        super().__init__(name="rss", daemon=True)
        self.procs = procs
        self.samples: dict[int, list[int]] = {}
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.wait(SAMPLE_EVERY_S):
            for p in list(self.procs):
                kib = rss_kib(p.pid) if p.alive() else None
                if kib is not None:
                    self.samples.setdefault(p.pid, []).append(kib)


def flatness(samples: list[int]) -> tuple[float, float, float]:
    """``(first-quarter mean, last-quarter mean, change)`` in MiB, after the warm-up."""
    kept = samples[int(len(samples) * WARM_UP) :]
    q = max(1, len(kept) // 4)
    first, last = statistics.mean(kept[:q]) / 1024, statistics.mean(kept[-q:]) / 1024
    return first, last, (last - first) / first


def close_connections_of(vhost: str, pids: set[int]) -> int:
    """Close the RabbitMQ connections named after one of ``pids``; how many."""
    closed = 0
    for conn, name in connections(vhost):
        parts = name.split()
        if parts[:1] == ["flowkit"] and parts[-1].isdigit() and int(parts[-1]) in pids:
            rabbitmqctl("close_connection", conn, "flowkit soak")
            closed += 1
    return closed


def test_soak_steady_load_with_kills_and_connection_closes(
    fk: Any, workers: Workers, pg_url: str, rabbitmq_url: str, request: pytest.FixtureRequest
) -> None:
    checker = Checker(pg_url, request)
    duration = MINUTES * 60
    vhost = vhost_of(rabbitmq_url)
    steady = workers.start(TARGET, threads=THREADS, name="steady")
    victims = [workers.start(TARGET, threads=THREADS, name=f"victim{i}") for i in range(2)]
    for w in [steady, *victims]:
        w.wait_started()
    live = [steady, *victims]
    sampler = Sampler(live)
    n = int(duration * RATE)
    sub = Submitter(fk.ledger, n, work_ms=20, every=1 / RATE, prefix="soak")
    rng = random.Random()
    began = time.monotonic()
    next_kill, next_close = KILL_EVERY_S, CLOSE_EVERY_S
    kills, closes = 0, []
    halt = threading.Event()
    while (left := duration - (time.monotonic() - began)) > 0:
        if halt.wait(min(left, 1.0)):  # pacing the faults, not a synchronisation
            break
        at = time.monotonic() - began
        if at >= next_kill:
            victim = rng.choice(victims)
            victim.kill()
            kills += 1
            victims[victims.index(victim)] = fresh = workers.start(
                TARGET, threads=THREADS, name=f"victim-r{kills}"
            )
            live.append(fresh)
            fresh.wait_started()
            next_kill += KILL_EVERY_S
        if at >= next_close:
            closes.append(close_connections_of(vhost, {w.pid for w in live if w.alive()}))
            next_close += CLOSE_EVERY_S
    accepted = sub.finish(timeout=600)
    ended = time.monotonic()
    took = checker.settle(accepted, ("fk",), 300)
    sampler.halt.set()
    sampler.join(30)
    first, last, change = flatness(sampler.samples[steady.pid])
    victim_rss = [
        f"{flatness(s)[1]:.0f}"
        for pid, s in sampler.samples.items()
        if pid != steady.pid and len(s) > 4
    ]
    reconnects = len(workers.grep("publishing connection"))
    tracebacks = len(workers.grep("Traceback"))
    rep = checker.report(
        f"soak {MINUTES:g} min at {RATE:g}/s",
        accepted,
        recovery_s=took,
        note=(
            f"{kills} kills, {len(closes)} connection closes ({sum(closes)} connections), "
            f"steady worker RSS {first:.0f} -> {last:.0f} MiB ({change:+.0%}), "
            f"victims' last RSS {'/'.join(victim_rss) or '-'} MiB, "
            f"{reconnects} reconnect lines, {tracebacks} tracebacks"
        ),
        kills=kills,
        rss_steady_kib=sampler.samples[steady.pid],
        submit_s=round(ended - began, 1),
    )
    assert rep.succeeded == n
    # A killed worker's running steps run again: at most its threads, per kill.
    checker.assert_clean(rep, max_reexecutions=kills * THREADS)
    assert abs(change) <= FLAT, rep.line()
    assert tracebacks == 0, "\n".join(workers.grep("Traceback|Error"))[:4000]
