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


#: How long the concurrency-limited OCR step works, and how many may run at once.
OCR_SECONDS = 0.5
OCR_CONCURRENCY = 2


@flowkit.stage(queue="lim.ocr", concurrency=OCR_CONCURRENCY, retries=0)
def ocr(job: Job) -> int:
    threading.Event().wait(OCR_SECONDS)  # simulated work, holding one of the two slots
    return job.n


rated_pipeline = flowkit.Pipeline("lim-rated", [rated])
tenant_pipeline = flowkit.Pipeline("lim-tenants", [per_tenant])
ocr_pipeline = flowkit.Pipeline("lim-ocr", [ocr])
app = flowkit.App("lim", flows=[rated_pipeline, tenant_pipeline, ocr_pipeline])
