"""Portable archives: ``opcore export <file>`` and ``opcore import <file>``.

An archive is JSON Lines, one record per line, in this order:

1. ``{"record": "header", "format": "opcore-archive", "version": 1, "schema": …}``
2. every event, in log order (``"record": "event"``: position, id, stream, version, type,
   data, metadata, idempotency key, time);
3. every fact and every memory as the read models hold them (``"record": "fact"`` and
   ``"memory"``), so the archive is readable and the import can prove it reproduced them;
4. ``{"record": "manifest", "counts": {…}, "sha256": {…}}``: per record kind, how many and
   the SHA-256 of their lines in order.

The events are the truth: an import writes them into an empty database, rebuilds every read
model from them, and refuses (rolling everything back) unless the facts and memories it
rebuilt equal the archive's. Secrets never enter the log, and the export checks it: an
archive that would contain a configured secret (a token, an API key) is not written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import peewee

from store import Store
from store.db import PG_APPEND_LOCK, is_postgres
from store.errors import ArchiveError, DatabaseError
from store.migrate import MIGRATIONS_DIR
from store.models import EventRecord, FactRow, MemoryRow

FORMAT = "opcore-archive"
VERSION = 1
KINDS = ("event", "fact", "memory")
_BATCH = 1000


@dataclass(frozen=True)
class ArchiveSummary:
    path: Path
    counts: dict[str, int]
    schema: str


def schema_version() -> str:
    """The newest migration this code knows: the archive's schema version."""
    return sorted(p.stem for p in MIGRATIONS_DIR.glob("0*.py"))[-1]


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _when(moment: datetime | str | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")


def _event_records(store: Store) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        rows = list(
            EventRecord.select()
            .where(EventRecord.position > after)
            .order_by(EventRecord.position)
            .limit(_BATCH)
        )
        if not rows:
            return
        for row in rows:
            yield {
                "record": "event",
                "position": int(row.position),
                "event_id": row.event_id,
                "stream_id": row.stream_id,
                "version": int(row.version),
                "type": row.type,
                "data": json.loads(row.data),
                "metadata": json.loads(row.metadata),
                "correlation_id": row.correlation_id,
                "idempotency_key": row.idempotency_key,
                "recorded_at": _when(row.recorded_at),
            }
        after = int(rows[-1].position)


def _row_records(kind: str, model: type[FactRow] | type[MemoryRow]) -> list[dict[str, Any]]:
    pk = model._meta.primary_key.name  # type: ignore[union-attr]
    records = []
    rows = cast(list[dict[str, Any]], list(model.select().order_by(getattr(model, pk)).dicts()))
    for row in rows:
        record = {k: _when(v) if isinstance(v, datetime) else v for k, v in row.items()}
        record["record"] = kind
        records.append(record)
    return records


def _fact_records() -> list[dict[str, Any]]:
    return _row_records("fact", FactRow)


def _memory_records() -> list[dict[str, Any]]:
    return _row_records("memory", MemoryRow)


def export_archive(
    store: Store, path: Path, *, secrets: Sequence[str] = (), workspace: str = ""
) -> ArchiveSummary:
    """Write the whole store to ``path`` (atomically: a temporary file renamed at the end)."""
    digests = {kind: hashlib.sha256() for kind in KINDS}
    counts = dict.fromkeys(KINDS, 0)
    guard = [s for s in secrets if len(s) >= 6]
    schema = schema_version()
    tmp = path.with_name(path.name + ".partial")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            header = {
                "record": "header",
                "format": FORMAT,
                "version": VERSION,
                "schema": schema,
                "workspace": workspace,
                "created_at": _when(datetime.now(UTC)),
            }
            out.write(_line(header) + "\n")
            with store.db.atomic():  # one consistent view of the log and the read models
                records: Iterable[dict[str, Any]] = _chain(
                    _event_records(store), _fact_records(), _memory_records()
                )
                for record in records:
                    line = _line(record)
                    leaked = next((s for s in guard if s in line), None)
                    if leaked is not None:
                        raise ArchiveError(
                            f"the {record['record']} record would contain a configured secret; "
                            "nothing was exported"
                        )
                    digests[record["record"]].update(line.encode() + b"\n")
                    counts[record["record"]] += 1
                    out.write(line + "\n")
            manifest = {
                "record": "manifest",
                "counts": counts,
                "sha256": {kind: d.hexdigest() for kind, d in digests.items()},
            }
            out.write(_line(manifest) + "\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ArchiveSummary(path=path, counts=counts, schema=schema)


def _chain(*parts: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from part


def _read(
    handle: IO[str],
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Parse and check an archive: header, records by kind, manifest. Raises on any defect."""
    lines = iter(handle)
    try:
        header = json.loads(next(lines))
    except (StopIteration, ValueError, RecursionError) as exc:  # ValueError: JSON, long ints
        raise ArchiveError("not an opcore archive: the first line is not a header") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchiveError("not an opcore archive: the header has no 'opcore-archive' format")
    if header.get("version") != VERSION:
        raise ArchiveError(f"archive version {header.get('version')!r} is not supported")
    if str(header.get("schema", "")) > schema_version():
        raise ArchiveError(
            f"the archive's schema {header.get('schema')} is newer than this opcore "
            f"({schema_version()}): upgrade opcore first"
        )
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    digests = {kind: hashlib.sha256() for kind in KINDS}
    manifest: dict[str, Any] | None = None
    for number, raw in enumerate(lines, start=2):
        if manifest is not None:
            raise ArchiveError(f"line {number}: data after the manifest")
        try:
            record = json.loads(raw)
            line = _line(record).encode()
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"line {number}: not JSON ({exc.msg})") from exc
        except (ValueError, RecursionError) as exc:  # too deep, too long an int, a lone surrogate
            raise ArchiveError(f"line {number}: not JSON ({type(exc).__name__})") from exc
        kind = record.get("record") if isinstance(record, dict) else None
        if kind == "manifest":
            manifest = record
            continue
        if kind not in KINDS:
            raise ArchiveError(f"line {number}: unknown record {kind!r}")
        digests[kind].update(line + b"\n")
        records[kind].append(record)
    if manifest is None:
        raise ArchiveError("the archive has no manifest: it is truncated")
    counts, sums = manifest.get("counts"), manifest.get("sha256")
    if not isinstance(counts, dict) or not isinstance(sums, dict):
        raise ArchiveError("the manifest has no counts or checksums: the archive is damaged")
    for kind in KINDS:
        if counts.get(kind) != len(records[kind]):
            raise ArchiveError(f"the manifest counts {kind}s differently: the archive is damaged")
        if sums.get(kind) != digests[kind].hexdigest():
            raise ArchiveError(f"the {kind} checksum does not match: the archive was altered")
    return header, records, manifest


def import_archive(store: Store, path: Path) -> ArchiveSummary:
    """Load ``path`` into an empty store; see the module docstring for what is checked."""
    try:
        with path.open(encoding="utf-8") as handle:
            header, records, _ = _read(handle)
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{path} is not UTF-8 text: not an opcore archive") from exc
    db = store.db
    try:
        with db.atomic():
            if is_postgres(db):
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PG_APPEND_LOCK,))
            if EventRecord.select().exists():
                raise ArchiveError("the database already holds events: import into an empty one")
            rows = [_event_row(r) for r in records["event"]]
            for start in range(0, len(rows), _BATCH):
                EventRecord.insert_many(rows[start : start + _BATCH]).execute()
            if is_postgres(db) and rows:
                db.execute_sql(
                    "SELECT setval(pg_get_serial_sequence('events', 'position'), %s)",
                    (max(r["position"] for r in rows),),
                )
            store.log.rebuild_projections(from_snapshot=False)
            _same(records["fact"], _fact_records(), "facts")
            _same(records["memory"], _memory_records(), "memories")
    except (peewee.DatabaseError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ArchiveError(f"the archive could not be imported: {exc}") from exc
    except DatabaseError as exc:
        raise ArchiveError(f"the archive could not be imported: {exc}") from exc
    counts = {kind: len(records[kind]) for kind in KINDS}
    return ArchiveSummary(path=path, counts=counts, schema=str(header.get("schema")))


def _event_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "position": int(record["position"]),
        "event_id": str(record["event_id"]),
        "stream_id": str(record["stream_id"]),
        "version": int(record["version"]),
        "type": str(record["type"]),
        "data": json.dumps(record["data"], ensure_ascii=False),
        "metadata": json.dumps(record["metadata"], ensure_ascii=False),
        "correlation_id": record.get("correlation_id"),
        "idempotency_key": record.get("idempotency_key"),
        "recorded_at": datetime.fromisoformat(str(record["recorded_at"])),
    }


def _same(expected: list[dict[str, Any]], rebuilt: list[dict[str, Any]], label: str) -> None:
    if expected != rebuilt:
        first = next(
            (a, b) for a, b in zip([*expected, None], [*rebuilt, None], strict=False) if a != b
        )
        raise ArchiveError(
            f"the {label} rebuilt from the archive's events differ from the archive's own "
            f"(first difference: {first[0]!r} vs {first[1]!r}); nothing was imported"
        )
