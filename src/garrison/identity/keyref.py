"""Key references: ``file:PATH`` (encrypted PEM, relative to the data directory) or an
RFC 7512 ``pkcs11:token=...;object=...`` URI for a key that lives in a token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from garrison.errors import ConfigError, KeyStoreError
from garrison.keys import SigningKey, generate_software_key, load_software_key, save_software_key
from garrison.keys.pkcs11 import generate_pkcs11_key, open_pkcs11_key, parse_pkcs11_uri


@dataclass(frozen=True)
class KeySecrets:
    """What unlocks keys: the passphrase for key files, the PIN and module for PKCS#11."""

    passphrase: bytes | None
    pkcs11_module: str = ""
    pkcs11_pin: str | None = None


def key_file_path(ref: str, base: Path) -> Path:
    """The file a ``file:PATH`` key reference names (relative to ``base``)."""
    path = Path(ref.removeprefix("file:"))
    return path if path.is_absolute() else base / path


def _need_passphrase(secrets: KeySecrets) -> bytes:
    if secrets.passphrase is None:
        raise KeyStoreError(
            "no key passphrase available",
            hint="set GARRISON_KEY_PASSPHRASE or create secrets/key.passphrase in the data dir",
        )
    return secrets.passphrase


def _need_pin(secrets: KeySecrets) -> str:
    if not secrets.pkcs11_pin:
        raise KeyStoreError("no PKCS#11 PIN available", hint="set GARRISON_PKCS11_PIN")
    return secrets.pkcs11_pin


def create_key(ref: str, base: Path, secrets: KeySecrets, algorithm: str) -> SigningKey:
    """Create the key named by ``ref``: in a file (encrypted) or inside a PKCS#11 token."""
    if ref.startswith("file:"):
        path = key_file_path(ref, base)
        if path.exists():
            raise KeyStoreError(f"key file {path} already exists; refusing to overwrite it")
        key = generate_software_key(algorithm)
        save_software_key(key, path, _need_passphrase(secrets))
        return key
    if ref.startswith("pkcs11:"):
        target = parse_pkcs11_uri(ref)
        return generate_pkcs11_key(
            secrets.pkcs11_module, target.token, _need_pin(secrets), target.object, algorithm
        )
    raise ConfigError(
        f"unknown key reference {ref!r}", hint="use file:PATH or pkcs11:token=T;object=O"
    )


def open_key(ref: str, base: Path, secrets: KeySecrets) -> SigningKey:
    """Open the existing key named by ``ref``."""
    if ref.startswith("file:"):
        return load_software_key(key_file_path(ref, base), _need_passphrase(secrets))
    if ref.startswith("pkcs11:"):
        target = parse_pkcs11_uri(ref)
        return open_pkcs11_key(
            secrets.pkcs11_module, target.token, _need_pin(secrets), target.object
        )
    raise ConfigError(
        f"unknown key reference {ref!r}", hint="use file:PATH or pkcs11:token=T;object=O"
    )
