"""What a message body may be on the wire: plain JSON, optionally signed, within limits.

With signing keys (``FLOWKIT_SIGNING_KEY``), a body is
``b"fk1:" + hex(HMAC-SHA256(key, json)) + b":" + json``: the first key
signs, every key verifies (key rotation). A worker with keys refuses a body
without a signature or with one no key matches, *before* decoding its JSON.
A worker without keys accepts a signed body and ignores the signature
(verification is opt-in, so keys can be rolled out publishers first).

Every body is also bounded: its size is checked before anything is
decoded, its nesting depth on the parsed value.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_PAYLOAD_DEPTH, Settings
from ..payloads import nesting_exceeds

__all__ = ["PREFIX", "Rejected", "WirePolicy"]

PREFIX = b"fk1:"
_MAC_HEX = 64  # SHA-256, hex
_HEAD = len(PREFIX) + _MAC_HEX + 1
#: Floors of the limits on a message (ids plus Dramatiq's retry bookkeeping, such
#: as a traceback), whatever smaller payload limits are configured.
MIN_MESSAGE_BYTES = 64 * 1024
MIN_MESSAGE_DEPTH = 8


class Rejected(Exception):
    """A body this worker refuses; ``reason`` says why (it is recorded with the dead letter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, repr=False)
class WirePolicy:
    """How this process signs the bodies it sends and checks the ones it receives."""

    keys: tuple[bytes, ...] = field(default=())
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH

    @classmethod
    def of(cls, settings: Settings) -> WirePolicy:
        return cls.build(
            settings.signing_keys,
            max_bytes=max(settings.max_payload_bytes, MIN_MESSAGE_BYTES),
            max_depth=max(settings.max_payload_depth, MIN_MESSAGE_DEPTH),
        )

    @classmethod
    def build(
        cls,
        keys: Sequence[str] = (),
        *,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH,
    ) -> WirePolicy:
        return cls(tuple(k.encode("utf-8") for k in keys), max_bytes, max_depth)

    @property
    def signs(self) -> bool:
        return bool(self.keys)

    def seal(self, body: bytes) -> bytes:
        """The body to send: signed with the first key, or as is without keys."""
        if not self.keys:
            return body
        mac = hmac.new(self.keys[0], body, hashlib.sha256).hexdigest().encode("ascii")
        return PREFIX + mac + b":" + body

    def open(self, data: bytes) -> bytes:
        """The JSON bytes of a received body, after its size and signature checks.

        Raises:
            Rejected: too big, or (with keys) a missing, malformed or wrong signature.
        """
        if len(data) > self.max_bytes + (_HEAD if data.startswith(PREFIX) else 0):
            raise Rejected(f"too large: {len(data):,} bytes (limit {self.max_bytes:,})")
        if not data.startswith(PREFIX):
            if self.keys:
                raise Rejected("signature missing")
            return data
        mac, sep, body = data[len(PREFIX) : _HEAD - 1], data[_HEAD - 1 : _HEAD], data[_HEAD:]
        if sep != b":" or len(mac) != _MAC_HEX:
            raise Rejected("signature malformed")
        if not self.keys:
            return body  # verification is opt-in
        for key in self.keys:
            expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
            if hmac.compare_digest(expected, mac):
                return body
        raise Rejected("signature does not match any accepted key")

    def check_depth(self, fields: Any) -> None:
        """Raises:
        Rejected: the parsed body nests deeper than the limit.
        """
        if nesting_exceeds(fields, self.max_depth):
            raise Rejected(f"nested more than {self.max_depth} levels deep")

    def __repr__(self) -> str:
        keys = f"<{len(self.keys)} hidden>" if self.keys else "()"
        return f"WirePolicy(keys={keys}, max_bytes={self.max_bytes}, max_depth={self.max_depth})"
