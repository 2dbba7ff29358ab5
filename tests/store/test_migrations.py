"""The Alembic migrations create exactly the schema the code declares, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from garrison.store.database import Database
from garrison.store.engine import open_engine, schema_is_current
from garrison.store.tables import metadata


def test_migrations_match_the_tables(db_url: str) -> None:
    database = Database(db_url)
    database.migrate()
    database.migrate()  # idempotent
    engine = open_engine(db_url, for_writes=False)
    try:
        assert schema_is_current(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        engine.dispose()
        database.dispose()
