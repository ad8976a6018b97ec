"""The in-worker recovery sweep: every worker process sweeps, one at a time per pass.

Every worker (each ``flowkit worker`` process, each of its ``--processes``
children, ``flowkit dev`` and the embedded worker) has a :class:`Presence`: its
``flowkit_workers`` row with its heartbeat (:mod:`.heartbeat`), the count of its
running steps (:class:`~.load.Load`), and a :class:`Sweeper` thread that runs
:meth:`Engine.sweep <flowkit.runtime.engine.Engine.sweep>` every
:func:`sweep_seconds`. A pass takes the sweep's duty first (on PostgreSQL an
advisory lock held for the pass's transaction; SQLite serializes its writers),
so however many workers run, one pass at a time decides, from evidence on the
rows (:mod:`flowkit.store.sweep`):

* running steps of a worker whose heartbeat stopped are put back and published;
* a queued step is published again only when a live worker consuming its queue
  has had a thread free since before the step was published, and never twice
  within its publish lease; a busy backlog is left alone;
* runs past their deadline end, signal waits past their timeout are woken;
* with a retention setting (:mod:`flowkit.retention`), finished runs older than it are
  deleted after the pass in small batches, under the same duty (:mod:`flowkit.store.prune`).

The sweeper's own worker adds its evidence directly, without waiting for its
next heartbeat, so a lost message is noticed within a pass or two.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime

from dramatiq.brokers.stub import StubBroker

from ..errors import BrokerError, StoreError
from ..retention import Retention, retention_setting
from ..store import Pruned
from ..store.db import utcnow
from ..store.sweep import SETTLE
from .engine import Engine
from .heartbeat import Heartbeat, seconds_from_env
from .stranded import check_deployed

__all__ = ["SWEEP_SECONDS", "Presence", "Sweeper", "sweep_seconds"]

log = logging.getLogger("flowkit.sweep")

#: How often each worker runs a pass; ``$FLOWKIT_SWEEP_SECONDS`` overrides it.
SWEEP_SECONDS = 5.0
#: With the in-process ``memory://`` broker (``flowkit dev``), runs submitted by
#: another process have no message at all: sweep every second.
IN_PROCESS_SWEEP_SECONDS = 1.0


def sweep_seconds() -> float:
    """The sweep interval: ``$FLOWKIT_SWEEP_SECONDS`` or :data:`SWEEP_SECONDS`.

    Raises:
        ConfigurationError: the variable is not a positive number of seconds.
    """
    return seconds_from_env("FLOWKIT_SWEEP_SECONDS", SWEEP_SECONDS)


class Sweeper:
    """A daemon thread running one sweep pass every ``every`` seconds until :meth:`stop`.

    Parameters:
        engine: the worker's engine (its store, publisher, load and worker id).
        queues: the queues this worker consumes, for its own evidence.
        every: seconds between passes.
        retention: finished runs older than this are deleted after each pass, in batches.
    """

    def __init__(
        self,
        engine: Engine,
        queues: Iterable[str],
        *,
        every: float,
        retention: Retention | None = None,
    ) -> None:
        self.engine = engine
        self.queues = tuple(sorted(queues))
        self.every = every
        self.retention = retention
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flowkit-sweep", daemon=True)
        self._thread.start()

    def local(self) -> dict[str, datetime]:
        """This worker's evidence: a thread free for :data:`SETTLE` already means its
        queues held no ready message published before ``SETTLE`` ago."""
        free, now = self.engine.load.free_since, utcnow()
        if free is None or free > now - SETTLE:
            return {}
        return dict.fromkeys(self.queues, now - SETTLE)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.engine.sweep(local=self.local())
                self.prune()
            except (StoreError, BrokerError) as exc:
                # The service comes back, or the worker stops: the next pass tries again.
                log.warning("recovery sweep failed: %s; next pass in %gs", exc, self.every)
            except Exception:
                log.exception("recovery sweep failed; next pass in %gs", self.every)

    def prune(self) -> int | None:
        """The retention's part of a pass: a batch of finished runs deleted, and another
        while the last was full, up to :attr:`~flowkit.retention.Retention.batches` batches
        (each its own short transaction). The runs deleted (``None``: no retention, or
        another process holds the sweep's duty now)."""
        keep = self.retention
        if keep is None:
            return None
        total: Pruned | None = None
        for _ in range(keep.batches):
            done = self.engine.store.prune.batch(
                before=keep.cutoff(utcnow()), statuses=keep.statuses, limit=keep.batch, duty=True
            )
            if done is None:
                break
            total = done if total is None else total + done
            if done.runs < keep.batch or self._stop.is_set():
                break
        if total is None:
            return None
        if total.total:
            shown = ", ".join(f"{n} {what}" for what, n in total.items() if n)
            log.info("retention (%s) deleted %s", keep, shown)
        return total.runs

    def stop(self) -> None:
        """Stop after the pass under way, if any."""
        self._stop.set()
        self._thread.join(60.0)


class Presence:
    """One worker's presence: its row and heartbeat, its evidence, its sweeper.

    Registers the worker (its id goes on the engine, for the steps it claims),
    then starts the heartbeat and the sweeper threads.

    Parameters:
        engine: the worker's engine.
        queues: the queues it serves (``None``: every queue of the engine's flows).
        threads: its worker threads.
        every: seconds between sweep passes (default :func:`sweep_seconds`, or
            every second with the in-process broker unless the variable is set).

    Raises:
        ConfigurationError: a bad ``$FLOWKIT_HEARTBEAT_SECONDS``, ``$FLOWKIT_SWEEP_SECONDS``
            or retention setting (:func:`~flowkit.retention.retention_setting`).
        StoreError: the worker could not be registered.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        queues: Iterable[str] | None,
        threads: int,
        every: float | None = None,
    ) -> None:
        served = sorted(queues) if queues is not None else served_queues(engine)
        if every is None:
            in_process = isinstance(engine.publisher.broker, StubBroker)
            every = seconds_from_env(
                "FLOWKIT_SWEEP_SECONDS", IN_PROCESS_SWEEP_SECONDS if in_process else SWEEP_SECONDS
            )
        retention = retention_setting()  # a bad value fails the start, before registering
        if retention is not None:
            log.info("retention: finished runs are deleted %s after they end", retention)
        self.engine = engine
        self.heartbeat = Heartbeat(
            engine.store.workers, queues=served, threads=threads, load=engine.load
        )
        engine.worker_id = self.heartbeat.worker_id
        engine.load.serve(threads)
        # Before its threads claim anything: the live runs a deploy changed (docs/deploys.md).
        check_deployed(engine.store, engine.flows.values())
        self.sweeper = Sweeper(engine, served, every=every, retention=retention)

    @property
    def worker_id(self) -> str:
        """This worker's id (``flowkit_workers.id``)."""
        return self.heartbeat.worker_id

    def pause(self) -> None:
        """The worker is stopping: its consumers take no more messages, so it gives
        no more evidence (its running steps are not dead: it still beats)."""
        self.engine.load.close()

    def stop(self) -> None:
        """Stop sweeping and beating; the worker's row is marked stopped."""
        self.engine.load.close()
        self.sweeper.stop()
        self.heartbeat.stop()


def served_queues(engine: Engine) -> list[str]:
    """Every queue of the engine's flows' steps."""
    return sorted({q for f in engine.flows.values() for q in f.queues()})
