"""When to renew and how long to wait between attempts: pure, with the clock passed in."""

from __future__ import annotations

import datetime as dt
import random

DEFAULT_RENEW_FRACTION = 0.66
MAX_BACKOFF = dt.timedelta(hours=1)
FIRST_BACKOFF = dt.timedelta(seconds=5)


def renewal_due(
    not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime, fraction: float
) -> bool:
    """Whether ``fraction`` of the certificate's lifetime has passed at ``now``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("renewal fraction must be between 0 and 1 (exclusive)")
    return now >= not_before + (not_after - not_before) * fraction


def backoff(attempt: int, rng: random.Random | None = None) -> dt.timedelta:
    """Exponential backoff with full jitter: attempt 1 waits up to 5 s, doubling to 1 h."""
    ceiling = min(FIRST_BACKOFF * (1 << min(max(attempt - 1, 0), 20)), MAX_BACKOFF)
    fraction = (rng or random.SystemRandom()).uniform(0.5, 1.0)
    return ceiling * fraction
