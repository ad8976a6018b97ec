"""The flows of the recovery scenarios: steps without a timeout, writing the fault ledger.

Their own App and queues (``rk.*``), so the in-worker sweep is watched on queues no
other scenario uses; the ledger is :mod:`fault_flows`'s.
"""

from __future__ import annotations

import threading

from fault_flows import begin, effect
from pydantic import BaseModel, Field

import flowkit


class Job(BaseModel):
    n: int = Field(ge=0)
    work_ms: int = 0


@flowkit.stage(queue="rk.quick", retries=3)
def quick(job: Job, ctx: flowkit.Context) -> Job:
    begin(ctx)
    effect(ctx)
    return job


@flowkit.stage(queue="rk.quick", retries=3)
def done(job: Job, ctx: flowkit.Context) -> int:
    begin(ctx)
    effect(ctx)
    return job.n


quick_runs = flowkit.Pipeline("rk", [quick, done])


@flowkit.stage(queue="rk.slow", retries=3)  # no timeout: its lease is an hour
def slow(job: Job, ctx: flowkit.Context) -> int:
    begin(ctx)
    if job.work_ms:
        threading.Event().wait(job.work_ms / 1000)  # the step's work, not a sync
    effect(ctx)
    return job.n


slow_runs = flowkit.Pipeline("rk-slow", [slow])

app = flowkit.App("recovery", flows=[quick_runs, slow_runs])
