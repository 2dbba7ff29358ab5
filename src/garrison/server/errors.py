"""The one error boundary of the HTTP layer: every refused request gets a precise status,
a message with a hint, and an audit entry, whatever layer refused it (a service, a
dependency, body-size or content-type checks, request validation).

Routes name their audit action with ``name=`` (``est.enroll``, ``batch.create``...);
dependencies record who is calling in ``request.state.actor`` and may override the action
(``api.authenticate``, ``api.authorize``, ``device.authenticate``).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.errors import (
    AuditChainBroken,
    ConfigError,
    Conflict,
    GarrisonError,
    InvalidRequest,
    PolicyError,
)
from garrison.store.audit_log import append_audit


class HttpError(GarrisonError):
    """An error that already knows its status code (401, 404, 413, 415...)."""

    def __init__(
        self, status: int, message: str, *, hint: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.headers = headers or {}


def status_of(exc: GarrisonError) -> int:
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, InvalidRequest):
        return 400
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, PolicyError):
        return 403
    if isinstance(exc, ConfigError | AuditChainBroken):
        return 500
    return 400


def audit_action(request: Request) -> str:
    explicit = getattr(request.state, "audit_action", None)
    if explicit:
        return str(explicit)
    route = request.scope.get("route")
    name = getattr(route, "name", None)
    return str(name) if name and "." in name else f"{request.method} {request.url.path}"


def _audit(request: Request, status: int, reason: str) -> None:
    plane: Any = request.app.state.control_plane
    with plane.database.write() as conn:
        append_audit(
            conn,
            actor=str(getattr(request.state, "actor", "anonymous")),
            action=audit_action(request),
            target=str(getattr(request.state, "target", request.url.path)),
            outcome="refused",
            now=plane.now(),
            details={"status": status, "reason": reason[:300]},
        )


async def garrison_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GarrisonError)
    status = status_of(exc)
    if status < 500:
        await run_in_threadpool(_audit, request, status, str(exc))
    headers = exc.headers if isinstance(exc, HttpError) else {}
    if request.url.path.startswith("/.well-known/est/"):
        # RFC 7030 section 4.2.3: a human-readable text/plain explanation.
        text = str(exc) + (f"\nhint: {exc.hint}" if exc.hint else "") + "\n"
        return PlainTextResponse(text, status_code=status, headers=headers)
    body = {"detail": str(exc)}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse(body, status_code=status, headers=headers)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """422 with where and what, but never the submitted input echoed back."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()[:20]
    ]
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    await run_in_threadpool(_audit, request, 422, f"invalid request: {summary}")
    return JSONResponse({"detail": errors}, status_code=422)


async def lookup_error_handler(request: Request, exc: Exception) -> Response:
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    await run_in_threadpool(_audit, request, 404, message)
    return JSONResponse({"detail": message}, status_code=404)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (405 on a real route...). A 404 for a path that does not
    exist is not audited: probing for paths is intrusion detection's business."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 500 and request.scope.get("route") is not None:
        await run_in_threadpool(_audit, request, exc.status_code, str(exc.detail))
    return await http_exception_handler(request, exc)


class BodyLimit:
    """ASGI middleware: refuse (413, audited) a request body larger than the limit for its
    path (the first matching prefix of ``limits``, else ``limit``).

    The body is read up to the limit before the application sees it, and replayed to it:
    a refusal raised while FastAPI parses a body would reach the client as a 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        router: Router,
        limit: int,
        limits: dict[str, int | None] | None = None,
    ) -> None:
        self.app = app
        self.router = router
        self.limit = limit
        self.limits = limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = next((n for pre, n in self.limits.items() if path.startswith(pre)), self.limit)
        if limit is None:  # the route streams the body and enforces its own limit
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, f"request body too large ({int(declared)} bytes)")
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body"))
            if size > limit:
                await self._refuse(scope, send, f"request body too large (over {limit} bytes)")
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, reason: str) -> None:
        found = _find_route(self.router.routes, scope)
        if found is not None:  # paths that do not exist are not audited (see http_error_handler)
            scope = {**scope, **found[1], "route": found[0]}
            await run_in_threadpool(_audit, Request(scope), 413, reason)
        response = JSONResponse({"detail": reason}, status_code=413)
        await response(scope, _no_receive, send)


def _find_route(routes: list[BaseRoute], scope: Scope) -> tuple[BaseRoute, Scope] | None:
    """The route that will serve ``scope``, looking inside included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found = _find_route(inner.routes, scope)
            if found is not None:
                return found
            continue
        match, child = route.matches(scope)
        if match == Match.FULL:
            return route, child
    return None


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
