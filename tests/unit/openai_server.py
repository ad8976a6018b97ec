"""A real local HTTP server that speaks OpenAI's chat-completions API, for tests.

The tests of :mod:`flowkit.llm` run the real ``openai`` client against it (never
a patched client)::

    def test_x(openai_server):
        openai_server.script = [429, '{"a": 1}']    # what the next requests get
        ...
        assert openai_server.requests[1]["messages"][-1]["content"] == "..."

A scripted reply is the assistant's content (``str``), an HTTP error status
(``int``: 429 comes with ``Retry-After: 0``), or a :class:`Reply` for anything
else (headers, the server's error message, token counts).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

API_KEY = "sk-test-0123456789-secret"
PATHS = ("/v1/chat/completions", "/chat/completions")


@dataclass
class Reply:
    """One scripted answer: a chat completion (``status=200``) or an error."""

    status: int = 200
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = "scripted error"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    finish_reason: str = "stop"


def _as_reply(item: str | int | Reply) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, int):
        return Reply(item, headers={"Retry-After": "0"} if item == 429 else {})
    return Reply(content=item)


class FakeOpenAI:
    """Answers ``POST /v1/chat/completions`` from :attr:`script`; records every request.

    Attributes:
        script: the replies still to give, in order; when it is empty a request
            gets a 400 saying so (the test sees an ``LLMRequestError``).
        requests: the JSON body of every chat-completions request, in order.
        headers: the headers of those requests, names in lower case (same order).
        times: ``time.monotonic()`` when each request arrived.
    """

    def __init__(self) -> None:
        self.script: list[str | int | Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path not in PATHS:
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                body = json.loads(raw)
                with server.lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.times.append(time.monotonic())
                    item = server.script.pop(0) if server.script else None
                if item is None:
                    item = Reply(400, error="the test scripted no reply for this request")
                reply = _as_reply(item)
                if reply.status != 200:
                    error = {"message": reply.error, "type": "scripted", "code": reply.status}
                    self._send(reply.status, {"error": error}, reply.headers)
                    return
                usage = {
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                }
                payload = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "unknown"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": reply.finish_reason,
                            "message": {"role": "assistant", "content": reply.content},
                        }
                    ],
                    "usage": usage,
                }
                self._send(200, payload, reply.headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A short poll interval makes shutdown() quick.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        """The base URL for ``OPENAI_BASE_URL`` (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A :class:`FakeOpenAI` on 127.0.0.1, with ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` set."""
    server = FakeOpenAI()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.delenv("FLOWKIT_LLM_MODEL", raising=False)
    try:
        yield server
    finally:
        server.close()
