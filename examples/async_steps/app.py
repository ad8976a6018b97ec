"""Async steps: quotes fetched with ``async def``, the best one chosen by a plain function.

``fetch_quotes`` asks three suppliers at once (``asyncio.gather``) and awaits their
answers; while it awaits, the worker thread that claimed it is already running other
steps, so one worker with a few threads keeps hundreds of these in flight. Here the
suppliers are simulated with ``asyncio.sleep``; a real one would be an
``httpx.AsyncClient`` call or ``await flowkit.llm.astructured(...)``::

    flowkit worker examples/async_steps/app.py:app --threads 8

Importing this module only defines the steps, the pipeline and ``app``; nothing
connects until the first submit or worker start.
"""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel

import flowkit

__all__ = ["app", "pricing"]

SUPPLIERS = ("acme", "globex", "initech")


class Item(BaseModel):
    sku: str
    quantity: int


class Quote(BaseModel):
    supplier: str
    unit_price: float


class Quotes(BaseModel):
    item: Item
    quotes: list[Quote]


class Choice(BaseModel):
    sku: str
    supplier: str
    total: float


async def ask(supplier: str, item: Item) -> Quote:
    """One supplier's answer: a network call's wait, simulated."""
    await asyncio.sleep(random.uniform(0.2, 0.6))
    price = 10 + (sum(map(ord, supplier + item.sku)) % 50) / 10
    return Quote(supplier=supplier, unit_price=round(price, 2))


@flowkit.stage(timeout="30s", retries=3)
async def fetch_quotes(item: Item, ctx: flowkit.Context) -> Quotes:
    if await ctx.acancelled():  # the store is read in a thread, not on the event loop
        raise flowkit.PermanentError("run cancelled")
    quotes = await asyncio.gather(*(ask(s, item) for s in SUPPLIERS))
    ctx.logger.info("%d quotes for %s", len(quotes), item.sku)
    return Quotes(item=item, quotes=list(quotes))


@flowkit.stage
def choose(q: Quotes) -> Choice:
    best = min(q.quotes, key=lambda x: x.unit_price)
    return Choice(sku=q.item.sku, supplier=best.supplier, total=best.unit_price * q.item.quantity)


pricing = flowkit.Pipeline("pricing", [fetch_quotes, choose])
app = flowkit.App("async-steps", flows=[pricing])
