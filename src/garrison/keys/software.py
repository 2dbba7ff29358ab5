"""Software keys: generated in memory, stored only as passphrase-encrypted PKCS#8 PEM."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from garrison.atomicfile import atomic_write
from garrison.errors import KeyStoreError

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

MIN_PASSPHRASE_BYTES = 16


def generate_software_key(algorithm: str = "ecdsa-p256") -> SigningKey:
    """A new private key for ``algorithm`` (``ecdsa-p256``, ``ecdsa-p384`` or ``ed25519``)."""
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyStoreError(
        f"unknown key algorithm {algorithm!r}",
        hint="use one of: ecdsa-p256 (default), ecdsa-p384, ed25519",
    )


def _check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise KeyStoreError(
            f"key passphrase is too short ({len(passphrase)} bytes)",
            hint=f"use a passphrase of at least {MIN_PASSPHRASE_BYTES} bytes",
        )


def save_software_key(key: SigningKey, path: Path, passphrase: bytes) -> None:
    """Write ``key`` encrypted under ``passphrase`` to ``path`` (mode 0600, atomically)."""
    _check_passphrase(passphrase)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_private_file(path, pem)


def load_software_key(path: Path, passphrase: bytes) -> SigningKey:
    """Read an encrypted key written by :func:`save_software_key`."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(
            f"cannot decrypt key file {path}",
            hint="check the passphrase (GARRISON_KEY_PASSPHRASE or the passphrase file)",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyStoreError(f"key file {path} holds an unsupported key type")
    return key


def write_private_file(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with ``data``, mode 0600, atomically (write, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode=0o600)
