"""``garrison campaign …`` against a served fleet, as an operator uses it (SQLite: the
backend is the API's business, tested on both in test_api.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.campaigns.conftest import enroll_group, show, update, wait_for
from tests.fleet.conftest import World, make_world
from tests.server.conftest import shared_fleet

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("sqlite")
    with shared_fleet("sqlite", directory) as shared:
        made = make_world(shared, directory / "devices")
        made.publish("fw", "2.0.0")
        yield made


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def cli(world: World, *args: str, token: str | None = None) -> tuple[int, str]:
    fleet = world.fleet
    options = ["--data-dir", str(fleet.fleet.paths.root), "--server", fleet.url]
    result = runner.invoke(app, [*args, *options, "--token", token or world.operator])
    return result.exit_code, result.output


def test_an_operator_runs_a_campaign_from_the_command_line(world: World) -> None:
    group, devices = enroll_group(world, 3)
    code, out = cli(
        world,
        "campaign", "create", "spring roll", "--group", group, "--release", "fw",
        "--version", "2.0.0", "--canary", "1", "--waves", "50,100", "--rate", "600",
        "--threshold", "0",
    )  # fmt: skip
    assert code == 0, out
    campaign = int(out.split("campaign ", 1)[1].split()[0])
    assert f"campaign {campaign} started: 3 of 3 device(s) of {group} to update to 2.0.0" in out
    wait_for(world, campaign, lambda c: c["counts"].get("assigned") == 1)

    code, out = cli(world, "campaign", "list", "--group", group)
    assert code == 0 and "spring roll" in out and "1 assigned, 2 pending" in out
    code, out = cli(world, "campaign", "list", "--state", "active", "--limit", "1")
    assert code == 0 and "spring roll" in out
    code, out = cli(world, "campaign", "list", "--before", str(campaign))
    assert code == 0 and "spring roll" not in out
    code, out = cli(world, "campaign", "list", "--limit", "0")
    assert code == 2 and "limit" in out
    code, out = cli(world, "campaign", "show", str(campaign))
    assert code == 0, out
    assert "canary 1, waves 50%, 100%, 600/min, 0 failure(s) allowed per phase" in out
    assert "running" in out and "canary (1 of 3)" in out
    assert "0/1" in out and devices[0].serial in out  # the canary's bar and device

    code, out = cli(world, "campaign", "pause", str(campaign))
    assert code == 0 and f"campaign {campaign} is paused (paused by principal:otto)" in out
    code, out = cli(world, "campaign", "pause", str(campaign))
    assert code == 2
    assert f"409: campaign {campaign} is paused; only a running campaign can be paused" in out
    code, out = cli(world, "campaign", "resume", str(campaign))
    assert code == 0 and f"campaign {campaign} is running" in out
    wait_for(world, campaign, lambda c: c["counts"].get("assigned") == 1)

    code, out = cli(world, "campaign", "level")
    assert code == 0, out
    [row] = [line for line in out.splitlines() if f" {group} " in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells == [group, "2.0.0", "0", "1", "0", "2", "3"]
    assert "every member is in exactly one category" in out
    code, out = cli(world, "campaign", "level", "--devices")
    assert f"{group} not_reached: {devices[1].serial}, {devices[2].serial}" in out

    code, out = cli(world, "campaign", "abort", str(campaign), "--rollback")
    assert code == 0 and f"campaign {campaign} is aborted (aborted by principal:otto" in out
    code, out = cli(world, "campaign", "show", str(campaign), "--watch")
    assert code == 0 and f"campaign {campaign} is aborted" in out


def test_watch_follows_a_campaign_to_its_end(world: World) -> None:
    group, [device] = enroll_group(world, 1)
    code, out = cli(
        world, "campaign", "create", "one", "--group", group, "--release", "fw",
        "--version", "2.0.0",
    )  # fmt: skip
    assert code == 0, out
    campaign = int(out.split("campaign ", 1)[1].split()[0])

    def device_updates() -> None:
        wait_for(world, campaign, lambda c: c["counts"].get("assigned") == 1)
        time.sleep(0.5)
        update(world, device, campaign)

    worker = threading.Thread(target=device_updates)
    worker.start()
    code, out = cli(world, "campaign", "show", str(campaign), "--watch", "--interval", "0.3")
    worker.join()
    assert code == 0, out
    assert f"campaign {campaign} is completed" in out
    assert show(world, campaign)["state"] == "completed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--canary", "a few"], "--canary takes a number of devices or a percentage like 5%"),
        (["--threshold", "x"], "--threshold takes a number of devices or a percentage"),
        (["--waves", "25,half,100"], "--waves takes cumulative percentages separated by commas"),
        (["--waves", "50"], "400: the last wave must be 100"),
        (["--canary", "0"], "400: canary must be between 1 and"),
        (["--group", "nowhere"], "404: no group named 'nowhere'"),
    ],
)
def test_mistakes_are_explained(world: World, args: list[str], message: str) -> None:
    base = ["campaign", "create", "x", "--group", "g0", "--release", "fw", "--version", "2.0.0"]
    code, out = cli(world, *base, *args)
    assert code == 2 and message in " ".join(out.split()), out


def test_an_auditor_reads_but_does_not_command(world: World) -> None:
    code, out = cli(world, "campaign", "list", token=world.auditor)
    assert code == 0, out
    code, out = cli(world, "campaign", "pause", "1", token=world.auditor)
    assert code == 2 and "403: role 'auditor' may not campaigns.manage" in out
    code, out = cli(world, "campaign", "show", "99999")
    assert code == 2 and "404: no campaign 99999" in out
