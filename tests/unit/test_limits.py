"""Queues, rate limits and concurrency limits on the embedded default."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import flowkit
from flowkit.queues import RateLimit, parse_rate
from flowkit.testing import embedded, run_to_completion

active: dict[str, int] = {}
peak: dict[str, int] = {}
_lock = threading.Lock()
gate = threading.Event()


class Job(BaseModel):
    tenant_id: str
    n: int


@pytest.fixture(autouse=True)
def _reset() -> None:
    active.clear()
    peak.clear()
    gate.clear()


fast = flowkit.Queue("fast", rate_limit="5/s")


@flowkit.stage(queue=fast)
def limited(job: Job) -> int:
    return job.n


@flowkit.stage(concurrency=1, concurrency_key=lambda j: j.tenant_id, queue="tenants")
def per_tenant(job: Job) -> int:
    with _lock:
        active[job.tenant_id] = active.get(job.tenant_id, 0) + 1
        peak[job.tenant_id] = max(peak.get(job.tenant_id, 0), active[job.tenant_id])
    gate.wait(0.03)  # simulated work, long enough for the others to try
    with _lock:
        active[job.tenant_id] -= 1
    return job.n


rated = flowkit.Pipeline("rated", [limited])
tenants = flowkit.Pipeline("tenants", [per_tenant])
app = flowkit.App("limits", flows=[rated, tenants])


@pytest.fixture
def lim(tmp_path: Path) -> Iterator[flowkit.App]:
    with embedded(app, tmp_path, threads=8) as a:
        yield a


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [("10/s", 10, 1000), ("60/m", 60, 60_000), ("1000/h", 1000, 3_600_000), ("5/10s", 5, 10_000)],
)
def test_rates_parse(text: str, limit: int, window: int) -> None:
    assert parse_rate(text, what="x") == RateLimit(limit, window)


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(flowkit.ConfigurationError, match="not like '10/s'"):
        flowkit.Queue("q", rate_limit="fast")
    with pytest.raises(flowkit.FlowDefinitionError, match="queue name"):
        flowkit.Queue("has space")
    with pytest.raises(flowkit.ConfigurationError, match="concurrency_key needs concurrency"):
        flowkit.stage(concurrency_key=lambda j: j.tenant_id)(limited.fn)


def test_a_rate_limit_holds_in_every_window(lim: flowkit.App) -> None:
    runs = [rated.submit({"tenant_id": "t", "n": i}) for i in range(15)]
    assert sorted(run_to_completion(*runs, timeout=30)) == list(range(15))
    starts = sorted(r.steps()[0].started_at for r in runs)  # type: ignore[type-var]
    assert all(s is not None for s in starts)
    for i in range(len(starts) - 5):
        window = (starts[i + 5] - starts[i]).total_seconds()  # type: ignore[operator]
        assert window >= 1.0, f"6 starts within {window:.3f}s"
    assert all(r.steps()[0].attempts == 1 for r in runs)  # delays are not retries


def test_a_per_key_concurrency_limit_is_never_exceeded(lim: flowkit.App) -> None:
    runs = [tenants.submit({"tenant_id": f"t{i % 3}", "n": i}) for i in range(24)]
    assert sorted(run_to_completion(*runs, timeout=60)) == list(range(24))
    assert peak == {"t0": 1, "t1": 1, "t2": 1}
    assert all(r.steps()[0].attempts == 1 for r in runs)


def test_queue_objects_route_steps_and_set_defaults() -> None:
    assert limited.queue == "fast"
    assert limited.limits.queue_rate == RateLimit(5, 1000)
    assert app.queues() == {"fast", "tenants"}


def test_priorities_need_max_priority(tmp_path: Path) -> None:
    with (
        embedded(app, tmp_path),
        pytest.raises(flowkit.ConfigurationError, match="App\\(max_priority=N\\)"),
    ):
        rated.submit({"tenant_id": "t", "n": 1}, priority=5)
    with pytest.raises(flowkit.ConfigurationError, match="max_priority must be"):
        flowkit.App("p", max_priority=0)
    prio = flowkit.Pipeline("prio", [flowkit.stage(name="noop")(limited.fn)])
    papp = flowkit.App("p", flows=[prio], max_priority=9)
    with embedded(papp, tmp_path / "p"):
        (tmp_path / "p").mkdir(exist_ok=True)
        assert prio.submit({"tenant_id": "t", "n": 3}, priority=9).result(timeout=10) == 3
        with pytest.raises(flowkit.ConfigurationError, match=r"0\.\.max_priority \(9\)"):
            prio.submit({"tenant_id": "t", "n": 3}, priority=10)
