"""Concurrent changes of group membership and of what a group means, on PostgreSQL (SQLite
has one writer at a time, which serializes all of this already).

Each race opens a transaction that makes one change and keeps it open while a second
transaction, in another thread, makes the other change; the first commits once the second
waits for a lock (or, without the group locks, has finished). Whichever order, every
device's stored directive must equal a fresh computation, and dynamic memberships must
follow the committed filters and facts. Before the group locks
(``fleet/group_locks.py``) each of these lost one of the two changes.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select, text

from garrison.fleet import groups
from garrison.fleet.desired_state import (
    DesiredSpec,
    ReleaseRef,
    clear_desired,
    set_desired,
    set_group_firmware,
)
from garrison.fleet.directives import compute, stored_directive
from garrison.fleet.group_locks import lock_group, lock_membership
from garrison.fleet.inventory import parse_inventory
from garrison.fleet.inventory_store import record_inventory
from garrison.store.database import Database
from garrison.store.tables import devices, group_members
from tests.fleet.conftest import World, make_world
from tests.fleet.test_services import ACTOR, NOW, add_device, add_release
from tests.server.conftest import shared_fleet

Step = Callable[[Connection], Any]
WINDOW = {"timezone": "UTC", "slots": [{"days": ["sun"], "start": "02:00", "minutes": 60}]}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    from tests.conftest import fresh_database

    with fresh_database("postgresql", tmp_path) as url:
        database = Database(url)
        database.migrate()
        yield database
        database.dispose()


def lock_waiters(db: Database, event: str | None = None) -> int:
    """How many sessions of this database wait for a lock (of kind ``event``, if given)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    with db.read() as conn:
        if event is None:
            return int(conn.execute(text(query)).scalar_one())
        return int(conn.execute(text(query + " AND wait_event = :e"), {"e": event}).scalar_one())


def race(
    db: Database,
    first: Step,
    second: Step,
    then: Step | None = None,
    *,
    event: str | None = None,
) -> bool:
    """Run ``first`` in a transaction; while it is open run ``second`` in another thread's
    transaction; once that waits for a lock (or is done) run ``then`` in the first and
    commit. Returns whether the second had to wait. Errors of either are raised."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with db.write() as conn:
                second(conn)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    with db.write() as conn:
        first(conn)
        thread.start()
        deadline = time.monotonic() + 20
        while not done.is_set() and lock_waiters(db, event) == 0:
            assert time.monotonic() < deadline, "the second transaction neither waits nor ends"
            time.sleep(0.02)
        waited = not done.is_set()
        if then is not None:
            then(conn)
    thread.join(30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    return waited


def directives_are_fresh(db: Database) -> dict[int, dict[str, Any]]:
    """Every stored directive equals a fresh computation; returns the documents by id."""
    with db.read() as conn:
        ids = list(conn.execute(select(devices.c.id)).scalars())
        fresh = compute(conn, ids)
        stored = {i: stored_directive(conn, i) for i in ids}
    for device_id in ids:
        assert stored[device_id] == fresh[device_id], (
            f"device {device_id}: stored {stored[device_id] and stored[device_id].document}, "
            f"fresh {fresh[device_id].document}"
        )
    return {i: fresh[i].document for i in ids}


def member_of(db: Database, device_id: int) -> set[str]:
    with db.read() as conn:
        return {name for name, _, _ in groups.groups_of(conn, device_id)}


def firmware(doc: dict[str, Any]) -> str | None:
    return None if doc["firmware"] is None else str(doc["firmware"]["version"])


def inventory(device_id: int, serial: str, version: str) -> Step:
    report = parse_inventory({"serial": serial, "hardware": "gw-1", "firmware": version}, "0.4")
    return lambda c: record_inventory(c, device_id, serial, "gw-1", report, NOW)


@dataclass(frozen=True)
class Fleet:
    e: int
    d: int
    plant: int


def static_fleet(db: Database, plant_firmware: str | None) -> Fleet:
    """E-1 and D-1 in ``base`` (priority 0, firmware 1.0); ``plant`` (priority 1, E-1 only,
    firmware ``plant_firmware``)."""
    with db.write() as conn:
        e, d = add_device(conn, "E-1"), add_device(conn, "D-1")
        add_release(conn, "fw", "1.0")
        add_release(conn, "fw", "2.0")
        groups.create_group(conn, groups.GroupSpec("base"), ACTOR, NOW)
        groups.change_members(conn, "base", ["E-1", "D-1"], [], ACTOR, NOW)
        set_desired(conn, "group", "base", DesiredSpec(ReleaseRef("fw", "1.0")), ACTOR, NOW)
        plant = groups.create_group(conn, groups.GroupSpec("plant", priority=1), ACTOR, NOW)
        groups.change_members(conn, "plant", ["E-1"], [], ACTOR, NOW)
        if plant_firmware is not None:
            spec = DesiredSpec(ReleaseRef("fw", plant_firmware))
            set_desired(conn, "group", "plant", spec, ACTOR, NOW)
    return Fleet(e, d, plant.id)


def release_id(conn: Connection, version: str) -> int:
    from garrison.store.tables import releases

    return int(
        conn.execute(
            select(releases.c.id).where(releases.c.name == "fw", releases.c.version == version)
        ).scalar_one()
    )


def _update(**fields: Any) -> Step:
    change = groups.GroupUpdate(frozenset(fields), **fields)
    return lambda c: groups.update_group(c, "plant", change, ACTOR, NOW)


# (plant's firmware before, the change of plant, what D-1 runs once it is a member too)
GROUP_CHANGES: dict[str, tuple[str | None, Callable[[Fleet], Step], str]] = {
    "set_desired": (
        None,
        lambda f: (
            lambda c: set_desired(
                c, "group", "plant", DesiredSpec(ReleaseRef("fw", "2.0")), ACTOR, NOW
            )
        ),
        "2.0",
    ),
    "clear_desired": (
        "2.0",
        lambda f: lambda c: clear_desired(c, "group", "plant", ACTOR, NOW),
        "1.0",
    ),
    "set_group_firmware": (
        None,
        lambda f: lambda c: set_group_firmware(c, f.plant, release_id(c, "2.0"), ACTOR, NOW),
        "2.0",
    ),
    "priority": ("2.0", lambda f: _update(priority=-1), "1.0"),
    "window": (None, lambda f: _update(window=WINDOW), "1.0"),
}


@pytest.mark.parametrize("members_first", [True, False], ids=["members-first", "group-first"])
@pytest.mark.parametrize("change", sorted(GROUP_CHANGES))
def test_a_device_joining_a_group_while_the_group_changes_gets_both(
    db: Database, change: str, members_first: bool
) -> None:
    """Operator A adds D-1 to ``plant`` while operator B changes plant's desired state,
    priority or window: D-1's directive has B's change (the review's reproduction)."""
    before, make, expected = GROUP_CHANGES[change]
    fleet = static_fleet(db, before)
    change_group = make(fleet)

    def add_member(conn: Connection) -> None:
        groups.change_members(conn, "plant", ["D-1"], [], ACTOR, NOW)

    first, second = (add_member, change_group) if members_first else (change_group, add_member)
    waited = race(db, first, second)
    docs = directives_are_fresh(db)
    assert member_of(db, fleet.d) == {"base", "plant"}
    assert firmware(docs[fleet.d]) == expected
    assert docs[fleet.d]["window"] == (WINDOW if change == "window" else None)
    assert docs[fleet.e] == {**docs[fleet.d], "etag": docs[fleet.e]["etag"]}  # same groups
    assert waited  # the second waited for the first's lock on plant


def dynamic_fleet(db: Database, flt: str | None) -> Fleet:
    """E-1 and D-1 (firmware 1.0 reported) in ``base`` (firmware 1.0); with ``flt`` a dynamic
    group ``dyn`` (priority 1) filtering on it."""
    with db.write() as conn:
        e, d = add_device(conn, "E-1"), add_device(conn, "D-1")
        add_release(conn, "fw", "1.0")
        add_release(conn, "fw", "2.0")
        groups.create_group(conn, groups.GroupSpec("base"), ACTOR, NOW)
        groups.change_members(conn, "base", ["E-1", "D-1"], [], ACTOR, NOW)
        set_desired(conn, "group", "base", DesiredSpec(ReleaseRef("fw", "1.0")), ACTOR, NOW)
        inventory(e, "E-1", "1.0")(conn)
        inventory(d, "D-1", "1.0")(conn)
        dyn = 0
        if flt is not None:
            spec = groups.GroupSpec("dyn", "dynamic", flt, priority=1)
            dyn = groups.create_group(conn, spec, ACTOR, NOW).id
    return Fleet(e, d, dyn)


@pytest.mark.parametrize("checkin_first", [True, False], ids=["checkin-first", "desired-first"])
def test_a_check_in_joining_a_dynamic_group_while_its_desired_state_is_set(
    db: Database, checkin_first: bool
) -> None:
    fleet = dynamic_fleet(db, 'firmware == "3.0"')
    checkin = inventory(fleet.d, "D-1", "3.0")

    def set_dyn(conn: Connection) -> None:
        set_desired(conn, "group", "dyn", DesiredSpec(ReleaseRef("fw", "2.0")), ACTOR, NOW)

    first, second = (checkin, set_dyn) if checkin_first else (set_dyn, checkin)
    waited = race(db, first, second)
    docs = directives_are_fresh(db)
    assert member_of(db, fleet.d) == {"base", "dyn"}
    assert firmware(docs[fleet.d]) == "2.0"
    assert firmware(docs[fleet.e]) == "1.0"
    assert waited


def _refilter(conn: Connection) -> None:
    change = groups.GroupUpdate(frozenset({"filter"}), filter='firmware == "3.0"')
    groups.update_group(conn, "dyn", change, ACTOR, NOW)


def _create_dyn(conn: Connection) -> None:
    spec = groups.GroupSpec("dyn", "dynamic", 'firmware == "3.0"', priority=1)
    groups.create_group(conn, spec, ACTOR, NOW)


@pytest.mark.parametrize("checkin_first", [True, False], ids=["checkin-first", "filter-first"])
@pytest.mark.parametrize("how", ["change-filter", "create-group"])
def test_a_filter_and_an_inventory_changing_at_once_both_count(
    db: Database, how: str, checkin_first: bool
) -> None:
    """D-1 reports firmware 3.0 while ``dyn``'s filter becomes (or ``dyn`` is created as)
    ``firmware == "3.0"``: D-1 ends in dyn whichever commits first."""
    fleet = dynamic_fleet(db, 'firmware == "9.9"' if how == "change-filter" else None)
    checkin = inventory(fleet.d, "D-1", "3.0")
    operator = _refilter if how == "change-filter" else _create_dyn
    first, second = (checkin, operator) if checkin_first else (operator, checkin)
    waited = race(db, first, second)
    assert member_of(db, fleet.d) == {"base", "dyn"}
    assert member_of(db, fleet.e) == {"base"}
    directives_are_fresh(db)
    assert waited


@pytest.mark.parametrize("tags_first", [True, False], ids=["tags-first", "checkin-first"])
def test_tags_and_inventory_of_one_device_changing_at_once_both_count(
    db: Database, tags_first: bool
) -> None:
    fleet = dynamic_fleet(db, 'tag == "lab" and firmware == "3.0"')
    checkin = inventory(fleet.d, "D-1", "3.0")

    def tag(conn: Connection) -> None:
        groups.set_tags(conn, "D-1", ["lab"], ACTOR, NOW)

    first, second = (tag, checkin) if tags_first else (checkin, tag)
    waited = race(db, first, second)
    assert member_of(db, fleet.d) == {"base", "dyn"}
    directives_are_fresh(db)
    assert waited


def test_a_check_in_leaving_a_group_does_not_deadlock_with_a_change_of_that_group(
    db: Database,
) -> None:
    """The check-in writes D-1's history and inventory (key-share locks on D-1's row) and
    then waits for ``dyn``, which the operator's transaction holds; that one then recomputes
    D-1 (``FOR NO KEY UPDATE``, which does not wait for key-share locks) and commits."""
    fleet = dynamic_fleet(db, 'firmware < "3.0"')
    assert member_of(db, fleet.d) == {"base", "dyn"}

    def set_dyn(conn: Connection) -> None:
        set_desired(conn, "group", "dyn", DesiredSpec(ReleaseRef("fw", "2.0")), ACTOR, NOW)

    waited = race(
        db,
        lambda c: lock_group(c, "dyn", shared=False),
        inventory(fleet.d, "D-1", "3.0"),
        set_dyn,
    )
    assert waited
    docs = directives_are_fresh(db)
    assert member_of(db, fleet.d) == {"base"}
    assert firmware(docs[fleet.d]) == "1.0"
    assert firmware(docs[fleet.e]) == "2.0"


def test_group_locks_are_taken_in_one_order(db: Database) -> None:
    """A membership change waits on the group row; deleting the group meanwhile makes it a
    404, not a broken foreign key."""
    static_fleet(db, None)

    def delete(conn: Connection) -> None:
        groups.delete_group(conn, "plant", ACTOR, NOW)

    def add_member(conn: Connection) -> None:
        groups.change_members(conn, "plant", ["D-1"], [], ACTOR, NOW)

    with pytest.raises(LookupError, match="no group named 'plant'"):
        race(db, delete, add_member)
    with db.read() as conn:
        assert conn.execute(select(group_members.c.group_id).distinct()).scalars().all() == [1]


# -- the check-in route: a first contact waits before it writes the device's row -----------


@pytest.fixture(scope="module")
def pg_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("postgresql")
    with shared_fleet("postgresql", directory) as shared:
        yield make_world(shared, directory / "devices")


def test_a_first_check_in_waits_for_a_filter_change_without_deadlock(pg_world: World) -> None:
    """A device's first check-in (no inventory) evaluates dynamic groups; an operator is
    changing a filter that matches it at that moment. The check-in evaluates before it
    writes the device's row, so the operator's recompute of that device does not wait for
    it (before, both waited for each other until PostgreSQL aborted one)."""
    device = pg_world.enroll()
    database = pg_world.fleet.database
    name = pg_world.unique("first").lower()
    with database.write() as conn:
        groups.create_group(
            conn, groups.GroupSpec(name, "dynamic", 'serial == "nobody"'), ACTOR, NOW
        )
    answers: list[int] = []

    def check_in(_conn: Connection) -> None:
        with pg_world.device_client(device) as client:
            answers.append(
                client.post("/device/v1/checkin", json={"agent_version": "0.4.0"}).status_code
            )

    def refilter(conn: Connection) -> None:
        change = groups.GroupUpdate(frozenset({"filter"}), filter=f'serial == "{device.serial}"')
        groups.update_group(conn, name, change, ACTOR, dt.datetime.now(dt.UTC))

    waited = race(
        database,
        lambda c: lock_membership(c, exclusive=True),
        check_in,
        refilter,
        event="advisory",
    )
    assert waited and answers == [200]
    with database.read() as conn:
        device_id = conn.execute(
            select(devices.c.id).where(devices.c.serial == device.serial)
        ).scalar_one()
        assert [g for g, _, _ in groups.groups_of(conn, device_id)] == [name]
        assert stored_directive(conn, device_id) == compute(conn, [device_id])[device_id]
