"""Group commit for factory enrollment: one writer thread per process takes every
enrollment waiting at that moment and records them in one transaction.

Per enrollment the transaction still reads the facts, decides and signs exactly as the
one-at-a-time path does; what is shared is the BEGIN/COMMIT, the batch counter update (one
per production batch) and the audit head (read once, written once, the entries chained in
memory). Writes are deferred to the end of the batch and sent as multi-row statements.

Correctness:

* A refused job raises before it writes anything, so it never poisons the batch; its
  refusal is audited by the HTTP error boundary, as on the one-at-a-time path.
* Jobs in one batch never share a serial, a token or an authorization: a job that would
  is carried over to the next batch, so every job's facts read sees the writes of every
  earlier job that could affect it.
* Any write that does not do what the facts promised (a token consumed by another process
  meanwhile, a serial enrolled by another process, the quota reached by another process,
  any database error) rolls the whole batch back, and its jobs are re-run one at a time on
  the ordinary path, which refuses precisely whichever of them lost the race.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from garrison.factory.policy import check_serial
from garrison.factory.tokens import token_digest
from garrison.identity.certificates import certificate_row, serial_hex
from garrison.identity.issuance import (
    CONSUME_TOKEN,
    COUNT_ISSUANCES,
    INSERT_DEVICE,
    TOKEN_FACTS,
    FactsRow,
    Issued,
    check_device_csr,
    decide_first_issuance,
    device_row,
    issuance_audit,
)
from garrison.pki.csr import CheckedCsr
from garrison.store.audit_log import append_audit_many
from garrison.store.tables import certificates

if TYPE_CHECKING:
    from garrison.identity.enrollment import EnrollmentService

MAX_BATCH = 64
_INSERT_CERTS = certificates.insert()


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _deliver(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Hand results back to their event loops: one wake-up per loop, not per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for job, result, error in outcomes:
        by_loop.setdefault(job.loop, []).append((job.future, result, error))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, items)


class _Conflict(Exception):
    """A batch write did not do what the facts promised: roll back, go one at a time."""


@dataclass
class _Job:
    serial: str
    token: str
    body: bytes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    digest: str = ""
    checked: CheckedCsr | None = None


@dataclass(frozen=True)
class _Planned:
    job: _Job
    row: FactsRow
    cert: x509.Certificate

    @property
    def cert_serial(self) -> str:
        return serial_hex(self.cert.serial_number)


class GroupCommitter:
    """The writer thread of one :class:`EnrollmentService` (started on first use)."""

    def __init__(self, service: EnrollmentService) -> None:
        self._service = service
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- submitting ------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    # One writer: a second one (tried on PostgreSQL) makes smaller groups
                    # and costs more CPU per enrollment than it gains in overlap.
                    thread = threading.Thread(
                        target=self._run, name="garrison-enroll-writer", daemon=True
                    )
                    thread.start()
                    self._thread = thread

    def submit(self, serial: str, token: str, body: bytes) -> asyncio.Future[Issued]:
        """Queue one token enrollment; the returned future (of the running loop) resolves
        to its :class:`Issued` or raises its refusal."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Issued] = loop.create_future()
        self._ensure_started()
        self._queue.put(_Job(serial, token, body, loop, future))
        return future

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        carried: list[_Job] = []
        while True:
            if carried:
                jobs, carried = carried, []
            else:
                first = self._queue.get()
                if first is None:
                    return
                jobs = [first]
            while len(jobs) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this group
                    break
                jobs.append(job)
            outcomes: list[tuple[_Job, Any, BaseException | None]] = []
            try:
                carried = self._batch(jobs, outcomes)
            except BaseException as exc:  # never let the writer die silently
                done = {id(job) for job, _, _ in outcomes}
                outcomes += [(job, None, exc) for job in jobs if id(job) not in done]
                carried = []
            _deliver(outcomes)

    def _batch(
        self, jobs: list[_Job], delivered: list[tuple[_Job, Any, BaseException | None]]
    ) -> list[_Job]:
        """Record ``jobs`` in one transaction, appending each settled job's outcome to
        ``delivered``; return the jobs carried to the next batch."""
        ready: list[_Job] = []
        for job in jobs:  # checks that need no database, outside the transaction
            try:
                check_serial(job.serial)
                job.checked = check_device_csr(job.body, job.serial)
                job.digest = token_digest(job.token)
            except Exception as exc:
                delivered.append((job, None, exc))
                continue
            ready.append(job)
        if not ready:
            return []
        try:
            outcomes, carried = self._record(ready)
        except (_Conflict, DBAPIError):
            # Rolled back: re-run each on the ordinary path (which refuses the race's losers).
            for job in ready:
                assert job.checked is not None
                try:
                    result: Issued | None = self._service.enroll_checked(
                        job.serial, job.digest, job.checked
                    )
                    delivered.append((job, result, None))
                except Exception as exc:
                    delivered.append((job, None, exc))
            return []
        delivered += outcomes
        return carried

    def _record(
        self, jobs: list[_Job]
    ) -> tuple[list[tuple[_Job, Issued | None, BaseException | None]], list[_Job]]:
        service = self._service
        now = service._clock()
        outcomes: list[tuple[_Job, Issued | None, BaseException | None]] = []
        carried: list[_Job] = []
        planned: list[_Planned] = []
        serials: set[str] = set()
        digests: set[str] = set()
        auth_ids: set[int] = set()
        pending: dict[int, int] = {}  # issuances per production batch in this batch
        with service._db.write() as conn:
            for job in jobs:
                if job.serial in serials or job.digest in digests:
                    carried.append(job)  # shares a serial or token with an earlier job
                    continue
                row = conn.execute(
                    TOKEN_FACTS, {"digest": job.digest, "serial": job.serial}
                ).first()
                if row is not None and row.id in auth_ids:
                    carried.append(job)
                    continue
                serials.add(job.serial)
                digests.add(job.digest)
                try:
                    allowed = decide_first_issuance(
                        job.serial, row, now, pending.get(row.batch_id, 0) if row else 0
                    )
                except Exception as exc:  # refused: nothing written for this job
                    outcomes.append((job, None, exc))
                    continue
                assert job.checked is not None
                try:
                    cert = service._issuer.issue(job.checked.public_key, job.serial, now)
                except Exception as exc:  # a signing failure fails this job, not the group
                    outcomes.append((job, None, exc))
                    continue
                auth_ids.add(allowed.id)
                pending[allowed.batch_id] = pending.get(allowed.batch_id, 0) + 1
                planned.append(_Planned(job, allowed, cert))
            if planned:
                self._write(conn, planned, pending, now)
        for plan in planned:
            outcomes.append((plan.job, Issued(plan.cert, plan.job.serial), None))
        return outcomes, carried

    @staticmethod
    def _write(
        conn: Connection, planned: list[_Planned], pending: dict[int, int], now: dt.datetime
    ) -> None:
        consumed = conn.execute(
            CONSUME_TOKEN,
            [{"auth_id": p.row.id, "now": now, "serial": p.job.serial} for p in planned],
        ).rowcount
        if consumed != len(planned):
            raise _Conflict("a token was consumed concurrently")
        device_ids = (
            conn.execute(
                INSERT_DEVICE,
                [device_row(p.job.serial, p.row, p.cert_serial, now) for p in planned],
            )
            .scalars()
            .all()
        )
        if len(device_ids) != len(planned):
            raise _Conflict("device rows not inserted")
        conn.execute(
            _INSERT_CERTS,
            [
                certificate_row(device_id, p.cert, now)
                for p, device_id in zip(planned, device_ids, strict=True)
            ],
        )
        for batch_id, n in pending.items():
            counted = conn.execute(
                COUNT_ISSUANCES, {"batch_id": batch_id, "now": now, "n": n}
            ).rowcount
            if counted != 1:
                raise _Conflict(f"production batch {batch_id} changed concurrently")
        # The audit head last: read once, written once, the entries chained in memory.
        entries = [
            issuance_audit(p.row.batch_id, p.job.serial, p.cert_serial, "est.simpleenroll")
            for p in planned
        ]
        append_audit_many(conn, entries, now)
