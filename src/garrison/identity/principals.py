"""Principals: named holders of an API token and exactly one role."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from garrison.access.roles import Role
from garrison.errors import InvalidRequest, PolicyError
from garrison.factory.tokens import token_digest
from garrison.store.audit_log import append_audit
from garrison.store.database import Database
from garrison.store.tables import principals

API_TOKEN_PREFIX = "gat_"  # noqa: S105 (a public prefix)
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    role: Role


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_principal(conn: Connection, name: str, role: Role, now: dt.datetime) -> str:
    """Create a principal inside the caller's transaction; return its token (shown once)."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            f"principal name {name[:80]!r} is not valid",
            hint="use 1-64 lower-case letters, digits, '.', '_' or '-'",
        )
    token = new_api_token()
    try:
        with conn.begin_nested():
            conn.execute(
                principals.insert().values(
                    name=name,
                    role=role.value,
                    token_digest=token_digest(token),
                    created_at=now,
                    disabled=False,
                )
            )
    except IntegrityError:
        raise PolicyError(f"a principal named {name!r} already exists") from None
    return token


def bootstrap_admin(database: Database, now: dt.datetime) -> str:
    """The first admin principal of a new fleet."""
    with database.write() as conn:
        token = create_principal(conn, "admin", Role.ADMIN, now)
        append_audit(
            conn,
            actor="garrison-init",
            action="principal.create",
            target="admin",
            outcome="ok",
            now=now,
            details={"role": Role.ADMIN.value},
        )
    return token


def authenticate(conn: Connection, token: str) -> Principal | None:
    """The enabled principal holding ``token``, or ``None``."""
    if not token.startswith(API_TOKEN_PREFIX) or len(token) > 128:
        return None
    row = conn.execute(
        select(principals.c.id, principals.c.name, principals.c.role, principals.c.disabled).where(
            principals.c.token_digest == token_digest(token)
        )
    ).first()
    if row is None or row.disabled:
        return None
    return Principal(row.id, row.name, Role(row.role))


def find_principal(conn: Connection, name: str) -> Principal | None:
    row = conn.execute(
        select(principals.c.id, principals.c.name, principals.c.role).where(
            principals.c.name == name
        )
    ).first()
    return None if row is None else Principal(row.id, row.name, Role(row.role))


def disable_principal(conn: Connection, name: str, by: str) -> Role:
    """Disable a principal and return its role: its token stops working on the next
    request. Nobody disables themselves (the last admin could otherwise lock the fleet out)."""
    if name == by:
        raise PolicyError("a principal cannot disable itself")
    role = conn.execute(
        update(principals)
        .where(principals.c.name == name, principals.c.disabled.is_(False))
        .values(disabled=True)
        .returning(principals.c.role)
    ).scalar()
    if role is None:
        if find_principal(conn, name) is None:
            raise LookupError(f"no principal named {name!r}")
        raise PolicyError(f"principal {name!r} is already disabled")
    return Role(role)
