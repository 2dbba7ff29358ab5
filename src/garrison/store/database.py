"""The database handle the services use: separate read and write transactions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from sqlalchemy import Connection, Engine

from garrison.store.engine import migrate, open_engine


class Database:
    """Write transactions serialize where the backend needs it; reads never block writers."""

    def __init__(self, url: str) -> None:
        self._writer: Engine = open_engine(url, for_writes=True)
        self._reader: Engine = (
            open_engine(url, for_writes=False)
            if self._writer.dialect.name == "sqlite"
            else self._writer
        )

        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if self._writer.dialect.name == "sqlite" else nullcontext()
        )

    @property
    def dialect(self) -> str:
        return self._writer.dialect.name

    def migrate(self) -> None:
        migrate(self._writer)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits on success and rolls back on any exception.

        SQLite has one writer at a time; threads of this process queue on a lock instead of
        colliding on ``BEGIN IMMEDIATE`` and sleeping through SQLite's busy back-off.
        """
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._reader.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()
