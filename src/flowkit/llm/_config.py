"""Where an LLM request goes: the ``openai`` package, the client, the model, the price."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..context import Context

#: Seconds one HTTP request may take before it counts as ``LLMUnavailable``.
TIMEOUT = 120.0

# One client per (base URL, hash of the key): clients are thread-safe and pool connections.
_clients: dict[tuple[str | None, str], Any] = {}
_clients_lock = threading.Lock()
# Async clients, per event loop (forgotten with their loop).
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Any]] = (
    weakref.WeakKeyDictionary()
)


def openai_module() -> Any:
    """The ``openai`` package, imported on first use (it is an optional extra)."""
    try:
        import openai
    except ImportError as exc:
        raise ConfigurationError(
            "flowkit.llm needs the openai package: install flowkit with the llm extra "
            "(pip install '.[llm]' from flowkit's source, or pip install 'openai>=1.30')"
        ) from exc
    return openai


def client(given: Any) -> Any:
    """``given``, else the shared client for ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``."""
    if given is not None:
        return given
    openai = openai_module()
    base, key = _server()
    slot = (base, hashlib.sha256((key or "").encode()).hexdigest())
    with _clients_lock:
        found = _clients.get(slot)
        if found is None:
            # Retries are flowkit's job (durable step retries with backoff), not
            # the client's. A local server usually needs no key, but the client
            # insists on one.
            found = openai.OpenAI(
                api_key=key or "not-needed", base_url=base, max_retries=0, timeout=TIMEOUT
            )
            _clients[slot] = found
    return found


def async_client(given: Any) -> Any:
    """``given``, else an ``openai.AsyncOpenAI`` client for this event loop.

    One per (loop, base URL, key): an async client's connections belong to the loop
    that opened them (a worker has one loop; a script may run several in turn).
    """
    if given is not None:
        return given
    openai = openai_module()
    base, key = _server()
    slot = (base, hashlib.sha256((key or "").encode()).hexdigest())
    loop = asyncio.get_running_loop()
    with _clients_lock:
        mine = _async_clients.setdefault(loop, {})
        found = mine.get(slot)
        if found is None:
            found = openai.AsyncOpenAI(
                api_key=key or "not-needed", base_url=base, max_retries=0, timeout=TIMEOUT
            )
            mine[slot] = found
    return found


def _server() -> tuple[str | None, str | None]:
    """``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.

    Raises:
        ConfigurationError: neither is set.
    """
    base = os.environ.get("OPENAI_BASE_URL") or None
    key = os.environ.get("OPENAI_API_KEY") or None
    if key is None and base is None:
        raise ConfigurationError(
            "flowkit.llm has no model server: set OPENAI_API_KEY (and OPENAI_BASE_URL "
            "for another OpenAI-compatible server), or pass client=..."
        )
    return base, key


def model(given: str | None, ctx: Context | None) -> str:
    """The call's model, else ``App(llm_model=...)``, else ``$FLOWKIT_LLM_MODEL``."""
    chosen = given or (ctx.llm_model if ctx is not None else None)
    chosen = chosen or os.environ.get("FLOWKIT_LLM_MODEL")
    if not chosen:
        raise ConfigurationError(
            "flowkit.llm has no model: pass model=..., set App(llm_model=...) "
            "or the FLOWKIT_LLM_MODEL environment variable"
        )
    return chosen


def cost(ctx: Context | None, model: str, prompt: int, completion: int) -> float | None:
    """The call's cost in USD from ``App(llm_prices=...)``; ``None`` for an unpriced model."""
    prices = ctx.llm_prices if ctx is not None else {}
    if model not in prices:
        return None
    p_in, p_out = prices[model]
    return (prompt * p_in + completion * p_out) / 1_000_000
