"""What every command shares: the data directory option, error rendering, the API client."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from garrison.agent.est_client import tls_context
from garrison.errors import ConfigError, GarrisonError
from garrison.settings import default_data_dir, read_settings

if TYPE_CHECKING:
    from garrison.store.database import Database

console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Fleet data directory [default: $GARRISON_DATA_DIR or ./.garrison]"
    ),
]
ServerUrl = Annotated[
    str | None,
    typer.Option("--server", help="Control plane URL [default: public_url of the fleet]"),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="GARRISON_TOKEN", help="API token [default: DATA_DIR/admin.token]"
    ),
]


def resolve_data_dir(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else default_data_dir()


def add_row(table: Table, *cells: object) -> None:
    """Cells as plain text: values from the server (serials, actors) are never markup."""
    table.add_row(*(Text(str(cell)) for cell in cells))


def transfer_progress() -> Progress:
    """A progress bar for an upload or a download: bytes done, rate."""
    return Progress(
        *Progress.get_default_columns()[:1],
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    )


def fail(exc: GarrisonError) -> typer.Exit:
    """Print ``exc`` (and its hint) as the CLI's error message; raise the exit it returns."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}")
    return typer.Exit(code=2)


def _os_error(exc: OSError) -> GarrisonError:
    """An OSError as a message that names the file it is about, when it names one."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return GarrisonError(reason)
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {os.fsdecode(exc.filename2)}"
    return GarrisonError(f"{where}: {reason}")


@contextlib.contextmanager
def failing() -> Iterator[None]:
    """The body of a command: a GarrisonError (message and hint) or an OSError (with the
    file it names) raised inside becomes the CLI's error message and exit code 2."""
    try:
        yield
    except GarrisonError as exc:
        raise fail(exc) from exc
    except OSError as exc:
        raise fail(_os_error(exc)) from exc


class ApiClient:
    """The admin REST API, over TLS pinned to the fleet root."""

    def __init__(self, data_dir: Path | None, server: str | None, token: str | None) -> None:
        root = resolve_data_dir(data_dir)
        settings = read_settings(root)
        if token is None:
            token_file = root / "admin.token"
            if not token_file.exists():
                raise ConfigError("no API token given", hint="pass --token or set GARRISON_TOKEN")
            token = token_file.read_text().strip()
        self._client = httpx.Client(
            base_url=(server or settings.public_url).rstrip("/") + "/api/v1",
            verify=tls_context(os.fspath(root / "pki" / "root-ca.pem")),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60.0,
        )

    def call(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        """The JSON answer (or, with ``raw``, the bytes); any HTTP error becomes an error."""
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the control plane: {exc}", hint="is 'garrison server' running?"
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            raise GarrisonError(
                f"{response.status_code}: {body.get('detail')}", hint=str(body.get("hint", ""))
            )
        return response.content if raw else response.json()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def api_call(
    data_dir: Path | None, server: str | None, token: str | None, *args: Any, **kwargs: Any
) -> Any:
    """One admin API call; any failure becomes the CLI's error message and exit code 2."""
    with failing(), ApiClient(data_dir, server, token) as client:
        return client.call(*args, **kwargs)


@contextlib.contextmanager
def open_database(url: str) -> Iterator[Database]:
    """The database at ``url`` for a ``with`` block, disposed of (connections closed) after."""
    from garrison.store.database import Database

    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()
