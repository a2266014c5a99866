"""Memory: semantic memories and canonical facts with their history (projections)."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    class MemoryRow(peewee.Model):
        memory_id = peewee.CharField(max_length=32, primary_key=True)
        kind = peewee.CharField(max_length=32, index=True)
        text = peewee.TextField()
        contact_id = peewee.CharField(max_length=32, null=True, index=True)
        job_id = peewee.CharField(max_length=32, null=True)
        source = peewee.CharField(max_length=200)
        by = peewee.CharField(max_length=200)
        status = peewee.CharField(max_length=16, default="active", index=True)
        event_id = peewee.CharField(max_length=36)
        created_at = peewee.DateTimeField()
        forgotten_at = peewee.DateTimeField(null=True)
        forgotten_by = peewee.CharField(max_length=200, null=True)

        class Meta:
            database = db
            table_name = "memories"

    class FactRow(peewee.Model):
        fact_id = peewee.CharField(max_length=32, primary_key=True)
        subject = peewee.CharField(max_length=100, index=True)
        key = peewee.CharField(max_length=100)
        value = peewee.TextField()
        slot = peewee.CharField(max_length=300, index=True)
        status = peewee.CharField(max_length=16, default="current")
        source = peewee.CharField(max_length=200)
        by = peewee.CharField(max_length=200)
        job_id = peewee.CharField(max_length=32, null=True)
        event_id = peewee.CharField(max_length=36)
        event_type = peewee.CharField(max_length=100)
        asserted_at = peewee.DateTimeField()
        ended_at = peewee.DateTimeField(null=True)
        replaced_by = peewee.CharField(max_length=32, null=True)
        replaces = peewee.CharField(max_length=32, null=True)

        class Meta:
            database = db
            table_name = "facts"

    class FactSlotRow(peewee.Model):
        slot = peewee.CharField(max_length=300, primary_key=True)
        fact_id = peewee.CharField(max_length=32, null=True)

        class Meta:
            database = db
            table_name = "fact_slots"

    db.create_tables([MemoryRow, FactRow, FactSlotRow])


def down(migrator: Any, db: peewee.Database) -> None:
    for table in ("fact_slots", "facts", "memories"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
