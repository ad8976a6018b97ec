"""The HTML forms' POSTs: login, retry, cancel, signal, bulk actions, dead letters.

Each is guarded by :func:`~flowkit.dashboard.security.page_write` (read-only,
token, CSRF) and answers with a redirect to the page it came from (a short
``done=`` code says what happened), or the page again with the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..dead_retry import redrive_dead_letters
from ..errors import FlowkitError, InputValidationError
from ..redact import redact
from . import views
from .api import error_status, public_errors
from .core import Dashboard
from .pages import BULK_CAP, error_page, matching_ids, run_page
from .render import render
from .security import SESSION_COOKIE, csrf_ok, page_write, safe_next, session_value, token_matches
from .signals import signal_data, signal_forms

__all__ = ["form_routes"]

log = logging.getLogger("flowkit.dashboard")


def _back(path: str, done: str) -> Response:
    return RedirectResponse(f"{path}?done={quote(done)}", status_code=303)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def _act(dash: Dashboard, request: Request, fn: Callable[[], Response]) -> Response:
    try:
        return await run_in_threadpool(fn)
    except FlowkitError as exc:
        return await error_page(dash, request, error_status(exc), redact(str(exc)))
    except Exception:
        log.exception("dashboard: unexpected error")
        return await error_page(dash, request, 500, "unexpected error (see the dashboard's log)")


def form_routes(dash: Dashboard) -> list[Route]:
    app = dash.app

    async def error(request: Request, status: int, message: str) -> Response:
        return await error_page(dash, request, status, message)

    async def login(request: Request) -> Response:
        form = await request.form()
        nxt = safe_next(_text(form, "next"))
        if dash.token is None:
            return RedirectResponse(nxt, status_code=303)
        if not await csrf_ok(request):
            return await error(request, 403, "the form's CSRF token is missing: reload the page")
        if not token_matches(dash, _text(form, "token")):
            ctx = {"next": nxt, "error": "that is not the dashboard's token", "done": ""}
            return render(dash, request, "login.html", ctx, 401)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_value(dash),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def retry(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        step = _text(await request.form(), "from_step") or None

        def go() -> Response:
            views.require_run(dash, run_id)
            app.retry(run_id, from_step=step)
            return _back(f"/runs/{quote(run_id)}", "retried")

        return await _act(dash, request, go)

    async def cancel(request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def go() -> Response:
            views.require_run(dash, run_id)
            done = app.cancel(run_id)
            return _back(f"/runs/{quote(run_id)}", "cancelled" if done else "not-cancelled")

        return await _act(dash, request, go)

    async def signal(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        form = await request.form()
        name = _text(form, "signal")
        values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}

        def go() -> Response:
            run = views.run_detail(dash, run_id)
            forms = {f["name"]: f for f in signal_forms(dash.graph(run["flow"]), run["signals"])}
            fields = forms[name]["fields"] if name in forms else []
            try:
                released = app.signal(run_id, name, signal_data(form, fields))
            except InputValidationError as exc:
                ctx = run_page(
                    dash,
                    run_id,
                    None,
                    signal_errors=public_errors(exc),
                    signal_message=redact(str(exc)),
                    signal_values={"name": name, **values},
                    status=422,
                )
                return render(dash, request, "run.html", {**ctx, "done": ""}, 422)
            return _back(f"/runs/{quote(run_id)}", "signalled" if released else "signal-stored")

        return await _act(dash, request, go)

    async def bulk(request: Request) -> Response:
        form = await request.form()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        action = params.get("action", "")
        if action not in ("retry", "cancel"):
            return await error(request, 400, "the bulk action is retry or cancel")

        def go() -> Response:
            ids = matching_ids(dash, params)[:BULK_CAP]
            done, refused = 0, []
            for run_id in ids:
                try:
                    ok = app.retry(run_id) if action == "retry" else app.cancel(run_id)
                except FlowkitError as exc:
                    refused.append({"id": run_id, "why": redact(str(exc))})
                    continue
                done += 1 if ok else 0
                if not ok:
                    refused.append({"id": run_id, "why": "already ended"})
            ctx: dict[str, Any] = {
                "action": action,
                "result": {"done": done, "refused": refused, "total": len(ids)},
                "filters": views.filter_from(params)[1],
                "ids": ids,
                "capped": len(ids) >= BULK_CAP,
                "error": "",
                "done": "",
            }
            return render(dash, request, "bulk.html", ctx)

        return await _act(dash, request, go)

    async def dead_retry(request: Request) -> Response:
        form = await request.form()
        ids = [v for v in form.getlist("id") if isinstance(v, str)]
        every = _text(form, "all") == "1"

        def go() -> Response:
            dash.store  # noqa: B018 - the schema must be there (never created here)
            redrive_dead_letters(app, None if every else ids)
            return _back("/dead", "redriven")

        return await _act(dash, request, go)

    async def dead_purge(request: Request) -> Response:
        form = await request.form()
        ids = [v for v in form.getlist("id") if isinstance(v, str)]
        every = _text(form, "all") == "1"

        def go() -> Response:
            if every or ids:
                dash.store.dead_letters.delete(None if every else ids)
            return _back("/dead", "purged")

        return await _act(dash, request, go)

    writes: list[tuple[str, Any]] = [
        ("/runs/bulk", bulk),
        ("/runs/{run_id}/retry", retry),
        ("/runs/{run_id}/cancel", cancel),
        ("/runs/{run_id}/signal", signal),
        ("/dead/retry", dead_retry),
        ("/dead/purge", dead_purge),
    ]
    return [Route(p, page_write(dash, fn, error), methods=["POST"]) for p, fn in writes] + [
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
