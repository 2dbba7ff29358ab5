"""Which release the control plane offers a device (``GET /device/v1/update``): the newest
published release for the device's hardware model. The control plane only chooses; the
device verifies everything it is offered through TUF."""

from __future__ import annotations

import json

from sqlalchemy import Connection, select

from garrison.store.tables import devices, releases
from garrison.updates.eligibility import Candidate, choose_release


def offered_target(conn: Connection, device_id: int) -> str | None:
    """The target path to offer device ``device_id``, or None."""
    model = conn.execute(select(devices.c.model).where(devices.c.id == device_id)).scalar_one()
    rows = conn.execute(
        select(
            releases.c.id, releases.c.target_path, releases.c.custom, releases.c.published_at
        ).where(releases.c.state == "published")
    ).all()
    candidates = [
        Candidate(row.target_path, _hardware(row.custom), row.published_at, row.id)
        for row in rows
        if row.published_at is not None
    ]
    return choose_release(candidates, model)


def _hardware(custom: str) -> tuple[str, ...]:
    models = json.loads(custom).get("garrison", {}).get("hardware", [])
    return tuple(m for m in models if isinstance(m, str))
