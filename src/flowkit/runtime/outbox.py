"""Runs started inside the host application's own database transaction.

``submit``, ``submit_many`` and ``emit`` with ``connection=`` (see
docs/transactional-submit.md) come here, their inputs already validated as for an
ordinary submit. :func:`start_in` writes the runs' rows on the caller's ``Connection`` or
``Session``, in its transaction (:class:`flowkit.store.outbox.Outbox`, which first checks
it is the store's database), and commits nothing. The host's commit makes the business
rows and the runs exist together; its rollback leaves neither, and nothing is sent.

The first messages go out after the commit:

* **a Session**: right after it, from its ``after_commit`` event, each submit of the
  transaction as one batch (:func:`~.batches.publish_batch`); dropped if the transaction,
  or the savepoint the submit was made in, rolls back. A process that dies between the
  commit and the publish leaves queued steps whose message is gone, which the recovery
  sweep publishes from its evidence, as after an ordinary submit;
* **a bare Connection**: SQLAlchemy's connection-level ``commit`` event fires *before*
  the COMMIT, so no hook of this process knows the rows exist. The entry steps are
  stored as never published (:data:`flowkit.store.sweep.UNSENT`) and the next pass of any
  worker's recovery sweep publishes them, whatever its evidence: within
  ``$FLOWKIT_SWEEP_SECONDS`` (5 s; 1 s with the in-process broker) of the commit.

Timers (an entry signal wait's timeout) and the run's deadline are published with a
Session's batch; after a bare Connection the sweep handles both when they are due.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .. import tracing
from ..errors import BrokerError, ConfigurationError
from ..graph import FlowGraph
from ..store.outbox import Caller, Outbox
from ..store.submits import Submitted
from .batches import plan_runs, publish_batch
from .engine import Engine
from .publisher import Publisher

__all__ = ["start_in"]

log = logging.getLogger("flowkit.outbox")


def start_in(
    engine: Engine,
    flow: FlowGraph,
    payloads: Sequence[Any],
    *,
    keys: Sequence[str | None],
    priority: int | None,
    connection: Caller,
    start_worker: Callable[[], None] | None = None,
) -> list[tuple[str, bool]]:
    """Store one run per validated payload in the caller's transaction; ``(run_id,
    created)`` per payload, in order. A key that already names a run returns that run
    (a committed one, or one this transaction stored before).

    ``start_worker`` starts the in-process worker (wanted, and not running): first, as
    for an ordinary submit; but on SQLite, while the caller's transaction holds the
    database's lock, which the worker's registration would wait for, after a Session's
    commit, and a bare Connection is refused.

    Raises:
        ConfigurationError: ``connection`` is not a SQLAlchemy Connection or Session on
            the store's database, or it is that bare Connection; nothing was written.
        StoreError: the database is unavailable.
    """
    outbox = Outbox(engine.store.db)
    later = _start_worker(outbox, connection, start_worker)
    if not payloads:
        return []
    attributes: dict[str, str | int] = {"flowkit.flow": flow.name, "flowkit.runs": len(keys)}
    with tracing.span(
        f"flowkit.submit {flow.name}", kind="producer", attributes=attributes
    ) as span:
        written = outbox.write(
            connection,
            flow.name,
            plan_runs(flow, payloads, keys),
            entries=[e.name for e in flow.entries],
            deadline_ms=flow.timeout_ms,
            priority=priority,
            trace_context=span.carrier,
            fingerprint=flow.fingerprint,
        )
        span.set("flowkit.created", sum(d.created for d in written.done))
        trace = span.carrier
    if written.session is not None:
        publisher, done = engine.publisher, written.done

        def publish() -> None:
            _publish(publisher, flow, done, keys, priority, trace)

        outbox.after_commit(written.session, publish)
        if later and start_worker is not None:
            outbox.after_commit(written.session, start_worker)
    return [(d.run_id, d.created) for d in written.done]


def _start_worker(
    outbox: Outbox, connection: Caller, start_worker: Callable[[], None] | None
) -> bool:
    """Start the in-process worker now, unless the caller's transaction holds SQLite's
    lock: ``True`` then, for a Session (it starts after the commit).

    Raises:
        ConfigurationError: a bare Connection holding that lock.
    """
    if start_worker is None:
        return False
    if not outbox.holds_lock(connection):
        start_worker()
        return False
    if outbox.session_of(connection) is None:
        raise ConfigurationError(
            "the embedded worker is not running yet, and your SQLite transaction holds "
            "the database's lock it needs to start: start it first (app.start_worker()), "
            "or submit with a Session"
        )
    return True


def _publish(
    publisher: Publisher,
    flow: FlowGraph,
    done: Sequence[Submitted],
    keys: Sequence[str | None],
    priority: int | None,
    trace: dict[str, str] | None,
) -> None:
    """After a Session's commit: the batch's messages (a failure is the sweep's to mend)."""
    try:
        publish_batch(publisher, flow, done, keys, priority, trace)
    except BrokerError as exc:
        log.warning("%s", exc)
