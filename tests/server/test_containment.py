"""Containing a leak: a batch closed at once, a principal disabled at once."""

from __future__ import annotations

import base64

from tests.conftest import Officer, RunningFleet, create_batch, make_csr


def test_a_closed_batch_enrolls_nothing(served: RunningFleet, officer: Officer) -> None:
    batch = create_batch(served, officer, serials=["L-1", "L-2"])
    tokens = batch["tokens"]  # type: ignore[index]
    with served.api(officer.token) as api:
        closed = api.post(f"/batches/{batch['id']}/close")
        assert closed.status_code == 200 and closed.json() == {"id": batch["id"], "unused": 2}
        again = api.post(f"/batches/{batch['id']}/close")
        assert again.status_code == 403 and "already closed" in again.text
        assert api.post("/batches/9999/close").status_code == 404
        listed = {b["id"]: b for b in api.get("/batches").json()}
        assert listed[batch["id"]]["closed"] is True
    with served.client() as client:
        refused = client.post(
            "/.well-known/est/simpleenroll",
            content=base64.encodebytes(make_csr("L-1")[1]),
            headers={"Content-Type": "application/pkcs10"},
            auth=("L-1", tokens[0]["token"]),
        )
    assert refused.status_code == 403 and "is closed" in refused.text
    with served.api(officer.manufacturer_token) as api:  # the manufacturer may not close
        assert api.post(f"/batches/{batch['id']}/close").status_code == 403


def test_a_disabled_principal_is_refused_at_once(served: RunningFleet, officer: Officer) -> None:
    with served.api(officer.token) as api:
        assert api.get("/devices").status_code == 200
    with served.api() as admin:
        assert admin.post("/principals/sofia/disable").status_code == 200
        assert admin.post("/principals/sofia/disable").status_code == 403
        assert admin.post("/principals/nobody/disable").status_code == 404
        itself = admin.post("/principals/admin/disable")
        assert itself.status_code == 403 and "cannot disable itself" in itself.text
    with served.api(officer.token) as api:
        refused = api.get("/devices")
    assert refused.status_code == 401 and "invalid or disabled" in refused.text
