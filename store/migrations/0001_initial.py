"""Initial schema: the event log, the read models for jobs, actions, approvals, contacts,
and the followers' cursors. Frozen copies of the models, independent of store/models.py."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class EventRecord(Base):
        position = peewee.BigAutoField()
        event_id = peewee.CharField(max_length=36, unique=True)
        stream_id = peewee.CharField(max_length=200)
        version = peewee.IntegerField()
        type = peewee.CharField(max_length=100, index=True)
        data = peewee.TextField()
        metadata = peewee.TextField()
        correlation_id = peewee.CharField(max_length=64, null=True, index=True)
        idempotency_key = peewee.CharField(max_length=255, null=True, unique=True)
        recorded_at = peewee.DateTimeField()

        class Meta:
            table_name = "events"
            indexes = ((("stream_id", "version"), True),)

    class JobRow(Base):
        job_id = peewee.CharField(max_length=32, primary_key=True)
        agent = peewee.CharField(max_length=100)
        status = peewee.CharField(max_length=32, index=True)
        text = peewee.TextField()
        channel = peewee.CharField(max_length=32)
        chat_id = peewee.CharField(max_length=128)
        requested_by = peewee.CharField(max_length=200)
        requested_at = peewee.DateTimeField()
        started_at = peewee.DateTimeField(null=True)
        finished_at = peewee.DateTimeField(null=True)
        updated_at = peewee.DateTimeField()
        attempts = peewee.IntegerField(default=0)
        open_actions = peewee.IntegerField(default=0)
        model_calls = peewee.IntegerField(default=0)
        tokens = peewee.IntegerField(default=0)
        summary = peewee.TextField(default="")
        error = peewee.TextField(null=True)

        class Meta:
            table_name = "jobs"

    class ActionRow(Base):
        action_id = peewee.CharField(max_length=32, primary_key=True)
        job_id = peewee.CharField(max_length=32, index=True)
        connector = peewee.CharField(max_length=64)
        action = peewee.CharField(max_length=64)
        params = peewee.TextField()
        idempotency_key = peewee.CharField(max_length=255, unique=True)
        summary = peewee.TextField()
        contact_id = peewee.CharField(max_length=32, null=True)
        status = peewee.CharField(max_length=32, index=True)
        attempts = peewee.IntegerField(default=0)
        result = peewee.TextField(default="")
        error = peewee.TextField(null=True)
        updated_at = peewee.DateTimeField()

        class Meta:
            table_name = "actions"

    class ApprovalRow(Base):
        token = peewee.CharField(max_length=32, primary_key=True)
        action_id = peewee.CharField(max_length=32, index=True)
        job_id = peewee.CharField(max_length=32, index=True)
        status = peewee.CharField(max_length=32, index=True)
        requested_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        decided_by = peewee.CharField(max_length=200, null=True)
        decided_at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "approvals"

    class ContactRow(Base):
        contact_id = peewee.CharField(max_length=32, primary_key=True)
        name = peewee.CharField(max_length=200)
        email = peewee.CharField(max_length=320, unique=True)
        company = peewee.CharField(max_length=200)
        created_at = peewee.DateTimeField()
        jobs = peewee.IntegerField(default=0)

        class Meta:
            table_name = "contacts"

    class CursorRow(Base):
        name = peewee.CharField(max_length=100, primary_key=True)
        position = peewee.BigIntegerField()

        class Meta:
            table_name = "cursors"

    db.create_tables([EventRecord, JobRow, ActionRow, ApprovalRow, ContactRow, CursorRow])


def down(migrator: Any, db: peewee.Database) -> None:
    for table in ("cursors", "contacts", "approvals", "actions", "jobs", "events"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
