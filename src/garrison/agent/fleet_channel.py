"""The agent's fleet conversation over its mutual-TLS channel (docs/fleet.md):

    check_in(inventory)    POST /device/v1/checkin   → poll interval, directive ETag
    directive(etag)        GET  /device/v1/directive  with If-None-Match → 200 | 304
    report(report)         POST /device/v1/report     progress of a firmware or app

The channel only moves bytes and parses answers; what to send and when is the agent's
business (:mod:`.agent`). Every answer is checked before use: a malformed directive raises
:class:`garrison.agent.directive.DirectiveInvalid` and is not acted on.

Exception tree::

    GarrisonError
    ├── ChannelError          the control plane could not be reached or refused the device
    └── InvalidRequest
        └── DirectiveInvalid  the directive (or its poll header) is malformed
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from garrison.agent.directive import (
    Directive,
    DirectiveInvalid,
    parse_directive,
    parse_poll,
    parse_poll_header,
)
from garrison.errors import GarrisonError

log = logging.getLogger("garrison.agent")

Delivery = Literal["delivered", "refused", "later"]


class ChannelError(GarrisonError):
    """The control plane refused the device or could not be reached."""


@dataclass(frozen=True)
class CheckInResult:
    """The control plane's answer to a check-in."""

    serial: str
    certificate: str
    poll_seconds: int
    jitter_seconds: int = 0
    directive_etag: str | None = None


@dataclass(frozen=True)
class DirectiveAnswer:
    """``status`` 200 (``directive`` is new), 304 (the kept one stands), or 204/404 (this
    control plane has no directive for the device: nothing to converge to)."""

    status: int
    directive: Directive | None
    poll_seconds: int | None = None
    jitter_seconds: int | None = None


class FleetChannel:
    """The three fleet requests over one device ``httpx.Client`` (kept alive between them).
    ``exchanges`` records (request, status) of every exchange made on that client from now
    on — these requests and any other (the operator command, TUF metadata and downloads) —
    newest last."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.exchanges: list[tuple[str, int]] = []
        http.event_hooks["response"] = [*http.event_hooks["response"], self._record]

    def _record(self, response: httpx.Response) -> None:
        self.exchanges.append(
            (f"{response.request.method} {response.request.url.path}", response.status_code)
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ChannelError(f"cannot reach the control plane: {exc}") from exc

    def check_in(self, agent_version: str, inventory: dict[str, Any] | None) -> CheckInResult:
        """Report that the device is alive (and, given, its inventory)."""
        body: dict[str, Any] = {"agent_version": agent_version}
        if inventory is not None:
            body["inventory"] = inventory
        response = self._send("POST", "/device/v1/checkin", json=body)
        if response.status_code != 200:
            raise ChannelError(f"check-in refused ({response.status_code}): {response.text[:300]}")
        try:
            answer = response.json()
            poll = answer["poll_seconds"]
            jitter = answer.get("jitter_seconds", 0)
            parse_poll(poll, jitter)
            etag = answer.get("directive_etag")
            return CheckInResult(
                str(answer["serial"]),
                str(answer["certificate"]),
                int(poll),
                int(jitter),
                etag if isinstance(etag, str) and etag else None,
            )
        except (ValueError, KeyError, TypeError, DirectiveInvalid) as exc:
            raise ChannelError(f"the check-in answer is malformed: {exc}") from exc

    def directive(self, etag: str | None) -> DirectiveAnswer:
        """The device's directive; with the kept ``etag``, a 304 when it did not change."""
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        response = self._send("GET", "/device/v1/directive", headers=headers)
        status = response.status_code
        if status == 304:
            header = response.headers.get("garrison-poll")
            poll, jitter = parse_poll_header(header) if header else (None, None)
            return DirectiveAnswer(304, None, poll, jitter)
        if status in (204, 404):
            return DirectiveAnswer(status, None)
        if status != 200:
            raise ChannelError(f"directive refused ({status}): {response.text[:300]}")
        try:
            document = response.json()
        except ValueError as exc:
            raise DirectiveInvalid(f"the directive is not JSON: {exc}") from exc
        directive = parse_directive(document)
        return DirectiveAnswer(200, directive, directive.poll_seconds, directive.jitter_seconds)

    def report(self, report: dict[str, Any]) -> Delivery:
        """Send one progress report: ``delivered`` (2xx), ``refused`` (4xx: the control
        plane will not take it; it is not sent again) or ``later`` (unreachable, 5xx)."""
        try:
            response = self._send("POST", "/device/v1/report", json=report)
        except ChannelError as exc:
            log.warning(
                "report %s %s kept for later: %s", report.get("state"), report.get("target"), exc
            )
            return "later"
        if response.is_success:
            return "delivered"
        if 400 <= response.status_code < 500:
            log.warning(
                "the control plane refused report %s of %s (%d): %s",
                report.get("state"),
                report.get("target"),
                response.status_code,
                response.text[:200],
            )
            return "refused"
        return "later"
