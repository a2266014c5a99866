"""Durable execution: retry times and start times for the reconciler, questions to the
operator, paused agents, and the inbound message ids seen (deduplication)."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    migrator.migrate(
        migrator.add_column("jobs", "next_attempt_at", peewee.DateTimeField(null=True)),
        migrator.add_column("actions", "started_at", peewee.DateTimeField(null=True)),
        migrator.add_column("actions", "next_attempt_at", peewee.DateTimeField(null=True)),
    )

    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class QuestionRow(Base):
        token = peewee.CharField(max_length=32, primary_key=True)
        kind = peewee.CharField(max_length=32)
        job_id = peewee.CharField(max_length=32, index=True)
        action_id = peewee.CharField(max_length=32, null=True, index=True)
        text = peewee.TextField()
        choices = peewee.TextField()
        status = peewee.CharField(max_length=32, index=True)
        asked_at = peewee.DateTimeField()
        answer = peewee.CharField(max_length=32, null=True)
        answered_by = peewee.CharField(max_length=200, null=True)
        answered_at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "questions"

    class AgentStateRow(Base):
        agent = peewee.CharField(max_length=100, primary_key=True)
        paused = peewee.BooleanField(default=False)
        by = peewee.CharField(max_length=200)
        updated_at = peewee.DateTimeField()

        class Meta:
            table_name = "agent_states"

    class InboundRow(Base):
        key = peewee.CharField(max_length=255, primary_key=True)
        seen_at = peewee.DateTimeField()

        class Meta:
            table_name = "inbound"

    db.create_tables([QuestionRow, AgentStateRow, InboundRow])


def down(migrator: Any, db: peewee.Database) -> None:
    for table in ("inbound", "agent_states", "questions"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
    migrator.migrate(
        migrator.drop_column("jobs", "next_attempt_at"),
        migrator.drop_column("actions", "started_at"),
        migrator.drop_column("actions", "next_attempt_at"),
    )
