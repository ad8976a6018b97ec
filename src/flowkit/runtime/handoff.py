"""The runtime's side of the concurrency hand-off (:mod:`flowkit.store.handoff`).

A step over a concurrency limit waits as a row; the commit that stops a step holding
a slot hands it to the oldest waiter of its key, and the runner publishes that
waiter's message right after it (:func:`publish_handed`), with the waiter's own
run's :class:`~.publisher.RunRef`, so it claims the freed slot within milliseconds.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import tracing
from ..errors import BrokerError
from ..stage import Stage
from ..store import Handoff
from .publisher import Outgoing, Publisher, RunRef

__all__ = ["publish_handed", "slots_of"]

log = logging.getLogger("flowkit.engine")


def slots_of(stage: Stage[Any, Any]) -> Handoff | None:
    """What a running step of ``stage`` hands over when it stops: a :class:`Handoff`
    to give the store, or ``None`` when it holds no concurrency slot (its completion
    may then take the one-statement path)."""
    lim = stage.limits
    if not (lim.concurrency or lim.queue_concurrency):
        return None
    return Handoff(queue=lim.queue if lim.queue_concurrency else None)


def publish_handed(publisher: Publisher, handoff: Handoff | None) -> None:
    """Publish the steps a committed stop handed its slots to.

    A publish that fails is not the stopped step's failure: the waiter's fallback
    timer (or the recovery sweep) claims it later, so it is logged, not raised.
    """
    if handoff is None or not handoff.handed:
        return
    items = [
        (
            RunRef(d.flow, d.run_id, d.key, d.priority, tracing.clean(d.trace)),
            Outgoing(d.id, d.name, d.queue),
        )
        for d in handoff.handed
    ]
    try:
        publisher.publish_many(items)
    except BrokerError as exc:
        names = ", ".join(sorted({f"{d.flow}.{d.name}" for d in handoff.handed}))
        log.warning("a freed slot's hand-off to %s was not published: %s", names, exc)
