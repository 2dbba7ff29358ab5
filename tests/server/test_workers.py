"""``garrison server --workers 2``: two processes on one port, and both stop with the parent."""

from __future__ import annotations

import base64
import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import make_csr, make_fleet


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[1] == str(pid):
                found.add(int(entry.name))
    return found


def test_two_workers_serve_and_stop_together(tmp_path: Path) -> None:
    running = make_fleet(tmp_path / "fleet", f"sqlite:///{tmp_path / 'g.db'}")

    from garrison.access.roles import Role
    from garrison.identity.batches import BatchRequest, create_batch
    from garrison.identity.principals import create_principal

    now = dt.datetime.now(dt.UTC)
    with running.database.write() as conn:
        create_principal(conn, "m", Role.MANUFACTURER, now)
        batch = create_batch(
            conn, BatchRequest("b", "m", "gw", [f"W-{i}" for i in range(12)], None, 1), now
        )
    server = subprocess.Popen(
        [sys.executable, "-m", "garrison.cli", "server", "--data-dir", str(tmp_path / "fleet"),
         "--listen", f"127.0.0.1:{running.port}", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with running.client() as client:
                    if (
                        client.get("/healthz").status_code == 200
                        and len(_children(server.pid)) >= 2
                    ):
                        break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            time.sleep(0.2)
        workers = _children(server.pid)
        for serial, token in batch.tokens:  # a fresh connection each: the kernel spreads them
            with running.client() as client:
                response = client.post(
                    "/.well-known/est/simpleenroll",
                    content=base64.encodebytes(make_csr(serial or "")[1]),
                    headers={"Content-Type": "application/pkcs10"},
                    auth=(serial or "", token),
                )
            assert response.status_code == 200, response.text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    time.sleep(0.5)
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in workers)
    with running.database.read() as conn:
        from sqlalchemy import func, select

        from garrison.store.tables import certificates

        assert conn.execute(select(func.count()).select_from(certificates)).scalar_one() == 12


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
