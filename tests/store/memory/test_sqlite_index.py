"""The embedded index's in-memory vector matrix stays right across writes made after it was
loaded (patched in place, not reloaded), and its keyword query is safe and stemmed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from store.memory import sqlite_index
from store.memory.base import IndexedDoc, RecallFilter
from store.memory.sqlite_index import SqliteRecallIndex, keyword_query

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def doc(memory_id: str, vector: tuple[float, ...], **extra: str) -> IndexedDoc:
    return IndexedDoc(
        memory_id=memory_id,
        kind=extra.get("kind", "note"),
        text=extra.get("text", f"text of {memory_id}"),
        created_at=NOW,
        contact_id=extra.get("contact_id"),
        vector=vector,
        embed_model="m",
    )


def nearest(index: SqliteRecallIndex, vector: tuple[float, ...], **filters: str) -> list[str]:
    hits = index.search(
        "zzz", vector, limit=3, filters=RecallFilter(contact_id=filters.get("contact_id"))
    )
    return [h.memory_id for h in hits]


def test_writes_after_the_matrix_is_loaded_are_seen_without_a_reload(tmp_path: Path) -> None:
    index = SqliteRecallIndex(tmp_path / "r.db")
    index.upsert([doc("a", (1, 0, 0, 0)), doc("b", (0, 1, 0, 0))])
    assert nearest(index, (1, 0, 0, 0))[0] == "a"  # loads the matrix
    loaded = index._matrix
    index.upsert([doc("c", (0, 0, 1, 0), contact_id="c9")])
    assert nearest(index, (0, 0, 1, 0))[0] == "c"
    assert nearest(index, (0, 0, 1, 0), contact_id="c9") == ["c"]
    index.upsert([doc("a", (0, 0, 0, 1))])  # a's vector replaced
    assert nearest(index, (0, 0, 0, 1))[0] == "a"
    assert nearest(index, (1, 0, 0, 0))[0] != "a"
    index.delete(["b"])
    assert "b" not in nearest(index, (0, 1, 0, 0))
    assert index._matrix is loaded  # patched in place all along
    index.close()


def test_a_matrix_with_mostly_dead_rows_is_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_index, "DEAD_ROWS_KEPT", 2)
    index = SqliteRecallIndex(tmp_path / "r.db")
    index.upsert([doc(str(i), (1, float(i), 0, 0)) for i in range(8)])
    nearest(index, (1, 0, 0, 0))
    index.delete(["0", "1"])
    assert index._matrix is not None  # two dead rows: kept, masked
    index.delete(["2", "3"])
    assert index._matrix is None
    assert set(nearest(index, (1, 0, 0, 0))) <= {"4", "5", "6", "7"}
    index.close()


def test_keyword_query_quotes_words_and_splits_possessives() -> None:
    assert keyword_query("Acme's budget") == '"acme" OR "budget"'
    assert keyword_query('NEAR(a b) AND "x" -y *') == '"near"'
    assert keyword_query("what is the one") == ""


def test_on_a_large_index_very_common_words_are_left_out_but_the_rarest_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_index, "COMMON_MIN_ITEMS", 10)
    index = SqliteRecallIndex(tmp_path / "r.db")
    docs = [IndexedDoc(f"m{i}", "note", f"invoice number {i}", NOW) for i in range(40)] + [
        IndexedDoc("rare", "note", "invoice for Vandelay latex", NOW)
    ]
    index.upsert(docs)
    assert index._without_common_words('"invoice" OR "vandelay"') == '"vandelay"'
    assert index._without_common_words('"invoice" OR "number"') in {'"invoice"', '"number"'}
    hits = index.search("Vandelay invoice", None, limit=3, filters=RecallFilter())
    assert [h.memory_id for h in hits] == ["rare"]
    index.close()
