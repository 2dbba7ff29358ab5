"""Rollout campaigns and the fleet update level under ``/api/v1`` (reads: ``devices.read``;
changes: ``campaigns.manage``), and the devices' progress reports, ``POST
/device/v1/report`` (mutual TLS). Routes are thin: the service (:mod:`garrison.fleet.campaigns`)
checks, changes and audits in one transaction; refusals are audited by the error boundary."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from garrison.fleet import campaigns as service
from garrison.fleet.campaign import Plan, phase_name
from garrison.fleet.campaign_reports import Report, record_report
from garrison.fleet.level import CATEGORIES, GroupLevel
from garrison.fleet.update_level import fleet_level as read_fleet_level
from garrison.server import campaign_schemas as cs
from garrison.server.context import CampaignManager, CurrentDevice, DeviceReader, Plane

router = APIRouter(tags=["campaigns"])


def _public(view: service.CampaignView) -> dict[str, Any]:
    fields = asdict(view)
    release = cs.CampaignRelease(
        id=view.release_id, name=view.release_name, version=view.release_version, target=view.target
    )
    for key in ("release_id", "release_name", "release_version", "target", "devices"):
        fields.pop(key)
    return {**fields, "release": release, "members": view.devices}


def _detail(found: service.CampaignProgress, limit: int, offset: int) -> cs.CampaignDetail:
    return cs.CampaignDetail(
        **_public(found.campaign),
        phase_progress=[cs.PhasePublic(**asdict(p)) for p in found.phases],
        devices_total=found.devices_total,
        limit=limit,
        offset=offset,
        devices=[
            cs.CampaignDevice(
                **asdict(d), phase_name=None if d.phase is None else phase_name(d.phase)
            )
            for d in found.devices
        ],
    )


def _target(request: Request, campaign_id: int) -> None:
    request.state.target = f"campaign:{campaign_id}"


@router.get("/api/v1/campaigns", response_model=list[cs.CampaignPublic], name="campaign.list")
async def list_campaigns(
    cp: Plane,
    principal: DeviceReader,
    state: Annotated[
        str | None, Query(max_length=16, description="a campaign state, or active")
    ] = None,
    group: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_CAMPAIGNS_PAGE)] = service.CAMPAIGNS_PAGE,
    before: Annotated[
        int | None, Query(ge=1, description="only campaigns with a smaller id (the next page)")
    ] = None,
) -> list[cs.CampaignPublic]:
    """Campaigns, newest first, ``limit`` at a time (the next page: ``before`` = the last
    id); optionally only one ``state`` (``active``: running, paused or halted) or one
    ``group``."""

    def run() -> list[service.CampaignView]:
        with cp.database.read() as conn:
            return service.list_campaigns(
                conn, state=state, group=group, limit=limit, before=before
            )

    return [cs.CampaignPublic(**_public(v)) for v in await run_in_threadpool(run)]


@router.post(
    "/api/v1/campaigns",
    response_model=cs.CampaignPublic,
    status_code=201,
    name="campaign.create",
)
async def create_campaign(
    body: cs.CampaignCreate, request: Request, cp: Plane, principal: CampaignManager
) -> cs.CampaignPublic:
    """Start rolling a published firmware release out over a group (canary first)."""
    request.state.target = f"group:{body.group}"
    spec = service.CampaignSpec(
        body.name,
        body.group,
        service.ReleaseRef(body.release.name, body.release.version),
        Plan.from_json(body.plan),
    )

    def run() -> service.CampaignView:
        with cp.database.write() as conn:
            campaign_id = service.create_campaign(
                conn, spec, f"principal:{principal.name}", cp.now()
            )
            return service.get_campaign(conn, campaign_id)

    return cs.CampaignPublic(**_public(await run_in_threadpool(run)))


@router.get(
    "/api/v1/campaigns/releases",
    response_model=list[cs.ReleaseOption],
    name="campaign.releases",
)
async def campaign_releases(cp: Plane, principal: DeviceReader) -> list[cs.ReleaseOption]:
    """Releases a campaign can roll out: published firmware images, newest first."""

    def run() -> list[cs.ReleaseOption]:
        with cp.database.read() as conn:
            return [
                cs.ReleaseOption(
                    id=r.id,
                    name=r.name,
                    version=r.version,
                    target=r.target_path,
                    hardware=list(r.hardware),
                )
                for r in service.campaign_releases(conn)
            ]

    return await run_in_threadpool(run)


@router.get(
    "/api/v1/campaigns/{campaign_id}", response_model=cs.CampaignDetail, name="campaign.show"
)
async def show_campaign(
    campaign_id: int,
    request: Request,
    cp: Plane,
    principal: DeviceReader,
    state: Annotated[str | None, Query(max_length=16, description="only devices in it")] = None,
    limit: Annotated[int, Query(ge=0, le=service.MAX_DEVICES_PAGE)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> cs.CampaignDetail:
    """The campaign with its progress per phase and per device (by serial, paged)."""
    _target(request, campaign_id)

    def run() -> service.CampaignProgress:
        with cp.database.read() as conn:
            return service.campaign_progress(
                conn, campaign_id, state=state, limit=limit, offset=offset
            )

    return _detail(await run_in_threadpool(run), limit, offset)


@router.post(
    "/api/v1/campaigns/{campaign_id}/pause",
    response_model=cs.CampaignPublic,
    name="campaign.pause",
)
async def pause(
    campaign_id: int, request: Request, cp: Plane, principal: CampaignManager
) -> cs.CampaignPublic:
    """running → paused: no device starts; assigned devices that had not started go back
    to pending; devices already installing finish."""
    _target(request, campaign_id)

    def run() -> service.CampaignView:
        with cp.database.write() as conn:
            service.pause_campaign(conn, campaign_id, f"principal:{principal.name}", cp.now())
            return service.get_campaign(conn, campaign_id)

    return cs.CampaignPublic(**_public(await run_in_threadpool(run)))


@router.post(
    "/api/v1/campaigns/{campaign_id}/resume",
    response_model=cs.CampaignPublic,
    name="campaign.resume",
)
async def resume(
    campaign_id: int, request: Request, cp: Plane, principal: CampaignManager
) -> cs.CampaignPublic:
    """paused | halted → running (after a halt, the phase's failures count anew)."""
    _target(request, campaign_id)

    def run() -> service.CampaignView:
        with cp.database.write() as conn:
            service.resume_campaign(conn, campaign_id, f"principal:{principal.name}", cp.now())
            return service.get_campaign(conn, campaign_id)

    return cs.CampaignPublic(**_public(await run_in_threadpool(run)))


@router.post(
    "/api/v1/campaigns/{campaign_id}/abort",
    response_model=cs.AbortResult,
    name="campaign.abort",
)
async def abort(
    campaign_id: int,
    request: Request,
    cp: Plane,
    principal: CampaignManager,
    body: cs.AbortRequest | None = None,
) -> cs.AbortResult:
    """running | paused | halted → aborted; optionally send updated devices back."""
    _target(request, campaign_id)
    rollback = None if body is None else body.rollback

    def run() -> tuple[service.CampaignView, list[str]]:
        with cp.database.write() as conn:
            sent = service.abort_campaign(
                conn, campaign_id, rollback, f"principal:{principal.name}", cp.now()
            )
            return service.get_campaign(conn, campaign_id), sent

    view, sent = await run_in_threadpool(run)
    return cs.AbortResult(**_public(view), sent_back=sent)


def _level(level: GroupLevel, with_devices: bool) -> cs.GroupLevelPublic:
    return cs.GroupLevelPublic(
        group=level.group,
        target=level.target,
        campaign=level.campaign,
        members=level.members,
        counts=level.counts,
        proof=cs.LevelProof.model_validate(level.proof()),
        devices={c: list(s) for c, s in level.devices.items()} if with_devices else None,
    )


@router.get("/api/v1/fleet/level", response_model=cs.FleetLevel, name="fleet.level")
async def fleet_level(
    cp: Plane,
    principal: DeviceReader,
    devices: Annotated[bool, Query(description="list the serials in each category")] = False,
) -> cs.FleetLevel:
    """For each group: how many members are on its target firmware, updating, failed (or
    rolled back) and not reached, with the proof that each member is in exactly one."""

    def run() -> list[GroupLevel]:
        with cp.database.read() as conn:
            return read_fleet_level(conn)

    levels = await run_in_threadpool(run)
    distinct = {s for level in levels for serials in level.devices.values() for s in serials}
    total = cs.LevelTotal(
        members=sum(level.members for level in levels),
        devices=len(distinct),
        counts={c: sum(level.counts[c] for level in levels) for c in CATEGORIES},
    )
    return cs.FleetLevel(
        at=cp.now(), groups=[_level(level, devices) for level in levels], total=total
    )


@router.post(
    "/device/v1/report", response_model=cs.ReportResult, tags=["device"], name="device.report"
)
async def report(body: cs.DeviceReport, device: CurrentDevice, cp: Plane) -> cs.ReportResult:
    """Progress of the directive's firmware: downloading, downloaded, installing, then
    committed, rolled-back or failed. 409 (nothing changed) for a campaign this device is
    not in, another release, or a step backwards."""
    found = Report(body.campaign, body.target, body.state, body.version, body.detail)

    def run() -> str | None:
        with cp.database.write() as conn:
            return record_report(conn, device, found, cp.now())

    return cs.ReportResult(campaign=body.campaign, state=await run_in_threadpool(run))
