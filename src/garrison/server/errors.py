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
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from garrison.errors import ConfigError, GarrisonError, InvalidRequest, PolicyError
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
    if isinstance(exc, PolicyError):
        return 403
    if isinstance(exc, ConfigError):
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
    assert isinstance(exc, RequestValidationError)
    summary = "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}"
        for error in exc.errors()[:5]
    )
    await run_in_threadpool(_audit, request, 422, f"invalid request: {summary}")
    return await request_validation_exception_handler(request, exc)


async def lookup_error_handler(request: Request, exc: Exception) -> Response:
    message = str(exc).strip("'\"")
    await run_in_threadpool(_audit, request, 404, message)
    return JSONResponse({"detail": message}, status_code=404)
