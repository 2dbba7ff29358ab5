"""Insert-or-update of rows by their key, on PostgreSQL and SQLite (``ON CONFLICT``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table


def upsert(
    conn: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    keys: Sequence[str],
    columns: Sequence[str],
) -> None:
    """Insert ``rows``; a row whose ``keys`` exist already gets ``columns`` updated instead.
    Atomic per row on both backends, so concurrent writers never collide on the key."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table)
        statement: Any = pg.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={c: pg.excluded[c] for c in columns},
        )
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table)
        statement = lite.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={c: lite.excluded[c] for c in columns},
        )
    conn.execute(statement, rows)


def insert_missing(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, skipping any whose primary key exists (``ON CONFLICT DO NOTHING``)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).on_conflict_do_nothing(), rows)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).on_conflict_do_nothing(), rows)
