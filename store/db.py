"""Opening the database: SQLite (WAL) or PostgreSQL, through the same Peewee models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


class ReconnectingPostgresqlDatabase(peewee.PostgresqlDatabase):
    """PostgreSQL whose threads get a new connection after the server dropped theirs.

    A restart, a failover or ``pg_terminate_backend`` closes every connection. psycopg2 notices
    on the next statement and marks the connection closed; plain peewee would go on handing that
    closed connection to its thread, so every later query of a long-running process (a worker,
    the notifier, the reconciler) failed with "connection already closed" until it restarted.
    Here, outside a transaction, a closed connection is replaced before it is used, and a BEGIN
    or a SELECT that failed because the connection was gone is sent once more on a new one:
    nothing ran on the dead connection, and neither statement writes. Inside a transaction the
    error surfaces as before (a ``DatabaseError``), and the caller's retry starts over.
    """

    def _lost(self) -> bool:
        state = getattr(self, "_state", None)  # peewee's per-thread connection state
        conn = getattr(state, "conn", None)
        return conn is not None and bool(getattr(conn, "closed", 0))

    def cursor(self, named_cursor: Any = None) -> Any:
        if self._lost() and not self.in_transaction():
            self.close()  # the next line connects again (autoconnect)
        return super().cursor(named_cursor)  # type: ignore[no-untyped-call]

    def _again(self, exc: Exception) -> bool:
        return isinstance(exc, peewee.OperationalError | peewee.InterfaceError) and (
            self._lost() and not self.in_transaction()
        )

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        try:
            return super().execute_sql(sql, params)  # type: ignore[no-untyped-call]
        except Exception as exc:
            if not (self._again(exc) and sql.lstrip()[:6].upper() == "SELECT"):
                raise
        return super().execute_sql(sql, params)  # type: ignore[no-untyped-call]

    def commit(self) -> None:
        if self._lost():  # never COMMIT on a new connection what the lost one held
            raise peewee.OperationalError("the connection was lost inside the transaction")
        super().commit()

    def begin(self, isolation_level: Any = None) -> None:
        try:
            super().begin(isolation_level)
        except Exception as exc:
            if not self._again(exc):
                raise
            super().begin(isolation_level)


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
        db = ReconnectingPostgresqlDatabase(params.pop("database"), **params)
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
