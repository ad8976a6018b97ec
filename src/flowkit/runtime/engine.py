"""The runtime protocol: submit, run a step, signal, cancel, deadlines, recover.

The database decides, the broker only carries step ids:

1. ``submit`` inserts the run and its first step (``queued``), commits, then publishes.
2. A delivered message *claims* its step with a guarded UPDATE; a step that is
   finished, or running under another message, is a duplicate and is acked.
3. Success records the output and inserts the successors in one transaction;
   they are published after the commit. If the worker dies between the commit
   and the publish, the broker redelivers the message (it was never acked) and
   the redelivery, finding its own completion, publishes the successors still queued.
4. A failure is retried with backoff until the stage's limit, then the step and
   the run are ``failed`` with the error recorded. Invalid input fails at once.

The :class:`Engine` is built from explicit parts — the compiled flows, a
:class:`~flowkit.store.Store`, a :class:`~.publisher.Publisher`, the payload
limits, the observers and an on-finished callback — and knows nothing of the
:class:`~flowkit.App` that wires them. Steps 2 to 4 live in :mod:`.execute`; the
state table is in :mod:`flowkit.store.transitions`; ``docs/architecture.md``
draws the layers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

from .. import tracing
from .._ids import new_id
from ..errors import FlowNotFound, RunNotFound, SignalRejected
from ..graph import FlowGraph
from ..observability import Observers
from ..payloads import PayloadLimits
from ..stage import Stage
from ..status import RunStatus
from ..store import Created, DueStep, Store
from ..store.db import utcnow
from .batches import check_inputs, plan_runs, publish_batch
from .calls import Children
from .execute import Delivery, Finished, StepRunner
from .faults import fault
from .heartbeat import heartbeat_seconds
from .load import Load
from .plan import gate, initial_rows
from .publisher import Outgoing, Publisher, RunRef
from .stranded import Stranded
from .validation import check_input, check_signal

__all__ = ["Engine"]

log = logging.getLogger("flowkit.engine")


class Engine:
    """Runs the protocol: the only object that changes runs and steps.

    Parameters:
        flows: the flows it runs (their compiled graphs).
        store: the database.
        publisher: where messages go.
        limits: the size and depth limits of payloads.
        observers: hooks called after each state change.
        on_finished: called once when this process ends a run, after the
            ``run_finished`` hook: ``(run_id, flow, status)``.
        context_app: handed to each step as ``ctx.app`` (for user code only).
        llm_model: the default model of :mod:`flowkit.llm` steps.
        llm_prices: USD per million tokens per model, for the cost of LLM steps.
        worker_id: the worker recorded on the steps this engine claims
            (:attr:`worker_id`; ``App.start_worker`` sets it).
    """

    def __init__(
        self,
        flows: Iterable[FlowGraph],
        store: Store,
        publisher: Publisher,
        *,
        limits: PayloadLimits | None = None,
        observers: Observers | None = None,
        on_finished: Finished | None = None,
        context_app: Any = None,
        llm_model: str | None = None,
        llm_prices: dict[str, tuple[float, float]] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.flows = {f.name: f for f in flows}
        self.store = store
        self.publisher = publisher
        self.limits = limits or PayloadLimits()
        self.observers = observers if observers is not None else Observers()
        self._on_finished = on_finished
        #: runs delivered step messages (claim → attempt → outcome → apply)
        self.steps = StepRunner(
            store,
            publisher,
            self.observers,
            self.run_finished,
            context_app,
            llm_model=llm_model,
            llm_prices=llm_prices,
            worker_id=worker_id,
            limits=self.limits,
        )
        #: the steps running in this process, for the recovery sweep's evidence
        self.load = Load()
        #: child flows: wake the step waiting for a child run, cancel children (.calls)
        self.children = Children(self.flows.values(), store, publisher)

    @property
    def worker_id(self) -> str | None:
        """The worker (``flowkit_workers.id``) recorded on each step this engine claims."""
        return self.steps.worker_id

    @worker_id.setter
    def worker_id(self, value: str | None) -> None:
        self.steps.worker_id = value

    def serve(self, queues: Iterable[str], *, chain: bool = True) -> None:
        """This process consumes ``queues``: a completed step's successor on one of them
        runs next in the same thread (:mod:`.chain`), unless ``chain`` is ``False``."""
        self.steps.served = frozenset(queues) if chain else frozenset()

    def flow(self, name: str) -> FlowGraph:
        """The flow called ``name``.

        Raises:
            FlowNotFound: it is not one of this engine's flows.
        """
        try:
            return self.flows[name]
        except KeyError:
            known = ", ".join(sorted(self.flows)) or "none"
            raise FlowNotFound(f"no flow {name!r} (known: {known})") from None

    def run_finished(self, run_id: str, flow: str, status: RunStatus) -> None:
        """This process ended a run: tell the observers, then the on-finished callback."""
        self.observers.emit("run_finished", flow=flow, status=status.value)
        self.children.ended(run_id, flow, status, self.cancel)
        if self._on_finished is not None:
            self._on_finished(run_id, flow, status)

    # -- submit ----------------------------------------------------------------
    def validate_input(self, flow: FlowGraph, value: Any) -> Any:
        """The JSON form of ``value`` after validation against the flow's first stage.

        Raises:
            InputValidationError: with the pydantic errors; nothing is stored or sent.
            PayloadTooLarge: over a payload limit.
        """
        return check_input(flow, value, self.limits)

    def submit(
        self, flow: FlowGraph, value: Any, *, key: str | None, priority: int | None = None
    ) -> tuple[str, bool]:
        """Store a new run and publish its first step(s); ``(run_id, created)``."""
        payload = self.validate_input(flow, value)
        return self.start(flow, payload, key=key, priority=priority)

    def start(
        self, flow: FlowGraph, payload: Any, *, key: str | None, priority: int | None = None
    ) -> tuple[str, bool]:
        """Store a run for an already validated payload (JSON form) and publish it.

        The ``flowkit.submit`` span is the run's root, a child of the caller's
        current span; its context is stored with the run and sent with its messages.
        The broker is checked first: with RabbitMQ down nothing is stored.
        """
        self.publisher.ready()
        run_id = new_id()
        attributes = {"flowkit.flow": flow.name, "flowkit.run_id": run_id, "flowkit.key": key}
        with tracing.span(
            f"flowkit.submit {flow.name}", kind="producer", attributes=attributes
        ) as s:
            created = self._store_run(flow, run_id, payload, key, priority, s.carrier)
            if not created.created:
                s.set("flowkit.run_id", created.run_id)
                s.set("flowkit.duplicate", True)
            self._publish_start(
                flow, created, RunRef(flow.name, created.run_id, key, priority, s.carrier)
            )
        return created.run_id, created.created

    def _store_run(
        self,
        flow: FlowGraph,
        run_id: str,
        payload: Any,
        key: str | None,
        priority: int | None,
        trace: dict[str, str] | None,
    ) -> Created:
        first, waiting, entry_waits = initial_rows(flow, payload)
        return self.store.runs.create(
            run_id=run_id,
            flow=flow.name,
            key=key,
            input=payload,
            first=first,
            waiting=waiting,
            deadline_ms=flow.timeout_ms,
            entry_waits=entry_waits,
            priority=priority,
            trace_context=trace,
            fingerprint=flow.fingerprint,
        )

    def _publish_start(self, flow: FlowGraph, created: Created, run: RunRef) -> None:
        key = run.key
        if created.created:
            fault("submit-after-commit")
            self.publisher.publish(run, [Outgoing.of(s) for s in [*created.steps, *created.timers]])
            if flow.timeout_ms:
                self.publisher.publish_control("deadline", run, flow.timeout_ms)
        elif key is not None:
            # The same key again: most often a caller retrying after a BrokerError
            # (the run was stored, its first message not sent). Entry steps still
            # queued are published again; a copy that finds its step taken is a
            # duplicate the claim ignores, so this is safe even if the first went out.
            entries = [s.name for s in flow.entries]
            queued = self.store.runs.queued_steps(created.run_id, entries)
            if queued:
                self.publisher.publish(run, [Outgoing(i, n, q) for i, n, q in queued])

    def submit_many(
        self,
        flow: FlowGraph,
        values: Sequence[Any],
        *,
        keys: Sequence[str | None] | None = None,
        priority: int | None = None,
    ) -> list[tuple[str, bool]]:
        """Store one run per value in one transaction, then publish them in one batch.

        Every value is validated first (:mod:`.batches`); ``keys`` has one key per value
        (or is ``None``), all different. Returns ``(run_id, created)`` per value, in order.

        Raises:
            InputValidationError: listing every bad value; nothing is stored or sent.
            BrokerError: the broker is down (nothing stored), or the runs are stored but
                not all their messages went out (the recovery sweep sends them).
        """
        payloads = check_inputs(flow, values, self.limits)
        return self.start_many(flow, payloads, keys=keys, priority=priority)

    def start_many(
        self,
        flow: FlowGraph,
        payloads: Sequence[Any],
        *,
        keys: Sequence[str | None] | None = None,
        priority: int | None = None,
    ) -> list[tuple[str, bool]]:
        """:meth:`submit_many` for already validated payloads (JSON form).

        One ``flowkit.submit_many`` span, a child of the caller's, covers the batch; its
        context is stored with every run and sent with their messages.
        """
        if not payloads:
            return []
        keys = [None] * len(payloads) if keys is None else list(keys)
        self.publisher.ready()
        attributes: dict[str, str | int] = {"flowkit.flow": flow.name, "flowkit.runs": len(keys)}
        with tracing.span(
            f"flowkit.submit_many {flow.name}", kind="producer", attributes=attributes
        ) as s:
            done = self.store.submits.create_many(
                flow.name,
                plan_runs(flow, payloads, keys),
                entries=[e.name for e in flow.entries],
                deadline_ms=flow.timeout_ms,
                priority=priority,
                trace_context=s.carrier,
                fingerprint=flow.fingerprint,
            )
            s.set("flowkit.created", sum(d.created for d in done))
            publish_batch(self.publisher, flow, done, keys, priority, s.carrier)
        return [(d.run_id, d.created) for d in done]

    # -- a worker thread -------------------------------------------------------
    def execute(self, flow: FlowGraph, stage: Stage[Any, Any], step_id: str, got: Delivery) -> None:
        """Run one delivered step message; see :class:`.execute.StepRunner`."""
        with self.load.running(), suppress(Stranded):  # its run waits for `retry --from`
            self.steps.execute(flow, stage, step_id, got)

    # -- control ---------------------------------------------------------------
    def signal(self, run_id: str, name: str, payload: Any) -> bool:
        """Deliver a signal; returns whether it opened a waiting step right away.

        Raises:
            RunNotFound, SignalRejected, InputValidationError
        """
        info = self.store.get_run(run_id)
        if info is None:
            raise RunNotFound(f"no run {run_id!r}")
        flow = self.flow(info.flow)
        waiting = flow.waits_for(name)
        if not waiting:
            known = sorted({s.wait_for for s in flow.steps.values() if s.wait_for})
            raise SignalRejected(
                f"no step of {flow.name!r} waits for signal {name!r} "
                f"(signals: {', '.join(known) or 'none'})"
            )
        stage = flow.steps[waiting[0]]
        data = check_signal(stage, name, payload, self.limits)  # None only if the type says so
        self.publisher.ready()  # nothing is stored while the broker is down
        # The run's trace goes on from its stored context; the caller's span is linked.
        attributes = {"flowkit.flow": flow.name, "flowkit.run_id": run_id, "flowkit.signal": name}
        with tracing.span(
            f"flowkit.signal {name}",
            parent=tracing.clean(info.trace_context),
            kind="producer",
            attributes=attributes,
            link_caller=True,
        ) as span:
            opened = self.store.control.deliver_signal(
                run_id, name, data, gate(flow, stage.name, -1)
            )
            span.set("flowkit.resumed", opened is not None)
            if opened is not None:
                run = RunRef(flow.name, run_id, info.key, info.priority, span.carrier)
                self.publisher.publish(run, [Outgoing.of(opened)])
        return opened is not None

    def cancel(self, run_id: str) -> bool:
        """Cancel a run; ``False`` if it was already over."""
        flow = self.store.control.cancel(run_id)
        if flow is not None:
            self.run_finished(run_id, flow, RunStatus.CANCELLED)
        return flow is not None

    def on_control(self, op: str, run: RunRef) -> None:
        """The control actor: enforce a run's deadline when its timer fires."""
        if op != "deadline":
            log.warning("unknown control message %r for run %s dropped", op, run.run_id)
            return
        state = self.store.control.run_deadline(run.run_id)
        if state is None or state[1] is None or state[0] not in _LIVE:
            return
        left = int((state[1] - utcnow()).total_seconds() * 1000)
        if left > 0:
            self.publisher.publish_control("deadline", run, left)
            return
        self._time_out_run(run.run_id)

    def _time_out_run(self, run_id: str) -> None:
        error = {"type": "RunTimeout", "message": "the run passed its deadline", "step": None}
        flow = self.store.control.time_out_run(run_id, error)
        if flow is not None:
            log.warning("run %s timed out", run_id)
            self.run_finished(run_id, flow, RunStatus.TIMED_OUT)

    # -- recovery --------------------------------------------------------------
    def sweep(
        self,
        *,
        local: dict[str, datetime] | None = None,
        stale_after: float | None = None,
        limit: int = 500,
    ) -> int | None:
        """One pass of the recovery sweep (:mod:`flowkit.store.sweep`): re-publish the
        steps whose message is gone by the evidence on their rows, resume the running
        steps of dead workers, end runs past their deadline.

        Returns the steps published and runs ended, or ``None`` when another process
        holds the sweep's duty for this pass.

        Parameters:
            local: this process's own evidence: per queue it consumes, a time before
                which that queue held no ready message.
            stale_after: a worker whose heartbeat is older is dead (default: three
                heartbeat intervals).
            limit: the most rows each rule takes in one pass.

        Raises:
            BrokerError, StoreError: the broker or the database is unavailable.
        """
        stale = 3 * heartbeat_seconds() if stale_after is None else stale_after
        due = self.store.sweep.run_pass(
            now=utcnow(), stale_after=stale, local=local, worker_id=self.worker_id, limit=limit
        )
        if due is None:
            return None
        ended = self.children.sweep(limit)  # steps still waiting for a child that is over
        for run_id in self.store.control.overdue_runs(limit):
            self._time_out_run(run_id)
            ended += 1
        self._republish(due)
        if due:
            kinds = Counter(d.status for d in due)
            log.info(
                "recovery sweep re-published %d step(s): %s",
                len(due),
                ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
            )
        return ended + len(due)

    def recover(
        self,
        *,
        older_than: float = 60.0,
        limit: int = 1000,
        all_running: bool = False,
        force: bool = False,
    ) -> int:
        """One pass of the recovery sweep, as every worker runs it (:meth:`sweep`);
        with ``force``, re-publish every queued step older than ``older_than`` seconds
        whatever the evidence, and requeue running steps past their lease.

        Copies are harmless: a copy of a message for a step that is already claimed
        is ignored by the claim guard. ``all_running`` (which implies ``force``)
        treats every running step as abandoned: an embedded broker starting up.
        Returns the number of steps published and runs ended.

        Raises:
            BrokerError: the broker cannot be reached (checked first, in words).
        """
        self.publisher.ready()
        if not (force or all_running):
            return self.sweep(limit=limit) or 0
        count = 0
        for run_id in self.store.control.overdue_runs(limit):
            self._time_out_run(run_id)
            count += 1
        due = self.store.runs.due_steps(older_than=older_than, limit=limit, all_running=all_running)
        self._republish(due)
        count += len(due)
        if count:
            log.info("recovery sweep (forced) re-published %d step(s)", count)
        return count

    def _republish(self, due: Sequence[DueStep]) -> None:
        self.publisher.publish_many(
            [
                (
                    RunRef(d.flow, d.run_id, d.key, d.priority, tracing.clean(d.trace)),
                    Outgoing(d.id, d.name, d.queue),
                )
                for d in due
            ]
        )


_LIVE = (RunStatus.PENDING.value, RunStatus.RUNNING.value, RunStatus.WAITING.value)
