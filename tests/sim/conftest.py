"""A served fleet per backend for a test module, with simulated devices enrolled over real
EST (keys made in this process) on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from garrison.sim.identity import SimIdentity, enroll_many
from garrison.sim.scenario import Scenario
from tests.server.conftest import SharedFleet, shared_fleet


@dataclass
class SimFleet:
    shared: SharedFleet
    directory: Path

    @property
    def port(self) -> int:
        return self.shared.served.port

    @property
    def root_ca(self) -> Path:
        return self.shared.served.root_ca

    def enroll(self, count: int = 1, *, model: str = "gw-1") -> list[SimIdentity]:
        """``count`` new devices of ``model``, each enrolled with its own key and token."""
        batch = self.shared.batch(count, model=model)
        tokens = list(zip(batch.serials, batch.tokens, strict=True))
        return asyncio.run(
            enroll_many("127.0.0.1", self.port, self.root_ca, tokens, self.directory / "ids")
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sim_fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimFleet]:
    directory = tmp_path_factory.mktemp(f"sim-{request.param}")
    with shared_fleet(request.param, directory) as shared:
        yield SimFleet(shared, directory)


@pytest.fixture(scope="module")
def scenario(sim_fleet: SimFleet) -> Scenario:
    """The admin-API scenario on the module's fleet, with firmware ``fw`` 2.0.0 for gw-1
    published by a throwaway release manager."""
    served = sim_fleet.shared.served
    made = Scenario(served.url, served.root_ca, served.admin_token)
    made.release_managers(served.fleet, served.database)
    made.publish("fw", "2.0.0", ["gw-1"])
    return made
