"""Snapshots of the read models: rebuilds replay only the events after the latest one.

A snapshot is taken inside the append lock (IMMEDIATE transaction on SQLite, the append
advisory lock on PostgreSQL), so its rows are exactly the read models at its position.
``opcore replay --verify`` checks both paths: from the first event, and from the latest
snapshot plus the tail; both must equal the live tables.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import peewee

from store.db import PG_APPEND_LOCK, is_postgres
from store.models import PROJECTION_MODELS, BaseModel, EventRecord, SnapshotRow

KEEP = 3


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    return value


def _dump(model: type[BaseModel]) -> list[dict[str, Any]]:
    rows = cast(list[dict[str, Any]], list(model.select().dicts()))
    return [{k: _encode(v) for k, v in row.items()} for row in rows]


def take(db: peewee.Database) -> int:
    """Snapshot every read model at the current head; keep the last few. Returns the position."""
    with db.atomic():
        if is_postgres(db):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PG_APPEND_LOCK,))
        position = int(EventRecord.select(peewee.fn.MAX(EventRecord.position)).scalar() or 0)
        data = {model._meta.table_name: _dump(model) for model in PROJECTION_MODELS}
        SnapshotRow.create(
            position=position,
            created_at=datetime.now(UTC).replace(tzinfo=None),
            data=json.dumps(data),
        )
        old = [
            r.id
            for r in SnapshotRow.select(SnapshotRow.id)
            .order_by(SnapshotRow.position.desc())
            .offset(KEEP)
        ]
        if old:
            SnapshotRow.delete().where(SnapshotRow.id.in_(old)).execute()
    return position


def latest_position() -> int:
    row = SnapshotRow.select(SnapshotRow.position).order_by(SnapshotRow.position.desc()).first()
    return 0 if row is None else int(row.position)


def restore_latest() -> int:
    """Fill the (empty) read models from the latest snapshot. Returns its position, 0 if none."""
    row = SnapshotRow.select().order_by(SnapshotRow.position.desc()).first()
    if row is None:
        return 0
    data: dict[str, list[dict[str, Any]]] = json.loads(row.data)
    for model in PROJECTION_MODELS:
        rows = [{k: _decode(v) for k, v in r.items()} for r in data.get(model._meta.table_name, [])]
        for start in range(0, len(rows), 500):
            model.insert_many(rows[start : start + 500]).execute()
    return int(row.position)


def due(*, head: int, every: int) -> bool:
    return head - latest_position() >= every
