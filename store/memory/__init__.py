"""Memory: working, episodic, semantic and symbolic, behind one service (see
:mod:`store.memory.service`). :func:`open_memory` builds it from the settings."""

from __future__ import annotations

from config.settings import Settings
from store import Store
from store.memory.base import RecallFilter, RecallIndex
from store.memory.embeddings import Embedder, make_embedder
from store.memory.service import Memory, MemoryInputError
from store.memory.sqlite_index import SqliteRecallIndex


def open_index(settings: Settings) -> RecallIndex:
    """Weaviate when ``OPCORE_WEAVIATE_URL`` is set, else the embedded SQLite index."""
    if settings.weaviate_url:
        from store.memory.weaviate_index import WeaviateRecallIndex  # only this imports weaviate

        return WeaviateRecallIndex(
            settings.weaviate_url,
            workspace=settings.workspace,
            api_key=settings.weaviate_api_key.get_secret_value(),
        )
    return SqliteRecallIndex(settings.recall_index_path)


def open_embedder(settings: Settings) -> Embedder:
    return make_embedder(
        settings.embeddings,
        base_url=settings.embeddings_base_url or settings.llm_base_url,
        model=settings.embeddings_model,
        api_key=(
            settings.embeddings_api_key.get_secret_value()
            or settings.llm_api_key.get_secret_value()
        ),
        timeout=settings.llm_timeout,
    )


def open_memory(settings: Settings, store: Store) -> Memory:
    memory = Memory(
        store,
        open_index(settings),
        open_embedder(settings),
        cache_ttl_seconds=settings.recall_cache_ttl_seconds,
        undo_days=settings.forget_undo_days,
    )
    memory.ensure_index()
    return memory


__all__ = ["Memory", "MemoryInputError", "RecallFilter", "open_index", "open_memory"]
