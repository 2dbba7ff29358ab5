"""Errors inside a cycle stay inside it: a signed app that cannot be unpacked fails for good
(recorded, not retried) instead of stopping every cycle; any other error of a step still
lets the operator's command be answered, the reports go out and the device check in, then
the cycle raises it; the device's storage failing or a malformed operator command is a
:class:`GarrisonError` with a hint, and the daemon (:meth:`Agent.run`) backs off instead
of dying."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import pytest

from garrison.agent.agent import Agent
from garrison.agent.converge import Hold
from garrison.agent.executor import StorageFailed
from garrison.agent.fleet_state import FleetFiles
from garrison.updates import apps
from garrison.updates.tufclient import UpdateUnavailable
from tests.agent.test_fleet_channel import GOOD, local_app, played
from tests.agent.test_fleet_converge import set_desired
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import Device, World

world = updates_conftest.world  # the fixture, shared with tests/updates

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

QUEUED = {"campaign": 3, "target": "fw-2.0.img", "state": "downloading", "version": "2.0"}


@pytest.fixture
def device(world: World) -> Device:
    return world.enroll()


def test_a_signed_app_that_cannot_be_unpacked_fails_for_good(world: World) -> None:
    """Regression: :class:`AppInstallError` escaped every cycle, forever."""
    device = world.enroll()
    junk = world.publish("junk", "1.0", install="app", data=b"this is not a tar archive" * 10)
    set_desired(
        world, world.operator, device.config.serial, {"apps": [{"name": "junk", "version": "1.0"}]}
    )
    agent = Agent(device.state, clock=Clock())
    first = agent.cycle()  # no error: the target failed, the cycle went on
    assert "app junk 1.0: failed" not in first.did  # refused before anything ran
    record = FleetFiles(device.state.root).load_record()
    assert [(f.target, f.outcome) for f in record.failures] == [(junk.target, "failed")]
    assert "cannot unpack the package" in record.failures[0].event
    assert record.last_update is not None and record.last_update["outcome"] == "failed"
    assert record.installing is None and record.last_cycle["error"] == ""
    assert apps.installed_apps(device.sim.root) == {"junk": None}  # nothing switched
    assert [p.name for p in (device.sim.root / "apps" / "junk").iterdir()] == []
    again = agent.cycle()  # not tried again
    assert again.did == () and again.plan is not None
    assert isinstance(again.plan.steps[0], Hold)


def with_queued_report_and_command(device: Device, action: str = "reboot") -> Any:
    """A played control plane whose directive names command 7; app pump 1.0 is installed;
    a report waits in the outbox."""
    agent, plane = played(device)
    agent.cycle()  # (its directive has no apps: it would remove any app installed before)
    local_app(device, "pump")
    files = FleetFiles(device.state.root)
    record = files.load_record()
    record.queue_report(dict(QUEUED))
    files.save_record(record)
    plane.seen.clear()
    plane.directive = lambda _r: httpx.Response(
        200, json={**GOOD, "etag": "e-cmd", "command": {"id": 7, "action": action}}
    )
    plane.commands = lambda _r: httpx.Response(200, json={"id": 7, "action": action})
    return agent, plane


def answered_reported(plane: Any) -> None:
    calls = [(m, p) for m, p, _ in plane.seen]
    assert ("GET", "/device/v1/commands") in calls
    assert ("POST", "/device/v1/commands/7") in calls
    assert ("POST", "/device/v1/report") in calls


def test_an_error_reading_the_device_still_answers_the_command_and_reports(
    device: Device,
) -> None:
    """Regression: an :class:`AppInstallError` while gathering the facts skipped the
    operator's command and the reports."""
    agent, plane = with_queued_report_and_command(device)
    (device.sim.root / "apps" / "pump" / apps.CONFIG_FILE).mkdir()  # unreadable config
    with pytest.raises(apps.AppInstallError, match="cannot read the configuration of pump"):
        agent.cycle()
    answered_reported(plane)
    record = FleetFiles(device.state.root).load_record()
    assert record.outbox == []
    assert "cannot read the configuration of pump" in record.last_cycle["error"]


def test_an_error_finishing_an_interruption_is_contained_too(device: Device) -> None:
    agent, plane = with_queued_report_and_command(device)
    (device.sim.root / "apps" / "pump" / apps.TRIAL_FILE).write_bytes(b"{}")
    with pytest.raises(apps.AppInstallError, match="is damaged"):
        agent.cycle()
    answered_reported(plane)
    assert apps.current_version(device.sim.root, "pump") == "1.0"  # nothing else was done


def test_a_storage_failure_in_a_step_stops_the_plan_not_the_cycle(device: Device) -> None:
    """Writing an app's configuration fails (the disk): the plan stops there as
    :class:`StorageFailed`; the command is answered, the reports go out."""
    agent, plane = with_queued_report_and_command(device)
    entry = {"name": "pump", "version": "1.0", "target": "pump-1.0.tar", "config": {"rate": 5}}
    plane.directive = lambda _r: httpx.Response(
        200,
        json={**GOOD, "etag": "e-cfg", "apps": [entry], "command": {"id": 7, "action": "reboot"}},
    )
    blocker = device.sim.root / "apps" / "pump" / "config.json.tmp"
    blocker.mkdir()
    (blocker / "x").touch()  # atomic_write cannot clear its temporary file
    with pytest.raises(StorageFailed, match="the device's storage failed") as caught:
        agent.cycle()
    assert "free space" in caught.value.hint
    answered_reported(plane)
    cycle = FleetFiles(device.state.root).load_record().last_cycle
    assert cycle["plan"] == ["configure app pump"]
    assert cycle["did"][-1].startswith("stopped: the device's storage failed")
    assert apps.read_config(device.sim.root, "pump") is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[7]", id="not-an-object"),
        pytest.param(b'{"id": "7", "action": "rollback"}', id="id-not-an-integer"),
        pytest.param(b'{"id": true, "action": "rollback"}', id="id-a-boolean"),
        pytest.param(b'{"action": "rollback"}', id="no-id"),
        pytest.param(b'{"id": 7, "action": null}', id="no-action"),
    ],
)
def test_a_malformed_operator_command_is_refused_and_the_reports_still_go(
    device: Device, body: bytes
) -> None:
    """Regression: a malformed ``/commands`` body raised ValueError / KeyError / TypeError
    (or AttributeError) out of the daemon."""
    agent, plane = with_queued_report_and_command(device)
    plane.commands = lambda _r: httpx.Response(
        200, content=body, headers={"Content-Type": "application/json"}
    )
    before = device.snapshot()
    with pytest.raises(UpdateUnavailable, match="operator command") as caught:
        agent.cycle()
    assert caught.value.hint
    assert device.snapshot() == before  # nothing was carried out
    calls = [(m, p) for m, p, _ in plane.seen]
    assert ("POST", "/device/v1/report") in calls
    assert not any(p.startswith("/device/v1/commands/") for _, p in calls)  # nothing answered


def run_daemon_until_it_fails(agent: Agent, caplog: pytest.LogCaptureFixture) -> str:
    """Run :meth:`Agent.run` in a thread until its first failed cycle is logged; return
    the log line. The daemon must still be alive then (backing off), and stop when told."""
    stop = threading.Event()
    daemon = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    with caplog.at_level(logging.WARNING, logger="garrison.agent"):
        daemon.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            failed = [r.getMessage() for r in caplog.records if "cycle failed" in r.getMessage()]
            if failed or not daemon.is_alive():
                break
            time.sleep(0.05)
        alive = daemon.is_alive()
        stop.set()
        daemon.join(10)
    assert alive, "the daemon died"
    assert not daemon.is_alive()
    assert failed
    return failed[0]


def test_the_daemon_survives_a_full_disk(device: Device, caplog: pytest.LogCaptureFixture) -> None:
    """Regression: an ``OSError`` (the agent's record cannot be written) killed the daemon
    with a traceback."""
    agent, _plane = played(device)
    record = FleetFiles(device.state.root).record_path
    record.parent.mkdir(parents=True, exist_ok=True)
    record.mkdir()  # the record cannot be replaced: an OSError on every save
    (record / "x").touch()
    with pytest.raises(StorageFailed):
        agent.cycle()
    line = run_daemon_until_it_fails(agent, caplog)
    assert "the device's storage failed" in line


def test_the_daemon_survives_a_malformed_command(
    device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    agent, plane = with_queued_report_and_command(device)
    plane.commands = lambda _r: httpx.Response(200, json={"id": [], "action": {}})
    line = run_daemon_until_it_fails(agent, caplog)
    assert "operator command" in line
