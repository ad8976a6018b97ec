"""The :class:`Context` a step function may take as its second parameter."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Context"]


class _StepLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every record with the run's identity and adds it as ``extra`` fields."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        tags = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
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
    logger: logging.LoggerAdapter = field(init=False, repr=False)  # type: ignore[type-arg]

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
