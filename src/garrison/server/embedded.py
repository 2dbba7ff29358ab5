"""Running the control plane inside this process, on a background thread: for the demo,
the tests and the benchmarks. The server is the same one ``garrison server`` runs."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

from garrison.errors import ConfigError
from garrison.identity.fleet import Fleet
from garrison.server.run import Listen, build_server
from garrison.store.database import Database


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """``with EmbeddedServer(fleet, db, listen) as srv:`` serves until the block ends."""

    def __init__(self, fleet: Fleet, database: Database, listen: Listen) -> None:
        self.listen = listen
        self._server = build_server(fleet, database, listen)
        self._thread = threading.Thread(
            target=self._server.run, name="garrison-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"https://{self.listen.host}:{self.listen.port}"

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the control plane did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
