"""The fleet-model services on SQLite and PostgreSQL: groups and membership, tags, desired
state, inventory recording and the directive each device gets from all of them (campaign
overlay, update hold, hardware, poll interval, window). Rows are inserted directly where
another part of the system (enrollment, releases, campaigns) would make them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, event, select, update

from garrison.errors import Conflict, InvalidRequest
from garrison.fleet import groups
from garrison.fleet.desired_state import (
    AppSpec,
    DesiredSpec,
    ReleaseRef,
    clear_desired,
    get_desired,
    set_desired,
    set_group_firmware,
)
from garrison.fleet.directives import (
    CAMPAIGN_POLL_SECONDS,
    POLL_SECONDS,
    compute,
    load_directive,
    recompute,
    stored_directive,
)
from garrison.fleet.history import add_history, read_history
from garrison.fleet.inventory import parse_inventory
from garrison.fleet.inventory_store import IdentityMismatch, record_inventory
from garrison.store.database import Database
from garrison.store.tables import (
    audit_log,
    campaign_devices,
    campaigns,
    desired_state,
    device_directives,
    devices,
    group_members,
    releases,
)
from garrison.updates.commands import (
    complete_command,
    pending_command,
    release_hold,
    request_rollback,
)

NOW = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
ACTOR = "principal:otto"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


def add_device(conn: Connection, serial: str, model: str = "gw-1", **values: Any) -> int:
    return int(
        conn.execute(
            devices.insert()
            .values(serial=serial, model=model, status="active", enrolled_at=NOW, **values)
            .returning(devices.c.id)
        ).scalar_one()
    )


def add_release(
    conn: Connection,
    name: str,
    version: str,
    *,
    hardware: tuple[str, ...] = ("gw-1",),
    install: str = "image",
    state: str = "published",
) -> int:
    suffix = "img" if install == "image" else "tar"
    custom = {
        "garrison": {
            "name": name,
            "version": version,
            "hardware": list(hardware),
            "install": install,
            "security_version": 0,
            "health_checks": [],
        }
    }
    return int(
        conn.execute(
            releases.insert()
            .values(
                name=name,
                version=version,
                target_path=f"{name}/{version}/{name}-{version}.{suffix}",
                sha256="0" * 64,
                length=1,
                custom=json.dumps(custom),
                state=state,
                proposal=b"",
                created_by="rm",
                created_at=NOW,
                published_at=NOW if state == "published" else None,
            )
            .returning(releases.c.id)
        ).scalar_one()
    )


def directive(conn: Connection, device_id: int) -> dict[str, Any]:
    return load_directive(conn, device_id, NOW).document


def static(conn: Connection, name: str, *serials: str, priority: int = 0) -> int:
    view = groups.create_group(conn, groups.GroupSpec(name, priority=priority), ACTOR, NOW)
    if serials:
        groups.change_members(conn, name, list(serials), [], ACTOR, NOW)
    return view.id


def inventory(conn: Connection, device_id: int, serial: str, model: str = "gw-1", **f: Any) -> bool:
    doc = {"serial": serial, "hardware": model, **f}
    return record_inventory(conn, device_id, serial, model, parse_inventory(doc, "0.4.0"), NOW)


def members(conn: Connection, group_id: int) -> set[int]:
    return set(
        conn.execute(
            select(group_members.c.device_id).where(group_members.c.group_id == group_id)
        ).scalars()
    )


def test_dynamic_groups_follow_inventory_and_tags(db: Database) -> None:
    with db.write() as conn:
        a, b = add_device(conn, "A"), add_device(conn, "B", "gw-2")
        old = groups.create_group(
            conn,
            groups.GroupSpec("old-fw", "dynamic", 'firmware < "2.0" or tag == "lab"'),
            ACTOR,
            NOW,
        )
        assert old.members == 0  # nobody reported yet
        assert inventory(conn, a, "A", firmware="1.5")
        assert members(conn, old.id) == {a}
        assert not inventory(conn, a, "A", firmware="1.5", uptime_seconds=9)  # unchanged
        inventory(conn, a, "A", firmware="2.1")
        assert members(conn, old.id) == set()
        assert groups.set_tags(conn, "B", ["lab", "lab", "x"], ACTOR, NOW) == ["lab", "x"]
        assert members(conn, old.id) == {b}
        groups.update_group(
            conn,
            "old-fw",
            groups.GroupUpdate(frozenset({"filter"}), filter='model == "gw-1"'),
            ACTOR,
            NOW,
        )
        assert members(conn, old.id) == {a}
        conn.execute(update(devices).where(devices.c.id == a).values(status="revoked"))
        groups.refresh_group(conn, old.id, NOW)
        assert members(conn, old.id) == set()  # revoked devices leave dynamic groups
        history = [e.summary for _, e in read_history(conn, a)]
    assert history == ["firmware 1.5 → 2.1", "first inventory: firmware 1.5, unknown, no apps"]


def test_static_groups_and_their_refusals(db: Database) -> None:
    with db.write() as conn:
        a, b = add_device(conn, "A"), add_device(conn, "B")
        gid = static(conn, "line-3", "A")
        view = groups.change_members(conn, "line-3", ["B", "A"], [], ACTOR, NOW)  # A again: no-op
        assert view.members == 2 and members(conn, gid) == {a, b}
        groups.change_members(conn, "line-3", [], ["A", "A"], ACTOR, NOW)
        assert members(conn, gid) == {b}
        groups.create_group(conn, groups.GroupSpec("dyn", "dynamic", 'model == "gw-1"'), ACTOR, NOW)
    refusals: list[tuple[Any, type[Exception], str]] = [
        (lambda c: static(c, "line-3"), Conflict, "exists already"),
        (lambda c: static(c, "Line 3"), InvalidRequest, "group name 'Line 3' is not valid"),
        (
            lambda c: groups.create_group(c, groups.GroupSpec("g", "smart"), ACTOR, NOW),
            InvalidRequest,
            "kind must be one of static, dynamic",
        ),
        (
            lambda c: groups.create_group(
                c, groups.GroupSpec("g", "dynamic", "model =="), ACTOR, NOW
            ),
            InvalidRequest,
            "filter, position 9",
        ),
        (
            lambda c: groups.create_group(
                c, groups.GroupSpec("g", filter='model == "x"'), ACTOR, NOW
            ),
            InvalidRequest,
            "a static group has no filter",
        ),
        (
            lambda c: groups.create_group(c, groups.GroupSpec("g", priority=10**7), ACTOR, NOW),
            InvalidRequest,
            "priority must be a whole number",
        ),
        (
            lambda c: groups.create_group(
                c, groups.GroupSpec("g", window={"timezone": "Mars/Base"}), ACTOR, NOW
            ),
            InvalidRequest,
            "window",
        ),
        (
            lambda c: groups.change_members(c, "line-3", ["NOPE"], [], ACTOR, NOW),
            LookupError,
            "no device with serial 'NOPE'",
        ),
        (
            lambda c: groups.change_members(c, "line-3", ["A"], ["A"], ACTOR, NOW),
            InvalidRequest,
            "both added and removed",
        ),
        (
            lambda c: groups.change_members(c, "line-3", [], [], ACTOR, NOW),
            InvalidRequest,
            "name serials to add or remove",
        ),
        (
            lambda c: groups.change_members(c, "dyn", ["A"], [], ACTOR, NOW),
            Conflict,
            "is dynamic",
        ),
        (
            lambda c: groups.change_members(c, "nope", ["A"], [], ACTOR, NOW),
            LookupError,
            "no group named 'nope'",
        ),
        (
            lambda c: groups.update_group(
                c, "line-3", groups.GroupUpdate(frozenset({"filter"}), 'model == "x"'), ACTOR, NOW
            ),
            InvalidRequest,
            "is static",
        ),
        (
            lambda c: groups.update_group(c, "line-3", groups.GroupUpdate(frozenset()), ACTOR, NOW),
            InvalidRequest,
            "name at least one",
        ),
        (
            lambda c: groups.update_group(
                c, "line-3", groups.GroupUpdate(frozenset({"priority"}), priority=None), ACTOR, NOW
            ),
            InvalidRequest,
            "priority must be a whole number",
        ),
        (
            lambda c: groups.set_tags(c, "A", ["ok", "not ok"], ACTOR, NOW),
            InvalidRequest,
            "tag 'not ok' is not valid",
        ),
        (
            lambda c: groups.set_tags(c, "A", [f"t{i}" for i in range(33)], ACTOR, NOW),
            InvalidRequest,
            "at most 32 tags",
        ),
        (lambda c: groups.set_tags(c, "NOPE", ["x"], ACTOR, NOW), LookupError, "no device"),
    ]
    with db.read() as conn:
        before = _snapshot(conn)
    for call, error, message in refusals:
        with pytest.raises(error, match=message), db.write() as conn:
            call(conn)
    with db.read() as conn:
        assert _snapshot(conn) == before


def _snapshot(conn: Connection) -> list[Any]:
    from garrison.store import tables

    wanted = (
        "device_groups",
        "group_members",
        "device_tags",
        "desired_state",
        "device_directives",
        "audit_log",
    )
    return [sorted(map(tuple, conn.execute(select(tables.metadata.tables[t])))) for t in wanted]


def test_a_group_with_campaigns_is_not_deleted(db: Database) -> None:
    with db.write() as conn:
        a = add_device(conn, "A")
        gid = static(conn, "line-3", "A")
        fw = add_release(conn, "fw", "2.0")
        set_desired(conn, "group", "line-3", DesiredSpec(ReleaseRef("fw", "2.0")), ACTOR, NOW)
        assert directive(conn, a)["firmware"]["version"] == "2.0"
        cid = _campaign(conn, gid, fw, "paused")
    with pytest.raises(Conflict, match=f"has a paused campaign \\({cid}\\)"), db.write() as conn:
        groups.delete_group(conn, "line-3", ACTOR, NOW)
    with db.write() as conn:
        conn.execute(update(campaigns).values(state="completed"))
    with pytest.raises(Conflict, match="target of 1 campaign"), db.write() as conn:
        groups.delete_group(conn, "line-3", ACTOR, NOW)
    with db.write() as conn:
        static(conn, "spare", "A")
        set_desired(conn, "group", "spare", DesiredSpec(apps=[]), ACTOR, NOW)
        assert directive(conn, a)["apps"] == []
        groups.delete_group(conn, "spare", ACTOR, NOW)
        assert directive(conn, a)["apps"] is None  # its desired state went with it
        with pytest.raises(LookupError):
            get_desired(conn, "group", "spare")


def _campaign(conn: Connection, group_id: int, release_id: int, state: str = "running") -> int:
    return int(
        conn.execute(
            campaigns.insert()
            .values(
                name="c",
                group_id=group_id,
                release_id=release_id,
                plan="{}",
                state=state,
                phase=0,
                revision=0,
                created_by=ACTOR,
                created_at=NOW,
                updated_at=NOW,
            )
            .returning(campaigns.c.id)
        ).scalar_one()
    )


def test_desired_state_validation(db: Database) -> None:
    with db.write() as conn:
        add_device(conn, "A")
        static(conn, "g")
        add_release(conn, "fw", "1.0")
        add_release(conn, "fw", "2.0", state="proposed")
        add_release(conn, "modbus", "1.0", install="app")
    cases: list[tuple[DesiredSpec, str]] = [
        (DesiredSpec(), "must name firmware, apps or both"),
        (DesiredSpec(ReleaseRef("fw", "9.9")), "firmware: no release fw 9.9"),
        (DesiredSpec(ReleaseRef("fw", "2.0")), "fw 2.0 is proposed, not published"),
        (DesiredSpec(ReleaseRef("modbus", "1.0")), "installs as 'app', not 'image'"),
        (DesiredSpec(apps=[AppSpec("fw", "1.0")]), "apps.fw: release fw 1.0 installs as 'image'"),
        (DesiredSpec(apps=[AppSpec("modbus")]), "apps.modbus: name a version, or mark it absent"),
        (
            DesiredSpec(apps=[AppSpec("modbus", "1.0"), AppSpec("modbus", absent=True)]),
            "named twice",
        ),
        (DesiredSpec(apps=[AppSpec("x", "1", absent=True)]), "an absent app has no version"),
        (DesiredSpec(apps=[AppSpec("Bad App", "1")]), "app name 'Bad App' is not valid"),
        (DesiredSpec(apps=[AppSpec(f"a{i}", absent=True) for i in range(65)]), "at most 64 apps"),
        (
            DesiredSpec(apps=[AppSpec("modbus", "1.0", {"blob": "x" * 17_000})]),
            "apps.modbus.config is 17",
        ),
        (DesiredSpec(apps=[AppSpec("modbus", "1.0", ["x"])]), "must be a JSON object"),  # type: ignore[arg-type]
    ]
    with db.read() as conn:
        before = _snapshot(conn)
    for spec, message in cases:
        with pytest.raises(InvalidRequest, match=message), db.write() as conn:
            set_desired(conn, "group", "g", spec, ACTOR, NOW)
    for scope, name in (("group", "nope"), ("device", "NOPE")):
        with pytest.raises(LookupError), db.write() as conn:
            set_desired(conn, scope, name, DesiredSpec(apps=[]), ACTOR, NOW)  # type: ignore[arg-type]
    with pytest.raises(LookupError, match="has no desired state"), db.write() as conn:
        clear_desired(conn, "group", "g", ACTOR, NOW)
    with db.read() as conn:
        assert _snapshot(conn) == before


def test_the_directive_follows_the_conflict_rule_hardware_and_configuration(db: Database) -> None:
    with db.write() as conn:
        a, b = add_device(conn, "A"), add_device(conn, "B", "gw-2")
        add_release(conn, "fw", "1.0", hardware=("gw-1", "gw-2"))
        add_release(conn, "fw", "2.0", hardware=("gw-1",))
        add_release(conn, "modbus", "1.0", install="app", hardware=("gw-1", "gw-2"))
        add_release(conn, "opcua", "3.0", install="app", hardware=("gw-1",))
        static(conn, "all", "A", "B")
        static(conn, "line-3", "A", "B", priority=10)
        window = {
            "timezone": "Europe/Berlin",
            "slots": [{"days": ["sun"], "start": "02:00", "minutes": 60}],
        }
        groups.update_group(
            conn, "all", groups.GroupUpdate(frozenset({"window"}), window=window), ACTOR, NOW
        )
        set_desired(
            conn,
            "group",
            "all",
            DesiredSpec(
                ReleaseRef("fw", "1.0"),
                [AppSpec("modbus", "1.0", {"port": 502}), AppSpec("opcua", "3.0")],
            ),
            ACTOR,
            NOW,
        )
        set_desired(conn, "group", "line-3", DesiredSpec(ReleaseRef("fw", "2.0")), ACTOR, NOW)
        doc_a, doc_b = directive(conn, a), directive(conn, b)
    assert doc_a["firmware"] == {"target": "fw/2.0/fw-2.0.img", "version": "2.0", "campaign": None}
    assert doc_a["apps"] == [
        {
            "name": "modbus",
            "version": "1.0",
            "target": "modbus/1.0/modbus-1.0.tar",
            "config": {"port": 502},
        },
        {"name": "opcua", "version": "3.0", "target": "opcua/3.0/opcua-3.0.tar", "config": None},
    ]
    assert doc_a["window"] == window and doc_a["poll_seconds"] == POLL_SECONDS
    assert doc_a["kept_apps"] == [] and doc_a["command"] is None
    # gw-2: fw 2.0 (line-3 wins) is not built for it, so it stays; opcua is gw-1 only: kept
    # as it is on B (never removed because of it), with the reason.
    assert doc_b["firmware"] is None
    assert [app["name"] for app in doc_b["apps"]] == ["modbus"]
    assert doc_b["kept_apps"] == [
        {"name": "opcua", "reason": "release opcua 3.0 is not built for model gw-2"}
    ]

    with db.write() as conn:  # the device's own entry pins it and overrides apps per name
        spec = DesiredSpec(ReleaseRef("fw", "1.0"), [AppSpec("modbus", absent=True)])
        set_desired(conn, "device", "A", spec, ACTOR, NOW)
        pinned = directive(conn, a)
        clear_desired(conn, "device", "A", ACTOR, NOW)
        assert directive(conn, a) == doc_a
        actions = list(conn.execute(select(audit_log.c.action, audit_log.c.target)))
    assert pinned["firmware"]["version"] == "1.0"
    assert [app["name"] for app in pinned["apps"]] == ["opcua"]
    assert ("desired.set", "device:A") in actions and ("desired.clear", "device:A") in actions


def test_an_app_whose_release_cannot_be_offered_is_kept_not_removed(db: Database) -> None:
    """Fail safe: whatever makes a desired app release unusable for a device (another model,
    no longer published, not an app, another app's release, gone), the app is listed in
    ``kept_apps`` with the reason (the agent leaves it as it is), never silently left out of
    the exhaustive app list (the agent would remove it)."""
    with db.write() as conn:
        a = add_device(conn, "A", "gw-2")
        static(conn, "g", "A")
        ok = add_release(conn, "modbus", "1.0", install="app", hardware=("gw-1", "gw-2"))
        other_model = add_release(conn, "opcua", "3.0", install="app", hardware=("gw-1",))
        later_withdrawn = add_release(conn, "logger", "1.0", install="app", hardware=("gw-2",))
        image = add_release(conn, "fw", "1.0", hardware=("gw-2",))
        set_desired(
            conn,
            "group",
            "g",
            DesiredSpec(
                apps=[AppSpec("modbus", "1.0"), AppSpec("opcua", "3.0"), AppSpec("logger", "1.0")]
            ),
            ACTOR,
            NOW,
        )
        stored = {
            "modbus": {"release": ok, "config": None},
            "opcua": {"release": other_model, "config": None},
            "logger": {"release": later_withdrawn, "config": None},
            "pump": {"release": image, "config": None},  # an image, not an app
            "relay": {"release": ok, "config": None},  # modbus's release under another name
            "ghost": {"release": 987654, "config": None},  # no such release
            "old": None,  # absent: removed, not kept
        }
        conn.execute(
            update(releases).where(releases.c.id == later_withdrawn).values(state="proposed")
        )
        conn.execute(update(desired_state).values(apps=json.dumps(stored)))
        recompute(conn, [a], NOW)
        doc = directive(conn, a)
    assert [app["name"] for app in doc["apps"]] == ["modbus"]
    assert doc["kept_apps"] == [
        {"name": "ghost", "reason": "its desired release is unknown"},
        {"name": "logger", "reason": "release logger 1.0 is not published"},
        {"name": "opcua", "reason": "release opcua 3.0 is not built for model gw-2"},
        {"name": "pump", "reason": "release fw 1.0 is not an app release"},
        {"name": "relay", "reason": "release modbus 1.0 is not a release of app relay"},
    ]


def test_the_oldest_open_command_is_in_the_directive_and_changes_its_etag(db: Database) -> None:
    """Queueing and completing an operator command recompute the directive: its ETag changes
    both times (here the hold changes nothing else: the device has no desired firmware)."""
    with db.write() as conn:
        a = add_device(conn, "A")
        idle = load_directive(conn, a, NOW)
        assert idle.document["command"] is None
        request_rollback(conn, ["A"], None, ACTOR, NOW)
        queued = stored_directive(conn, a)
        command = pending_command(conn, a)
        assert queued is not None and command is not None and queued.etag != idle.etag
        assert queued.document["command"] == {"id": command.id, "action": "rollback"}
        assert queued.document["firmware"] is None
        request_rollback(conn, ["A"], None, ACTOR, NOW)  # one open command at a time
        assert stored_directive(conn, a) == queued

        complete_command(conn, a, "A", command.id, "committed", "1.0 runs", NOW)
        done = stored_directive(conn, a)
        assert done is not None and done.etag != queued.etag
        assert done.document["command"] is None
        assert done.etag == idle.etag  # the command was the only difference
        assert compute(conn, [a])[a] == done


def test_campaign_overlay_hold_and_poll_interval(db: Database) -> None:
    with db.write() as conn:
        a, b = add_device(conn, "A"), add_device(conn, "B")
        gid = static(conn, "fleet", "A", "B")
        old, new = add_release(conn, "fw", "1.0"), add_release(conn, "fw", "2.0")
        set_group_firmware(conn, gid, old, ACTOR, NOW)
        cid = _campaign(conn, gid, new)
        recompute(conn, [a, b], NOW)
        assert directive(conn, a)["poll_seconds"] == CAMPAIGN_POLL_SECONDS
        assert directive(conn, a)["jitter_seconds"] == 5
        assert directive(conn, a)["firmware"]["version"] == "1.0"  # pending: not yet

        seen = {}
        for state in (
            "pending",
            "assigned",
            "downloading",
            "installing",
            "succeeded",
            "failed",
            "rolled-back",
            "excluded",
            "reverting",
            "reverted",
        ):
            conn.execute(campaign_devices.delete())
            conn.execute(
                campaign_devices.insert().values(
                    campaign_id=cid, device_id=a, state=state, updated_at=NOW
                )
            )
            recompute(conn, [a], NOW)
            fw = directive(conn, a)["firmware"]
            seen[state] = None if fw is None else (fw["version"], fw["campaign"])
        assert seen == {
            "pending": ("1.0", None),
            "assigned": ("2.0", cid),
            "downloading": ("2.0", cid),
            "installing": ("2.0", cid),
            "succeeded": ("2.0", cid),
            "failed": ("1.0", None),
            "rolled-back": ("1.0", None),
            "excluded": ("1.0", None),
            "reverting": None,
            "reverted": ("1.0", None),
        }
        conn.execute(campaign_devices.delete())
        conn.execute(
            campaign_devices.insert().values(
                campaign_id=cid, device_id=a, state="assigned", updated_at=NOW
            )
        )
        conn.execute(update(campaigns).values(state="paused"))
        recompute(conn, [a, b], NOW)
        paused = directive(conn, a)
        assert paused["firmware"]["campaign"] == cid and paused["poll_seconds"] == POLL_SECONDS
        conn.execute(update(campaigns).values(state="aborted"))
        recompute(conn, [a], NOW)
        assert directive(conn, a)["firmware"]["campaign"] is None  # aborted: desired state again

        request_rollback(conn, ["A"], None, ACTOR, NOW)
        assert directive(conn, a)["firmware"] is None  # on hold
        assert directive(conn, b)["firmware"]["version"] == "1.0"
        release_hold(conn, "A", ACTOR, NOW)
        assert directive(conn, a)["firmware"]["version"] == "1.0"

        set_group_firmware(conn, gid, new, ACTOR, NOW)  # the campaign completed
        assert directive(conn, b)["firmware"]["version"] == "2.0"
        with pytest.raises(InvalidRequest, match="not a published image"):
            set_group_firmware(conn, gid, 9999, ACTOR, NOW)
        with pytest.raises(LookupError):
            set_group_firmware(conn, 9999, new, ACTOR, NOW)


def test_etags_change_exactly_when_the_body_does(db: Database) -> None:
    with db.write() as conn:
        a = add_device(conn, "A")
        first = load_directive(conn, a, NOW)
        recompute(conn, [a], NOW + dt.timedelta(hours=1))
        computed = conn.execute(select(device_directives.c.computed_at)).scalar_one()
        assert computed == NOW  # unchanged: not rewritten
        add_release(conn, "fw", "1.0")
        set_desired(conn, "device", "A", DesiredSpec(ReleaseRef("fw", "1.0")), ACTOR, NOW)
        second = stored_directive(conn, a)
        assert second is not None and second.etag != first.etag
        assert json.loads(second.body)["etag"] == second.etag
        assert compute(conn, [a])[a] == second  # the same bytes when computed again
        assert compute(conn, [987654]) == {}
        with pytest.raises(LookupError):
            load_directive(conn, 987654, NOW)


def test_recompute_costs_a_constant_number_of_queries(db: Database) -> None:
    with db.write() as conn:
        ids = [add_device(conn, f"N-{i}") for i in range(1200)]
        fw = add_release(conn, "fw", "1.0")
        gid = static(conn, "big")
        conn.execute(group_members.insert(), [{"group_id": gid, "device_id": d} for d in ids])
        conn.execute(
            select(1)  # keep the connection warm before counting
        )
        statements: list[str] = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(conn, "before_cursor_execute", listener)
        set_group_firmware(conn, gid, fw, ACTOR, NOW)
        event.remove(conn, "before_cursor_execute", listener)
        assert len(statements) < 40, len(statements)  # 3 chunks of 500, not 1,200 devices
        count = conn.execute(select(device_directives.c.device_id)).all()
        assert len(count) == 1200
        assert directive(conn, ids[-1])["firmware"]["version"] == "1.0"


def test_history_is_clamped_and_another_identity_is_refused(db: Database) -> None:
    with db.write() as conn:
        a = add_device(conn, "A")
        add_history(conn, a, "identity", "x" * 400, {"big": "y" * 9000}, NOW)
        entry = read_history(conn, a)[0][1]
        assert len(entry.summary) == 300 and entry.details == {"truncated": True, "bytes": 9010}
        with pytest.raises(ValueError, match="unknown history kind"):
            add_history(conn, a, "gossip", "x", {}, NOW)
    for serial, model, message in (
        ("B", "gw-1", "names device 'B'"),
        ("A", "gw-9", "enrolled as 'gw-1'"),
    ):
        with pytest.raises(IdentityMismatch, match=message), db.write() as conn:
            record_inventory(
                conn, a, "A", "gw-1", parse_inventory({"serial": serial, "hardware": model}), NOW
            )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_changes_to_one_device_both_reach_its_directive(db: Database) -> None:
    """Two transactions change different inputs of one device at once (PostgreSQL; SQLite
    has one writer): the second waits for the first's lock on the device, so its directive
    has both changes — neither transaction stores a directive computed from stale state."""
    import threading

    with db.write() as conn:
        a = add_device(conn, "A")
        static(conn, "g", "A")
        add_release(conn, "fw", "1.0")
        add_release(conn, "modbus", "1.0", install="app")
        set_desired(conn, "group", "g", DesiredSpec(ReleaseRef("fw", "1.0")), ACTOR, NOW)
    second_done = threading.Event()

    def hold() -> None:
        with db.write() as conn:
            request_rollback(conn, ["A"], None, ACTOR, NOW)
        second_done.set()

    with db.write() as conn:
        spec = DesiredSpec(ReleaseRef("fw", "1.0"), [AppSpec("modbus", "1.0")])
        set_desired(conn, "group", "g", spec, ACTOR, NOW)
        second = threading.Thread(target=hold)
        second.start()
        assert not second_done.wait(1.0)  # blocked on the device's row
    second.join(30)
    assert second_done.is_set()
    with db.read() as conn:
        found = stored_directive(conn, a)
        assert found is not None
        assert found == compute(conn, [a])[a]
    assert found.document["firmware"] is None  # the hold (second)
    assert [app["name"] for app in found.document["apps"]] == ["modbus"]  # the apps (first)
