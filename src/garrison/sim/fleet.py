"""Many simulated devices in one process: enrolled over real EST, each then running the
agent's cycle on its own kept-alive mutual-TLS connection, all on one asyncio event loop.

Written for 10,000 devices in one process: a device is a small record, a task and a TLS
connection (about 25 kB of TLS context each); requests are pre-built bytes on a lean
HTTP/1.1 client (:mod:`.http`). Creating a device's TLS context costs about 2 ms of CPU
(OpenSSL 3 parsing its key and the fleet root), so it is made when the device first
connects, spread over the start.

Typical use::

    sim = Simulator("127.0.0.1", 8443, root_ca, workdir, Behaviour(install_seconds=2))
    await sim.enroll([DeviceSpec(serial, token, "gw-1", "1.0.0"), ...])
    sim.start(spread=5.0)        # every device starts cycling within 5 s
    ...                          # watch sim.versions(), sim.tally
    await sim.stop()
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from garrison.clock import Clock, utc_now
from garrison.sim.device import Behaviour, DeviceLink, SimDevice, Tally
from garrison.sim.identity import SimIdentity, device_context, enroll_many
from garrison.sim.state import DeviceState


@dataclass(frozen=True)
class DeviceSpec:
    """A device to simulate: its factory serial and token, hardware model and firmware."""

    serial: str
    token: str
    hardware: str
    firmware: str


class Simulator:
    """A fleet of simulated devices against one control plane."""

    def __init__(
        self,
        host: str,
        port: int,
        root_ca: Path,
        directory: Path,
        behaviour: Behaviour | None = None,
        *,
        seed: int = 0,
        clock: Clock = utc_now,
    ) -> None:
        self.host = host
        self.port = port
        self.root_ca = root_ca
        self.directory = directory
        self.behaviour = behaviour or Behaviour()
        self.clock = clock
        self.tally = Tally()
        self.devices: list[SimDevice] = []
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not security
        self._tasks: list[asyncio.Task[None]] = []

    async def enroll(self, specs: Iterable[DeviceSpec], *, connections: int = 8) -> None:
        """Enroll every device over EST (its own key, its factory token) and add it."""
        specs = list(specs)
        identities = await enroll_many(
            self.host,
            self.port,
            self.root_ca,
            [(s.serial, s.token) for s in specs],
            self.directory / "identities",
            connections=connections,
        )
        for spec, identity in zip(specs, identities, strict=True):
            self.add(spec, identity)

    def add(self, spec: DeviceSpec, identity: SimIdentity) -> SimDevice:
        """Add an already enrolled device."""
        root_ca = self.root_ca
        link = DeviceLink(
            self.host,
            self.port,
            lambda: device_context(root_ca, identity),
            self.tally,
            self.behaviour.request_timeout,
        )
        device = SimDevice(
            DeviceState(spec.serial, spec.hardware, spec.firmware),
            link,
            self.behaviour,
            self.tally,
            rng=random.Random(self._rng.random()),  # noqa: S311
            clock=self.clock,
        )
        self.devices.append(device)
        return device

    def start(self, spread: float = 0.0, first_contacts: int | None = None) -> None:
        """Every device starts cycling, each after a random delay up to ``spread`` seconds;
        with ``first_contacts``, at most that many devices make their first contact at
        once (the rest wait for their turn, as a fleet coming online would back off)."""
        gate = asyncio.Semaphore(first_contacts) if first_contacts else None
        for device in self.devices:
            delay = self._rng.uniform(0, spread) if spread > 0 else 0.0
            task = asyncio.create_task(device.run(delay, gate), name=device.serial)
            self._tasks.append(task)

    async def cycle_all(self, concurrency: int = 64) -> None:
        """One cycle of every device, at most ``concurrency`` at a time (for step-by-step
        tests); a failed cycle raises."""
        gate = asyncio.Semaphore(concurrency)

        async def one(device: SimDevice) -> None:
            async with gate:
                await device.cycle()

        await asyncio.gather(*(one(d) for d in self.devices))

    async def stop(self) -> None:
        """Stop every device (mid-install ones too) and close their connections."""
        for device in self.devices:
            device.stopped = True  # should a cancellation be lost, the loop still ends
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for device in self.devices:
            device.close()

    def versions(self) -> Counter[str]:
        """How many devices run each firmware version."""
        return Counter(d.state.firmware for d in self.devices)

    def device(self, serial: str) -> SimDevice:
        return next(d for d in self.devices if d.serial == serial)
