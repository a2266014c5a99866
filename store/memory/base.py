"""The recall index contract: what every backend (embedded SQLite, Weaviate) implements.

The index is derived data. The truth is the event log (``MemoryStored`` and friends) and its
``memories`` projection; an index can be dropped and rebuilt from them at any time
(``opcore memory reindex``), which is also how a change of embedding model is applied.

Vectors are computed by opcore's embedder (see :mod:`store.memory.embeddings`) and handed to
the index, never by the backend itself, so both backends rank the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# The kinds of semantic memory. ``note``: what the operator asked opcore to remember;
# ``draft``/``proposal``/``deliverable``/``case_study``/``summary``: work products agents and
# flows store so later jobs can recall them.
MEMORY_KINDS = frozenset(
    {"note", "draft", "proposal", "deliverable", "case_study", "summary", "document", "worklog"}
)

# Reciprocal rank fusion constant (Cormack et al. 2009); 60 is the usual choice.
RRF_K = 60


@dataclass(frozen=True)
class IndexedDoc:
    """One memory as the index stores it."""

    memory_id: str
    kind: str
    text: str
    created_at: datetime
    contact_id: str | None = None
    vector: tuple[float, ...] | None = None
    embed_model: str | None = None  # the model that made ``vector``


@dataclass(frozen=True)
class RecallFilter:
    """Metadata filters; every given one must hold."""

    contact_id: str | None = None
    kinds: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Hit:
    """One recalled memory. Ranks are 1-based; None means the retriever did not return it."""

    memory_id: str
    score: float
    keyword_rank: int | None = None
    vector_rank: int | None = None


@dataclass(frozen=True)
class IndexStats:
    items: int
    vectors: int
    embed_models: dict[str, int] = field(default_factory=dict)  # model -> vectors made by it


class RecallIndex(Protocol):
    """A hybrid (keyword + vector) index of memories. Every method is idempotent."""

    name: str  # "sqlite" or "weaviate", for /status

    def upsert(self, docs: Sequence[IndexedDoc]) -> None:
        """Add or replace these memories (by ``memory_id``)."""

    def delete(self, memory_ids: Sequence[str]) -> None:
        """Remove these memories; unknown ids are ignored."""

    def search(
        self,
        query: str,
        vector: Sequence[float] | None,
        *,
        limit: int,
        filters: RecallFilter,
    ) -> list[Hit]:
        """The best ``limit`` memories for ``query``: keyword only when ``vector`` is None,
        otherwise keyword and vector fused. Best first."""

    def stats(self) -> IndexStats: ...

    def clear(self) -> None:
        """Remove every memory (before a rebuild)."""

    def close(self) -> None: ...


def fuse(rankings: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each list votes 1/(k + rank) for each id it ranks."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, memory_id in enumerate(ranking, start=1):
            scores[memory_id] = scores.get(memory_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
