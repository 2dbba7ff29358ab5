"""The admin API documents itself, and never exposes secrets in its schemas."""

from __future__ import annotations

from tests.conftest import RunningFleet


def test_openapi_document(served: RunningFleet) -> None:
    with served.client() as client:
        spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/v1/batches", "/api/v1/devices/{serial}/revoke", "/api/v1/audit/verify",
                 "/.well-known/est/simpleenroll", "/pki/ocsp", "/device/v1/checkin"):  # fmt: skip
        assert path in paths
    schemas = spec["components"]["schemas"]
    public = " ".join(str(schemas[name]) for name in ("DevicePublic", "BatchPublic"))
    assert "token" not in public and "digest" not in public and "der" not in public
