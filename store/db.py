"""Opening the database: SQLite (WAL) or PostgreSQL, through the same Peewee models."""

from __future__ import annotations

from pathlib import Path

import peewee
from playhouse.db_url import parse

from store.errors import DatabaseError

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 10_000,
    "foreign_keys": 1,
}

# Appends (and snapshots) on PostgreSQL hold this transaction-scoped advisory lock, so event
# positions commit in order and a snapshot sees exactly the events before its position.
PG_APPEND_LOCK = 0x0C0E_0002

# Models bind to this proxy; open_database() points it at the real database.
database_proxy = peewee.DatabaseProxy()


def open_database(url: str) -> peewee.Database:
    """Open ``sqlite:///path`` or ``postgresql://…`` and bind the models to it."""
    if url.startswith("sqlite://"):
        params = parse(url)
        path = params.pop("database")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: a writer takes the lock when its transaction begins, so two writers
        # queue behind busy_timeout instead of failing on a lock upgrade.
        db: peewee.Database = peewee.SqliteDatabase(
            path, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE", check_same_thread=False
        )
    elif url.startswith(("postgresql://", "postgres://")):
        params = parse(url.replace("postgres://", "postgresql://", 1))
        db = peewee.PostgresqlDatabase(params.pop("database"), **params)
    else:
        raise DatabaseError(f"unsupported database URL {url!r}: use sqlite:// or postgresql://")
    try:
        db.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        raise DatabaseError(f"cannot open the database at {redact(url)}: {exc}") from exc
    database_proxy.initialize(db)
    return db


def is_postgres(db: peewee.Database) -> bool:
    return isinstance(db, peewee.PostgresqlDatabase)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
