"""A simulated device's state (pure): the agent's report states and order, A/B outcomes,
operator rollback, and an inventory the control plane accepts."""

from __future__ import annotations

import datetime as dt

from garrison.agent.directive import FirmwareEntry
from garrison.fleet.inventory import parse_inventory
from garrison.sim.state import DeviceState

NOW = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
FW = FirmwareEntry("fw/2.0.0/fw-2.0.0.img", "2.0.0", 3)


def states(device: DeviceState) -> list[str]:
    return [r["state"] for r in device.outbox]


def test_a_healthy_install_reports_every_step_once_and_commits() -> None:
    device = DeviceState("S-1", "gw-1", "1.0.0")
    device.downloading(FW)
    device.downloaded_firmware(FW)
    device.installing(FW)
    device.installing(FW)  # queued once only
    assert device.installed_firmware(FW, True, NOW) == "committed"
    assert states(device) == ["downloading", "downloaded", "installing", "committed"]
    assert (device.firmware, device.previous, device.slot) == ("2.0.0", "1.0.0", "b")
    assert {r["campaign"] for r in device.outbox} == {3}
    assert device.last_update is not None and device.last_update["outcome"] == "committed"
    device.confirm(FW)  # already committed for this campaign: not again
    assert states(device).count("committed") == 1


def test_a_failed_health_check_rolls_back_and_is_held() -> None:
    device = DeviceState("S-2", "gw-1", "1.0.0")
    assert device.installed_firmware(FW, False, NOW) == "rolled-back"
    assert (device.firmware, device.slot, device.previous) == ("1.0.0", "a", None)
    assert states(device) == ["rolled-back"]
    (failure,) = device.facts().failures
    assert (failure.target, failure.campaign, failure.outcome) == (FW.target, 3, "rolled-back")
    device.held(failure, 3)  # the same campaign: nothing more to say
    device.held(failure, 4)  # another campaign is told at once
    assert [(r["campaign"], r["state"]) for r in device.outbox] == [
        (3, "rolled-back"),
        (4, "failed"),
    ]


def test_desired_state_firmware_is_not_reported() -> None:
    device = DeviceState("S-3", "gw-1", "1.0.0")
    plain = FirmwareEntry("fw/2.0.0/fw-2.0.0.img", "2.0.0", None)
    device.installing(plain)
    device.installed_firmware(plain, True, NOW)
    assert device.outbox == []
    assert device.firmware == "2.0.0"


def test_operator_rollback_needs_a_previous_version() -> None:
    device = DeviceState("S-4", "gw-1", "1.0.0")
    assert device.operator_rollback(NOW)[0] == "refused"
    device.installed_firmware(FW, True, NOW)
    outcome, detail = device.operator_rollback(NOW)
    assert outcome == "committed" and "1.0.0" in detail
    assert (device.firmware, device.previous) == ("1.0.0", "2.0.0")


def test_the_inventory_is_what_the_control_plane_accepts_and_changes_with_the_device() -> None:
    device = DeviceState("S-5", "gw-1", "1.0.0", apps={"bridge": "1.2.0"})
    parsed = parse_inventory(device.inventory(42), "0.1.0")
    assert (parsed.serial, parsed.hardware, parsed.firmware) == ("S-5", "gw-1", "1.0.0")
    assert dict(parsed.apps) == {"bridge": "1.2.0"}
    assert device.check_in_due()  # never checked in
    device.checked_in(device.inventory(42), 30, 5)
    assert not device.inventory_changed() and device.poll == (30, 5)
    device.polls_since_checkin = 11
    assert device.check_in_due()  # the heartbeat
    device.polls_since_checkin = 0
    device.installed_firmware(FW, True, NOW)
    assert device.inventory_changed()
    parse_inventory(device.inventory(43), "0.1.0")  # with last_update
