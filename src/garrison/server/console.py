"""The web console: a single-page application served by the control plane under
``/console/``, talking only to the admin API under ``/api/v1`` with the principal's token.

Guarantees:

- The console holds no authority of its own. Its pages and assets are public (they contain
  no data); every piece of data comes from ``/api/v1`` with the principal's bearer token, so
  the server enforces the roles exactly as for any other API client. The console only hides
  the controls a role lacks (it asks ``GET /api/v1/me`` which permissions the caller holds).
- Every console response carries a strict Content-Security-Policy (scripts, styles and
  images from this origin only, no inline script or style, no ``eval``, Trusted Types
  required so that no string can become markup), ``X-Frame-Options: DENY`` and
  ``frame-ancestors 'none'`` (no clickjacking), ``nosniff`` and ``no-referrer``.
- Only the files shipped in ``server/console/`` are served, by exact name; nothing else on
  disk is reachable. The shipped files are read once, when the application is created
  (:func:`load_assets`), into a fixed table that requests only look names up in: a request
  never touches the disk, and no name taken from a request is kept (an unknown name costs
  nothing but its 404, however many are asked for).
- Assets are revalidated on every load (``no-cache`` with an ETag): an upgraded control
  plane never runs a stale console. API data is never cached (``/me`` and the audit page
  answer ``no-store``; the console fetches with ``cache: "no-store"``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from pydantic import Field
from sqlalchemy import Select, select
from starlette.concurrency import run_in_threadpool

from garrison.access.roles import PERMISSIONS
from garrison.server.context import AuditReader, Caller, Plane
from garrison.server.schemas import AuditEntry, Strict
from garrison.store.tables import audit_log

ASSETS = Path(__file__).with_name("console")

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=(), serial=()",
}

NO_STORE = {"Cache-Control": "no-store"}

MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
}

ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\.(html|css|js|svg|png)")

router = APIRouter(tags=["console"])


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


Assets = Mapping[str, Asset]


def load_assets(directory: Path = ASSETS) -> Assets:
    """Every shipped console file in ``directory`` (flat names of an allowed type: other
    files are never served), read now, as a read-only table by name. The application reads
    them once, when it is created (``app.state.console_assets``); they are part of the
    installed package."""
    found: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        match = ASSET_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[path.name] = Asset(body, MEDIA_TYPES[match.group(1)], etag)
    return MappingProxyType(found)


def app_assets(request: Request) -> Assets:
    """The table of the application serving ``request`` (read on first use by an
    application that was not given one at creation)."""
    state = request.app.state
    assets: Assets | None = getattr(state, "console_assets", None)
    if assets is None:
        assets = state.console_assets = load_assets()
    return assets


def _serve(name: str, request: Request) -> Response:
    asset = app_assets(request).get(name)
    if asset is None:
        # Not audited, like any path that does not exist (see server/errors.py).
        return PlainTextResponse("not found\n", status_code=404, headers=SECURITY_HEADERS)
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307, headers=SECURITY_HEADERS)


@router.get("/console", include_in_schema=False)
async def console_bare() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307, headers=SECURITY_HEADERS)


@router.get("/console/", include_in_schema=False)
async def console_index(request: Request) -> Response:
    return _serve("index.html", request)


@router.get("/console/{name}", include_in_schema=False)
async def console_asset(name: str, request: Request) -> Response:
    return _serve(name, request)


# -- the API the console needs that no other router answers -----------------------------


class Me(Strict):
    name: str
    role: str
    permissions: list[str] = Field(description="what this principal's role may do")
    organization: str = Field(description="the fleet's organization name")


@router.get("/api/v1/me", response_model=Me, name="principal.me")
async def me(principal: Caller, cp: Plane, response: Response) -> Me:
    """Who is calling: name, role and the permissions of the role (any principal)."""
    response.headers.update(NO_STORE)
    return Me(
        name=principal.name,
        role=principal.role.value,
        permissions=sorted(p.value for p in PERMISSIONS[principal.role]),
        organization=cp.fleet.settings.organization,
    )


class AuditPage(Strict):
    entries: list[AuditEntry] = Field(description="newest first")
    next_before: int | None = Field(
        description="pass as 'before' for the next (older) page; null on the last page"
    )


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def audit_query(
    before: int | None, limit: int, actor: str, action: str, outcome: str
) -> Select[tuple[object, ...]]:
    """Entries older than ``before`` (all if None), newest first, at most ``limit + 1``
    (the extra one tells whether an older page exists). ``actor`` matches a substring,
    ``action`` a prefix (``campaign.`` finds every campaign action), ``outcome`` exactly."""
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(audit_log.c.seq < before)
    if actor:
        query = query.where(audit_log.c.actor.like(f"%{_like_escaped(actor)}%", escape="\\"))
    if action:
        query = query.where(audit_log.c.action.like(f"{_like_escaped(action)}%", escape="\\"))
    if outcome:
        query = query.where(audit_log.c.outcome == outcome)
    return query


@router.get("/api/v1/audit/page", response_model=AuditPage, name="audit.page")
async def audit_page(
    cp: Plane,
    principal: AuditReader,
    response: Response,
    before: int | None = Query(default=None, ge=1, description="only entries with seq < before"),
    limit: int = Query(default=50, ge=1, le=500),
    actor: str = Query(default="", max_length=128, description="substring of the actor"),
    action: str = Query(default="", max_length=64, description="prefix of the action"),
    outcome: str = Query(default="", max_length=16, description="exact outcome (ok, refused)"),
) -> AuditPage:
    """One page of the audit log, newest first, filtered: what the console's audit view
    shows. ``GET /api/v1/audit`` stays the export in chain order."""

    def run() -> AuditPage:
        with cp.database.read() as conn:
            rows = list(conn.execute(audit_query(before, limit, actor, action, outcome)))
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(
            entries=[
                AuditEntry(
                    seq=r.seq,
                    at=r.at,
                    actor=r.actor,
                    action=r.action,
                    target=r.target,
                    outcome=r.outcome,
                    details=json.loads(r.details),
                    entry_hash=r.entry_hash,
                )
                for r in rows
            ],
            next_before=rows[-1].seq if more and rows else None,
        )

    response.headers.update(NO_STORE)
    return await run_in_threadpool(run)
