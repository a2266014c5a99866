"""Versioned schema migrations (peewee's migration runner over ``store/migrations``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import peewee
from playhouse.migrations import MigrationError as PeeweeMigrationError
from playhouse.migrations import Runner

from store.db import is_postgres
from store.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_LOCK_ID = 0x0C0E_0001  # one process migrates at a time


def migrate(db: peewee.Database) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to call from many processes."""
    runner = Runner(db, str(MIGRATIONS_DIR), table_name="schema_migrations")
    try:
        with _exclusive(db):
            return list(runner.up())
    except (PeeweeMigrationError, peewee.DatabaseError) as exc:
        # Another process may have applied the same migration a moment earlier.
        if not pending(db):
            return []
        raise MigrationError(f"schema migration failed: {exc}") from exc


def pending(db: peewee.Database) -> list[str]:
    runner = Runner(db, str(MIGRATIONS_DIR), table_name="schema_migrations")
    return [m.name for m in runner.status() if not m.applied]


@contextlib.contextmanager
def _exclusive(db: peewee.Database) -> Iterator[None]:
    if is_postgres(db):
        db.execute_sql("SELECT pg_advisory_lock(%s)", (_PG_LOCK_ID,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (_PG_LOCK_ID,))
    else:
        # SQLite: the migration's own IMMEDIATE transaction serialises writers.
        yield
