"""LLM steps: call a chat model and get a validated pydantic object back.

Uses the official ``openai`` client (the ``llm`` extra), so any OpenAI-compatible
server works: set ``OPENAI_API_KEY`` and, for another server, ``OPENAI_BASE_URL``.
The model comes from the call, ``App(llm_model=...)`` or ``FLOWKIT_LLM_MODEL``.

Failure semantics inside a step:

* a 429 becomes :class:`~flowkit.RetryAfter` (the step is retried after the
  server's ``Retry-After``, or with the step's backoff);
* a 5xx (or 408/409), a timeout or a connection error becomes
  :class:`~flowkit.LLMUnavailable`, retried with the step's backoff;
* an answer that is not valid JSON for the schema is re-asked up to ``reasks``
  times in the same attempt (the validation error is quoted back), then
  :class:`~flowkit.LLMOutputError` fails the step without retries;
* other 4xx answers raise :class:`~flowkit.LLMRequestError`, which fails at once.

An ``async def`` step awaits :func:`astructured` and :func:`acomplete` instead: the same
calls on ``openai.AsyncOpenAI``, whose cache reads and writes run in a thread.

Tokens (and cost, with ``App(llm_prices=...)``) are recorded on the step and
shown by ``flowkit runs show``. With ``cache=True`` (the default) answers are
kept in the flowkit database keyed by (model, messages, schema), so re-running
a workflow does not pay twice.

The errors are defined in :mod:`flowkit.errors` with flowkit's others and are
importable from here too (``flowkit.llm.LLMError``).

.. versionadded:: 0.1
"""

# The package's parts, one job each:
#   _config     which openai client, which model, what a call costs
#   _transport  one chat-completion request, its failures mapped to flowkit errors
#   _prompt     the messages sent, and reading the answers that come back
#   _cache      the answer cache the step's Context carries (ctx.llm_cache)
#   _api        structured() and complete(), built from the above
#   _aio        astructured() and acomplete(): the same on the async client

from __future__ import annotations

from ..errors import LLMError, LLMOutputError, LLMRequestError, LLMUnavailable
from ._aio import acomplete, astructured
from ._api import complete, structured

__all__ = [
    "LLMError",
    "LLMOutputError",
    "LLMRequestError",
    "LLMUnavailable",
    "acomplete",
    "astructured",
    "complete",
    "structured",
]
