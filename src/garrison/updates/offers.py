"""Which release the control plane offers a device (``GET /device/v1/update``): the firmware
of the device's directive (:mod:`garrison.fleet.directives`), which its desired state, its
campaign assignment and its update hold decide. A device with no desired firmware is offered
nothing. The control plane only chooses; the device verifies everything through TUF."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from garrison.fleet.directives import Directive, load_directive, stored_directive
from garrison.fleet.groups import refresh_device
from garrison.store.database import Database


def first_directive(conn: Connection, device_id: int, now: dt.datetime) -> Directive:
    """The directive of ``device_id`` in a write transaction. At a device's first contact
    (no directive stored yet) its dynamic groups are evaluated first, so a device enrolled
    after a group was created joins it before it is told what to run."""
    if stored_directive(conn, device_id) is None:
        refresh_device(conn, device_id, now)
    return load_directive(conn, device_id, now)


def current_directive(database: Database, device_id: int, now: dt.datetime) -> Directive:
    """The stored directive of ``device_id`` (one read); computed and stored in a write
    transaction only the first time a device asks (:func:`first_directive`)."""
    with database.read() as conn:
        found = stored_directive(conn, device_id)
    if found is not None:
        return found
    with database.write() as conn:
        return first_directive(conn, device_id, now)


def offered_target(database: Database, device_id: int, now: dt.datetime) -> str | None:
    """The target path to offer device ``device_id`` (its directive's firmware), or None."""
    return current_directive(database, device_id, now).firmware_target
