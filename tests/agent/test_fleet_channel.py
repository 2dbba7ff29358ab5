"""The agent facing a hostile or broken control plane: malformed directives, check-in
answers and statuses are refused before anything is acted on, and reports wait while the
control plane cannot take them. The device is enrolled for real; then a transport plays the
control plane (a real one never sends these answers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from garrison.agent.agent import Agent
from garrison.agent.directive import DirectiveInvalid
from garrison.agent.fleet_channel import ChannelError, FleetChannel
from garrison.agent.fleet_state import FleetFiles, Record
from garrison.updates import apps
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import Device, World

world = updates_conftest.world  # the fixture, shared with tests/updates

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

Handler = Callable[[httpx.Request], httpx.Response]

GOOD = {
    "etag": "e-good",
    "firmware": None,
    "apps": [],
    "window": None,
    "poll_seconds": 60,
    "jitter_seconds": 6,
}


class PlayedControlPlane:
    """Answers the device API from a table; records every request."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        self.directive: Handler = lambda _r: httpx.Response(200, json=GOOD)
        self.checkin: Handler = lambda _r: httpx.Response(
            200,
            json={
                "serial": serial,
                "certificate": "ab",
                "server_time": "2026-11-21T10:00:00Z",
                "poll_seconds": 60,
                "jitter_seconds": 6,
                "directive_etag": "other",
            },
        )
        self.report: Handler = lambda _r: httpx.Response(204)
        self.commands: Handler = lambda _r: httpx.Response(204)
        self.seen: list[tuple[str, str, dict[str, Any] | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, request.url.path, body))
        route = {
            ("POST", "/device/v1/checkin"): self.checkin,
            ("GET", "/device/v1/directive"): self.directive,
            ("POST", "/device/v1/report"): self.report,
            ("GET", "/device/v1/commands"): self.commands,
        }.get((request.method, request.url.path))
        if request.method == "POST" and request.url.path.startswith("/device/v1/commands/"):
            route = lambda _r: httpx.Response(204)  # noqa: E731
        return route(request) if route is not None else httpx.Response(404)


def local_app(device: Device, name: str, version: str = "1.0") -> None:
    """An app installed on the device by hand (a version directory and its link)."""
    apps.install_app(device.sim.root, name, version, {"x": b"x"}, apps.files_digest({"x": b"x"}))


@pytest.fixture
def device(world: World) -> Device:
    return world.enroll()


def played(device: Device) -> tuple[Agent, PlayedControlPlane]:
    plane = PlayedControlPlane(device.config.serial)
    return Agent(device.state, clock=Clock(), transport=httpx.MockTransport(plane)), plane


def test_a_played_control_plane_is_followed(device: Device) -> None:
    agent, plane = played(device)
    local_app(device, "stray")
    result = agent.cycle()
    assert result.directive.etag == "e-good"
    assert apps.installed_apps(device.sim.root) == {}  # apps: [] removes every app
    assert [(m, p) for m, p, _ in plane.seen] == [
        ("POST", "/device/v1/checkin"),
        ("GET", "/device/v1/directive"),  # names no command: /commands is not asked
        ("POST", "/device/v1/checkin"),  # the device changed: checked in again
    ]
    assert result.exchanges == (
        ("POST /device/v1/checkin", 200),
        ("GET /device/v1/directive", 200),
        ("POST /device/v1/checkin", 200),
    )
    inventory = plane.seen[0][2]
    assert inventory is not None and inventory["inventory"]["apps"] == {"stray": "1.0"}
    assert plane.seen[-1][2]["inventory"]["apps"] == {}  # type: ignore[index]
    assert inventory["inventory"]["serial"] == device.config.serial


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"{not json"),
        httpx.Response(200, json=[GOOD]),
        httpx.Response(200, json={**GOOD, "poll_seconds": 0}),
        httpx.Response(
            200, json={**GOOD, "apps": [{"name": "../x", "version": "1", "target": "t"}]}
        ),
        httpx.Response(200, json={**GOOD, "firmware": {"target": "/etc/shadow", "version": "1"}}),
        httpx.Response(200, json={**GOOD, "window": {"timezone": "Nowhere/Else", "slots": []}}),
        httpx.Response(304, headers={"Garrison-Poll": "soon"}),
        httpx.Response(200, json={**GOOD, "future": {"anything": 1}}),
        httpx.Response(200, json={**GOOD, "command": {"id": "7", "action": "rollback"}}),
        httpx.Response(200, json={**GOOD, "kept_apps": [{"name": "keep"}]}),
        httpx.Response(
            200, json={**GOOD, "apps": None, "kept_apps": [{"name": "k", "reason": ""}]}
        ),
    ],
)
def test_a_malformed_directive_is_not_acted_on(device: Device, answer: httpx.Response) -> None:
    agent, plane = played(device)
    apps.write_config(device.sim.root, "keep", {"a": 1})  # apps: [] would remove it
    plane.directive = lambda _r: answer
    before = device.snapshot()
    with pytest.raises(DirectiveInvalid):
        agent.cycle()
    assert device.snapshot() == before
    assert apps.installed_apps(device.sim.root) == {"keep": None}
    assert FleetFiles(device.state.root).load_directive() is None  # nothing kept
    assert ("GET", "/device/v1/commands", None) not in plane.seen


def test_a_command_named_by_the_directive_is_fetched_and_answered(device: Device) -> None:
    agent, plane = played(device)
    agent.cycle()
    plane.seen.clear()
    plane.directive = lambda _r: httpx.Response(
        200, json={**GOOD, "etag": "e-cmd", "command": {"id": 5, "action": "reboot"}}
    )
    plane.commands = lambda _r: httpx.Response(200, json={"id": 5, "action": "reboot"})
    result = agent.cycle()
    assert result.directive.command is not None and result.directive.command.id == 5
    assert [(m, p) for m, p, _ in plane.seen] == [
        ("GET", "/device/v1/directive"),
        ("GET", "/device/v1/commands"),
        ("POST", "/device/v1/commands/5"),
    ]
    assert plane.seen[-1][2] == {"outcome": "refused", "detail": "unknown action 'reboot'"}


def test_a_control_plane_without_directives_is_asked_for_commands_every_cycle(
    device: Device,
) -> None:
    """An older control plane (no directive route): the agent keeps asking /commands."""
    agent, plane = played(device)
    plane.directive = lambda _r: httpx.Response(404)
    for _ in range(2):
        plane.seen.clear()
        result = agent.cycle()
        assert result.directive_status == 404
        assert ("GET", "/device/v1/commands", None) in plane.seen


def test_a_malformed_directive_keeps_the_last_good_one(device: Device) -> None:
    agent, plane = played(device)
    agent.cycle()
    plane.directive = lambda _r: httpx.Response(200, json={**GOOD, "etag": 'x"y'})
    with pytest.raises(DirectiveInvalid, match="etag"):
        agent.cycle()
    kept = FleetFiles(device.state.root).load_directive()
    assert kept is not None and kept.etag == "e-good"


@pytest.mark.parametrize(
    ("where", "answer", "message"),
    [
        ("checkin", httpx.Response(403, json={"detail": "not you"}), r"check-in refused \(403\)"),
        ("checkin", httpx.Response(200, json={"serial": "x"}), "check-in answer is malformed"),
        (
            "checkin",
            httpx.Response(200, json={"serial": "x", "certificate": "a", "poll_seconds": -5}),
            "malformed",
        ),
        ("directive", httpx.Response(500, text="boom"), r"directive refused \(500\)"),
        ("directive", httpx.Response(401), r"directive refused \(401\)"),
    ],
)
def test_refusals_and_broken_answers_stop_the_cycle(
    device: Device, where: str, answer: httpx.Response, message: str
) -> None:
    agent, plane = played(device)
    setattr(plane, where, lambda _r: answer)
    before = device.snapshot()
    with pytest.raises(ChannelError, match=message):
        agent.cycle()
    assert device.snapshot() == before


def test_an_unreachable_control_plane_is_a_channel_error(device: Device) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    agent = Agent(device.state, transport=httpx.MockTransport(down))
    with pytest.raises(ChannelError, match="cannot reach the control plane"):
        agent.cycle()


def test_the_poll_comes_from_the_server_and_a_304_header_updates_it(device: Device) -> None:
    agent, plane = played(device)
    first = agent.cycle()
    assert (first.poll_seconds, first.jitter_seconds) == (60, 6)
    plane.directive = lambda _r: httpx.Response(304, headers={"Garrison-Poll": "30;jitter=5"})
    second = agent.cycle()
    assert second.directive_status == 304 and second.directive.etag == "e-good"
    assert (second.poll_seconds, second.jitter_seconds) == (30, 5)
    assert plane.seen[-2][0:2] == ("GET", "/device/v1/directive")
    waits = [agent.wait_seconds(30, 5) for _ in range(200)]
    assert all(25 <= w <= 35 for w in waits) and len(set(waits)) > 100
    assert agent.wait_seconds(1, 1) >= 1.0


def test_the_kept_etag_is_sent_and_a_check_in_naming_it_skips_the_poll(device: Device) -> None:
    agent, plane = played(device)
    agent.cycle()
    etags: list[str | None] = []

    def directive(request: httpx.Request) -> httpx.Response:
        etags.append(request.headers.get("if-none-match"))
        return httpx.Response(304, headers={"Garrison-Poll": "60;jitter=6"})

    plane.directive = directive
    agent.cycle()
    assert etags == ['"e-good"']
    # a check-in (here: the inventory changed) whose answer names the kept ETag: no poll
    plane.checkin = lambda _r: httpx.Response(
        200,
        json={
            "serial": "s",
            "certificate": "c",
            "poll_seconds": 60,
            "jitter_seconds": 6,
            "directive_etag": "e-good",
        },
    )
    local_app(device, "new-app")
    result = agent.cycle()
    assert result.check_in is not None and result.directive_status is None
    assert etags == ['"e-good"']


def test_reports_wait_while_the_control_plane_cannot_take_them(device: Device) -> None:
    agent, plane = played(device)
    record = Record()
    for state in ("downloading", "downloaded", "installing"):
        record.queue_report({"campaign": 3, "target": "fw", "state": state, "version": "2"})
    assert not record.queue_report({"campaign": 3, "target": "fw", "state": "downloading"})
    answers = iter(
        [httpx.Response(204), httpx.Response(503), httpx.Response(409), httpx.Response(204)]
    )
    plane.report = lambda _r: next(answers)
    with httpx.Client(base_url="https://cp", transport=httpx.MockTransport(plane)) as http:
        channel = FleetChannel(http)
        agent._flush(channel, record)  # delivered, then 503: the rest waits, in order
        assert [r["state"] for r in record.outbox] == ["downloaded", "installing"]
        agent._flush(channel, record)  # 409: refused for good (not resent), then delivered
        assert record.outbox == []
    sent = [body["state"] for m, p, body in plane.seen if p == "/device/v1/report" and body]
    assert sent == ["downloading", "downloaded", "downloaded", "installing"]


def test_a_damaged_kept_directive_or_record_is_replaced(device: Device) -> None:
    agent, _ = played(device)
    agent.cycle()
    files = FleetFiles(device.state.root)
    files.directive_path.write_bytes(b"\x00garbage")
    files.record_path.write_bytes(b"[1, 2")
    result = agent.cycle()
    assert result.directive_status == 200 and result.check_in is not None
    assert files.load_directive() is not None and files.load_record().inventory_digest


def test_a_failed_cycle_is_recorded_for_status(device: Device) -> None:
    agent, plane = played(device)
    plane.directive = lambda _r: httpx.Response(200, json={**GOOD, "jitter_seconds": 61})
    with pytest.raises(DirectiveInvalid):
        agent.cycle()
    cycle = FleetFiles(device.state.root).load_record().last_cycle
    assert "jitter_seconds must be" in cycle["error"] and cycle["did"] == []


@pytest.mark.parametrize("status", [204, 404])
def test_no_directive_for_the_device_drops_the_kept_one(device: Device, status: int) -> None:
    agent, plane = played(device)
    agent.cycle()
    assert FleetFiles(device.state.root).load_directive() is not None
    plane.directive = lambda _r: httpx.Response(status)
    local_app(device, "tool")
    result = agent.cycle()
    assert result.directive_status == status and result.directive.etag == ""
    assert result.plan is not None and result.plan.steps == ()  # stay as it is
    assert FleetFiles(device.state.root).load_directive() is None
    assert apps.installed_apps(device.sim.root) == {"tool": "1.0"}
