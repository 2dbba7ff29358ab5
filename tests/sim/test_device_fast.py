"""The idle directive poll's fast path: the same 304 as the FastAPI route, only for what it
is certain of, and the security rule of the device API on every request, kept-alive
connection or not."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update

from garrison.identity.certificates import fingerprint
from garrison.server.app import create_app
from garrison.server.context import ControlPlane
from garrison.server.device_fast import DIRECTIVE_PATH, NotModifiedPath, requested_etag
from garrison.sim.http import HttpConnection, HttpResponse
from garrison.sim.identity import SimIdentity, device_context
from garrison.store.tables import audit_log, certificates, devices
from tests.conftest import Clock
from tests.sim.conftest import SimFleet


def comparable(response: HttpResponse) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k != "date"}


async def open_device(sim_fleet: SimFleet, device: SimIdentity) -> HttpConnection:
    context = device_context(sim_fleet.root_ca, device)
    return await HttpConnection.open("127.0.0.1", sim_fleet.port, context)


def test_requested_etag_takes_one_tag_only() -> None:
    assert requested_etag(b'"abc"') == "abc"
    assert requested_etag(b' W/"abc" ') == "abc"
    for other in (b"*", b'"a", "b"', b"abc", b'"', b'""', b'"a"b"', "é".encode()):
        assert requested_etag(other) is None, other


def test_idle_poll_answers_as_the_route_does(sim_fleet: SimFleet) -> None:
    (device,) = sim_fleet.enroll()

    async def run() -> None:
        conn = await open_device(sim_fleet, device)
        first = await conn.request("GET", DIRECTIVE_PATH)
        assert first.status == 200, first.body
        etag = json.loads(first.body)["etag"]
        assert first.header("etag") == f'"{etag}"'
        fast = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'"{etag}"'})
        weak = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'W/"{etag}"'})
        # a list and '*' are left to the FastAPI route, which answers 304 as well
        routed = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'"0123", "{etag}"'})
        star = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": "*"})
        stale = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": '"0123"'})
        conn.close()
        for response in (fast, weak, routed, star):
            assert response.status == 304
            assert response.body == b""
            assert comparable(response) == comparable(routed)
        assert comparable(fast) == {
            "etag": f'"{etag}"',
            "garrison-poll": first.header("garrison-poll"),
            "cache-control": "no-cache",
        }
        assert stale.status == 200 and stale.body == first.body

    asyncio.run(run())


def audit_refusals(sim_fleet: SimFleet, device: SimIdentity) -> list[tuple[str, str, str]]:
    """``(action, target, details)`` of the audited refusals of ``device``'s certificate."""
    der = device.certificate.public_bytes(serialization.Encoding.DER)
    with sim_fleet.shared.served.database.read() as conn:
        rows = conn.execute(
            select(audit_log.c.action, audit_log.c.target, audit_log.c.details).where(
                audit_log.c.actor == f"tls-client:{fingerprint(der)[:16]}",
                audit_log.c.outcome == "refused",
            )
        ).all()
    return [(r.action, r.target, r.details) for r in rows]


def test_revoking_the_device_stops_it_on_the_same_kept_alive_connection(
    sim_fleet: SimFleet,
) -> None:
    (device,) = sim_fleet.enroll()

    async def run() -> tuple[int, int, bytes]:
        conn = await open_device(sim_fleet, device)
        etag = json.loads((await conn.request("GET", DIRECTIVE_PATH)).body)["etag"]
        before = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'"{etag}"'})
        with sim_fleet.shared.served.api(sim_fleet.shared.officer.token) as api:
            revoked = api.post(
                f"/devices/{device.serial}/revoke", json={"reason": "key-compromise"}
            )
            assert revoked.status_code == 200, revoked.text
        after = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'"{etag}"'})
        assert conn.is_open  # the very same TLS connection
        conn.close()
        return before.status, after.status, after.body

    before, after, body = asyncio.run(run())
    assert (before, after) == (304, 403)
    assert "revoked" in json.loads(body)["detail"]
    ((action, target, details),) = audit_refusals(sim_fleet, device)
    assert (action, target) == ("device.authenticate", DIRECTIVE_PATH)
    assert "revoked" in details


def test_a_superseded_certificate_is_refused_on_the_next_poll(sim_fleet: SimFleet) -> None:
    (device,) = sim_fleet.enroll()
    database = sim_fleet.shared.served.database

    async def run() -> tuple[int, int]:
        conn = await open_device(sim_fleet, device)
        etag = json.loads((await conn.request("GET", DIRECTIVE_PATH)).body)["etag"]
        before = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'"{etag}"'})
        with database.write() as db:  # what renewal does to the older certificate
            db.execute(
                update(certificates)
                .where(certificates.c.serial_hex == device.certificate_serial)
                .values(status="revoked", revocation_reason="superseded")
            )
        after = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'"{etag}"'})
        conn.close()
        return before.status, after.status

    assert asyncio.run(run()) == (304, 403)


def test_without_a_client_certificate_the_route_refuses(sim_fleet: SimFleet) -> None:
    from garrison.sim.identity import server_context

    async def run() -> HttpResponse:
        conn = await HttpConnection.open(
            "127.0.0.1", sim_fleet.port, server_context(sim_fleet.root_ca)
        )
        try:
            return await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": '"abc"'})
        finally:
            conn.close()

    response = asyncio.run(run())
    assert response.status == 403
    assert "client certificate" in json.loads(response.body)["detail"]


# -- the fast path itself, at the ASGI level, on the served fleet's database ----------------


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(dict(message))


def scope_for(device: SimIdentity | None, if_none_match: bytes | None) -> dict[str, Any]:
    headers = [] if if_none_match is None else [(b"if-none-match", if_none_match)]
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": DIRECTIVE_PATH}
    scope["headers"] = headers
    if device is not None:
        pem = device.certificate.public_bytes(serialization.Encoding.PEM).decode()
        scope["extensions"] = {"tls": {"client_cert_chain": [pem]}}
    return scope


def test_the_fast_path_answers_only_what_it_is_certain_of(sim_fleet: SimFleet) -> None:
    devices_ = sim_fleet.enroll(2)
    served = sim_fleet.shared.served

    async def first_etag(device: SimIdentity) -> str:
        conn = await open_device(sim_fleet, device)
        try:
            return str(json.loads((await conn.request("GET", DIRECTIVE_PATH)).body)["etag"])
        finally:
            conn.close()

    etags = [asyncio.run(first_etag(d)) for d in devices_]
    clock = Clock()
    app = create_app(served.fleet, served.database, clock)
    plane: ControlPlane = app.state.control_plane
    fast = NotModifiedPath(plane)

    def serve(device: SimIdentity | None, header: bytes | None) -> tuple[bool, Sent]:
        sent = Sent()
        answered = asyncio.run(fast.serve(scope_for(device, header), sent))
        return answered, sent

    try:
        device, etag = devices_[0], etags[0]
        answered, sent = serve(device, f'"{etag}"'.encode())
        assert answered
        assert sent.messages[0]["status"] == 304
        assert dict(sent.messages[0]["headers"])[b"etag"] == f'"{etag}"'.encode()
        assert sent.messages[1] == {"type": "http.response.body", "body": b""}
        assert plane.last_seen.pending == 1
        plane.last_seen.flush()
        with served.database.read() as conn:
            seen = conn.execute(
                select(devices.c.last_seen_at).where(devices.c.serial == device.serial)
            ).scalar_one()
        assert seen >= clock.now - dt.timedelta(seconds=1)

        refused = [
            (device, None),  # no If-None-Match
            (device, b'"0123"'),  # another ETag
            (device, b'W/"0123"'),
            (device, b"garbage"),
            (device, b"*"),
            (device, f'"{etag}", "x"'.encode()),
            (None, f'"{etag}"'.encode()),  # no client certificate
        ]
        for who, header in refused:
            answered, sent = serve(who, header)
            assert not answered and sent.messages == [], header

        clock.advance(dt.timedelta(days=3650))  # past the certificate's notAfter
        answered, sent = serve(device, f'"{etag}"'.encode())
        assert not answered and sent.messages == []
        clock.now = dt.datetime.now(dt.UTC)

        other, other_etag = devices_[1], etags[1]
        assert serve(other, f'"{other_etag}"'.encode())[0]
        with served.database.write() as conn:
            conn.execute(
                update(devices).where(devices.c.serial == other.serial).values(status="revoked")
            )
        answered, sent = serve(other, f'"{other_etag}"'.encode())
        assert not answered and sent.messages == []
    finally:
        fast.close()
        plane.last_seen.close()
        plane.enrollment.close()


def test_concurrent_polls_are_looked_up_together_and_each_judged_alone(
    sim_fleet: SimFleet,
) -> None:
    fleet = sim_fleet.enroll(6)
    served = sim_fleet.shared.served

    async def first_etag(device: SimIdentity) -> str:
        conn = await open_device(sim_fleet, device)
        try:
            return str(json.loads((await conn.request("GET", DIRECTIVE_PATH)).body)["etag"])
        finally:
            conn.close()

    etags = {d.serial: asyncio.run(first_etag(d)) for d in fleet}
    revoked, stale = fleet[0], fleet[1]
    with served.database.write() as conn:
        conn.execute(
            update(devices).where(devices.c.serial == revoked.serial).values(status="revoked")
        )
    app = create_app(served.fleet, served.database)
    plane: ControlPlane = app.state.control_plane
    fast = NotModifiedPath(plane)

    async def poll_all() -> list[bool]:
        polls = []
        for device in fleet * 5:  # 30 requests at once, each device five times
            etag = "0123" if device is stale else etags[device.serial]
            polls.append(fast.serve(scope_for(device, f'"{etag}"'.encode()), Sent()))
        return list(await asyncio.gather(*polls))

    try:
        answered = asyncio.run(poll_all())
        expected = [d not in (revoked, stale) for d in fleet] * 5
        assert answered == expected
        assert fast.lookup.requests == 30
        assert fast.lookup.batches < 30  # looked up together, not one by one
    finally:
        fast.close()
        plane.last_seen.close()
        plane.enrollment.close()
