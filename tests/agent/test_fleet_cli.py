"""'garrison agent run --once' and 'garrison agent status' as an operator reads them: the
directive, what the agent did, and what it waits for."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import World

world = updates_conftest.world  # the fixture, shared with tests/updates

runner = CliRunner()
BERLIN = ZoneInfo("Europe/Berlin")


def test_run_once_and_status_show_the_directive_and_the_plan(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    world.publish("fw", "1.1.0", desired=False)
    device = world.enroll()
    serial = device.config.serial
    opens = (dt.datetime.now(BERLIN) + dt.timedelta(hours=3)).replace(second=0, microsecond=0)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[opens.weekday()]
    window = {
        "timezone": "Europe/Berlin",
        "slots": [{"days": [day], "start": f"{opens:%H:%M}", "minutes": 90}],
    }
    with world.fleet.api(world.operator) as api:
        assert api.post("/groups", json={"name": "night", "window": window}).status_code == 201
        assert api.post("/groups/night/members", json={"add": [serial]}).status_code == 200
        assert (
            api.put(
                "/desired/groups/night", json={"firmware": {"name": "fw", "version": "1.1.0"}}
            ).status_code
            == 200
        )
    state = ["--state", str(device.state.root)]
    waiting = f"waiting for maintenance window (opens {opens:%a %Y-%m-%d %H:%M} Europe/Berlin)"

    first = runner.invoke(app, ["agent", "run", "--once", *state])
    assert first.exit_code == 0, first.output
    assert f"checked in as {serial}" in first.output
    assert "directive   new" in first.output
    assert "did         downloaded firmware 1.1.0" in first.output
    assert f"pending     {waiting}: firmware 1.1.0" in first.output

    second = runner.invoke(app, ["agent", "run", "--once", *state])
    assert second.exit_code == 0, second.output
    assert "inventory unchanged, no check-in needed" in second.output
    assert "directive   unchanged (304)" in second.output
    assert "did         nothing to do" in second.output

    status = runner.invoke(app, ["agent", "status", *state])
    assert status.exit_code == 0, status.output
    out = status.output
    assert "firmware 1.1.0, apps not managed" in out
    assert f"window      {day} {opens:%H:%M} for 90 min (Europe/Berlin)" in out
    assert "poll        every 1800 s ± 180 s" in out
    assert f"plan        {waiting}: firmware 1.1.0" in out
    assert "slot a      factory" in out  # nothing installed outside the window
    assert "last cycle" in out and "nothing to do" in out


def test_status_of_an_agent_that_never_polled(world: World) -> None:
    device = world.enroll()
    status = runner.invoke(app, ["agent", "status", "--state", str(device.state.root)])
    assert status.exit_code == 0, status.output
    assert "directive   none received yet" in status.output
