"""Coalesced last-seen recording on both databases: batched, monotonic, kept on failure,
flushed by its thread and on close."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from garrison.fleet.last_seen import DATABASE_ERRORS, LastSeen
from garrison.store.database import Database
from garrison.store.tables import devices
from tests.conftest import RunningFleet

T0 = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)


def add_devices(database: Database, count: int) -> list[int]:
    with database.write() as conn:
        return [
            int(
                conn.execute(
                    devices.insert()
                    .values(serial=f"LS-{i}", model="gw-1", status="active", enrolled_at=T0)
                    .returning(devices.c.id)
                ).scalar_one()
            )
            for i in range(count)
        ]


def seen(database: Database, device_id: int) -> dt.datetime | None:
    with database.read() as conn:
        value = conn.execute(
            select(devices.c.last_seen_at).where(devices.c.id == device_id)
        ).scalar_one()
    return value if value is None else value.astimezone(dt.UTC)


def test_flush_writes_the_newest_time_per_device_in_one_batch(fleet: RunningFleet) -> None:
    ids = add_devices(fleet.database, 3)
    recorder = LastSeen(fleet.database, interval=60)
    recorder.record(ids[0], T0 + dt.timedelta(seconds=5))
    recorder.record(ids[0], T0 + dt.timedelta(seconds=1))  # older: ignored
    recorder.record(ids[1], T0 + dt.timedelta(seconds=2))
    assert recorder.pending == 2
    assert seen(fleet.database, ids[0]) is None  # nothing written before the flush
    assert recorder.flush() == 2
    assert recorder.pending == 0
    assert seen(fleet.database, ids[0]) == T0 + dt.timedelta(seconds=5)
    assert seen(fleet.database, ids[1]) == T0 + dt.timedelta(seconds=2)
    assert seen(fleet.database, ids[2]) is None
    assert recorder.flush() == 0
    recorder.close()


def test_last_seen_never_goes_backwards(fleet: RunningFleet) -> None:
    """Another process (or the check-in) wrote a newer time: an older flush leaves it."""
    (device,) = add_devices(fleet.database, 1)
    newer = T0 + dt.timedelta(minutes=10)
    with fleet.database.write() as conn:
        conn.execute(devices.update().where(devices.c.id == device).values(last_seen_at=newer))
    recorder = LastSeen(fleet.database, interval=60)
    recorder.record(device, T0)
    recorder.flush()
    assert seen(fleet.database, device) == newer
    recorder.record(device, newer + dt.timedelta(seconds=1))
    recorder.close()  # close flushes
    assert seen(fleet.database, device) == newer + dt.timedelta(seconds=1)


def test_a_failed_flush_keeps_the_times(tmp_path: Path) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'unmigrated.db'}")  # no devices table
    recorder = LastSeen(broken, interval=60)
    recorder.record(7, T0)
    with pytest.raises(DATABASE_ERRORS, match="no such table"):
        recorder.flush()
    assert recorder.pending == 1
    recorder.record(7, T0 - dt.timedelta(seconds=1))  # older than the kept one
    recorder.record(8, T0)
    assert recorder.pending == 2
    broken.dispose()


def test_the_thread_flushes_within_the_interval(fleet: RunningFleet) -> None:
    (device,) = add_devices(fleet.database, 1)
    recorder = LastSeen(fleet.database, interval=0.05)
    recorder.record(device, T0)
    deadline = time.monotonic() + 10
    while seen(fleet.database, device) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen(fleet.database, device) == T0
    recorder.close()
    recorder.close()  # idempotent


def test_interval_must_be_positive(fleet: RunningFleet) -> None:
    with pytest.raises(ValueError, match="positive"):
        LastSeen(fleet.database, interval=0)


def test_a_served_fleet_writes_last_seen_of_polls_by_its_shutdown(fleet: RunningFleet) -> None:
    """Polls (the route's 200, then the fast path's 304s) are written at the latest when
    the control plane stops, though the flush interval has not passed."""
    import asyncio
    import json

    from garrison.server.device_fast import DIRECTIVE_PATH
    from garrison.sim.http import HttpConnection
    from garrison.sim.identity import device_context, enroll_many
    from tests.conftest import create_batch, make_officer

    started = dt.datetime.now(dt.UTC)
    with fleet.serve():
        officer = make_officer(fleet)
        batch = create_batch(fleet, officer, serials=["LS-POLL"])
        tokens = [(t["serial"], t["token"]) for t in batch["tokens"]]  # type: ignore[attr-defined, union-attr]

        async def poll() -> list[int]:
            (device,) = await enroll_many(
                "127.0.0.1", fleet.port, fleet.root_ca, tokens, fleet.fleet.paths.root / "sim"
            )
            conn = await HttpConnection.open(
                "127.0.0.1", fleet.port, device_context(fleet.root_ca, device)
            )
            first = await conn.request("GET", DIRECTIVE_PATH)
            etag = json.loads(first.body)["etag"]
            statuses = [first.status]
            for _ in range(3):
                again = await conn.request("GET", DIRECTIVE_PATH, {"If-None-Match": f'"{etag}"'})
                statuses.append(again.status)
            conn.close()
            return statuses

        assert asyncio.run(poll()) == [200, 304, 304, 304]
    with fleet.database.read() as conn:
        last = conn.execute(
            select(devices.c.last_seen_at).where(devices.c.serial == "LS-POLL")
        ).scalar_one()
    assert last is not None and last >= started


def test_replicas_flushing_the_same_devices_at_once_neither_fail_nor_go_back(
    fleet: RunningFleet,
) -> None:
    """Two processes' recorders (here: two recorders on two threads) flush overlapping
    devices at the same moment, over and over: rows are locked in one order, no deadlock,
    and the newest time wins."""
    import threading

    ids = add_devices(fleet.database, 200)
    other = Database(fleet.fleet.settings.database_url)  # a second pool, as a replica has
    try:
        recorders = [LastSeen(fleet.database, 60), LastSeen(other, 60)]
        errors: list[BaseException] = []
        for round_ in range(5):
            for n, recorder in enumerate(recorders):
                for device_id in reversed(ids) if n else ids:
                    recorder.record(device_id, T0 + dt.timedelta(seconds=10 * round_ + n))
            start = threading.Barrier(2)

            def flush(recorder: LastSeen, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    recorder.flush()
                except BaseException as exc:  # collected for the assertion
                    errors.append(exc)

            threads = [threading.Thread(target=flush, args=(r,)) for r in recorders]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert errors == []
        assert {seen(fleet.database, d) for d in ids} == {T0 + dt.timedelta(seconds=41)}
    finally:
        other.dispose()
