"""Bad input at the command line: exit code 2 and a message that says what is wrong (and which
file), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from garrison.cli.main import app

runner = CliRunner()


def _refused(args: list[str], *expected: str) -> Result:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exception, result.output)
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception
    for text in expected:
        assert text in result.output, result.output
    return result


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # keep each message on one line


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    data = tmp_path / "fleet"
    assert runner.invoke(app, ["init", "--data-dir", str(data)]).exit_code == 0
    return data


def test_keygen_with_a_short_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_RELEASE_KEY_PASSPHRASE", "short")
    out = tmp_path / "rm.key"
    _refused(["release-manager", "keygen", "--out", str(out)], "passphrase is too short", "hint:")
    assert not out.exists()


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_RELEASE_KEY_PASSPHRASE", "a long release key passphrase")
    out = tmp_path / "rm.key"
    out.write_text("precious")
    _refused(["release-manager", "keygen", "--out", str(out)], "refusing to overwrite")
    assert out.read_text() == "precious"


def test_batch_create_with_a_missing_serials_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    args = ["batch", "create", "--name", "PO", "--manufacturer", "acme", "--model", "gw"]
    args += ["--serials-file", str(missing), "--tokens-out", str(tmp_path / "tokens.csv")]
    _refused(args, f"{missing}: No such file or directory")


def test_batch_create_needs_somewhere_to_put_the_tokens() -> None:
    args = ["batch", "create", "--name", "PO", "--manufacturer", "acme", "--model", "gw"]
    _refused(args, "--tokens-out is required")


def test_release_create_with_a_missing_image(tmp_path: Path) -> None:
    missing = tmp_path / "fw.img"
    args = ["release", "create", "--name", "fw", "--version", "1.0", "--hardware", "gw"]
    args += ["--security-version", "0", "--image", str(missing)]
    _refused(args, f"{missing}: No such file or directory")


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _refused(["demo", "--data-dir", str(mine), "--port", "0"], "was not made by 'garrison demo'")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_init_with_an_unknown_key_store(tmp_path: Path) -> None:
    data = tmp_path / "fleet"
    _refused(["init", "--data-dir", str(data), "--ca-keys", "vault"], "--ca-keys must be")
    assert not (data / "admin.token").exists()


def test_api_command_without_a_token(fleet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GARRISON_TOKEN", raising=False)
    (fleet_dir / "admin.token").unlink()
    _refused(["principal", "list", "--data-dir", str(fleet_dir)], "no API token given", "--token")


def test_api_command_without_the_fleet_root_names_the_file(fleet_dir: Path) -> None:
    root_ca = fleet_dir / "pki" / "root-ca.pem"
    root_ca.unlink()
    _refused(["principal", "list", "--data-dir", str(fleet_dir)], str(root_ca))


@pytest.mark.parametrize("minutes", ["²", "١٢٠", "12x", "-5"])
def test_group_set_window_with_minutes_that_are_not_ascii_digits(
    tmp_path: Path, minutes: str
) -> None:
    """``str.isdigit`` accepts '²' and Arabic-Indic digits: they are refused before any
    request, not passed to ``int`` (a traceback)."""
    args = ["group", "set-window", "night", "--timezone", "UTC", "--slot", f"mon 02:00 {minutes}"]
    _refused([*args, "--data-dir", str(tmp_path / "none")], "must be 'DAYS HH:MM MINUTES'")


@pytest.mark.parametrize("option", ["--poll-seconds", "--status-every"])
@pytest.mark.parametrize("value", ["0", "-1", "0.01"])
def test_simulate_refuses_intervals_that_would_spin(
    tmp_path: Path, option: str, value: str
) -> None:
    """A zero interval would turn the simulator (or its status loop) into a hot loop."""
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("serial,token\n")
    args = ["simulate", "--tokens", str(tokens), "--model", "gw", option, value]
    _refused(args, f"Invalid value for '{option}'", "greater than or equal to 0.1")
