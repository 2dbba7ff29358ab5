"""The audit log's hash chain: each entry commits to its content and to the entry before.

``entry_hash = SHA-256(prev_hash || canonical JSON of the entry)``. Changing, removing or
inserting any entry breaks every later link; removing entries from the end is caught by
comparing the head (sequence number and hash) with a copy kept elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from garrison.errors import AuditChainBroken

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    """One audit log entry as stored."""

    seq: int
    at: str
    actor: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str


def canonical(
    seq: int, at: str, actor: str, action: str, target: str, outcome: str, details: dict[str, Any]
) -> bytes:
    """The exact bytes hashed for an entry: sorted-key compact JSON."""
    body = {
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "details": details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def chain_hash(prev_hash: str, body: bytes) -> str:
    """The hash of an entry whose canonical bytes are ``body``, following ``prev_hash``."""
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def verify_chain(records: Iterable[AuditRecord]) -> tuple[int, str]:
    """Check every link; return the head ``(seq, hash)`` or raise :class:`AuditChainBroken`."""
    expected_seq, prev = 1, GENESIS_HASH
    for record in records:
        if record.seq != expected_seq:
            raise AuditChainBroken(
                f"audit entry {expected_seq} is missing (next entry found is {record.seq})"
            )
        if record.prev_hash != prev:
            raise AuditChainBroken(
                f"audit entry {record.seq} does not link to entry {record.seq - 1}"
            )
        body = canonical(
            record.seq,
            record.at,
            record.actor,
            record.action,
            record.target,
            record.outcome,
            record.details,
        )
        if chain_hash(prev, body) != record.entry_hash:
            raise AuditChainBroken(f"audit entry {record.seq} was modified after it was written")
        prev = record.entry_hash
        expected_seq += 1
    return expected_seq - 1, prev
