"""A cache of model answers keyed by model and prompt digest (process state, not events)."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    class ModelCacheRow(peewee.Model):
        key = peewee.CharField(max_length=64, primary_key=True)
        model = peewee.CharField(max_length=200)
        provider = peewee.CharField(max_length=64)
        text = peewee.TextField()
        prompt_tokens = peewee.IntegerField()
        completion_tokens = peewee.IntegerField()
        created_at = peewee.DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "model_cache"

    db.create_tables([ModelCacheRow])


def down(migrator: Any, db: peewee.Database) -> None:
    db.execute_sql("DROP TABLE IF EXISTS model_cache")
