"""The web dashboard: runs, flows, queues, workers and dead letters, and an HTTP API.

Server-rendered HTML (Jinja2, autoescaped) with a little plain JavaScript for
live refresh and confirm dialogs, and the same data as JSON under ``/api``.
Needs the ``dashboard`` extra (``pip install '.[dashboard]'`` from flowkit's source); start it
with ``flowkit dashboard`` or serve :func:`create_app` with any ASGI server::

    from flowkit.dashboard import create_app
    asgi = create_app(app, token=os.environ["FLOWKIT_DASHBOARD_TOKEN"])

.. versionadded:: 0.3
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..app import App
from .api import api_routes
from .core import Dashboard
from .forms import form_routes
from .pages import page_routes

__all__ = ["Dashboard", "create_app"]

#: sent with every answer: no inline script, no framing, no MIME sniffing
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    text = {404: "not found", 405: "method not allowed"}.get(status, "unexpected error")
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": text}, status_code=status)
    return PlainTextResponse(text, status_code=status)


def create_app(
    flowkit_app: App,
    *,
    read_only: bool = False,
    token: str | None = None,
    require_token_for_reads: bool = False,
) -> Starlette:
    """The dashboard of ``flowkit_app``, as an ASGI application.

    Parameters:
        flowkit_app: the App to show. Its database is read (and never created:
            a missing schema is an error page); its flows, when it has any, draw
            the graphs and make the actions possible. Configure it with
            ``embedded_worker=False``: the dashboard runs no steps.
        read_only: offer no action: buttons are not rendered and every POST
            answers 403.
        token: the token every mutating request needs (``Authorization: Bearer``
            for the API, the ``/login`` page for a browser); ``None``: no
            authentication at all.
        require_token_for_reads: reads need the token too.

    Raises:
        ValueError: ``require_token_for_reads`` without a ``token``.
    """
    if require_token_for_reads and token is None:
        raise ValueError("require_token_for_reads needs a token")
    dash = Dashboard(
        flowkit_app,
        read_only=read_only,
        token=token,
        require_token_for_reads=require_token_for_reads,
    )
    static = StaticFiles(packages=[("flowkit.dashboard", "static")])
    routes = [
        *api_routes(dash),
        *form_routes(dash),
        *page_routes(dash),
        Mount("/static", app=static, name="static"),
    ]
    asgi = Starlette(
        routes=routes,
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={404: _http_error, 405: _http_error, 500: _http_error},
    )
    asgi.state.dashboard = dash
    return asgi
