"""What a join receives when it settles a fan-out instead of failing on the first item."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

__all__ = ["ItemFailure", "Settled"]

T = TypeVar("T")


class ItemFailure(BaseModel):
    """One fanned-out item that failed after its retries.

    .. versionadded:: 0.1
    """

    item: int
    input: Any = None
    error_type: str
    message: str


class Settled(BaseModel, Generic[T]):
    """The input of a join that runs once every item is done, failed or not.

    Annotate the join's parameter as ``flowkit.Settled[ItemOutput]`` to choose
    this policy; with a plain ``list[ItemOutput]`` a failed item fails the run.

    Attributes:
        results: the outputs of the items that succeeded, in item order.
        failures: the items that failed, with their error.

    .. versionadded:: 0.1
    """

    results: list[T]
    failures: list[ItemFailure] = []


def settled_item_type(tp: Any) -> Any | None:
    """``T`` if ``tp`` is ``Settled[T]``, else ``None``."""
    meta = getattr(tp, "__pydantic_generic_metadata__", None)
    if meta and meta.get("origin") is Settled and meta.get("args"):
        return meta["args"][0]
    return None
