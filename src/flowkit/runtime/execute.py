"""One delivered step message, as the protocol: claim → attempt → outcome → apply.

1. **Claim** the step with a guarded update (:meth:`Runs.claim <flowkit.store.Runs.claim>`):
   a message that cannot claim it is a duplicate, an early timer or a deadline
   (:meth:`StepRunner.not_claimed`); one over a limit is put off.
2. **Attempt**: parse the stored input, call the function under its timeout, validate
   what it returned (a child flow's step starts its child run instead: :mod:`.calls`).
   The result is data: an :class:`~flowkit.store.Outcome` (what to record and what
   follows, from :mod:`.plan`) or a :class:`.Failure`.
3. **Apply** it: record the outcome and publish the successors after the commit, or
   schedule the retry, or record the final failure. A successor this process serves is
   claimed by the same statement and run next in this thread (:mod:`.chain`).

A worker that dies anywhere in between leaves the message unacknowledged: RabbitMQ
redelivers it and the redelivery resumes (see ``docs/runtime.md``). An ``async def``
step's message is acknowledged at the hand-over to the loop (:mod:`.aio`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import dramatiq
from pydantic import ValidationError

from .. import redact
from ..context import Context
from ..errors import BrokerError, InputValidationError, StepTimeout, StoreError, WorkerLost
from ..graph import FlowGraph
from ..observability import Observers
from ..payloads import PayloadLimits
from ..redact import validation_summary
from ..stage import Stage, Stop
from ..status import RunStatus, StepStatus
from ..store import Claim, Delayed, NewStep, Outcome, Store
from ..store.db import utcnow
from . import aio, calls, spans
from .chain import Chain, ChainLimits, lease_ms
from .claim_limits import claim_limits
from .faults import fault
from .handoff import publish_handed, slots_of
from .outcomes import Failure, Refused, StepFailed, error_record, expected, jsonable, short
from .plan import gate, plan_completion, plan_settled_failure
from .publisher import Outgoing, Publisher, RunRef
from .stranded import strand_input
from .timeouts import time_limit
from .validation import validation_errors

__all__ = ["Delivery", "Finished", "Job", "StepRunner"]

log = logging.getLogger("flowkit.engine")

#: Called once when this process ends a run: ``(run_id, flow, status)``.
Finished = Callable[[str, str, RunStatus], None]


@dataclass(frozen=True)
class Delivery:
    """One delivered step message: its run, its broker id, whether it came back.

    ``redelivered``: only a copy that comes back after its holder stopped may
    take over a running step (RabbitMQ's redelivery after the consumer went
    away, or Dramatiq's re-send after this engine gave up on the database or
    broker), never a second copy published with the same id.
    """

    run: RunRef
    message_id: str
    redelivered: bool = False

    @classmethod
    def of(cls, flow: str, message: dramatiq.Message[Any]) -> Delivery:
        """The delivery of a Dramatiq step message."""
        again = bool(getattr(message, "redelivered", False)) or message.options.get("retries", 0)
        return cls(RunRef.of_message(flow, message), message.message_id, bool(again))


@dataclass(frozen=True)
class Job:
    """One delivered step message being handled: its flow and step, its row, its delivery."""

    flow: FlowGraph
    stage: Stage[Any, Any]
    step_id: str
    got: Delivery
    #: claimed by its parent's completion and run by the same thread: it has no
    #: message of its own (``got`` is the message that started the chain)
    chained: bool = False

    @property
    def run_id(self) -> str:
        return self.got.run.run_id


#: The chained step a thread runs next (with its claim), if any.
Next = tuple[Job, Claim] | None


class StepRunner:
    """Runs delivered step messages against the store; the Engine owns one.

    Parameters:
        store: the database.
        publisher: where successors' messages go.
        observers: the runtime's hooks.
        finished: called when a step ends its run.
        context_app: handed to each step as ``ctx.app`` for user code; never read here.
        llm_model: the default model of :mod:`flowkit.llm` steps.
        llm_prices: USD per million tokens per model, for the cost of LLM steps.
        worker_id: the worker (``flowkit_workers.id``) recorded on each step it
            claims; settable later, as ``App.start_worker`` registers one.
        limits: the payload limits a step's output must fit, as its input did.
    """

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        observers: Observers,
        finished: Finished,
        context_app: Any = None,
        llm_model: str | None = None,
        llm_prices: dict[str, tuple[float, float]] | None = None,
        worker_id: str | None = None,
        limits: PayloadLimits | None = None,
    ) -> None:
        self.store = store
        self.limits = limits or PayloadLimits()
        self.worker_id = worker_id
        self.llm_model = llm_model
        self.llm_prices = dict(llm_prices or {})
        self.publisher = publisher
        self.observers = observers
        self.finished = finished
        self.context_app = context_app
        #: the queues whose steps this process may run chained (empty: none)
        self.served: frozenset[str] = frozenset()
        #: how far one message's chain may go
        self.chain_limits = ChainLimits.from_env()

    def execute(self, flow: FlowGraph, stage: Stage[Any, Any], step_id: str, got: Delivery) -> None:
        """Run one delivered step message (called by the step's Dramatiq actor).

        If the database or the broker fails underneath, the message is sent
        again later (the same message id, so a redelivery can resume) rather
        than dropped: the step runs at least once, and is recorded once.
        """
        try:
            self._run(Job(flow, stage, step_id, got))
        except (StoreError, BrokerError) as exc:
            delay = random.randint(1_000, 5_000)
            log.warning(
                "step %s of run %s: %s; the message comes back in %.1fs",
                stage.name,
                got.run.run_id,
                exc,
                delay / 1000,
            )
            raise dramatiq.Retry(str(exc), delay=delay) from exc

    def _run(self, job: Job) -> None:
        claim = self._claim(job)
        if claim is None:
            self.not_claimed(job.flow, job.step_id, job.got)
        elif isinstance(claim, Delayed):
            self._put_off(job, claim)
        else:
            chain = Chain(self.chain_limits, self.served, self.worker_id)
            step: tuple[Job, Claim] | None = (job, claim)
            while step is not None:  # the step, then each one chained to it
                step = self._in_span(*step, chain)

    def _in_span(self, job: Job, claim: Claim, chain: Chain) -> tuple[Job, Claim] | None:
        got = job.got
        with spans.attempt(
            job.flow, job.stage.name, got.run, claim, got.message_id, self.store
        ) as run:
            # What this attempt publishes (and a chained step) carries its span's context.
            return self._claimed(replace(job, got=replace(got, run=run)), claim, chain)

    def _claimed(self, job: Job, claim: Claim, chain: Chain) -> tuple[Job, Claim] | None:
        if job.stage.child is not None:  # a child flow's step: it waits as a row (.calls)
            return calls.start(self, job, claim)
        if claim.attempts > job.stage.retries + 1:
            # Only a takeover gets here: every earlier attempt ended without an
            # outcome (its process died, or lost the database, each time).
            lost = WorkerLost(
                f"step {job.stage.name!r} was started {claim.attempts - 1} times and its worker "
                "stopped before recording an outcome each time; quarantined (not run again)"
            )
            self._final_failure(job, claim, lost)
            raise StepFailed(str(lost))
        value = self._parse(job, claim)
        ctx = self._context(job, claim, value)
        step = aio.Step(job, claim, value, ctx, time.monotonic())
        if job.stage.is_async:  # on the event loop; this thread is free again (.aio)
            aio.start(self, step)
            return None
        return self.finish(step, self._attempt(job, claim, value, ctx), chain)

    def finish(self, step: aio.Step, result: Outcome | Failure, chain: Chain | None) -> Next:
        """Apply an attempt's outcome or failure; the chained step to run next, if any."""
        job, ctx = step.job, step.ctx
        if isinstance(result, Failure):
            retried = result.delay_ms is not None
            self._finished_attempt(job, step.began, ctx, "retried" if retried else "failed")
            self._apply_failure(job, step.claim, result, ctx.usage)
            return None
        nxt = chain.next_claim(job.flow, job.stage, result) if chain else None
        return self._apply_success(job, replace(result, chain=nxt), step.began, ctx)

    # -- claim -------------------------------------------------------------------
    def _claim(self, job: Job) -> Claim | Delayed | None:
        stage, runs = job.stage, self.store.runs
        limits = None
        if stage.limits.any:  # their keys may read the step's input
            limits = claim_limits(job.flow.name, stage, lambda: runs.step_input(job.step_id))
        return runs.claim(
            job.step_id,
            job.got.message_id,
            lease_ms=lease_ms(stage),
            starts_run=not job.flow.parents(stage.name),
            limits=limits,
            redelivered=job.got.redelivered,
            worker_id=self.worker_id,
        )

    def _put_off(self, job: Job, claim: Delayed) -> None:
        # Over a rate limit: come back later; over a concurrency limit: wait for the
        # slot's hand-off, with a fallback timer (store/handoff.py), unless this is a
        # copy for a step waiting already. Not a retry: the attempt counter does not move.
        stage = job.stage
        if not claim.send:
            return
        self._emit("step_delayed", job, seconds=claim.ms / 1000)
        log.debug(
            "step %s of run %s delayed %dms (%s)", stage.name, job.run_id, claim.ms, claim.reason
        )
        timer = Outgoing(job.step_id, stage.name, stage.queue, claim.ms, claim.due)
        self.publisher.publish(job.got.run, [timer])

    # -- attempt -----------------------------------------------------------------
    def _parse(self, job: Job, claim: Claim) -> Any:
        stage = job.stage
        try:
            value = stage.parse_input(claim.input)
        except ValidationError as exc:
            strand_input(self.store, job.flow, job.run_id, stage.name, exc)  # or Stranded
            err = InputValidationError(
                f"stored input does not match stage {stage.name!r}: {validation_summary(exc)}",
                errors=validation_errors(exc),
                stage=stage.name,
            )
            self._final_failure(job, claim, err)
            raise StepFailed(str(err)) from None
        redact.note(stage.secrets_in(value))  # hidden from logs and errors while it runs
        return value

    def _context(self, job: Job, claim: Claim, value: Any) -> Context:
        run_id, stage = job.run_id, job.stage
        tenant = getattr(value[0] if stage.wait_for else value, "tenant_id", None)
        suffix = "" if claim.item is None else f"[{claim.item}]"
        return Context(
            run_id=run_id,
            flow=job.flow.name,
            step=stage.name,
            attempt=claim.attempts,
            idempotency_key=f"{run_id}:{stage.name}{suffix}",
            key=job.got.run.key,
            tenant_id=tenant if isinstance(tenant, str) else None,
            item=claim.item,
            app=self.context_app,
            # Earlier attempts' LLM spending carries on: the step's usage is a total.
            usage=dict(claim.usage or {}),
            llm_cache=self.store.llm_cache,
            llm_model=self.llm_model,
            llm_prices=self.llm_prices,
            cancel_probe=lambda: self._run_over(run_id),
        )

    def _run_over(self, run_id: str) -> bool:
        state = self.store.run_state(run_id)
        return state is not None and state[0] in (RunStatus.CANCELLED, RunStatus.TIMED_OUT)

    def _attempt(self, job: Job, claim: Claim, value: Any, ctx: Context) -> Outcome | Failure:
        stage = job.stage
        self._emit("step_started", job, attempt=claim.attempts)
        try:
            with time_limit(stage.timeout_ms, f"step {stage.name!r}"):
                result = stage.invoke(value, ctx)
            return self.settle(job, claim, ctx, result)
        except (Exception, StepTimeout) as exc:
            return Failure.decide(exc, stage, claim.attempts)

    def settle(self, job: Job, claim: Claim, ctx: Context, result: Any) -> Outcome:
        """The :class:`Outcome` of what a function returned; PayloadTooLarge over a limit."""
        flow, stage = job.flow, job.stage
        what = f"output of step {stage.name!r}"
        if isinstance(result, Stop):
            out = self.limits.json_form(jsonable, result.output, what=what, stage=stage.name)
            return Outcome(
                output={"stopped": True, "reason": result.reason, "output": out},
                stop=out,
                stop_reason=result.reason,
                skipped=flow.remaining(stage.name),
                usage=ctx.usage or None,
            )
        typed = stage.output_adapter.validate_python(result)
        output = self.limits.json_form(stage.dump_output, typed, what=what, stage=stage.name)
        plan = plan_completion(flow, stage.name, claim.item, output)
        return Outcome(
            output=output,
            inserts=plan.inserts,
            gates=plan.gates,
            end=plan.end,
            usage=ctx.usage or None,
            trace=job.got.run.trace,
        )

    def _finished_attempt(self, job: Job, began: float, ctx: Context, outcome: str) -> None:
        seconds, usage = time.monotonic() - began, ctx.usage or None
        self._emit("step_finished", job, outcome=outcome, seconds=seconds, usage=usage)

    def _emit(self, hook: str, job: Job, **fields: Any) -> None:
        stage = job.stage
        self.observers.emit(hook, flow=job.flow.name, step=stage.name, queue=stage.queue, **fields)

    # -- apply -------------------------------------------------------------------
    def _apply_success(self, job: Job, outcome: Outcome, began: float, ctx: Context) -> Next:
        fault("before-commit")
        slots = slots_of(job.stage)
        done = self.store.runs.complete(job.step_id, job.got.message_id, job.run_id, outcome, slots)
        publish_handed(self.publisher, slots)
        spans.outcome("discarded" if done is None else "succeeded")
        if done is None:
            log.info(
                "step %s of run %s was already finished; result discarded",
                job.stage.name,
                job.run_id,
            )
            return None
        self._finished_attempt(job, began, ctx, "succeeded")
        fault("after-commit")
        if done.chained is not None:
            nxt = job.flow.steps[done.chained.name]
            step_id = outcome.inserts[0].id
            return replace(job, stage=nxt, step_id=step_id, chained=True), done.chained
        if done.ready:
            self.publisher.publish(job.got.run, [Outgoing.of(s) for s in done.ready])
        fault("after-publish")
        if done.ended:
            self.finished(job.run_id, job.flow.name, RunStatus.SUCCEEDED)
        return None

    def _apply_failure(
        self, job: Job, claim: Claim, failure: Failure, usage: dict[str, Any]
    ) -> None:
        exc, stage = failure.exc, job.stage
        if failure.delay_ms is None:
            self._final_failure(job, claim, exc, usage)
            raise StepFailed(f"{type(exc).__name__}: {short(exc)}") from exc
        spans.outcome("retried", exc)
        error = error_record(exc, step=stage.name, attempt=claim.attempts)
        due = utcnow() + timedelta(milliseconds=failure.delay_ms)
        slots = slots_of(stage)
        self.store.runs.schedule_retry(job.step_id, error, due, usage or None, slots)
        publish_handed(self.publisher, slots)
        log.warning(
            "step %s of run %s failed (attempt %d of %d): %s: %s; retrying in %.1fs",
            stage.name,
            claim.run_id,
            claim.attempts,
            stage.retries + 1,
            type(exc).__name__,
            short(exc),
            failure.delay_ms / 1000,
        )
        if job.chained:
            # No message of its own to send again: its retry is a timer message.
            retry = Outgoing(job.step_id, stage.name, stage.queue, failure.delay_ms, due)
            self.publisher.publish(job.got.run, [retry])
            return
        # The row holds the due time; a longer wait hops (see Publisher.hop).
        delay = self.publisher.hop(failure.delay_ms)
        raise dramatiq.Retry(f"{type(exc).__name__}", delay=delay) from exc

    def _final_failure(
        self, job: Job, claim: Claim, exc: BaseException, usage: dict[str, Any] | None = None
    ) -> None:
        flow, stage = job.flow, job.stage
        spans.outcome("failed", exc)
        error = error_record(exc, step=stage.name, attempt=claim.attempts)
        settled = None if claim.item is None else plan_settled_failure(flow, stage.name)
        slots = slots_of(stage)
        if settled is not None:
            # The join takes Settled[...]: this item's failure is an input, not the end.
            trace = job.got.run.trace
            outcome = Outcome(gates=settled.gates, failed=error, usage=usage or None, trace=trace)
            mid = job.got.message_id
            done = self.store.runs.complete(job.step_id, mid, claim.run_id, outcome, slots)
            publish_handed(self.publisher, slots)
            log.warning(
                "item %s of step %s in run %s failed after %d attempt(s): %s: %s",
                claim.item,
                stage.name,
                claim.run_id,
                claim.attempts,
                type(exc).__name__,
                short(exc),
            )
            if done is not None and done.ready:
                self.publisher.publish(job.got.run, [Outgoing.of(s) for s in done.ready])
            return
        if self.store.runs.fail(job.step_id, claim.run_id, error, usage or None, slots):
            publish_handed(self.publisher, slots)
            log.error(
                "run %s of %s failed in step %s after %d attempt(s): %s: %s",
                claim.run_id,
                flow.name,
                stage.name,
                claim.attempts,
                type(exc).__name__,
                short(exc),
                # An expected refusal (bad data) needs no traceback; the rest do.
                exc_info=None if expected(exc) else (type(exc), exc, exc.__traceback__),
            )
            self.finished(claim.run_id, flow.name, RunStatus.FAILED)

    # -- a message that did not claim its step -------------------------------------
    def not_claimed(self, flow: FlowGraph, step_id: str, got: Delivery) -> None:
        """A message whose step it cannot run now: a duplicate, an early timer, a deadline."""
        row = self.store.step_row(step_id)
        run = got.run
        if row is None:
            # Kept as a dead letter with this reason (the recorder logs it once).
            raise Refused(f"unknown step: no step {step_id!r} is stored (run {run.run_id})")
        done = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)
        if row.status in done and row.claimed_by == got.message_id:
            # A redelivery of the very message that completed this step: its worker
            # may have died before publishing what follows, or in a chain.
            self._came_back(flow, row.run_id, row.name, got)
            return
        stage = flow.steps.get(row.name)
        due = row.scheduled_at
        pending = (StepStatus.QUEUED.value, StepStatus.WAITING.value)
        if stage is not None and due is not None and row.status in pending:
            left = int((due - utcnow()).total_seconds() * 1000)
            if left > 0:  # a timer hop: not yet
                self.publisher.publish(run, [Outgoing(step_id, row.name, stage.queue, left, due)])
                return
            if row.status == StepStatus.WAITING.value and stage.wait_for and row.pending == 1:
                self._signal_timed_out(flow, stage, step_id, run)
                return
        log.debug(
            "duplicate message for step %s (%s) of run %s ignored", row.name, row.status, row.run_id
        )

    def _came_back(self, flow: FlowGraph, run_id: str, name: str, got: Delivery) -> None:
        """Release the chain the message's worker left, publish the successors still queued."""
        names = self.store.runs.release_chain(run_id, got.message_id)
        children = sorted({c for n in names for c in flow.children(n)})
        queued = self.store.runs.queued_steps(run_id, children)
        if queued:
            log.info(
                "re-publishing %d successor(s) of step %s in run %s", len(queued), name, run_id
            )
            self.publisher.publish(got.run, [Outgoing(i, n, q) for i, n, q in queued])

    def _signal_timed_out(
        self, flow: FlowGraph, stage: Stage[Any, Any], step_id: str, run: RunRef
    ) -> None:
        seconds = (stage.wait_timeout_ms or 0) / 1000
        exc = StepTimeout(f"step {stage.name!r} waited {seconds:g}s for signal {stage.wait_for!r}")
        error = error_record(exc, step=stage.name, attempt=0)
        error.pop("traceback", None)
        outcome = self.store.control.time_out_wait(
            step_id,
            run.run_id,
            gate(flow, stage.name, 0),
            run_without=stage.runs_on_timeout,
            error=error,
        )
        if isinstance(outcome, NewStep):
            log.info(
                "signal %r for run %s timed out; running %s without it (flowkit.TimedOut)",
                stage.wait_for,
                run.run_id,
                stage.name,
            )
            self.publisher.publish(run, [Outgoing.of(outcome)])
        elif outcome:
            log.warning("run %s failed: %s", run.run_id, exc)
            self.finished(run.run_id, flow.name, RunStatus.FAILED)
