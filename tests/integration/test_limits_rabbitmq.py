"""Rate and concurrency limits across two worker processes; dead letters with reasons."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

import flowkit

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import lim_flows  # noqa: E402
from fk_procs import Procs, wait_until  # noqa: E402

TARGET = f"{HERE / 'lim_flows.py'}:app"


@pytest.fixture
def lim(pg_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[tuple[flowkit.App, Procs]]:
    env = {"FLOWKIT_BROKER_URL": rabbitmq_url, "FLOWKIT_DATABASE_URL": pg_url}
    app = lim_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    app.store  # noqa: B018 - schema first
    # The vhost lives for the whole session: drop the messages of earlier tests (the
    # fallback timers of steps that waited for a concurrency slot outlive their runs).
    app.broker.flush_all()
    procs = Procs(env, tmp_path)
    try:
        yield app, procs
    finally:
        procs.stop()
        app.close()


def test_limits_hold_across_two_worker_processes(lim: Any) -> None:
    _, procs = lim
    rated = [lim_flows.rated_pipeline.submit({"tenant_id": "t", "n": i}) for i in range(40)]
    tenants = [
        lim_flows.tenant_pipeline.submit({"tenant_id": f"t{i % 4}", "n": i}) for i in range(40)
    ]
    procs.start("worker", TARGET, "--processes", "2", "--threads", "8")
    for run in rated + tenants:
        assert run.wait(timeout=120) is flowkit.RunStatus.SUCCEEDED
    starts = sorted(r.steps()[0].started_at for r in rated)  # type: ignore[type-var]
    worst = min(
        (starts[i + 10] - starts[i]).total_seconds()  # type: ignore[operator]
        for i in range(len(starts) - 10)
    )
    assert worst >= 1.0, f"11 starts of a 10/s queue within {worst:.3f}s"
    assert all(r.steps()[0].attempts == 1 for r in rated)  # delays are not retries
    spans: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for r in tenants:
        (step,) = r.steps()
        spans[r.info().input["tenant_id"]].append((step.started_at, step.finished_at))
    for tenant, times in spans.items():
        times.sort()
        for (_, end), (start, _) in itertools.pairwise(times):
            assert start >= end, f"two steps of {tenant} overlapped"


def test_a_freed_slot_is_handed_to_a_waiting_step_within_moments(lim: Any) -> None:
    _, procs = lim
    n, limit, seconds = 40, lim_flows.OCR_CONCURRENCY, lim_flows.OCR_SECONDS
    runs = [lim_flows.ocr_pipeline.submit({"tenant_id": "t", "n": i}) for i in range(n)]
    procs.start("worker", TARGET, "--threads", "8")
    for run in runs:
        assert run.wait(timeout=120) is flowkit.RunStatus.SUCCEEDED
    times = []
    for run in runs:
        (step,) = run.steps()
        assert step.attempts == 1 and step.started_at and step.finished_at
        times.append((step.started_at, step.finished_at))
    for start, _ in times:  # the steps running at each start, itself included
        running = sum(1 for s, e in times if s <= start < e)
        assert running <= limit, f"{running} steps ran at once under concurrency {limit}"
    busy = sum((e - s).total_seconds() for s, e in times)
    span = (max(e for _, e in times) - min(s for s, _ in times)).total_seconds()
    assert busy >= n * seconds
    # A slot freed is handed over at once, not found by a message re-sent later:
    # the two slots stay busy (the bar leaves room for a shared, loaded machine).
    assert busy / (limit * span) >= 0.8, f"slots busy {busy / (limit * span):.0%} of {span:.1f}s"


def test_malformed_messages_are_dead_lettered_with_a_reason(lim: Any, rabbitmq_url: str) -> None:
    app, procs = lim
    procs.start("worker", TARGET, "--threads", "4")
    broker = app.broker
    broker.declare_queue("lim.tenants")  # make sure it exists before publishing raw bytes
    params = pika.URLParameters(rabbitmq_url)
    good = {
        "queue_name": "lim.tenants",
        "actor_name": "lim-tenants.per_tenant",
        "args": [],
        "kwargs": {"step_id": "x"},
        "options": {},
        "message_id": "m-1",
        "message_timestamp": 0,
    }
    bodies = [
        b"\xff\xfe not utf-8",
        b"{not json",
        json.dumps({**good, "actor_name": "nobody.here", "message_id": "m-2"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "kwargs"}).encode(),
        json.dumps({**good, "kwargs": {"wrong": 1}, "message_id": "m-3"}).encode(),
    ]
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        for body in bodies:
            ch.basic_publish("", "lim.tenants", body)
    wait_until(lambda: len(app.store.dead_letters.newest()) >= 5, 60, "five dead letters")
    reasons = sorted(d.reason for d in app.store.dead_letters.newest())
    joined = " | ".join(reasons)
    assert "undecodable message: not UTF-8" in joined
    assert "undecodable message: not JSON" in joined
    assert "unknown stage: no actor named 'nobody.here'" in joined
    assert "malformed message: missing kwargs" in joined
    assert "malformed message: unexpected argument(s) wrong" in joined  # wrong fields, named
    # The worker kept going:
    run = lim_flows.tenant_pipeline.submit({"tenant_id": "after", "n": 1})
    assert run.result(timeout=60) == 1
    listed = procs.start("dead", "list", "--json")
    assert listed.wait(60) == 0
    assert os.path.getsize(procs.log_dir / f"proc-{len(procs.procs) - 1}.log") > 0
