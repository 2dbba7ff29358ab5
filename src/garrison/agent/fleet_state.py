"""What the agent keeps about its fleet conversation, in the state directory.

Layout (``STATE`` is the agent state directory)::

    STATE/fleet/directive.json   the last directive received (wire form, with its ETag)
    STATE/fleet/record.json      the agent's own record (:class:`Record`)

Both are replaced atomically (:func:`garrison.atomicfile.atomic_write`): after a crash each
holds its old or its new content, whole. A record that cannot be read is logged and
replaced by a fresh one (the device still refuses an image that failed its trial here:
:class:`garrison.updates.eligibility.PreviouslyRejected`); a kept directive that cannot be
read is dropped, so the next poll fetches the directive afresh (no ``If-None-Match``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from garrison.agent.converge import Failure
from garrison.agent.directive import (
    DEFAULT_JITTER_SECONDS,
    DEFAULT_POLL_SECONDS,
    Directive,
    DirectiveInvalid,
    directive_to_json,
)
from garrison.agent.directive import parse_directive as parse
from garrison.atomicfile import atomic_write

log = logging.getLogger("garrison.agent")

MAX_FAILURES = 32
MAX_OUTBOX = 64


@dataclass(frozen=True)
class Installing:
    """An install under way, written before it starts: after a crash the agent knows what
    the pending trial (or the half-done switch) was, and reports its outcome."""

    kind: str  # "firmware" or "app"
    target: str
    version: str
    campaign: int | None
    name: str = ""


@dataclass
class Record:
    """The agent's bookkeeping (see the module docstring)."""

    inventory_digest: str = ""
    polls_since_checkin: int = 0
    downloads: dict[str, str] = field(default_factory=dict)  # target → sha256
    installing: Installing | None = None
    last_update: dict[str, Any] | None = None
    failures: list[Failure] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)  # reports not yet delivered
    reported: list[list[Any]] = field(default_factory=list)  # [campaign, target, state]
    last_cycle: dict[str, Any] = field(default_factory=dict)
    poll: list[int] = field(default_factory=lambda: [DEFAULT_POLL_SECONDS, DEFAULT_JITTER_SECONDS])

    def add_failure(self, failure: Failure) -> None:
        others = [f for f in self.failures if not f.matches(failure.target)]
        self.failures = [*others[-(MAX_FAILURES - 1) :], failure]

    def queue_report(self, report: dict[str, Any]) -> bool:
        """Queue ``report`` unless the same (campaign, target, state) was queued before;
        returns whether it was queued."""
        key = [report.get("campaign"), report.get("target"), report.get("state")]
        if key in self.reported:
            return False
        self.reported = [*self.reported[-(MAX_OUTBOX - 1) :], key]
        self.outbox = [*self.outbox[-(MAX_OUTBOX - 1) :], report]
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "inventory_digest": self.inventory_digest,
            "polls_since_checkin": self.polls_since_checkin,
            "downloads": self.downloads,
            "installing": None if self.installing is None else vars(self.installing),
            "last_update": self.last_update,
            "failures": [
                {
                    "target": f.target,
                    "campaign": f.campaign,
                    "version": f.version,
                    "outcome": f.outcome,
                    "event": f.event,
                    "at": f.at.isoformat(),
                }
                for f in self.failures
            ],
            "outbox": self.outbox,
            "reported": self.reported,
            "last_cycle": self.last_cycle,
            "poll": self.poll,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        installing = data.get("installing")
        return cls(
            inventory_digest=str(data.get("inventory_digest", "")),
            polls_since_checkin=int(data.get("polls_since_checkin", 0)),
            downloads={str(k): str(v) for k, v in dict(data.get("downloads", {})).items()},
            installing=None if installing is None else Installing(**installing),
            last_update=data.get("last_update"),
            failures=[
                Failure(
                    str(f["target"]),
                    None if f["campaign"] is None else int(f["campaign"]),
                    str(f["version"]),
                    str(f["outcome"]),
                    str(f["event"]),
                    dt.datetime.fromisoformat(f["at"]),
                )
                for f in data.get("failures", [])
            ],
            outbox=[dict(r) for r in data.get("outbox", [])],
            reported=[list(k) for k in data.get("reported", [])],
            last_cycle=dict(data.get("last_cycle", {})),
            poll=[int(v) for v in data.get("poll", [DEFAULT_POLL_SECONDS, DEFAULT_JITTER_SECONDS])],
        )


class FleetFiles:
    """The two files of the module docstring, under ``STATE/fleet``."""

    def __init__(self, state_root: Path) -> None:
        self.root = Path(state_root) / "fleet"

    @property
    def directive_path(self) -> Path:
        return self.root / "directive.json"

    @property
    def record_path(self) -> Path:
        return self.root / "record.json"

    def load_directive(self) -> Directive | None:
        """The kept directive, or None (none yet, or unreadable: fetched afresh)."""
        try:
            return parse(json.loads(self.directive_path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, DirectiveInvalid) as exc:
            log.warning("dropping the kept directive %s: %s", self.directive_path, exc)
            return None

    def save_directive(self, directive: Directive) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.directive_path, _dump(directive_to_json(directive)))

    def drop_directive(self) -> None:
        """Forget the kept directive (the control plane has none for this device)."""
        self.directive_path.unlink(missing_ok=True)

    def load_record(self) -> Record:
        try:
            data = json.loads(self.record_path.read_bytes())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return Record.from_json(data)
        except FileNotFoundError:
            return Record()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "starting a fresh agent record: %s is unreadable (%s)", self.record_path, exc
            )
            return Record()

    def save_record(self, record: Record) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.record_path, _dump(record.to_json()))


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
