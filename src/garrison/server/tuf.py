"""The update repository over HTTP, as a stock TUF client expects it: metadata under
``/tuf/metadata/`` and targets under ``/tuf/targets/`` with consistent-snapshot names.

Nothing here needs trust in the server: clients verify every byte against the root they
already hold. A missing file is a plain 404 (clients probe for the next root version on
every refresh), not a refusal to audit.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from garrison.server.context import Plane

router = APIRouter(prefix="/tuf", tags=["update repository (TUF)"])

METADATA_NAME = re.compile(
    r"(?:([1-9][0-9]{0,9})\.)?(root|targets|snapshot|timestamp|releases)\.json"
)
TARGET_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})\.[^/]+")


@router.get("/metadata/{filename}", name="tuf.metadata")
async def metadata(filename: str, cp: Plane) -> Response:
    match = METADATA_NAME.fullmatch(filename)
    if match is None:
        return Response(status_code=404)
    version, role = match.group(1), match.group(2)
    data = await run_in_threadpool(
        cp.releases.metadata, role, None if version is None else int(version)
    )
    if data is None:
        return Response(status_code=404)
    return Response(data, media_type="application/json", headers={"Cache-Control": "no-cache"})


@router.get("/targets/{path:path}", name="tuf.targets")
async def targets(path: str, cp: Plane) -> Response:
    match = TARGET_NAME.fullmatch(path)
    found = None if match is None else cp.releases.artifact_path(match.group(1))
    if found is None:
        return Response(status_code=404)
    return FileResponse(found, media_type="application/octet-stream")
