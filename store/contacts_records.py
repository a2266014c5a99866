"""Contacts as files hold them, whatever the format: :class:`ContactRecord` and
:class:`RowError`, the store's field bounds, address validation, turning raw fields into a
record, merging duplicate addresses, and decoding a file's bytes (:func:`decode`)."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from store.errors import StoreError


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


# Column sizes of the contacts read model (store/models.py), and bounds for the facts.
NAME_MAX = 200
COMPANY_MAX = 200
PHONE_MAX = 100
NOTES_MAX = 20_000
EMAIL_MAX = 247  # "contact:<address>", the idempotency key of its creation, fits in 255


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
