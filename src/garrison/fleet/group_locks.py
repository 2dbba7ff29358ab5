"""The locks that order changes of group membership against changes of what a group means
(its desired state, priority, window, filter, its existence), on PostgreSQL. SQLite has one
writer at a time, which orders everything already: there these functions only look rows up.

Why: :func:`garrison.fleet.directives.recompute` locks device rows, but a transaction that
changes a group finds the devices to recompute in ``group_members`` *as committed*. A device
that another transaction is adding to the group at that moment would be missed by the one,
and the other would compute its directive from the group's old state. Both therefore meet
on the group's row first: whoever changes the group takes it ``FOR UPDATE``, whoever adds
or removes members takes it ``FOR SHARE`` before writing ``group_members``. The second to
come waits for the first to commit, and then (READ COMMITTED: every statement sees what is
committed when it starts) sees its change.

Dynamic membership has a second race: a filter is evaluated over every device's committed
facts, and one device's facts over every committed filter, so a filter change and an
inventory or tag change committed at the same moment could each miss the other (and a new
dynamic group does not even have a row to lock yet). Evaluating one filter over every
device takes the *membership* lock exclusively, evaluating every filter for one device
takes it shared (plus a lock on that device's evaluation, so two evaluations of one device
are ordered too) — transaction-scoped advisory locks, held in memory, nothing written.

Lock order (every transaction takes what it needs in this order, so none can deadlock):

1. a campaign row (``campaigns``, see :mod:`garrison.fleet.campaigns`);
2. the membership lock, then one device's evaluation lock (:func:`lock_membership`,
   :func:`lock_device_evaluation`);
3. group rows, ascending id (:func:`lock_group`, :func:`lock_groups`);
4. device rows, ascending id (``recompute``: ``FOR NO KEY UPDATE``, which does not wait
   for the key-share locks that inserts referencing a device take — history, inventory,
   memberships, campaign rows — so writing such a row before taking a group lock is fine).

A transaction must not hold a device row lock (a ``recompute`` or an ``UPDATE devices``)
when it asks for a lock of steps 1-3.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select, text

from garrison.store.tables import device_groups

MEMBERSHIP_KEY = 0x6761727269736F6E  # "garrison": one bigint advisory lock
EVALUATION_CLASS = 0x67726F75  # "grou": two-int advisory locks (this class, a device id)
CHUNK = 500


def _postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def lock_membership(conn: Connection, *, exclusive: bool) -> None:
    """Take the dynamic-membership lock for this transaction: ``exclusive`` to evaluate a
    filter over every device (create a dynamic group, change a filter), shared to evaluate
    every filter for devices one at a time."""
    if not _postgresql(conn):
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    conn.execute(text(f"SELECT {function}(CAST(:key AS bigint))"), {"key": MEMBERSHIP_KEY})


def lock_device_evaluation(conn: Connection, device_id: int) -> None:
    """Take the membership lock shared and device ``device_id``'s evaluation lock (one
    statement): the dynamic groups of one device are evaluated by one transaction at a
    time, and never while a filter is evaluated over every device."""
    if not _postgresql(conn):
        return
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock_shared(CAST(:key AS bigint)), "
            "pg_advisory_xact_lock(CAST(:cls AS integer), CAST(:device AS integer))"
        ),
        {"key": MEMBERSHIP_KEY, "cls": EVALUATION_CLASS, "device": device_id},
    )


def lock_groups(conn: Connection, group_ids: Iterable[int], *, shared: bool) -> set[int]:
    """Lock the rows of groups ``group_ids`` in ascending id order (``FOR SHARE`` when
    ``shared``, else ``FOR UPDATE``) and return the ids that exist."""
    ids = sorted(set(group_ids))
    found: set[int] = set()
    for start in range(0, len(ids), CHUNK):
        found.update(
            conn.execute(
                select(device_groups.c.id)
                .where(device_groups.c.id.in_(ids[start : start + CHUNK]))
                .order_by(device_groups.c.id)
                .with_for_update(read=shared)
            ).scalars()
        )
    return found


def lock_group(conn: Connection, name: str, *, shared: bool) -> int:
    """Lock group ``name``'s row (``FOR SHARE`` when ``shared``, else ``FOR UPDATE``) and
    return its id; :class:`LookupError` if there is no such group."""
    found = conn.execute(
        select(device_groups.c.id).where(device_groups.c.name == name).with_for_update(read=shared)
    ).scalar()
    if found is None:
        raise LookupError(f"no group named {name!r}")
    return int(found)
