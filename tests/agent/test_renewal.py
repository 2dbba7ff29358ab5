"""When the agent renews its certificate and how long it waits between failed attempts."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random

import pytest

from garrison.agent.identity import AgentConfig
from garrison.agent.renewal import (
    DEFAULT_RENEW_FRACTION,
    FIRST_BACKOFF,
    MAX_BACKOFF,
    backoff,
    renewal_due,
)

NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = NOT_BEFORE + dt.timedelta(days=100)
US = dt.timedelta(microseconds=1)


# -- renewal_due -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "threshold"),
    [
        (0.66, dt.timedelta(days=66)),
        (0.5, dt.timedelta(days=50)),
        (0.25, dt.timedelta(days=25)),
        (0.9, dt.timedelta(days=90)),
        (0.001, dt.timedelta(hours=2, minutes=24)),
    ],
)
def test_renewal_due_at_threshold(fraction: float, threshold: dt.timedelta) -> None:
    at = NOT_BEFORE + threshold
    assert renewal_due(NOT_BEFORE, NOT_AFTER, at, fraction) is True
    assert renewal_due(NOT_BEFORE, NOT_AFTER, at - US, fraction) is False
    assert renewal_due(NOT_BEFORE, NOT_AFTER, at + US, fraction) is True


def test_an_agent_renews_after_two_thirds_of_the_lifetime_by_default() -> None:
    fraction = AgentConfig(serial="SN-1", server_url="https://fleet.example").renew_fraction
    at = NOT_BEFORE + dt.timedelta(days=66)
    assert renewal_due(NOT_BEFORE, NOT_AFTER, at, fraction)
    assert not renewal_due(NOT_BEFORE, NOT_AFTER, at - US, fraction)


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (NOT_BEFORE - dt.timedelta(days=1), False),
        (NOT_BEFORE, False),
        (NOT_AFTER, True),
        (NOT_AFTER + dt.timedelta(days=365), True),
    ],
    ids=["before-validity", "at-not-before", "at-not-after", "long-expired"],
)
def test_renewal_due_outside_the_threshold(now: dt.datetime, due: bool) -> None:
    assert renewal_due(NOT_BEFORE, NOT_AFTER, now, DEFAULT_RENEW_FRACTION) is due


def test_renewal_due_short_lifetime() -> None:
    """A one-second lifetime: the threshold is computed to the microsecond."""
    not_after = NOT_BEFORE + dt.timedelta(seconds=1)
    threshold = NOT_BEFORE + dt.timedelta(microseconds=500_000)
    assert renewal_due(NOT_BEFORE, not_after, threshold, 0.5)
    assert not renewal_due(NOT_BEFORE, not_after, threshold - US, 0.5)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, 100.0, math.nan, math.inf, -math.inf])
def test_renewal_due_refuses_invalid_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"renewal fraction must be between 0 and 1 \(exclusive\)"):
        renewal_due(NOT_BEFORE, NOT_AFTER, NOT_BEFORE, fraction)


# -- backoff -----------------------------------------------------------------------------------


class Fixed(random.Random):
    """A Random whose ``uniform(a, b)`` always returns ``a + (b - a) * share``."""

    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.share


def _ceiling(attempt: int) -> dt.timedelta:
    return min(FIRST_BACKOFF * (1 << max(attempt - 1, 0)), MAX_BACKOFF)


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [
        (1, 5),
        (2, 10),
        (3, 20),
        (4, 40),
        (5, 80),
        (8, 640),
        (10, 2560),
        (11, 3600),
        (12, 3600),
        (100, 3600),
        (10**9, 3600),
    ],
)
def test_backoff_ceiling_grows_exponentially_then_caps(attempt: int, seconds: int) -> None:
    assert backoff(attempt, Fixed(1.0)) == dt.timedelta(seconds=seconds)
    assert backoff(attempt, Fixed(0.0)) == dt.timedelta(seconds=seconds) / 2


def test_backoff_doubles_until_the_cap() -> None:
    waits = [backoff(n, Fixed(1.0)) for n in range(1, 16)]
    for earlier, later in itertools.pairwise(waits):
        assert later == min(earlier * 2, MAX_BACKOFF)
    assert max(waits) == MAX_BACKOFF


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_backoff_attempts_below_one_wait_like_the_first(attempt: int) -> None:
    assert backoff(attempt, Fixed(1.0)) == FIRST_BACKOFF


@pytest.mark.parametrize("seed", [0, 1, 42, 2025])
def test_backoff_jitter_within_half_to_full_ceiling(seed: int) -> None:
    rng = random.Random(seed)
    twin = random.Random(seed)
    for attempt in range(1, 20):
        ceiling = _ceiling(attempt)
        wait = backoff(attempt, rng)
        assert ceiling * 0.5 <= wait <= ceiling
        assert wait == ceiling * twin.uniform(0.5, 1.0)


def test_backoff_jitter_is_spread() -> None:
    """Over many draws at the cap, the waits spread across the interval (not constant)."""
    rng = random.Random(7)
    waits = [backoff(50, rng) for _ in range(1000)]
    assert min(waits) >= MAX_BACKOFF / 2
    assert max(waits) <= MAX_BACKOFF
    assert min(waits) < MAX_BACKOFF * 0.55
    assert max(waits) > MAX_BACKOFF * 0.95


def test_backoff_reproducible_with_seed() -> None:
    first = [backoff(n, random.Random(3)) for n in range(1, 10)]
    second = [backoff(n, random.Random(3)) for n in range(1, 10)]
    assert first == second


def test_backoff_default_rng() -> None:
    for attempt in (1, 5, 30):
        wait = backoff(attempt)
        assert _ceiling(attempt) * 0.5 <= wait <= _ceiling(attempt)
