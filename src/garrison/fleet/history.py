"""A device's history: one row per thing that happened to it (``device_history``).

Written inside the caller's transaction, so a history row exists exactly when the change it
describes was committed. Kinds are a closed set, so the console can group and filter them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import Connection, select

from garrison.store.tables import device_history

KINDS = ("inventory", "update", "campaign", "command", "identity")
MAX_SUMMARY = 300
MAX_DETAILS_BYTES = 8 * 1024


@dataclass(frozen=True)
class HistoryEntry:
    at: dt.datetime
    kind: str
    summary: str
    details: dict[str, object]


def add_history(
    conn: Connection,
    device_id: int,
    kind: str,
    summary: str,
    details: dict[str, object],
    now: dt.datetime,
) -> None:
    """Append one history row for ``device_id``.

    ``kind`` must be one of :data:`KINDS` (:class:`ValueError` otherwise: a programming
    error, not a request error). ``summary`` is clamped to 300 characters; ``details`` is
    stored as canonical JSON, replaced by a note when it exceeds 8 KiB.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown history kind {kind!r}; one of {', '.join(KINDS)}")
    text = json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > MAX_DETAILS_BYTES:
        text = json.dumps({"truncated": True, "bytes": len(text)})
    conn.execute(
        device_history.insert().values(
            device_id=device_id, at=now, kind=kind, summary=summary[:MAX_SUMMARY], details=text
        )
    )


def read_history(
    conn: Connection, device_id: int, *, limit: int = 200, before: int | None = None
) -> list[tuple[int, HistoryEntry]]:
    """The newest ``limit`` entries of ``device_id`` (with their ids), newest first;
    ``before`` pages back (entries with a smaller id)."""
    query = select(device_history).where(device_history.c.device_id == device_id)
    if before is not None:
        query = query.where(device_history.c.id < before)
    rows = conn.execute(query.order_by(device_history.c.id.desc()).limit(limit))
    return [
        (row.id, HistoryEntry(row.at, row.kind, row.summary, json.loads(row.details)))
        for row in rows
    ]
