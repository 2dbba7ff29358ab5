"""A simulated device outlives an unreachable control plane: each failed cycle is counted
and the next one comes after the usual wait."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from garrison.server.embedded import free_port
from garrison.sim.device import Behaviour, DeviceLink, SimDevice, SimDeviceError, Tally
from garrison.sim.state import DeviceState


def test_an_unreachable_server_fails_cycles_without_stopping_the_device() -> None:
    tally = Tally()
    port = free_port()  # nothing listens there

    def context() -> ssl.SSLContext:
        return ssl.create_default_context()

    async def run() -> bool:
        link = DeviceLink("127.0.0.1", port, context, tally, timeout=2)
        device = SimDevice(
            DeviceState("S-1", "gw-1", "1.0.0"), link, Behaviour(poll_seconds=0.05), tally
        )
        with pytest.raises(SimDeviceError, match="cannot connect"):
            await device.cycle()
        task = asyncio.create_task(device.run())
        for _ in range(200):
            if tally.failed_cycles >= 3:
                break
            await asyncio.sleep(0.02)
        alive = not task.done()
        device.stopped = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return alive

    assert asyncio.run(run())
    assert tally.failed_cycles >= 3
    assert tally.errors["connect"] >= 4
    assert not [k for k in tally.errors if k.startswith("unexpected")]
