"""Releases under ``/api/v1``: upload an artifact, propose a release, collect the release
managers' signatures (made on their own machines), publish at the threshold."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from garrison.server import schemas
from garrison.server.context import Plane, ReleaseManager
from garrison.updates.releases import ReleaseSpec, ReleaseView

router = APIRouter(prefix="/api/v1", tags=["releases"])


def _public(view: ReleaseView) -> schemas.ReleasePublic:
    return schemas.ReleasePublic(**asdict(view))


@router.put("/artifacts", response_model=schemas.ArtifactStored, name="artifact.upload")
async def upload_artifact(
    request: Request, cp: Plane, principal: ReleaseManager
) -> schemas.ArtifactStored:
    """The raw artifact as the request body (streamed; up to 4 GiB)."""
    upload = await run_in_threadpool(cp.releases.upload)
    try:
        async for chunk in request.stream():
            await run_in_threadpool(upload.write, chunk)
        sha256, length = await run_in_threadpool(upload.finish)
    finally:
        upload.abort()
    return schemas.ArtifactStored(sha256=sha256, length=length)


@router.post(
    "/releases", response_model=schemas.ReleasePublic, status_code=201, name="release.propose"
)
async def propose(
    body: schemas.ReleaseCreate, cp: Plane, principal: ReleaseManager
) -> schemas.ReleasePublic:
    spec = ReleaseSpec(
        body.name,
        body.version,
        body.hardware,
        body.security_version,
        body.install,
        body.health_checks,
        body.sha256,
    )
    view = await run_in_threadpool(cp.releases.propose, spec, f"principal:{principal.name}")
    return _public(view)


@router.get("/releases", response_model=list[schemas.ReleasePublic], name="release.list")
async def list_releases(cp: Plane, principal: ReleaseManager) -> list[schemas.ReleasePublic]:
    return [_public(v) for v in await run_in_threadpool(cp.releases.list)]


@router.get("/releases/{release_id}/payload", name="release.payload")
async def payload(release_id: int, cp: Plane, principal: ReleaseManager) -> Response:
    """The canonical bytes to sign (TUF canonical JSON of the proposed ``releases`` role)."""
    data = await run_in_threadpool(cp.releases.payload, release_id)
    return Response(data, media_type="application/octet-stream")


@router.post(
    "/releases/{release_id}/signatures",
    response_model=schemas.ReleasePublic,
    name="release.sign",
)
async def sign(
    release_id: int, body: schemas.ReleaseSignature, cp: Plane, principal: ReleaseManager
) -> schemas.ReleasePublic:
    view = await run_in_threadpool(
        cp.releases.sign, release_id, body.keyid, body.signature, f"principal:{principal.name}"
    )
    return _public(view)
