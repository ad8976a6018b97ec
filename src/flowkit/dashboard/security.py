"""Who may read and who may act: the token, the login cookie and CSRF.

- The API takes the token as ``Authorization: Bearer TOKEN``.
- A browser enters it once on ``/login``; the dashboard then keeps, in an
  ``HttpOnly; SameSite=Strict`` cookie, an HMAC of the token (never the token).
- Every HTML form carries a CSRF token equal to the ``flowkit_csrf`` cookie
  (double submit), checked on every POST; an API POST must be
  ``application/json``, which a cross-site page cannot send without CORS.
- Read-only dashboards refuse every POST with 403, whoever sends it.

Tokens are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .core import Dashboard

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "SESSION_COOKIE",
    "api_read",
    "api_write",
    "authorized",
    "bearer",
    "csrf_token",
    "page_read",
    "page_write",
    "safe_next",
    "session_value",
    "set_cookies",
    "token_matches",
]

SESSION_COOKIE = "flowkit_session"
CSRF_COOKIE = "flowkit_csrf"
CSRF_FIELD = "csrf"

Endpoint = Callable[[Request], Awaitable[Response]]
#: renders an error page: (request, status, message) -> response
ErrorPage = Callable[[Request, int, str], Awaitable[Response]]


def token_matches(dash: Dashboard, given: str | None) -> bool:
    if dash.token is None or not given:
        return False
    return hmac.compare_digest(given.encode(), dash.token.encode())


def session_value(dash: Dashboard) -> str:
    """The login cookie's value: an HMAC of the token under this process's secret."""
    assert dash.token is not None
    return hmac.new(dash.secret, dash.token.encode(), hashlib.sha256).hexdigest()


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, if there is one."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() or None if scheme.lower() == "bearer" else None


def authorized(dash: Dashboard, request: Request) -> bool:
    """Whether the request carries the token (header) or the login cookie."""
    if dash.token is None:
        return True
    if token_matches(dash, bearer(request)):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(dash).encode())


def csrf_token(request: Request) -> str:
    """The CSRF token forms must carry: the cookie's, or a new one (set by :func:`set_cookies`)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) >= 32:
        return current
    new = getattr(request.state, "new_csrf", None)
    if new is None:
        new = secrets.token_urlsafe(32)
        request.state.new_csrf = new
    return str(new)


def set_cookies(request: Request, response: Response) -> Response:
    """Send the CSRF cookie made while rendering, if one was."""
    new = getattr(request.state, "new_csrf", None)
    if new is not None:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


async def csrf_ok(request: Request) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    form = await request.form()
    given = form.get(CSRF_FIELD)
    return (
        bool(cookie)
        and isinstance(given, str)
        and hmac.compare_digest(given.encode(), cookie.encode())
    )


def safe_next(target: str | None) -> str:
    """A local path to go back to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/runs"
    return target


def _to_login(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":  # back to the page the form was on
        here = urlsplit(request.headers.get("referer", "")).path or "/runs"
    return RedirectResponse(f"/login?next={quote(safe_next(here))}", status_code=303)


def page_read(dash: Dashboard, fn: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        if dash.require_token_for_reads and not authorized(dash, request):
            return _to_login(request)
        return await fn(request)

    return endpoint


def page_write(dash: Dashboard, fn: Endpoint, error: ErrorPage) -> Endpoint:
    """A form POST: refused when read-only (403), sent to /login without the token,
    refused without the CSRF token (403); only then handled."""

    async def endpoint(request: Request) -> Response:
        if dash.read_only:
            return await error(request, 403, "this dashboard is read-only")
        if not authorized(dash, request):
            return _to_login(request)
        if not await csrf_ok(request):
            return await error(
                request, 403, "the form's CSRF token is missing or stale: reload the page"
            )
        return await fn(request)

    return endpoint


def _json_error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def api_read(dash: Dashboard, fn: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        if dash.require_token_for_reads and not authorized(dash, request):
            return _json_error(401, "this dashboard needs the token: Authorization: Bearer TOKEN")
        return await fn(request)

    return endpoint


def api_write(dash: Dashboard, fn: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        if dash.read_only:
            return _json_error(403, "this dashboard is read-only")
        if not authorized(dash, request):
            return _json_error(401, "this action needs the token: Authorization: Bearer TOKEN")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        # Without a bearer header (no auth, or the login cookie), only JSON: a page of
        # another site cannot send it without a CORS preflight, which is never answered.
        if bearer(request) is None and kind != "application/json":
            return _json_error(415, "send the request body as application/json")
        return await fn(request)

    return endpoint
