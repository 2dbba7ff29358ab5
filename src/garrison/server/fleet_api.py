"""The fleet admin API under ``/api/v1``: devices with inventory, tags, groups and desired
state. Reads need ``devices.read``; changes need ``fleet.manage`` and are audited in their
transaction (refusals by the error boundary of :mod:`garrison.server.errors`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from garrison.fleet import desired_state, groups
from garrison.fleet.desired_state import AppSpec, DesiredSpec, DesiredView, ReleaseRef, Scope
from garrison.fleet.device_views import device_detail, device_id_of, list_fleet_devices
from garrison.fleet.history import read_history
from garrison.identity.principals import Principal
from garrison.server import fleet_schemas as fs
from garrison.server.context import ControlPlane, DeviceReader, FleetManager, Plane

router = APIRouter(prefix="/api/v1", tags=["fleet"])


def _actor(principal: Principal) -> str:
    return f"principal:{principal.name}"


def _target(request: Request, value: str) -> None:
    """Name what a refused request was about in its audit entry."""
    request.state.target = value[:256]


# -- devices -----------------------------------------------------------------------------


@router.get("/fleet/devices", response_model=fs.DeviceList, name="fleet.devices")
async def fleet_devices(
    cp: Plane,
    principal: DeviceReader,
    group: str | None = Query(default=None, max_length=64),
    tag: str | None = Query(default=None, max_length=64),
    model: str | None = Query(default=None, max_length=64),
    q: str | None = Query(default=None, max_length=64, description="part of the serial"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> fs.DeviceList:
    """Devices with their inventory summary, tags and groups, by serial."""

    def run() -> fs.DeviceList:
        with cp.database.read() as conn:
            page = list_fleet_devices(
                conn, group=group, tag=tag, model=model, q=q, limit=limit, offset=offset
            )
        return fs.DeviceList(
            total=page.total,
            limit=limit,
            offset=offset,
            devices=[fs.DeviceSummary(**asdict(d)) for d in page.devices],
        )

    return await run_in_threadpool(run)


@router.get("/devices/{serial}/detail", response_model=fs.DeviceDetail, name="device.detail")
async def detail(serial: str, request: Request, cp: Plane, principal: DeviceReader) -> Any:
    """Identity (with certificates), inventory, tags, groups, the resolved desired state,
    the current directive and the last 200 history entries."""
    _target(request, serial)

    def run() -> dict[str, Any]:
        with cp.database.read() as conn:
            return device_detail(conn, serial)

    return await run_in_threadpool(run)


@router.get("/devices/{serial}/history", response_model=list[fs.HistoryItem], name="device.history")
async def history(
    serial: str,
    request: Request,
    cp: Plane,
    principal: DeviceReader,
    limit: int = Query(default=200, ge=1, le=1000),
    before: int | None = Query(default=None, ge=1, description="entries older than this id"),
) -> list[fs.HistoryItem]:
    """The device's history, newest first (page back with ``before``)."""
    _target(request, serial)

    def run() -> list[fs.HistoryItem]:
        with cp.database.read() as conn:
            entries = read_history(conn, device_id_of(conn, serial), limit=limit, before=before)
        return [fs.HistoryItem(id=i, **asdict(e)) for i, e in entries]

    return await run_in_threadpool(run)


@router.put("/devices/{serial}/tags", response_model=fs.Tags, name="device.tags")
async def put_tags(
    serial: str, body: fs.TagsUpdate, request: Request, cp: Plane, principal: FleetManager
) -> fs.Tags:
    """Replace the device's tags; its dynamic groups follow at once."""
    _target(request, serial)

    def run() -> list[str]:
        with cp.database.write() as conn:
            return groups.set_tags(conn, serial, body.tags, _actor(principal), cp.now())

    return fs.Tags(serial=serial, tags=await run_in_threadpool(run))


# -- groups ------------------------------------------------------------------------------


def _group(view: groups.GroupView) -> fs.GroupPublic:
    data = asdict(view)
    del data["id"]
    return fs.GroupPublic(**data)


def _desired(view: DesiredView | None) -> fs.DesiredPublic | None:
    return None if view is None else fs.DesiredPublic(**asdict(view))


@router.get("/groups", response_model=list[fs.GroupPublic], name="group.list")
async def list_groups(cp: Plane, principal: DeviceReader) -> list[fs.GroupPublic]:
    def run() -> list[fs.GroupPublic]:
        with cp.database.read() as conn:
            return [_group(g) for g in groups.list_groups(conn)]

    return await run_in_threadpool(run)


@router.post("/groups", response_model=fs.GroupPublic, status_code=201, name="group.create")
async def create_group(
    body: fs.GroupCreate, request: Request, cp: Plane, principal: FleetManager
) -> fs.GroupPublic:
    """A static group (members named later) or a dynamic group (members by filter)."""
    _target(request, body.name)
    spec = groups.GroupSpec(body.name, body.kind, body.filter, body.priority, body.window)

    def run() -> groups.GroupView:
        with cp.database.write() as conn:
            return groups.create_group(conn, spec, _actor(principal), cp.now())

    return _group(await run_in_threadpool(run))


@router.get("/groups/{name}", response_model=fs.GroupDetail, name="group.show")
async def show_group(
    name: str, request: Request, cp: Plane, principal: DeviceReader
) -> fs.GroupDetail:
    _target(request, name)

    def run() -> fs.GroupDetail:
        with cp.database.read() as conn:
            view = groups.get_group(conn, name)
            serials = groups.group_member_serials(conn, view.id)
            desired = desired_state.get_desired(conn, "group", name)
        return fs.GroupDetail(
            **_group(view).model_dump(), serials=serials, desired=_desired(desired)
        )

    return await run_in_threadpool(run)


@router.patch("/groups/{name}", response_model=fs.GroupPublic, name="group.update")
async def update_group(
    name: str, body: fs.GroupUpdate, request: Request, cp: Plane, principal: FleetManager
) -> fs.GroupPublic:
    """Change the filter, priority or window (``"window": null`` removes it)."""
    _target(request, name)
    change = groups.GroupUpdate(
        frozenset(body.model_fields_set), body.filter, body.priority, body.window
    )

    def run() -> groups.GroupView:
        with cp.database.write() as conn:
            return groups.update_group(conn, name, change, _actor(principal), cp.now())

    return _group(await run_in_threadpool(run))


@router.delete("/groups/{name}", status_code=204, name="group.delete")
async def delete_group(name: str, request: Request, cp: Plane, principal: FleetManager) -> Response:
    """Delete a group with its desired state; refused (409) if a campaign targets it."""
    _target(request, name)

    def run() -> None:
        with cp.database.write() as conn:
            groups.delete_group(conn, name, _actor(principal), cp.now())

    await run_in_threadpool(run)
    return Response(status_code=204)


@router.post("/groups/{name}/members", response_model=fs.GroupPublic, name="group.members")
async def members(
    name: str, body: fs.MembersChange, request: Request, cp: Plane, principal: FleetManager
) -> fs.GroupPublic:
    """Add and remove members of a static group by serial."""
    _target(request, name)

    def run() -> groups.GroupView:
        with cp.database.write() as conn:
            return groups.change_members(
                conn, name, body.add, body.remove, _actor(principal), cp.now()
            )

    return _group(await run_in_threadpool(run))


# -- desired state -----------------------------------------------------------------------


def _spec(body: fs.DesiredUpdate) -> DesiredSpec:
    firmware = (
        None if body.firmware is None else ReleaseRef(body.firmware.name, body.firmware.version)
    )
    apps = (
        None
        if body.apps is None
        else [AppSpec(a.name, a.version, a.config, a.absent) for a in body.apps]
    )
    return DesiredSpec(firmware, apps)


async def _get_desired(cp: ControlPlane, scope: Scope, name: str) -> fs.DesiredPublic:
    def run() -> DesiredView | None:
        with cp.database.read() as conn:
            return desired_state.get_desired(conn, scope, name)

    found = await run_in_threadpool(run)
    if found is None:
        raise LookupError(f"{scope} {name!r} has no desired state")
    result = _desired(found)
    assert result is not None
    return result


async def _put_desired(
    cp: ControlPlane, scope: Scope, name: str, body: fs.DesiredUpdate, principal: Principal
) -> fs.DesiredPublic:
    spec = _spec(body)

    def run() -> DesiredView:
        with cp.database.write() as conn:
            return desired_state.set_desired(conn, scope, name, spec, _actor(principal), cp.now())

    result = _desired(await run_in_threadpool(run))
    assert result is not None
    return result


async def _delete_desired(
    cp: ControlPlane, scope: Scope, name: str, principal: Principal
) -> Response:
    def run() -> None:
        with cp.database.write() as conn:
            desired_state.clear_desired(conn, scope, name, _actor(principal), cp.now())

    await run_in_threadpool(run)
    return Response(status_code=204)


@router.get("/desired/groups/{name}", response_model=fs.DesiredPublic, name="desired.show")
async def get_group_desired(
    name: str, request: Request, cp: Plane, principal: DeviceReader
) -> fs.DesiredPublic:
    _target(request, f"group:{name}")
    return await _get_desired(cp, "group", name)


@router.put("/desired/groups/{name}", response_model=fs.DesiredPublic, name="desired.set")
async def put_group_desired(
    name: str, body: fs.DesiredUpdate, request: Request, cp: Plane, principal: FleetManager
) -> fs.DesiredPublic:
    """Replace the group's desired state: firmware and/or apps (by release name and
    version). Its members' directives follow at once."""
    _target(request, f"group:{name}")
    return await _put_desired(cp, "group", name, body, principal)


@router.delete("/desired/groups/{name}", status_code=204, name="desired.clear")
async def delete_group_desired(
    name: str, request: Request, cp: Plane, principal: FleetManager
) -> Response:
    _target(request, f"group:{name}")
    return await _delete_desired(cp, "group", name, principal)


@router.get("/desired/devices/{serial}", response_model=fs.DesiredPublic, name="desired.show")
async def get_device_desired(
    serial: str, request: Request, cp: Plane, principal: DeviceReader
) -> fs.DesiredPublic:
    _target(request, f"device:{serial}")
    return await _get_desired(cp, "device", serial)


@router.put("/desired/devices/{serial}", response_model=fs.DesiredPublic, name="desired.set")
async def put_device_desired(
    serial: str, body: fs.DesiredUpdate, request: Request, cp: Plane, principal: FleetManager
) -> fs.DesiredPublic:
    """Replace the device's own entry (overrides its groups; device firmware pins it:
    group campaigns skip it)."""
    _target(request, f"device:{serial}")
    return await _put_desired(cp, "device", serial, body, principal)


@router.delete("/desired/devices/{serial}", status_code=204, name="desired.clear")
async def delete_device_desired(
    serial: str, request: Request, cp: Plane, principal: FleetManager
) -> Response:
    _target(request, f"device:{serial}")
    return await _delete_desired(cp, "device", serial, principal)
