"""Releasing from the command line: three release managers' keys, the threshold set with the
offline targets key, a release proposed, signed twice, published."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.conftest import RunningFleet

runner = CliRunner()


def test_release_from_keygen_to_published(
    served: RunningFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GARRISON_RELEASE_KEY_PASSPHRASE", "a long release key passphrase")
    monkeypatch.setenv("COLUMNS", "200")
    fleet = ["--data-dir", str(served.fleet.paths.root)]
    keys = [tmp_path / f"rm{n}.key" for n in range(3)]
    for key in keys:
        made = runner.invoke(app, ["release-manager", "keygen", "--out", str(key)])
        assert made.exit_code == 0, made.output
        assert "ENCRYPTED PRIVATE KEY" in key.read_text()
    pubs = [arg for key in keys for arg in ("--key", str(key.with_suffix(".pub")))]
    named = runner.invoke(app, ["release-manager", "set", *pubs, "--threshold", "2", *fleet])
    assert named.exit_code == 0 and "threshold 2" in named.output, named.output

    api = [*fleet, "--server", served.url]
    added = runner.invoke(app, ["principal", "add", "rita", "--role", "release-manager", *api])
    rita = [*api, "--token", added.output.strip().splitlines()[-1]]
    image = tmp_path / "fw.img"
    image.write_bytes(b"\x7fELF" + bytes(300_000))
    created = runner.invoke(app, [
        "release", "create", "--name", "gw-fw", "--version", "2.0.1", "--hardware", "gw-2",
        "--security-version", "4", "--image", str(image), "--health-check", "true", *rita,
    ])  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "release 1 proposed: gw-fw/2.0.1/gw-fw-2.0.1.img" in created.output
    assert "2 signature(s) needed" in created.output

    first = runner.invoke(app, ["release", "sign", "1", "--key", str(keys[0]), *rita])
    assert first.exit_code == 0 and "pending; 1 more signature(s) needed" in first.output
    second = runner.invoke(app, ["release", "sign", "1", "--key", str(keys[2]), *rita])
    assert second.exit_code == 0 and ": published" in second.output, second.output
    listed = runner.invoke(app, ["release", "list", *rita])
    assert "gw-fw/2.0.1/gw-fw-2.0.1.img" in listed.output and "published" in listed.output
    again = runner.invoke(app, ["release", "sign", "1", "--key", str(keys[1]), *rita])
    assert again.exit_code == 2 and "not awaiting signatures" in again.output
