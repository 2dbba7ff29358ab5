"""Fleet settings: one typed object, read from ``garrison.toml`` in the data directory."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from garrison.errors import ConfigError

SETTINGS_FILE = "garrison.toml"
PASSPHRASE_ENV = "GARRISON_KEY_PASSPHRASE"  # noqa: S105 (a variable name)
PKCS11_PIN_ENV = "GARRISON_PKCS11_PIN"
DATA_DIR_ENV = "GARRISON_DATA_DIR"
# Ed25519 CAs wait for crypto agility (BRIEF capability 20): stock X.509 path validation
# (cryptography's web-PKI verifier, many TLS stacks) still refuses Ed25519 signatures.
CA_KEY_ALGORITHMS = ("ecdsa-p256", "ecdsa-p384")


@dataclass(frozen=True)
class Settings:
    """Everything ``garrison init`` decides and ``garrison server`` needs."""

    organization: str = "Garrison Fleet"
    public_url: str = "https://127.0.0.1:8443"
    listen: str = "127.0.0.1:8443"
    hostnames: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    database_url: str = ""
    device_cert_days: int = 90
    root_key: str = "file:keys/root-ca.key.pem"
    issuing_key: str = "file:keys/issuing-ca.key.pem"
    server_key: str = "file:keys/server.key.pem"
    pkcs11_module: str = ""
    key_algorithm: str = "ecdsa-p256"
    # The update repository (TUF). Root and targets keys are offline keys: move them off the
    # server after init; the control plane needs only the snapshot and timestamp keys.
    tuf_root_key: str = "file:keys/tuf-root.key.pem"
    tuf_targets_key: str = "file:keys/tuf-targets.key.pem"
    tuf_snapshot_key: str = "file:keys/tuf-snapshot.key.pem"
    tuf_timestamp_key: str = "file:keys/tuf-timestamp.key.pem"
    release_threshold: int = 2

    def validate(self) -> Settings:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "hostnames":
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            elif f.name in ("device_cert_days", "release_threshold"):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ConfigError(f"setting {f.name!r} has the wrong type ({type(value).__name__})")
        if not self.public_url.startswith("https://"):
            raise ConfigError(f"public_url must be https://, not {self.public_url!r}")
        if self.key_algorithm not in CA_KEY_ALGORITHMS:
            raise ConfigError(
                f"key_algorithm {self.key_algorithm!r} is not supported for the fleet CAs",
                hint="use " + " or ".join(CA_KEY_ALGORITHMS),
            )
        if not self.hostnames:
            raise ConfigError("hostnames must name at least one TLS server name")
        if not 1 <= self.release_threshold <= 16:
            raise ConfigError("release_threshold must be between 1 and 16")
        if not 1 <= self.device_cert_days <= 3650:
            raise ConfigError("device_cert_days must be between 1 and 3650")
        signing_keys = (
            self.root_key,
            self.issuing_key,
            self.tuf_root_key,
            self.tuf_targets_key,
            self.tuf_snapshot_key,
            self.tuf_timestamp_key,
        )
        for ref in signing_keys:
            if ref.startswith("pkcs11:") and not self.pkcs11_module:
                raise ConfigError(
                    f"key {ref!r} is in a PKCS#11 token but no pkcs11_module is set",
                    hint="set pkcs11_module in garrison.toml, e.g. /usr/lib/softhsm/libsofthsm2.so",
                )
        if not self.server_key.startswith("file:"):
            raise ConfigError("the TLS server key must be a file: key (file:PATH)")
        return self


def default_data_dir() -> Path:
    """``$GARRISON_DATA_DIR``, else ``./.garrison``."""
    return Path(os.environ.get(DATA_DIR_ENV) or ".garrison")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string (non-ASCII kept literal) is a valid TOML basic string, but for DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_settings(data_dir: Path, settings: Settings) -> None:
    lines = ["# Garrison fleet settings (written by garrison init)"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in asdict(settings).items()]
    (data_dir / SETTINGS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_settings(data_dir: Path) -> Settings:
    path = data_dir / SETTINGS_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no fleet in {data_dir} ({SETTINGS_FILE} not found)",
            hint=f"run 'garrison init --data-dir {data_dir}' first",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    known = {f.name for f in fields(Settings)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
    try:
        return Settings(**raw).validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", hint=exc.hint) from exc
