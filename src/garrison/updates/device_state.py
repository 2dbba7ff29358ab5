"""The update client's files in the agent state directory, and how a device gets them.

Layout (``STATE`` is the agent state directory)::

    STATE/tuf/initial-root.json    the fleet's TUF root as provisioned: the trust anchor
    STATE/tuf/metadata/            python-tuf's cache: every verified root, the newest
                                   timestamp, snapshot, targets and releases seen
    STATE/downloads/<sha256>.part  an artifact being downloaded (resumed from here)
    STATE/downloads/<sha256>       an artifact whose length and hashes verified
    STATE/releases/<sha256>.json   the signed declaration of each release installed here
                                   (an operator rollback runs that version's health checks)
    STATE/device/                  the simulated A/B device (``AgentConfig.device_dir``)

**How the TUF root reaches a device.** It is given at provisioning, like the fleet root
certificate (``garrison agent enroll --tuf-root FILE``). Failing that, the agent fetches
``/tuf/metadata/1.root.json`` once, at enrollment, over TLS pinned to the fleet root
certificate it was given: trust on first use over the fleet-pinned channel, the same
channel that delivers the device's identity. From then on nothing replaces it: newer roots
are accepted only through TUF root rotation (each signed by the previous root's threshold),
and python-tuf keeps them in its cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root

from garrison.agent.est_client import tls_context
from garrison.agent.identity import AgentConfig, StateDir
from garrison.atomicfile import atomic_write
from garrison.errors import ConfigError, InvalidRequest
from garrison.updates.bootenv import SLOTS, BootEnv
from garrison.updates.eligibility import Declaration
from garrison.updates.installer import CommandCheck
from garrison.updates.simdevice import SimulatedDevice

FACTORY_IMAGE = b"garrison simulated device: factory image\n"
FACTORY_VERSION = "factory"
MAX_ROOT_BYTES = 512_000
ROOT_FETCH_TIMEOUT = 30.0


class UpdateState:
    """Paths and small records of the update client, under one agent state directory."""

    def __init__(self, root: Path, device_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.device_dir = device_dir if device_dir is not None else self.root / "device"

    @classmethod
    def of(cls, state: StateDir, config: AgentConfig) -> UpdateState:
        """The update state of an agent, with its configured device directory."""
        return cls(state.root, Path(config.device_dir) if config.device_dir else None)

    @property
    def initial_root_path(self) -> Path:
        return self.root / "tuf" / "initial-root.json"

    @property
    def metadata_dir(self) -> Path:
        return self.root / "tuf" / "metadata"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    # -- the trust anchor ------------------------------------------------------------

    def initial_root(self) -> bytes:
        """The provisioned TUF root (``ConfigError`` if this device has none)."""
        try:
            return self.initial_root_path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"{self.root} holds no TUF root: this device cannot verify any release",
                hint="provision it at enrollment ('garrison agent enroll' stores it)",
            ) from None

    def store_initial_root(self, data: bytes) -> None:
        """Keep ``data`` (checked by :func:`check_tuf_root`) as the trust anchor; a device
        never swaps its anchor for a different one (root rotation is TUF's job)."""
        check_tuf_root(data)
        if self.initial_root_path.exists():
            if self.initial_root_path.read_bytes() == data:
                return
            raise ConfigError(
                f"{self.root} already trusts another TUF root",
                hint="a device's TUF root changes only by root rotation, never by replacing it",
            )
        self.initial_root_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.initial_root_path, data, mode=0o600)

    # -- the device ------------------------------------------------------------------

    def device(self) -> SimulatedDevice:
        """The device the updates install into (``ConfigError`` if missing)."""
        device = SimulatedDevice(self.device_dir)
        if not device.env_path.exists():
            raise ConfigError(
                f"no device at {self.device_dir}",
                hint="it is created at enrollment; or set device_dir in the agent config",
            )
        return device

    def ensure_device(self) -> SimulatedDevice:
        """The device, created with a factory image in slot a if absent."""
        device = SimulatedDevice(self.device_dir)
        if device.env_path.exists():
            return device
        return SimulatedDevice.create(self.device_dir, FACTORY_IMAGE, FACTORY_VERSION, 0)

    # -- declarations of installed releases ------------------------------------------

    def remember(self, sha256: str, decl: Declaration) -> None:
        """Record the signed declaration of an artifact about to be installed."""
        self.releases_dir.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {
                "name": decl.name,
                "version": decl.version,
                "security_version": decl.security_version,
                "health_checks": [list(c) for c in decl.health_checks],
            },
            indent=2,
        )
        atomic_write(self.releases_dir / f"{sha256}.json", body.encode())

    def health_checks_of(self, sha256: str) -> list[CommandCheck]:
        """The health checks recorded for an installed artifact (none if unknown)."""
        try:
            doc = json.loads((self.releases_dir / f"{sha256}.json").read_text())
            return [CommandCheck(tuple(str(a) for a in argv)) for argv in doc["health_checks"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def forget_unused(self, env: BootEnv) -> None:
        """Drop declarations of artifacts no slot holds any more."""
        held = {info.sha256 for s in SLOTS if (info := env.slots[s]) is not None}
        for path in self.releases_dir.glob("*.json"):
            if path.stem not in held:
                path.unlink(missing_ok=True)


def check_tuf_root(data: bytes) -> Metadata[Root]:
    """``data`` as TUF root metadata signed by its own threshold (``InvalidRequest`` if not)."""
    if len(data) > MAX_ROOT_BYTES:
        raise InvalidRequest(f"a TUF root of {len(data)} bytes is larger than allowed")
    try:
        root = Metadata[Root].from_bytes(data)
        if not isinstance(root.signed, Root):
            raise TypeError("not root metadata")
        root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    except (RepositoryError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest(
            f"not a valid TUF root (root metadata signed by its own keys): {exc}",
            hint="use the fleet's pki/tuf-root.json",
        ) from exc
    return root


def fetch_initial_root(server_url: str, fleet_root_pem: Path) -> bytes:
    """``/tuf/metadata/1.root.json`` over TLS pinned to the fleet root (trust on first use
    over the fleet-pinned channel; see the module docstring)."""
    url = f"{server_url.rstrip('/')}/tuf/metadata/1.root.json"
    try:
        with httpx.Client(
            verify=tls_context(str(fleet_root_pem)), timeout=ROOT_FETCH_TIMEOUT
        ) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot fetch the fleet's TUF root from {url}: {exc}") from exc
    if response.status_code != 200:
        raise ConfigError(f"the fleet's TUF root is not at {url} ({response.status_code})")
    check_tuf_root(response.content)
    return response.content


def provision_updates(state: StateDir, config: AgentConfig, tuf_root: bytes) -> UpdateState:
    """Give an enrolled (or enrolling) device its TUF root and, if absent, its device."""
    updates = UpdateState.of(state, config)
    updates.store_initial_root(tuf_root)
    updates.ensure_device()
    return updates
