"""Node loss on a 3-node RabbitMQ cluster with quorum queues: nothing lost, stuck or doubled.

One cluster for the module (:mod:`rmq_cluster`: three nodes on this machine, never the node on
5672), a fresh vhost per scenario, two ``flowkit worker`` processes with
``FLOWKIT_QUEUE_TYPE=quorum`` whose node lists start on different nodes, and 2,000 runs
of a 3-stage pipeline (:mod:`cluster_flows`) in flight when the node that leads the most
flowkit queues (``rabbitmqctl list_queues name type leader``) goes away:

1. stopped (``rabbitmqctl stop``), left down while the other two carry on, started again;
2. its Erlang VM killed with SIGKILL, then started again;
3. the same stop while a client *connected to that node* submits: its submits fail over
   or fail with ``BrokerError``, and the same keys, retried, complete them.

Each prints one ``FAULTS`` line (:mod:`faultkit`) and asserts 0 lost, 0 stuck, 0
duplicated effects. Skipped when this machine has no RabbitMQ server scripts, except
under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "faults"))
sys.path.insert(0, str(HERE.parent / "integration"))

import rmq_cluster  # noqa: E402
from fault_fixtures import checker_fixture  # noqa: E402, F401 - fixtures
from faultkit import Checker, Submitter, finished  # noqa: E402
from helpers import Workers, wait_until  # noqa: E402

import flowkit  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TARGET = f"{HERE / 'cluster_flows.py'}:app"
FLOW = "fkc"
RUNS = 2000
THREADS = 4
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture(request: pytest.FixtureRequest) -> Iterator[rmq_cluster.Cluster]:
    """One 3-node cluster for this module's scenarios, torn down whatever happens."""
    if not rmq_cluster.available():
        if IN_CI:
            pytest.fail("the cluster scenarios need rabbitmq-server, and CI=true requires them")
        pytest.skip("rabbitmq-server is not installed")
    home = Path(tempfile.mkdtemp(prefix="flowkit-rmq-cluster-"))
    cluster = rmq_cluster.Cluster(home)
    try:
        took = cluster.start()
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(f"\nFAULTS cluster of {len(cluster.nodes)} nodes up in {took:.1f}s", flush=True)
        yield cluster
    finally:
        cluster.close()


@dataclass
class Scene:
    """A scenario's vhost on the cluster, its workers, and the App it submits with."""

    cluster: rmq_cluster.Cluster
    vhost: str
    pg_url: str
    workers: Workers
    app: Any
    submitters: list[Submitter] = field(default_factory=list)

    def urls(self, *first: rmq_cluster.Node) -> str:
        """The cluster's node URLs for this vhost, ``first`` first (as a ``;`` list)."""
        order = [*first, *(n for n in self.cluster.nodes if n not in first)]
        return ";".join(f"{n.url}{self.vhost}" for n in order)

    def start_worker(self, node: rmq_cluster.Node, name: str) -> Any:
        self.workers.env["FLOWKIT_BROKER_URL"] = self.urls(node)
        return self.workers.start(TARGET, threads=THREADS, name=name)

    def node_of(self, pid: int) -> set[str]:
        """The nodes process ``pid`` holds connections to, in this vhost."""
        return {
            node
            for name, node in self.cluster.connections(self.vhost)
            if name.split()[-1] == str(pid)
        }

    def leader(self) -> rmq_cluster.Node:
        """The node that leads the most of this vhost's flowkit queues."""
        leaders = self.cluster.leaders(self.vhost)
        mine = Counter(node for q, node in leaders.items() if q.startswith("fkc."))
        assert mine, f"no quorum queue of the flow's in {self.vhost}: {leaders}"
        name = mine.most_common(1)[0][0]
        return next(n for n in self.cluster.nodes if n.name == name)


@pytest.fixture(name="scene")
def scene_fixture(
    cluster: rmq_cluster.Cluster,
    pg_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Scene]:
    """A fresh vhost and database; every worker stopped and every node up again after."""
    import cluster_flows
    import fault_flows
    import psycopg

    vhost = f"fkc-{uuid.uuid4().hex[:8]}"
    cluster.add_vhost(vhost)
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for ddl in fault_flows.LEDGER_DDL:
            conn.execute(ddl)
    env = {
        "FLOWKIT_DATABASE_URL": pg_url,
        "FLOWKIT_QUEUE_TYPE": "quorum",
        "FLOWKIT_BROKER_SHUFFLE": "0",  # each worker on the node its list names first
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "logs").mkdir()
    workers = Workers(env, tmp_path / "logs")
    failed_before = request.session.testsfailed
    scene = Scene(cluster, vhost, pg_url, workers, cluster_flows.app)
    try:
        yield scene
    finally:
        for sub in scene.submitters:  # a failing scenario never leaves one submitting
            sub.halt.set()
            sub.join(30)
        scene.app.close()
        workers.stop_all()
        for node in cluster.nodes:
            if not cluster.alive(node):
                with contextlib.suppress(Exception):
                    cluster.restart_node(node)
        with contextlib.suppress(Exception):
            cluster.ctl(cluster.nodes[0], "delete_vhost", vhost)
        if request.session.testsfailed > failed_before:
            print(workers.logs()[-6000:])


def _bind(scene: Scene, *first: rmq_cluster.Node) -> Any:
    """The scenario's App, submitting through the node list ``first`` first."""
    app = scene.app
    app.configure(broker_url=scene.urls(*first), database_url=scene.pg_url, embedded_worker=False)
    app.store  # noqa: B018 - the schema exists before the workers start
    return app


def _start_workers(scene: Scene) -> tuple[Any, Any]:
    """Two workers whose lists start on nodes 1 and 2; both serving before this returns."""
    a, b = scene.cluster.nodes[0], scene.cluster.nodes[1]
    w1, w2 = scene.start_worker(a, "w1"), scene.start_worker(b, "w2")
    w1.wait_started()
    w2.wait_started()
    # Each worker is on the node its list names first: the two spread over the cluster.
    wait_until(lambda: scene.node_of(w1.pid) == {a.name}, 30, interval=0.2, what="w1 on node 1")
    wait_until(lambda: scene.node_of(w2.pid) == {b.name}, 30, interval=0.2, what="w2 on node 2")
    return w1, w2


def _submit_all(app: Any, prefix: str) -> set[str]:
    """2,000 runs, in batches: all stored and handed to the publisher (a batch refused
    with ``BrokerError`` is submitted again with the same keys, as a careful client does)."""
    accepted: set[str] = set()
    for start in range(0, RUNS, 250):
        idx = range(start, min(start + 250, RUNS))
        for attempt in range(20):
            try:
                runs = app.submit_many(
                    FLOW, [{"n": i} for i in idx], keys=[f"{prefix}-{i}" for i in idx]
                )
                break
            except flowkit.BrokerError:
                assert attempt < 19, "a batch was refused 20 times"
                threading.Event().wait(0.5)  # a client's pause before retrying, not a sync
        accepted.update(r.id for r in runs)
    return accepted


def _lose_node(
    scene: Scene, checker: Checker, *, how: str, scenario: str, submit: Callable[[], Any]
) -> None:
    """Take the leading node down mid-load (``how``: stop or kill), wait for the others to
    carry on, start it again, and report. ``submit()`` starts the load, returning the
    accepted run ids or a :class:`Submitter`."""
    cluster = scene.cluster
    victim = scene.leader()
    load = submit()
    wait_until(lambda: finished(scene.pg_url, FLOW) >= RUNS // 10, 180, interval=0.1)
    at_fault = finished(scene.pg_url, FLOW)
    down_at = time.monotonic()
    if how == "kill":
        cluster.kill_node(victim)
    else:
        cluster.stop_node(victim)
    # The other two nodes carry on: progress without the victim (failover).
    wait_until(lambda: finished(scene.pg_url, FLOW) >= at_fault + 100, 120, interval=0.1)
    failover_s = time.monotonic() - down_at
    cluster.restart_node(victim)
    back_at = time.monotonic()
    accepted = load.finish(240) if isinstance(load, Submitter) else load
    checker.settle(accepted, (FLOW,), 240)
    rep = checker.report(
        scenario,
        accepted,
        flows=(FLOW,),
        recovery_s=time.monotonic() - back_at,  # from the node back, as the fault suite
        note=(
            f"{how} node {victim.index} at {at_fault}/{RUNS}; 100 more ended "
            f"{failover_s:.1f}s after; node down {back_at - down_at:.1f}s"
            + (f"; {load.refused} submits refused, retried" if isinstance(load, Submitter) else "")
        ),
        leader=victim.name,
        failover_s=round(failover_s, 1),
    )
    assert rep.succeeded == RUNS, rep.line()
    # Re-executions come from the steps running on the lost node's connections.
    checker.assert_clean(rep, max_reexecutions=4 * THREADS * 2)


def test_the_leading_node_stopped_and_started_again(scene: Scene, checker: Checker) -> None:
    app = _bind(scene, scene.cluster.nodes[2])  # the submitter on the third node
    _start_workers(scene)
    _lose_node(
        scene,
        checker,
        how="stop",
        scenario="C1. leader node stopped",
        submit=lambda: _submit_all(app, "c1"),
    )


def test_the_leading_nodes_vm_killed_and_started_again(scene: Scene, checker: Checker) -> None:
    app = _bind(scene, scene.cluster.nodes[2])
    _start_workers(scene)
    _lose_node(
        scene,
        checker,
        how="kill",
        scenario="C2. leader node SIGKILL",
        submit=lambda: _submit_all(app, "c2"),
    )


def test_a_submitter_on_the_stopped_node_fails_over_or_retries(
    scene: Scene, checker: Checker
) -> None:
    _start_workers(scene)
    victim = scene.leader()
    app = _bind(scene, victim)  # the submitter's first node is the one that goes away
    pipeline = app.flow(FLOW)

    def submit() -> Submitter:
        sub = Submitter(pipeline, RUNS, prefix="c3")
        scene.submitters.append(sub)
        wait_until(lambda: sub.accepted, 30, interval=0.05, what="the first submit")
        assert scene.node_of(os.getpid()) == {victim.name}  # this client is on that node
        return sub

    _lose_node(scene, checker, how="stop", scenario="C3. submitter's node stopped", submit=submit)
