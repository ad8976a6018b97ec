"""The async benchmark's steps: a one-second ``async def`` step and the same as a sync one."""

from __future__ import annotations

import asyncio
import time

import flowkit

#: How long each step waits (an HTTP call's or a model's wall time).
NAP_SECONDS = 1.0


@flowkit.stage(name="nap", queue="fk.aio", retries=0)
async def nap_async(x: int) -> int:
    await asyncio.sleep(NAP_SECONDS)  # awaiting: the worker thread is free meanwhile
    return x


@flowkit.stage(name="nap", queue="fk.sync", retries=0)
def nap_sync(x: int) -> int:
    time.sleep(NAP_SECONDS)  # blocking: holds one of the worker's threads
    return x


async_naps = flowkit.Pipeline("bench-async", [nap_async])
sync_naps = flowkit.Pipeline("bench-sync", [nap_sync])

app = flowkit.App("bench-aio", flows=[async_naps, sync_naps])
