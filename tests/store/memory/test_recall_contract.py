"""The recall index contract: the same tests against every backend.

``sqlite`` always runs. ``weaviate`` needs a Weaviate server and runs only when
OPCORE_WEAVIATE_URL is set (it is a local address in the test environment: the network
guard refuses anything else); each test gets its own workspace (tenant), dropped afterwards.
Vectors are tiny hand-made 4-dimensional ones, so the expected ranking is obvious.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from store.errors import RecallError
from store.memory.base import IndexedDoc, IndexStats, RecallFilter, RecallIndex
from store.memory.sqlite_index import SqliteRecallIndex

ALL = RecallFilter()
JAN = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
FEB = datetime(2024, 2, 15, 12, 0, tzinfo=UTC)
MAR = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)

# The query vector, and documents from nearest to farthest from it.
QUERY_VECTOR = (1.0, 0.0, 0.0, 0.0)
NEAREST = (0.9, 0.1, 0.0, 0.0)
MIDDLE = (0.5, 0.5, 0.5, 0.0)
FARTHEST = (0.0, 0.0, 0.0, 1.0)


@pytest.fixture(params=["sqlite", "weaviate"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecallIndex]:
    if request.param == "sqlite":
        sqlite = SqliteRecallIndex(tmp_path / "recall.db")
        try:
            yield sqlite
        finally:
            sqlite.close()
        return
    url = os.environ.get("OPCORE_WEAVIATE_URL", "")
    if not url:
        pytest.skip(
            "OPCORE_WEAVIATE_URL is not set: the Weaviate contract suite needs a Weaviate server"
        )
    from store.memory.weaviate_index import WeaviateRecallIndex

    weaviate = WeaviateRecallIndex(
        url,
        workspace=f"test_{uuid.uuid4().hex[:16]}",
        api_key=os.environ.get("OPCORE_WEAVIATE_API_KEY", ""),
    )
    try:
        yield weaviate
    finally:
        try:
            weaviate.drop_workspace()
        finally:
            weaviate.close()


def doc(
    memory_id: str,
    text: str,
    *,
    kind: str = "note",
    contact_id: str | None = None,
    created_at: datetime = JAN,
    vector: tuple[float, ...] | None = None,
    embed_model: str | None = None,
) -> IndexedDoc:
    return IndexedDoc(
        memory_id=memory_id,
        kind=kind,
        text=text,
        created_at=created_at,
        contact_id=contact_id,
        vector=vector,
        embed_model=embed_model if embed_model is not None or vector is None else "tiny-4d",
    )


def ids(
    index: RecallIndex,
    query: str,
    vector: tuple[float, ...] | None = None,
    *,
    limit: int = 10,
    filters: RecallFilter = ALL,
) -> list[str]:
    return [hit.memory_id for hit in index.search(query, vector, limit=limit, filters=filters)]


# Writing ----------------------------------------------------------------------------------


def test_an_upserted_memory_is_found_by_keyword_search(index: RecallIndex) -> None:
    index.upsert(
        [
            doc("m1", "Invoice for the Acme consulting engagement"),
            doc("m2", "Garden planting schedule for the spring"),
        ]
    )

    hits = index.search("acme invoice", None, limit=5, filters=ALL)

    assert [hit.memory_id for hit in hits] == ["m1"]
    assert hits[0].score > 0


def test_upserting_the_same_memory_id_twice_keeps_one_copy_with_the_new_text(
    index: RecallIndex,
) -> None:
    index.upsert([doc("m1", "old pricing draft")])
    index.upsert([doc("m1", "new retainer proposal")])

    assert index.stats().items == 1
    assert ids(index, "retainer") == ["m1"]
    assert ids(index, "pricing") == []


def test_a_batch_naming_the_same_memory_id_twice_keeps_the_last_version(
    index: RecallIndex,
) -> None:
    index.upsert([doc("m1", "first pricing draft"), doc("m1", "final retainer proposal")])

    assert index.stats().items == 1
    assert ids(index, "retainer") == ["m1"]
    assert ids(index, "pricing") == []


def test_upserting_a_memory_with_another_kind_moves_it_to_that_kind(index: RecallIndex) -> None:
    index.upsert([doc("m1", "quarterly retainer", kind="note")])
    index.upsert([doc("m1", "quarterly retainer", kind="proposal")])

    assert index.stats().items == 1
    assert ids(index, "retainer", filters=RecallFilter(kinds=frozenset({"note"}))) == []
    assert ids(index, "retainer", filters=RecallFilter(kinds=frozenset({"proposal"}))) == ["m1"]


def test_a_deleted_memory_leaves_search_and_stats(index: RecallIndex) -> None:
    index.upsert(
        [
            doc("m1", "budget review notes", vector=NEAREST),
            doc("m2", "budget forecast", vector=FARTHEST),
        ]
    )

    index.delete(["m1"])

    assert ids(index, "budget") == ["m2"]
    assert ids(index, "budget", QUERY_VECTOR) == ["m2"]
    assert index.stats() == IndexStats(items=1, vectors=1, embed_models={"tiny-4d": 1})


def test_deleting_an_unknown_memory_id_is_ignored(index: RecallIndex) -> None:
    index.upsert([doc("m1", "budget review notes")])

    index.delete(["no-such-memory"])
    index.delete([])

    assert index.stats().items == 1
    assert ids(index, "budget") == ["m1"]


def test_clear_empties_the_index_and_leaves_it_usable(index: RecallIndex) -> None:
    index.upsert(
        [
            doc("m1", "budget review", vector=NEAREST),
            doc("m2", "budget forecast", kind="summary"),
            doc("m3", "garden budget", kind="draft", vector=MIDDLE),
        ]
    )

    index.clear()

    assert index.stats() == IndexStats(items=0, vectors=0, embed_models={})
    assert ids(index, "budget") == []
    assert ids(index, "budget", QUERY_VECTOR) == []
    index.upsert([doc("m4", "budget again")])
    assert ids(index, "budget") == ["m4"]


def test_stats_count_items_and_the_vectors_of_each_embedding_model(index: RecallIndex) -> None:
    index.upsert(
        [
            doc("m1", "one", vector=NEAREST, embed_model="mini"),
            doc("m2", "two", kind="draft", vector=MIDDLE, embed_model="mini"),
            doc("m3", "three", vector=FARTHEST, embed_model="big"),
            doc("m4", "four without a vector"),
        ]
    )

    assert index.stats() == IndexStats(items=4, vectors=3, embed_models={"mini": 2, "big": 1})


# Filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", [None, QUERY_VECTOR], ids=["keyword", "hybrid"])
def test_a_contact_filter_excludes_the_memories_of_other_contacts(
    index: RecallIndex, vector: tuple[float, ...] | None
) -> None:
    index.upsert(
        [
            doc("m1", "renewal terms", contact_id="c1", vector=FARTHEST),
            doc("m2", "renewal terms", contact_id="c2", vector=NEAREST),
            doc("m3", "renewal terms", vector=MIDDLE),
        ]
    )

    assert ids(index, "renewal", vector, filters=RecallFilter(contact_id="c1")) == ["m1"]


@pytest.mark.parametrize("vector", [None, QUERY_VECTOR], ids=["keyword", "hybrid"])
def test_a_kinds_filter_excludes_the_memories_of_other_kinds(
    index: RecallIndex, vector: tuple[float, ...] | None
) -> None:
    index.upsert(
        [
            doc("m1", "renewal terms", kind="note", vector=NEAREST),
            doc("m2", "renewal terms", kind="proposal", vector=FARTHEST),
            doc("m3", "renewal terms", kind="draft", vector=MIDDLE),
        ]
    )

    only_proposals = RecallFilter(kinds=frozenset({"proposal"}))
    assert ids(index, "renewal", vector, filters=only_proposals) == ["m2"]
    two_kinds = RecallFilter(kinds=frozenset({"proposal", "draft"}))
    assert sorted(ids(index, "renewal", vector, filters=two_kinds)) == ["m2", "m3"]


@pytest.mark.parametrize("vector", [None, QUERY_VECTOR], ids=["keyword", "hybrid"])
def test_since_and_until_exclude_memories_outside_the_period(
    index: RecallIndex, vector: tuple[float, ...] | None
) -> None:
    index.upsert(
        [
            doc("jan", "renewal terms", created_at=JAN, vector=NEAREST),
            doc("feb", "renewal terms", created_at=FEB, vector=MIDDLE),
            doc("mar", "renewal terms", created_at=MAR, vector=FARTHEST),
        ]
    )
    first_of_feb = datetime(2024, 2, 1, tzinfo=UTC)
    first_of_mar = datetime(2024, 3, 1, tzinfo=UTC)

    since = RecallFilter(since=first_of_feb)
    until = RecallFilter(until=first_of_feb)
    between = RecallFilter(since=first_of_feb, until=first_of_mar)
    assert sorted(ids(index, "renewal", vector, filters=since)) == ["feb", "mar"]
    assert ids(index, "renewal", vector, filters=until) == ["jan"]
    assert ids(index, "renewal", vector, filters=between) == ["feb"]


def test_every_filter_must_hold_at_once(index: RecallIndex) -> None:
    index.upsert(
        [
            doc("hit", "renewal", kind="proposal", contact_id="c1", created_at=FEB),
            doc("wrong-kind", "renewal", kind="note", contact_id="c1", created_at=FEB),
            doc("wrong-contact", "renewal", kind="proposal", contact_id="c2", created_at=FEB),
            doc("too-early", "renewal", kind="proposal", contact_id="c1", created_at=JAN),
        ]
    )

    both = RecallFilter(
        contact_id="c1",
        kinds=frozenset({"proposal"}),
        since=datetime(2024, 2, 1, tzinfo=UTC),
    )
    assert ids(index, "renewal", filters=both) == ["hit"]


# Ranking ----------------------------------------------------------------------------------


def test_hybrid_search_ranks_the_nearest_vector_first_even_when_its_words_do_not_match(
    index: RecallIndex,
) -> None:
    # One kind on purpose: Weaviate normalises hybrid scores per collection (one per kind),
    # so an order across kinds is only approximate there.
    index.upsert(
        [
            doc("far", "invoice for the acme engagement", vector=FARTHEST),
            doc("near", "garden planting schedule", vector=NEAREST),
            doc("middle", "conference travel plans", vector=MIDDLE),
        ]
    )

    assert ids(index, "quarterly budget", QUERY_VECTOR) == ["near", "middle", "far"]


def test_hybrid_search_still_finds_a_keyword_match_that_has_no_vector(index: RecallIndex) -> None:
    index.upsert(
        [
            doc("words", "quarterly budget review"),
            doc("near", "garden planting schedule", vector=NEAREST),
        ]
    )

    assert set(ids(index, "quarterly budget", QUERY_VECTOR)) == {"words", "near"}


def test_keyword_only_search_ignores_the_vectors(index: RecallIndex) -> None:
    index.upsert(
        [
            doc("words", "quarterly budget review", vector=FARTHEST),
            doc("near", "garden planting schedule", vector=NEAREST),
        ]
    )

    hits = index.search("quarterly budget", None, limit=10, filters=ALL)

    assert [hit.memory_id for hit in hits] == ["words"]
    assert hits[0].vector_rank is None


@pytest.mark.parametrize("vector", [None, QUERY_VECTOR], ids=["keyword", "hybrid"])
def test_search_returns_at_most_limit_hits_best_first(
    index: RecallIndex, vector: tuple[float, ...] | None
) -> None:
    index.upsert(
        [
            doc(f"m{i}", f"monthly report number {i}", kind=kind, vector=(1.0, float(i), 0, 0))
            for i, kind in enumerate(["note", "note", "draft", "summary", "worklog"])
        ]
    )

    hits = index.search("report", vector, limit=3, filters=ALL)

    assert len(hits) == 3
    assert len({hit.memory_id for hit in hits}) == 3
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(index.search("report", vector, limit=10, filters=ALL)) == 5


# Hostile and empty queries ----------------------------------------------------------------

OPERATOR_QUERIES = [
    '"unbalanced quote budget',
    'budget "',
    "budget AND",
    "AND OR NOT",
    "budget OR",
    "NOT budget",
    "*",
    "budg*",
    "-budget",
    "budget - review",
    "(budget",
    "budget)",
    "((budget) AND (review))",
    "NEAR(budget review, 2)",
    "NEAR",
    "text:budget",
    "^budget",
    "budget + review {x} [y]",
    "it's budget's",
    "'; DROP TABLE docs; --",
]


@pytest.mark.parametrize("query", OPERATOR_QUERIES)
@pytest.mark.parametrize("vector", [None, QUERY_VECTOR], ids=["keyword", "hybrid"])
def test_fts_operator_characters_in_a_query_do_not_raise(
    index: RecallIndex, query: str, vector: tuple[float, ...] | None
) -> None:
    index.upsert([doc("m1", "budget review", vector=NEAREST)])

    hits = index.search(query, vector, limit=5, filters=ALL)

    assert all(hit.memory_id == "m1" for hit in hits)
    if "budget" in query.lower() and "'" not in query and vector is None:
        assert [hit.memory_id for hit in hits] == ["m1"]
    assert index.stats().items == 1  # nothing was dropped


@pytest.mark.parametrize("query", ["", "   ", "the and of", "?!", "a an the"])
def test_an_empty_or_stopword_only_query_returns_nothing(index: RecallIndex, query: str) -> None:
    index.upsert([doc("m1", "the budget and the review of a plan", vector=NEAREST)])

    assert index.search(query, None, limit=5, filters=ALL) == []


# SQLite only ------------------------------------------------------------------------------


def test_sqlite_vectors_of_different_dimensions_raise_recall_error_on_vector_search(
    tmp_path: Path,
) -> None:
    index = SqliteRecallIndex(tmp_path / "recall.db")
    try:
        index.upsert(
            [
                doc("m1", "budget review", vector=(1.0, 0.0, 0.0, 0.0)),
                doc("m2", "budget forecast", vector=(1.0, 0.0, 0.0)),
            ]
        )

        with pytest.raises(RecallError, match="reindex"):
            index.search("budget", QUERY_VECTOR, limit=5, filters=ALL)
        assert ids(index, "budget") != []  # keyword search still works
    finally:
        index.close()


def test_sqlite_a_query_vector_of_another_dimension_raises_recall_error(tmp_path: Path) -> None:
    index = SqliteRecallIndex(tmp_path / "recall.db")
    try:
        index.upsert([doc("m1", "budget review", vector=QUERY_VECTOR)])

        with pytest.raises(RecallError, match="dimensions"):
            index.search("budget", (1.0, 0.0, 0.0), limit=5, filters=ALL)
    finally:
        index.close()


def test_sqlite_the_index_survives_reopening_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "recall.db"
    first = SqliteRecallIndex(path)
    first.upsert(
        [
            doc("m1", "budget review", vector=NEAREST, embed_model="mini"),
            doc("m2", "garden plan", vector=FARTHEST, embed_model="mini"),
            doc("m3", "travel notes"),
        ]
    )
    first.close()

    reopened = SqliteRecallIndex(path)
    try:
        assert reopened.stats() == IndexStats(items=3, vectors=2, embed_models={"mini": 2})
        assert ids(reopened, "budget") == ["m1"]
        assert ids(reopened, "unrelated words", QUERY_VECTOR) == ["m1", "m2"]
        reopened.upsert([doc("m4", "budget forecast")])
        assert sorted(ids(reopened, "budget")) == ["m1", "m4"]
    finally:
        reopened.close()
