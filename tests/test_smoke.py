"""The served fleet fixture itself: health, EST cacerts, authenticated whoami."""

from __future__ import annotations

from tests.conftest import RunningFleet


def test_healthz_and_whoami(served: RunningFleet) -> None:
    with served.client() as client:
        assert client.get("/healthz").text == "ok\n"
    with served.api() as api:
        assert api.get("/whoami").json() == {"name": "admin", "role": "admin"}
