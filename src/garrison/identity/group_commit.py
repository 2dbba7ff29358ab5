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
import json
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, or_, update
from sqlalchemy.exc import DBAPIError

from garrison.access.audit import canonical, chain_hash
from garrison.factory.policy import BatchFacts, TokenFacts, check_serial, decide_enrollment
from garrison.factory.tokens import token_digest
from garrison.identity.certificates import VALID, fingerprint, serial_hex
from garrison.pki.csr import CheckedCsr, check_csr, decode_est_body, require_identity
from garrison.pki.profile import device_uri, issue_device_certificate
from garrison.store.tables import audit_head, audit_log, batches, certificates, devices

if TYPE_CHECKING:
    from garrison.identity.enrollment import EnrollmentService, Issued

MAX_BATCH = 64

_COUNT_ISSUANCES = (
    update(batches)
    .where(
        batches.c.id == bindparam("batch_id"),
        batches.c.closed.is_(False),
        batches.c.expires_at > bindparam("now"),
        or_(batches.c.quota.is_(None), batches.c.issued + bindparam("n") <= batches.c.quota),
    )
    .values(issued=batches.c.issued + bindparam("n"))
)
_ADVANCE_HEAD_BY = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=audit_head.c.seq + bindparam("n"))
    .returning(audit_head.c.seq, audit_head.c.entry_hash)
)
_SET_HEAD_HASH = (
    update(audit_head).where(audit_head.c.id == 1).values(entry_hash=bindparam("entry_hash"))
)
_INSERT_AUDIT = audit_log.insert()
_INSERT_CERTS = certificates.insert()
_INSERT_DEVICES = devices.insert().returning(devices.c.id, sort_by_parameter_order=True)


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


@dataclass
class _Planned:
    job: _Job
    auth_id: int
    batch_id: int
    model: str
    cert: Any
    der: bytes = b""
    cert_serial: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


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
                job.checked = check_csr(decode_est_body(job.body))
                require_identity(job.checked, job.serial, device_uri(job.serial))
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
        from garrison.identity.enrollment import _TOKEN_FACTS, Issued

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
                    _TOKEN_FACTS, {"digest": job.digest, "serial": job.serial}
                ).first()
                if row is not None and row.id in auth_ids:
                    carried.append(job)
                    continue
                serials.add(job.serial)
                digests.add(job.digest)
                facts = None
                if row is not None:
                    issued = row.issued + pending.get(row.batch_id, 0)
                    batch = BatchFacts(row.batch_id, row.expires_at, row.quota, issued, row.closed)
                    facts = TokenFacts(row.id, row.serial, row.used_at is not None, batch)
                try:
                    decide_enrollment(
                        job.serial,
                        facts,
                        row is not None and row.enrolled is not None,
                        now,
                        serial_reserved=row is not None and row.reserved_by not in (None, row.id),
                    )
                except Exception as exc:  # refused: nothing written for this job
                    outcomes.append((job, None, exc))
                    continue
                assert row is not None and job.checked is not None
                try:
                    cert = issue_device_certificate(
                        service._ca, job.checked.public_key, job.serial, service._profile, now
                    )
                except Exception as exc:  # a signing failure fails this job, not the group
                    outcomes.append((job, None, exc))
                    continue
                auth_ids.add(row.id)
                pending[row.batch_id] = pending.get(row.batch_id, 0) + 1
                planned.append(_Planned(job, row.id, row.batch_id, row.model, cert))
            if planned:
                self._write(conn, planned, pending, now)
        for plan in planned:
            outcomes.append((plan.job, Issued(plan.cert, plan.job.serial), None))
        return outcomes, carried

    @staticmethod
    def _write(
        conn: Any, planned: list[_Planned], pending: dict[int, int], now: dt.datetime
    ) -> None:
        from cryptography.hazmat.primitives import serialization

        from garrison.identity.enrollment import _CONSUME_TOKEN

        for plan in planned:
            plan.der = plan.cert.public_bytes(serialization.Encoding.DER)
            plan.cert_serial = serial_hex(plan.cert.serial_number)
        consumed = conn.execute(
            _CONSUME_TOKEN,
            [{"auth_id": p.auth_id, "now": now, "serial": p.job.serial} for p in planned],
        ).rowcount
        if consumed != len(planned):
            raise _Conflict("a token was consumed concurrently")
        device_ids = conn.execute(
            _INSERT_DEVICES,
            [
                {"serial": p.job.serial, "batch_id": p.batch_id, "model": p.model,
                 "status": "active", "enrolled_at": now, "current_cert": p.cert_serial,
                 "retire_pending": False}
                for p in planned
            ],
        ).scalars().all()  # fmt: skip
        if len(device_ids) != len(planned):
            raise _Conflict("device rows not inserted")
        conn.execute(
            _INSERT_CERTS,
            [
                {
                    "serial_hex": p.cert_serial,
                    "device_id": device_id,
                    "fingerprint": fingerprint(p.der),
                    "not_before": p.cert.not_valid_before_utc,
                    "not_after": p.cert.not_valid_after_utc,
                    "issued_at": now,
                    "status": VALID,
                    "der": p.der,
                }
                for p, device_id in zip(planned, device_ids, strict=True)
            ],
        )
        for batch_id, n in pending.items():
            counted = conn.execute(
                _COUNT_ISSUANCES, {"batch_id": batch_id, "now": now, "n": n}
            ).rowcount
            if counted != 1:
                raise _Conflict(f"production batch {batch_id} changed concurrently")
        # The audit head last: read once, written once, the entries chained in memory.
        head = conn.execute(_ADVANCE_HEAD_BY, {"n": len(planned)}).one()
        seq, prev = int(head.seq) - len(planned), str(head.entry_hash)
        at = now.astimezone(dt.UTC).isoformat(timespec="microseconds")
        entries = []
        for plan in planned:
            seq += 1
            actor, target = f"batch:{plan.batch_id}", plan.job.serial[:256]
            details = {"certificate": plan.cert_serial, "via": "est.simpleenroll"}
            entry_hash = chain_hash(
                prev, canonical(seq, at, actor, "cert.issue", target, "ok", details)
            )
            entries.append(
                {"seq": seq, "at": at, "actor": actor, "action": "cert.issue",
                 "target": target, "outcome": "ok",
                 "details": json.dumps(details, sort_keys=True),
                 "prev_hash": prev, "entry_hash": entry_hash}
            )  # fmt: skip
            prev = entry_hash
        conn.execute(_INSERT_AUDIT, entries)
        conn.execute(_SET_HEAD_HASH, {"entry_hash": prev})
