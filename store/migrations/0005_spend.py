"""Spend: model cost per budget scope and period, and each job's cost."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    migrator.migrate(migrator.add_column("jobs", "cost_usd", peewee.FloatField(default=0.0)))

    class SpendRow(peewee.Model):
        key = peewee.CharField(max_length=200, primary_key=True)
        scope = peewee.CharField(max_length=120)
        period = peewee.CharField(max_length=40)
        usd = peewee.FloatField(default=0.0)
        calls = peewee.IntegerField(default=0)
        warned = peewee.BooleanField(default=False)

        class Meta:
            database = db
            table_name = "spend"

    db.create_tables([SpendRow])


def down(migrator: Any, db: peewee.Database) -> None:
    db.execute_sql("DROP TABLE IF EXISTS spend")
    migrator.migrate(migrator.drop_column("jobs", "cost_usd"))
