"""Flows for the limits and dead-letter tests on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import threading

from pydantic import BaseModel

import flowkit


class Job(BaseModel):
    tenant_id: str
    n: int


limited_queue = flowkit.Queue("lim.rated", rate_limit="10/s")


@flowkit.stage(queue=limited_queue)
def rated(job: Job) -> int:
    return job.n


@flowkit.stage(queue="lim.tenants", concurrency=1, concurrency_key=lambda j: j.tenant_id)
def per_tenant(job: Job) -> int:
    threading.Event().wait(0.05)  # simulated work
    return job.n


rated_pipeline = flowkit.Pipeline("lim-rated", [rated])
tenant_pipeline = flowkit.Pipeline("lim-tenants", [per_tenant])
app = flowkit.App("lim", flows=[rated_pipeline, tenant_pipeline])
