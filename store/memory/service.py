"""The memory service: one API over the four kinds of memory.

- **Working** memory is what a job recalled: :meth:`Memory.recall` with a ``job_id`` appends
  ``MemoryRecalled`` to the job's stream, so the trace shows what the agent knew.
- **Episodic** memory is the event log itself (:mod:`store.log`, queried by stream,
  correlation and time).
- **Semantic** memory is ``MemoryStored`` events, projected into ``memories`` and indexed
  by a :class:`~store.memory.base.RecallIndex` (SQLite FTS5 + vectors, or Weaviate).
- **Symbolic** memory is ``FactAsserted`` events projected into ``facts``: each fact has the
  event that established it; a correction supersedes the old value, which stays in history.

Writes go to the log first; the index follows it (:meth:`Memory.sync`), right after each
write and before each recall, so a write made by another process is recalled too, and an
index lost or rebuilt catches up from its cursor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import peewee

from store import Store, queries
from store import events as ev
from store.errors import EmbeddingError, NotFoundError, RecallError, StoreError
from store.events import Metadata, NewEvent
from store.log import to_recorded
from store.memory.base import MEMORY_KINDS, Hit, IndexedDoc, RecallFilter, RecallIndex
from store.memory.embeddings import Embedder
from store.models import ActionRow, ContactRow, EventRecord, FactRow, MemoryRow
from store.projections import MULTI_VALUED_KEYS, normal_digest

log = logging.getLogger(__name__)

MAX_TEXT = 20_000
CAPTURE_CURSOR = "memory:sent"
# The memory kind of an email sent by each agent.
SENT_KINDS = {"proposal": "proposal", "release_notes": "document"}
INDEX_EVENTS = ("MemoryStored", "MemoryForgotten", "MemoryRestored", "MemoryPurged")
# Facts about a contact that only /contact may change (they address real email).
CONTACT_KEYS = frozenset({"name", "email", "company"})


class MemoryInputError(StoreError):
    """The operator's memory command cannot be carried out as written (the message says why)."""


@dataclass(frozen=True)
class MemoryItem:
    memory_id: str
    kind: str
    text: str
    contact_id: str | None
    source: str
    by: str
    status: str
    created_at: datetime
    event_id: str
    job_id: str | None = None
    forgotten_at: datetime | None = None


@dataclass(frozen=True)
class Recalled:
    """One hit: the memory and how it was found."""

    item: MemoryItem
    hit: Hit


@dataclass(frozen=True)
class Fact:
    fact_id: str
    subject: str
    key: str
    value: str
    status: str
    source: str
    by: str
    event_id: str
    event_type: str
    asserted_at: datetime
    ended_at: datetime | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class Recall:
    query: str
    mode: str  # "hybrid" or "keyword"
    items: tuple[Recalled, ...]
    facts: tuple[Fact, ...] = ()
    cached: bool = False
    note: str = ""  # e.g. why it fell back to keyword-only


@dataclass(frozen=True)
class Remembered:
    memory_id: str
    created: bool  # False: the same memory was already there
    restored: bool = False


@dataclass(frozen=True)
class Asserted:
    fact: Fact
    created: bool  # False: the same fact was already current
    superseded: Fact | None = None


@dataclass(frozen=True)
class Provenance:
    """Why opcore believes something: the item and the chain of events behind it."""

    subject: str
    current: Fact | MemoryItem
    history: tuple[Fact, ...] = ()  # older values of the same fact, newest first
    events: tuple[ev.RecordedEvent, ...] = ()


@dataclass(frozen=True)
class MemoryStatus:
    backend: str
    mode: str  # "hybrid" or "keyword-only"
    model: str
    items: int
    indexed: int
    vectors: int
    stale_vectors: int  # made by another model: `opcore memory reindex`
    facts: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def memory_id_for(text: str, contact_id: str | None) -> str:
    return "m" + normal_digest(f"{contact_id or ''}|{text}")[:11]


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def _item(row: MemoryRow) -> MemoryItem:
    return MemoryItem(
        memory_id=row.memory_id,
        kind=row.kind,
        text=row.text,
        contact_id=row.contact_id,
        source=row.source,
        by=row.by,
        status=row.status,
        created_at=_aware(row.created_at) or row.created_at,
        event_id=row.event_id,
        job_id=row.job_id,
        forgotten_at=_aware(row.forgotten_at),
    )


def _fact(row: FactRow) -> Fact:
    return Fact(
        fact_id=row.fact_id,
        subject=row.subject,
        key=row.key,
        value=row.value,
        status=row.status,
        source=row.source,
        by=row.by,
        event_id=row.event_id,
        event_type=row.event_type,
        asserted_at=_aware(row.asserted_at) or row.asserted_at,
        ended_at=_aware(row.ended_at),
        replaces=row.replaces,
        replaced_by=row.replaced_by,
        job_id=row.job_id,
    )


class Memory:
    """See the module docstring. One per process; thread-safe."""

    def __init__(
        self,
        store: Store,
        index: RecallIndex,
        embedder: Embedder,
        *,
        cache_ttl_seconds: float = 300.0,
        undo_days: float = 7.0,
        cache_size: int = 256,
    ) -> None:
        self.store = store
        self.index = index
        self.embedder = embedder
        self.cache_ttl = cache_ttl_seconds
        self.undo = timedelta(days=undo_days)
        self._cache: OrderedDict[tuple[object, ...], tuple[float, Recall]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self._cursor_name = f"recall:{index.name}"

    # Writing ---------------------------------------------------------------------------

    def remember(
        self,
        text: str,
        *,
        kind: str = "note",
        contact_id: str | None = None,
        job_id: str | None = None,
        source: str,
        by: str,
        correlation_id: str | None = None,
    ) -> Remembered:
        """Store a semantic memory; the same text (for the same contact) is stored once."""
        text = text.strip()
        if not text:
            raise MemoryInputError("there is nothing to remember: the text is empty")
        if len(text) > MAX_TEXT:
            raise MemoryInputError(f"a memory is at most {MAX_TEXT} characters")
        if kind not in MEMORY_KINDS:
            raise MemoryInputError(
                f"unknown memory kind {kind!r}: use one of {sorted(MEMORY_KINDS)}"
            )
        memory_id = memory_id_for(text, contact_id)
        meta = Metadata(actor=by, correlation_id=correlation_id)
        existing = MemoryRow.get_or_none(MemoryRow.memory_id == memory_id)
        if existing is not None and existing.status == "active":
            return Remembered(memory_id, created=False)
        if existing is not None and existing.status == "forgotten":
            self.store.log.append(
                ev.memory_stream(memory_id),
                [ev.MemoryRestored(memory_id=memory_id, by=by)],
                metadata=meta,
            )
            self.sync()
            return Remembered(memory_id, created=False, restored=True)
        stored = ev.MemoryStored(
            memory_id=memory_id,
            kind=kind,
            text=text,
            contact_id=contact_id,
            job_id=job_id,
            source=source,
            by=by,
        )
        # A purged memory written again is a new memory under the same id (no key: the
        # first MemoryStored holds it).
        key = f"memory:{memory_id}" if existing is None else None
        result = self.store.log.append(
            ev.memory_stream(memory_id), [NewEvent(stored, key)], metadata=meta
        )
        self.sync()
        return Remembered(memory_id, created=not result.duplicate)

    def assert_fact(
        self,
        subject: str,
        key: str,
        value: str,
        *,
        source: str,
        by: str,
        job_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Asserted:
        """Record a fact. The same value again is a no-op; a new value for a single-valued
        key supersedes the current one (which stays in the history)."""
        key = key.strip().lower()
        value = value.strip()
        if not key or not value:
            raise MemoryInputError("a fact needs a key and a value, e.g. `rate: 120 EUR/h`")
        if subject.startswith("contact:") and key in CONTACT_KEYS:
            raise MemoryInputError(
                f"a contact's {key} is changed with /contact <email> {key}=<new value>"
            )
        current = self._current(subject, key, value)
        if current is not None and normal_digest(current.value) == normal_digest(value):
            return Asserted(current, created=False)
        result = self.store.log.append(
            ev.facts_stream(subject),
            [
                ev.FactAsserted(
                    subject=subject, key=key, value=value, source=source, by=by, job_id=job_id
                )
            ],
            metadata=Metadata(actor=by, correlation_id=correlation_id),
        )
        event_id = result.events[0].event_id
        row = FactRow.get(FactRow.event_id == event_id)
        return Asserted(_fact(row), created=True, superseded=current)

    def forget(self, item_id: str, *, by: str) -> Fact | MemoryItem:
        """Hide a memory from recall, or retract a fact; undone by :meth:`restore` within
        the undo window."""
        found = self._find(item_id)
        meta = Metadata(actor=by)
        if isinstance(found, MemoryItem):
            if found.status != "active":
                raise MemoryInputError(f"memory {found.memory_id} is already forgotten")
            self.store.log.append(
                ev.memory_stream(found.memory_id),
                [ev.MemoryForgotten(memory_id=found.memory_id, by=by)],
                metadata=meta,
            )
            self.sync()
            return _item(MemoryRow.get_by_id(found.memory_id))
        if found.status != "current":
            raise MemoryInputError(f"fact {found.fact_id} is not current ({found.status})")
        if found.subject.startswith("contact:") and found.key in CONTACT_KEYS:
            raise MemoryInputError(
                f"a contact's {found.key} cannot be forgotten; correct it with /contact"
            )
        self.store.log.append(
            ev.facts_stream(found.subject),
            [ev.FactRetracted(fact_id=found.fact_id, by=by)],
            metadata=meta,
        )
        return _fact(FactRow.get_by_id(found.fact_id))

    def restore(self, item_id: str, *, by: str, now: datetime | None = None) -> Fact | MemoryItem:
        """Undo :meth:`forget` within the undo window."""
        now = now or datetime.now(UTC)
        found = self._find(item_id)
        meta = Metadata(actor=by)
        if isinstance(found, MemoryItem):
            if found.status == "purged":
                raise MemoryInputError(
                    f"memory {found.memory_id} was purged when its undo window ended"
                )
            if found.status != "forgotten":
                raise MemoryInputError(f"memory {found.memory_id} is not forgotten")
            self.store.log.append(
                ev.memory_stream(found.memory_id),
                [ev.MemoryRestored(memory_id=found.memory_id, by=by)],
                metadata=meta,
            )
            self.sync()
            return _item(MemoryRow.get_by_id(found.memory_id))
        if found.status != "retracted":
            raise MemoryInputError(f"fact {found.fact_id} is not forgotten ({found.status})")
        if found.ended_at is not None and now - found.ended_at > self.undo:
            raise MemoryInputError(f"fact {found.fact_id} was forgotten too long ago to restore")
        newer = self._current(found.subject, found.key, found.value)
        if newer is not None:
            raise MemoryInputError(
                f"{found.key} has a newer value since ({newer.value!r}, {newer.fact_id})"
            )
        self.store.log.append(
            ev.facts_stream(found.subject),
            [ev.FactRestored(fact_id=found.fact_id, by=by)],
            metadata=meta,
        )
        return _fact(FactRow.get_by_id(found.fact_id))

    def purge_expired(self, *, now: datetime | None = None) -> int:
        """Purge memories forgotten longer ago than the undo window. Returns how many."""
        cutoff = (now or datetime.now(UTC)) - self.undo
        rows = MemoryRow.select(MemoryRow.memory_id).where(
            (MemoryRow.status == "forgotten")
            & (MemoryRow.forgotten_at <= cutoff.replace(tzinfo=None))
        )
        ids = [r.memory_id for r in rows]
        for memory_id in ids:
            self.store.log.append(
                ev.memory_stream(memory_id),
                [NewEvent(ev.MemoryPurged(memory_id=memory_id), f"purge:{memory_id}")],
                metadata=Metadata(actor="reconciler"),
            )
        if ids:
            self.sync()
        return len(ids)

    # Reading ---------------------------------------------------------------------------

    def recall(
        self,
        query: str,
        *,
        filters: RecallFilter | None = None,
        limit: int = 5,
        job_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Recall:
        """The memories best matching ``query`` (and the contact's current facts when the
        filter names a contact). With ``job_id``, recorded in the job's trace."""
        filters = filters or RecallFilter()
        self.capture_sent()
        position = self.sync()
        cache_key = (query.strip().lower(), filters, limit, position, self.embedder.model)
        result = self._cached(cache_key)
        if result is None:
            result = self._search(query, filters, limit)
            self._store_cached(cache_key, result)
        else:
            result = replace(result, cached=True)
        if job_id is not None:
            self._record(result, filters, job_id, correlation_id)
        return result

    def _search(self, query: str, filters: RecallFilter, limit: int) -> Recall:
        vector = None
        note = ""
        if self.embedder.model:
            try:
                vector = self.embedder.embed([query])[0]
            except EmbeddingError as exc:
                note = f"keyword-only this time: {exc}"
                log.warning("recall fell back to keywords: %s", exc)
        # Ask for a few more: the index may still hold a memory forgotten a moment ago.
        hits = self.index.search(query, vector, limit=limit + 5, filters=filters)
        rows = {
            r.memory_id: r
            for r in MemoryRow.select().where(
                MemoryRow.memory_id.in_([h.memory_id for h in hits])
                & (MemoryRow.status == "active")
            )
        }
        items = tuple(Recalled(_item(rows[h.memory_id]), h) for h in hits if h.memory_id in rows)
        facts: tuple[Fact, ...] = ()
        if filters.contact_id is not None:
            facts = tuple(self.facts(f"contact:{filters.contact_id}"))
        return Recall(
            query=query,
            mode="hybrid" if vector is not None else "keyword",
            items=items[:limit],
            facts=facts,
            note=note,
        )

    def _cached(self, key: tuple[object, ...]) -> Recall | None:
        if self.cache_ttl <= 0:
            return None
        with self._lock:
            found = self._cache.get(key)
            if found is None or time.monotonic() - found[0] > self.cache_ttl:
                return None
            self._cache.move_to_end(key)
            return found[1]

    def _store_cached(self, key: tuple[object, ...], result: Recall) -> None:
        if self.cache_ttl <= 0:
            return
        with self._lock:
            self._cache[key] = (time.monotonic(), result)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _record(
        self, result: Recall, filters: RecallFilter, job_id: str, correlation_id: str | None
    ) -> None:
        given = {
            "contact_id": filters.contact_id,
            "kinds": ",".join(sorted(filters.kinds)) or None,
            "since": filters.since.isoformat() if filters.since else None,
            "until": filters.until.isoformat() if filters.until else None,
        }
        self.store.log.append(
            ev.job_stream(job_id),
            [
                ev.MemoryRecalled(
                    job_id=job_id,
                    query=result.query[:500],
                    mode=result.mode,
                    filters={k: v for k, v in given.items() if v},
                    hits=[
                        {
                            "memory_id": r.item.memory_id,
                            "kind": r.item.kind,
                            "score": round(r.hit.score, 6),
                            "preview": r.item.text[:120],
                        }
                        for r in result.items
                    ],
                    facts=[
                        {"fact_id": f.fact_id, "key": f.key, "value": f.value[:200]}
                        for f in result.facts
                    ],
                    cached=result.cached,
                )
            ],
            metadata=Metadata(actor="memory", correlation_id=correlation_id or job_id),
        )

    def episodes(
        self, contact_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[ev.RecordedEvent]:
        """Episodic memory: everything that happened with a contact (its jobs' events, its
        facts, its memories), in log order, between ``since`` and ``until``."""
        jobs = {
            r.job_id
            for r in ActionRow.select(ActionRow.job_id).where(ActionRow.contact_id == contact_id)
        }
        jobs |= {
            str(r.job_id)
            for r in MemoryRow.select(MemoryRow.job_id).where(
                (MemoryRow.contact_id == contact_id) & MemoryRow.job_id.is_null(False)
            )
        }
        events: dict[int, ev.RecordedEvent] = {}
        for stream in (ev.contact_stream(contact_id), ev.facts_stream(f"contact:{contact_id}")):
            for event in self.store.log.read_stream(stream):
                events[event.position] = event
        for event in self.store.log.read_stream(ev.contact_stream(contact_id)):
            if event.metadata.correlation_id:
                jobs.add(event.metadata.correlation_id)
        for job_id in jobs:
            for event in self.store.log.read_correlated(job_id):
                events[event.position] = event
        memories = MemoryRow.select(MemoryRow.memory_id).where(MemoryRow.contact_id == contact_id)
        for row in memories:
            for event in self.store.log.read_stream(ev.memory_stream(row.memory_id)):
                events[event.position] = event
        return [
            e
            for _, e in sorted(events.items())
            if (since is None or e.recorded_at >= since)
            and (until is None or e.recorded_at < until)
        ]

    def facts(self, subject: str, *, history: bool = False) -> list[Fact]:
        """The subject's facts: current ones, or every one (newest first) with ``history``."""
        query = FactRow.select().where(FactRow.subject == subject)
        if not history:
            query = query.where(FactRow.status == "current")
        return [_fact(r) for r in query.order_by(FactRow.key, FactRow.asserted_at.desc())]

    def rules(self) -> list[Fact]:
        """The workspace's business rules ("never email on Sundays")."""
        return [f for f in self.facts("workspace") if f.key == "rule"]

    def why(self, item_id: str) -> Provenance:
        """The provenance of a fact or memory: the events that established and changed it."""
        found = self._find(item_id)
        if isinstance(found, MemoryItem):
            events = self.store.log.read_stream(ev.memory_stream(found.memory_id))
            return Provenance(subject=found.memory_id, current=found, events=tuple(events))
        history: list[Fact] = []
        cursor = found.replaces
        while cursor:
            row = FactRow.get_or_none(FactRow.fact_id == cursor)
            if row is None:
                break
            history.append(_fact(row))
            cursor = row.replaces
        events = [e for e in (self._event(f.event_id) for f in (found, *history)) if e is not None]
        return Provenance(
            subject=found.subject, current=found, history=tuple(history), events=tuple(events)
        )

    def _event(self, event_id: str) -> ev.RecordedEvent | None:
        row = EventRecord.get_or_none(EventRecord.event_id == event_id)
        return None if row is None else to_recorded(row)

    def memory(self, memory_id: str) -> MemoryItem:
        row = MemoryRow.get_or_none(MemoryRow.memory_id == memory_id)
        if row is None:
            raise NotFoundError(f"no memory {memory_id!r}")
        return _item(row)

    def _current(self, subject: str, key: str, value: str) -> Fact | None:
        """The fact currently in the slot ``(subject, key[, value])``."""
        query = FactRow.select().where(
            (FactRow.subject == subject) & (FactRow.key == key) & (FactRow.status == "current")
        )
        if key in MULTI_VALUED_KEYS:
            digest = normal_digest(value)
            query = query.where(FactRow.slot == f"{subject}|{key}|{digest}")
        row = query.first()
        return None if row is None else _fact(row)

    def _find(self, item_id: str) -> Fact | MemoryItem:
        """A memory (``m…``) or fact (``f…``) by id or unique prefix (at least 4 characters)."""
        item_id = item_id.strip()
        if len(item_id) < 4:
            raise MemoryInputError("give at least 4 characters of the id (as /recall shows it)")
        model: type[MemoryRow] | type[FactRow]
        if item_id.startswith("m"):
            model, pk = MemoryRow, MemoryRow.memory_id
        elif item_id.startswith("f"):
            model, pk = FactRow, FactRow.fact_id
        else:
            raise MemoryInputError(
                f"{item_id!r} is not a memory id (m…) or a fact id (f…): /recall and /facts "
                "show them"
            )
        rows = list(model.select().where(pk.startswith(item_id)).limit(2))
        if not rows:
            raise NotFoundError(f"nothing remembered under {item_id!r}")
        if len(rows) > 1:
            raise MemoryInputError(f"{item_id!r} matches more than one item: give more of it")
        row = rows[0]
        if isinstance(row, MemoryRow):
            return _item(row)
        assert isinstance(row, FactRow)
        return _fact(row)

    # Work sent out becomes memory -------------------------------------------------------

    def capture_sent(self) -> int:
        """Store every email opcore sent (proposals, replies, release notes) as a memory of
        its contact, so later jobs recall it. Follows ``ActionExecuted`` with its own cursor;
        a memory's id makes a second pass over the same email a no-op. Returns how many."""
        count = 0
        with self._lock:
            after = queries.cursor(CAPTURE_CURSOR) or 0
            while chunk := self.store.log.read_all(
                after=after, limit=200, types=("ActionExecuted",)
            ):
                for event in chunk:
                    count += self._capture(event)
                after = chunk[-1].position
                queries.save_cursor(CAPTURE_CURSOR, after)
        return count

    def _capture(self, event: ev.RecordedEvent) -> int:
        data = event.data
        assert isinstance(data, ev.ActionExecuted)
        try:
            action = queries.get_action(data.action_id)
            job = queries.get_job(action.job_id)
        except NotFoundError:
            return 0
        if (action.connector, action.action) != ("email", "send_email"):
            return 0
        subject = str(action.params.get("subject", ""))
        body = str(action.params.get("body", ""))
        if not body.strip():
            return 0
        stored = self.remember(
            f"{subject}\n\n{body}" if subject else body,
            kind=SENT_KINDS.get(job.agent, "draft"),
            contact_id=action.contact_id,
            job_id=job.job_id,
            source=f"sent by the {job.agent} agent",
            by=f"agent:{job.agent}",
            correlation_id=job.job_id,
        )
        return 1 if stored.created else 0

    # The index -------------------------------------------------------------------------

    def sync(self) -> int:
        """Bring the index up to the log; returns the position it is at."""
        with self._lock:
            after = queries.cursor(self._cursor_name) or 0
            while True:
                chunk = self.store.log.read_all(after=after, limit=500, types=INDEX_EVENTS)
                if not chunk:
                    return after
                changed: dict[str, None] = {}
                for event in chunk:
                    memory_id = getattr(event.data, "memory_id", None)
                    if memory_id is not None:
                        changed[memory_id] = None
                self._apply(list(changed))
                after = chunk[-1].position
                queries.save_cursor(self._cursor_name, after)

    def _apply(self, memory_ids: Sequence[str]) -> None:
        rows = {
            r.memory_id: r
            for r in MemoryRow.select().where(MemoryRow.memory_id.in_(list(memory_ids)))
        }
        active = [rows[m] for m in memory_ids if m in rows and rows[m].status == "active"]
        gone = [m for m in memory_ids if m not in rows or rows[m].status != "active"]
        self.index.delete(gone)
        self.index.upsert(self._docs(active))

    def _docs(self, rows: Sequence[MemoryRow]) -> list[IndexedDoc]:
        vectors: list[tuple[float, ...] | None] = [None] * len(rows)
        if self.embedder.model and rows:
            try:
                vectors = list(self.embedder.embed([r.text for r in rows]))
            except EmbeddingError as exc:
                # Indexed for keywords now; `opcore memory reindex` adds the vectors.
                log.warning("memories indexed without vectors: %s", exc)
        return [
            IndexedDoc(
                memory_id=r.memory_id,
                kind=r.kind,
                text=r.text,
                created_at=_aware(r.created_at) or r.created_at,
                contact_id=r.contact_id,
                vector=v,
                embed_model=self.embedder.model if v is not None else None,
            )
            for r, v in zip(rows, vectors, strict=True)
        ]

    def reindex(self, *, batch: int = 256) -> int:
        """Rebuild the index from the ``memories`` table (after a change of embedding model,
        or a lost index). Returns the number of memories indexed."""
        with self._lock:
            head = self.store.log.head()
            self.index.clear()
            count = 0
            query = (
                MemoryRow.select().where(MemoryRow.status == "active").order_by(MemoryRow.memory_id)
            )
            for page in range(1, 1_000_000):
                rows = list(query.paginate(page, batch))
                if not rows:
                    break
                self.index.upsert(self._docs(rows))
                count += len(rows)
            queries.save_cursor(self._cursor_name, head)
            self._cache.clear()
            return count

    def ensure_index(self) -> None:
        """At start-up: rebuild an index that lost its contents (deleted file, new Weaviate),
        then catch up with the log."""
        active = MemoryRow.select().where(MemoryRow.status == "active").count()
        try:
            indexed = self.index.stats().items
        except RecallError as exc:
            raise RecallError(f"the recall index is unusable: {exc}") from exc
        if active and not indexed:
            log.warning("the recall index is empty but %d memories exist: rebuilding", active)
            self.reindex()
        else:
            self.sync()

    def status(self) -> MemoryStatus:
        stats = self.index.stats()
        model = self.embedder.model
        stale = sum(n for m, n in stats.embed_models.items() if m != model)
        items = MemoryRow.select().where(MemoryRow.status == "active").count()
        facts = FactRow.select().where(FactRow.status == "current").count()
        notes: list[str] = []
        if not model:
            notes.append("keyword-only: no embedding model (set OPCORE_EMBEDDINGS)")
        elif stale:
            notes.append(f"{stale} vectors come from another model: run `opcore memory reindex`")
        missing = stats.items - stats.vectors
        if model and missing > 0:
            notes.append(f"{missing} memories have no vector yet: run `opcore memory reindex`")
        return MemoryStatus(
            backend=self.index.name,
            mode="hybrid" if model else "keyword-only",
            model=model,
            items=items,
            indexed=stats.items,
            vectors=stats.vectors,
            stale_vectors=stale,
            facts=facts,
            notes=tuple(notes),
        )

    # Contacts ----------------------------------------------------------------------------

    @staticmethod
    def resolve_contact(ref: str) -> ContactRow:
        """A contact by email, or by name or company when exactly one matches."""
        ref = ref.strip()
        if "@" in ref:
            row = ContactRow.get_or_none(ContactRow.email == ref.lower())
            if row is None:
                raise NotFoundError(f"no contact with the address {ref}")
            return row
        lowered = ref.lower()
        matches = list(
            ContactRow.select()
            .where(
                (peewee.fn.LOWER(ContactRow.name) == lowered)
                | (peewee.fn.LOWER(ContactRow.company) == lowered)
            )
            .limit(3)
        )
        if not matches:
            raise NotFoundError(f"no contact named {ref!r}: use their email address")
        if len(matches) > 1:
            emails = ", ".join(m.email for m in matches)
            raise MemoryInputError(f"{ref!r} matches several contacts ({emails}): use the email")
        return matches[0]
