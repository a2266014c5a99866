"""Export and import: a portable archive reproduces the projections and recall results,
refuses damaged or tampered archives and non-empty targets, and never carries a secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from store import Store, open_store
from store import events as ev
from store.archive import export_archive, import_archive
from store.errors import ArchiveError
from store.memory.base import RecallFilter
from store.memory.service import Memory
from store.memory.sqlite_index import SqliteRecallIndex
from store.models import PROJECTION_MODELS, EventRecord
from store.replay import _rows
from tests.builders import create_contact, propose_action, request_job

QUERIES = ("audit report", "Globex invoices", "website redesign price", "weekly call")


class WordHashEmbedder:
    """A deterministic stand-in embedding model (no network): hashed words, 32 dimensions."""

    model = "word-hash-32"

    def embed(self, texts: Any) -> list[tuple[float, ...]]:
        out = []
        for text in texts:
            vector = [0.0] * 32
            for word in text.lower().split():
                vector[sum(word.encode()) % 32] += 1.0
            out.append(tuple(vector))
        return out


def _fill(store: Store, tmp_path: Path) -> Memory:
    memory = Memory(store, SqliteRecallIndex(tmp_path / "a.db"), WordHashEmbedder())
    jane = create_contact(store, contact_id="c1", email="jane@acme.example", name="Jane")
    create_contact(store, contact_id="c2", email="bob@globex.example", name="Bob")
    store.log.append(
        ev.contact_stream(jane),
        [ev.ContactUpdated(contact_id=jane, email="jane@acme.test")],
        metadata=ev.Metadata(actor="op"),
    )
    request_job(store, job_id="j1")
    propose_action(store, action_id="a1", job_id="j1")
    memory.assert_fact("contact:c1", "rate", "100 EUR/h", source="/remember", by="op")
    memory.assert_fact("contact:c1", "rate", "120 EUR/h", source="/remember", by="op")
    memory.assert_fact("workspace", "rule", "never email on Sundays", source="/remember", by="op")
    memory.remember("Acme wants the audit report by Friday", contact_id="c1", source="s", by="op")
    memory.remember("Globex pays invoices 30 days late", contact_id="c2", source="s", by="op")
    memory.remember(
        "Website redesign for Initech priced at 4800 EUR", kind="proposal", source="s", by="op"
    )
    gone = memory.remember("weekly call with Acme on Mondays", source="s", by="op")
    memory.forget(gone.memory_id, by="op")
    memory.recall("audit report", job_id="j1")
    return memory


def _projections() -> dict[str, dict[str, dict[str, Any]]]:
    return {model._meta.table_name: _rows(model) for model in PROJECTION_MODELS}


def _recalls(memory: Memory) -> list[list[str]]:
    results = [memory.recall(q) for q in QUERIES]
    results.append(memory.recall("audit", filters=RecallFilter(contact_id="c1")))
    return [[r.item.memory_id for r in result.items] for result in results]


@pytest.mark.postgres
def test_sqlite_export_then_postgres_import_reproduces_projections_and_recall(
    tmp_path: Path, postgres_url: str
) -> None:
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    memory = _fill(source, tmp_path)
    expected_rows = _projections()
    expected_recall = _recalls(memory)
    summary = export_archive(source, tmp_path / "backup.jsonl", workspace="acme")
    memory.index.close()
    source.close()
    assert summary.counts["fact"] >= 8 and summary.counts["memory"] == 4

    target = open_store(postgres_url)
    try:
        imported = import_archive(target, tmp_path / "backup.jsonl")
        assert imported.counts == summary.counts
        assert _projections() == expected_rows
        fresh = Memory(target, SqliteRecallIndex(tmp_path / "b.db"), WordHashEmbedder())
        assert fresh.reindex() == 3  # the forgotten memory is not indexed
        assert _recalls(fresh) == expected_recall
        # the log goes on from where the archive ended
        head = target.log.head()
        create_contact(target, contact_id="c3", email="new@client.example")
        assert target.log.head() > head
    finally:
        target.close()


def test_an_archive_imports_into_sqlite_and_round_trips_byte_for_byte(tmp_path: Path) -> None:
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    _fill(source, tmp_path).index.close()
    export_archive(source, tmp_path / "one.jsonl")
    source.close()
    target = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    import_archive(target, tmp_path / "one.jsonl")
    export_archive(target, tmp_path / "two.jsonl")
    target.close()
    one = (tmp_path / "one.jsonl").read_text().splitlines()[1:]  # headers differ in time only
    two = (tmp_path / "two.jsonl").read_text().splitlines()[1:]
    assert one == two


def test_import_into_a_database_with_events_is_refused(store: Store, tmp_path: Path) -> None:
    create_contact(store)
    export_archive(store, tmp_path / "a.jsonl")
    with pytest.raises(ArchiveError, match="already holds events"):
        import_archive(store, tmp_path / "a.jsonl")


def _archive(tmp_path: Path) -> Path:
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    _fill(source, tmp_path).index.close()
    export_archive(source, tmp_path / "a.jsonl")
    source.close()
    return tmp_path / "a.jsonl"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: lines[:-1], "no manifest"),
        (lambda lines: lines[:3] + lines[4:], "counts"),
        (lambda lines: [lines[0], "{not json", *lines[1:]], "not JSON"),
        (lambda lines: ['{"format": "zip"}', *lines[1:]], "not an opcore archive"),
        (lambda lines: [x.replace("audit report", "audit r3port") for x in lines], "altered"),
    ],
    ids=["truncated", "line-removed", "garbage-line", "foreign-header", "tampered-text"],
)
def test_a_damaged_archive_is_refused_and_nothing_is_written(
    tmp_path: Path, damage: Any, message: str
) -> None:
    path = _archive(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(damage(lines)) + "\n")
    target = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        with pytest.raises(ArchiveError, match=message):
            import_archive(target, path)
        assert EventRecord.select().count() == 0
    finally:
        target.close()


def test_facts_that_do_not_match_their_events_roll_the_import_back(tmp_path: Path) -> None:
    path = _archive(tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for record in lines:
        if record.get("record") == "fact" and record["value"] == "120 EUR/h":
            record["value"] = "1 EUR/h"  # and fix the checksum, as a forger would
    facts = [r for r in lines if r.get("record") == "fact"]
    import hashlib

    from store.archive import _line

    digest = hashlib.sha256(b"".join(_line(r).encode() + b"\n" for r in facts)).hexdigest()
    lines[-1]["sha256"]["fact"] = digest
    path.write_text("\n".join(_line(r) for r in lines) + "\n")
    target = open_store(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        with pytest.raises(ArchiveError, match="differ"):
            import_archive(target, path)
        assert EventRecord.select().count() == 0
    finally:
        target.close()


def test_an_export_that_would_carry_a_secret_is_not_written(store: Store, tmp_path: Path) -> None:
    memory = Memory(store, SqliteRecallIndex(tmp_path / "r.db"), WordHashEmbedder())
    memory.remember("the key is sk-live-0123456789", source="s", by="op")
    with pytest.raises(ArchiveError, match="secret"):
        export_archive(store, tmp_path / "x.jsonl", secrets=["sk-live-0123456789"])
    assert not (tmp_path / "x.jsonl").exists()
    assert not (tmp_path / "x.jsonl.partial").exists()
    export_archive(store, tmp_path / "y.jsonl", secrets=["another-secret-value"])
