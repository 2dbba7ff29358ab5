"""The directive as the device reads it: what the control plane wants this device to run
(pure; no I/O). The wire form is ``GET /device/v1/directive`` of docs/fleet.md::

    {"etag": "3f1c…",
     "firmware": {"target": "firmware/gw-2.1.0.img", "version": "2.1.0", "campaign": 3},
     "apps": [{"name": "modbus-bridge", "version": "1.3.0",
               "target": "apps/modbus-bridge-1.3.0.tar", "config": {"port": 502}}],
     "kept_apps": [{"name": "opcua", "reason": "release opcua 3.0 is not built for model gw-2"}],
     "command": {"id": 7, "action": "rollback"},
     "window": {"timezone": "Europe/Berlin", "slots": [...]},
     "poll_seconds": 1800, "jitter_seconds": 180}

Rules the device applies, failing closed:

* :func:`parse_directive` accepts only the fields it knows in the shapes above and raises
  :class:`DirectiveInvalid` naming the field otherwise; a device never acts on part of a
  directive. A field it does not know — at the top or inside an entry — is refused too: it
  might restrict what the device may do (as ``kept_apps`` does), and ignoring it would then
  act against it. ``kept_apps`` and ``command`` may be missing (a control plane that does
  not send them): none kept, no command.
* ``firmware: null`` = stay; ``apps: null`` = apps not managed (nothing installed or
  removed); ``apps: []`` = no apps at all; ``window: null`` = always open.
* ``kept_apps``: managed apps the control plane cannot offer this device (e.g. a release
  not built for its model), left as they are: not installed, configured or removed. Only
  with ``apps`` a list; a name is never both in ``apps`` and ``kept_apps``.
* ``command``: the oldest open operator command (``null``: none). The device fetches and
  carries it out through ``GET /device/v1/commands`` (:func:`garrison.updates.client.
  run_operator_command`) only when its directive names one. An action the device does not
  know is well formed here and refused there (reported ``refused``).
* App names and versions follow the release rules (:mod:`garrison.updates.eligibility`);
  each app is named once; a configuration is a JSON object (or null: none).
* Nothing here is trusted for integrity: every target is verified through TUF before a byte
  of it is used; the directive only chooses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from garrison.errors import InvalidRequest
from garrison.fleet.windows import Window, parse_window
from garrison.updates import apps
from garrison.updates.eligibility import valid_name, valid_version

DEFAULT_POLL_SECONDS = 1800
DEFAULT_JITTER_SECONDS = 180
MAX_POLL_SECONDS = 7 * 24 * 3600
MAX_TARGET_LENGTH = 512
MAX_APPS = 256
MAX_REASON = 300
MAX_ACTION = 16  # device_commands.action

TOP_FIELDS = frozenset(
    {"etag", "firmware", "apps", "kept_apps", "command", "window", "poll_seconds", "jitter_seconds"}
)


class DirectiveInvalid(InvalidRequest):
    """The control plane's directive is malformed; the device does not act on it."""


@dataclass(frozen=True)
class FirmwareEntry:
    """The firmware this device must run; ``campaign`` is None when it comes from desired
    state alone."""

    target: str
    version: str
    campaign: int | None


@dataclass(frozen=True)
class AppEntry:
    """An application package that must run here, with its configuration (None: none)."""

    name: str
    version: str
    target: str
    config: Mapping[str, Any] | None

    @property
    def config_digest(self) -> str | None:
        return apps.config_digest(self.config)


@dataclass(frozen=True)
class KeptApp:
    """A managed app left as it is on this device, and why (the control plane's words)."""

    name: str
    reason: str


@dataclass(frozen=True)
class CommandEntry:
    """An operator command waiting for this device (fetched from ``/device/v1/commands``)."""

    id: int
    action: str


@dataclass(frozen=True)
class Directive:
    """What the control plane wants; see the module docstring for the meaning of None."""

    etag: str
    firmware: FirmwareEntry | None
    apps: tuple[AppEntry, ...] | None
    window: Window | None
    poll_seconds: int
    jitter_seconds: int
    kept_apps: tuple[KeptApp, ...] = ()
    command: CommandEntry | None = None

    def app(self, name: str) -> AppEntry | None:
        return next((a for a in self.apps or () if a.name == name), None)

    @property
    def kept(self) -> frozenset[str]:
        """The names of the apps left as they are."""
        return frozenset(k.name for k in self.kept_apps)


NO_DIRECTIVE = Directive("", None, None, None, DEFAULT_POLL_SECONDS, DEFAULT_JITTER_SECONDS)
"""What a device does without a directive: stay as it is."""


def parse_directive(data: object) -> Directive:
    """A :class:`Directive` from its wire form (:class:`DirectiveInvalid` if malformed)."""
    if not isinstance(data, dict):
        raise DirectiveInvalid("a directive must be a JSON object")
    _known_fields("directive", data, TOP_FIELDS)
    etag = data.get("etag")
    if not isinstance(etag, str) or not etag or len(etag) > 128 or '"' in etag:
        raise DirectiveInvalid("directive.etag must be a non-empty string without quotes")
    poll, jitter = parse_poll(data.get("poll_seconds"), data.get("jitter_seconds"))
    try:
        window = parse_window(data.get("window"))
    except InvalidRequest as exc:
        raise DirectiveInvalid(f"directive.window: {exc}", hint=exc.hint) from exc
    app_list = _apps(data.get("apps"))
    kept = _kept_apps(data.get("kept_apps"), app_list)
    return Directive(
        etag,
        _firmware(data.get("firmware")),
        app_list,
        window,
        poll,
        jitter,
        kept,
        _command(data.get("command")),
    )


def _known_fields(where: str, data: dict[Any, Any], known: frozenset[str]) -> None:
    unknown = sorted(str(k)[:40] for k in set(data) - known)
    if unknown:
        raise DirectiveInvalid(
            f"{where}: unknown field(s) {', '.join(unknown)}",
            hint="this agent is older than the control plane's directive format; update it",
        )


def parse_poll(poll: object, jitter: object) -> tuple[int, int]:
    """``poll_seconds`` (1 .. one week) and ``jitter_seconds`` (0 .. poll) as integers."""
    if type(poll) is not int or not 1 <= poll <= MAX_POLL_SECONDS:
        raise DirectiveInvalid(f"poll_seconds must be a whole number from 1 to {MAX_POLL_SECONDS}")
    if type(jitter) is not int or not 0 <= jitter <= poll:
        raise DirectiveInvalid("jitter_seconds must be a whole number from 0 to poll_seconds")
    return poll, jitter


def parse_poll_header(value: str) -> tuple[int, int]:
    """The ``Garrison-Poll: <seconds>;jitter=<seconds>`` header of a 304 answer."""
    seconds, _, rest = value.partition(";")
    key, _, jitter = rest.strip().partition("=")
    try:
        poll = int(seconds.strip())
        spread = int(jitter.strip()) if rest else 0
    except ValueError:
        raise DirectiveInvalid(f"Garrison-Poll header {value[:80]!r} is malformed") from None
    if rest and key.strip() != "jitter":
        raise DirectiveInvalid(f"Garrison-Poll header {value[:80]!r} is malformed")
    return parse_poll(poll, spread)


def _target(where: str, value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_TARGET_LENGTH
        or value.startswith("/")
        or ".." in value.split("/")
    ):
        raise DirectiveInvalid(f"{where}.target must be a relative TUF target path")
    return value


def _version(where: str, value: object) -> str:
    if not isinstance(value, str) or not valid_version(value):
        raise DirectiveInvalid(f"{where}.version must be a release version")
    return value


def _firmware(data: object) -> FirmwareEntry | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise DirectiveInvalid("directive.firmware must be an object or null")
    _known_fields("directive.firmware", data, frozenset({"target", "version", "campaign"}))
    campaign = data.get("campaign")
    if campaign is not None and (type(campaign) is not int or campaign < 1):
        raise DirectiveInvalid("directive.firmware.campaign must be a campaign id or null")
    return FirmwareEntry(
        _target("directive.firmware", data.get("target")),
        _version("directive.firmware", data.get("version")),
        campaign,
    )


def _apps(data: object) -> tuple[AppEntry, ...] | None:
    if data is None:
        return None
    if not isinstance(data, list):
        raise DirectiveInvalid("directive.apps must be a list or null")
    if len(data) > MAX_APPS:
        raise DirectiveInvalid(f"directive.apps: at most {MAX_APPS} apps")
    entries: list[AppEntry] = []
    for index, item in enumerate(data):
        where = f"directive.apps[{index}]"
        if not isinstance(item, dict):
            raise DirectiveInvalid(f"{where} must be an object")
        _known_fields(where, item, frozenset({"name", "version", "target", "config"}))
        name = item.get("name")
        if not isinstance(name, str) or not valid_name(name):
            raise DirectiveInvalid(f"{where}.name must be an app (release) name")
        if any(e.name == name for e in entries):
            raise DirectiveInvalid(f"{where}: app {name!r} is named twice")
        config = item.get("config")
        if config is not None:
            if not isinstance(config, dict):
                raise DirectiveInvalid(f"{where}.config must be a JSON object or null")
            try:
                apps.config_bytes(config)
            except apps.AppInstallError as exc:
                raise DirectiveInvalid(f"{where}.config: {exc}") from exc
        entries.append(
            AppEntry(
                name,
                _version(where, item.get("version")),
                _target(where, item.get("target")),
                config,
            )
        )
    return tuple(sorted(entries, key=lambda e: e.name))


def _kept_apps(data: object, app_list: tuple[AppEntry, ...] | None) -> tuple[KeptApp, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise DirectiveInvalid("directive.kept_apps must be a list")
    if len(data) > MAX_APPS:
        raise DirectiveInvalid(f"directive.kept_apps: at most {MAX_APPS} apps")
    if data and app_list is None:
        raise DirectiveInvalid("directive.kept_apps needs managed apps (apps a list)")
    listed = {a.name for a in app_list or ()}
    kept: list[KeptApp] = []
    for index, item in enumerate(data):
        where = f"directive.kept_apps[{index}]"
        if not isinstance(item, dict):
            raise DirectiveInvalid(f"{where} must be an object")
        _known_fields(where, item, frozenset({"name", "reason"}))
        name, reason = item.get("name"), item.get("reason")
        if not isinstance(name, str) or not valid_name(name):
            raise DirectiveInvalid(f"{where}.name must be an app (release) name")
        if name in listed or any(k.name == name for k in kept):
            raise DirectiveInvalid(f"{where}: app {name!r} is named twice")
        if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
            raise DirectiveInvalid(
                f"{where}.reason must be printable text of at most {MAX_REASON} characters"
            )
        kept.append(KeptApp(name, reason))
    return tuple(sorted(kept, key=lambda k: k.name))


def _command(data: object) -> CommandEntry | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise DirectiveInvalid("directive.command must be an object or null")
    _known_fields("directive.command", data, frozenset({"id", "action"}))
    command_id, action = data.get("id"), data.get("action")
    if type(command_id) is not int or command_id < 1:
        raise DirectiveInvalid("directive.command.id must be a command id")
    if (
        not isinstance(action, str)
        or not 1 <= len(action) <= MAX_ACTION
        or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in action)
    ):
        raise DirectiveInvalid("directive.command.action must be an action name")
    return CommandEntry(command_id, action)


def directive_to_json(directive: Directive) -> dict[str, Any]:
    """The wire form of ``directive`` (``parse_directive(directive_to_json(d)) == d``)."""
    firmware = directive.firmware
    return {
        "etag": directive.etag,
        "firmware": None
        if firmware is None
        else {
            "target": firmware.target,
            "version": firmware.version,
            "campaign": firmware.campaign,
        },
        "apps": None
        if directive.apps is None
        else [
            {"name": a.name, "version": a.version, "target": a.target, "config": a.config}
            for a in directive.apps
        ],
        "kept_apps": [{"name": k.name, "reason": k.reason} for k in directive.kept_apps],
        "command": None
        if directive.command is None
        else {"id": directive.command.id, "action": directive.command.action},
        "window": None if directive.window is None else directive.window.to_json(),
        "poll_seconds": directive.poll_seconds,
        "jitter_seconds": directive.jitter_seconds,
    }
