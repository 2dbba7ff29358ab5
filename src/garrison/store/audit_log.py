"""Appending to and reading the hash-chained audit log."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from garrison.access.audit import AuditRecord, canonical, chain_hash, verify_chain
from garrison.errors import AuditChainBroken
from garrison.store.tables import audit_head, audit_log

_ADVANCE_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=audit_head.c.seq + 1)
    .returning(audit_head.c.seq, audit_head.c.entry_hash)
)
_SET_HEAD_HASH = (
    update(audit_head).where(audit_head.c.id == 1).values(entry_hash=bindparam("entry_hash"))
)
_INSERT = audit_log.insert()


def append_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    now: dt.datetime,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one entry inside the caller's transaction; return its sequence number.

    The head row is updated first, which takes its row lock (PostgreSQL) or the write lock
    (SQLite): concurrent writers, even in other processes, append strictly one after another.
    """
    row = conn.execute(_ADVANCE_HEAD).one()
    seq, prev = int(row.seq), str(row.entry_hash)
    actor, action, target = actor[:128], action[:64], target[:256]  # the column widths
    at = now.astimezone(dt.UTC).isoformat(timespec="microseconds")
    body_details = details or {}
    entry_hash = chain_hash(prev, canonical(seq, at, actor, action, target, outcome, body_details))
    conn.execute(
        _INSERT,
        {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "target": target,
            "outcome": outcome,
            "details": json.dumps(body_details, sort_keys=True),
            "prev_hash": prev,
            "entry_hash": entry_hash,
        },
    )
    conn.execute(_SET_HEAD_HASH, {"entry_hash": entry_hash})
    return seq


def verify_stored_chain(conn: Connection) -> tuple[int, str]:
    """Verify every link, and that the chain ends where the head row says it does (which
    catches entries deleted from the end by someone who did not also rewrite the head)."""
    seq, last = verify_chain(read_audit(conn))
    head = conn.execute(select(audit_head.c.seq, audit_head.c.entry_hash)).one()
    if (int(head.seq), str(head.entry_hash)) != (seq, last):
        raise AuditChainBroken(
            f"the audit log ends at entry {seq}, but its head records entry {head.seq}: "
            "entries were removed from the end"
        )
    return seq, last


def read_audit(
    conn: Connection, *, after: int = 0, limit: int | None = None
) -> Iterator[AuditRecord]:
    """Entries with ``seq > after`` in order."""
    query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)
    if limit is not None:
        query = query.limit(limit)
    for row in conn.execute(query):
        yield AuditRecord(
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            target=row.target,
            outcome=row.outcome,
            details=json.loads(row.details),
            prev_hash=row.prev_hash,
            entry_hash=row.entry_hash,
        )
