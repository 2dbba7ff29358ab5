"""Keeping the TUF repository in the database: every version of every role's metadata,
as the exact signed bytes that clients download."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, func, select
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from garrison.errors import ConfigError
from garrison.store.tables import tuf_metadata
from garrison.updates.repository import RELEASES, Repository

ROLES = ("root", "targets", "snapshot", "timestamp", RELEASES)


def _latest(conn: Connection, role: str) -> bytes | None:
    newest = (
        select(func.max(tuf_metadata.c.version))
        .where(tuf_metadata.c.role == role)
        .scalar_subquery()
    )
    row = conn.execute(
        select(tuf_metadata.c.data).where(
            tuf_metadata.c.role == role, tuf_metadata.c.version == newest
        )
    ).first()
    return None if row is None else bytes(row.data)


def _require(found: dict[str, bytes | None], roles: tuple[str, ...]) -> None:
    missing = [role for role in roles if found[role] is None]
    if missing:
        raise ConfigError(
            f"the update repository has no {', '.join(missing)} metadata",
            hint="this fleet predates the update repository: run 'garrison tuf init'",
        )


def load_repository(conn: Connection) -> Repository:
    """The newest metadata of every role."""
    found = {role: _latest(conn, role) for role in ROLES}
    _require(found, ROLES[:4])
    releases = found[RELEASES]
    return Repository(
        Metadata[Root].from_bytes(found["root"]),  # type: ignore[arg-type]
        Metadata[Targets].from_bytes(found["targets"]),  # type: ignore[arg-type]
        Metadata[Snapshot].from_bytes(found["snapshot"]),  # type: ignore[arg-type]
        Metadata[Timestamp].from_bytes(found["timestamp"]),  # type: ignore[arg-type]
        None if releases is None else Metadata[Targets].from_bytes(releases),
    )


def load_online(conn: Connection) -> tuple[Metadata[Snapshot], Metadata[Timestamp]]:
    """The newest snapshot and timestamp only: all it takes to see whether the online roles
    are due for re-signing, without reading the other roles."""
    found = {role: _latest(conn, role) for role in ("snapshot", "timestamp")}
    _require(found, ("snapshot", "timestamp"))
    return (
        Metadata[Snapshot].from_bytes(found["snapshot"]),  # type: ignore[arg-type]
        Metadata[Timestamp].from_bytes(found["timestamp"]),  # type: ignore[arg-type]
    )


def save_repository(
    conn: Connection, before: Repository | None, after: Repository, now: dt.datetime
) -> None:
    """Store every role whose version changed between ``before`` and ``after``."""
    for role in ROLES:
        new: Metadata | None = getattr(after, role)  # type: ignore[type-arg]
        old: Metadata | None = None if before is None else getattr(before, role)  # type: ignore[type-arg]
        if new is None or (old is not None and old.signed.version == new.signed.version):
            continue
        conn.execute(
            tuf_metadata.insert().values(
                role=role, version=new.signed.version, data=new.to_bytes(), created_at=now
            )
        )


def metadata_file(conn: Connection, role: str, version: int | None) -> bytes | None:
    """The stored bytes of ``role`` at ``version`` (``None``: the newest)."""
    if version is None:
        return _latest(conn, role)
    row = conn.execute(
        select(tuf_metadata.c.data).where(
            tuf_metadata.c.role == role, tuf_metadata.c.version == version
        )
    ).first()
    return None if row is None else bytes(row.data)
