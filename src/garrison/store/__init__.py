"""Persistence: SQLAlchemy Core tables, the engine (SQLite or PostgreSQL), Alembic migrations."""
