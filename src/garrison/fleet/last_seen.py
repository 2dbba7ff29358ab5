"""Coalesced last-seen recording: a device's poll costs a dictionary write, not a database
write.

Every device request that proves a device is alive (the idle directive poll above all) calls
:meth:`LastSeen.record`. The times are kept in memory per process, newest per device, and a
background thread writes them every ``interval`` seconds in one transaction with one batched
``UPDATE`` (:meth:`LastSeen.flush`).

Guarantees:

* :meth:`LastSeen.record` never touches the database and never waits on I/O: it takes an
  uncontended lock around one dictionary assignment. It starts the flushing thread on its
  first call.
* ``devices.last_seen_at`` is accurate to the flush interval: a recorded time is written
  within ``interval`` seconds (plus the write itself) while the process runs, and by
  :meth:`LastSeen.close`, which the control plane calls when it shuts down. A process that
  is killed (``SIGKILL``, power loss) loses at most the last interval's times.
* ``last_seen_at`` never goes backwards: the ``UPDATE`` only moves it forward, so several
  control-plane processes (each with its own ``LastSeen``) and the check-in, which writes it
  directly, can interleave in any order.
* A flush that fails (the database is unreachable) keeps its times for the next flush,
  merged with newer ones (newest wins); nothing is lost while the process runs.
* Flushes write in device-id order, so concurrent flushes from several processes on
  PostgreSQL take row locks in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import bindparam, or_, update
from sqlalchemy.exc import SQLAlchemyError

from garrison.store.database import Database
from garrison.store.tables import devices

log = logging.getLogger("garrison.fleet.last_seen")

FLUSH_SECONDS = 5.0

_ADVANCE = (
    update(devices)
    .where(
        devices.c.id == bindparam("device_id"),
        or_(devices.c.last_seen_at.is_(None), devices.c.last_seen_at < bindparam("seen_at")),
    )
    .values(last_seen_at=bindparam("seen_at"))
)


class LastSeen:
    """Last-seen times waiting to be written, and the thread that writes them."""

    def __init__(self, database: Database, interval: float = FLUSH_SECONDS) -> None:
        if interval <= 0:
            raise ValueError(f"the flush interval must be positive, not {interval}")
        self.database = database
        self.interval = interval
        self._pending: dict[int, dt.datetime] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time (thread and close())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, device_id: int, at: dt.datetime) -> None:
        """Remember that ``device_id`` was seen at ``at`` (written by the next flush)."""
        with self._lock:
            known = self._pending.get(device_id)
            if known is None or known < at:
                self._pending[device_id] = at
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="garrison-last-seen", daemon=True
                )
                self._thread.start()

    @property
    def pending(self) -> int:
        """How many devices have a time not yet written."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write every pending time now, in one transaction; return how many devices had one.

        On a database error the times are put back (newest wins) and the error is raised.
        """
        with self._flush_lock:
            with self._lock:
                taken, self._pending = self._pending, {}
            if not taken:
                return 0
            rows = [{"device_id": d, "seen_at": taken[d]} for d in sorted(taken)]
            try:
                with self.database.write() as conn:
                    conn.execute(_ADVANCE, rows)
            except BaseException:
                with self._lock:
                    for device_id, at in taken.items():
                        known = self._pending.get(device_id)
                        if known is None or known < at:
                            self._pending[device_id] = at
                raise
            return len(rows)

    def close(self) -> None:
        """Stop the flushing thread and write what is pending. Idempotent; times recorded
        afterwards wait for an explicit :meth:`flush`."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except SQLAlchemyError as exc:
                log.warning("could not write last-seen times (kept for the next try): %s", exc)
