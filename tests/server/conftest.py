"""One served fleet per backend for a whole test module: the ``shared`` fixture.

The per-test ``served`` fixture costs about half a second (most of it stopping uvicorn); a
module of cases that share one fleet runs in seconds. Each case creates its own batch with
fresh serials (:meth:`SharedFleet.batch`) and checks state relative to what it found, so
the cases stay independent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Officer,
    RunningFleet,
    create_batch,
    fresh_database,
    make_fleet,
    make_officer,
)


@dataclass(frozen=True)
class Batch:
    """A batch as created through the API: ``tokens[i]`` is the token of ``serials[i]``
    (for a quota-only batch, ``serials`` is empty)."""

    id: int
    serials: list[str]
    tokens: list[str]

    def token(self, serial: str) -> str:
        return self.tokens[self.serials.index(serial)]


@dataclass
class SharedFleet:
    """A served fleet with a security officer ``sofia`` and a manufacturer ``acme``."""

    served: RunningFleet
    officer: Officer
    _names: Iterator[int] = field(default_factory=itertools.count)

    def unique(self, prefix: str) -> str:
        """A name no other case in this module uses."""
        return f"{prefix}{next(self._names)}"

    def batch(self, size: int = 3, **fields: Any) -> Batch:
        """A new batch; unless ``serials`` is given, ``size`` fresh serials (D7-1, D7-2...)."""
        if "serials" not in fields:
            prefix = self.unique("D")
            fields["serials"] = [f"{prefix}-{i}" for i in range(1, size + 1)]
        created: dict[str, Any] = create_batch(self.served, self.officer, **fields)
        tokens: list[dict[str, str]] = created["tokens"]
        return Batch(
            int(created["id"]),
            [t["serial"] for t in tokens if t["serial"] is not None],
            [t["token"] for t in tokens],
        )


@contextmanager
def shared_fleet(backend: str, directory: Path) -> Iterator[SharedFleet]:
    """A served fleet with ``sofia`` and ``acme`` on a fresh ``backend`` database."""
    with fresh_database(backend, directory) as url:
        running = make_fleet(directory / "fleet", url)
        try:
            with running.serve():
                yield SharedFleet(running, make_officer(running))
        finally:
            running.database.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedFleet]:
    """One served fleet per backend for the test module that asks for it."""
    with shared_fleet(request.param, tmp_path_factory.mktemp(request.param)) as fleet:
        yield fleet
