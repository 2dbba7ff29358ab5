"""Group commit of factory enrollments: enrollments that wait at the same moment share one
transaction, and none of the guarantees of the one-at-a-time path is lost."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from garrison.identity import group_commit
from garrison.store import tables
from garrison.store.audit_log import verify_stored_chain
from tests.server.conftest import SharedFleet
from tests.server.test_hostile_est import (
    EstRequest,
    audit_after,
    honest,
    issued_certificate,
    last_audit_seq,
    row_count,
)


def race(shared: SharedFleet, attempts: list[EstRequest]) -> list[httpx.Response]:
    """Send ``attempts`` at once, each on its own connection."""
    start = threading.Barrier(len(attempts))

    def send(attempt: EstRequest) -> httpx.Response:
        with shared.served.client() as client:
            client.get("/healthz")
            start.wait(timeout=30)
            return attempt.send(client)

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(send, attempts))


def test_concurrent_enrollments_each_issue_once_and_chain(shared: SharedFleet) -> None:
    batch = shared.batch(size=12)
    seq = last_audit_seq(shared.served)
    certificates = row_count(shared.served, tables.certificates)
    attempts = [honest(s, batch.token(s)) for s in batch.serials]
    attempts += [honest(s, batch.token(s)) for s in batch.serials[:4]]  # replays
    responses = race(shared, attempts)
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 12, [r.text for r in responses if r.status_code != 200]
    for response in ok:
        issued_certificate(response)
    refused = [r for r in responses if r.status_code != 200]
    assert [r.status_code for r in refused] == [403] * 4
    assert row_count(shared.served, tables.certificates) == certificates + 12
    new = audit_after(shared.served, seq)
    issued = sorted(r.target for r in new if r.outcome == "ok")
    assert issued == sorted(batch.serials)
    assert [r.action for r in new if r.outcome == "refused"] == ["est.enroll"] * 4
    with shared.served.database.read() as conn:
        verify_stored_chain(conn)


def test_quota_holds_within_one_group(shared: SharedFleet) -> None:
    batch = shared.batch(size=5, quota=2)
    responses = race(shared, [honest(s, batch.token(s)) for s in batch.serials])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 403, 403, 403], [r.text for r in responses]
    assert all("quota exhausted" in r.text for r in responses if r.status_code == 403)
    with shared.served.database.read() as conn:
        verify_stored_chain(conn)


def test_a_conflicting_group_is_rolled_back_and_rerun_one_by_one(
    shared: SharedFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that does not do what the facts promised (as when another process wins a
    race) rolls back the whole group; its enrollments then run one at a time."""
    real = group_commit.GroupCommitter._write
    calls: list[int] = []

    def conflict_once(conn: Any, planned: list[Any], pending: Any, now: Any) -> None:
        calls.append(len(planned))
        if len(calls) == 1:
            real(conn, planned, pending, now)  # the writes happen, then are rolled back
            raise group_commit._Conflict("simulated concurrent writer")
        real(conn, planned, pending, now)

    monkeypatch.setattr(group_commit.GroupCommitter, "_write", staticmethod(conflict_once))
    batch = shared.batch(size=6)
    seq = last_audit_seq(shared.served)
    certificates = row_count(shared.served, tables.certificates)
    responses = race(shared, [honest(s, batch.token(s)) for s in batch.serials])
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert calls and calls[0] >= 1
    assert row_count(shared.served, tables.certificates) == certificates + 6
    new = audit_after(shared.served, seq)
    assert sorted(r.target for r in new if r.outcome == "ok") == sorted(batch.serials)
    with shared.served.database.read() as conn:
        verify_stored_chain(conn)
