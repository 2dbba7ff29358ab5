"""The convergence plan (pure): every rule of garrison.agent.converge, with a fixed clock."""

from __future__ import annotations

import datetime as dt

import pytest

from garrison.agent.converge import (
    AppFacts,
    ConfigureApp,
    DownloadApp,
    DownloadFirmware,
    Facts,
    Failure,
    Hold,
    InstallApp,
    InstallFirmware,
    RemoveApp,
    WaitForWindow,
    changes,
    plan,
    wait_for_window,
)
from garrison.agent.directive import NO_DIRECTIVE, AppEntry, Directive, FirmwareEntry, KeptApp
from garrison.agent.executor import detail_of
from garrison.fleet.windows import parse_window
from garrison.updates.apps import config_digest

# Friday 2026-11-20 12:00 UTC; the window below opens on Sundays at 02:00 Berlin (01:00 UTC)
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
SUNDAY_NIGHT = parse_window(
    {"timezone": "Europe/Berlin", "slots": [{"days": ["sun"], "start": "02:00", "minutes": 120}]}
)
OPENS = dt.datetime(2026, 11, 22, 1, 0, tzinfo=dt.UTC)
FW = FirmwareEntry("firmware/gw-2.1.0.img", "2.1.0", 3)
PUMP = AppEntry("pump", "1.3.0", "apps/pump-1.3.0.tar", {"port": 502})
LOGGER = AppEntry("logger", "0.9", "apps/logger-0.9.tar", None)


def directive(**fields: object) -> Directive:
    base: dict[str, object] = {
        "etag": "e1",
        "firmware": None,
        "apps": None,
        "window": None,
        "poll_seconds": 1800,
        "jitter_seconds": 180,
    }
    base.update(fields)
    return Directive(**base)  # type: ignore[arg-type]


def facts(**fields: object) -> Facts:
    base: dict[str, object] = {"firmware": "2.0.0"}
    base.update(fields)
    return Facts(**base)  # type: ignore[arg-type]


def failure(target: str, campaign: int | None, outcome: str = "rolled-back") -> Failure:
    return Failure(target, campaign, "2.1.0", outcome, "health check failed", NOW)


def test_no_directive_is_an_empty_plan() -> None:
    result = plan(NO_DIRECTIVE, facts(apps={"pump": AppFacts("1.0")}), NOW)
    assert result.steps == () and result.idle
    assert result.describe() == ["up to date: nothing to do"]


def test_firmware_is_downloaded_then_installed_when_the_window_is_open() -> None:
    result = plan(directive(firmware=FW), facts(), NOW)
    assert result.steps == (DownloadFirmware(FW), InstallFirmware(FW))
    assert not result.idle
    assert result.describe()[1] == (
        "install firmware 2.1.0 for campaign 3 (A/B: boot, health checks, commit)"
    )


def test_a_held_download_is_not_fetched_again() -> None:
    result = plan(directive(firmware=FW), facts(downloaded=frozenset({FW.target})), NOW)
    assert result.steps == (InstallFirmware(FW),)


def test_the_running_firmware_needs_nothing() -> None:
    assert plan(directive(firmware=FW), facts(firmware="2.1.0"), NOW).steps == ()


def test_an_older_firmware_is_installed_too() -> None:
    back = FirmwareEntry("firmware/gw-2.0.0.img", "2.0.0", None)
    assert plan(directive(firmware=back), facts(firmware="2.1.0"), NOW).steps == (
        DownloadFirmware(back),
        InstallFirmware(back),
    )


def test_outside_the_window_the_firmware_is_downloaded_only() -> None:
    result = plan(directive(firmware=FW, window=SUNDAY_NIGHT), facts(), NOW)
    assert result.steps == (
        DownloadFirmware(FW),
        WaitForWindow(OPENS, "Europe/Berlin", ("firmware 2.1.0",)),
    )
    assert result.describe()[-1] == (
        "waiting for maintenance window (opens Sun 2026-11-22 02:00 Europe/Berlin): firmware 2.1.0"
    )


def test_outside_the_window_with_the_download_held_only_waits() -> None:
    held = facts(downloaded=frozenset({FW.target}))
    result = plan(directive(firmware=FW, window=SUNDAY_NIGHT), held, NOW)
    assert result.steps == (WaitForWindow(OPENS, "Europe/Berlin", ("firmware 2.1.0",)),)
    assert not result.idle


@pytest.mark.parametrize(
    ("now", "open_"),
    [
        (OPENS - dt.timedelta(seconds=1), False),
        (OPENS, True),
        (OPENS + dt.timedelta(minutes=119), True),
        (OPENS + dt.timedelta(minutes=120), False),
    ],
)
def test_the_window_edges(now: dt.datetime, open_: bool) -> None:
    held = facts(downloaded=frozenset({FW.target}))
    steps = plan(directive(firmware=FW, window=SUNDAY_NIGHT), held, now).steps
    assert (steps == (InstallFirmware(FW),)) is open_


def test_a_window_with_nothing_to_install_does_not_wait() -> None:
    assert plan(directive(window=SUNDAY_NIGHT), facts(), NOW).steps == ()


def test_a_target_that_rolled_back_here_is_held_not_retried() -> None:
    before = failure(FW.target, FW.campaign)
    result = plan(directive(firmware=FW), facts(failures=(before,)), NOW)
    assert result.steps == (Hold(before, FW.campaign),)
    assert result.idle  # nothing to do until the directive changes
    assert "not retrying firmware/gw-2.1.0.img: rolled-back here" in result.describe()[0]


@pytest.mark.parametrize(
    "again",
    [
        FirmwareEntry(FW.target, FW.version, 4),  # a new campaign
        FirmwareEntry(FW.target, FW.version, None),  # desired state alone
    ],
)
def test_the_same_target_named_again_is_held_with_the_new_campaign(again: FirmwareEntry) -> None:
    before = failure(FW.target, FW.campaign)
    result = plan(directive(firmware=again), facts(failures=(before,)), NOW)
    assert result.steps == (Hold(before, again.campaign),)


def test_another_target_is_tried() -> None:
    before = failure(FW.target, FW.campaign)
    fixed = FirmwareEntry("firmware/gw-2.1.1.img", "2.1.1", 3)
    result = plan(directive(firmware=fixed), facts(failures=(before,)), NOW)
    assert result.steps == (DownloadFirmware(fixed), InstallFirmware(fixed))


def test_a_failure_does_not_matter_once_the_version_runs() -> None:
    before = failure(FW.target, FW.campaign)
    assert (
        plan(directive(firmware=FW), facts(firmware="2.1.0", failures=(before,)), NOW).steps == ()
    )


def test_unmanaged_apps_are_left_alone() -> None:
    installed = {"pump": AppFacts("1.0"), "extra": AppFacts("3")}
    assert plan(directive(apps=None), facts(apps=installed), NOW).steps == ()


def test_an_empty_app_list_removes_every_app() -> None:
    installed = {"pump": AppFacts("1.0"), "extra": AppFacts(None, "c" * 64)}
    result = plan(directive(apps=()), facts(apps=installed), NOW)
    assert result.steps == (RemoveApp("extra", None), RemoveApp("pump", "1.0"))
    assert result.describe() == ["remove app extra", "remove app pump 1.0"]


def test_a_kept_app_is_left_exactly_as_it_is() -> None:
    """Kept (its release cannot be offered here): not removed, not installed, not configured;
    the other managed apps converge as usual, in or out of the window."""
    kept = (KeptApp("pump", "release pump 1.3.0 is not built for model gw-2"),)
    installed = {"pump": AppFacts("1.0", "c" * 64), "extra": AppFacts("3")}
    result = plan(directive(apps=(LOGGER,), kept_apps=kept), facts(apps=installed), NOW)
    assert result.steps == (
        RemoveApp("extra", "3"),
        DownloadApp("logger", "0.9", LOGGER.target),
        InstallApp("logger", "0.9", LOGGER.target),
    )
    assert plan(directive(apps=(), kept_apps=kept), facts(), NOW).steps == ()  # not installed
    closed = directive(apps=(), kept_apps=kept, window=SUNDAY_NIGHT)
    assert plan(closed, facts(apps={"pump": AppFacts("1.0")}), NOW).steps == ()


def test_a_missing_app_is_downloaded_installed_and_configured() -> None:
    result = plan(directive(apps=(LOGGER, PUMP)), facts(), NOW)
    assert result.steps == (
        DownloadApp("logger", "0.9", LOGGER.target),
        InstallApp("logger", "0.9", LOGGER.target),
        DownloadApp("pump", "1.3.0", PUMP.target),
        InstallApp("pump", "1.3.0", PUMP.target),
        ConfigureApp("pump", {"port": 502}),
    )


def test_an_app_in_another_version_is_replaced() -> None:
    installed = {"pump": AppFacts("1.2.0", config_digest({"port": 502}))}
    result = plan(directive(apps=(PUMP,)), facts(apps=installed), NOW)
    assert result.steps == (  # the configuration is kept across versions
        DownloadApp("pump", "1.3.0", PUMP.target),
        InstallApp("pump", "1.3.0", PUMP.target),
    )


def test_only_the_configuration_changes() -> None:
    installed = {"pump": AppFacts("1.3.0", config_digest({"port": 503}))}
    assert plan(directive(apps=(PUMP,)), facts(apps=installed), NOW).steps == (
        ConfigureApp("pump", {"port": 502}),
    )


def test_a_configuration_no_longer_wanted_is_cleared() -> None:
    installed = {"logger": AppFacts("0.9", config_digest({"level": 1}))}
    result = plan(directive(apps=(LOGGER,)), facts(apps=installed), NOW)
    assert result.steps == (ConfigureApp("logger", None),)
    assert result.describe() == ["clear app logger config"]


def test_apps_that_match_need_nothing() -> None:
    installed = {
        "pump": AppFacts("1.3.0", config_digest({"port": 502})),
        "logger": AppFacts("0.9", None),
    }
    assert plan(directive(apps=(LOGGER, PUMP)), facts(apps=installed), NOW).steps == ()


def test_an_app_that_failed_here_is_held_and_not_configured() -> None:
    before = failure(PUMP.target, None, "failed")
    result = plan(directive(apps=(PUMP,)), facts(failures=(before,)), NOW)
    assert result.steps == (Hold(before),)


def test_outside_the_window_apps_download_and_every_change_waits() -> None:
    installed = {
        "old": AppFacts("1"),
        "logger": AppFacts("0.9", config_digest({"level": 1})),
    }
    result = plan(directive(apps=(LOGGER, PUMP), window=SUNDAY_NIGHT), facts(apps=installed), NOW)
    assert result.steps == (
        DownloadApp("pump", "1.3.0", PUMP.target),
        WaitForWindow(
            OPENS,
            "Europe/Berlin",
            ("removing app old", "configuring app logger", "app pump 1.3.0"),
        ),
    )


def test_the_order_is_firmware_then_removals_then_installs() -> None:
    installed = {"old": AppFacts("1")}
    result = plan(directive(firmware=FW, apps=(PUMP,)), facts(apps=installed), NOW)
    assert [type(s).__name__ for s in result.steps] == [
        "DownloadFirmware",
        "InstallFirmware",
        "RemoveApp",
        "DownloadApp",
        "InstallApp",
        "ConfigureApp",
    ]


def test_the_plan_is_deterministic() -> None:
    installed = {"b": AppFacts("1"), "a": AppFacts("1"), "c": AppFacts("2")}
    d = directive(firmware=FW, apps=(LOGGER, PUMP), window=SUNDAY_NIGHT)
    first = plan(d, facts(apps=installed), NOW)
    assert all(
        plan(d, facts(apps=dict(reversed(installed.items()))), NOW) == first for _ in range(3)
    )


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        plan(NO_DIRECTIVE, facts(), NOW.replace(tzinfo=None))


def test_the_plan_keeps_its_window_and_names_what_waits_when_it_closed() -> None:
    """The executor asks :attr:`Plan.window` again before each change; what is left then
    waits, named as the plan names waiting changes."""
    open_ = OPENS + dt.timedelta(minutes=30)
    installed = {"old": AppFacts("1")}
    made = plan(
        directive(firmware=FW, apps=(PUMP,), window=SUNDAY_NIGHT), facts(apps=installed), open_
    )
    assert made.window == SUNDAY_NIGHT and not any(isinstance(s, WaitForWindow) for s in made.steps)
    assert [changes(s) for s in made.steps] == [False, True, True, False, True, True]
    closed = OPENS + dt.timedelta(hours=2)
    wait = wait_for_window(SUNDAY_NIGHT, made.steps[1:], closed)
    assert wait == WaitForWindow(
        OPENS + dt.timedelta(days=7),
        "Europe/Berlin",
        ("firmware 2.1.0", "removing app old", "app pump 1.3.0", "configuring app pump"),
    )
    assert plan(directive(firmware=FW), facts(), NOW).window is None


def test_an_install_detail_names_the_health_reason_once() -> None:
    assert detail_of("rejected: false: exit status 1", "false: exit status 1") == (
        "rejected: false: exit status 1"
    )
    assert detail_of("rolled-back: app pump 1.1 unhealthy; 1.0 runs again", "false: exit 1") == (
        "rolled-back: app pump 1.1 unhealthy; 1.0 runs again (health: false: exit 1)"
    )
    assert detail_of("app pump 1.1 installed", "") == "app pump 1.1 installed"
