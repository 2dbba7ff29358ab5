"""The admin API under access control: authentication, the role matrix of
``garrison.access.roles`` on every endpoint, input validation, and the audit chain.

Refusals are held to the same bar as in ``test_hostile_est``: a precise 4xx and message, a
``refused`` audit entry, and no state change (:func:`assert_refused`). Most cases share one
served fleet per backend; the tests that tamper with the audit log get a fleet of their own.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from garrison.access.audit import verify_chain
from garrison.access.roles import PERMISSIONS, Permission, Role
from garrison.errors import AuditChainBroken
from garrison.server.app import MAX_BODY_BYTES
from garrison.store import tables
from garrison.store.audit_log import read_audit
from tests.conftest import Officer, RunningFleet, create_batch
from tests.server.conftest import SharedFleet
from tests.server.test_hostile_est import (
    assert_refused,
    audit_after,
    enroll,
    last_audit_seq,
)

BATCH = {"name": "access batch", "manufacturer": "acme", "model": "gw-1"}


def api_client(served: RunningFleet, authorization: str | None) -> httpx.Client:
    """An admin API client sending exactly ``authorization`` (or no such header)."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    return httpx.Client(
        base_url=served.url + "/api/v1",
        verify=ssl.create_default_context(cafile=str(served.root_ca)),
        headers=headers,
        timeout=30,
    )


# -- the endpoints and who may call them ------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One admin route; ``prepare`` returns the concrete path and JSON body for one call."""

    name: str
    method: str
    needs: frozenset[Permission]  # any one of these; empty: any authenticated principal
    prepare: Callable[[SharedFleet], tuple[str, dict[str, Any] | None]]

    def caller(self, shared: SharedFleet, client: httpx.Client) -> Callable[[], httpx.Response]:
        """Prepare one call (this may enroll a device) and return a function that makes it."""
        path, body = self.prepare(shared)
        return lambda: client.request(self.method, path, json=body)


def enrolled(shared: SharedFleet) -> str:
    """The serial of a new device, enrolled through EST."""
    return enroll(shared)[0]


def revoked(shared: SharedFleet) -> str:
    """The serial of a new device, enrolled and then revoked."""
    serial = enrolled(shared)
    with shared.served.api(shared.officer.token) as api:
        assert api.post(f"/devices/{serial}/revoke", json={}).status_code == 200
    return serial


ENDPOINTS = [
    Endpoint("whoami", "GET", frozenset(), lambda s: ("/whoami", None)),
    Endpoint(
        "create-principal",
        "POST",
        frozenset({Permission.PRINCIPALS_MANAGE}),
        lambda s: ("/principals", {"name": s.unique("p"), "role": "operator"}),
    ),
    Endpoint(
        "list-principals",
        "GET",
        frozenset({Permission.PRINCIPALS_MANAGE}),
        lambda s: ("/principals", None),
    ),
    Endpoint(
        "create-batch",
        "POST",
        frozenset({Permission.BATCHES_MANAGE}),
        lambda s: ("/batches", {**BATCH, "quota": 1}),
    ),
    Endpoint(
        "list-batches",
        "GET",
        frozenset({Permission.BATCHES_MANAGE, Permission.BATCHES_READ_OWN}),
        lambda s: ("/batches", None),
    ),
    Endpoint(
        "list-devices",
        "GET",
        frozenset({Permission.DEVICES_READ}),
        lambda s: ("/devices", None),
    ),
    Endpoint(
        "revoke-device",
        "POST",
        frozenset({Permission.DEVICES_REVOKE}),
        lambda s: (f"/devices/{enrolled(s)}/revoke", {"reason": "key-compromise"}),
    ),
    Endpoint(
        "read-audit",
        "GET",
        frozenset({Permission.AUDIT_READ}),
        lambda s: ("/audit", None),
    ),
    Endpoint(
        "verify-audit",
        "GET",
        frozenset({Permission.AUDIT_READ}),
        lambda s: ("/audit/verify", None),
    ),
    Endpoint(
        "rollback-devices",
        "POST",
        frozenset({Permission.DEVICES_ROLLBACK}),
        lambda s: ("/devices/rollback", {"model": "no-such-model"}),
    ),
    Endpoint(
        "list-releases",
        "GET",
        frozenset({Permission.RELEASES_MANAGE}),
        lambda s: ("/releases", None),
    ),
]

ADMIN, OFFICER, RELEASE, OPERATOR, AUDITOR, MANUFACTURER = (
    Role.ADMIN,
    Role.SECURITY_OFFICER,
    Role.RELEASE_MANAGER,
    Role.OPERATOR,
    Role.AUDITOR,
    Role.MANUFACTURER,
)

# Who may call what: separation of duties, written out. The admin manages principals but
# neither creates batches nor revokes; the auditor reads and changes nothing; the
# manufacturer sees its own batches and nothing else.
MAY_CALL: dict[str, set[Role]] = {
    "whoami": set(Role),
    "create-principal": {ADMIN},
    "list-principals": {ADMIN},
    "create-batch": {OFFICER},
    "list-batches": {OFFICER, MANUFACTURER},
    "list-devices": {ADMIN, OFFICER, RELEASE, OPERATOR, AUDITOR},
    "revoke-device": {OFFICER},
    "read-audit": {OFFICER, AUDITOR},
    "verify-audit": {OFFICER, AUDITOR},
    "list-releases": {RELEASE},
    "rollback-devices": {OFFICER, OPERATOR},
}


def test_the_written_matrix_is_the_roles_table() -> None:
    """MAY_CALL and garrison.access.roles.PERMISSIONS say the same thing."""
    for endpoint in ENDPOINTS:
        from_table = {r for r in Role if not endpoint.needs or endpoint.needs & PERMISSIONS[r]}
        assert from_table == MAY_CALL[endpoint.name], endpoint.name


@pytest.fixture(scope="module")
def role_tokens(shared: SharedFleet) -> dict[Role, str]:
    """An API token for a principal of every role on the shared fleet."""
    tokens = {
        ADMIN: shared.served.admin_token,
        OFFICER: shared.officer.token,
        MANUFACTURER: shared.officer.manufacturer_token,
    }
    with shared.served.api() as api:
        for role in (RELEASE, OPERATOR, AUDITOR):
            response = api.post("/principals", json={"name": f"the-{role.value}", "role": role})
            assert response.status_code == 201, response.text
            tokens[role] = response.json()["token"]
    return tokens


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_role_matrix(
    shared: SharedFleet,
    role_tokens: dict[Role, str],
    role: Role,
    endpoint: Endpoint,
) -> None:
    with shared.served.api(role_tokens[role]) as api:
        if role in MAY_CALL[endpoint.name]:
            seq = last_audit_seq(shared.served)
            response = endpoint.caller(shared, api)()
            assert response.status_code in (200, 201), response.text
            assert not [r for r in audit_after(shared.served, seq) if r.outcome == "refused"]
        else:
            response = assert_refused(
                shared.served,
                endpoint.caller(shared, api),
                403,
                f"role {role.value!r} may not",
                "api.authorize",
            )
            assert response.json()["detail"].startswith(f"role {role.value!r} may not")


# -- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        pytest.param(None, "missing bearer token", id="no-header"),
        pytest.param("Bearer", "missing bearer token", id="bearer-without-token"),
        pytest.param("Bearer gat_" + "x" * 43, "invalid or disabled API token", id="wrong-token"),
        pytest.param("Bearer " + "gat_" * 100, "invalid or disabled API token", id="huge-token"),
        pytest.param("Basic YWRtaW46YWRtaW4=", "invalid or disabled API token", id="basic-scheme"),
    ],
)
def test_unauthenticated_call_is_refused(
    shared: SharedFleet, endpoint: Endpoint, authorization: str | None, reason: str
) -> None:
    with api_client(shared.served, authorization) as client:
        response = assert_refused(
            shared.served,
            endpoint.caller(shared, client),
            401,
            f"authentication required: {reason}",
            "api.authenticate",
        )
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_manufacturer_sees_only_its_own_batches(shared: SharedFleet) -> None:
    rival = shared.unique("globex")
    with shared.served.api() as api:
        created = api.post("/principals", json={"name": rival, "role": "manufacturer"})
    assert created.status_code == 201, created.text
    own = shared.batch(size=1)
    theirs = shared.batch(size=1, manufacturer=rival)

    def visible(token: str) -> dict[int, str]:
        with shared.served.api(token) as api:
            response = api.get("/batches")
        assert response.status_code == 200, response.text
        return {b["id"]: b["manufacturer"] for b in response.json()}

    acme = visible(shared.officer.manufacturer_token)
    assert own.id in acme and theirs.id not in acme
    assert set(acme.values()) == {"acme"}
    assert visible(created.json()["token"]) == {theirs.id: rival}
    everything = visible(shared.officer.token)
    assert everything[own.id] == "acme" and everything[theirs.id] == rival


# -- input validation ------------------------------------------------------------------------

Prepare = Callable[[SharedFleet], tuple[str, dict[str, Any]]]


def principal(name: str, role: str = "operator", **extra: Any) -> Prepare:
    return lambda s: ("/principals", {"name": name, "role": role, **extra})


def batch(**fields: Any) -> Prepare:
    return lambda s: ("/batches", {**BATCH, **fields})


def batch_reusing_a_serial(shared: SharedFleet) -> tuple[str, dict[str, Any]]:
    taken = shared.batch(size=1).serials[0]
    return "/batches", {**BATCH, "serials": [shared.unique("NEW-"), taken]}


def revocation(serial: Callable[[SharedFleet], str], body: dict[str, Any] | None = None) -> Prepare:
    return lambda s: (f"/devices/{serial(s)}/revoke", body or {"reason": "key-compromise"})


@pytest.mark.parametrize(
    ("role", "prepare", "status", "fragment", "action"),
    [
        pytest.param(
            ADMIN,
            principal("eve", role="root"),
            422,
            "Input should be 'admin', 'security-officer'",
            "principal.create",
            id="principal-unknown-role",
        ),
        pytest.param(
            ADMIN,
            principal("eve", is_superuser=True),
            422,
            "Extra inputs are not permitted",
            "principal.create",
            id="principal-extra-field",
        ),
        pytest.param(
            ADMIN,
            principal("sofia", role="admin"),
            403,
            "a principal named 'sofia' already exists",
            "principal.create",
            id="principal-duplicate-name",
        ),
        pytest.param(
            ADMIN,
            principal("Eve/../root"),
            400,
            "principal name 'Eve/../root' is not valid",
            "principal.create",
            id="principal-invalid-name",
        ),
        pytest.param(
            OFFICER,
            batch(quota=1, tokens=["gst_mine"]),
            422,
            "Extra inputs are not permitted",
            "batch.create",
            id="batch-extra-field",
        ),
        pytest.param(
            OFFICER,
            batch(),
            400,
            "a batch needs an allow-list of serials, a quota, or both",
            "batch.create",
            id="batch-neither-serials-nor-quota",
        ),
        pytest.param(
            OFFICER,
            batch(serials=["DUP-1", "DUP-2", "DUP-1"]),
            400,
            "the serial allow-list contains duplicates",
            "batch.create",
            id="batch-duplicate-serials",
        ),
        pytest.param(
            OFFICER,
            batch(serials=["OK-1", "../etc"]),
            400,
            "device serial '../etc' is not valid",
            "batch.create",
            id="batch-invalid-serial",
        ),
        pytest.param(
            OFFICER,
            batch_reusing_a_serial,
            403,
            "some of these serials are already authorized in another batch",
            "batch.create",
            id="batch-serial-authorized-elsewhere",
        ),
        pytest.param(
            OFFICER,
            batch(quota=1, manufacturer="nobody"),
            403,
            "'nobody' is not a principal with the manufacturer role",
            "batch.create",
            id="batch-unknown-manufacturer",
        ),
        pytest.param(
            OFFICER,
            batch(quota=1, manufacturer="sofia"),
            403,
            "'sofia' is not a principal with the manufacturer role",
            "batch.create",
            id="batch-manufacturer-without-the-role",
        ),
        pytest.param(
            OFFICER,
            batch(quota=0),
            422,
            "Input should be greater than or equal to 1",
            "batch.create",
            id="batch-zero-quota",
        ),
        pytest.param(
            OFFICER,
            batch(quota=1, valid_days=10_000),
            422,
            "Input should be less than or equal to 366",
            "batch.create",
            id="batch-valid-too-long",
        ),
        pytest.param(
            OFFICER,
            revocation(lambda s: "NO-SUCH-DEVICE"),
            404,
            "no device with serial 'NO-SUCH-DEVICE'",
            "device.revoke",
            id="revoke-unknown-device",
        ),
        pytest.param(
            OFFICER,
            revocation(revoked),
            403,
            "is already revoked",
            "device.revoke",
            id="revoke-twice",
        ),
        pytest.param(
            OFFICER,
            revocation(enrolled, {"reason": "because"}),
            400,
            "unknown revocation reason 'because'",
            "device.revoke",
            id="revoke-unknown-reason",
        ),
        pytest.param(
            OFFICER,
            revocation(enrolled, {"reason": "unspecified", "cascade": True}),
            422,
            "Extra inputs are not permitted",
            "device.revoke",
            id="revoke-extra-field",
        ),
    ],
)
def test_invalid_admin_request_is_refused(
    shared: SharedFleet,
    role_tokens: dict[Role, str],
    role: Role,
    prepare: Prepare,
    status: int,
    fragment: str,
    action: str,
) -> None:
    path, body = prepare(shared)
    with shared.served.api(role_tokens[role]) as api:
        assert_refused(shared.served, lambda: api.post(path, json=body), status, fragment, action)


@pytest.mark.parametrize(
    ("content", "content_type", "status", "fragment"),
    [
        pytest.param(b'{"name": "eve", ', "application/json", 422, "JSON decode error", id="cut"),
        pytest.param(
            b'["eve", "operator"]', "application/json", 422, "valid dictionary", id="list"
        ),
        pytest.param(
            b'{"name": "eve", "role": "operator"}',
            "text/plain",
            422,
            "valid dictionary",
            id="not-declared-json",
        ),
        pytest.param(
            json.dumps({"name": "eve", "role": "operator", "pad": "x" * MAX_BODY_BYTES}).encode(),
            "application/json",
            413,
            "",
            id="oversized",
        ),
    ],
)
def test_malformed_body_is_refused(
    shared: SharedFleet, content: bytes, content_type: str, status: int, fragment: str
) -> None:
    with shared.served.api() as api:
        assert_refused(
            shared.served,
            lambda: api.post(
                "/principals", content=content, headers={"Content-Type": content_type}
            ),
            status,
            fragment,
            "principal.create",
        )


@pytest.mark.parametrize(
    ("path", "params", "fragment", "action"),
    [
        ("/devices", {"limit": 0}, "greater than or equal to 1", "device.list"),
        ("/devices", {"limit": 10_001}, "less than or equal to 10000", "device.list"),
        ("/devices", {"offset": -1}, "greater than or equal to 0", "device.list"),
        ("/devices", {"limit": "all"}, "valid integer", "device.list"),
        ("/audit", {"limit": 1001}, "less than or equal to 1000", "audit.read"),
        ("/audit", {"after": -5}, "greater than or equal to 0", "audit.read"),
    ],
)
def test_invalid_query_is_refused(
    shared: SharedFleet, path: str, params: dict[str, Any], fragment: str, action: str
) -> None:
    with shared.served.api(shared.officer.token) as api:
        assert_refused(shared.served, lambda: api.get(path, params=params), 422, fragment, action)


# -- the audit chain ---------------------------------------------------------------------------


def max_seq(served: RunningFleet) -> int:
    with served.database.read() as conn:
        return int(conn.execute(select(func.max(tables.audit_log.c.seq))).scalar_one())


def test_audit_chain_verifies_after_all_this(
    shared: SharedFleet, role_tokens: dict[Role, str]
) -> None:
    """Placed after the cases above: by now the shared fleet's log holds all of them."""
    for role in (OFFICER, AUDITOR):
        with shared.served.api(role_tokens[role]) as api:
            response = api.get("/audit/verify")
        assert response.status_code == 200, response.text
        head = response.json()
        assert head["seq"] == max_seq(shared.served)
        with shared.served.database.read() as conn:
            assert verify_chain(read_audit(conn)) == (head["seq"], head["entry_hash"])
            outcomes = set(conn.execute(select(tables.audit_log.c.outcome)).scalars())
        assert outcomes == {"ok", "refused"}


@pytest.fixture
def busy_log(served: RunningFleet, officer: Officer) -> RunningFleet:
    """A fresh fleet whose audit log has a few successes and refusals (at least 6 entries)."""
    create_batch(served, officer)
    with served.api(officer.manufacturer_token) as api:
        assert api.get("/devices").status_code == 403
    with api_client(served, None) as anonymous:
        assert anonymous.get("/whoami").status_code == 401
    with served.database.read() as conn:
        assert verify_chain(read_audit(conn))[0] == max_seq(served) >= 6
    return served


def tamper(served: RunningFleet, seq: int) -> None:
    with served.database.write() as conn:
        row = conn.execute(
            select(tables.audit_log.c.details).where(tables.audit_log.c.seq == seq)
        ).one()
        details = {**json.loads(row.details), "reason": "nothing to see here"}
        conn.execute(
            update(tables.audit_log)
            .where(tables.audit_log.c.seq == seq)
            .values(details=json.dumps(details, sort_keys=True))
        )


def test_tampered_audit_entry_is_detected(busy_log: RunningFleet) -> None:
    tamper(busy_log, 3)
    with busy_log.database.read() as conn, pytest.raises(AuditChainBroken) as broken:
        verify_chain(read_audit(conn))
    assert str(broken.value) == "audit entry 3 was modified after it was written"


def test_deleted_audit_entry_is_detected(busy_log: RunningFleet) -> None:
    with busy_log.database.write() as conn:
        conn.execute(delete(tables.audit_log).where(tables.audit_log.c.seq == 3))
    with busy_log.database.read() as conn, pytest.raises(AuditChainBroken) as broken:
        verify_chain(read_audit(conn))
    assert str(broken.value) == "audit entry 3 is missing (next entry found is 4)"


def test_verify_endpoint_reports_a_broken_chain_as_a_server_fault(
    busy_log: RunningFleet, officer: Officer
) -> None:
    tamper(busy_log, 3)
    with busy_log.api(officer.token) as api:
        response = api.get("/audit/verify")
    assert "audit entry 3 was modified after it was written" in response.text
    assert response.status_code == 500, response.text
