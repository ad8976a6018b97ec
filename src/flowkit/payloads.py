"""Limits on what a payload may be: its size as JSON and how deeply it nests.

Checked on the JSON form of a payload at ``submit``, ``emit`` and ``signal``
(before anything is stored or sent) and on every message a worker receives
(see :mod:`flowkit.runtime.wire`). The depth walk runs over the parsed value,
never over the characters of a body, and stops as soon as it passes the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_PAYLOAD_DEPTH, Settings
from .errors import PayloadTooLarge

__all__ = ["PayloadLimits", "json_size", "nesting_exceeds"]


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists, tuples and dicts more than ``limit`` levels deep.

    A scalar is depth 0, ``[]`` and ``{}`` depth 1, ``[[1]]`` depth 2.
    Iterative, so a value of any depth is safe to check.
    """
    if not isinstance(value, (dict, list, tuple)):
        return False
    if limit < 1:
        return True
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list, tuple)):
                if depth + 1 > limit:
                    return True
                if child:
                    stack.append((child, depth + 1))
    return False


@dataclass(frozen=True)
class PayloadLimits:
    """The size and depth limits of payloads (``FLOWKIT_MAX_PAYLOAD_BYTES`` / ``_DEPTH``)."""

    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH

    @classmethod
    def of(cls, settings: Settings) -> PayloadLimits:
        return cls(settings.max_payload_bytes, settings.max_payload_depth)

    def check_raw(self, value: Any, *, what: str, stage: str) -> None:
        """Refuse a raw value (lists and dicts, before validation) nested too deeply.

        Raises:
            PayloadTooLarge: over the depth limit.
        """
        if nesting_exceeds(value, self.max_depth):
            raise self._too_deep(what, stage)

    def json_form(self, dump: Callable[[Any], Any], typed: Any, *, what: str, stage: str) -> Any:
        """``dump(typed)``, the JSON form of a validated payload, checked against both limits.

        Parameters:
            dump: turns the validated value into its JSON form.
            typed: the validated value.
            what: how error messages name the payload (``"input for 'orders'"``).
            stage: the stage the payload is for.

        Raises:
            PayloadTooLarge: over a limit; the message names the limit and its setting.
        """
        try:
            payload = dump(typed)
        except RecursionError:
            raise self._too_deep(what, stage) from None
        except ValueError as exc:
            # pydantic refuses to serialize past its own depth limit.
            if "depth" not in str(exc):
                raise
            raise self._too_deep(what, stage) from None
        if nesting_exceeds(payload, self.max_depth):
            raise self._too_deep(what, stage)
        size = json_size(payload, self.max_bytes)
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"{what} is {size:,} bytes of JSON, over the limit of {self.max_bytes:,} "
                "(FLOWKIT_MAX_PAYLOAD_BYTES); nothing was stored or sent",
                limit="bytes",
                stage=stage,
            )
        return payload

    def _too_deep(self, what: str, stage: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"{what} is nested more than {self.max_depth} levels deep "
            "(FLOWKIT_MAX_PAYLOAD_DEPTH); nothing was stored or sent",
            limit="depth",
            stage=stage,
        )


def json_size(value: Any, max_bytes: int) -> int:
    """The size of ``value``'s compact JSON text in UTF-8 bytes, exact when over ``max_bytes``.

    Under the limit it may count characters instead (each is 1 to 4 bytes).
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # A character is at most 4 bytes: only count them when it could matter.
    if len(text) * 4 <= max_bytes:
        return len(text)
    return len(text.encode("utf-8"))
