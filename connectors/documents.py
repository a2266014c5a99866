"""The documents connector: invoices, a changelog and a news feed in one documents folder.

Everything lives under one folder, and the folder is the truth: every action can tell from
the files alone whether it already took effect, so :meth:`DocumentsConnector.lookup` is
definitive. Layout::

    invoices/<number>.html, .pdf            an invoice (never deleted, never overwritten)
    invoices/<number>.void.html, .void.pdf  the same invoice marked VOID
    CHANGELOG.md                            newest section first, each between two markers
    feed.xml                                Atom 1.0, newest entry first, at most 50 entries
    posts/<slug>-<id>.md                    one post per entry, with its id in the front matter

Files appear atomically (temporary file, fsync, rename), and a change that rewrites a shared
file (the changelog, the feed) holds the folder's lock: a ``threading`` lock inside the
process and an ``fcntl`` lock on ``.opcore.lock`` between processes. No path leaves the
folder: names are validated, and every path is resolved (symlinks too) and checked.

An invoice's identity is its content: publishing the same invoice again (any key) does
nothing and returns the first result; publishing other content under a number already used
is refused for good (numbers are never reused, a voided one included).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import time
import unicodedata
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.base import ActionResult, ActionSpec, Connector
from connectors.errors import (
    ConnectorError,
    InvalidParamsError,
    PermanentConnectorError,
    TransientConnectorError,
)
from connectors.invoice import (
    CurrencyCode,
    Invoice,
    InvoiceLine,
    InvoiceNumber,
    Party,
    TaxRate,
    Text,
    check_dates,
    format_money,
    invoice_from_html,
    render_html,
    render_pdf,
)

ATOM = "http://www.w3.org/2005/Atom"
FEED_LIMIT = 50
CHANGELOG_HEADER = "# Changelog\n\n"
_MARKER = re.compile(r"<!--\s*/?\s*opcore:", re.IGNORECASE)
_ENTRY_ID = re.compile(r"urn:opcore:(?P<hash>[0-9a-f]{32})")
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()

ET.register_namespace("", ATOM)


def key_hash(idempotency_key: str) -> str:
    """A stable, file-name-safe id for an idempotency key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def _no_markers(value: str) -> str:
    if _MARKER.search(value):
        raise ValueError("may not contain opcore's own '<!-- opcore:' markers")
    return value


def _xml_text(value: str) -> str:
    if any(c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ValueError("may not contain control characters")
    if "\ufffe" in value or "\uffff" in value:
        raise ValueError("may not contain non-characters")
    return value


def _one_line(value: str) -> str:
    if "\n" in value or "\t" in value:
        raise ValueError("must be one line")
    return value


def _check_link(value: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in value)
    ):
        raise ValueError("a link is an absolute http:// or https:// URL without spaces")
    return value


# --- params -----------------------------------------------------------------------------


class PublishInvoice(BaseModel):
    """Parameters of ``publish_invoice``: an :class:`Invoice`, whose seller may come from
    the connector's configuration instead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: InvoiceNumber
    issue_date: date
    due_date: date
    seller: Party | None = None
    client: Party
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=100)]
    currency: CurrencyCode
    tax_rate: TaxRate = Decimal(0)
    notes: Annotated[Text, Field(max_length=2000)] = ""

    @model_validator(mode="after")
    def _due_after_issue(self) -> Self:
        check_dates(self.issue_date, self.due_date)
        return self


class VoidInvoice(BaseModel):
    """Parameters of ``void_invoice``. As the compensation of ``publish_invoice`` it gets
    that action's params and result too: only ``number`` (and ``reason``) are read."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    number: InvoiceNumber
    reason: Annotated[Text, Field(max_length=300)] = ""


class AppendChangelog(BaseModel):
    """Parameters of ``append_changelog``: one release's section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$")]
    date: date
    body: Annotated[
        str,
        Field(min_length=1, max_length=20_000),
        AfterValidator(_xml_text),
        AfterValidator(_no_markers),
    ]


class RemoveChangelogEntry(BaseModel):
    """Parameters of ``remove_changelog_entry``: the ``entry`` an append reported (as the
    compensation it also gets the append's params, which are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    entry: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class PublishPost(BaseModel):
    """Parameters of ``publish_post``: a feed entry and its Markdown page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: Annotated[
        str,
        Field(min_length=1, max_length=200),
        AfterValidator(_xml_text),
        AfterValidator(_one_line),
    ]
    body: Annotated[str, Field(min_length=1, max_length=50_000), AfterValidator(_xml_text)]
    link: Annotated[str, Field(max_length=2000), AfterValidator(_check_link)] | None = None
    summary: Annotated[str, Field(max_length=500), AfterValidator(_xml_text)] | None = None


class UnpublishPost(BaseModel):
    """Parameters of ``unpublish_post``: the entry ``id`` a publish reported."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Annotated[str, Field(pattern=_ENTRY_ID.pattern)]


# --- the folder -------------------------------------------------------------------------


def _fs_error(exc: OSError, path: Path) -> ConnectorError:
    fatal = isinstance(
        exc, PermissionError | FileExistsError | IsADirectoryError | NotADirectoryError
    ) or exc.errno in (errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP)
    kind = PermanentConnectorError if fatal else TransientConnectorError
    return kind(f"documents: cannot use {path}: {exc}")


class Folder:
    """Safe, atomic file operations confined to one directory."""

    def __init__(self, root: Path, *, lock_timeout: float) -> None:
        self.root = root
        self.lock_timeout = lock_timeout

    def path(self, relative: str) -> Path:
        """``relative`` inside the folder, symlinks resolved; refused when it leads outside."""
        root = self.root.resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or target == root:
            raise PermanentConnectorError(
                f"documents: {relative!r} leads outside the documents folder {root}"
            )
        return target

    def read(self, relative: str) -> bytes | None:
        path = self.path(relative)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _fs_error(exc, path) from exc

    def read_text(self, relative: str) -> str | None:
        data = self.read(relative)
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise PermanentConnectorError(f"documents: {relative} is not UTF-8 text") from exc

    def exists(self, relative: str) -> bool:
        return self.path(relative).is_file()

    def write(self, relative: str, data: bytes) -> None:
        """Replace ``relative`` with ``data`` atomically (temporary file, fsync, rename)."""
        path = self.path(relative)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.path(relative)  # the parent just made may be a symlink made meanwhile
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)  # only still there when writing or renaming failed
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise _fs_error(exc, path) from exc

    def remove(self, relative: str) -> None:
        path = self.path(relative)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _fs_error(exc, path) from exc

    def glob(self, folder: str, pattern: str) -> list[str]:
        """Names of the files in ``folder`` matching ``pattern``, as paths relative to the root."""
        base = self.path(folder)
        try:
            return sorted(f"{folder}/{p.name}" for p in base.glob(pattern) if p.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _fs_error(exc, base) from exc

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock: one writer at a time, across threads and processes."""
        root = self.root.resolve()
        with _THREAD_LOCKS_GUARD:
            lock = _THREAD_LOCKS.setdefault(root, threading.Lock())
        if not lock.acquire(timeout=self.lock_timeout):
            raise TransientConnectorError(f"documents: {root} is busy (another writer)")
        try:
            lock_path = root / ".opcore.lock"
            try:
                root.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise _fs_error(exc, lock_path) from exc
            try:
                deadline = time.monotonic() + self.lock_timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise TransientConnectorError(
                                f"documents: {root} is locked by another process"
                            ) from None
                        time.sleep(0.01)
                yield
            finally:
                os.close(fd)  # closing releases the flock
        finally:
            lock.release()


# --- the connector ----------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _atom_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _q(tag: str) -> str:
    return f"{{{ATOM}}}{tag}"


def slugify(title: str) -> str:
    """``Hello, Wörld!`` -> ``hello-world``: ASCII letters and digits joined by ``-``."""
    ascii_ = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")[:60].rstrip("-")
    return slug or "post"


class DocumentsConnector(Connector):
    """Writes invoices, changelog sections and feed posts into one documents folder."""

    name: ClassVar[str] = "documents"
    actions: ClassVar[Mapping[str, ActionSpec]] = MappingProxyType(
        {
            "publish_invoice": ActionSpec(
                name="publish_invoice",
                mode="write",
                description=(
                    "Issue an invoice: write invoices/<number>.html and .pdf. A number is "
                    "never reused."
                ),
                params=PublishInvoice,
                compensation="void_invoice",
                sensitive=("client", "lines", "currency", "tax_rate", "seller"),
                free_text=("notes",),
            ),
            "void_invoice": ActionSpec(
                name="void_invoice",
                mode="write",
                description="Mark an issued invoice VOID (its files are kept, never deleted).",
                params=VoidInvoice,
                sensitive=("number",),
                free_text=("reason",),
            ),
            "append_changelog": ActionSpec(
                name="append_changelog",
                mode="write",
                description="Add a release's section (Markdown) at the top of CHANGELOG.md.",
                params=AppendChangelog,
                compensation="remove_changelog_entry",
                free_text=("body",),
            ),
            "remove_changelog_entry": ActionSpec(
                name="remove_changelog_entry",
                mode="write",
                description="Remove exactly one section that append_changelog added.",
                params=RemoveChangelogEntry,
            ),
            "publish_post": ActionSpec(
                name="publish_post",
                mode="write",
                description="Publish a post: an entry in the Atom feed and posts/<slug>.md.",
                params=PublishPost,
                compensation="unpublish_post",
                sensitive=("link",),
                free_text=("title", "body", "summary"),
            ),
            "unpublish_post": ActionSpec(
                name="unpublish_post",
                mode="write",
                description="Remove a published post from the feed and its page.",
                params=UnpublishPost,
            ),
        }
    )

    def __init__(
        self,
        directory: Path,
        *,
        seller: Party | None = None,
        feed_title: str = "News",
        lock_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.folder = Folder(directory, lock_timeout=lock_timeout)
        self.directory = directory
        self.seller = seller
        self.feed_title = _one_line(_xml_text(feed_title))
        self.clock = clock

    # Contract -----------------------------------------------------------------------------

    def validate(self, action: str, params: Mapping[str, Any]) -> BaseModel:
        validated = super().validate(action, params)
        if isinstance(validated, PublishInvoice):
            self._invoice(validated)  # the seller must be known before the proposal
        return validated

    def execute(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult:
        validated = self._checked(action, params, idempotency_key)
        with self.folder.locked():
            if (done := self._find(validated, idempotency_key)) is not None:
                return done
            return self._do(validated, idempotency_key)

    def lookup(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult | None:
        return self._find(self._checked(action, params, idempotency_key), idempotency_key)

    @property
    def lookup_is_definitive(self) -> bool:
        return True  # every write is atomic, and the last file written says it is done

    def _checked(self, action: str, params: Mapping[str, Any], key: str) -> BaseModel:
        validated = self.validate(action, params)
        if not key:
            raise InvalidParamsError("documents: the idempotency key may not be empty")
        return validated

    def _find(self, params: BaseModel, key: str) -> ActionResult | None:
        match params:
            case PublishInvoice():
                return self._find_invoice(self._invoice(params))
            case VoidInvoice():
                return self._find_void(params.number)
            case AppendChangelog():
                return self._find_changelog(params, key_hash(key))
            case RemoveChangelogEntry():
                return self._find_removed_changelog(params.entry)
            case PublishPost():
                return self._find_post(params, key_hash(key))
            case UnpublishPost():
                return self._find_unpublished(params.id)
        raise TypeError(f"no handler for {type(params).__name__}")

    def _do(self, params: BaseModel, key: str) -> ActionResult:
        match params:
            case PublishInvoice():
                return self._publish_invoice(self._invoice(params))
            case VoidInvoice():
                return self._void_invoice(params)
            case AppendChangelog():
                return self._append_changelog(params, key_hash(key))
            case RemoveChangelogEntry():
                return self._remove_changelog(params.entry)
            case PublishPost():
                return self._publish_post(params, key_hash(key))
            case UnpublishPost():
                return self._unpublish_post(params.id)
        raise TypeError(f"no handler for {type(params).__name__}")

    # Invoices -----------------------------------------------------------------------------

    def _invoice(self, params: PublishInvoice) -> Invoice:
        seller = params.seller or self.seller
        if seller is None:
            raise InvalidParamsError(
                "documents.publish_invoice: no seller (give one, or configure the connector's)"
            )
        if self.seller is not None and seller != self.seller:
            raise InvalidParamsError(
                "documents.publish_invoice: the seller is configured; an invoice may not name "
                "another"
            )
        fields = params.model_dump(exclude={"seller"})
        try:
            return Invoice.model_validate({**fields, "seller": seller})
        except ValidationError as exc:
            raise InvalidParamsError(f"documents.publish_invoice: {exc}") from exc

    def _stored_invoice(self, relative: str) -> Invoice | None:
        page = self.folder.read_text(relative)
        if page is None:
            return None
        try:
            stored = invoice_from_html(page)
        except ValueError as exc:
            raise PermanentConnectorError(f"documents: {relative} holds a broken invoice") from exc
        if stored is None:
            raise PermanentConnectorError(f"documents: {relative} is not an opcore invoice")
        return stored

    @staticmethod
    def _invoice_result(inv: Invoice) -> ActionResult:
        html, pdf = f"invoices/{inv.number}.html", f"invoices/{inv.number}.pdf"
        amount = format_money(inv.total, inv.currency)
        return ActionResult(
            summary=(
                f"Invoice {inv.number} to {inv.client.name}: {amount}, due "
                f"{inv.due_date.isoformat()} ({pdf})"
            ),
            details={
                "number": inv.number,
                "total": str(inv.total),
                "currency": inv.currency,
                "html": html,
                "pdf": pdf,
                "due_date": inv.due_date.isoformat(),
            },
        )

    def _find_invoice(self, inv: Invoice) -> ActionResult | None:
        stored = self._stored_invoice(f"invoices/{inv.number}.html")
        return self._invoice_result(inv) if stored == inv else None

    def _publish_invoice(self, inv: Invoice) -> ActionResult:
        html = f"invoices/{inv.number}.html"
        if self._stored_invoice(html) is not None:  # _find saw that it is another invoice
            raise PermanentConnectorError(
                f"documents: invoice number {inv.number} is already used by another invoice; "
                "numbers are never reused"
            )
        # The PDF first: the page is what says the invoice exists.
        self.folder.write(f"invoices/{inv.number}.pdf", render_pdf(inv))
        self.folder.write(html, render_html(inv).encode())
        return self._invoice_result(inv)

    @staticmethod
    def _void_result(number: str) -> ActionResult:
        html, pdf = f"invoices/{number}.void.html", f"invoices/{number}.void.pdf"
        return ActionResult(
            summary=f"Invoice {number} voided ({pdf}); the original is kept",
            details={"number": number, "html": html, "pdf": pdf, "void": True},
        )

    def _find_void(self, number: str) -> ActionResult | None:
        return (
            self._void_result(number)
            if self.folder.exists(f"invoices/{number}.void.html")
            else None
        )

    def _void_invoice(self, params: VoidInvoice) -> ActionResult:
        inv = self._stored_invoice(f"invoices/{params.number}.html")
        if inv is None:
            raise PermanentConnectorError(f"documents: there is no invoice {params.number} to void")
        pdf = render_pdf(inv, void=True, void_reason=params.reason)
        self.folder.write(f"invoices/{inv.number}.void.pdf", pdf)
        page = render_html(inv, void=True, void_reason=params.reason)
        self.folder.write(f"invoices/{inv.number}.void.html", page.encode())
        return self._void_result(inv.number)

    # Changelog ----------------------------------------------------------------------------

    @staticmethod
    def _markers(entry: str) -> tuple[str, str]:
        return f"<!-- opcore:changelog {entry} -->\n", f"<!-- /opcore:changelog {entry} -->\n"

    @staticmethod
    def _changelog_result(params: AppendChangelog, entry: str) -> ActionResult:
        return ActionResult(
            summary=f"Added {params.version} ({params.date.isoformat()}) to CHANGELOG.md",
            details={
                "entry": entry,
                "version": params.version,
                "date": params.date.isoformat(),
                "path": "CHANGELOG.md",
            },
        )

    def _find_changelog(self, params: AppendChangelog, entry: str) -> ActionResult | None:
        text = self.folder.read_text("CHANGELOG.md") or ""
        return self._changelog_result(params, entry) if self._markers(entry)[0] in text else None

    def _append_changelog(self, params: AppendChangelog, entry: str) -> ActionResult:
        text = self.folder.read_text("CHANGELOG.md")
        if text is None:
            text = CHANGELOG_HEADER
        begin, end = self._markers(entry)
        section = (
            f"{begin}## {params.version} — {params.date.isoformat()}\n\n"
            f"{params.body.strip(chr(10))}\n{end}\n"
        )
        at = 0
        if text.startswith("# "):  # keep the title on top
            if "\n" not in text:
                text += "\n\n"
            at = text.index("\n") + 1
            while text.startswith("\n", at):
                at += 1
        self.folder.write("CHANGELOG.md", (text[:at] + section + text[at:]).encode())
        return self._changelog_result(params, entry)

    def _find_removed_changelog(self, entry: str) -> ActionResult | None:
        text = self.folder.read_text("CHANGELOG.md") or ""
        return None if self._markers(entry)[0] in text else self._removed_result(entry)

    @staticmethod
    def _removed_result(entry: str) -> ActionResult:
        return ActionResult(
            summary="Removed the section from CHANGELOG.md",
            details={"entry": entry, "path": "CHANGELOG.md"},
        )

    def _remove_changelog(self, entry: str) -> ActionResult:
        text = self.folder.read_text("CHANGELOG.md") or ""
        begin, end = self._markers(entry)
        start = text.find(begin)
        stop = text.find(end, start)
        if start < 0 or stop < 0:
            raise PermanentConnectorError(
                f"documents: CHANGELOG.md has a broken section {entry} (its end marker is gone)"
            )
        stop += len(end)
        if text.startswith("\n", stop):  # the blank line the append put after it
            stop += 1
        self.folder.write("CHANGELOG.md", (text[:start] + text[stop:]).encode())
        return self._removed_result(entry)

    # Feed and posts -----------------------------------------------------------------------

    @staticmethod
    def _post_path(title: str, entry: str) -> str:
        return f"posts/{slugify(title)}-{entry[:8]}.md"

    @staticmethod
    def _post_result(params: PublishPost, entry: str, path: str) -> ActionResult:
        return ActionResult(
            summary=f"Published {params.title!r} in feed.xml and {path}",
            details={
                "id": f"urn:opcore:{entry}",
                "title": params.title,
                "path": path,
                "feed": "feed.xml",
            },
        )

    def _post_id(self, relative: str) -> str | None:
        """The id in a post's front matter."""
        text = self.folder.read_text(relative)
        if text is None:
            return None
        match = re.search(r"^id: (urn:opcore:[0-9a-f]{32})$", text.split("\n---\n", 1)[0], re.M)
        return match[1] if match else None

    def _find_post(self, params: PublishPost, entry: str) -> ActionResult | None:
        path = self._post_path(params.title, entry)
        found = self._post_id(path)
        if found is None:
            return None
        if found != f"urn:opcore:{entry}":
            raise PermanentConnectorError(f"documents: {path} belongs to another post ({found})")
        return self._post_result(params, entry, path)

    def _read_feed(self) -> ET.Element | None:
        data = self.folder.read("feed.xml")
        if data is None:
            return None
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise PermanentConnectorError(
                f"documents: feed.xml is not well-formed XML: {exc}"
            ) from exc
        if root.tag != _q("feed"):
            raise PermanentConnectorError(f"documents: feed.xml is not an Atom feed ({root.tag})")
        return root

    def _new_feed(self) -> ET.Element:
        root = ET.Element(_q("feed"))
        ET.SubElement(root, _q("id")).text = f"urn:uuid:{uuid.uuid4()}"
        ET.SubElement(root, _q("title"))
        ET.SubElement(root, _q("updated"))
        author = ET.SubElement(root, _q("author"))
        ET.SubElement(author, _q("name")).text = self.seller.name if self.seller else "opcore"
        ET.SubElement(root, _q("generator")).text = "opcore"
        return root

    def _write_feed(self, root: ET.Element, now: datetime) -> None:
        for tag, value in (("title", self.feed_title), ("updated", _atom_time(now))):
            element = root.find(_q(tag))
            if element is None:
                element = ET.SubElement(root, _q(tag))
            element.text = value
        ET.indent(root)
        self.folder.write("feed.xml", ET.tostring(root, encoding="utf-8", xml_declaration=True))

    @staticmethod
    def _entries(root: ET.Element, entry_id: str) -> list[ET.Element]:
        return [e for e in root.findall(_q("entry")) if e.findtext(_q("id")) == entry_id]

    def _publish_post(self, params: PublishPost, entry: str) -> ActionResult:
        entry_id, now = f"urn:opcore:{entry}", self.clock()
        path = self._post_path(params.title, entry)
        root = self._read_feed()
        if root is None:
            root = self._new_feed()
        if not self._entries(root, entry_id):  # a crash may have left the entry without page
            item = ET.Element(_q("entry"))
            ET.SubElement(item, _q("id")).text = entry_id
            ET.SubElement(item, _q("title")).text = params.title
            ET.SubElement(item, _q("updated")).text = _atom_time(now)
            ET.SubElement(item, _q("published")).text = _atom_time(now)
            if params.link:
                ET.SubElement(item, _q("link"), rel="alternate", href=params.link)
            if params.summary:
                ET.SubElement(item, _q("summary")).text = params.summary
            ET.SubElement(item, _q("content"), type="text").text = params.body
            children = list(root)
            first = next((i for i, c in enumerate(children) if c.tag == _q("entry")), len(children))
            root.insert(first, item)
            for old in root.findall(_q("entry"))[FEED_LIMIT:]:
                root.remove(old)
            self._write_feed(root, now)
        front = [f"id: {entry_id}", f"title: {json.dumps(params.title, ensure_ascii=False)}"]
        front.append(f"published: {_atom_time(now)}")
        if params.link:
            front.append(f"link: {json.dumps(params.link)}")
        if params.summary:
            front.append(f"summary: {json.dumps(params.summary, ensure_ascii=False)}")
        page = "---\n" + "\n".join(front) + "\n---\n\n" + params.body.rstrip("\n") + "\n"
        # The page last: it is what says the post is published.
        self.folder.write(path, page.encode())
        return self._post_result(params, entry, path)

    def _post_pages(self, entry_id: str) -> list[str]:
        entry = entry_id.removeprefix("urn:opcore:")
        pages = self.folder.glob("posts", f"*-{entry[:8]}.md")
        return [p for p in pages if self._post_id(p) == entry_id]

    def _find_unpublished(self, entry_id: str) -> ActionResult | None:
        root = self._read_feed()
        in_feed = root is not None and bool(self._entries(root, entry_id))
        if in_feed or self._post_pages(entry_id):
            return None
        return self._unpublished_result(entry_id)

    @staticmethod
    def _unpublished_result(entry_id: str) -> ActionResult:
        return ActionResult(
            summary="Removed the post from feed.xml and its page",
            details={"id": entry_id, "feed": "feed.xml"},
        )

    def _unpublish_post(self, entry_id: str) -> ActionResult:
        root = self._read_feed()
        if root is not None and (found := self._entries(root, entry_id)):
            for item in found:
                root.remove(item)
            self._write_feed(root, self.clock())
        for page in self._post_pages(entry_id):
            self.folder.remove(page)
        return self._unpublished_result(entry_id)
