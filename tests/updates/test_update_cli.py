"""The update commands as an operator meets them: enroll with a hardware model (the TUF root
fetched over the fleet-pinned channel, or given as a file), 'agent update' with its
progress bar, 'agent status', 'agent rollback', 'release export' and 'agent install'."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.updates.conftest import World

runner = CliRunner()


def _token(world: World, serial: str) -> str:
    with world.fleet.api(world.officer) as api:
        batch = api.post(
            "/batches",
            json={"name": serial, "manufacturer": "acme", "model": "gw-2", "serials": [serial]},
        )
    assert batch.status_code == 201, batch.text
    return str(batch.json()["tokens"][0]["token"])


def _enroll(world: World, state: Path, serial: str, *extra: str) -> str:
    result = runner.invoke(
        app,
        [
            "agent",
            "enroll",
            "--state",
            str(state),
            "--server",
            world.fleet.url,
            "--serial",
            serial,
            "--token",
            _token(world, serial),
            "--fleet-root",
            str(world.fleet.root_ca),
            "--hardware",
            "gw-2",
            *extra,
        ],
    )
    return result.output if result.exit_code == 0 else f"exit {result.exit_code}: {result.output}"


def test_update_status_rollback_export_install(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    state = tmp_path / "dev-1"
    assert "enrolled CLI-U1" in _enroll(world, state, "CLI-U1")
    agent = ["--state", str(state)]
    nothing = runner.invoke(app, ["agent", "update", *agent])
    assert nothing.exit_code == 0 and "no release for this device" in nothing.output

    release = world.publish("fw", "1.0.0", security_version=0)
    updated = runner.invoke(app, ["agent", "update", *agent])
    assert updated.exit_code == 0, updated.output
    assert "updated: 1.0.0 runs and is committed" in updated.output
    again = runner.invoke(app, ["agent", "update", *agent, "--target", release.target])
    assert "up to date: 1.0.0 already runs" in again.output
    status = runner.invoke(app, ["agent", "status", *agent])
    assert "hardware    gw-2" in status.output
    assert "slot b      1.0.0 (security 0, good) — active" in status.output, status.output
    assert "slot a      factory (security 0, good)" in status.output
    assert "floor       security version 0" in status.output

    back = runner.invoke(app, ["agent", "rollback", *agent])
    assert back.exit_code == 0 and "rolled back: factory runs" in back.output, back.output
    missing = runner.invoke(app, ["agent", "update", *agent, "--target", "fw/9/fw-9.img"])
    assert missing.exit_code == 2 and "no release 'fw/9/fw-9.img'" in missing.output

    bundle = tmp_path / "fw.bundle"
    fleet = ["--data-dir", str(world.fleet.fleet.paths.root), "--server", world.fleet.url]
    exported = runner.invoke(
        app, ["release", "export", "--target", release.target, "--out", str(bundle), *fleet]
    )
    assert exported.exit_code == 0 and f"exported {release.target}" in exported.output
    second = tmp_path / "dev-2"
    given = str(world.fleet.fleet.paths.tuf_root)
    assert "enrolled CLI-U2" in _enroll(world, second, "CLI-U2", "--tuf-root", given)
    installed = runner.invoke(app, ["agent", "install", "--state", str(second), str(bundle)])
    assert installed.exit_code == 0 and "updated: 1.0.0" in installed.output, installed.output
    tampered = tmp_path / "bad.bundle"
    tampered.write_bytes(b"not a bundle")
    refused = runner.invoke(app, ["agent", "install", "--state", str(second), str(tampered)])
    assert refused.exit_code == 2 and "not an update bundle" in refused.output


def test_enroll_refuses_a_file_that_is_not_a_tuf_root(world: World, tmp_path: Path) -> None:
    state = tmp_path / "dev"
    output = _enroll(world, state, "CLI-U3", "--tuf-root", str(world.fleet.root_ca))
    assert output.startswith("exit 2") and "not a valid TUF root" in output
    assert not (state / "identity.json").exists()  # refused before enrolling
