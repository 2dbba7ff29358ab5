"""The parts of ``garrison demo`` that stand in for people and machines: release managers
signing with their own keys, and a farm of real agents, each working from its own state
directory and simulated A/B device, run side by side in one process."""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner

from garrison.agent.agent import Agent
from garrison.cli.common import ApiClient
from garrison.errors import GarrisonError

log = logging.getLogger("garrison.demo")


def firmware_image(name: str, version: str, size: int = 256 * 1024) -> bytes:
    """A deterministic stand-in for a firmware image (the bytes do not matter; their
    signature, length and hash do)."""
    return hashlib.shake_256(f"{name} {version}".encode()).digest(size)


def app_package(name: str, version: str) -> bytes:
    """A small tar archive for an application package."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, text in (
            ("bin/run", f"#!/bin/sh\necho {name} {version}\n"),
            ("VERSION", f"{version}\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if path.startswith("bin/") else 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class ReleaseTeam:
    """Release managers: each holds a key; ``threshold`` of them must sign a release."""

    clients: list[ApiClient]
    signers: list[CryptoSigner]
    threshold: int

    def publish(self, release: dict[str, Any], data: bytes) -> dict[str, Any]:
        """Upload the artifact, propose the release, and have ``threshold`` managers sign."""
        first = self.clients[0]
        stored = first.call("PUT", "/artifacts", content=data)
        created = first.call("POST", "/releases", json={**release, "sha256": stored["sha256"]})
        signed: dict[str, Any] = created
        for client, signer in list(zip(self.clients, self.signers, strict=True))[: self.threshold]:
            payload = client.call("GET", f"/releases/{created['id']}/payload", raw=True)
            signature = signer.sign(payload)
            signed = client.call(
                "POST",
                f"/releases/{created['id']}/signatures",
                json={"keyid": signature.keyid, "signature": signature.signature},
            )
        if signed.get("state") != "published":
            raise GarrisonError(f"release {release['name']} {release['version']} not published")
        return signed


@dataclass
class DeviceFarm:
    """Runs every agent's cycle about once per ``interval`` seconds on a few threads,
    instead of each agent waiting its server-chosen poll interval (minutes in the field)."""

    agents: dict[str, Agent]
    interval: float = 1.0
    threads: int = 6
    errors: dict[str, str] = field(default_factory=dict)
    cycles: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="demo-farm", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="agent") as pool:
            while not self._stop.is_set():
                started = time.monotonic()
                list(pool.map(self._cycle, list(self.agents.items())))
                self.cycles += 1
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _cycle(self, item: tuple[str, Agent]) -> None:
        serial, agent = item
        if self._stop.is_set():
            return
        try:
            agent.cycle()
            self.errors.pop(serial, None)
        except GarrisonError as exc:
            if serial in self.agents:  # not a device the demo took out of the farm meanwhile
                self.errors[serial] = str(exc).splitlines()[0]
        except Exception as exc:  # a demo device must not stop the farm; shown at the end
            log.exception("agent %s failed", serial)
            self.errors[serial] = f"{type(exc).__name__}: {exc}"


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll ``check`` until it is true; a clear error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise GarrisonError(f"the demo waited {timeout:.0f} s for {what}")
        time.sleep(interval)


def write_token(path: Path, token: str) -> None:
    path.write_text(token + "\n")
    path.chmod(0o600)
