"""The :class:`Context` a step function may take as its second parameter."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .app import App

__all__ = ["Context", "LLMCachePort"]


class LLMCachePort(Protocol):
    """Where :mod:`flowkit.llm` keeps model responses (the store's ``llm_cache``)."""

    def get(self, key: str) -> tuple[Any, int, int] | None:
        """``(response, prompt_tokens, completion_tokens)`` cached under ``key``."""

    def put(
        self, key: str, *, model: str, response: Any, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Remember a response."""


class _StepLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every record with the run's identity and adds it as ``extra`` fields."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        tags = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
        # The JSON log format drops the prefix: the same values are its fields.
        extra["flowkit_prefix"] = f"[{tags}] "
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{tags}] {msg}", kwargs


@dataclass
class Context:
    """What a running step knows about itself.

    Attributes:
        run_id: the id of the run this step belongs to.
        flow: the flow's name.
        step: the step's name (the stage name).
        attempt: 1 for the first try, 2 for the first retry, and so on.
        idempotency_key: ``"<run_id>:<step>"`` (``"<run_id>:<step>[<item>]"`` for a
            fanned-out item), identical across retries and
            redeliveries of this step; use it to make side effects exactly-once
            (a unique column, an ``Idempotency-Key`` header).
        key: the run's own idempotency key given at submit, if any.
        tenant_id: the input's ``tenant_id`` field when it has one.
        item: for a fanned-out step (``each=True``), the item's position.
        logger: a :class:`logging.Logger`-like adapter whose records carry run,
            step, key and tenant.
        app: the :class:`~flowkit.App` running the step, for your own code (its
            settings, your tables); flowkit's runtime never reads it.
        usage: LLM tokens and cost spent so far (see :meth:`record_usage`).
        llm_cache: the response cache :mod:`flowkit.llm` uses (``None``: no cache).
        llm_model: the default model of :mod:`flowkit.llm` calls (``App(llm_model=)``).
        llm_prices: USD per million prompt and completion tokens, per model.
        cancel_probe: tells whether the run was cancelled or timed out (set by
            the runtime; ``None`` outside a run).

    .. versionadded:: 0.1
    """

    run_id: str
    flow: str
    step: str
    attempt: int
    idempotency_key: str
    key: str | None = None
    tenant_id: str | None = None
    item: int | None = None
    app: App | None = field(default=None, repr=False)
    logger: logging.LoggerAdapter = field(init=False, repr=False)  # type: ignore[type-arg]
    #: LLM usage of the step so far, over all its attempts; recorded when it ends
    usage: dict[str, Any] = field(default_factory=dict, repr=False)
    llm_cache: LLMCachePort | None = field(default=None, repr=False)
    llm_model: str | None = field(default=None, repr=False)
    llm_prices: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    cancel_probe: Callable[[], bool] | None = field(default=None, repr=False)
    _checked_at: float = field(default=-1e9, init=False, repr=False)
    _cancelled: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.logger = _StepLogger(
            logging.getLogger(f"flowkit.step.{self.flow}.{self.step}"),
            {
                "run_id": self.run_id,
                "step": self.step,
                "attempt": self.attempt,
                "item": self.item,
                "key": self.key,
                "tenant_id": self.tenant_id,
            },
        )

    def record_usage(
        self,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float | None = None,
        cached: bool = False,
    ) -> None:
        """Add one model call's tokens (and cost) to the step's usage.

        :mod:`flowkit.llm` calls it; steps that call other model APIs may too.
        """
        u = self.usage
        u["calls"] = u.get("calls", 0) + 1
        if cached:
            u["cached_calls"] = u.get("cached_calls", 0) + 1
        else:
            u["prompt_tokens"] = u.get("prompt_tokens", 0) + prompt_tokens
            u["completion_tokens"] = u.get("completion_tokens", 0) + completion_tokens
            if cost is not None:
                u["cost"] = round(u.get("cost", 0.0) + cost, 8)
        models = u.setdefault("models", [])
        if model not in models:
            models.append(model)

    @property
    def cancelled(self) -> bool:
        """Whether the run was cancelled or timed out, so a long step should stop early.

        Reads the run's status from the store at most once a second. In an
        ``async def`` step, ``await ctx.acancelled()`` instead: this read would block
        the event loop.
        """
        if self.cancel_probe is None:
            return False
        now = time.monotonic()
        if now - self._checked_at >= 1.0:
            self._cancelled = self.cancel_probe()
            self._checked_at = now
        return self._cancelled

    async def acancelled(self) -> bool:
        """:attr:`cancelled` for an ``async def`` step: the store is read in a thread
        (``asyncio.to_thread``), never on the event loop.

        .. versionadded:: 0.4
        """
        if self.cancel_probe is None:
            return False
        now = time.monotonic()
        if now - self._checked_at >= 1.0:
            self._checked_at = now
            self._cancelled = await asyncio.to_thread(self.cancel_probe)
        return self._cancelled
