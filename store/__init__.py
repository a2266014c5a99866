"""The event log, its projections (read models) and the database they live in."""

from __future__ import annotations

from dataclasses import dataclass

import peewee

from store.db import open_database
from store.log import EventLog
from store.migrate import migrate


@dataclass(frozen=True)
class Store:
    """The opened database and its log. Queries live in :mod:`store.queries`."""

    db: peewee.Database
    log: EventLog

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()


def open_store(url: str, *, run_migrations: bool = True) -> Store:
    """Open the database at ``url``, bring its schema up to date and return the store."""
    db = open_database(url)
    if run_migrations:
        migrate(db)
    return Store(db=db, log=EventLog(db))


__all__ = ["Store", "open_store"]
