"""The messages sent to the model, and reading the answers that come back."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\s*```\s*$", re.S)
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


def messages(given: str | list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """The chat messages for a prompt or a caller's messages, with ``system`` merged in."""
    if isinstance(given, str):
        msgs = [{"role": "user", "content": given}]
    else:
        msgs = [dict(m) for m in given]
    if not msgs:
        raise ValueError("flowkit.llm: no messages to send")
    if system:
        if msgs[0].get("role") == "system":
            # One system message: the caller's first, then ours.
            msgs[0]["content"] = f"{msgs[0].get('content', '')}\n\n{system}".strip()
        else:
            msgs.insert(0, {"role": "system", "content": system})
    return msgs


def request_options(temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
    """The optional request fields: only those the caller set."""
    extra: dict[str, Any] = {}
    if temperature is not None:
        extra["temperature"] = temperature
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens
    return extra


def schema_instruction(json_schema: dict[str, Any]) -> str:
    """The system instruction for servers that ignore ``response_format``."""
    return (
        "Answer with one JSON object only, no prose and no code fences, "
        "matching this JSON schema:\n" + json.dumps(json_schema)
    )


def response_format(schema: type[BaseModel], json_schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` asking for JSON that matches ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _SCHEMA_NAME.sub("_", schema.__name__)[:64] or "answer",
            "schema": json_schema,
            "strict": False,
        },
    }


def reask(schema: type[BaseModel], answer: str, error: str) -> list[dict[str, str]]:
    """The model's invalid answer and the user message quoting its validation error."""
    return [
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": f"That answer is not valid for the {schema.__name__} schema: "
            f"{error}. Answer again with one JSON object that matches the schema.",
        },
    ]


def strip_fences(text: str) -> str:
    """The answer without the ```` ``` ```` fences some models put around JSON."""
    m = _FENCE.match(text)
    return m.group(1) if m else text.strip()


def explain(exc: ValidationError) -> str:
    """A validation error in one line: the first ten problems by location."""
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:10]
    ]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
