"""Operator commands as the control plane records them (:mod:`garrison.updates.commands`): a
device may close only its own open command, once, with a known outcome."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Connection, select

from garrison.errors import InvalidRequest
from garrison.store.tables import device_commands, devices
from garrison.updates.commands import complete_command, pending_command, request_rollback
from tests.conftest import RunningFleet

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def add_device(conn: Connection, serial: str) -> int:
    return int(
        conn.execute(
            devices.insert()
            .values(serial=serial, model="gw-2", status="active", enrolled_at=NOW)
            .returning(devices.c.id)
        ).scalar_one()
    )


def test_a_device_completes_only_its_own_open_command_once(fleet: RunningFleet) -> None:
    with fleet.database.write() as conn:
        mine, other = add_device(conn, "CMD-1"), add_device(conn, "CMD-2")
        request_rollback(conn, ["CMD-1"], None, "otto", NOW)
        command = pending_command(conn, mine)
    assert command is not None and command.action == "rollback"

    with fleet.database.write() as conn, pytest.raises(LookupError, match="no open command"):
        complete_command(conn, other, "CMD-2", command.id, "committed", "", NOW)
    with fleet.database.write() as conn, pytest.raises(InvalidRequest, match="outcome must be"):
        complete_command(conn, mine, "CMD-1", command.id, "done", "", NOW)
    with fleet.database.read() as conn:
        assert pending_command(conn, mine) == command  # still open after both refusals

    with fleet.database.write() as conn:
        complete_command(conn, mine, "CMD-1", command.id, "committed", "1.0.0 runs", NOW)
    with fleet.database.write() as conn, pytest.raises(LookupError, match="no open command"):
        complete_command(conn, mine, "CMD-1", command.id, "refused", "again", NOW)
    with fleet.database.read() as conn:
        row = conn.execute(select(device_commands).where(device_commands.c.id == command.id)).one()
        assert pending_command(conn, mine) is None
    assert (row.outcome, row.detail) == ("committed", "1.0.0 runs")  # the first report stands
