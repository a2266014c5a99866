"""The memory service: semantic memories, facts with provenance, forgetting, the index
following the log, the recall cache, and embeddings from a local OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store import Store
from store import events as ev
from store.errors import EmbeddingError, NotFoundError
from store.memory.base import RecallFilter
from store.memory.embeddings import NoEmbedder, OpenAIEmbedder, make_embedder
from store.memory.service import Memory, MemoryInputError
from store.memory.sqlite_index import SqliteRecallIndex
from store.models import MemoryRow
from store.replay import verify
from tests.builders import create_contact
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def memory(store: Store, tmp_path: Path) -> Iterator[Memory]:
    index = SqliteRecallIndex(tmp_path / "recall.db")
    yield Memory(store, index, NoEmbedder())
    index.close()


@pytest.fixture
def embeddings() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        server.synonyms = {"bill": "invoice", "invoiced": "invoice", "overhaul": "redesign"}
        yield server


def _texts(result: object) -> list[str]:
    return [r.item.text for r in result.items]  # type: ignore[attr-defined]


def test_a_remembered_note_is_recalled_with_its_source(memory: Memory) -> None:
    memory.remember("Acme prefers invoices in EUR", source="/remember", by="telegram:1")
    result = memory.recall("which currency does Acme want on invoices")
    assert _texts(result) == ["Acme prefers invoices in EUR"]
    assert result.items[0].item.source == "/remember"
    assert result.mode == "keyword"


def test_the_same_memory_written_twice_is_stored_once(memory: Memory, store: Store) -> None:
    first = memory.remember("Globex pays late", source="/remember", by="op")
    second = memory.remember("  globex   PAYS late ", source="/remember", by="op")
    assert first.created and not second.created
    assert second.memory_id == first.memory_id
    assert MemoryRow.select().count() == 1
    assert len(store.log.read_all(types=["MemoryStored"])) == 1


def test_forget_hides_a_memory_and_restore_brings_it_back(memory: Memory) -> None:
    kept = memory.remember("Initech wants weekly reports", source="/remember", by="op")
    memory.forget(kept.memory_id, by="op")
    assert memory.recall("Initech weekly reports").items == ()
    memory.restore(kept.memory_id, by="op")
    assert _texts(memory.recall("Initech weekly reports")) == ["Initech wants weekly reports"]


def test_a_forgotten_memory_is_purged_after_the_undo_window(memory: Memory) -> None:
    kept = memory.remember("Hooli budget is 9k", source="/remember", by="op")
    memory.forget(kept.memory_id, by="op")
    assert memory.purge_expired(now=datetime.now(UTC) + timedelta(days=1)) == 0
    assert memory.purge_expired(now=datetime.now(UTC) + timedelta(days=8)) == 1
    assert memory.memory(kept.memory_id).text == ""
    with pytest.raises(MemoryInputError, match="purged"):
        memory.restore(kept.memory_id, by="op")
    again = memory.remember("Hooli budget is 9k", source="/remember", by="op")
    assert again.created and memory.memory(kept.memory_id).status == "active"


def test_a_correction_supersedes_the_fact_and_keeps_it_in_history(memory: Memory) -> None:
    contact = create_contact(memory.store)
    subject = f"contact:{contact}"
    first = memory.assert_fact(subject, "rate", "100 EUR/h", source="/remember", by="op")
    same = memory.assert_fact(subject, "rate", "100 EUR/h", source="/remember", by="op")
    assert not same.created and same.fact.fact_id == first.fact.fact_id
    second = memory.assert_fact(subject, "rate", "120 EUR/h", source="/remember", by="op")
    assert second.superseded is not None and second.superseded.value == "100 EUR/h"
    current = {f.key: f.value for f in memory.facts(subject)}
    assert current["rate"] == "120 EUR/h"
    history = [f.value for f in memory.facts(subject, history=True) if f.key == "rate"]
    assert sorted(history) == ["100 EUR/h", "120 EUR/h"]
    why = memory.why(second.fact.fact_id)
    assert [f.value for f in why.history] == ["100 EUR/h"]
    assert [e.type for e in why.events] == ["FactAsserted", "FactAsserted"]


def test_rules_are_many_valued_and_stored_once_each(memory: Memory) -> None:
    memory.assert_fact("workspace", "rule", "never email on Sundays", source="/remember", by="op")
    memory.assert_fact("workspace", "rule", "quote in EUR", source="/remember", by="op")
    memory.assert_fact("workspace", "rule", "Never email on  Sundays", source="/remember", by="op")
    assert sorted(f.value for f in memory.rules()) == ["never email on Sundays", "quote in EUR"]


def test_a_contacts_address_is_a_fact_whose_correction_is_kept(memory: Memory) -> None:
    contact = create_contact(memory.store, email="jane@acme.example")
    memory.store.log.append(
        ev.contact_stream(contact),
        [ev.ContactUpdated(contact_id=contact, email="jane@acme.test")],
        metadata=ev.Metadata(actor="op"),
    )
    subject = f"contact:{contact}"
    email = next(f for f in memory.facts(subject) if f.key == "email")
    assert email.value == "jane@acme.test" and email.event_type == "ContactUpdated"
    why = memory.why(email.fact_id)
    assert [f.value for f in why.history] == ["jane@acme.example"]
    assert why.history[0].event_type == "ContactCreated"
    with pytest.raises(MemoryInputError, match="/contact"):
        memory.assert_fact(subject, "email", "x@y.example", source="/remember", by="op")
    with pytest.raises(MemoryInputError, match="/contact"):
        memory.forget(email.fact_id, by="op")


def test_a_retracted_fact_can_be_restored_unless_a_newer_value_exists(memory: Memory) -> None:
    rate = memory.assert_fact("contact:c9", "rate", "90", source="/remember", by="op").fact
    memory.forget(rate.fact_id, by="op")
    assert memory.facts("contact:c9") == []
    memory.restore(rate.fact_id, by="op")
    assert [f.value for f in memory.facts("contact:c9")] == ["90"]
    memory.forget(rate.fact_id, by="op")
    memory.assert_fact("contact:c9", "rate", "95", source="/remember", by="op")
    with pytest.raises(MemoryInputError, match="newer value"):
        memory.restore(rate.fact_id, by="op")


def test_ids_are_found_by_prefix_and_bad_ids_are_explained(memory: Memory) -> None:
    kept = memory.remember("Umbrella signed the NDA", source="/remember", by="op")
    assert memory.why(kept.memory_id[:6]).current.memory_id == kept.memory_id  # type: ignore[union-attr]
    with pytest.raises(MemoryInputError, match="at least 4"):
        memory.forget("m1", by="op")
    with pytest.raises(MemoryInputError, match="not a memory id"):
        memory.forget("zzzzzz", by="op")
    with pytest.raises(NotFoundError):
        memory.forget("mffffffffff", by="op")


def test_a_jobs_recall_is_recorded_in_its_trace_and_cached(memory: Memory) -> None:
    contact = create_contact(memory.store)
    memory.remember(
        "Jane liked the audit case study", contact_id=contact, source="lead agent", by="agent:lead"
    )
    memory.assert_fact(f"contact:{contact}", "rate", "110 EUR/h", source="/remember", by="op")
    filters = RecallFilter(contact_id=contact)
    first = memory.recall("audit case study", filters=filters, job_id="j1")
    second = memory.recall("audit case study", filters=filters, job_id="j1")
    assert not first.cached and second.cached
    recorded = [e.data for e in memory.store.log.read_stream(ev.job_stream("j1"))]
    assert [type(d).__name__ for d in recorded] == ["MemoryRecalled", "MemoryRecalled"]
    assert isinstance(recorded[0], ev.MemoryRecalled)
    assert recorded[0].hits[0]["preview"] == "Jane liked the audit case study"
    assert {f["key"] for f in recorded[0].facts} >= {"rate", "email"}
    assert recorded[1].cached  # type: ignore[attr-defined]


def test_a_write_invalidates_the_recall_cache(memory: Memory) -> None:
    assert memory.recall("Soylent contract").items == ()
    memory.remember("Soylent contract renewed", source="/remember", by="op")
    assert _texts(memory.recall("Soylent contract")) == ["Soylent contract renewed"]


def test_filters_by_contact_and_kind(memory: Memory) -> None:
    memory.remember(
        "audit report delivered", contact_id="c1", kind="deliverable", source="s", by="op"
    )
    memory.remember("audit report drafted", contact_id="c2", kind="draft", source="s", by="op")
    only_c1 = memory.recall("audit report", filters=RecallFilter(contact_id="c1"))
    assert _texts(only_c1) == ["audit report delivered"]
    drafts = memory.recall("audit report", filters=RecallFilter(kinds=frozenset({"draft"})))
    assert _texts(drafts) == ["audit report drafted"]


def test_a_lost_index_is_rebuilt_from_the_log(store: Store, tmp_path: Path) -> None:
    index = SqliteRecallIndex(tmp_path / "recall.db")
    Memory(store, index, NoEmbedder()).remember("Vandelay imports latex", source="s", by="op")
    index.close()
    (tmp_path / "recall.db").unlink()
    fresh = Memory(store, SqliteRecallIndex(tmp_path / "recall.db"), NoEmbedder())
    fresh.ensure_index()
    assert _texts(fresh.recall("Vandelay latex")) == ["Vandelay imports latex"]


def test_replay_converges_with_memories_and_facts(memory: Memory) -> None:
    contact = create_contact(memory.store)
    memory.remember("a note", source="s", by="op")
    kept = memory.remember("another note", source="s", by="op")
    memory.forget(kept.memory_id, by="op")
    memory.assert_fact(f"contact:{contact}", "rate", "1", source="s", by="op")
    memory.assert_fact(f"contact:{contact}", "rate", "2", source="s", by="op")
    memory.assert_fact("workspace", "rule", "no calls on Fridays", source="s", by="op")
    report = verify(memory.store.log)
    assert report.ok, report.differences


def test_hybrid_recall_finds_a_paraphrase_keywords_miss(
    store: Store, tmp_path: Path, embeddings: FakeOpenAI
) -> None:
    embedder = OpenAIEmbedder(embeddings.base_url, "toy-embed")
    memory = Memory(store, SqliteRecallIndex(tmp_path / "recall.db"), embedder)
    memory.remember("Send the invoice to Acme on Friday", source="s", by="op")
    memory.remember("Globex asked for a website redesign", source="s", by="op")
    result = memory.recall("bill acme")
    assert result.mode == "hybrid"
    assert _texts(result)[0] == "Send the invoice to Acme on Friday"
    overhaul = memory.recall("site overhaul")  # no shared keyword with the Globex note
    assert _texts(overhaul)[0] == "Globex asked for a website redesign"
    assert overhaul.items[0].hit.keyword_rank is None and overhaul.items[0].hit.vector_rank == 1
    status = memory.status()
    assert status.mode == "hybrid" and status.vectors == 2 and status.notes == ()


def test_recall_falls_back_to_keywords_when_embeddings_fail(
    store: Store, tmp_path: Path, embeddings: FakeOpenAI
) -> None:
    memory = Memory(
        store, SqliteRecallIndex(tmp_path / "recall.db"), OpenAIEmbedder(embeddings.base_url, "e")
    )
    embeddings.embedding_failures = 1
    memory.remember("Initech renewal in March", source="s", by="op")  # indexed without a vector
    assert "no vector yet" in " ".join(memory.status().notes)
    embeddings.embedding_failures = 1
    result = memory.recall("Initech renewal")
    assert result.mode == "keyword" and "keyword-only this time" in result.note
    assert _texts(result) == ["Initech renewal in March"]
    assert memory.reindex() == 1
    assert memory.status().notes == ()


def test_a_change_of_embedding_model_is_reported_until_reindexed(
    store: Store, tmp_path: Path, embeddings: FakeOpenAI
) -> None:
    index = SqliteRecallIndex(tmp_path / "recall.db")
    Memory(store, index, OpenAIEmbedder(embeddings.base_url, "old")).remember(
        "a note", source="s", by="op"
    )
    memory = Memory(store, index, OpenAIEmbedder(embeddings.base_url, "new"))
    assert any("another model" in note for note in memory.status().notes)
    memory.reindex()
    assert memory.status().stale_vectors == 0


def test_keyword_only_mode_says_so() -> None:
    assert make_embedder("none").model == ""
    with pytest.raises(EmbeddingError, match="none, openai or local"):
        make_embedder("word2vec")
    with pytest.raises(EmbeddingError, match="BASE_URL"):
        make_embedder("openai", model="m")


def test_a_malformed_embeddings_answer_is_an_embedding_error(embeddings: FakeOpenAI) -> None:
    embeddings.embed_fn = lambda text: "nope"  # type: ignore[assignment,return-value]
    with pytest.raises(EmbeddingError, match="malformed"):
        OpenAIEmbedder(embeddings.base_url, "e").embed(["x"])


def test_bad_memory_input_is_refused_with_a_reason(memory: Memory) -> None:
    with pytest.raises(MemoryInputError, match="empty"):
        memory.remember("   ", source="s", by="op")
    with pytest.raises(MemoryInputError, match="unknown memory kind"):
        memory.remember("x", kind="gossip", source="s", by="op")
    with pytest.raises(MemoryInputError, match="key and a value"):
        memory.assert_fact("workspace", "rule", " ", source="s", by="op")


def test_a_memory_written_by_another_process_is_found_by_vector(
    store: Store, tmp_path: Path, embeddings: FakeOpenAI
) -> None:
    embedder = OpenAIEmbedder(embeddings.base_url, "toy-embed")
    bot = Memory(store, SqliteRecallIndex(tmp_path / "recall.db"), embedder)
    worker = Memory(store, SqliteRecallIndex(tmp_path / "recall.db"), embedder)
    bot.remember("Globex asked for a website redesign", source="s", by="op")
    assert bot.recall("site overhaul").items  # the bot's process now holds its vector matrix
    worker.remember("Initech wants a redesign of the shop", source="s", by="op")
    found = bot.recall("Initech shop overhaul")
    assert "Initech wants a redesign of the shop" in _texts(found)
    assert any(r.hit.vector_rank is not None for r in found.items if "Initech" in r.item.text)
