"""Mapping Garrison errors to HTTP answers: a precise status and a message with a hint."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from garrison.errors import ConfigError, GarrisonError, InvalidRequest, PolicyError


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


async def garrison_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GarrisonError)
    headers = exc.headers if isinstance(exc, HttpError) else {}
    status = status_of(exc)
    if request.url.path.startswith("/.well-known/est/"):
        # RFC 7030 section 4.2.3: a human-readable text/plain explanation.
        text = str(exc) + (f"\nhint: {exc.hint}" if exc.hint else "") + "\n"
        return PlainTextResponse(text, status_code=status, headers=headers)
    body = {"detail": str(exc)}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse(body, status_code=status, headers=headers)


async def lookup_error_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc).strip("'\"")}, status_code=404)
