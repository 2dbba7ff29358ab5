"""The command line as a user meets it: --help everywhere, init, audit verify, the demo."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.conftest import RunningFleet

runner = CliRunner()


def _all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "garrison")
def test_every_command_has_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert len(result.output.strip().splitlines()) > 3


def test_the_command_line_starts_without_the_server_stack() -> None:
    """Commands import the server, the database and the fleet's CA only when they run."""
    code = "import sys, garrison.cli.main; print(' '.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = ("fastapi", "uvicorn", "sqlalchemy", "garrison.server", "garrison.identity.fleet")
    assert [m for m in loaded if m.startswith(heavy)] == []


def test_init_then_audit_verify_detects_tampering(tmp_path: Path) -> None:
    data = tmp_path / "fleet"
    result = runner.invoke(app, ["init", "--data-dir", str(data), "--organization", "Acme"])
    assert result.exit_code == 0, result.output
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    assert "ENCRYPTED PRIVATE KEY" in (data / "keys" / "issuing-ca.key.pem").read_text()
    again = runner.invoke(app, ["init", "--data-dir", str(data)])
    assert again.exit_code == 2 and "already holds a fleet" in again.output

    ok = runner.invoke(app, ["audit", "verify", "--data-dir", str(data)])
    assert ok.exit_code == 0 and "audit log intact" in ok.output and "1 entries" in ok.output
    head = ok.output.split("head ", 1)[1].split()[0]
    with sqlite3.connect(data / "garrison.db") as conn:
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    bad = runner.invoke(app, ["audit", "verify", "--data-dir", str(data)])
    assert bad.exit_code == 2 and "entry 1 was modified" in bad.output
    with sqlite3.connect(data / "garrison.db") as conn:
        conn.execute("DELETE FROM audit_log")
    cut = runner.invoke(app, ["audit", "verify", "--data-dir", str(data)])
    assert cut.exit_code == 2 and "removed from the end" in cut.output
    with sqlite3.connect(data / "garrison.db") as conn:  # a thorough attacker rewinds the head
        conn.execute("UPDATE audit_head SET seq = 0, entry_hash = ?", ("0" * 64,))
    truncated = runner.invoke(
        app, ["audit", "verify", "--data-dir", str(data), "--expect-head", head]
    )
    assert truncated.exit_code == 2 and "before the recorded head" in truncated.output


@pytest.mark.parametrize(
    "given", ["abc", "5", "1:", ":" + "a" * 64, "0:x", "1:" + "g" * 64, "-1:" + "a" * 64, "1²:x"]
)
def test_audit_verify_refuses_a_malformed_expected_head(tmp_path: Path, given: str) -> None:
    data = tmp_path / "fleet"  # no fleet needed: the option is checked first
    result = runner.invoke(
        app, ["audit", "verify", "--data-dir", str(data), "--expect-head", given]
    )
    assert result.exit_code == 2
    assert "--expect-head must be SEQ:HASH" in result.output, result.output


def test_audit_verify_checks_the_expected_head(tmp_path: Path) -> None:
    data = tmp_path / "fleet"
    assert runner.invoke(app, ["init", "--data-dir", str(data)]).exit_code == 0
    verify = ["audit", "verify", "--data-dir", str(data), "--expect-head"]
    ok = runner.invoke(app, ["audit", "verify", "--data-dir", str(data)])
    head = ok.output.split("head ", 1)[1].split()[0]
    assert head.startswith("1:")
    assert runner.invoke(app, [*verify, head]).exit_code == 0
    assert runner.invoke(app, [*verify, head.upper()]).exit_code == 0
    assert runner.invoke(app, [*verify, "0:" + "0" * 64]).exit_code == 0  # the empty log
    for other in ("1:" + "f" * 64, "0:" + "f" * 64):  # a head this log never had
        differs = runner.invoke(app, [*verify, other])
        assert differs.exit_code == 2
        assert "differs from the recorded head" in differs.output, differs.output
    ahead = runner.invoke(app, [*verify, "2:" + head[2:]])
    assert ahead.exit_code == 2 and "before the recorded head 2" in ahead.output


def test_missing_fleet_tells_the_user_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "garrison init" in result.output


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's main job, as a real process: enrollment, the manufacturer refused, apps
    with per-device configuration, a campaign through canary and waves in which one device
    fails its health check and rolls back by itself, the update level with its proof."""
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "garrison.cli", "demo", "--data-dir", str(tmp_path / "demo"),
         "--devices", "9", "--port", "0", "--no-keep-running"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "6 x edge-gw-2: GW-1000 … GW-1005" in out
    assert "3 x press-ctl-5: PC-2000 … PC-2002" in out
    assert out.count("refused —") == 4  # three factory abuses and the revoked device
    assert "unexpectedly accepted" not in out and "still accepted" not in out
    assert "PC-2002 with its own configuration" in out and "'publish_ms': 100" in out
    assert "GW-1004 rolled-back" in out and "fieldbus service did not start" in out
    assert "campaign completed: {'succeeded': 8, 'rolled-back': 1}" in out
    assert "9 of 9, each once, digest" in out and "BROKEN" not in out
    assert "no firmware target of their own (no campaign, no desired firmware): pilot-line" in out
    assert "hash chain intact" in out
    assert "agents reporting errors" not in out
    assert "run 'garrison demo --keep-running'" in out


def test_admin_commands_against_a_running_server(
    served: RunningFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # keep Rich tables on one line per row
    data = ["--data-dir", str(served.fleet.paths.root), "--server", served.url]
    added = runner.invoke(app, ["principal", "add", "sofia", "--role", "security-officer", *data])
    assert added.exit_code == 0, added.output
    officer = added.output.strip().splitlines()[-1]
    assert officer.startswith("gat_")
    assert (
        runner.invoke(app, ["principal", "add", "acme", "--role", "manufacturer", *data]).exit_code
        == 0
    )
    denied = runner.invoke(app, ["device", "revoke", "X", *data])  # admin token: wrong role
    assert denied.exit_code == 2 and "may not devices.revoke" in denied.output

    as_officer = [*data, "--token", officer]
    serials = tmp_path / "serials.txt"
    serials.write_text("CLI-1\nCLI-2\n")
    tokens = tmp_path / "tokens.csv"
    created = runner.invoke(app, ["batch", "create", "--name", "PO-1", "--manufacturer", "acme",
                                  "--model", "gw", "--serials-file", str(serials),
                                  "--tokens-out", str(tokens), *as_officer])  # fmt: skip
    assert created.exit_code == 0, created.output
    assert tokens.stat().st_mode & 0o777 == 0o600
    rows = tokens.read_text().splitlines()
    assert rows[0] == "serial,token" and rows[1].startswith("CLI-1,gst_")
    listed = runner.invoke(app, ["batch", "list", *as_officer])
    assert "PO-1" in listed.output and "acme" in listed.output
    serial, token = rows[1].split(",")
    agent_state = tmp_path / "agent"
    enroll = ["agent", "enroll", "--state", str(agent_state), "--server", served.url]
    enroll += ["--serial", serial, "--token", token, "--fleet-root", str(served.root_ca)]
    enrolled = runner.invoke(app, enroll)
    assert enrolled.exit_code == 0, enrolled.output
    once = runner.invoke(app, ["agent", "run", "--state", str(agent_state), "--once"])
    assert once.exit_code == 0 and f"checked in as {serial}" in once.output
    status = runner.invoke(app, ["agent", "status", "--state", str(agent_state)])
    assert "generation 1" in status.output
    devices = runner.invoke(app, ["device", "list", *as_officer])
    assert serial in devices.output and "active" in devices.output
    revoked = runner.invoke(
        app, ["device", "revoke", serial, "--reason", "key-compromise", *as_officer]
    )
    assert revoked.exit_code == 0 and "revoked (1 certificate(s))" in revoked.output
    refused = runner.invoke(app, ["agent", "run", "--state", str(agent_state), "--once"])
    assert refused.exit_code == 2 and "is revoked" in refused.output
    audit = runner.invoke(app, ["audit", "list", "--limit", "100", *as_officer])
    assert "device.revoke" in audit.output and "batch.create" in audit.output
