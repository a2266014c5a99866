"""Money columns as double precision: peewee's FloatField is REAL (4 bytes) on PostgreSQL,
which lost digits that a replay keeps. SQLite's REAL is already 8 bytes."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("ALTER TABLE jobs ALTER COLUMN cost_usd TYPE DOUBLE PRECISION")
        db.execute_sql("ALTER TABLE spend ALTER COLUMN usd TYPE DOUBLE PRECISION")


def down(migrator: Any, db: peewee.Database) -> None:
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("ALTER TABLE jobs ALTER COLUMN cost_usd TYPE REAL")
        db.execute_sql("ALTER TABLE spend ALTER COLUMN usd TYPE REAL")
