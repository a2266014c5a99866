"""The append-only event log.

``append`` writes a batch of events to one stream in one transaction, checks the stream's
version (optimistic concurrency), honours idempotency keys (a batch whose first key is
already in the log is a duplicate: the stored event holding it is returned, nothing is
written), and
updates the projections in the same transaction, so the read models never lag the log.

On PostgreSQL, appends take a transaction-scoped advisory lock so positions commit in order:
a follower reading ``position > cursor`` can never skip an event committed late.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import peewee

from store import projections, snapshots, sql
from store.db import PG_APPEND_LOCK, is_postgres
from store.errors import ConcurrencyError, DatabaseError, EventSchemaError
from store.events import EventData, Metadata, NewEvent, RecordedEvent, parse_event
from store.models import EventRecord

ANY_VERSION: int | None = None
NO_STREAM = 0


@dataclass(frozen=True)
class AppendResult:
    events: tuple[RecordedEvent, ...]
    duplicate: bool

    @property
    def last_version(self) -> int:
        return self.events[-1].version if self.events else 0


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventLog:
    """Append to and read from the log. One instance per process, shared by threads."""

    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    @property
    def db(self) -> peewee.Database:
        return self._db

    def append(
        self,
        stream_id: str,
        events: Sequence[EventData | NewEvent],
        *,
        metadata: Metadata,
        expected_version: int | None = ANY_VERSION,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id``; see the module docstring for the guarantees."""
        batch = [e if isinstance(e, NewEvent) else NewEvent(e) for e in events]
        if not batch:
            raise EventSchemaError("append needs at least one event")
        try:
            with self._db.atomic():
                if is_postgres(self._db):
                    self._db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PG_APPEND_LOCK,))
                first_key = batch[0].idempotency_key
                if first_key is not None:
                    existing = self._events_from_key(first_key)
                    if existing:
                        return AppendResult(tuple(existing), duplicate=True)
                current = self.stream_version(stream_id)
                if expected_version is not None and current != expected_version:
                    raise ConcurrencyError(stream_id, expected_version, current)
                recorded = self._insert(stream_id, current, batch, metadata)
                projections.apply(self._db, recorded)
                return AppendResult(tuple(recorded), duplicate=False)
        except peewee.IntegrityError as exc:
            # Lost a race the checks above could not see (SQLite has no advisory lock, and
            # a concurrent writer in another process may have committed between them).
            first_key = batch[0].idempotency_key
            if first_key is not None:
                existing = self._events_from_key(first_key)
                if existing:
                    return AppendResult(tuple(existing), duplicate=True)
            actual = self.stream_version(stream_id)
            raise ConcurrencyError(
                stream_id, expected_version if expected_version is not None else actual - 1, actual
            ) from exc
        except (
            peewee.DatabaseError,
            ValueError,
        ) as exc:  # ValueError: e.g. psycopg2 refusing a NUL
            raise DatabaseError(f"append to {stream_id!r} failed: {exc}") from exc

    def _insert(
        self, stream_id: str, current: int, batch: list[NewEvent], metadata: Metadata
    ) -> list[RecordedEvent]:
        now = utcnow()
        meta_json = metadata.model_dump_json()
        rows: list[dict[str, Any]] = [
            {
                "event_id": str(uuid.uuid4()),
                "stream_id": stream_id,
                "version": current + i + 1,
                "type": new.data.type_name,
                "data": new.data.model_dump_json(),
                "metadata": meta_json,
                "correlation_id": metadata.correlation_id,
                "idempotency_key": new.idempotency_key,
                "recorded_at": now.replace(tzinfo=None),
            }
            for i, new in enumerate(batch)
        ]
        positions = {
            version: position
            for position, version in sql.insert_rows(
                self._db, EventRecord, rows, returning="position,version"
            )
        }
        return [
            RecordedEvent(
                position=int(positions[row["version"]]),
                event_id=row["event_id"],
                stream_id=stream_id,
                version=row["version"],
                data=new.data,
                metadata=metadata,
                idempotency_key=new.idempotency_key,
                recorded_at=now,
            )
            for row, new in zip(rows, batch, strict=True)
        ]

    def find_by_key(self, key: str) -> RecordedEvent | None:
        """The event appended with idempotency key ``key``, if any."""
        found = self._events_from_key(key)
        return found[0] if found else None

    def _events_from_key(self, key: str) -> list[RecordedEvent]:
        """The stored event that holds ``key`` (empty if none)."""
        found = sql.execute(
            self._db, f"SELECT {_COLUMNS} FROM events WHERE idempotency_key = ?", [key]
        ).fetchone()
        return [] if found is None else [_from_tuple(tuple(found))]

    # Reading ---------------------------------------------------------------------------

    def stream_version(self, stream_id: str) -> int:
        value = sql.scalar(
            self._db, "SELECT MAX(version) FROM events WHERE stream_id = ?", [stream_id]
        )
        return int(value or 0)

    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        rows = (
            EventRecord.select()
            .where(EventRecord.stream_id == stream_id)
            .order_by(EventRecord.version)
        )
        return [to_recorded(r) for r in rows]

    def read_correlated(self, correlation_id: str) -> list[RecordedEvent]:
        rows = (
            EventRecord.select()
            .where(EventRecord.correlation_id == correlation_id)
            .order_by(EventRecord.position)
        )
        return [to_recorded(r) for r in rows]

    def read_all(
        self, *, after: int = 0, limit: int = 500, types: Iterable[str] = ()
    ) -> list[RecordedEvent]:
        wanted = list(types)
        where = "position > ?"
        if wanted:
            where += f" AND type IN ({', '.join('?' * len(wanted))})"
        cursor = sql.execute(
            self._db,
            f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY position LIMIT ?",
            [after, *wanted, limit],
        )
        return [_from_tuple(r) for r in cursor.fetchall()]

    def iterate(self, *, batch: int = 1000) -> Iterator[RecordedEvent]:
        after = 0
        while True:
            chunk = self.read_all(after=after, limit=batch)
            if not chunk:
                return
            yield from chunk
            after = chunk[-1].position

    def head(self) -> int:
        return int(EventRecord.select(peewee.fn.MAX(EventRecord.position)).scalar() or 0)

    def rebuild_projections(self, *, from_snapshot: bool = True) -> int:
        """Empty the read models and rebuild them: from the latest snapshot plus the events
        after it, or from the first event. Returns the number of events applied."""
        count = 0
        with self._db.atomic():
            if is_postgres(self._db):  # appends wait: none can land between clearing and rebuilding
                self._db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PG_APPEND_LOCK,))
            projections.clear(self._db)
            after = snapshots.restore_latest() if from_snapshot else 0
            # Rows changed by the tail stay in memory until the end: one write per row.
            rows = projections.Rows(self._db, empty=after == 0)
            while chunk := self.read_all(after=after, limit=2000):
                projections.apply(self._db, chunk, rows)
                count += len(chunk)
                after = chunk[-1].position
            rows.flush()
        return count


_COLUMNS = (
    "position, event_id, stream_id, version, type, data, metadata, idempotency_key, recorded_at"
)


@lru_cache(maxsize=1024)
def _metadata(text: str) -> Metadata:
    return Metadata.model_validate_json(text)  # frozen: safe to share; jobs repeat the same one


def _from_tuple(row: tuple[Any, ...]) -> RecordedEvent:
    position, event_id, stream_id, version, type_name, data, metadata, key, recorded_at = row
    if isinstance(recorded_at, str):  # SQLite returns the stored text
        recorded_at = datetime.fromisoformat(recorded_at)
    return RecordedEvent(
        position=int(position),
        event_id=event_id,
        stream_id=stream_id,
        version=int(version),
        data=parse_event(type_name, data),
        metadata=_metadata(metadata),
        idempotency_key=key,
        recorded_at=recorded_at.replace(tzinfo=UTC),
    )


def to_recorded(row: EventRecord) -> RecordedEvent:
    data: dict[str, Any] = json.loads(row.data)
    recorded_at: datetime = row.recorded_at
    if isinstance(recorded_at, str):  # SQLite returns text for some driver versions
        recorded_at = datetime.fromisoformat(recorded_at)
    return RecordedEvent(
        position=int(row.position),
        event_id=row.event_id,
        stream_id=row.stream_id,
        version=int(row.version),
        data=parse_event(row.type, data),
        metadata=Metadata.model_validate_json(row.metadata),
        idempotency_key=row.idempotency_key,
        recorded_at=recorded_at.replace(tzinfo=UTC),
    )
