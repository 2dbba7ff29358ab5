"""The factory enrollment decision, serial syntax and enrollment tokens."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import string

import pytest

from garrison.errors import EnrollmentRefused, InvalidRequest
from garrison.factory.policy import BatchFacts, TokenFacts, check_serial, decide_enrollment
from garrison.factory.tokens import TOKEN_PREFIX, new_token, token_digest

NOW = dt.datetime(2025, 5, 1, 9, 0, 0, tzinfo=dt.UTC)
SERIAL = "SN-0042"

BATCH = BatchFacts(
    batch_id=17, expires_at=NOW + dt.timedelta(days=1), quota=10, issued=3, closed=False
)
TOKEN = TokenFacts(authorization_id=5, bound_serial=SERIAL, used=False, batch=BATCH)
UNBOUND = dataclasses.replace(TOKEN, bound_serial=None)


def _batch(**changes: object) -> BatchFacts:
    return dataclasses.replace(BATCH, **changes)  # type: ignore[arg-type]


def _token(**changes: object) -> TokenFacts:
    return dataclasses.replace(TOKEN, **changes)  # type: ignore[arg-type]


# -- decide_enrollment -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serial", "token", "enrolled", "now", "message"),
    [
        pytest.param(SERIAL, None, False, NOW, "unknown enrollment token", id="unknown-token"),
        pytest.param(
            "SN-9999",
            TOKEN,
            False,
            NOW,
            "enrollment token is not issued for serial 'SN-9999'",
            id="wrong-serial",
        ),
        pytest.param(
            SERIAL, _token(used=True), False, NOW, "enrollment token was already used", id="used"
        ),
        pytest.param(
            SERIAL,
            dataclasses.replace(UNBOUND, used=True),
            False,
            NOW,
            "enrollment token was already used",
            id="unbound-used",
        ),
        pytest.param(
            SERIAL,
            _token(batch=_batch(closed=True)),
            False,
            NOW,
            "production batch 17 is closed",
            id="closed",
        ),
        pytest.param(
            SERIAL,
            TOKEN,
            False,
            BATCH.expires_at,
            "production batch 17 expired",
            id="expired-exactly-now",
        ),
        pytest.param(
            SERIAL,
            TOKEN,
            False,
            BATCH.expires_at + dt.timedelta(days=30),
            "production batch 17 expired",
            id="expired-long-ago",
        ),
        pytest.param(
            SERIAL,
            _token(batch=_batch(quota=10, issued=10)),
            False,
            NOW,
            "production batch 17 quota exhausted",
            id="quota-reached",
        ),
        pytest.param(
            SERIAL,
            _token(batch=_batch(quota=10, issued=11)),
            False,
            NOW,
            "production batch 17 quota exhausted",
            id="quota-exceeded",
        ),
        pytest.param(
            SERIAL,
            _token(batch=_batch(quota=0, issued=0)),
            False,
            NOW,
            "production batch 17 quota exhausted",
            id="quota-zero",
        ),
        pytest.param(
            SERIAL, TOKEN, True, NOW, "device 'SN-0042' is already enrolled", id="enrolled"
        ),
        pytest.param(
            SERIAL,
            UNBOUND,
            True,
            NOW,
            "device 'SN-0042' is already enrolled",
            id="unbound-enrolled",
        ),
    ],
)
def test_refusals(
    serial: str, token: TokenFacts | None, enrolled: bool, now: dt.datetime, message: str
) -> None:
    with pytest.raises(EnrollmentRefused) as info:
        decide_enrollment(serial, token, enrolled, now)
    assert info.type is EnrollmentRefused
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("serial", "token", "now"),
    [
        pytest.param(SERIAL, TOKEN, NOW, id="bound"),
        pytest.param(SERIAL, UNBOUND, NOW, id="unbound"),
        pytest.param("SN-9999", UNBOUND, NOW, id="unbound-any-serial"),
        pytest.param(SERIAL, _token(batch=_batch(quota=None, issued=10**6)), NOW, id="no-quota"),
        pytest.param(SERIAL, _token(batch=_batch(quota=10, issued=9)), NOW, id="last-of-quota"),
        pytest.param(
            SERIAL,
            TOKEN,
            BATCH.expires_at - dt.timedelta(microseconds=1),
            id="1us-before-expiry",
        ),
    ],
)
def test_allowed(serial: str, token: TokenFacts, now: dt.datetime) -> None:
    decide_enrollment(serial, token, False, now)


def test_refusal_order_reports_the_first_reason() -> None:
    """A token failing every check is refused for its binding first, then for use, ..."""
    everything_wrong = _token(
        used=True, batch=_batch(closed=True, quota=1, issued=1, expires_at=NOW)
    )
    with pytest.raises(EnrollmentRefused, match="not issued for serial"):
        decide_enrollment("SN-9999", everything_wrong, True, NOW)
    with pytest.raises(EnrollmentRefused, match="already used"):
        decide_enrollment(SERIAL, everything_wrong, True, NOW)
    with pytest.raises(EnrollmentRefused, match="is closed"):
        decide_enrollment(SERIAL, _token(batch=everything_wrong.batch), True, NOW)


# -- check_serial ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "serial",
    [
        "A",
        "0",
        "SN-0042",
        "sn_42.rev-b",
        "a" * 64,
        "Z" + "._-" * 21,
        string.ascii_letters[:32] + string.digits * 3 + "._",
    ],
)
def test_check_serial_accepts(serial: str) -> None:
    assert len(serial) <= 64
    assert check_serial(serial) == serial


@pytest.mark.parametrize(
    "serial",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="65-chars"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("-flag", id="leading-dash"),
        pytest.param("_x", id="leading-underscore"),
        pytest.param("a/b", id="slash"),
        pytest.param("../etc", id="traversal"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("SN 1", id="space"),
        pytest.param("SN-1\n", id="trailing-newline"),
        pytest.param("SN\x00", id="nul"),
        pytest.param("SÉRIE-1", id="unicode-letter"),
        pytest.param("SN-١٢٣", id="unicode-digits"),
        pytest.param("\uff33\uff2e1", id="fullwidth"),
        pytest.param("SN:1", id="colon"),
    ],
)
def test_check_serial_refuses(serial: str) -> None:
    with pytest.raises(InvalidRequest, match="is not valid") as info:
        check_serial(serial)
    assert info.type is InvalidRequest
    assert "1-64 characters" in info.value.hint


def test_check_serial_message_is_truncated() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_serial("/" * 10_000)
    assert len(str(info.value)) < 120


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_unique_and_prefixed() -> None:
    tokens = [new_token() for _ in range(1000)]
    assert len(set(tokens)) == 1000
    assert TOKEN_PREFIX == "gst_"
    for token in tokens:
        assert token.startswith(TOKEN_PREFIX)
        body = token.removeprefix(TOKEN_PREFIX)
        assert len(body) == 32  # 24 random bytes, URL-safe base64 without padding
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", body)


def test_token_digest_stable_and_hex() -> None:
    token = new_token()
    digest = token_digest(token)
    assert digest == token_digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert token_digest(token + "x") != digest
    # Known answer: SHA-256 of the UTF-8 bytes.
    assert token_digest("gst_abc") == (
        "5c4496466de9b9a70a436e15198ffbc049a64cb42ca38bab352ca820e8bb327e"
    )
