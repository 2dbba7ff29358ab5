"""Fleet settings (garrison.toml) and the encrypted software key files they point at.

The software-key tests live here because the key references of the settings name those
files; they would move to tests/keys/test_software.py if that file is created.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from garrison.errors import ConfigError, KeyStoreError
from garrison.keys.software import (
    MIN_PASSPHRASE_BYTES,
    generate_software_key,
    load_software_key,
    save_software_key,
    write_private_file,
)
from garrison.settings import (
    DATA_DIR_ENV,
    SETTINGS_FILE,
    Settings,
    default_data_dir,
    read_settings,
    write_settings,
)

PKCS11_REF = "pkcs11:token=garrison;object=root-ca"
PASSPHRASE = b"correct horse battery staple"


def _write_toml(data_dir: Path, text: str) -> Path:
    path = data_dir / SETTINGS_FILE
    path.write_text(text, encoding="utf-8")
    return path


# -- round trip --------------------------------------------------------------------------------


def test_round_trip_defaults(tmp_path: Path) -> None:
    write_settings(tmp_path, Settings())
    assert read_settings(tmp_path) == Settings()


def test_round_trip_every_field(tmp_path: Path) -> None:
    settings = Settings(
        organization='Acme "Turbines" \\ Co',
        public_url="https://fleet.example:9443",
        listen="0.0.0.0:9443",
        hostnames=["fleet.example", "10.0.0.5", "::1"],
        database_url="postgresql://garrison@db/garrison",
        device_cert_days=3650,
        root_key=PKCS11_REF,
        issuing_key="pkcs11:token=garrison;object=issuing-ca",
        server_key="file:/etc/garrison/server.key.pem",
        pkcs11_module="/usr/lib/softhsm/libsofthsm2.so",
        key_algorithm="ecdsa-p384",
    )
    write_settings(tmp_path, settings)
    text = (tmp_path / SETTINGS_FILE).read_text(encoding="utf-8")
    assert text.startswith("# Garrison fleet settings (written by garrison init)\n")
    assert tomllib.loads(text)["hostnames"] == ["fleet.example", "10.0.0.5", "::1"]
    assert read_settings(tmp_path) == settings


def test_round_trip_unicode(tmp_path: Path) -> None:
    settings = Settings(organization="Société Générale d'Éolien — 風力")
    write_settings(tmp_path, settings)
    assert read_settings(tmp_path) == settings


def test_partial_file_uses_defaults(tmp_path: Path) -> None:
    _write_toml(tmp_path, 'organization = "Acme"\n')
    assert read_settings(tmp_path) == Settings(organization="Acme")


def test_round_trip_control_characters(tmp_path: Path) -> None:
    settings = Settings(organization="Acme\nTurbines\x7f")
    write_settings(tmp_path, settings)
    assert read_settings(tmp_path) == settings


# -- refusals ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_settings(tmp_path)
    assert info.type is ConfigError
    assert str(info.value) == f"no fleet in {tmp_path} ({SETTINGS_FILE} not found)"
    assert "garrison init" in info.value.hint
    assert str(tmp_path) in info.value.hint


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        read_settings(tmp_path / "nowhere")
    assert "garrison init" in info.value.hint


@pytest.mark.parametrize(
    "text", ["organization = \n", "organization = 'a\n", "[[[\n", "a = 1\na = 2\n", "= 3\n"]
)
def test_bad_toml(tmp_path: Path, text: str) -> None:
    path = _write_toml(tmp_path, text)
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        read_settings(tmp_path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_unknown_key(tmp_path: Path) -> None:
    _write_toml(tmp_path, 'organization = "Acme"\ncolour = "blue"\nzeta = 1\n')
    with pytest.raises(ConfigError, match=r"unknown settings \['colour', 'zeta'\]"):
        read_settings(tmp_path)


def test_wrong_value_type_is_a_config_error(tmp_path: Path) -> None:
    _write_toml(tmp_path, 'device_cert_days = "90"\n')
    with pytest.raises(ConfigError, match=SETTINGS_FILE) as info:
        read_settings(tmp_path)
    assert "'device_cert_days' has the wrong type" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "public_url = 8443\n",
        "device_cert_days = true\n",
        'hostnames = "localhost"\n',
        "organization = 5\n",
    ],
    ids=["int-url", "bool-days", "str-hostnames", "int-organization"],
)
def test_wrong_value_types_are_config_errors(tmp_path: Path, text: str) -> None:
    _write_toml(tmp_path, text)
    with pytest.raises(ConfigError):
        read_settings(tmp_path)


@pytest.mark.parametrize("url", ["http://fleet.example", "fleet.example", "HTTPS://x", ""])
def test_public_url_must_be_https(tmp_path: Path, url: str) -> None:
    write_settings(tmp_path, Settings(public_url=url))
    with pytest.raises(ConfigError, match="public_url must be https://"):
        read_settings(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(repr(url))):
        Settings(public_url=url).validate()


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_device_cert_days_bounds_refused(days: int) -> None:
    with pytest.raises(ConfigError, match="device_cert_days must be between 1 and 3650"):
        Settings(device_cert_days=days).validate()


@pytest.mark.parametrize("days", [1, 3650])
def test_device_cert_days_bounds_accepted(days: int) -> None:
    settings = Settings(device_cert_days=days)
    assert settings.validate() is settings


@pytest.mark.parametrize("field", ["root_key", "issuing_key"])
def test_pkcs11_key_needs_module(tmp_path: Path, field: str) -> None:
    settings = Settings(**{field: PKCS11_REF})  # type: ignore[arg-type]
    write_settings(tmp_path, settings)
    with pytest.raises(ConfigError, match="is in a PKCS#11 token but no pkcs11_module") as info:
        read_settings(tmp_path)
    assert PKCS11_REF in str(info.value)
    assert "pkcs11_module" in info.value.hint
    with_module = Settings(**{field: PKCS11_REF, "pkcs11_module": "/lib/p11.so"})  # type: ignore[arg-type]
    assert with_module.validate() is with_module


@pytest.mark.parametrize("ref", [PKCS11_REF, "keys/server.key.pem", "", "FILE:x"])
def test_server_key_must_be_a_file(tmp_path: Path, ref: str) -> None:
    settings = Settings(server_key=ref, pkcs11_module="/lib/p11.so")
    write_settings(tmp_path, settings)
    with pytest.raises(ConfigError, match=r"TLS server key must be a file: key"):
        read_settings(tmp_path)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert default_data_dir() == Path(".garrison")
    monkeypatch.setenv(DATA_DIR_ENV, "")
    assert default_data_dir() == Path(".garrison")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path


# -- software keys -----------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("algorithm", "kind"),
    [
        ("ecdsa-p256", ec.EllipticCurvePrivateKey),
        ("ecdsa-p384", ec.EllipticCurvePrivateKey),
        ("ed25519", ed25519.Ed25519PrivateKey),
    ],
)
def test_key_round_trip(tmp_path: Path, algorithm: str, kind: type) -> None:
    key = generate_software_key(algorithm)
    assert isinstance(key, kind)
    path = tmp_path / "keys" / "ca.key.pem"
    save_software_key(key, path, PASSPHRASE)

    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert b"BEGIN PRIVATE KEY" not in pem
    assert _mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["ca.key.pem"]

    loaded = load_software_key(path, PASSPHRASE)
    assert isinstance(loaded, kind)
    assert loaded.public_key() == key.public_key()
    raw = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    assert loaded.private_bytes(*raw, none) == key.private_bytes(*raw, none)


def test_key_curves() -> None:
    default = generate_software_key()
    p256 = generate_software_key("ecdsa-p256")
    assert isinstance(default, ec.EllipticCurvePrivateKey)
    assert isinstance(p256, ec.EllipticCurvePrivateKey)
    assert default.curve.name == p256.curve.name == "secp256r1"
    p384 = generate_software_key("ecdsa-p384")
    assert isinstance(p384, ec.EllipticCurvePrivateKey)
    assert p384.curve.name == "secp384r1"


def test_key_save_replaces(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first, second = generate_software_key(), generate_software_key()
    save_software_key(first, path, PASSPHRASE)
    save_software_key(second, path, PASSPHRASE)
    assert load_software_key(path, PASSPHRASE).public_key() == second.public_key()
    assert _mode(path) == 0o600


def test_key_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    save_software_key(generate_software_key(), path, PASSPHRASE)
    with pytest.raises(KeyStoreError) as info:
        load_software_key(path, b"not the passphrase at all")
    assert info.type is KeyStoreError
    assert str(info.value) == f"cannot decrypt key file {path}"
    assert "passphrase" in info.value.hint
    assert "GARRISON_KEY_PASSPHRASE" in info.value.hint
    assert isinstance(info.value.__cause__, ValueError)


def test_key_unencrypted_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.pem"
    pem = generate_software_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    with pytest.raises(KeyStoreError, match="cannot decrypt key file"):
        load_software_key(path, PASSPHRASE)


def test_key_garbage_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pem"
    path.write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(KeyStoreError, match="cannot decrypt key file"):
        load_software_key(path, PASSPHRASE)


def test_key_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    with pytest.raises(KeyStoreError, match=f"cannot read key file {path}") as info:
        load_software_key(path, PASSPHRASE)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_key_unsupported_type(tmp_path: Path) -> None:
    path = tmp_path / "rsa.pem"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE),
        )
    )
    with pytest.raises(KeyStoreError, match="holds an unsupported key type"):
        load_software_key(path, PASSPHRASE)


def test_key_short_passphrase_refused(tmp_path: Path) -> None:
    assert MIN_PASSPHRASE_BYTES == 16
    path = tmp_path / "k.pem"
    short = b"x" * (MIN_PASSPHRASE_BYTES - 1)
    with pytest.raises(KeyStoreError, match=r"key passphrase is too short \(15 bytes\)") as info:
        save_software_key(generate_software_key(), path, short)
    assert "at least 16 bytes" in info.value.hint
    assert not path.exists()
    with pytest.raises(KeyStoreError, match=r"too short \(0 bytes\)"):
        save_software_key(generate_software_key(), path, b"")

    exact = b"x" * MIN_PASSPHRASE_BYTES
    save_software_key(generate_software_key(), path, exact)
    load_software_key(path, exact)


@pytest.mark.parametrize("algorithm", ["rsa-2048", "ECDSA-P256", "p256", "ed448", ""])
def test_key_unknown_algorithm(algorithm: str) -> None:
    with pytest.raises(KeyStoreError) as info:
        generate_software_key(algorithm)
    assert info.type is KeyStoreError
    assert str(info.value) == f"unknown key algorithm {algorithm!r}"
    assert info.value.hint == "use one of: ecdsa-p256 (default), ecdsa-p384, ed25519"


def test_write_private_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "secret"
    write_private_file(path, b"one")
    write_private_file(path, b"two")
    assert path.read_bytes() == b"two"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]


def test_write_private_file_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_file(tmp_path / "secret", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "secret") == 0o600


def test_write_private_file_with_stale_temporary(tmp_path: Path) -> None:
    stale = tmp_path / ".k.pem.tmp"
    stale.write_bytes(b"left over")
    stale.chmod(0o644)
    save_software_key(generate_software_key(), tmp_path / "k.pem", PASSPHRASE)
    assert _mode(tmp_path / "k.pem") == 0o600


@pytest.mark.parametrize(
    "field", ["tuf_root_key", "tuf_targets_key", "tuf_snapshot_key", "tuf_timestamp_key"]
)
def test_a_tuf_key_in_a_token_needs_a_pkcs11_module(field: str) -> None:
    settings = Settings(**{field: "pkcs11:token=t;object=o"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no pkcs11_module is set"):
        settings.validate()
