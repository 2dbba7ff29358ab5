"""Appending to and reading the hash-chained audit log."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from garrison.access.audit import AuditRecord, canonical, chain_hash, verify_chain
from garrison.errors import AuditChainBroken
from garrison.store.tables import audit_head, audit_log

_ADVANCE_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=audit_head.c.seq + bindparam("n"))
    .returning(audit_head.c.seq, audit_head.c.entry_hash)
)
_SET_HEAD_HASH = (
    update(audit_head).where(audit_head.c.id == 1).values(entry_hash=bindparam("entry_hash"))
)
_INSERT = audit_log.insert()


@dataclass(frozen=True)
class AuditEntry:
    """One entry to append (its place in the chain is decided when it is appended)."""

    actor: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)


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
    """Append one entry inside the caller's transaction; return its sequence number."""
    entry = AuditEntry(actor, action, target, outcome, details or {})
    return append_audit_many(conn, [entry], now)[0]


def append_audit_many(conn: Connection, entries: list[AuditEntry], now: dt.datetime) -> list[int]:
    """Append ``entries`` in order inside the caller's transaction; return their sequence
    numbers.

    The head row is advanced first, which takes its row lock (PostgreSQL) or the write lock
    (SQLite): concurrent writers, even in other processes, append strictly one after another.
    Several entries cost one head read, one head write and one multi-row insert.
    """
    head = conn.execute(_ADVANCE_HEAD, {"n": len(entries)}).one()
    seq, prev = int(head.seq) - len(entries), str(head.entry_hash)
    at = now.astimezone(dt.UTC).isoformat(timespec="microseconds")
    rows, numbers = [], []
    for entry in entries:
        seq += 1
        # the column widths
        actor, action, target = entry.actor[:128], entry.action[:64], entry.target[:256]
        body = canonical(seq, at, actor, action, target, entry.outcome, entry.details)
        entry_hash = chain_hash(prev, body)
        rows.append(
            {
                "seq": seq,
                "at": at,
                "actor": actor,
                "action": action,
                "target": target,
                "outcome": entry.outcome,
                "details": json.dumps(entry.details, sort_keys=True),
                "prev_hash": prev,
                "entry_hash": entry_hash,
            }
        )
        numbers.append(seq)
        prev = entry_hash
    conn.execute(_INSERT, rows)
    conn.execute(_SET_HEAD_HASH, {"entry_hash": prev})
    return numbers


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
