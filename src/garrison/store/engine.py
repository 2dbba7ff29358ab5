"""Opening the database: SQLite in the data directory by default, or any PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

from garrison.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    """The URL of the embedded default database inside ``data_dir``."""
    return f"sqlite:///{(data_dir / 'garrison.db').resolve()}"


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and select the psycopg 3 driver for it."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_engine(url: str, *, for_writes: bool = True) -> Engine:
    """An engine for ``url``.

    SQLite gets WAL, a busy timeout and, for writes, ``BEGIN IMMEDIATE`` so that two writers
    never deadlock upgrading a read lock; the read engine uses deferred transactions.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if for_writes else "BEGIN")

        return engine
    if url.startswith("postgresql"):
        # No pool_pre_ping: it costs a round trip per transaction. After a database restart,
        # each stale pooled connection fails one request and is replaced.
        return create_engine(url, pool_size=10, max_overflow=10, pool_recycle=3600)
    raise ConfigError(
        f"unsupported database URL {url.split(':', 1)[0]!r}",
        hint="use sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
    )


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database)."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the newest migration."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head
