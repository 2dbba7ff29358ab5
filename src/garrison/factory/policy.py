"""The factory enrollment decision, as a pure function of the stored facts and the clock."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from garrison.errors import EnrollmentRefused, InvalidRequest

SERIAL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class BatchFacts:
    """What the store knows about a production batch at the moment of the request."""

    batch_id: int
    expires_at: dt.datetime
    quota: int | None
    issued: int
    closed: bool


@dataclass(frozen=True)
class TokenFacts:
    """What the store knows about the presented enrollment token."""

    authorization_id: int
    bound_serial: str | None
    used: bool
    batch: BatchFacts


def check_serial(serial: str) -> str:
    """A device serial as Garrison accepts it: 1-64 of ``A-Z a-z 0-9 . _ -``."""
    if not SERIAL_PATTERN.fullmatch(serial):
        raise InvalidRequest(
            f"device serial {serial[:80]!r} is not valid",
            hint="serials are 1-64 characters of letters, digits, '.', '_' and '-'",
        )
    return serial


def decide_enrollment(
    serial: str,
    token: TokenFacts | None,
    serial_enrolled: bool,
    now: dt.datetime,
    *,
    serial_reserved: bool = False,
) -> None:
    """Allow the enrollment of ``serial`` with ``token``, or raise :class:`EnrollmentRefused`.

    ``token`` is ``None`` when no authorization has the presented token's digest.
    ``serial_enrolled`` says whether a device with this serial already has an identity;
    ``serial_reserved`` whether another authorization (an allow-list) names this serial.
    """
    if token is None:
        raise EnrollmentRefused("unknown enrollment token")
    if token.bound_serial is not None and token.bound_serial != serial:
        raise EnrollmentRefused(f"enrollment token is not issued for serial {serial!r}")
    if token.bound_serial is None and serial_reserved:
        raise EnrollmentRefused(f"serial {serial!r} is authorized by another token")
    if token.used:
        raise EnrollmentRefused("enrollment token was already used")
    batch = token.batch
    if batch.closed:
        raise EnrollmentRefused(f"production batch {batch.batch_id} is closed")
    if now >= batch.expires_at:
        raise EnrollmentRefused(f"production batch {batch.batch_id} expired")
    if batch.quota is not None and batch.issued >= batch.quota:
        raise EnrollmentRefused(f"production batch {batch.batch_id} quota exhausted")
    if serial_enrolled:
        raise EnrollmentRefused(f"device {serial!r} is already enrolled")
