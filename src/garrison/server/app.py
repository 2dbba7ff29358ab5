"""Building the control-plane ASGI application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from garrison import __version__
from garrison.errors import GarrisonError
from garrison.identity.enrollment import Clock, EnrollmentService, utc_now
from garrison.identity.fleet import Fleet
from garrison.server import admin, device_api, est, pki
from garrison.server.context import ControlPlane
from garrison.server.errors import (
    garrison_error_handler,
    lookup_error_handler,
    validation_error_handler,
)
from garrison.store.database import Database


def create_app(fleet: Fleet, database: Database, clock: Clock = utc_now) -> FastAPI:
    """The control plane for ``fleet`` on ``database`` (which must already be migrated)."""
    app = FastAPI(
        title="Garrison control plane",
        version=__version__,
        description="Device identity (EST), revocation (CRL/OCSP), device API and admin API.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    enrollment = EnrollmentService(
        database, fleet.issuing, fleet.root_certificate, fleet.device_profile, clock
    )
    app.state.control_plane = ControlPlane(fleet, database, enrollment, clock)
    app.add_exception_handler(GarrisonError, garrison_error_handler)
    app.add_exception_handler(LookupError, lookup_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    for module in (est, pki, admin, device_api):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return app
