"""Building the control-plane ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from garrison import __version__
from garrison.clock import Clock, utc_now
from garrison.errors import GarrisonError
from garrison.fleet.scheduler import Scheduler
from garrison.identity.enrollment import EnrollmentService
from garrison.identity.fleet import Fleet
from garrison.server import (
    admin,
    campaigns_api,
    console,
    device_api,
    device_fast,
    est,
    fleet_api,
    pki,
    releases_api,
    tuf,
)
from garrison.server.context import ControlPlane
from garrison.server.errors import (
    BodyLimit,
    garrison_error_handler,
    http_error_handler,
    lookup_error_handler,
    validation_error_handler,
)
from garrison.store.database import Database
from garrison.updates.releases import ReleaseService

# The largest body any endpoint takes: a batch allow-list of 100,000 serials is ~1.3 MB.
# EST and OCSP enforce their own, much smaller limits.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_DEVICE_BODY_BYTES = 64 * 1024
MAX_EST_BODY_BYTES = 64 * 1024  # before authentication: small; EST and OCSP check tighter


class ControlPlaneApp(FastAPI):
    """FastAPI, except that the hottest requests are served straight from the entry point
    (they stay documented by their FastAPI routes): ``POST /simpleenroll``, and the idle
    directive poll's ``304`` (:mod:`.device_fast`; every other directive request falls
    through to its route). At shutdown, pending device last-seen times are written."""

    _not_modified: device_fast.NotModifiedPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"] == device_fast.DIRECTIVE_PATH:
            if scope["method"] == "GET":
                fast = self._not_modified
                if fast is None:
                    fast = self._not_modified = device_fast.NotModifiedPath(
                        self.state.control_plane
                    )
                if await fast.serve(scope, send):
                    return
        elif kind == "http" and scope["path"] == est.ENROLL_PATH and scope["method"] == "POST":
            scope["app"] = self
            try:
                await est.serve_simpleenroll(scope, receive, send)
            except Exception:
                await PlainTextResponse("Internal Server Error", status_code=500)(
                    scope, receive, send
                )
                raise
            return
        elif kind == "lifespan":
            plane: ControlPlane = self.state.control_plane

            async def receive_then_flush() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    if self._not_modified is not None:
                        self._not_modified.close()
                    await run_in_threadpool(plane.last_seen.close)
                return message

            await super().__call__(scope, receive_then_flush, send)
            return
        await super().__call__(scope, receive, send)


def create_app(fleet: Fleet, database: Database, clock: Clock = utc_now) -> FastAPI:
    """The control plane for ``fleet`` on ``database`` (which must already be migrated)."""
    enrollment = EnrollmentService(
        database, fleet.issuing, fleet.root_certificate, fleet.device_profile, clock
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        scheduler = Scheduler(database, clock)  # every replica runs one; see fleet.scheduler
        scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()  # after the tick in progress, if any
            enrollment.close()  # stop this app's enrollment writer thread

    app = ControlPlaneApp(
        title="Garrison control plane",
        version=__version__,
        description="Device identity (EST), revocation (CRL/OCSP), device API and admin API.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    releases = ReleaseService(
        database, fleet.paths.artifacts, fleet.snapshot_signer, fleet.timestamp_signer, clock
    )
    app.state.control_plane = ControlPlane(fleet, database, enrollment, releases, clock)
    app.state.console_assets = console.load_assets()  # read once; requests only look up
    app.add_exception_handler(GarrisonError, garrison_error_handler)
    app.add_exception_handler(LookupError, lookup_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_middleware(
        BodyLimit,
        router=app.router,
        limit=MAX_BODY_BYTES,
        limits={
            "/.well-known/est/": MAX_EST_BODY_BYTES,
            "/pki/": MAX_EST_BODY_BYTES,
            "/device/": MAX_DEVICE_BODY_BYTES,
            "/api/v1/artifacts": None,  # streamed to disk by the route, which limits it
        },
    )
    for module in (
        est,
        pki,
        admin,
        device_api,
        releases_api,
        tuf,
        fleet_api,
        campaigns_api,
        console,
    ):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return app
