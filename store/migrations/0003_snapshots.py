"""Snapshots of the read models at a log position, so a rebuild replays only the tail."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    class SnapshotRow(peewee.Model):
        position = peewee.BigIntegerField(index=True)
        created_at = peewee.DateTimeField()
        data = peewee.TextField()

        class Meta:
            database = db
            table_name = "snapshots"

    db.create_tables([SnapshotRow])


def down(migrator: Any, db: peewee.Database) -> None:
    db.execute_sql("DROP TABLE IF EXISTS snapshots")
