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

The folder and its Atom feed are in :mod:`connectors.documents_folder`, the action
parameters in :mod:`connectors.documents_params`; both are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from connectors.base import ActionResult, ActionSpec, Connector
from connectors.documents_folder import (
    ATOM,
    FEED_LIMIT,
    Folder,
    _atom_time,
    _q,
    feed_entries,
    new_feed,
    read_feed,
    slugify,
    write_feed,
)
from connectors.documents_params import (
    AppendChangelog,
    PublishInvoice,
    PublishPost,
    RemoveChangelogEntry,
    UnpublishPost,
    VoidInvoice,
    _one_line,
    _xml_text,
)
from connectors.errors import InvalidParamsError, PermanentConnectorError
from connectors.invoice import (
    Invoice,
    Party,
    format_money,
    invoice_from_html,
    render_html,
    render_pdf,
)

__all__ = [
    "ATOM",
    "CHANGELOG_HEADER",
    "FEED_LIMIT",
    "AppendChangelog",
    "DocumentsConnector",
    "Folder",
    "PublishInvoice",
    "PublishPost",
    "RemoveChangelogEntry",
    "UnpublishPost",
    "VoidInvoice",
    "key_hash",
    "slugify",
]

CHANGELOG_HEADER = "# Changelog\n\n"


def key_hash(idempotency_key: str) -> str:
    """A stable, file-name-safe id for an idempotency key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


# --- the connector ----------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


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

    def _publish_post(self, params: PublishPost, entry: str) -> ActionResult:
        entry_id, now = f"urn:opcore:{entry}", self.clock()
        path = self._post_path(params.title, entry)
        root = read_feed(self.folder)
        if root is None:
            root = new_feed(self.seller.name if self.seller else "opcore")
        if not feed_entries(root, entry_id):  # a crash may have left the entry without page
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
            write_feed(self.folder, root, title=self.feed_title, now=now)
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
        root = read_feed(self.folder)
        in_feed = root is not None and bool(feed_entries(root, entry_id))
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
        root = read_feed(self.folder)
        if root is not None and (found := feed_entries(root, entry_id)):
            for item in found:
                root.remove(item)
            write_feed(self.folder, root, title=self.feed_title, now=self.clock())
        for page in self._post_pages(entry_id):
            self.folder.remove(page)
        return self._unpublished_result(entry_id)
