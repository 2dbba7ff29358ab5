"""The fleet's trust material in the data directory: creating it (``garrison init``) and
loading what the control plane needs (never the root key)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, Signer

from garrison.errors import ConfigError
from garrison.identity.keyref import KeySecrets, create_key, key_file_path, open_key
from garrison.keys.pkcs11 import Pkcs11Ref, format_pkcs11_uri, parse_pkcs11_uri
from garrison.keys.software import write_private_file
from garrison.pki.authority import (
    Authority,
    create_issuing_ca,
    create_root_ca,
    issue_server_certificate,
)
from garrison.pki.profile import DeviceProfile
from garrison.settings import (
    PASSPHRASE_ENV,
    PKCS11_PIN_ENV,
    SETTINGS_FILE,
    Settings,
    read_settings,
    write_settings,
)
from garrison.updates.repository import create_repository
from garrison.updates.store import save_repository


@dataclass(frozen=True)
class FleetPaths:
    """Where each file of a fleet lives inside its data directory."""

    root: Path

    @property
    def root_ca(self) -> Path:
        return self.root / "pki" / "root-ca.pem"

    @property
    def issuing_ca(self) -> Path:
        return self.root / "pki" / "issuing-ca.pem"

    @property
    def ca_chain(self) -> Path:
        return self.root / "pki" / "ca-chain.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "pki" / "server.pem"

    @property
    def tuf_root(self) -> Path:
        """The first TUF root metadata: what devices and TUF clients start from."""
        return self.root / "pki" / "tuf-root.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    @property
    def passphrase_file(self) -> Path:
        return self.root / "secrets" / "key.passphrase"


def key_secrets(paths: FleetPaths, settings: Settings) -> KeySecrets:
    """Key secrets from the environment, else the passphrase file written by ``init``."""
    passphrase_text = os.environ.get(PASSPHRASE_ENV)
    passphrase = passphrase_text.encode() if passphrase_text else None
    if passphrase is None and paths.passphrase_file.exists():
        passphrase = paths.passphrase_file.read_bytes().strip()
    return KeySecrets(passphrase, settings.pkcs11_module, os.environ.get(PKCS11_PIN_ENV))


@dataclass(frozen=True)
class Fleet:
    """What the control plane needs at run time."""

    paths: FleetPaths
    settings: Settings
    root_certificate: x509.Certificate
    issuing: Authority
    secrets: KeySecrets
    snapshot_signer: Signer
    timestamp_signer: Signer

    @property
    def device_profile(self) -> DeviceProfile:
        base = self.settings.public_url.rstrip("/")
        return DeviceProfile(
            lifetime=dt.timedelta(days=self.settings.device_cert_days),
            crl_url=f"{base}/pki/crl",
            ocsp_url=f"{base}/pki/ocsp",
        )

    @property
    def database_url(self) -> str:
        from garrison.store.engine import sqlite_url

        return self.settings.database_url or sqlite_url(self.paths.root)

    @property
    def server_key_path(self) -> Path:
        return key_file_path(self.settings.server_key, self.paths.root)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


PKCS11_KEY_OBJECTS = {
    "root_key": "root-ca",
    "issuing_key": "issuing-ca",
    "tuf_root_key": "tuf-root",
    "tuf_targets_key": "tuf-targets",
    "tuf_snapshot_key": "tuf-snapshot",
    "tuf_timestamp_key": "tuf-timestamp",
}


def pkcs11_key_refs(token_uri: str) -> dict[str, str]:
    """Every signing key of the fleet (both CAs, all TUF roles) in the token named by
    ``pkcs11:token=T[;object=P]``, as settings: objects ``P-root-ca``, ``P-tuf-root``...
    (``P`` defaults to ``garrison``). Only the TLS server key stays a file."""
    uri = token_uri if ";object=" in token_uri else token_uri + ";object=garrison"
    ref = parse_pkcs11_uri(uri)
    return {
        setting: format_pkcs11_uri(Pkcs11Ref(ref.token, f"{ref.object}-{suffix}"))
        for setting, suffix in PKCS11_KEY_OBJECTS.items()
    }


def init_fleet(data_dir: Path, settings: Settings, now: dt.datetime) -> str:
    """Create a fleet in ``data_dir``; return the admin API token (also written, mode 0600).

    Software keys are encrypted with ``$GARRISON_KEY_PASSPHRASE``; without it a random
    passphrase is generated into ``secrets/key.passphrase`` (mode 0600).
    """
    settings.validate()
    paths = FleetPaths(data_dir)
    if (data_dir / SETTINGS_FILE).exists():
        raise ConfigError(
            f"{data_dir} already holds a fleet",
            hint="choose another --data-dir, or remove this one if it is disposable",
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    if not os.environ.get(PASSPHRASE_ENV):
        write_private_file(paths.passphrase_file, secrets.token_urlsafe(32).encode())
    key_secret = key_secrets(paths, settings)

    root_key = create_key(settings.root_key, data_dir, key_secret, settings.key_algorithm)
    root = create_root_ca(root_key, settings.organization, now)
    issuing_key = create_key(settings.issuing_key, data_dir, key_secret, settings.key_algorithm)
    issuing = create_issuing_ca(root, issuing_key, settings.organization, now)
    server_key = create_key(settings.server_key, data_dir, key_secret, "ecdsa-p256")
    server_cert = issue_server_certificate(
        issuing, server_key.public_key(), settings.hostnames, now
    )

    paths.root_ca.parent.mkdir(parents=True, exist_ok=True)
    paths.root_ca.write_bytes(_pem(root.certificate))
    paths.issuing_ca.write_bytes(_pem(issuing.certificate))
    paths.ca_chain.write_bytes(_pem(issuing.certificate) + _pem(root.certificate))
    paths.server_cert.write_bytes(_pem(server_cert) + _pem(issuing.certificate))
    write_settings(data_dir, settings)

    from garrison.identity.principals import bootstrap_admin
    from garrison.store.database import Database
    from garrison.store.engine import sqlite_url

    tuf_keys = [
        create_key(ref, data_dir, key_secret, settings.key_algorithm)
        for ref in (
            settings.tuf_root_key,
            settings.tuf_targets_key,
            settings.tuf_snapshot_key,
            settings.tuf_timestamp_key,
        )
    ]
    root_signer, targets_signer, snapshot_signer, timestamp_signer = (
        CryptoSigner(key) for key in tuf_keys
    )
    repository = create_repository(
        [root_signer],
        targets_signer,
        snapshot_signer,
        timestamp_signer,
        settings.release_threshold,
        now,
    )
    database = Database(settings.database_url or sqlite_url(paths.root))
    try:
        database.migrate()
        token = bootstrap_admin(database, now)
        with database.write() as conn:
            save_repository(conn, None, repository, now)
    finally:
        database.dispose()
    paths.tuf_root.write_bytes(repository.root.to_bytes())
    write_private_file(paths.admin_token, token.encode() + b"\n")
    return token


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} is missing", hint="is this a data directory from 'garrison init'?"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM certificate") from exc


def load_fleet(data_dir: Path) -> Fleet:
    """Load the control plane's trust material; the issuing key is opened (file or token)."""
    settings = read_settings(data_dir)
    paths = FleetPaths(data_dir)
    key_secret = key_secrets(paths, settings)
    issuing_cert = _read_cert(paths.issuing_ca)
    issuing_key = open_key(settings.issuing_key, data_dir, key_secret)
    if issuing_key.public_key() != issuing_cert.public_key():
        raise ConfigError("the issuing CA key does not match pki/issuing-ca.pem")
    snapshot = CryptoSigner(open_key(settings.tuf_snapshot_key, data_dir, key_secret))
    timestamp = CryptoSigner(open_key(settings.tuf_timestamp_key, data_dir, key_secret))
    return Fleet(
        paths,
        settings,
        _read_cert(paths.root_ca),
        Authority(issuing_cert, issuing_key),
        key_secret,
        snapshot,
        timestamp,
    )
