"""Replay: rebuild the read models from the log and prove they match the live ones.

``verify`` applies every event to empty projection tables in a scratch SQLite database and
compares them, row by row, with the live tables (SQLite or PostgreSQL). Invariant 5: replay
converges, so any difference is a bug worth seeing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import peewee

from store import projections, snapshots
from store.log import EventLog
from store.models import PROJECTION_MODELS, BaseModel


@dataclass(frozen=True)
class Difference:
    table: str
    key: str
    live: dict[str, Any] | None
    replayed: dict[str, Any] | None

    def __str__(self) -> str:
        if self.live is None:
            return (
                f"{self.table}[{self.key}]: missing from the live table; replay has {self.replayed}"
            )
        if self.replayed is None:
            return f"{self.table}[{self.key}]: in the live table but not produced by replay: {self.live}"
        fields = sorted(k for k in self.live if self.live.get(k) != self.replayed.get(k))
        changes = ", ".join(
            f"{f}: live={self.live.get(f)!r} replay={self.replayed.get(f)!r}" for f in fields
        )
        return f"{self.table}[{self.key}]: {changes}"


@dataclass(frozen=True)
class VerifyReport:
    events: int
    rows: int
    differences: tuple[Difference, ...]
    snapshot_position: int = 0  # 0: no snapshot to check

    @property
    def ok(self) -> bool:
        return not self.differences


def _normal(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        try:
            return (
                datetime.fromisoformat(value)
                .replace(tzinfo=None)
                .isoformat(timespec="microseconds")
            )
        except ValueError:
            return value
    return value


def _rows(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    pk: str = model._meta.primary_key.name  # type: ignore[union-attr]
    rows = cast(list[dict[str, Any]], list(model.select().dicts()))
    return {str(row[pk]): {k: _normal(v) for k, v in row.items()} for row in rows}


def _replay_into_scratch(
    log: EventLog, *, from_snapshot: bool
) -> tuple[dict[str, dict[str, dict[str, Any]]], int]:
    scratch = peewee.SqliteDatabase(":memory:")
    count = 0
    with scratch.bind_ctx(PROJECTION_MODELS):
        scratch.create_tables(PROJECTION_MODELS)
        with scratch.atomic():
            after = snapshots.restore_latest() if from_snapshot else 0
            rows = projections.Rows(scratch, empty=after == 0)
            while chunk := log.read_all(after=after, limit=2000):
                projections.apply(scratch, chunk, rows)
                count += len(chunk)
                after = chunk[-1].position
            rows.flush()
        replayed = {model._meta.table_name: _rows(model) for model in PROJECTION_MODELS}
    scratch.close()
    return replayed, count


def _compare(
    live: dict[str, dict[str, dict[str, Any]]],
    replayed: dict[str, dict[str, dict[str, Any]]],
    label: str,
) -> list[Difference]:
    differences = []
    for table, rows in live.items():
        other = replayed[table]
        for key in sorted(set(rows) | set(other)):
            if rows.get(key) != other.get(key):
                differences.append(
                    Difference(f"{table} ({label})", key, rows.get(key), other.get(key))
                )
    return differences


def verify(log: EventLog) -> VerifyReport:
    """Rebuild every projection in a scratch database, from the first event and from the latest
    snapshot, and compare both with the live tables."""
    live = {model._meta.table_name: _rows(model) for model in PROJECTION_MODELS}
    replayed, count = _replay_into_scratch(log, from_snapshot=False)
    differences = _compare(live, replayed, "from the first event")
    position = snapshots.latest_position()
    if position:
        from_snapshot, _ = _replay_into_scratch(log, from_snapshot=True)
        differences += _compare(live, from_snapshot, f"from the snapshot at {position}")
    return VerifyReport(
        events=count,
        rows=sum(len(r) for r in live.values()),
        differences=tuple(differences),
        snapshot_position=position,
    )
