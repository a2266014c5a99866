"""The documents connector: invoices, changelog and feed in one folder that is the truth."""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.documents import ATOM, DocumentsConnector, Folder, key_hash
from connectors.errors import (
    InvalidParamsError,
    PermanentConnectorError,
    TransientConnectorError,
    UnknownActionError,
)
from connectors.invoice import Party, invoice_from_html

SELLER = Party(name="Zoë Müller", email="zoe@example.com", company="Müller Design")
INVOICE: dict[str, Any] = {
    "number": "2026-0007",
    "issue_date": "2026-03-01",
    "due_date": "2026-03-31",
    "client": {"name": "Ana Ćorić", "email": "ana@example.org", "company": "Acme"},
    "lines": [
        {"description": "Design work", "quantity": "10", "unit_price": "100"},
        {"description": "Hosting", "quantity": "1", "unit_price": "23.45"},
    ],
    "currency": "EUR",
    "tax_rate": "0.2",
}
A = "{" + ATOM + "}"


class Clock:
    """A clock that moves one minute each time it is read."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> datetime:
        return datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=next(self.ticks))


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return tmp_path / "documents"


@pytest.fixture
def connector(docs: Path) -> DocumentsConnector:
    return DocumentsConnector(docs, seller=SELLER, feed_title="Müller Design news", clock=Clock())


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (but the lock file) with its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".opcore.lock"
    }


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


# --- invoices -----------------------------------------------------------------------------


def test_publishing_an_invoice_writes_its_page_and_pdf(
    connector: DocumentsConnector, docs: Path
) -> None:
    result = connector.execute("publish_invoice", INVOICE, idempotency_key="k1")

    assert result.details == {
        "number": "2026-0007",
        "total": "1228.14",  # (1000 + 23.45) * 1.2
        "currency": "EUR",
        "html": "invoices/2026-0007.html",
        "pdf": "invoices/2026-0007.pdf",
        "due_date": "2026-03-31",
    }
    assert "EUR 1,228.14" in result.summary and "Ana Ćorić" in result.summary
    assert sorted(p.name for p in (docs / "invoices").iterdir()) == [
        "2026-0007.html",
        "2026-0007.pdf",
    ]
    stored = invoice_from_html((docs / "invoices/2026-0007.html").read_text())
    assert stored is not None and stored.seller == SELLER and stored.number == "2026-0007"
    assert (docs / "invoices/2026-0007.pdf").read_bytes().startswith(b"%PDF-")
    assert no_temporary_files(docs)


def test_publishing_the_same_invoice_again_does_nothing_and_returns_the_same_result(
    connector: DocumentsConnector, docs: Path
) -> None:
    first = connector.execute("publish_invoice", INVOICE, idempotency_key="k1")
    before = snapshot(docs)
    assert connector.execute("publish_invoice", INVOICE, idempotency_key="k1") == first
    # Amounts written differently are the same invoice.
    same = {**INVOICE, "tax_rate": "0.20", "seller": SELLER.model_dump()}
    assert connector.execute("publish_invoice", same, idempotency_key="k2") == first
    assert snapshot(docs) == before


def test_a_used_number_with_other_content_is_refused_for_good(
    connector: DocumentsConnector, docs: Path
) -> None:
    connector.execute("publish_invoice", INVOICE, idempotency_key="k1")
    before = snapshot(docs)
    other = {**INVOICE, "lines": [{"description": "Other", "quantity": "1", "unit_price": "1"}]}
    assert connector.lookup("publish_invoice", other, idempotency_key="k2") is None
    with pytest.raises(PermanentConnectorError, match="never reused"):
        connector.execute("publish_invoice", other, idempotency_key="k2")
    assert snapshot(docs) == before


def test_lookup_is_definitive_and_sees_the_invoice_only_once_it_is_written(
    connector: DocumentsConnector,
) -> None:
    assert connector.lookup_is_definitive
    assert connector.lookup("publish_invoice", INVOICE, idempotency_key="k1") is None
    result = connector.execute("publish_invoice", INVOICE, idempotency_key="k1")
    assert connector.lookup("publish_invoice", INVOICE, idempotency_key="k1") == result


def test_a_pdf_left_by_a_crash_without_its_page_is_not_taken_as_published(
    connector: DocumentsConnector, docs: Path
) -> None:
    (docs / "invoices").mkdir(parents=True)
    (docs / "invoices/2026-0007.pdf").write_bytes(b"%PDF-half")
    assert connector.lookup("publish_invoice", INVOICE, idempotency_key="k1") is None
    connector.execute("publish_invoice", INVOICE, idempotency_key="k1")
    assert (docs / "invoices/2026-0007.pdf").read_bytes() != b"%PDF-half"


def test_the_seller_comes_from_the_configuration_or_the_params_but_never_both_differently(
    docs: Path,
) -> None:
    bare = DocumentsConnector(docs)
    with pytest.raises(InvalidParamsError, match="no seller"):
        bare.validate("publish_invoice", INVOICE)
    given = {**INVOICE, "seller": SELLER.model_dump()}
    assert bare.execute("publish_invoice", given, idempotency_key="k1").details["number"]
    configured = DocumentsConnector(docs, seller=SELLER)
    impostor = {**INVOICE, "seller": {"name": "Mallory", "email": "m@example.net"}}
    with pytest.raises(InvalidParamsError, match="seller is configured"):
        configured.validate("publish_invoice", impostor)


def test_voiding_keeps_the_originals_and_is_idempotent(
    connector: DocumentsConnector, docs: Path
) -> None:
    published = connector.execute("publish_invoice", INVOICE, idempotency_key="k1")
    originals = snapshot(docs)
    # Called as the compensation is: the action's params plus its result's details.
    undo_params = {**INVOICE, **published.details}
    voided = connector.execute("void_invoice", undo_params, idempotency_key="k1:undo")

    assert voided.details == {
        "number": "2026-0007",
        "html": "invoices/2026-0007.void.html",
        "pdf": "invoices/2026-0007.void.pdf",
        "void": True,
    }
    after = snapshot(docs)
    assert {k: after[k] for k in originals} == originals  # never deleted nor rewritten
    page = (docs / "invoices/2026-0007.void.html").read_text()
    assert "Void: this invoice is cancelled" in page
    assert (docs / "invoices/2026-0007.void.pdf").read_bytes().startswith(b"%PDF-")
    assert connector.lookup("void_invoice", undo_params, idempotency_key="k1:undo") == voided
    assert connector.execute("void_invoice", {"number": "2026-0007"}, idempotency_key="x") == voided
    assert snapshot(docs) == after
    # A voided number stays used.
    with pytest.raises(PermanentConnectorError):
        connector.execute(
            "publish_invoice", {**INVOICE, "notes": "second try"}, idempotency_key="k3"
        )


def test_voiding_an_invoice_that_does_not_exist_is_a_permanent_error(
    connector: DocumentsConnector, docs: Path
) -> None:
    with pytest.raises(PermanentConnectorError, match="no invoice"):
        connector.execute("void_invoice", {"number": "2026-0099"}, idempotency_key="k1")
    assert not (docs / "invoices").exists()


# --- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["../escape", "a/b", "..", "/etc/passwd", "x.void", ""])
def test_an_invoice_number_that_is_not_a_plain_name_is_refused(
    connector: DocumentsConnector, docs: Path, number: str
) -> None:
    with pytest.raises(InvalidParamsError):
        connector.execute("publish_invoice", {**INVOICE, "number": number}, idempotency_key="k")
    assert not (docs / "invoices").exists()


def test_a_symlink_out_of_the_folder_is_never_followed(
    connector: DocumentsConnector, docs: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    docs.mkdir()
    (docs / "invoices").symlink_to(outside)
    with pytest.raises(PermanentConnectorError, match="outside the documents folder"):
        connector.execute("publish_invoice", INVOICE, idempotency_key="k1")
    (docs / "CHANGELOG.md").symlink_to(outside / "CHANGELOG.md")
    with pytest.raises(PermanentConnectorError, match="outside the documents folder"):
        connector.execute(
            "append_changelog",
            {"version": "1.0.0", "date": "2026-03-01", "body": "x"},
            idempotency_key="k2",
        )
    assert list(outside.iterdir()) == []


def test_folder_paths_cannot_leave_the_folder(docs: Path) -> None:
    folder = Folder(docs, lock_timeout=1.0)
    for relative in ("../x", "a/../../x", "/etc/passwd", "."):
        with pytest.raises(PermanentConnectorError):
            folder.path(relative)
    assert folder.path("a/../b.md") == docs.resolve() / "b.md"


# --- changelog ----------------------------------------------------------------------------

OLD_CHANGELOG = "# Changelog\n\n## 1.0.0 — 2026-01-10\n\nFirst release.\n"


def release(version: str, body: str = "- Faster exports\n- Fixed the login bug") -> dict[str, Any]:
    return {"version": version, "date": "2026-03-01", "body": body}


def test_a_section_is_added_under_the_title_above_older_ones(
    connector: DocumentsConnector, docs: Path
) -> None:
    docs.mkdir()
    (docs / "CHANGELOG.md").write_text(OLD_CHANGELOG)
    result = connector.execute("append_changelog", release("1.1.0"), idempotency_key="k1")
    entry = key_hash("k1")
    assert (docs / "CHANGELOG.md").read_text() == (
        "# Changelog\n\n"
        f"<!-- opcore:changelog {entry} -->\n"
        "## 1.1.0 — 2026-03-01\n\n- Faster exports\n- Fixed the login bug\n"
        f"<!-- /opcore:changelog {entry} -->\n\n"
        "## 1.0.0 — 2026-01-10\n\nFirst release.\n"
    )
    assert result.details == {
        "entry": entry,
        "version": "1.1.0",
        "date": "2026-03-01",
        "path": "CHANGELOG.md",
    }


def test_a_repeated_append_does_nothing_and_undo_removes_exactly_its_section(
    connector: DocumentsConnector, docs: Path
) -> None:
    docs.mkdir()
    (docs / "CHANGELOG.md").write_text(OLD_CHANGELOG)
    first = connector.execute("append_changelog", release("1.1.0"), idempotency_key="k1")
    once = (docs / "CHANGELOG.md").read_text()
    assert connector.execute("append_changelog", release("1.1.0"), idempotency_key="k1") == first
    assert (docs / "CHANGELOG.md").read_text() == once
    second = connector.execute(
        "append_changelog", release("1.2.0", "Dark mode"), idempotency_key="k2"
    )
    both = (docs / "CHANGELOG.md").read_text()
    assert both.index("1.2.0") < both.index("1.1.0") < both.index("1.0.0")

    undo = {**release("1.1.0"), **first.details}
    assert connector.lookup("remove_changelog_entry", undo, idempotency_key="k1:undo") is None
    connector.execute("remove_changelog_entry", undo, idempotency_key="k1:undo")
    end_marker = f"<!-- /opcore:changelog {key_hash('k1')} -->\n\n"
    start = both.index(f"<!-- opcore:changelog {key_hash('k1')} -->")
    stop = both.index(end_marker) + len(end_marker)
    assert (docs / "CHANGELOG.md").read_text() == both[:start] + both[stop:]
    assert "1.1.0" not in (docs / "CHANGELOG.md").read_text()
    assert connector.lookup("remove_changelog_entry", undo, idempotency_key="k1:undo") is not None
    connector.execute("remove_changelog_entry", undo, idempotency_key="k1:undo")  # no-op
    connector.execute(
        "remove_changelog_entry", {**release("1.2.0"), **second.details}, idempotency_key="k2:undo"
    )
    assert (docs / "CHANGELOG.md").read_text() == OLD_CHANGELOG


def test_a_new_changelog_gets_a_title(connector: DocumentsConnector, docs: Path) -> None:
    connector.execute("append_changelog", release("0.1.0", "Hello"), idempotency_key="k1")
    text = (docs / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n\n<!-- opcore:changelog ")
    assert "## 0.1.0 — 2026-03-01\n\nHello\n" in text


@pytest.mark.parametrize(
    "change",
    [
        {"body": "nice <!-- /opcore:changelog 0123 -->"},
        {"body": ""},
        {"body": "x" * 20_001},
        {"version": "1.0\n## injected"},
        {"date": "yesterday"},
    ],
)
def test_a_changelog_section_that_could_break_the_markers_is_refused(
    connector: DocumentsConnector, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParamsError):
        connector.execute("append_changelog", {**release("1.1.0"), **change}, idempotency_key="k")


# --- feed and posts -----------------------------------------------------------------------


def feed(docs: Path) -> ET.Element:
    root = ET.parse(docs / "feed.xml").getroot()
    assert root.tag == f"{A}feed"
    for required in ("id", "title", "updated"):
        assert root.findtext(f"{A}{required}"), required
    assert root.findtext(f"{A}author/{A}name") == "Zoë Müller"
    for entry in root.findall(f"{A}entry"):
        for required in ("id", "title", "updated", "content"):
            assert entry.find(f"{A}{required}") is not None, required
    return root


def entry_ids(docs: Path) -> list[str]:
    return [e.findtext(f"{A}id") or "" for e in feed(docs).findall(f"{A}entry")]


def post(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "body": f"# {title}\n\nSome *Markdown* & <tags>.", **extra}


def test_publishing_posts_builds_an_atom_feed_newest_first(
    connector: DocumentsConnector, docs: Path
) -> None:
    first = connector.execute(
        "publish_post",
        post("Hello, Wörld!", link="https://example.com/hello", summary="Hi"),
        idempotency_key="k1",
    )
    connector.execute("publish_post", post("Second"), idempotency_key="k2")

    assert entry_ids(docs) == [f"urn:opcore:{key_hash('k2')}", f"urn:opcore:{key_hash('k1')}"]
    root = feed(docs)
    assert root.findtext(f"{A}title") == "Müller Design news"
    old = root.findall(f"{A}entry")[1]
    assert old.findtext(f"{A}title") == "Hello, Wörld!"
    assert old.findtext(f"{A}summary") == "Hi"
    assert old.findtext(f"{A}content") == "# Hello, Wörld!\n\nSome *Markdown* & <tags>."
    link = old.find(f"{A}link")
    assert link is not None and link.attrib == {
        "rel": "alternate",
        "href": "https://example.com/hello",
    }
    assert old.findtext(f"{A}updated") == "2026-03-01T09:00:00Z"
    assert root.findtext(f"{A}updated") == "2026-03-01T09:01:00Z"

    path = f"posts/hello-world-{key_hash('k1')[:8]}.md"
    assert first.details == {
        "id": f"urn:opcore:{key_hash('k1')}",
        "title": "Hello, Wörld!",
        "path": path,
        "feed": "feed.xml",
    }
    page = (docs / path).read_text()
    assert page.startswith(f'---\nid: urn:opcore:{key_hash("k1")}\ntitle: "Hello, Wörld!"\n')
    assert page.endswith("---\n\n# Hello, Wörld!\n\nSome *Markdown* & <tags>.\n")


def test_a_repeated_publish_does_nothing_and_undo_removes_entry_and_page(
    connector: DocumentsConnector, docs: Path
) -> None:
    first = connector.execute("publish_post", post("One"), idempotency_key="k1")
    connector.execute("publish_post", post("Two"), idempotency_key="k2")
    before = snapshot(docs)
    assert connector.execute("publish_post", post("One"), idempotency_key="k1") == first
    assert connector.lookup("publish_post", post("One"), idempotency_key="k1") == first
    assert snapshot(docs) == before

    undo = {**post("One"), **first.details}
    assert connector.lookup("unpublish_post", undo, idempotency_key="k1:undo") is None
    connector.execute("unpublish_post", undo, idempotency_key="k1:undo")
    assert entry_ids(docs) == [f"urn:opcore:{key_hash('k2')}"]
    assert not (docs / str(first.details["path"])).exists()
    assert len(list((docs / "posts").glob("two-*.md"))) == 1
    assert connector.lookup("unpublish_post", undo, idempotency_key="k1:undo") is not None
    assert connector.lookup("publish_post", post("One"), idempotency_key="k1") is None
    after = snapshot(docs)
    connector.execute("unpublish_post", undo, idempotency_key="k1:undo")
    assert snapshot(docs) == after


def test_the_feed_keeps_the_fifty_newest_entries(connector: DocumentsConnector, docs: Path) -> None:
    for n in range(53):
        connector.execute("publish_post", post(f"Post {n}"), idempotency_key=f"k{n}")
    ids = entry_ids(docs)
    assert len(ids) == 50
    assert ids == [f"urn:opcore:{key_hash(f'k{n}')}" for n in range(52, 2, -1)]
    assert len(list((docs / "posts").glob("*.md"))) == 53  # the pages stay


def test_a_crash_between_feed_and_page_is_completed_without_a_second_entry(
    connector: DocumentsConnector, docs: Path
) -> None:
    result = connector.execute("publish_post", post("One"), idempotency_key="k1")
    (docs / str(result.details["path"])).unlink()  # as if the page was never written
    assert connector.lookup("publish_post", post("One"), idempotency_key="k1") is None
    assert connector.execute("publish_post", post("One"), idempotency_key="k1") == result
    assert entry_ids(docs) == [f"urn:opcore:{key_hash('k1')}"]


@pytest.mark.parametrize(
    "change",
    [
        {"title": "two\nlines"},
        {"title": ""},
        {"body": "bell \x07"},
        {"link": "javascript:alert(1)"},
        {"link": "/relative"},
        {"summary": "x" * 501},
    ],
)
def test_a_post_that_would_make_a_bad_feed_is_refused(
    connector: DocumentsConnector, docs: Path, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParamsError):
        connector.execute("publish_post", {**post("Fine"), **change}, idempotency_key="k1")
    assert not docs.exists()


def test_a_feed_file_that_is_not_atom_is_left_alone(
    connector: DocumentsConnector, docs: Path
) -> None:
    docs.mkdir()
    (docs / "feed.xml").write_text("<rss version='2.0'/>")
    with pytest.raises(PermanentConnectorError, match="not an Atom feed"):
        connector.execute("publish_post", post("One"), idempotency_key="k1")
    assert (docs / "feed.xml").read_text() == "<rss version='2.0'/>"


# --- concurrency --------------------------------------------------------------------------


def test_concurrent_writers_lose_no_entry(docs: Path) -> None:
    connectors = [DocumentsConnector(docs, seller=SELLER) for _ in range(2)]
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        for n in range(4):
            key = f"w{worker}-{n}"
            connectors[worker % 2].execute("publish_post", post(key), idempotency_key=key)
            connectors[(worker + 1) % 2].execute(
                "append_changelog", release(f"{worker}.{n}.0"), idempotency_key=key
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        for done in [pool.submit(work, w) for w in range(8)]:
            done.result(timeout=20)  # re-raises a worker's error here
    keys = {f"w{w}-{n}" for w in range(8) for n in range(4)}
    assert set(entry_ids(docs)) == {f"urn:opcore:{key_hash(k)}" for k in keys}
    changelog = (docs / "CHANGELOG.md").read_text()
    assert {k for k in keys if f"<!-- opcore:changelog {key_hash(k)} -->" in changelog} == keys
    assert no_temporary_files(docs)


@pytest.fixture
def held_lock(docs: Path) -> Iterator[None]:
    """The folder's lock file held by someone else (as another process would)."""
    docs.mkdir()
    fd = os.open(docs / ".opcore.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


@pytest.mark.usefixtures("held_lock")
def test_a_folder_locked_by_another_process_makes_a_write_fail_transiently(docs: Path) -> None:
    connector = DocumentsConnector(docs, seller=SELLER, lock_timeout=0.2)
    with pytest.raises(TransientConnectorError, match="locked"):
        connector.execute("publish_post", post("One"), idempotency_key="k1")
    assert not (docs / "feed.xml").exists()


def test_an_unknown_action_is_refused(connector: DocumentsConnector) -> None:
    with pytest.raises(UnknownActionError):
        connector.execute("delete_everything", {}, idempotency_key="k1")
