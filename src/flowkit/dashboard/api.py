"""The JSON API: the pages' live refresh and other services (same token rules as the pages).

Errors are JSON ``{"error": "..."}``, never a traceback: flowkit's errors map to
their status (404 unknown run or flow, 422 invalid payload with its ``errors``,
409 a state that forbids it, 400 a bad filter or cursor, 503 a database or
broker that does not answer); anything else is logged and answered 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import (
    BrokerError,
    ConfigurationError,
    FlowkitError,
    InputValidationError,
    NotFoundError,
    PayloadTooLarge,
    RunStateError,
    SchemaVersionError,
    StoreError,
)
from ..redact import redact
from . import views, views_ops
from .core import Dashboard
from .security import api_read, api_write

__all__ = ["api_routes", "error_status", "public_errors"]

log = logging.getLogger("flowkit.dashboard")


def error_status(exc: FlowkitError) -> int:
    """The HTTP status of a flowkit error."""
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, InputValidationError):
        return 422
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RunStateError):
        return 409
    if isinstance(exc, (StoreError, SchemaVersionError, BrokerError)):
        return 503
    return 400


def public_errors(exc: InputValidationError) -> list[dict[str, Any]]:
    """A validation error's field errors: where, what, and pydantic's type; never the value."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors
    ]


def _answer(exc: BaseException) -> JSONResponse:
    if isinstance(exc, FlowkitError):
        body: dict[str, Any] = {"error": redact(str(exc))}
        if isinstance(exc, InputValidationError):
            body["errors"] = public_errors(exc)
        return JSONResponse(body, status_code=error_status(exc))
    log.exception("dashboard: unexpected error")
    return JSONResponse({"error": "unexpected error (see the dashboard's log)"}, status_code=500)


async def _run(fn: Callable[..., Any], *args: Any, status: int = 200) -> Response:
    try:
        result = await run_in_threadpool(fn, *args)
    except Exception as exc:
        return _answer(exc)
    if isinstance(result, tuple):
        result, status = result
    return JSONResponse(result, status_code=status)


async def _body(request: Request, dash: Dashboard) -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        PayloadTooLarge: over the payload limit, or nested too deeply.
        ConfigurationError: not JSON, or not an object.
    """
    limit = dash.app.settings.max_payload_bytes + 64 * 1024
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes", limit="bytes")
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes", limit="bytes")
    try:
        doc = json.loads(raw or b"{}")
    except RecursionError:
        raise PayloadTooLarge("the request body is nested too deeply", limit="depth") from None
    except ValueError as exc:
        raise ConfigurationError(f"the request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigurationError("the request body must be a JSON object")
    return doc


def _key(doc: dict[str, Any]) -> str | None:
    key = doc.get("key")
    if key is not None and not isinstance(key, str):
        raise ConfigurationError("key must be a string")
    return key


def api_routes(dash: Dashboard) -> list[Route]:
    app = dash.app

    async def runs(request: Request) -> Response:
        return await _run(views.runs_page, dash, dict(request.query_params))

    async def run(request: Request) -> Response:
        return await _run(views.run_detail, dash, request.path_params["run_id"])

    async def preview(request: Request) -> Response:
        step = request.query_params.get("from_step") or None
        return await _run(views.retry_preview, dash, request.path_params["run_id"], step)

    async def submit(request: Request) -> Response:
        try:
            doc = await _body(request, dash)
            flow, key = request.path_params["flow"], _key(doc)
        except FlowkitError as exc:
            return _answer(exc)

        def go() -> tuple[dict[str, Any], int]:
            dash.store  # noqa: B018 - the schema must be there (never created here)
            handle = app.submit(flow, doc.get("input"), key=key)
            return {"id": handle.id, "flow": flow, "created": handle.created}, (
                201 if handle.created else 200
            )

        return await _run(go)

    async def emit(request: Request) -> Response:
        try:
            doc = await _body(request, dash)
            key = _key(doc)
        except FlowkitError as exc:
            return _answer(exc)

        def go() -> tuple[dict[str, Any], int]:
            dash.store  # noqa: B018 - the schema must be there (never created here)
            started = app.emit(request.path_params["event"], doc.get("payload"), key=key)
            body = [{"id": r.id, "flow": r.flow, "created": r.created} for r in started]
            return {"runs": body}, 201 if any(r.created for r in started) else 200

        return await _run(go)

    async def signal(request: Request) -> Response:
        try:
            doc = await _body(request, dash)
        except FlowkitError as exc:
            return _answer(exc)
        run_id, name = request.path_params["run_id"], request.path_params["name"]

        def go() -> dict[str, Any]:
            views.require_run(dash, run_id)
            return {"released": app.signal(run_id, name, doc.get("data"))}

        return await _run(go)

    async def cancel(request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def go() -> dict[str, Any]:
            views.require_run(dash, run_id)
            return {"cancelled": app.cancel(run_id)}

        return await _run(go)

    async def retry(request: Request) -> Response:
        try:
            doc = await _body(request, dash)
        except FlowkitError as exc:
            return _answer(exc)
        run_id, step = request.path_params["run_id"], doc.get("from_step") or None

        def go() -> dict[str, Any]:
            views.require_run(dash, run_id)
            return {"rerun": app.retry(run_id, from_step=step)}

        return await _run(go)

    async def workers(request: Request) -> Response:
        return await _run(views_ops.workers_page, dash)

    async def dead(request: Request) -> Response:
        return await _run(views_ops.dead_page, dash)

    async def flows(request: Request) -> Response:
        return await _run(views_ops.flows_json, dash)

    async def queues(request: Request) -> Response:
        return await _run(views_ops.queues_page, dash)

    reads = [
        ("/api/runs", runs),
        ("/api/runs/{run_id}", run),
        ("/api/runs/{run_id}/retry-preview", preview),
        ("/api/workers", workers),
        ("/api/dead", dead),
        ("/api/flows", flows),
        ("/api/queues", queues),
    ]
    writes = [
        ("/api/flows/{flow}/runs", submit),
        ("/api/events/{event}", emit),
        ("/api/runs/{run_id}/signals/{name}", signal),
        ("/api/runs/{run_id}/cancel", cancel),
        ("/api/runs/{run_id}/retry", retry),
    ]
    return [Route(p, api_read(dash, fn), methods=["GET"]) for p, fn in reads] + [
        Route(p, api_write(dash, fn), methods=["POST"]) for p, fn in writes
    ]
