"""The campaign service and the scheduler on a real database (SQLite and PostgreSQL), with
an injected clock: create, assign, advance, halt, complete, pause / resume / abort with
rollback, device reports, dynamic membership, and the update level."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from garrison.agent.inventory import build_inventory
from garrison.errors import Conflict, InvalidRequest
from garrison.fleet import campaigns as service
from garrison.fleet import update_level
from garrison.fleet.campaign import TransitionRefused
from garrison.fleet.desired_state import set_group_firmware
from garrison.fleet.inventory import parse_inventory
from garrison.fleet.inventory_store import record_inventory
from garrison.fleet.level import FAILED_LEVEL, NOT_REACHED, ON_TARGET, UPDATING
from garrison.store.audit_log import verify_stored_chain
from garrison.store.tables import (
    desired_state,
    device_commands,
    device_groups,
    device_history,
    devices,
)
from garrison.updates import bootenv
from tests.campaigns.conftest import ACTOR, Site


def plant(site: Site, n: int = 6, **kwargs: object) -> list[int]:
    """``n`` gw-1 devices on 1.0.0 in group ``plant``, and the release fw 2.0.0."""
    ids = site.devices("P", n, **kwargs)
    site.group("plant", ids)
    site.release()
    return ids


def finish(site: Site, campaign: int, ids: list[int], outcome: str = "committed") -> None:
    for device_id in ids:
        site.report(device_id, campaign, "downloading")
        site.report(device_id, campaign, "installing")
        site.report(device_id, campaign, outcome)


# -- create ---------------------------------------------------------------------------


def test_create_takes_the_members_who_can_take_the_release(site: Site) -> None:
    ids = site.devices("P", 3)
    other_model = site.device("Q-1", model="gw-9")
    revoked = site.device("Q-2", status="revoked")
    pinned = site.device("Q-3")
    current = site.device("Q-4", firmware="2.0.0")
    site.group("plant", [*ids, other_model, revoked, pinned, current])
    release = site.release()
    site.pin(pinned, site.release("fw", "1.5.0"))
    campaign = site.create(canary=1)
    assert site.states(campaign) == {
        "P-001": "pending",
        "P-002": "pending",
        "P-003": "pending",
        "Q-1": "excluded",
        "Q-2": "excluded",
        "Q-3": "excluded",
        "Q-4": "succeeded",
    }
    view = site.campaign(campaign)
    assert (view.state, view.phase, view.phase_name, view.devices, view.eligible) == (
        "running",
        0,
        "canary",
        7,
        3,
    )
    assert view.release_id == release
    with site.db.read() as conn:
        progress = service.campaign_progress(conn, campaign)
    details = {d.serial: d.detail for d in progress.devices}
    assert details["Q-1"] == "hardware gw-9 is not in the release's list (gw-1)"
    assert details["Q-2"] == "device is revoked"
    assert details["Q-3"] == "pinned by a device entry"
    assert details["Q-4"] == "already running 2.0.0"
    [entry] = site.audit("campaign.create")
    assert entry["actor"] == ACTOR
    assert entry["release"] == "fw 2.0.0" and entry["devices"] == 7 and entry["eligible"] == 3
    # members poll fast while the campaign runs; nobody has firmware before assignment
    assert site.directive(ids[0])["poll_seconds"] == 30
    assert site.directive(ids[0])["firmware"] is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"group": "nope"}, LookupError, "no group named 'nope'"),
        ({"release": ("fw", "9.9.9")}, LookupError, "no release 'fw' version '9.9.9'"),
        ({"release": ("app", "1.0.0")}, InvalidRequest, "is an app package"),
        ({"release": ("fw", "3.0.0-rc")}, Conflict, "is not published yet"),
        ({"release": ("fw", "4.0.0")}, Conflict, "no active member of group 'plant' has hardware"),
        ({"name": "  "}, InvalidRequest, "a campaign name is 1 to 64 printable characters"),
        ({"name": "x" * 65}, InvalidRequest, "a campaign name is 1 to 64"),
        ({"name": "bad\x00name"}, InvalidRequest, "printable"),
    ],
)
def test_create_refusals_change_nothing(
    site: Site, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    plant(site)
    site.release("app", "1.0.0", install="app")
    site.release("fw", "3.0.0-rc", state="pending")
    site.release("fw", "4.0.0", hardware=("gw-7",))
    before = site.snapshot()
    with pytest.raises(error, match=message):
        site.create(**kwargs)  # type: ignore[arg-type]
    assert site.snapshot() == before


def test_one_active_campaign_per_group(site: Site) -> None:
    plant(site)
    first = site.create()
    site.release("fw", "2.1.0")
    before = site.snapshot()
    with pytest.raises(Conflict, match=f"group 'plant' already has campaign {first} \\(running\\)"):
        site.create(release=("fw", "2.1.0"))
    assert site.snapshot() == before
    with site.db.write() as conn:
        service.pause_campaign(conn, first, ACTOR, site.now)
    with pytest.raises(Conflict, match=r"already has campaign .* \(paused\)"):
        site.create(release=("fw", "2.1.0"))
    with site.db.write() as conn:
        service.abort_campaign(conn, first, False, ACTOR, site.now)
    assert site.create(release=("fw", "2.1.0")) > first


# -- the scheduler --------------------------------------------------------------------


def test_canary_waves_and_completion(site: Site) -> None:
    ids = plant(site, 10)
    campaign = site.create(canary=2, waves=[50, 100], max_per_minute=100)
    report = site.tick()
    assert report.steps[0].assigned == ids[:2]
    assert site.in_state(campaign, "assigned") == ids[:2]
    # the directive now names the release and the campaign
    firmware = site.directive(ids[0])["firmware"]
    assert firmware == {"target": "fw/2.0.0/fw-2.0.0.img", "version": "2.0.0", "campaign": campaign}
    assert site.directive(ids[2])["firmware"] is None
    assert site.tick(1).assigned == 0  # the canary is in progress
    finish(site, campaign, ids[:2])
    step = site.tick(1).steps[0]
    assert (step.phase, step.assigned) == (1, ids[2:5])
    assert step.events == ["wave 1 started (5 of 10 device(s))"]
    finish(site, campaign, ids[2:5])
    assert site.tick(1).steps[0].assigned == ids[5:]
    finish(site, campaign, ids[5:])
    step = site.tick(1).steps[0]
    assert step.state == "completed"
    assert site.campaign(campaign).state == "completed"
    # the release became the group's desired firmware; the campaign's overlay is gone
    with site.db.read() as conn:
        release_id = conn.execute(
            select(desired_state.c.firmware_release_id).where(desired_state.c.scope == "group")
        ).scalar_one()
    assert release_id == site.campaign(campaign).release_id
    firmware = site.directive(ids[0])["firmware"]
    assert firmware == {"target": "fw/2.0.0/fw-2.0.0.img", "version": "2.0.0", "campaign": None}
    assert site.directive(ids[0])["poll_seconds"] == 1800
    actions = [e["event"] for e in site.audit("campaign.phase")]
    assert actions == ["wave 1 started (5 of 10 device(s))", "wave 2 started (10 of 10 device(s))"]
    [done] = site.audit("campaign.complete")
    assert done["actor"] == "system:scheduler" and done["group_firmware"] == "fw 2.0.0"
    with site.db.read() as conn:
        verify_stored_chain(conn)
        history = conn.execute(
            select(device_history.c.summary)
            .where(device_history.c.device_id == ids[0])
            .order_by(device_history.c.id)
        ).scalars()
        assert list(history) == [
            f"campaign {campaign} (canary): assigned 2.0.0",
            f"campaign {campaign}: downloading 2.0.0",
            f"campaign {campaign}: installing 2.0.0",
            f"campaign {campaign}: committed 2.0.0",
        ]


def test_rate_limit_with_the_injected_clock(site: Site) -> None:
    plant(site, 12)
    campaign = site.create(canary="100%", max_per_minute=5)
    assert site.tick().assigned == 5
    assert site.tick(30).assigned == 0
    assert site.tick(29).assigned == 0
    assert site.tick(1).assigned == 5  # a minute after the first five
    assert site.tick(60).assigned == 2
    assert len(site.in_state(campaign, "assigned")) == 12


def test_halt_at_the_first_failure_past_the_threshold(site: Site) -> None:
    ids = plant(site, 10)
    campaign = site.create(canary=4, failure_threshold=1, max_per_minute=100)
    site.tick()
    finish(site, campaign, ids[:1], "failed")
    assert site.tick(1).steps[0].state == "running"
    site.report(ids[1], campaign, "downloading")  # started: will finish
    finish(site, campaign, ids[2:3], "rolled-back")
    step = site.tick(1).steps[0]
    assert step.state == "halted"
    view = site.campaign(campaign)
    assert view.reason == "canary: 2 failed, more than the 1 allowed of 4 device(s)"
    states = site.states(campaign)
    assert states["P-002"] == "downloading"  # started: never cut
    assert states["P-004"] == "pending"  # assigned, not started: back to pending
    [halt] = site.audit("campaign.halt")
    assert halt["actor"] == "system:scheduler"
    assert site.directive(ids[3])["firmware"] is None
    # a halted campaign assigns nobody; the started device still reports
    assert site.tick(120).steps == []
    assert site.report(ids[1], campaign, "committed") == "succeeded"
    # resume after a look: failures seen so far no longer count
    with site.db.write() as conn:
        service.resume_campaign(conn, campaign, ACTOR, site.now)
    step = site.tick(1).steps[0]
    assert step.state == "running" and step.assigned == [ids[3]]


def test_pause_resume_and_commands_that_conflict(site: Site) -> None:
    ids = plant(site, 4)
    campaign = site.create(canary=2)
    site.tick()
    site.report(ids[0], campaign, "downloading")
    with site.db.write() as conn:
        service.pause_campaign(conn, campaign, ACTOR, site.now)
    assert site.states(campaign)["P-001"] == "downloading"
    assert site.states(campaign)["P-002"] == "pending"
    assert site.campaign(campaign).reason == f"paused by {ACTOR}"
    assert site.tick(1).steps == []  # not running: nothing to do
    # a device un-assigned by the pause that had started after all may still report
    assert site.report(ids[1], campaign, "installing") == "installing"
    for act, message in [
        (lambda c: service.pause_campaign(c, campaign, ACTOR, site.now), "only a running"),
    ]:
        before = site.snapshot()
        with site.db.write() as conn, pytest.raises(Conflict, match=message):
            act(conn)
        assert site.snapshot() == before
    with site.db.write() as conn:
        service.resume_campaign(conn, campaign, ACTOR, site.now)
    before = site.snapshot()
    with site.db.write() as conn, pytest.raises(Conflict, match="is running; only a paused"):
        service.resume_campaign(conn, campaign, ACTOR, site.now)
    assert site.snapshot() == before
    with site.db.write() as conn:
        service.abort_campaign(conn, campaign, None, ACTOR, site.now)
    before = site.snapshot()
    for act, message in [
        (lambda c: service.abort_campaign(c, campaign, True, ACTOR, site.now), "is aborted"),
        (lambda c: service.resume_campaign(c, campaign, ACTOR, site.now), "is aborted"),
        (lambda c: service.pause_campaign(c, campaign, ACTOR, site.now), "is aborted"),
    ]:
        with site.db.write() as conn, pytest.raises(Conflict, match=message):
            act(conn)
    with site.db.write() as conn, pytest.raises(LookupError, match="no campaign 999"):
        service.pause_campaign(conn, 999, ACTOR, site.now)
    assert site.snapshot() == before
    actions = [a for a in ("campaign.pause", "campaign.resume", "campaign.abort") if site.audit(a)]
    assert actions == ["campaign.pause", "campaign.resume", "campaign.abort"]


def test_abort_with_rollback_sends_updated_devices_back(site: Site) -> None:
    ids = plant(site, 5)
    campaign = site.create(canary=3, max_per_minute=100)
    site.tick()
    finish(site, campaign, ids[:2])  # two updated
    site.report(ids[2], campaign, "installing")  # one mid-install
    with site.db.write() as conn:
        sent = service.abort_campaign(conn, campaign, True, ACTOR, site.now)
    assert sent == ["P-001", "P-002"]
    states = site.states(campaign)
    assert [states[s] for s in ("P-001", "P-002", "P-003", "P-004")] == [
        "reverting",
        "reverting",
        "installing",
        "pending",
    ]
    with site.db.read() as conn:
        commands = conn.execute(select(device_commands.c.device_id, device_commands.c.action)).all()
        holds = conn.execute(select(devices.c.id).where(devices.c.update_hold.is_(True))).scalars()
        assert sorted(holds) == ids[:2]
    assert sorted(commands) == [(ids[0], "rollback"), (ids[1], "rollback")]
    assert site.directive(ids[0])["firmware"] is None
    [entry] = site.audit("campaign.abort")
    assert entry["rollback"] is True and entry["reverting"] == 2
    assert site.campaign(campaign).plan["rollback_on_abort"] is True
    # the device mid-install commits after the abort: it is sent back too
    assert site.report(ids[2], campaign, "committed") == "reverting"
    # devices carry out the command; the scheduler settles them
    with site.db.write() as conn:
        for device_id, outcome in ((ids[0], "committed"), (ids[1], "refused")):
            conn.execute(
                update(device_commands)
                .where(device_commands.c.device_id == device_id)
                .values(done_at=site.now + dt.timedelta(seconds=5), outcome=outcome, detail="x")
            )
    site.tick(10)
    states = site.states(campaign)
    assert (states["P-001"], states["P-002"], states["P-003"]) == (
        "reverted",
        "failed",
        "reverting",
    )
    with site.db.read() as conn:
        level = {g.group: g for g in update_level.fleet_level(conn)}["plant"]
    assert level.target is None  # the group has no desired firmware and no active campaign


def test_abort_without_rollback_leaves_updated_devices(site: Site) -> None:
    ids = plant(site, 3)
    campaign = site.create(canary=1, rollback_on_abort=True)
    site.tick()
    finish(site, campaign, ids[:1])
    with site.db.write() as conn:
        assert service.abort_campaign(conn, campaign, False, ACTOR, site.now) == []
    assert site.states(campaign)["P-001"] == "succeeded"
    assert site.count(device_commands) == 0
    assert site.campaign(campaign).plan["rollback_on_abort"] is False


# -- device reports -------------------------------------------------------------------


def test_reports_that_do_not_fit_are_refused_and_change_nothing(site: Site) -> None:
    ids = plant(site, 3)
    stranger = site.device("S-1")
    campaign = site.create(canary=1)
    site.tick()
    site.report(ids[0], campaign, "installing")
    before = site.snapshot()
    cases = [
        (stranger, campaign, "downloading", None, Conflict, "S-1 is not in campaign"),
        (ids[0], campaign + 1, "downloading", "fw/2.0.0/fw-2.0.0.img", Conflict, "not in campaign"),
        (ids[0], campaign, "downloading", None, TransitionRefused, "the device is installing"),
        (ids[1], campaign, "downloading", None, TransitionRefused, "the device is pending"),
        (ids[0], campaign, "committed", "fw/9/fw-9.img", Conflict, "rolls out fw/2.0.0"),
        (ids[0], campaign, "bogus", None, InvalidRequest, "state must be one of"),
    ]
    for device_id, campaign_id, state, target, error, message in cases:
        with pytest.raises(error, match=message):
            site.report(device_id, campaign_id, state, target)
    assert site.snapshot() == before
    # a repeated report is accepted and changes nothing
    assert site.report(ids[0], campaign, "installing") == "installing"
    assert site.snapshot() == before


def test_report_outside_a_campaign_goes_to_history(site: Site) -> None:
    [device] = site.devices("H", 1)
    assert site.report(device, None, "committed", "apps/x/1/x-1.tar") is None
    with site.db.read() as conn:
        [(kind, summary)] = conn.execute(
            select(device_history.c.kind, device_history.c.summary)
        ).all()
    assert (kind, summary) == ("update", "apps/x/1/x-1.tar: committed")


# -- membership -----------------------------------------------------------------------


def test_new_group_members_join_a_running_campaign(site: Site) -> None:
    ids = plant(site, 2)
    campaign = site.create(canary=1, waves=[100], max_per_minute=100)
    site.tick()
    finish(site, campaign, ids[:1])
    late = site.device("P-900")
    site.join(1, [late])
    step = site.tick(1).steps[0]
    assert step.assigned == [ids[1], late]


def test_a_pending_member_that_leaves_the_group_is_excluded(site: Site) -> None:
    ids = plant(site, 1)
    campaign = site.create(canary="100%", max_per_minute=1)
    site.tick()
    leaver = site.device("P-901")
    site.join(1, [leaver])
    assert site.tick(1).assigned == 0  # the rate allows one a minute: it waits, pending
    assert site.states(campaign)["P-901"] == "pending"
    site.leave(1, leaver)
    assert site.tick(60).assigned == 0
    assert site.states(campaign)["P-901"] == "excluded"
    assert ids


def test_a_device_in_two_groups_is_held_by_one_campaign(site: Site) -> None:
    ids = plant(site, 2)
    site.group("line-3", [ids[0]])
    site.release("fw", "2.1.0")
    first = site.create(canary="100%")
    second = site.create(group="line-3", release=("fw", "2.1.0"), canary="100%")
    assert site.states(second) == {"P-001": "pending"}
    with site.db.read() as conn:
        [row] = service.campaign_progress(conn, second).devices
    assert row.detail == f"waiting for campaign {first}"
    site.tick()
    assert site.in_state(first, "assigned") == ids
    site.tick(1)
    # the second campaign waits for the device: it neither assigns nor completes
    assert site.states(second) == {"P-001": "pending"}
    assert site.campaign(second).state == "running"
    with site.db.write() as conn:
        service.abort_campaign(conn, first, False, ACTOR, site.now)
    site.tick(1)
    # the first campaign is over (the device back to pending there): the second takes it
    assert site.states(second) == {"P-001": "assigned"}
    assert site.directive(ids[0])["firmware"]["campaign"] == second


def test_the_list_pages_newest_first(site: Site) -> None:
    """At most ``limit`` campaigns, newest first; the next page below the last id; device
    counts for the page's campaigns only; ``active`` = running, paused or halted."""
    site.release()
    made = []
    for n in range(5):
        site.group(f"g{n}", site.devices(f"G{n}", 2))
        made.append(site.create(group=f"g{n}", name=f"c{n}"))
    with site.db.write() as conn:
        service.abort_campaign(conn, made[1], False, ACTOR, site.now)
        service.pause_campaign(conn, made[3], ACTOR, site.now)
    with site.db.read() as conn:

        def ids(**kw: Any) -> list[int]:
            return [v.id for v in service.list_campaigns(conn, **kw)]

        newest_first = made[::-1]
        assert ids() == newest_first
        assert ids(limit=2) == newest_first[:2]
        assert ids(limit=2, before=newest_first[1]) == newest_first[2:4]
        assert ids(limit=2, before=newest_first[3]) == newest_first[4:]
        assert ids(before=made[0]) == []
        assert ids(state="active") == [c for c in newest_first if c != made[1]]
        assert ids(state="aborted") == [made[1]]
        assert ids(state="active", group="g3") == [made[3]]
        page = service.list_campaigns(conn, limit=1)
        assert page[0].devices == 2 and page[0].counts == {"pending": 2}
        bad: list[dict[str, Any]] = [{"limit": 0}, {"limit": 1001}, {"before": 0}]
        for kw in [*bad, {"state": "done"}]:
            with pytest.raises(InvalidRequest):
                service.list_campaigns(conn, **kw)


# -- the update level -----------------------------------------------------------------


def test_fleet_level_is_a_partition_of_each_group(site: Site) -> None:
    ids = plant(site, 6)
    site.group("empty", [])
    campaign = site.create(canary=4, failure_threshold=2, max_per_minute=100)
    site.tick()
    finish(site, campaign, ids[:1])  # succeeded, inventory not yet caught up
    finish(site, campaign, ids[1:2], "rolled-back")
    site.report(ids[2], campaign, "installing")
    site.clock.advance(dt.timedelta(seconds=1))
    site.inventory(ids[3], "2.0.0", slot_state="trying")  # trial boot: updating
    with site.db.read() as conn:
        levels = {g.group: g for g in update_level.fleet_level(conn)}
    level = levels["plant"]
    assert level.target == "2.0.0" and level.campaign == campaign
    assert level.devices == {
        ON_TARGET: ("P-001",),
        UPDATING: ("P-003", "P-004"),
        FAILED_LEVEL: ("P-002",),
        NOT_REACHED: ("P-005", "P-006"),
    }
    assert level.proof()["classified"] == 6
    assert levels["empty"].members == 0 and levels["empty"].target is None


def test_a_device_on_trial_outside_a_campaign_is_updating(site: Site) -> None:
    """The inventory as the agent builds it (boot state ``trial``) and the control plane
    stores it: a device whose new slot is on trial is updating, never not reached."""
    ids = [site.device("P-001", firmware=None), site.device("P-002")]
    group = site.group("plant", ids)
    release = site.release()
    with site.db.write() as conn:
        set_group_firmware(conn, group, release, ACTOR, site.now)
    env = bootenv.factory_env("1.0.0", 1, "a" * 64, 10)
    info = bootenv.SlotInfo.of(b"image", "2.0.0", 1)
    env = bootenv.switch_to(
        bootenv.mark_written(bootenv.begin_write(env, "b", info), "b", info), "b", 3
    )
    inventory = parse_inventory(build_inventory("P-001", "gw-1", env, {}, 60, None))
    with site.db.write() as conn:
        record_inventory(conn, ids[0], "P-001", "gw-1", inventory, site.now)
    with site.db.read() as conn:
        level = {g.group: g for g in update_level.fleet_level(conn)}["plant"]
    assert level.target == "2.0.0" and level.campaign is None
    assert level.devices[UPDATING] == ("P-001",)
    assert level.devices[NOT_REACHED] == ("P-002",)


def test_abort_without_rollback_leaves_updated_devices_where_they_are(site: Site) -> None:
    """The group's desired firmware is still the older release. Devices the aborted
    campaign updated keep the campaign's release (no downgrade as an ordinary update) and
    report to no campaign — until the desired state that applies to them changes after
    the abort; devices it did not reach keep the desired firmware."""
    ids = plant(site, 4)
    old = site.release("fw", "1.5.0")
    with site.db.write() as conn:
        plant_id = conn.execute(
            select(device_groups.c.id).where(device_groups.c.name == "plant")
        ).scalar_one()
        set_group_firmware(conn, plant_id, old, ACTOR, site.now)
    campaign = site.create(canary=1, waves=[100], max_per_minute=100)
    site.tick()
    finish(site, campaign, ids[:1])
    site.tick(1)
    with site.db.write() as conn:
        service.abort_campaign(conn, campaign, False, ACTOR, site.now)
    updated, untouched = site.directive(ids[0])["firmware"], site.directive(ids[1])["firmware"]
    assert updated == {"target": "fw/2.0.0/fw-2.0.0.img", "version": "2.0.0", "campaign": None}
    assert untouched is not None and untouched["version"] == "1.5.0"
    site.clock.advance(dt.timedelta(seconds=5))
    with site.db.write() as conn:  # the operator decides again: that now applies to all
        set_group_firmware(conn, plant_id, old, ACTOR, site.now)
    assert site.directive(ids[0])["firmware"]["version"] == "1.5.0"
