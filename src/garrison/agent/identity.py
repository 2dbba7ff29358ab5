"""The device's identity on disk: key, certificate and fleet CA chain, in numbered
generations with one pointer file switched atomically.

``state/identity.json`` names the active generation. Renewal writes a complete new
generation next to it and only then replaces the pointer (write, fsync, rename), so a
power cut at any instant leaves either the old or the new identity, both complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from garrison.agent.renewal import DEFAULT_RENEW_FRACTION
from garrison.errors import ConfigError, GarrisonError, KeyStoreError
from garrison.identity.keyref import KeySecrets, create_key
from garrison.keys import SigningKey
from garrison.keys.pkcs11 import Pkcs11Ref, format_pkcs11_uri, parse_pkcs11_uri
from garrison.keys.software import write_private_file

POINTER = "identity.json"


@dataclass(frozen=True)
class AgentConfig:
    """What a device is told at provisioning: who it is and where its fleet lives."""

    serial: str
    server_url: str
    key_store: str = "file"  # "file" or "pkcs11:token=...;object=..."
    pkcs11_module: str = ""
    renew_fraction: float = DEFAULT_RENEW_FRACTION
    hardware: str = ""  # the hardware model releases must name (custom.garrison.hardware)
    device_dir: str = ""  # the simulated A/B device; "" = STATE/device


@dataclass(frozen=True)
class Identity:
    generation: int
    directory: Path
    key_ref: str
    certificate: x509.Certificate

    @property
    def cert_path(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "key.pem"


class StateDir:
    """The agent's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def config_path(self) -> Path:
        return self.root / "agent.json"

    @property
    def trust_path(self) -> Path:
        return self.root / "fleet-root.pem"

    @property
    def passphrase_path(self) -> Path:
        return self.root / "secrets" / "key.passphrase"

    def save_config(self, config: AgentConfig, fleet_root_pem: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        write_private_file(self.config_path, json.dumps(vars(config), indent=2).encode())
        write_private_file(self.trust_path, fleet_root_pem)

    def load_config(self) -> AgentConfig:
        try:
            raw = json.loads(self.config_path.read_text())
            return AgentConfig(**raw)
        except FileNotFoundError:
            raise ConfigError(
                f"{self.root} holds no agent configuration",
                hint="run 'garrison agent enroll' first",
            ) from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{self.config_path} is corrupt: {exc}") from exc

    def fleet_root(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.trust_path.read_bytes())

    def key_secrets(self, config: AgentConfig) -> KeySecrets:
        passphrase_env = os.environ.get("GARRISON_AGENT_PASSPHRASE")
        if passphrase_env:
            passphrase = passphrase_env.encode()
        elif self.passphrase_path.exists():
            passphrase = self.passphrase_path.read_bytes().strip()
        else:
            passphrase = None
        return KeySecrets(passphrase, config.pkcs11_module, os.environ.get("GARRISON_PKCS11_PIN"))

    def ensure_passphrase(self) -> None:
        if not os.environ.get("GARRISON_AGENT_PASSPHRASE") and not self.passphrase_path.exists():
            write_private_file(self.passphrase_path, secrets.token_urlsafe(32).encode())

    # -- generations -------------------------------------------------------------------

    def current(self) -> Identity | None:
        """The active identity, or ``None`` before the first enrollment."""
        try:
            pointer = json.loads((self.root / POINTER).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.root / POINTER} is corrupt") from exc
        generation = int(pointer["generation"])
        directory = self.root / f"gen-{generation}"
        cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
        return Identity(generation, directory, str(pointer["key"]), cert)

    def require_current(self) -> Identity:
        """The active identity; a :class:`ConfigError` before the first enrollment."""
        identity = self.current()
        if identity is None:
            raise ConfigError(
                f"{self.root} holds no identity", hint="run 'garrison agent enroll' first"
            )
        return identity

    def new_key(self, config: AgentConfig, generation: int) -> tuple[str, SigningKey]:
        """A fresh key for ``generation``: in a file, or in the configured token."""
        directory = self.root / f"gen-{generation}"
        if directory.exists():
            shutil.rmtree(directory)  # leftovers of an interrupted attempt, never active
        directory.mkdir(parents=True)
        if config.key_store == "file":
            ref = f"file:gen-{generation}/key.pem"
        elif config.key_store.startswith("pkcs11:"):
            # A fresh label per attempt: an interrupted attempt may have left its key object
            # in the token, and a token refuses a second object with the same label.
            base = parse_pkcs11_uri(config.key_store)
            label = f"{base.object}-gen{generation}-{secrets.token_hex(4)}"
            ref = format_pkcs11_uri(Pkcs11Ref(base.token, label))
        else:
            raise ConfigError(
                f"unknown key store {config.key_store!r}", hint="use 'file' or a pkcs11: URI"
            )
        return ref, create_key(ref, self.root, self.key_secrets(config), "ecdsa-p256")

    def commit(self, generation: int, key_ref: str, chain: list[x509.Certificate]) -> Identity:
        """Write ``chain`` into the generation and switch the pointer to it atomically."""
        directory = self.root / f"gen-{generation}"
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        write_private_file(directory / "cert.pem", pem)
        pointer = json.dumps({"generation": generation, "key": key_ref}).encode()
        write_private_file(self.root / POINTER, pointer)
        return Identity(generation, directory, key_ref, chain[0])

    def prune(self, keep: int) -> None:
        """Remove generations other than ``keep`` and the one before it."""
        for path in self.root.glob("gen-*"):
            number = path.name.removeprefix("gen-")
            if number.isdigit() and int(number) < keep - 1:
                shutil.rmtree(path, ignore_errors=True)


def verify_issued(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    root: x509.Certificate,
    key: SigningKey,
) -> None:
    """Check that ``leaf`` chains to the fleet ``root`` and certifies our own ``key``."""
    if leaf.public_key() != key.public_key():
        raise KeyStoreError("the issued certificate does not hold this device's key")
    try:
        verifier = PolicyBuilder().store(Store([root])).build_client_verifier()
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise GarrisonError(
            f"the issued certificate does not chain to the fleet CA: {exc}",
            hint="check that the agent was given the right fleet root certificate",
        ) from exc
