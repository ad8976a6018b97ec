"""A database outage under a worker: every accepted run still finishes, each step once."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import (  # noqa: F401 - fixtures
    HERE,
    Workers,
    env_fixture,
    kill_app_fixture,
    query,
    workers_fixture,
)

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'kill_flows.py'}:app"
FLOW = "it-kill"
STAGES = ("receive", "enrich", "decide", "notify")


def test_connections_cut_between_the_work_and_its_completion(
    kill_app: Any, workers: Workers, pg_url: str
) -> None:
    """The enrich worker's database sessions die after enrich ran, before it is recorded.

    The completion fails with a StoreError, so the engine sends the message
    again (``dramatiq.Retry``, the same message id) "so a redelivery can
    resume"; the run must then finish without waiting for a lease to expire.
    (Before 5e95264 that copy was ignored as a duplicate and the run stayed
    ``running`` until the lease expired and a recovery sweep re-published it.)
    """
    app_name = "flowkit-it-enrich"
    enrich_db = f"{pg_url}?application_name={app_name}"
    workers.start(TARGET, "--stages", "receive", "decide", "notify", threads=2).wait_started()
    enrich = workers.start(TARGET, "--stages", "enrich", "--database-url", enrich_db, threads=2)
    enrich.wait_started()
    began = time.monotonic()
    run = kill_app.flow(FLOW).submit({"n": 1, "blip": app_name}, key="blip")
    status = run.wait(timeout=25)
    took = time.monotonic() - began
    steps = query(
        pg_url,
        "SELECT name, status, attempts FROM flowkit_steps WHERE run_id = %s ORDER BY name",
        (run.id,),
    )
    print(f"\nrun {status.value} after {took:.1f}s; steps {steps}")
    assert status.value == "succeeded", steps
    assert sorted(s[0] for s in steps) == sorted(STAGES)
    assert {s[1] for s in steps} == {"succeeded"}
    assert enrich.alive()
    assert "comes back in" in enrich.output()  # the outage was met, and retried
