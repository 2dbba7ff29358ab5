"""The clock, passed in wherever time decides something (expiry, renewal, audit), so that
tests can fix it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time in UTC: the production :data:`Clock`."""
    return dt.datetime.now(dt.UTC)
