"""Running the control plane: uvicorn with TLS and the client-certificate seam."""

from __future__ import annotations

from dataclasses import dataclass

import uvicorn

from garrison.errors import ConfigError
from garrison.identity.batches import manufacturer_cas
from garrison.identity.fleet import Fleet
from garrison.server.app import create_app
from garrison.server.context import ControlPlane, trust_manufacturer_ca
from garrison.server.tls import TlsScopeProtocol, server_ssl_context
from garrison.store.database import Database


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"--listen must be HOST:PORT, not {text!r}")
        return cls(host.strip("[]") or "127.0.0.1", int(port))


def build_server(
    fleet: Fleet, database: Database, listen: Listen, log_level: str = "warning"
) -> uvicorn.Server:
    """A configured uvicorn server (not yet started) serving HTTPS for ``fleet``."""
    app = create_app(fleet, database)
    context = server_ssl_context(
        fleet.paths.server_cert,
        fleet.server_key_path,
        fleet.secrets.passphrase,
        fleet.paths.ca_chain,
    )
    plane: ControlPlane = app.state.control_plane
    plane.tls = context
    with database.read() as conn:
        for ca in manufacturer_cas(conn):
            trust_manufacturer_ca(plane, ca)
    config = uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        http=TlsScopeProtocol,
        loop="uvloop",
        log_level=log_level,
        access_log=False,
        server_header=False,
        # TLS ends here: no proxy's X-Forwarded-* headers to trust (and looking for them cost
        # ~10 % of an idle poll's CPU, docs/performance.md)
        proxy_headers=False,
        timeout_keep_alive=30,
        ssl_context_factory=lambda _config, _default: context,
    )
    return uvicorn.Server(config)


def serve(fleet: Fleet, database: Database, listen: Listen, log_level: str = "warning") -> None:
    build_server(fleet, database, listen, log_level).run()
