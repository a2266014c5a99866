"""``opcore contacts import`` and ``opcore contacts export``: the store as the CRM, in CSV
(Google Contacts, Outlook, HubSpot) and vCard.

Exit codes of ``import``: 0 every row imported; 1 some rows were bad (reported with their line;
the good ones are imported unless ``--strict``); 2 the file is unusable (raised as a
:class:`~store.contacts_io.ContactFileError`, which ``opcore`` turns into 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from config import Settings
from store import open_store
from store.contacts_io import (
    ContactFileError,
    ImportResult,
    decode,
    import_contacts,
    read_csv,
    read_vcards,
    stored_contacts,
    write_csv,
    write_vcards,
)

FORMATS = ("csv", "vcf")
EXTENSIONS = {".csv": "csv", ".vcf": "vcf", ".vcard": "vcf"}
STDOUT = "-"


def add_commands(sub: Any) -> None:
    contacts = sub.add_parser("contacts", help="import or export contacts as CSV or vCard")
    actions = contacts.add_subparsers(dest="contacts_command", required=True)
    load = actions.add_parser(
        "import",
        help="add and update contacts from a CSV (Google, Outlook, HubSpot) or vCard file",
    )
    load.add_argument("file", type=Path)
    load.add_argument("--format", choices=FORMATS, help="instead of the file's extension")
    load.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    load.add_argument("--strict", action="store_true", help="import nothing if any row is bad")
    load.set_defaults(func=cmd_import)
    dump = actions.add_parser("export", help="write every contact to a CSV or vCard 4.0 file")
    dump.add_argument("file", help=f"where to write, or {STDOUT} for standard output")
    dump.add_argument(
        "--format", choices=FORMATS, help="instead of the file's extension (csv for -)"
    )
    dump.set_defaults(func=cmd_export)


def file_format(file: str, given: str | None) -> str:
    """``--format`` if given, else the one the file's extension names (csv for stdout)."""
    if given:
        return given
    if file == STDOUT:
        return "csv"
    found = EXTENSIONS.get(Path(file).suffix.lower())
    if found is None:
        raise ContactFileError(
            f"cannot tell the format of {file} from its extension: give --format csv or vcf"
        )
    return found


def read_file(path: Path, fmt: str) -> ImportResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ContactFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    text, encoding = decode(data)
    if encoding == "cp1252":
        print(f"opcore: {path} is not UTF-8; read it as Windows-1252", file=sys.stderr)
    return read_csv(text) if fmt == "csv" else read_vcards(text)


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    path: Path = args.file
    result = read_file(path, file_format(str(path), args.format))
    for error in result.errors:
        print(f"{path}:{error.line}: {error.reason}", file=sys.stderr)
    if args.strict and result.errors:
        print(f"{len(result.errors)} bad row(s): nothing imported (--strict)")
        return 1
    store = open_store(settings.resolved_database_url)
    try:
        summary = import_contacts(
            store.log,
            result.records,
            by="cli",
            source=f"import {path.name}",
            dry_run=args.dry_run,
        )
    finally:
        store.close()
    line = f"created {summary.created}, updated {summary.updated}, unchanged {summary.unchanged}"
    if result.errors:
        line += f"; {len(result.errors)} bad row(s) skipped"
    if args.dry_run:
        line += " (dry run: nothing written)"
    print(line)
    return 1 if result.errors else 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    fmt = file_format(args.file, args.format)
    store = open_store(settings.resolved_database_url)
    try:
        contacts = stored_contacts()
    finally:
        store.close()
    data = (write_csv(contacts) if fmt == "csv" else write_vcards(contacts)).encode("utf-8")
    message = f"exported {len(contacts)} contact(s) as {fmt}"
    if args.file == STDOUT:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)  # bytes: CRLF line ends stay as written
        sys.stdout.buffer.flush()
        print(message, file=sys.stderr)
        return 0
    path = Path(args.file)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)  # whole or not at all
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ContactFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    print(f"{message} to {path}")
    return 0
