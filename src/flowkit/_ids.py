"""Time-ordered ids: 48 bits of milliseconds then 80 random bits, as 32 hex digits.

Ordered ids keep B-tree inserts at the right edge of the index (like UUIDv7).
"""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """A new 32-character id that sorts by creation time."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
