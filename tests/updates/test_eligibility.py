"""The pure decisions of the update client and the control plane: reading a release's
declaration, hardware match, anti-rollback floor, install type, whether the image already
runs, and when an offline bundle's metadata is judged."""

from __future__ import annotations

import datetime as dt

import pytest

from garrison.updates import bootenv
from garrison.updates.bootenv import DowngradeRefused, SlotInfo
from garrison.updates.bundle import BundleInvalid, bundle_reference_time
from garrison.updates.eligibility import (
    Declaration,
    DeclarationInvalid,
    NotForThisDevice,
    PreviouslyRejected,
    check_eligible,
    check_floor,
    check_hardware,
    check_install_type,
    declaration,
    plan_image,
)

GOOD = {
    "garrison": {
        "name": "fw",
        "version": "1.2.0",
        "hardware": ["gw-2", "gw-3"],
        "security_version": 3,
        "install": "image",
        "health_checks": [["true"], ["systemctl", "is-active", "app"]],
    }
}
DECL = declaration(GOOD)


def test_declaration_is_read_from_the_signed_custom_field() -> None:
    checks = (("true",), ("systemctl", "is-active", "app"))
    assert declaration(GOOD) == Declaration("fw", "1.2.0", ("gw-2", "gw-3"), 3, "image", checks)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "lacks a name"),
        ({"hardware": []}, "hardware must be a list"),
        ({"hardware": "gw-2"}, "hardware must be a list"),
        ({"security_version": True}, "security_version"),
        ({"security_version": -1}, "security_version"),
        ({"install": None}, "install type missing"),
        ({"health_checks": [[]]}, "argv lists"),
        ({"health_checks": ["true"]}, "argv lists"),
    ],
)
def test_malformed_declarations_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(DeclarationInvalid, match=message):
        declaration({"garrison": {**GOOD["garrison"], **change}})


def test_no_declaration_is_refused() -> None:
    for custom in (None, {}, {"garrison": "fw"}):
        with pytest.raises(DeclarationInvalid, match="no garrison release declaration"):
            declaration(custom)


def test_hardware_must_be_named() -> None:
    check_hardware(DECL, "gw-3")
    with pytest.raises(NotForThisDevice, match="for hardware gw-2, gw-3, not this device's gw-9"):
        check_hardware(DECL, "gw-9")
    with pytest.raises(NotForThisDevice, match="no hardware model configured"):
        check_hardware(DECL, "")


def test_security_floor() -> None:
    check_floor(DECL, 3)
    with pytest.raises(DowngradeRefused, match=r"security version 3, below .* floor 4"):
        check_floor(DECL, 4)


def test_install_type_and_all_checks_together() -> None:
    check_install_type(DECL, ("image",))
    with pytest.raises(NotForThisDevice, match=r"installs as 'image'.*takes: app"):
        check_install_type(DECL, ("app",))
    check_eligible(DECL, model="gw-2", floor=0)
    with pytest.raises(NotForThisDevice):
        check_eligible(DECL, model="gw-2", floor=0, supported=())
    with pytest.raises(DowngradeRefused):
        check_eligible(DECL, model="gw-2", floor=9)


def test_plan_image() -> None:
    env = bootenv.factory_env("1.0", 1, "a" * 64, 10)
    assert plan_image(env, "a" * 64) == "current"
    assert plan_image(env, "b" * 64) == "install"
    env = bootenv.begin_write(env, "b", SlotInfo("2.0", 1, "b" * 64, 10))
    env = bootenv.mark_written(env, "b", SlotInfo("2.0", 1, "b" * 64, 10))
    env = bootenv.switch_to(env, "b", 1)
    assert plan_image(env, "a" * 64) == "install"  # a trial is pending: not simply "current"
    env = bootenv.reject(env, "unhealthy")
    with pytest.raises(PreviouslyRejected, match=r"version 2\.0 was rejected"):
        plan_image(env, "b" * 64)


def test_bundle_reference_time() -> None:
    expires = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    before = expires - dt.timedelta(hours=1)
    assert bundle_reference_time(before, expires) == before
    judged = bundle_reference_time(expires + dt.timedelta(days=3), expires)
    assert judged == expires - dt.timedelta(seconds=1)
    with pytest.raises(BundleInvalid, match="more than 30 days ago"):
        bundle_reference_time(expires + dt.timedelta(days=31), expires)
