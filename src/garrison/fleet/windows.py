"""Maintenance windows: when the devices of a group may install (pure; no I/O, no clock).

A window is chosen by the customer per group: recurring weekly slots in the customer's time
zone. Outside its window a device may download but does not install. The wire form::

    {"timezone": "Europe/Berlin",
     "slots": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "02:00", "minutes": 120}]}

Rules:

* ``start`` is a local wall-clock time on each listed day; the slot lasts ``minutes`` of real
  time (1 to 1,440) and may run past midnight (it belongs to the day it starts on).
* Daylight-saving changes: a start inside the spring-forward gap moves forward by the gap
  (02:30 becomes 03:30 summer time); a start that occurs twice in autumn begins at the
  first occurrence.
* A group without a window (``None``) is always open.
* :func:`parse_window` refuses anything else with :class:`InvalidRequest` naming the field.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from garrison.errors import InvalidRequest

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SLOTS = 32
MAX_MINUTES = 24 * 60


@dataclass(frozen=True)
class Slot:
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: dt.time
    minutes: int


@dataclass(frozen=True)
class Window:
    timezone: str
    slots: tuple[Slot, ...]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def to_json(self) -> dict[str, Any]:
        """The wire form (``parse_window(w.to_json()) == w``)."""
        return {
            "timezone": self.timezone,
            "slots": [
                {
                    "days": [DAYS[d] for d in sorted(slot.days)],
                    "start": slot.start.strftime("%H:%M"),
                    "minutes": slot.minutes,
                }
                for slot in self.slots
            ],
        }

    def open_interval(self, at: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        """The slot occurrence that contains ``at`` (UTC start, end), or None if closed."""
        _require_aware(at)
        local_day = at.astimezone(self.zone).date()
        for day in (local_day - dt.timedelta(days=1), local_day):
            for start, end in self._occurrences(day):
                if start <= at < end:
                    return start, end
        return None

    def is_open(self, at: dt.datetime) -> bool:
        """Whether a device of this group may install at ``at`` (an aware datetime)."""
        return self.open_interval(at) is not None

    def next_open(self, at: dt.datetime) -> dt.datetime:
        """``at`` if the window is open then, else the start of the next slot occurrence."""
        if self.is_open(at):
            return at
        local_day = at.astimezone(self.zone).date()
        starts = [
            start
            for offset in range(9)
            for start, _end in self._occurrences(local_day + dt.timedelta(days=offset))
            if start > at
        ]
        return min(starts)  # every slot names at least one day: one occurs within 8 days

    def _occurrences(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        zone = self.zone
        found = []
        for slot in self.slots:
            if day.weekday() in slot.days:
                start = _local_start(day, slot.start, zone)
                found.append((start, start + dt.timedelta(minutes=slot.minutes)))
        return found


def _local_start(day: dt.date, time: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant of wall-clock ``time`` on ``day`` in ``zone`` (PEP 495 ``fold=0``:
    the first of two repeated times; a time in the spring-forward gap moves forward by the
    gap, e.g. 02:30 on the night CET becomes CEST starts at 03:30 CEST)."""
    return dt.datetime.combine(day, time).replace(tzinfo=zone, fold=0).astimezone(dt.UTC)


def always_open(window: Window | None, at: dt.datetime) -> bool:
    """``window.is_open(at)``; a group without a window is always open."""
    return window is None or window.is_open(at)


def parse_window(data: object) -> Window | None:
    """A :class:`Window` from its wire form; ``None`` stays ``None`` (always open)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InvalidRequest("a maintenance window must be an object with timezone and slots")
    unknown = set(data) - {"timezone", "slots"}
    if unknown:
        raise InvalidRequest(f"unknown maintenance window field(s): {', '.join(sorted(unknown))}")
    timezone = data.get("timezone")
    if not isinstance(timezone, str) or not timezone or len(timezone) > 64:
        raise InvalidRequest("window.timezone must be an IANA time zone name, e.g. Europe/Berlin")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"window.timezone: unknown time zone {timezone!r}",
            hint="use an IANA name such as Europe/Berlin, America/Chicago or UTC",
        ) from None
    slots = data.get("slots")
    if not isinstance(slots, list) or not slots:
        raise InvalidRequest("window.slots must be a non-empty list")
    if len(slots) > MAX_SLOTS:
        raise InvalidRequest(f"window.slots: at most {MAX_SLOTS} slots")
    return Window(timezone, tuple(_parse_slot(i, s) for i, s in enumerate(slots)))


def _parse_slot(index: int, data: object) -> Slot:
    where = f"window.slots[{index}]"
    if not isinstance(data, dict) or set(data) != {"days", "start", "minutes"}:
        raise InvalidRequest(f"{where} must be an object with exactly days, start and minutes")
    days = data["days"]
    if not isinstance(days, list) or not days or not all(d in DAYS for d in days):
        raise InvalidRequest(f"{where}.days must be a non-empty list of {', '.join(DAYS)}")
    start = data["start"]
    if not isinstance(start, str) or len(start) != 5 or start[2] != ":":
        raise InvalidRequest(f"{where}.start must be a local time HH:MM, e.g. 02:00")
    try:
        time = dt.time(int(start[:2]), int(start[3:]))
    except ValueError:
        raise InvalidRequest(f"{where}.start {start!r} is not a time of day (HH:MM)") from None
    minutes = data["minutes"]
    if type(minutes) is not int or not 1 <= minutes <= MAX_MINUTES:
        raise InvalidRequest(f"{where}.minutes must be a whole number from 1 to {MAX_MINUTES}")
    return Slot(frozenset(DAYS.index(d) for d in days), time, minutes)


def _require_aware(at: dt.datetime) -> None:
    if at.tzinfo is None:
        raise ValueError("maintenance windows need an aware datetime")
