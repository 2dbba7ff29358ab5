"""Roles and the permissions they hold. One table, checked on every admin endpoint.

Roles are separated by duty (BRIEF capability 18): the manufacturer can run factory
enrollment for its own batches and nothing else; the auditor reads and changes nothing.
"""

from __future__ import annotations

from enum import StrEnum

from garrison.errors import PolicyError


class Role(StrEnum):
    ADMIN = "admin"
    SECURITY_OFFICER = "security-officer"
    RELEASE_MANAGER = "release-manager"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    MANUFACTURER = "manufacturer"


class Permission(StrEnum):
    PRINCIPALS_MANAGE = "principals.manage"
    BATCHES_MANAGE = "batches.manage"
    BATCHES_READ_OWN = "batches.read-own"
    DEVICES_READ = "devices.read"
    DEVICES_REVOKE = "devices.revoke"
    AUDIT_READ = "audit.read"
    PKI_MANAGE = "pki.manage"
    RELEASES_MANAGE = "releases.manage"
    DEVICES_ROLLBACK = "devices.rollback"
    FLEET_MANAGE = "fleet.manage"
    CAMPAIGNS_MANAGE = "campaigns.manage"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({Permission.PRINCIPALS_MANAGE, Permission.DEVICES_READ}),
    Role.SECURITY_OFFICER: frozenset(
        {
            Permission.BATCHES_MANAGE,
            Permission.DEVICES_READ,
            Permission.DEVICES_REVOKE,
            Permission.DEVICES_ROLLBACK,
            Permission.PKI_MANAGE,
            Permission.AUDIT_READ,
        }
    ),
    Role.RELEASE_MANAGER: frozenset({Permission.DEVICES_READ, Permission.RELEASES_MANAGE}),
    Role.OPERATOR: frozenset(
        {
            Permission.DEVICES_READ,
            Permission.DEVICES_ROLLBACK,
            Permission.FLEET_MANAGE,
            Permission.CAMPAIGNS_MANAGE,
        }
    ),
    Role.AUDITOR: frozenset({Permission.AUDIT_READ, Permission.DEVICES_READ}),
    Role.MANUFACTURER: frozenset({Permission.BATCHES_READ_OWN}),
}


def parse_role(text: str) -> Role:
    """The role named ``text``, or a :class:`PolicyError` listing the valid names."""
    try:
        return Role(text)
    except ValueError:
        valid = ", ".join(role.value for role in Role)
        raise PolicyError(f"unknown role {text!r}", hint=f"valid roles: {valid}") from None


def require(role: Role, permission: Permission) -> None:
    """Return if ``role`` holds ``permission``; raise :class:`PolicyError` otherwise."""
    if permission not in PERMISSIONS[role]:
        raise PolicyError(f"role {role.value!r} may not {permission.value}")
