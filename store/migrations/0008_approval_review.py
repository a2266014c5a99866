"""Reviewing proposals: highlighted flags, fact bindings, what an action replaces and whether
it is a quick draft; reminders and pending edits on approvals."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    migrator.migrate(
        migrator.add_column("actions", "flags", peewee.TextField(default="[]")),
        migrator.add_column("actions", "bindings", peewee.TextField(default="{}")),
        migrator.add_column("actions", "revises", peewee.CharField(max_length=32, null=True)),
        migrator.add_column("actions", "preliminary", peewee.BooleanField(default=False)),
        migrator.add_column("approvals", "reminded_at", peewee.DateTimeField(null=True)),
        migrator.add_column("approvals", "edit_chat", peewee.CharField(max_length=300, null=True)),
        migrator.add_column("approvals", "edit_requested_at", peewee.DateTimeField(null=True)),
    )


def down(migrator: Any, db: peewee.Database) -> None:
    migrator.migrate(
        migrator.drop_column("actions", "flags"),
        migrator.drop_column("actions", "bindings"),
        migrator.drop_column("actions", "revises"),
        migrator.drop_column("actions", "preliminary"),
        migrator.drop_column("approvals", "reminded_at"),
        migrator.drop_column("approvals", "edit_chat"),
        migrator.drop_column("approvals", "edit_requested_at"),
    )
