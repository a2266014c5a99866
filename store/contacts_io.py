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
"""

from __future__ import annotations

import codecs
import csv
import io
import quopri
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import peewee

from store import events as ev
from store import queries
from store.errors import StoreError
from store.log import EventLog
from store.models import ContactRow, FactRow
from store.projections import normal_digest


class ContactFileError(StoreError):
    """A contacts file cannot be used at all: not text, no header, no email column, no vCard."""


@dataclass(frozen=True)
class ContactRecord:
    """One contact as a file holds it; empty strings for what the file does not say."""

    name: str
    email: str
    company: str
    phone: str = ""
    notes: str = ""


@dataclass(frozen=True)
class RowError:
    line: int  # the first line of the row (of BEGIN:VCARD for a card), counted from 1
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """What a file held: good records (one per address) and the bad rows, by line."""

    records: list[ContactRecord]
    errors: list[RowError]


@dataclass(frozen=True)
class ImportSummary:
    """How many records made a new contact, changed one, or found it as it was."""

    created: int
    updated: int
    unchanged: int


# Column sizes of the contacts read model (store/models.py), and bounds for the facts.
NAME_MAX = 200
COMPANY_MAX = 200
PHONE_MAX = 100
NOTES_MAX = 20_000
EMAIL_MAX = 247  # "contact:<address>", the idempotency key of its creation, fits in 255
FACT_KEYS = ("phone", "notes")
CSV_COLUMNS = ("Name", "Email", "Company", "Phone", "Notes")
IMPORT_BATCH = 200  # records per transaction: bounded time holding the write lock

# Stable contact ids: the same address always gets the same id.
_CONTACT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "opcore:contact")


def contact_id_for(email: str) -> str:
    """The id an imported contact with this address gets (32 hex digits, like agents' ids)."""
    return uuid.uuid5(_CONTACT_NAMESPACE, email.strip().lower()).hex


# Email addresses -------------------------------------------------------------------------

_LOCAL_SPECIALS = frozenset("!#$%&'*+/=?^_`{|}~.-")


def is_valid_email(address: str) -> bool:
    """A plain ``local@domain.tld`` address (no quoted local parts, no IP literals)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or "@" in local or len(address) > 254 or len(local) > 64:
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    if not all(c.isalnum() or c in _LOCAL_SPECIALS for c in local):
        return False
    labels = domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(c.isalnum() or c == "-" for c in label)
        for label in labels
    )


def _clean_email(raw: str) -> str:
    value = raw.strip()
    if value.endswith(">") and "<" in value:  # "Jane Doe <jane@acme.example>"
        value = value[value.rindex("<") + 1 : -1].strip()
    if value[:7].lower() == "mailto:":
        value = value[7:]
    return value.lower()


# Records -------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _multiline(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def _record(
    line: int, *, name: str, emails: Sequence[str], company: str, phone: str, notes: str
) -> ContactRecord | RowError:
    """A record from raw fields; ``emails`` in order of preference (Google puts several
    values in one cell separated by ``:::``)."""
    candidates = [_clean_email(p) for e in emails for p in e.split(":::") if p.strip()]
    if not candidates:
        return RowError(line, "no email address")
    email = next((c for c in candidates if is_valid_email(c)), None)
    if email is None:
        return RowError(line, f"invalid email address {candidates[0]!r}")
    if len(email) > EMAIL_MAX:
        return RowError(line, f"email address longer than {EMAIL_MAX} characters")
    record = ContactRecord(
        name=_one_line(name),
        email=email,
        company=_one_line(company),
        phone=_one_line(next((p for p in phone.split(":::") if p.strip()), "")),
        notes=_multiline(notes),
    )
    for field, limit in (("name", NAME_MAX), ("company", COMPANY_MAX), ("phone", PHONE_MAX)):
        if len(getattr(record, field)) > limit:
            return RowError(line, f"{field} longer than {limit} characters")
    if len(record.notes) > NOTES_MAX:
        return RowError(line, f"notes longer than {NOTES_MAX} characters")
    return record


def merge_duplicates(records: Iterable[ContactRecord]) -> list[ContactRecord]:
    """One record per address (lower-cased), in first-seen order; each field's first
    non-empty value wins."""
    merged: dict[str, ContactRecord] = {}
    for record in records:
        email = record.email.strip().lower()
        first = merged.get(email)
        merged[email] = (
            replace(record, email=email)
            if first is None
            else replace(
                first,
                name=first.name or record.name,
                company=first.company or record.company,
                phone=first.phone or record.phone,
                notes=first.notes or record.notes,
            )
        )
    return list(merged.values())


def _result(items: Iterable[ContactRecord | RowError]) -> ImportResult:
    records: list[ContactRecord] = []
    errors: list[RowError] = []
    for item in items:
        if isinstance(item, RowError):
            errors.append(item)
        else:
            records.append(item)
    return ImportResult(merge_duplicates(records), sorted(errors, key=lambda e: e.line))


def decode(data: bytes) -> tuple[str, str]:
    """The text of a contacts file and the encoding it was read with: UTF-8 (BOM or not),
    UTF-16 with a BOM (Excel's "Unicode text"), else Windows-1252 (older Outlook exports)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings: tuple[str, ...] = ("utf-16",)
    else:
        encodings = ("utf-8-sig", "cp1252")
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            if encoding == encodings[-1]:
                raise ContactFileError(f"not a text file in a known encoding: {exc}") from exc
            continue
        if "\x00" in text:
            raise ContactFileError("not a text file (it holds NUL bytes)")
        return text, "utf-8" if encoding == "utf-8-sig" else encoding
    raise AssertionError("unreachable: the last encoding returns or raises")


# CSV -----------------------------------------------------------------------------------

# Header names, normalised (lower case, "e-mail" -> "email"), in order of preference.
_EMAIL_COLUMNS = (
    "email",
    "email address",
    "email 1 - value",
    "primary email",
    "email 2 address",
    "email 2 - value",
    "email 3 address",
    "email 3 - value",
)
_NAME_COLUMNS = ("name", "full name", "display name")
_FIRST_COLUMNS = ("first name", "given name")
_MIDDLE_COLUMNS = ("middle name", "additional name")
_LAST_COLUMNS = ("last name", "family name", "surname")
_COMPANY_COLUMNS = (
    "company",
    "company name",
    "organization 1 - name",
    "organization name",
    "organization",
    "associated company",
)
_PHONE_COLUMNS = (
    "phone",
    "phone number",
    "phone 1 - value",
    "primary phone",
    "mobile phone",
    "mobile phone number",
    "business phone",
    "home phone",
    "telephone",
)
_NOTES_COLUMNS = ("notes", "note")

# A spreadsheet runs a cell starting with one of these as a formula; the export prefixes
# such cells with an apostrophe (phone numbers such as +44 20 7946 0958 stay as they are).
_FORMULA_START = frozenset("=+-@\t\r")
_PHONE_CHARS = frozenset("0123456789 ()-./+")


def _guard(value: str) -> str:
    if value[:1] in _FORMULA_START and not (value[0] in "+-" and set(value) <= _PHONE_CHARS):
        return "'" + value
    return value


def _unguard(value: str) -> str:
    return value[1:] if value[:1] == "'" and value[1:2] in _FORMULA_START else value


def _header_key(cell: str) -> str:
    return " ".join(cell.strip().lower().replace("e-mail", "email").split())


def _delimiter(header_line: str) -> str:
    """``,``, ``;`` or tab: whichever the header line holds most of outside quotes."""
    counts = dict.fromkeys(",;\t", 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return max(counts, key=lambda d: counts[d])  # a tie (one column) goes to ","


def _cells(columns: dict[str, int], row: list[str], names: Sequence[str]) -> list[str]:
    """The row's non-empty cells under any of ``names``, in their order."""
    found = (columns.get(name) for name in names)
    return [row[i] for i in found if i is not None and i < len(row) and row[i].strip()]


def _csv_record(line: int, columns: dict[str, int], row: list[str]) -> ContactRecord | RowError:
    def cell(names: Sequence[str]) -> str:
        return next(iter(_cells(columns, row, names)), "")

    parts = (cell(_FIRST_COLUMNS), cell(_MIDDLE_COLUMNS), cell(_LAST_COLUMNS))
    return _record(
        line,
        name=cell(_NAME_COLUMNS) or " ".join(p for p in parts if p),
        emails=_cells(columns, row, _EMAIL_COLUMNS),
        company=cell(_COMPANY_COLUMNS),
        phone=cell(_PHONE_COLUMNS),
        notes=cell(_NOTES_COLUMNS),
    )


def read_csv(text: str) -> ImportResult:
    """Contacts from a CSV export with a header row (see the module docstring)."""
    text = text.removeprefix("\ufeff")
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise ContactFileError("the file is empty: a header row is required")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first))
    items: list[ContactRecord | RowError] = []
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise ContactFileError("the file holds no header row")
        columns: dict[str, int] = {}
        for index, cell in enumerate(header):
            columns.setdefault(_header_key(cell), index)
        if not any(c in columns for c in _EMAIL_COLUMNS):
            raise ContactFileError(
                "no email column in the header row (looked for Email, E-mail Address, "
                "Email Address, E-mail 1 - Value)"
            )
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            items.append(_csv_record(line, columns, [_unguard(cell) for cell in row]))
    except csv.Error as exc:
        raise ContactFileError(f"line {reader.line_num}: not readable as CSV: {exc}") from exc
    return _result(items)


def write_csv(contacts: Iterable[ContactRecord]) -> str:
    """``Name,Email,Company,Phone,Notes`` with CRLF line ends (RFC 4180), readable by
    :func:`read_csv` and by Google Contacts, Outlook and HubSpot imports."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for c in contacts:
        writer.writerow([_guard(v) for v in (c.name, c.email, c.company, c.phone, c.notes)])
    return out.getvalue()


# vCard ---------------------------------------------------------------------------------

Params = dict[str, list[str]]
_ENCODINGS = frozenset({"QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT"})


class _BadValue(Exception):
    """A property's value cannot be decoded (turned into a RowError by the card reader)."""


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Unfolded content lines with the number of their first physical line. The line after a
    quoted-printable value ending in ``=`` (a soft line break, vCard 2.1 and 3.0) continues
    it, whole; otherwise a line starting with a space or tab continues the previous one,
    without that first space."""
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff")), 1):
        if lines and lines[-1][1].endswith("=") and _is_quoted_printable(lines[-1][1]):
            lines[-1] = (lines[-1][0], lines[-1][1][:-1] + raw)  # all of it: spaces are text
        elif lines and raw[:1] in (" ", "\t"):
            lines[-1] = (lines[-1][0], lines[-1][1] + raw[1:])
        else:
            lines.append((number, raw))
    return lines


def _is_quoted_printable(line: str) -> bool:
    head = line.split(":", 1)[0].upper()
    return ":" in line and "QUOTED-PRINTABLE" in head


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _content_line(line: str) -> tuple[str, Params, str] | None:
    """``[group.]NAME;PARAM=a,b;BARE:value`` -> (NAME, params, raw value); None if no colon."""
    colon, quoted = -1, False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            colon = index
            break
    if colon < 0:
        return None
    head, value = line[:colon], line[colon + 1 :]
    name, *raw_params = _split_outside_quotes(head, ";")
    params: Params = {}
    for param in raw_params:
        key, equals, values = param.partition("=")
        if equals:
            parsed = [v.strip() for v in values.replace('"', "").split(",")]
            params.setdefault(key.strip().upper(), []).extend(parsed)
        elif param.strip():  # vCard 2.1: TYPE and ENCODING values stand alone
            bare = param.strip().upper()
            params.setdefault("ENCODING" if bare in _ENCODINGS else "TYPE", []).append(bare)
    return name.rpartition(".")[2].strip().upper(), params, value


def _decoded(value: str, params: Params) -> str:
    encoding = (params.get("ENCODING") or [""])[0].upper()
    if encoding != "QUOTED-PRINTABLE":
        return value
    charset = (params.get("CHARSET") or ["utf-8"])[0]
    try:
        return quopri.decodestring(value.encode("utf-8")).decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise _BadValue(f"cannot decode the quoted-printable value as {charset}: {exc}") from exc


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "\\")
            out.append("\n" if following in "nN" else following)
        else:
            out.append(char)
    return "".join(out)


def _components(value: str) -> list[str]:
    """A structured value (N, ORG) split on its unescaped semicolons, each part unescaped."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            current += [char, next(chars, "")]
        elif char == ";":
            parts.append(_unescape("".join(current)))
            current = []
        else:
            current.append(char)
    parts.append(_unescape("".join(current)))
    return parts


def _preference(params: Params) -> int:
    """1 (most preferred) to 100 as vCard 4.0's PREF; TYPE=pref (2.1, 3.0) counts as 1."""
    for value in params.get("PREF", []):
        if value.isdigit():
            return int(value)
    return 1 if "PREF" in (t.upper() for t in params.get("TYPE", [])) else 101


def _card(begin: int, props: list[tuple[int, str, Params, str]]) -> ContactRecord | RowError:
    values: dict[str, list[tuple[int, str]]] = {}  # name -> (preference, value), file order
    for number, name, params, raw in props:
        try:
            value = _decoded(raw, params)
        except _BadValue as exc:
            return RowError(number, str(exc))
        values.setdefault(name, []).append((_preference(params), value))

    def ranked(name: str) -> list[str]:  # sorted() is stable: file order among equals
        return [v for _, v in sorted(values.get(name, []), key=lambda item: item[0])]

    def first(name: str) -> str:
        found = values.get(name)
        return found[0][1] if found else ""

    name = _unescape(first("FN"))
    if not name.strip() and "N" in values:
        family, given, additional, *_ = [*_components(first("N")), "", "", ""]
        name = " ".join(p for p in (given, additional, family) if p.strip())
    phone = next(iter(ranked("TEL")), "")
    if phone[:4].lower() == "tel:":
        phone = phone[4:]
    return _record(
        begin,
        name=name,
        emails=[_unescape(e) for e in ranked("EMAIL")],
        company=_components(first("ORG"))[0],
        phone=_unescape(phone),
        notes="\n".join(_unescape(n) for n in ranked("NOTE")),
    )


def read_vcards(text: str) -> ImportResult:
    """Contacts from vCards 2.1, 3.0 or 4.0: FN (else N), EMAIL and TEL (the preferred one,
    else the first), ORG, NOTE."""
    items: list[ContactRecord | RowError] = []
    card: list[tuple[int, str, Params, str]] | None = None
    begin = 0
    found = False
    for number, line in _logical_lines(text):
        if not line.strip():
            continue
        parsed = _content_line(line)
        marker = (parsed[0], parsed[2].strip().upper()) if parsed else None
        if marker == ("BEGIN", "VCARD"):
            if card is not None:
                items.append(RowError(begin, "vCard has no END:VCARD"))
            card, begin, found = [], number, True
        elif marker == ("END", "VCARD"):
            if card is None:
                items.append(RowError(number, "END:VCARD without BEGIN:VCARD"))
            else:
                items.append(_card(begin, card))
                card = None
        elif card is None:
            items.append(RowError(number, "text outside a vCard"))
        elif parsed is None:
            items.append(RowError(number, "not a vCard property (no colon)"))
        else:
            card.append((number, *parsed))
    if card is not None:
        items.append(RowError(begin, "vCard has no END:VCARD"))
    if not found:
        raise ContactFileError("no vCard in the file (no BEGIN:VCARD line)")
    return _result(items)


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def _fold(line: str) -> str:
    """Lines of at most 75 octets of UTF-8, never splitting a character (RFC 6350 3.2)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > 75:
            pieces.append("".join(current))
            current, size = [" "], 1
        current.append(char)
        size += width
    pieces.append("".join(current))
    return "\r\n".join(pieces)


def write_vcards(contacts: Iterable[ContactRecord]) -> str:
    """vCard 4.0, CRLF line ends, folded at 75 octets, text escaped."""
    lines: list[str] = []
    for c in contacts:
        lines += ["BEGIN:VCARD", "VERSION:4.0", f"FN:{_escape(c.name)}"]
        lines.append(f"EMAIL:{_escape(c.email)}")
        lines += [f"ORG:{_escape(c.company)}"] if c.company else []
        lines += [f"TEL:{_escape(c.phone)}"] if c.phone else []
        lines += [f"NOTE:{_escape(c.notes)}"] if c.notes else []
        lines.append("END:VCARD")
    return "".join(_fold(line) + "\r\n" for line in lines)


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
