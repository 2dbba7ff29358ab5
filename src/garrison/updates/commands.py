"""Operator fallback from the control plane: a rollback command queued for devices, which
they fetch over mTLS, carry out with their own installer and report back.

A device sent back is put on *update hold*: its directive names no firmware (it is offered
no release) until an operator lets it update again (``garrison device release-hold``), so
it is not re-updated to the very version it was sent back from.

The device's oldest open command is part of its directive (``command`` in
:mod:`garrison.fleet.directives`): queueing one (:func:`request_rollback`) and completing
one (:func:`complete_command`) recompute the device's directive in the same transaction, so
its ETag changes both times. An idle agent polls only the directive, and asks
``GET /device/v1/commands`` when its directive names a command (older agents ask every
cycle; that route stays).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from garrison.errors import InvalidRequest, PolicyError
from garrison.fleet.directives import recompute
from garrison.store.audit_log import append_audit
from garrison.store.tables import device_commands, devices

ROLLBACK = "rollback"
OUTCOMES = ("committed", "rolled-back", "refused", "failed")


@dataclass(frozen=True)
class Command:
    id: int
    action: str


def request_rollback(
    conn: Connection, serials: list[str], model: str | None, actor: str, now: dt.datetime
) -> list[str]:
    """Queue a rollback for the named devices, or every active device of ``model``; put
    them on update hold (their directives recomputed: no firmware, the command named).
    Returns the serials reached."""
    if bool(serials) == bool(model):
        raise InvalidRequest("name devices by serial, or a hardware model, not both or neither")
    query = select(devices.c.id, devices.c.serial).where(devices.c.status == "active")
    query = (
        query.where(devices.c.serial.in_(serials))
        if serials
        else query.where(devices.c.model == model)
    )
    found = conn.execute(query.order_by(devices.c.serial)).all()
    missing = set(serials) - {row.serial for row in found}
    if missing:
        raise LookupError(f"no active device with serial {sorted(missing)[0]!r}")
    for row in found:
        open_command = conn.execute(
            select(device_commands.c.id).where(
                device_commands.c.device_id == row.id, device_commands.c.done_at.is_(None)
            )
        ).first()
        if open_command is None:
            conn.execute(
                device_commands.insert().values(
                    device_id=row.id, action=ROLLBACK, requested_by=actor, requested_at=now
                )
            )
    if found:  # a group with no active device reaches nobody; the request is still audited
        ids = [r.id for r in found]
        conn.execute(update(devices).where(devices.c.id.in_(ids)).values(update_hold=True))
        recompute(conn, ids, now)  # held devices get no firmware in their directive
    reached = [row.serial for row in found]
    append_audit(
        conn,
        actor=actor,
        action="device.rollback",
        target=model or ",".join(reached)[:256],
        outcome="ok",
        now=now,
        details={"devices": reached},
    )
    return reached


def release_hold(conn: Connection, serial: str, actor: str, now: dt.datetime) -> None:
    """Let device ``serial`` be offered firmware again (audited; its directive recomputed)."""
    released = conn.execute(
        update(devices)
        .where(devices.c.serial == serial, devices.c.update_hold.is_(True))
        .values(update_hold=False)
        .returning(devices.c.id)
    ).all()
    if len(released) != 1:
        exists = conn.execute(select(devices.c.id).where(devices.c.serial == serial)).first()
        if exists is None:
            raise LookupError(f"no device with serial {serial!r}")
        raise PolicyError(f"device {serial!r} is not on update hold")
    recompute(conn, [released[0].id], now)
    append_audit(
        conn, actor=actor, action="device.release-hold", target=serial, outcome="ok", now=now
    )


def pending_command(conn: Connection, device_id: int) -> Command | None:
    row = conn.execute(
        select(device_commands.c.id, device_commands.c.action)
        .where(device_commands.c.device_id == device_id, device_commands.c.done_at.is_(None))
        .order_by(device_commands.c.id)
        .limit(1)
    ).first()
    return None if row is None else Command(row.id, row.action)


def complete_command(
    conn: Connection,
    device_id: int,
    serial: str,
    command_id: int,
    outcome: str,
    detail: str,
    now: dt.datetime,
) -> None:
    """Record what the device reports; only its own open commands, once. The device's
    directive is recomputed (it no longer names the command, or names the next one)."""
    if outcome not in OUTCOMES:
        raise InvalidRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
    changed = conn.execute(
        update(device_commands)
        .where(
            device_commands.c.id == command_id,
            device_commands.c.device_id == device_id,
            device_commands.c.done_at.is_(None),
        )
        .values(done_at=now, outcome=outcome, detail=detail[:300])
    ).rowcount
    if changed != 1:
        raise LookupError(f"no open command {command_id} for this device")
    recompute(conn, [device_id], now)
    append_audit(
        conn,
        actor=f"device:{serial}",
        action="device.command-done",
        target=serial,
        outcome="ok",
        now=now,
        details={"command": command_id, "result": outcome, "detail": detail[:200]},
    )
