"""Bad configuration on disk gets a clear error: listen addresses, key references, and a
data directory whose files were removed, replaced or do not match."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from garrison.errors import ConfigError, KeyStoreError
from garrison.identity.fleet import init_fleet, load_fleet
from garrison.identity.keyref import KeySecrets, create_key, open_key
from garrison.server.run import Listen
from garrison.settings import Settings

SECRETS = KeySecrets(b"a passphrase long enough")


@pytest.mark.parametrize("text", ["8443", "host:", "host:port", "h:70000", ":-1", ""])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ConfigError, match="--listen must be HOST:PORT"):
        Listen.parse(text)


def test_listen_addresses() -> None:
    assert Listen.parse("0.0.0.0:8443") == Listen("0.0.0.0", 8443)
    assert Listen.parse("[::1]:443") == Listen("::1", 443)
    assert Listen.parse(":8443") == Listen("127.0.0.1", 8443)


def test_key_references(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key reference"):
        create_key("vault:x", tmp_path, SECRETS, "ecdsa-p256")
    with pytest.raises(ConfigError, match="unknown key reference"):
        open_key("vault:x", tmp_path, SECRETS)
    with pytest.raises(KeyStoreError, match="no key passphrase"):
        create_key("file:k.pem", tmp_path, KeySecrets(None), "ecdsa-p256")
    with pytest.raises(KeyStoreError, match="no PKCS#11 PIN"):
        open_key("pkcs11:token=t;object=o", tmp_path, KeySecrets(None, "/nope.so"))
    create_key("file:k.pem", tmp_path, SECRETS, "ecdsa-p256")
    with pytest.raises(KeyStoreError, match="refusing to overwrite"):
        create_key("file:k.pem", tmp_path, SECRETS, "ecdsa-p256")
    assert open_key("file:k.pem", tmp_path, SECRETS) is not None


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'g.db'}")
    init_fleet(root, settings, dt.datetime.now(dt.UTC))
    return root


def test_a_missing_certificate(data_dir: Path) -> None:
    (data_dir / "pki" / "issuing-ca.pem").unlink()
    with pytest.raises(ConfigError, match=r"issuing-ca\.pem is missing") as info:
        load_fleet(data_dir)
    assert "garrison init" in info.value.hint


def test_a_certificate_file_that_is_not_pem(data_dir: Path) -> None:
    (data_dir / "pki" / "root-ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"root-ca\.pem is not a PEM certificate"):
        load_fleet(data_dir)


def test_an_issuing_key_that_does_not_match_its_certificate(data_dir: Path) -> None:
    shutil.copy(data_dir / "pki" / "root-ca.pem", data_dir / "pki" / "issuing-ca.pem")
    with pytest.raises(ConfigError, match="issuing CA key does not match"):
        load_fleet(data_dir)
