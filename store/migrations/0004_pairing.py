"""Pairing: one-time codes that let an operator claim the bot from a chat, and the
operators paired that way (in addition to OPCORE_OPERATORS)."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class PairingCodeRow(Base):
        code_hash = peewee.CharField(max_length=64, primary_key=True)
        channel = peewee.CharField(max_length=32)
        expires_at = peewee.DateTimeField()
        used_by = peewee.CharField(max_length=200, null=True)

        class Meta:
            table_name = "pairing_codes"

    class PairedOperatorRow(Base):
        operator = peewee.CharField(max_length=200, primary_key=True)
        chat_id = peewee.CharField(max_length=128)
        paired_at = peewee.DateTimeField()

        class Meta:
            table_name = "paired_operators"

    db.create_tables([PairingCodeRow, PairedOperatorRow])


def down(migrator: Any, db: peewee.Database) -> None:
    for table in ("paired_operators", "pairing_codes"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
