"""Regression tests for races found in review (the reviewer's scripts, made tests):

* a device's ``committed`` report that races an abort with rollback is sent back by the
  scheduler (the abort could not see it);
* two replicas advancing two campaigns never assign one device in both;
* a campaign that refers to a missing release is a clear internal error, never a
  ``LookupError`` (which the HTTP error boundary answers as an audited 404).

The threaded cases need PostgreSQL (row locks, concurrent writers); SQLite has one writer,
where the race cannot happen, and they skip there. The sequential cases run on both."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, select, text, update

from garrison.fleet import campaign_reports
from garrison.fleet import campaigns as service
from garrison.fleet import scheduler as sch
from garrison.fleet.campaigns import CampaignDataMissing, lock_campaign
from garrison.identity.devices import DeviceIdentity
from garrison.store.database import Database
from garrison.store.tables import campaign_devices, campaigns, device_commands, devices
from tests.campaigns.conftest import ACTOR, Site

cd = campaign_devices


def needs_postgresql(site: Site) -> None:
    if site.db.dialect != "postgresql":
        pytest.skip("SQLite has one writer: this race cannot happen there")


def waiting_for_a_lock(db: Database, seconds: float = 5) -> bool:
    """Whether another session of this database waits for a row lock (within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.read() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting:
            return True
        time.sleep(0.05)
    return False


def rollback_commands(site: Site, device_id: int) -> int:
    with site.db.read() as conn:
        return len(
            conn.execute(
                select(device_commands.c.id).where(device_commands.c.device_id == device_id)
            ).all()
        )


# -- a commit racing an abort with rollback -------------------------------------------


def two_updating(site: Site) -> tuple[int, int, int]:
    """Campaign of two devices, both assigned; ``a`` is installing, ``b`` committed."""
    a, b = site.devices("d", 2)
    site.group("plant", [a, b])
    site.release()
    campaign = site.create(canary=2, rollback_on_abort=True)
    site.tick()
    assert site.states(campaign) == {"d-001": "assigned", "d-002": "assigned"}
    site.report(a, campaign, "downloading")
    site.report(a, campaign, "installing")
    site.report(b, campaign, "committed")
    return campaign, a, b


def test_a_commit_racing_an_abort_with_rollback_is_sent_back(site: Site) -> None:
    """The reviewer's race_abort.py: device ``a`` commits in a transaction that read the
    campaign as running; the abort runs meanwhile and does not see ``a`` as succeeded. The
    next tick sends ``a`` back (it stayed on the aborted release forever before)."""
    needs_postgresql(site)
    campaign, a, _ = two_updating(site)
    target = site.target_of(campaign)
    sent: dict[str, list[str]] = {}

    def abort() -> None:
        with site.db.write() as conn:
            sent["back"] = service.abort_campaign(conn, campaign, True, ACTOR, site.now)

    with site.db.write() as conn:  # the report's transaction, still open while the abort runs
        state = campaign_reports.record_report(
            conn,
            DeviceIdentity(a, site.serials[a], "00"),
            campaign_reports.Report(campaign, target, "committed"),
            site.now,
        )
        assert state == "succeeded"  # it read the campaign as running
        aborting = threading.Thread(target=abort)
        aborting.start()
        aborting.join(10)
        assert not aborting.is_alive()  # the race: the abort committed before the report

    assert sent["back"] == ["d-002"]  # the abort could not see a's commit
    assert site.states(campaign) == {"d-001": "succeeded", "d-002": "reverting"}

    step = next(s for s in site.tick(1).steps if s.campaign == campaign)
    assert step.sent_back == ["d-001"]
    assert site.states(campaign) == {"d-001": "reverting", "d-002": "reverting"}
    assert site.directive(a)["firmware"] is None  # reverting: no firmware until reverted
    assert rollback_commands(site, a) == 1
    assert [e["devices"] for e in site.audit("device.rollback")] == [["d-002"], ["d-001"]]


def test_the_scheduler_sends_back_a_late_commit_after_an_abort_with_rollback(
    site: Site,
) -> None:
    """What the race leaves behind, made directly (on both databases): a row ``succeeded``
    with a phase in a campaign aborted with rollback. A tick sends it back, once; a
    campaign aborted without rollback is left alone, and neither stays due afterwards."""
    campaign, a, _ = two_updating(site)
    with site.db.write() as conn:
        assert service.abort_campaign(conn, campaign, True, ACTOR, site.now) == ["d-002"]
    with site.db.write() as conn:  # a's commit lands after the abort
        conn.execute(
            update(cd)
            .where(cd.c.campaign_id == campaign, cd.c.device_id == a)
            .values(state="succeeded")
        )
    with site.db.read() as conn:
        assert campaign in sch.due_campaigns(conn)
    report = site.tick(1)
    assert [s.sent_back for s in report.steps if s.campaign == campaign] == [["d-001"]]
    assert site.states(campaign) == {"d-001": "reverting", "d-002": "reverting"}
    assert site.directive(a)["firmware"] is None
    assert rollback_commands(site, a) == 1
    site.tick(1)
    assert rollback_commands(site, a) == 1  # sent back once

    # once its devices are settled, the aborted campaign is no longer looked at
    with site.db.write() as conn:
        conn.execute(update(cd).where(cd.c.campaign_id == campaign).values(state="reverted"))
    with site.db.read() as conn:
        assert campaign not in sch.due_campaigns(conn)


def test_an_abort_without_rollback_is_not_swept(site: Site) -> None:
    campaign, a, b = two_updating(site)
    with site.db.write() as conn:
        assert service.abort_campaign(conn, campaign, False, ACTOR, site.now) == []
    site.report(a, campaign, "committed")  # a device that had started still reports
    with site.db.read() as conn:
        assert campaign not in sch.due_campaigns(conn)
    site.tick(1)
    assert site.states(campaign) == {"d-001": "succeeded", "d-002": "succeeded"}
    assert rollback_commands(site, a) == rollback_commands(site, b) == 0


def test_a_device_revoked_before_the_sweep_is_left_out(site: Site) -> None:
    campaign, a, _ = two_updating(site)
    with site.db.write() as conn:
        service.abort_campaign(conn, campaign, True, ACTOR, site.now)
        conn.execute(
            update(cd)
            .where(cd.c.campaign_id == campaign, cd.c.device_id == a)
            .values(state="succeeded")
        )
        conn.execute(update(devices).where(devices.c.id == a).values(status="revoked"))
    report = site.tick(1)
    assert report.broken == [] and report.retry == []
    assert [s.sent_back for s in report.steps] == [[]]
    assert site.states(campaign)["d-001"] == "succeeded"
    assert rollback_commands(site, a) == 0


# -- one device, two campaigns --------------------------------------------------------


def two_campaigns(site: Site, second: str) -> tuple[int, int, int]:
    """Groups g1, g2 with a campaign each (fw 2.0.0, then fw ``second``); device d-1
    joins both groups after the campaigns started. Returns (c1, c2, d)."""
    g1, g2 = site.group("g1", []), site.group("g2", [])
    site.release()
    if second != "2.0.0":
        site.release(version=second)
    site.join(g1, [site.device("a-1")])
    site.join(g2, [site.device("b-1")])
    c1 = site.create(group="g1", name="c1", canary="100%")
    c2 = site.create(group="g2", name="c2", canary="100%", release=("fw", second))
    d = site.device("d-1")
    site.join(g1, [d])
    site.join(g2, [d])
    return c1, c2, d


def apply_prepared(site: Site, conn: Connection, campaign_id: int, prepared: Any) -> sch.Step:
    """What a replica's :func:`.scheduler.advance_campaign` does with a prepared step."""
    assert prepared is not None
    row = lock_campaign(conn, campaign_id, skip_locked=True)
    assert row is not None and row.revision == prepared.revision
    step = sch.Step(campaign_id, row.state, row.phase)
    sch.apply_step(conn, row, prepared, step, site.now)
    return step


def places(site: Site, device_id: int) -> dict[int, str]:
    with site.db.read() as conn:
        rows = conn.execute(select(cd.c.campaign_id, cd.c.state).where(cd.c.device_id == device_id))
        return {r.campaign_id: r.state for r in rows}


@pytest.mark.parametrize("second", ["2.0.0", "3.0.0"])
def test_two_replicas_prepared_together_assign_a_device_once(site: Site, second: str) -> None:
    """The reviewer's race_double.py / race_double_downgrade.py: both campaigns decide from
    one read (each replica its own) that d-1 is free, then apply one after the other. Only
    the older campaign assigns it; the other waits for it. Before the fix both assigned it,
    the newer campaign completed with it, and with 3.0.0 the device was later offered
    2.0.0 again (a downgrade)."""
    c1, c2, d = two_campaigns(site, second)
    with site.db.read() as conn:
        p1, p2 = sch.prepare(conn, c1, site.now), sch.prepare(conn, c2, site.now)
    assert p1 is not None and d in p1.decision.assign
    assert p2 is not None and d in p2.decision.assign  # decided from the same read
    with site.db.write() as conn:
        assert d in apply_prepared(site, conn, c1, p1).assigned
    with site.db.write() as conn:
        assert d not in apply_prepared(site, conn, c2, p2).assigned
    assert places(site, d) == {c1: "assigned", c2: "pending"}
    assert site.directive(d)["firmware"]["campaign"] == c1

    site.tick(1)  # c2 now records why d-1 waits
    with site.db.read() as conn:
        detail = conn.execute(
            select(cd.c.detail).where(cd.c.campaign_id == c2, cd.c.device_id == d)
        ).scalar_one()
    assert detail == f"waiting for campaign {c1}"
    for device_id in site.in_state(c2, "assigned"):
        site.report(device_id, c2, "committed")
    site.tick(120)
    assert site.campaign(c2).state == "running"  # it does not complete while d-1 is busy
    for device_id in site.in_state(c1, "assigned"):
        site.report(device_id, c1, "committed")
    site.inventory(d, "2.0.0")
    for _ in range(4):
        site.tick(120)
    assert site.campaign(c1).state == "completed"
    if second == "2.0.0":  # d-1 already runs c2's release
        assert places(site, d) == {c1: "succeeded", c2: "succeeded"}
        assert site.campaign(c2).state == "completed"
    else:  # d-1 is free now: c2 takes it to 3.0.0, never back to 2.0.0
        assert places(site, d) == {c1: "succeeded", c2: "assigned"}
        assert site.directive(d)["firmware"]["version"] == "3.0.0"


def test_concurrent_replicas_assign_a_device_once(site: Site) -> None:
    """Two replicas apply at the same moment, on two connections: the first holds d-1's
    row until it commits; the second waits for it and then sees the assignment."""
    needs_postgresql(site)
    c1, c2, d = two_campaigns(site, "2.0.0")
    with site.db.read() as conn:
        p1, p2 = sch.prepare(conn, c1, site.now), sch.prepare(conn, c2, site.now)
    second: dict[str, Any] = {}

    def replica_two() -> None:
        with site.db.write() as conn:
            second["step"] = apply_prepared(site, conn, c2, p2)

    with site.db.write() as conn:
        first = apply_prepared(site, conn, c1, p1)
        other = threading.Thread(target=replica_two)
        other.start()
        assert waiting_for_a_lock(site.db)  # replica two waits for d-1's row
    other.join(30)
    assert not other.is_alive()
    assert d in first.assigned
    assert d not in second["step"].assigned and second["step"].assigned  # b-1 only
    assert places(site, d) == {c1: "assigned", c2: "pending"}


def test_the_replica_that_locks_first_takes_the_device(site: Site) -> None:
    """The newer campaign's replica holds d-1's row first (d-1 has no row in the older
    campaign yet): it assigns d-1, and the older campaign's replica, waiting for the row,
    then leaves d-1 pending."""
    needs_postgresql(site)
    c1, c2, d = two_campaigns(site, "2.0.0")
    with site.db.read() as conn:
        p1, p2 = sch.prepare(conn, c1, site.now), sch.prepare(conn, c2, site.now)
    first: dict[str, Any] = {}

    def older() -> None:
        with site.db.write() as conn:
            first["step"] = apply_prepared(site, conn, c1, p1)

    with site.db.write() as conn:
        newer = apply_prepared(site, conn, c2, p2)
        other = threading.Thread(target=older)
        other.start()
        assert waiting_for_a_lock(site.db)
    other.join(30)
    assert not other.is_alive()
    assert d in newer.assigned
    assert d not in first["step"].assigned and first["step"].assigned  # a-1 only
    assert places(site, d) == {c1: "pending", c2: "assigned"}


# -- missing rows are internal errors -------------------------------------------------


def damage(db_url: str, statement: Any) -> None:
    """Run ``statement`` past the foreign keys, as a bug could (a plain engine: SQLite
    enforces them only when asked; PostgreSQL skips them for a replication session)."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(statement)
    finally:
        engine.dispose()


def test_a_campaign_whose_release_is_gone_is_an_internal_error(site: Site, db_url: str) -> None:
    ids = site.devices("P", 2)
    site.group("plant", ids)
    site.release()
    broken = site.create(canary=1)
    site.group("other", site.devices("Q", 2))
    healthy = site.create(group="other", name="ok", canary=1)
    damage(db_url, update(campaigns).where(campaigns.c.id == broken).values(release_id=999))
    with site.db.read() as conn, pytest.raises(CampaignDataMissing) as caught:
        sch.prepare(conn, broken, site.now)
    assert not isinstance(caught.value, LookupError)  # never an audited 404
    assert f"campaign {broken}" in str(caught.value)
    report = site.tick(1)
    assert report.broken == [broken]
    assert [s.campaign for s in report.steps] == [healthy]  # the others still advance
    assert len(site.in_state(healthy, "assigned")) == 1
