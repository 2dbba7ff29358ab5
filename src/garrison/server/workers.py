"""Several control-plane processes on one port (``garrison server --workers N``).

Each worker is a separate process that loads the fleet itself (so a PKCS#11 token is opened
per process, as PKCS#11 requires), opens its own database pool, and binds its own socket
with ``SO_REUSEPORT``: the kernel spreads incoming connections across the workers.
The parent migrates the database once, then only supervises.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
from pathlib import Path

from garrison.identity.fleet import load_fleet
from garrison.server.run import Listen, build_server
from garrison.store.database import Database


def reuseport_socket(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listen.host, listen.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(data_dir: str, database_url: str, host: str, port: int, log_level: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    listen = Listen(host, port)
    fleet = load_fleet(Path(data_dir))
    database = Database(database_url)
    build_server(fleet, database, listen, log_level).run(sockets=[reuseport_socket(listen)])


def serve_workers(
    data_dir: Path, database_url: str, listen: Listen, workers: int, log_level: str
) -> None:
    """Run ``workers`` server processes until interrupted; then stop them all."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker,
            args=(str(data_dir), database_url, listen.host, listen.port, log_level),
            name=f"garrison-worker-{n}",
        )
        for n in range(workers)
    ]

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # stop the workers too, not only this parent
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
