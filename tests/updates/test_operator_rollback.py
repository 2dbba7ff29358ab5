"""Operator fallback from the control plane: an operator sends a device back to its previous
version; the device carries it out on its next run, reports, and stays there (update hold)
until released."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.updates.conftest import World
from tests.updates.test_update_cli import _enroll

runner = CliRunner()


def test_operator_sends_a_device_back_and_it_stays(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    state = tmp_path / "dev"
    assert "enrolled OPS-1" in _enroll(world, state, "OPS-1")
    agent = ["--state", str(state)]
    world.publish("fw", "1.0.0", security_version=0)
    assert "1.0.0 runs and is committed" in runner.invoke(app, ["agent", "update", *agent]).output
    world.publish("fw", "1.1.0", security_version=0)
    assert "1.1.0 runs and is committed" in runner.invoke(app, ["agent", "update", *agent]).output

    with world.fleet.api() as admin:
        made = admin.post("/principals", json={"name": "otto", "role": "operator"})
    fleet = ["--data-dir", str(world.fleet.fleet.paths.root), "--server", world.fleet.url]
    otto = [*fleet, "--token", made.json()["token"]]
    queued = runner.invoke(app, ["device", "rollback", "OPS-1", *otto])
    assert queued.exit_code == 0 and "rollback queued for 1 device(s)" in queued.output
    refused = runner.invoke(app, ["device", "rollback", "NO-SUCH", *otto])
    assert refused.exit_code == 2 and "no active device" in refused.output
    with world.fleet.api(world.tokens[0]) as release_manager:  # not an operator's duty
        assert (
            release_manager.post("/devices/rollback", json={"serials": ["OPS-1"]}).status_code
            == 403
        )

    back = runner.invoke(app, ["agent", "update", *agent])
    assert back.exit_code == 0 and "operator rollback: committed, 1.0.0 runs" in back.output
    stays = runner.invoke(app, ["agent", "update", *agent])  # on hold: 1.1.0 not offered
    assert "no release for this device" in stays.output, stays.output

    released = runner.invoke(app, ["device", "release-hold", "OPS-1", *otto])
    assert released.exit_code == 0
    again = runner.invoke(app, ["agent", "update", *agent])
    assert "1.1.0 runs and is committed" in again.output, again.output
    with world.fleet.api(world.officer) as api:
        actions = [
            (e["action"], e["outcome"]) for e in api.get("/audit", params={"limit": 1000}).json()
        ]
    assert ("device.rollback", "ok") in actions
    assert ("device.command-done", "ok") in actions
    assert ("device.release-hold", "ok") in actions


def test_rollback_of_a_model_and_bad_requests(world: World, tmp_path: Path) -> None:
    for serial in ("OPS-2", "OPS-3"):
        assert f"enrolled {serial}" in _enroll(world, tmp_path / serial, serial)
    with world.fleet.api(world.officer) as api:
        group = api.post("/devices/rollback", json={"model": "gw-2"})
        assert group.status_code == 200 and {"OPS-2", "OPS-3"} <= set(group.json()["devices"])
        both = api.post("/devices/rollback", json={"serials": ["OPS-2"], "model": "gw-2"})
        assert both.status_code == 400
        neither = api.post("/devices/rollback", json={})
        assert neither.status_code == 400
        unknown_model = api.post("/devices/rollback", json={"model": "nope"})
        assert unknown_model.status_code == 200 and unknown_model.json() == {"devices": []}
        not_held = api.post("/devices/NO-SUCH/release-hold")
        assert not_held.status_code == 404
