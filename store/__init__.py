"""The event log, its projections (read models) and the database they live in."""

from __future__ import annotations

from dataclasses import dataclass

import peewee

from store.db import open_database
from store.log import EventLog
from store.migrate import migrate
from store.models import SnapshotRow


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
    log = EventLog(db)
    if run_migrations:
        applied = migrate(db)
        if REBUILDING_MIGRATIONS.intersection(applied) and log.head():
            # A migration added read models: fill them from the log, and drop the snapshots
            # taken before they existed (they would restore them empty).
            SnapshotRow.delete().execute()
            log.rebuild_projections(from_snapshot=False)
    return Store(db=db, log=log)


# Migrations that add read models derived from events already in the log.
REBUILDING_MIGRATIONS = frozenset({"0009_memory", "0010_business"})


__all__ = ["Store", "open_store"]
