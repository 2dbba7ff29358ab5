"""Releasing from the command line: three release managers' keys, the threshold set with the
offline targets key, a release proposed, signed twice, published."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from tests.conftest import RunningFleet
from tests.conftest_softhsm import SoftHsmToken

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
    created = runner.invoke(
        app,
        [
            "release",
            "create",
            "--name",
            "gw-fw",
            "--version",
            "2.0.1",
            "--hardware",
            "gw-2",
            "--security-version",
            "4",
            "--image",
            str(image),
            "--health-check",
            "true",
            *rita,
        ],
    )
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


@pytest.mark.softhsm
def test_a_release_manager_signs_with_a_key_in_a_token(
    served: RunningFleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    softhsm_token: SoftHsmToken,
    pkcs11_key_label: str,
) -> None:
    """One manager's key lives in a PKCS#11 token (SoftHSM2), the other's in a file."""
    from cryptography.hazmat.primitives import serialization

    from garrison.keys.pkcs11 import generate_pkcs11_key

    monkeypatch.setenv("GARRISON_RELEASE_KEY_PASSPHRASE", "a long release key passphrase")
    monkeypatch.setenv("GARRISON_PKCS11_PIN", softhsm_token.pin)
    monkeypatch.setenv("COLUMNS", "200")
    token_key = generate_pkcs11_key(
        softhsm_token.module_path, softhsm_token.token_label, softhsm_token.pin, pkcs11_key_label
    )
    token_pub = tmp_path / "hsm.pub"
    token_pub.write_bytes(
        token_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    file_key = tmp_path / "file.key"
    assert runner.invoke(app, ["release-manager", "keygen", "--out", str(file_key)]).exit_code == 0
    fleet = ["--data-dir", str(served.fleet.paths.root)]
    keys = ["--key", str(token_pub), "--key", str(file_key.with_suffix(".pub"))]
    named = runner.invoke(app, ["release-manager", "set", *keys, "--threshold", "2", *fleet])
    assert named.exit_code == 0, named.output
    api = [*fleet, "--server", served.url]
    added = runner.invoke(app, ["principal", "add", "hana", "--role", "release-manager", *api])
    hana = [*api, "--token", added.output.strip().splitlines()[-1]]
    image = tmp_path / "app.tar"
    image.write_bytes(b"package" * 1000)
    created = runner.invoke(
        app,
        [
            "release",
            "create",
            "--name",
            "app",
            "--version",
            "1.0",
            "--hardware",
            "gw-2",
            "--security-version",
            "0",
            "--install",
            "app",
            "--image",
            str(image),
            *hana,
        ],
    )
    assert created.exit_code == 0, created.output
    uri = f"pkcs11:token={softhsm_token.token_label};object={pkcs11_key_label}"
    in_token = runner.invoke(
        app,
        [
            "release",
            "sign",
            "1",
            "--key",
            uri,
            "--pkcs11-module",
            softhsm_token.module_path,
            *hana,
        ],
    )
    assert in_token.exit_code == 0 and "1 more signature(s) needed" in in_token.output, (
        in_token.output
    )
    in_file = runner.invoke(app, ["release", "sign", "1", "--key", str(file_key), *hana])
    assert in_file.exit_code == 0 and ": published" in in_file.output, in_file.output
