"""Roles and permissions: the table itself, require() and parse_role()."""

from __future__ import annotations

import itertools

import pytest

from garrison.access.roles import PERMISSIONS, Permission, Role, parse_role, require
from garrison.errors import PolicyError

P = Permission

# The separation of duties, written out independently of the module's table.
EXPECTED: dict[Role, set[Permission]] = {
    Role.ADMIN: {P.PRINCIPALS_MANAGE, P.DEVICES_READ},
    Role.SECURITY_OFFICER: {
        P.BATCHES_MANAGE,
        P.DEVICES_READ,
        P.DEVICES_REVOKE,
        P.DEVICES_ROLLBACK,
        P.PKI_MANAGE,
        P.AUDIT_READ,
    },
    Role.RELEASE_MANAGER: {P.DEVICES_READ, P.RELEASES_MANAGE},
    Role.OPERATOR: {P.DEVICES_READ, P.DEVICES_ROLLBACK, P.FLEET_MANAGE, P.CAMPAIGNS_MANAGE},
    Role.AUDITOR: {P.AUDIT_READ, P.DEVICES_READ},
    Role.MANUFACTURER: {P.BATCHES_READ_OWN},
}

READ_PERMISSIONS = {P.BATCHES_READ_OWN, P.DEVICES_READ, P.AUDIT_READ}
WRITE_PERMISSIONS = set(Permission) - READ_PERMISSIONS


def test_role_and_permission_names() -> None:
    assert [r.value for r in Role] == [
        "admin",
        "security-officer",
        "release-manager",
        "operator",
        "auditor",
        "manufacturer",
    ]
    assert {p.value for p in Permission} == {
        "principals.manage",
        "batches.manage",
        "batches.read-own",
        "devices.read",
        "devices.revoke",
        "audit.read",
        "pki.manage",
        "releases.manage",
        "devices.rollback",
        "fleet.manage",
        "campaigns.manage",
    }
    assert {
        P.PRINCIPALS_MANAGE,
        P.BATCHES_MANAGE,
        P.DEVICES_REVOKE,
        P.PKI_MANAGE,
        P.RELEASES_MANAGE,
        P.DEVICES_ROLLBACK,
        P.FLEET_MANAGE,
        P.CAMPAIGNS_MANAGE,
    } == WRITE_PERMISSIONS


def test_every_role_is_in_the_table() -> None:
    assert set(PERMISSIONS) == set(Role)


@pytest.mark.parametrize("role", list(Role))
def test_permission_set_exact(role: Role) -> None:
    assert set(PERMISSIONS[role]) == EXPECTED[role]
    assert isinstance(PERMISSIONS[role], frozenset)


@pytest.mark.parametrize(
    ("role", "permission"),
    [(role, permission) for role, permission in itertools.product(Role, Permission)],
)
def test_require_matches_table(role: Role, permission: Permission) -> None:
    if permission in EXPECTED[role]:
        require(role, permission)
        return
    with pytest.raises(PolicyError) as info:
        require(role, permission)
    assert info.type is PolicyError
    assert str(info.value) == f"role {role.value!r} may not {permission.value}"


def test_manufacturer_only_reads_own_batches() -> None:
    assert PERMISSIONS[Role.MANUFACTURER] == frozenset({P.BATCHES_READ_OWN})
    for permission in set(Permission) - {P.BATCHES_READ_OWN}:
        with pytest.raises(PolicyError, match="'manufacturer' may not"):
            require(Role.MANUFACTURER, permission)


def test_auditor_changes_nothing() -> None:
    assert PERMISSIONS[Role.AUDITOR] <= READ_PERMISSIONS
    assert not PERMISSIONS[Role.AUDITOR] & WRITE_PERMISSIONS
    require(Role.AUDITOR, P.AUDIT_READ)


def test_duties_are_separated() -> None:
    """Whoever manages principals cannot also manage batches or revoke devices."""
    for role, granted in PERMISSIONS.items():
        if P.PRINCIPALS_MANAGE in granted:
            assert P.BATCHES_MANAGE not in granted, role
            assert P.DEVICES_REVOKE not in granted, role
            assert P.PKI_MANAGE not in granted, role
    holders = {role for role, granted in PERMISSIONS.items() if P.PRINCIPALS_MANAGE in granted}
    assert holders == {Role.ADMIN}


def test_require_message_names_role_and_permission() -> None:
    with pytest.raises(PolicyError) as info:
        require(Role.OPERATOR, P.DEVICES_REVOKE)
    assert "operator" in str(info.value)
    assert "devices.revoke" in str(info.value)


@pytest.mark.parametrize("role", list(Role))
def test_parse_role_accepts_every_name(role: Role) -> None:
    assert parse_role(role.value) is role


@pytest.mark.parametrize(
    "text", ["", "root", "Admin", "ADMIN", " admin", "security_officer", "admin\n"]
)
def test_parse_role_refuses_unknown(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_role(text)
    assert info.type is PolicyError
    assert str(info.value) == f"unknown role {text!r}"
    assert info.value.hint == (
        "valid roles: admin, security-officer, release-manager, operator, auditor, manufacturer"
    )
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
