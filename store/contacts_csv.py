"""Contacts as CSV: :func:`read_csv` (Google Contacts, Outlook, HubSpot exports, and other
header-row files) and :func:`write_csv`."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

from store.contacts_records import (
    ContactFileError,
    ContactRecord,
    ImportResult,
    RowError,
    _record,
    _result,
)

CSV_COLUMNS = ("Name", "Email", "Company", "Phone", "Notes")

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
# A formula, or a value the import would read as a guarded one ("'=x"): guarded on export,
# so that what is exported is imported back as it was.
_GUARDED = re.compile(r"'*[=+\-@\t\r]")


def _guard(value: str) -> str:
    if _GUARDED.match(value) and not (value[0] in "+-" and set(value) <= _PHONE_CHARS):
        return "'" + value
    return value


def _unguard(value: str) -> str:
    return value[1:] if value[:1] == "'" and _GUARDED.match(value[1:]) else value


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
    """Contacts from a CSV export with a header row (see :mod:`store.contacts_io`)."""
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
