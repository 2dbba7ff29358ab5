"""``garrison group``, ``garrison desired`` and ``garrison device tag|show`` against a served
fleet, as an operator would use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.fleet.conftest import World

runner = CliRunner()


def cli(world: World, *args: str, token: str | None = None) -> tuple[int, str]:
    fleet = world.fleet
    options = ["--data-dir", str(fleet.fleet.paths.root), "--server", fleet.url]
    result = runner.invoke(app, [*args, *options, "--token", token or world.operator])
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def test_an_operator_manages_groups_tags_and_desired_state(world: World, tmp_path: Path) -> None:
    fw, app_name = world.unique("fw"), world.unique("app")
    world.publish(fw, "1.0.0")
    world.publish(app_name, "2.0", install="app")
    device = world.enroll()
    world.checkin(device)
    group, lab = world.unique("cli"), world.unique("lab")

    code, out = cli(world, "group", "create", group, "--priority", "3")
    assert code == 0 and f"group {group} (static) created with 0 member(s)" in out
    code, out = cli(world, "group", "add", group, device.serial)
    assert code == 0 and f"group {group} has 1 member(s)" in out
    code, out = cli(world, "group", "create", lab, "--filter", 'tag == "lab"')
    assert code == 0 and "(dynamic) created with 0 member(s)" in out
    code, out = cli(world, "device", "tag", device.serial, "lab", "east")
    assert code == 0 and f"{device.serial}: tags east, lab" in out
    code, out = cli(
        world,
        "group",
        "set-window",
        group,
        "--timezone",
        "Europe/Berlin",
        "--slot",
        "sat,sun 02:00 120",
    )
    assert code == 0 and "sat,sun 02:00 for 120 min (Europe/Berlin)" in out, out
    code, out = cli(world, "group", "list")
    assert code == 0 and group in out and lab in out and 'tag == "lab"' in out

    config = tmp_path / "modbus.json"
    config.write_text(json.dumps({"port": 502}))
    code, out = cli(
        world,
        "desired",
        "set",
        "--group",
        group,
        "--firmware",
        f"{fw}=1.0.0",
        "--app",
        f"{app_name}=2.0",
        "--config",
        f"{app_name}={config}",
        "--absent",
        "legacy",
    )
    assert code == 0, out
    assert f"{fw} 1.0.0" in out and '{"port": 502}' in out and "absent" in out
    code, out = cli(world, "desired", "show", "--group", group)
    assert code == 0 and f"{fw} 1.0.0" in out and "by principal:otto" in out
    code, out = cli(world, "group", "show", group)
    assert code == 0 and device.serial in out and "Europe/Berlin" in out and fw in out

    code, out = cli(world, "device", "show", device.serial)
    assert code == 0, out
    assert f"{fw} 1.0.0 (from {group})" in out
    assert f"1.0.0 ({fw}/1.0.0/{fw}-1.0.0.img)" in out
    assert "first inventory" in out and "east, lab" in out and lab in out

    code, out = cli(world, "desired", "clear", "--group", group)
    assert code == 0 and "desired state cleared" in out
    code, out = cli(world, "group", "remove", group, device.serial)
    assert code == 0 and "has 0 member(s)" in out
    code, out = cli(world, "group", "delete", group)
    assert code == 0 and f"group {group} deleted" in out


def test_mistakes_are_explained(world: World) -> None:
    device = world.enroll()
    cases = [
        (("group", "create", "x-bad", "--filter", "model =="), "filter, position 9"),
        (("group", "show", "no-such-group"), "404: no group named 'no-such-group'"),
        (("group", "add", "no-such-group", device.serial), "404: no group named"),
        (("group", "set-window", "g"), "give --slot (with --timezone), or --clear"),
        (("group", "set-window", "g", "--slot", "mon 02:00 60"), "--timezone is required"),
        (("group", "set-window", "g", "--timezone", "UTC", "--slot", "mon"), "DAYS HH:MM MINUTES"),
        (("desired", "show"), "name exactly one of --group or --device"),
        (("desired", "set", "--device", device.serial, "--firmware", "fw"), "must be NAME=VERSION"),
        (("desired", "set", "--device", device.serial), "must name firmware, apps or both"),
        (
            ("desired", "set", "--device", device.serial, "--config", "a=/nonexistent"),
            "cannot read",
        ),
        (("device", "tag", device.serial), "name the tags, or --clear"),
        (("device", "show", "GHOST-9"), "404: no device with serial 'GHOST-9'"),
    ]
    for args, message in cases:
        code, out = cli(world, *args)
        assert code == 2, (args, out)
        assert message in out, (args, out)
    code, out = cli(world, "group", "create", world.unique("x"), token=world.auditor)
    assert code == 2 and "403: role 'auditor' may not fleet.manage" in out
