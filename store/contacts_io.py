"""Contacts in and out of the store: CSV (Google Contacts, Outlook, HubSpot) and vCard.

Reading is pure: :func:`read_csv` and :func:`read_vcards` turn a file's text into records
and row errors. A bad row (no or invalid address, a field
too long for the store) is reported with its line and left out, never fatal; rows sharing an
address (case-insensitively) are merged, the first non-empty value of each field winning. Only
a file that cannot be read at all raises :class:`ContactFileError`.

:func:`import_contacts` matches records to contacts by address and appends only what
differs: ``ContactCreated`` for a new address (its id derived from the address, with the
idempotency key agents use), ``ContactUpdated`` for a new name or company, ``FactAsserted``
(subject ``contact:<id>``) for a new phone or notes. Empty fields never erase anything, so
importing the same file twice appends nothing the second time.

:func:`stored_contacts` reads the contacts back, with their current phone and notes facts,
for :func:`write_csv` and :func:`write_vcards` (vCard 4.0).

The records and their checks are in :mod:`store.contacts_records`, the formats in
:mod:`store.contacts_csv` and :mod:`store.vcard`; all are re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import peewee

from store import events as ev
from store import queries
from store.contacts_csv import CSV_COLUMNS, read_csv, write_csv
from store.contacts_records import (
    COMPANY_MAX,
    EMAIL_MAX,
    NAME_MAX,
    NOTES_MAX,
    PHONE_MAX,
    ContactFileError,
    ContactRecord,
    ImportResult,
    RowError,
    decode,
    is_valid_email,
    merge_duplicates,
)
from store.log import EventLog
from store.models import ContactRow, FactRow
from store.projections import normal_digest
from store.vcard import Params, read_vcards, write_vcards

__all__ = [
    "COMPANY_MAX",
    "CSV_COLUMNS",
    "EMAIL_MAX",
    "FACT_KEYS",
    "IMPORT_BATCH",
    "NAME_MAX",
    "NOTES_MAX",
    "PHONE_MAX",
    "ContactFileError",
    "ContactRecord",
    "ImportResult",
    "ImportSummary",
    "Params",
    "RowError",
    "contact_id_for",
    "decode",
    "import_contacts",
    "is_valid_email",
    "merge_duplicates",
    "read_csv",
    "read_vcards",
    "stored_contacts",
    "write_csv",
    "write_vcards",
]


@dataclass(frozen=True)
class ImportSummary:
    """How many records made a new contact, changed one, or found it as it was."""

    created: int
    updated: int
    unchanged: int


FACT_KEYS = ("phone", "notes")
IMPORT_BATCH = 200  # records per transaction: bounded time holding the write lock

# Stable contact ids: the same address always gets the same id.
_CONTACT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "opcore:contact")


def contact_id_for(email: str) -> str:
    """The id an imported contact with this address gets (32 hex digits, like agents' ids)."""
    return uuid.uuid5(_CONTACT_NAMESPACE, email.strip().lower()).hex


# The store -----------------------------------------------------------------------------


def _current_facts(subject_filter: peewee.Expression) -> dict[str, dict[str, str]]:
    """Current phone and notes facts, by subject."""
    query = FactRow.select(FactRow.subject, FactRow.key, FactRow.value).where(
        subject_filter & (FactRow.status == "current") & FactRow.key.in_(list(FACT_KEYS))
    )
    facts: dict[str, dict[str, str]] = {}
    for row in query:
        facts.setdefault(row.subject, {})[row.key] = row.value
    return facts


def stored_contacts() -> list[ContactRecord]:
    """Every contact with its current phone and notes facts, by name, then address."""
    facts = _current_facts(FactRow.subject.startswith("contact:"))
    rows = ContactRow.select().order_by(peewee.fn.LOWER(ContactRow.name), ContactRow.email)
    records = []
    for row in rows:
        own = facts.get(f"contact:{row.contact_id}", {})
        records.append(
            ContactRecord(
                name=row.name,
                email=row.email,
                company=row.company,
                phone=own.get("phone", ""),
                notes=own.get("notes", ""),
            )
        )
    return records


@dataclass(frozen=True)
class _Plan:
    record: ContactRecord
    contact_id: str | None  # None: a new contact
    changes: dict[str, str]  # name, company
    facts: dict[str, str]  # phone, notes

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.facts)


def _plans(records: Sequence[ContactRecord]) -> list[_Plan]:
    """What each record changes, from two queries (the records' contacts and their facts)."""
    rows = ContactRow.select().where(ContactRow.email.in_([r.email for r in records]))
    contacts = {row.email: row for row in rows}
    facts = _current_facts(
        FactRow.subject.in_([f"contact:{row.contact_id}" for row in contacts.values()])
    )
    plans = []
    for record in records:
        wanted = {k: v for k, v in (("phone", record.phone), ("notes", record.notes)) if v}
        row = contacts.get(record.email)
        if row is None:
            plans.append(_Plan(record, None, {}, wanted))
            continue
        changes = {
            key: value
            for key, value in (("name", record.name), ("company", record.company))
            if value and value != getattr(row, key)
        }
        current = facts.get(f"contact:{row.contact_id}", {})
        changed_facts = {
            key: value
            for key, value in wanted.items()
            if key not in current or normal_digest(current[key]) != normal_digest(value)
        }
        plans.append(_Plan(record, row.contact_id, changes, changed_facts))
    return plans


def _create(log: EventLog, record: ContactRecord, meta: ev.Metadata) -> str:
    created = ev.ContactCreated(
        contact_id=contact_id_for(record.email),
        name=record.name,
        email=record.email,
        company=record.company,
    )
    result = log.append(
        ev.contact_stream(created.contact_id),
        [ev.NewEvent(created, idempotency_key=f"contact:{record.email}")],
        metadata=meta,
        expected_version=0,
    )
    if not result.duplicate:
        return created.contact_id
    # The key is taken: an agent created this address meanwhile, or a contact created with
    # it has changed its address since (then this address is a new contact).
    existing = queries.contact_by_email(record.email)
    if existing is not None:
        return existing.contact_id
    created = created.model_copy(update={"contact_id": uuid.uuid4().hex})
    log.append(
        ev.contact_stream(created.contact_id),
        [ev.NewEvent(created, idempotency_key=f"contact-import:{created.contact_id}")],
        metadata=meta,
        expected_version=0,
    )
    return created.contact_id


def _apply(log: EventLog, plan: _Plan, *, by: str, source: str) -> None:
    meta = ev.Metadata(actor=by)
    if plan.contact_id is None:
        contact_id = _create(log, plan.record, meta)
    else:
        contact_id = plan.contact_id
        if plan.changes:
            update = ev.ContactUpdated(
                contact_id=contact_id,
                name=plan.changes.get("name"),
                company=plan.changes.get("company"),
            )
            log.append(ev.contact_stream(contact_id), [update], metadata=meta)
    if plan.facts:
        subject = f"contact:{contact_id}"
        asserted = [
            ev.FactAsserted(subject=subject, key=key, value=value, source=source, by=by)
            for key, value in plan.facts.items()
        ]
        log.append(ev.facts_stream(subject), asserted, metadata=meta)


def import_contacts(
    log: EventLog,
    records: Sequence[ContactRecord],
    *,
    by: str,
    source: str,
    dry_run: bool = False,
) -> ImportSummary:
    """Bring the store in line with ``records`` as the readers make them (valid addresses,
    fields within the store's sizes; see the module docstring). ``by`` is the events' actor,
    ``source`` the facts' source. ``dry_run`` counts and writes nothing.
    Records are written in transactions of :data:`IMPORT_BATCH`: a failure keeps the batches
    before it, and running the import again completes it."""
    merged = merge_duplicates(records)
    plans: list[_Plan] = []
    for start in range(0, len(merged), IMPORT_BATCH):
        batch = merged[start : start + IMPORT_BATCH]
        if dry_run:
            plans += _plans(batch)
            continue
        # Planned inside the transaction (on SQLite no writer comes in between; elsewhere a
        # contact created meanwhile is found by its idempotency key, see _create).
        with log.db.atomic():
            planned = _plans(batch)
            for plan in planned:
                _apply(log, plan, by=by, source=source)
        plans += planned
    return ImportSummary(
        created=sum(p.contact_id is None for p in plans),
        updated=sum(p.contact_id is not None and p.changed for p in plans),
        unchanged=sum(p.contact_id is not None and not p.changed for p in plans),
    )
