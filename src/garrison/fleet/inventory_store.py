"""Recording a device's inventory report (``device_inventory``) and its history.

Guarantees:

* A report whose serial or hardware model is not the device's own (the certificate's device
  and its enrolled model) is refused with :class:`IdentityMismatch` before anything is
  written.
* An unchanged report (same digest) writes only its uptime and time; a changed one stores
  the report, adds one history row per change, re-evaluates the device's dynamic groups and,
  if its membership changed, recomputes its directive — all in the caller's transaction.
  The caller must not hold the device's row lock yet (a re-evaluation may wait for group
  locks: see :mod:`garrison.fleet.group_locks`).
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Connection, select, update

from garrison.errors import PolicyError
from garrison.fleet.groups import refresh_device
from garrison.fleet.history import add_history
from garrison.fleet.inventory import Inventory, changes, from_stored
from garrison.fleet.upsert import upsert
from garrison.store.tables import device_inventory

COLUMNS = [
    "reported_at",
    "digest",
    "firmware",
    "boot_slot",
    "slot_state",
    "apps",
    "agent_version",
    "uptime_seconds",
    "data",
]


class IdentityMismatch(PolicyError):
    """A device reported an inventory naming another device or another hardware model."""


def check_identity(inventory: Inventory, serial: str, model: str) -> None:
    """Refuse an inventory that is not about device ``serial`` of model ``model``."""
    if inventory.serial != serial:
        raise IdentityMismatch(
            f"the inventory names device {inventory.serial[:64]!r}, but this is {serial!r}",
            hint="a device reports only its own inventory (the serial of its certificate)",
        )
    if inventory.hardware != model:
        raise IdentityMismatch(
            f"the inventory names hardware {inventory.hardware[:64]!r}, but {serial!r} "
            f"was enrolled as {model!r}",
            hint="the hardware model is fixed at enrollment by the device's batch",
        )


def record_inventory(
    conn: Connection,
    device_id: int,
    serial: str,
    model: str,
    inventory: Inventory,
    now: dt.datetime,
) -> bool:
    """Store ``inventory`` for device ``device_id``; returns whether it changed."""
    check_identity(inventory, serial, model)
    digest = inventory.digest()
    row = conn.execute(
        select(device_inventory.c.digest, device_inventory.c.data)
        .where(device_inventory.c.device_id == device_id)
        .with_for_update()
    ).first()
    if row is not None and row.digest == digest:
        conn.execute(
            update(device_inventory)
            .where(device_inventory.c.device_id == device_id)
            .values(reported_at=now, uptime_seconds=inventory.uptime_seconds)
        )
        return False
    previous = None if row is None else from_stored(row.data)
    for change in changes(previous, inventory):
        add_history(conn, device_id, change.kind, change.summary, change.details, now)
    upsert(
        conn,
        device_inventory,
        [
            {
                "device_id": device_id,
                "reported_at": now,
                "digest": digest,
                "firmware": inventory.firmware,
                "boot_slot": inventory.boot.slot,
                "slot_state": inventory.boot.state,
                "apps": json.dumps(dict(inventory.apps), sort_keys=True),
                "agent_version": inventory.agent_version,
                "uptime_seconds": inventory.uptime_seconds,
                "data": json.dumps(inventory.to_json(), sort_keys=True),
            }
        ],
        ["device_id"],
        COLUMNS,
    )
    refresh_device(conn, device_id, now)
    return True
