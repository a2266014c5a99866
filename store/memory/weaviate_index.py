"""The Weaviate recall index: one multi-tenant collection per memory kind, one tenant per
workspace, vectors supplied by opcore, searched with Weaviate's own hybrid (BM25 + vector)
and BM25 queries.

Configured by ``OPCORE_WEAVIATE_URL`` (for example ``http://localhost:8080``; the gRPC port
defaults to 50051 on the same host, TLS when the URL is ``https``) and an optional API key.
Every collection (``OpcoreMemory_Note``, ``OpcoreMemory_CaseStudy``, ...) has the same
properties and a single self-provided vector named ``default``: Weaviate never computes a
vector, so both backends rank the same vectors. The object id is a UUIDv5 of the memory id,
so an upsert replaces the object instead of adding a second one.

Results of the per-kind queries are merged by Weaviate's score. Those scores are computed
per collection (BM25 statistics, and hybrid's relative-score fusion normalises each query's
scores to [0, 1]), so the order *across* kinds is approximate; within a kind it is
Weaviate's own ranking.

This is the only module that imports ``weaviate``; every error of the client surfaces as
:class:`~store.errors.RecallError`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import weaviate
from weaviate.classes.aggregate import GroupByAggregate
from weaviate.classes.config import Configure, DataType, Property, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.collections import Collection
from weaviate.collections.classes.filters import FilterReturn
from weaviate.exceptions import WeaviateBaseError
from weaviate.util import generate_uuid5

from store.errors import RecallError
from store.memory.base import MEMORY_KINDS, Hit, IndexedDoc, IndexStats, RecallFilter
from store.memory.sqlite_index import keyword_query

COLLECTION_PREFIX = "OpcoreMemory_"
VECTOR_NAME = "default"  # the one self-provided named vector of every collection
DEFAULT_GRPC_PORT = 50051
HYBRID_ALPHA = 0.5  # equal weight to keywords and vectors
BATCH_SIZE = 200  # objects per insert_many / delete_many request
UNKNOWN_MODEL = "unknown"  # embed_model recorded for a vector whose model was not given

# Weaviate tenant names: letters, digits, ``-`` and ``_``, at most 64 characters.
_TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Memory ids go to ``generate_uuid5`` under this namespace, so they cannot collide with
# objects some other application derived from the same strings.
_UUID_NAMESPACE = "opcore.memory"


def collection_name(kind: str) -> str:
    """``case_study`` -> ``OpcoreMemory_CaseStudy``."""
    return COLLECTION_PREFIX + "".join(part.capitalize() for part in kind.split("_"))


def memory_uuid(memory_id: str) -> str:
    """The deterministic object id of a memory (the same in every collection)."""
    return generate_uuid5(memory_id, _UUID_NAMESPACE)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _properties() -> list[Property]:
    """The same schema for every kind. Only ``text`` is searchable (BM25); the rest are
    exact-match (``field``) filters."""

    def exact(name: str) -> Property:
        return Property(
            name=name,
            data_type=DataType.TEXT,
            tokenization=Tokenization.FIELD,
            index_searchable=False,
            index_filterable=True,
        )

    return [
        exact("memory_id"),
        exact("kind"),
        Property(
            name="text",
            data_type=DataType.TEXT,
            tokenization=Tokenization.WORD,
            index_searchable=True,
            index_filterable=False,
        ),
        exact("contact_id"),
        Property(name="created_at", data_type=DataType.DATE, index_filterable=True),
        exact("embed_model"),
    ]


def _parse_url(url: str) -> tuple[str, int, bool]:
    """(host, http port, secure) of ``http(s)://host[:port]``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise RecallError(
            f"OPCORE_WEAVIATE_URL must look like http://host:8080 or https://host, got {url!r}"
        )
    secure = parts.scheme == "https"
    try:
        port = parts.port
    except ValueError as exc:
        raise RecallError(f"OPCORE_WEAVIATE_URL has an invalid port: {url!r}") from exc
    return parts.hostname, port or (443 if secure else 80), secure


class WeaviateRecallIndex:
    """See the module docstring. One client, shared by the threads of the process."""

    name = "weaviate"

    def __init__(
        self,
        url: str,
        *,
        workspace: str,
        api_key: str = "",
        timeout: float = 10.0,
        grpc_port: int = DEFAULT_GRPC_PORT,
    ) -> None:
        if not _TENANT_NAME.match(workspace):
            raise RecallError(
                f"workspace {workspace!r} cannot be a Weaviate tenant: use 1-64 letters, "
                "digits, '-' or '_'"
            )
        host, http_port, secure = _parse_url(url)
        self.workspace = workspace
        self.url = url
        self._lock = threading.Lock()
        with self._translate(f"cannot connect to Weaviate at {url}"):
            # skip_init_checks: the client's own checks include a request to pypi.org for
            # a version warning; reachability is checked below with is_ready().
            self._client = weaviate.connect_to_custom(
                http_host=host,
                http_port=http_port,
                http_secure=secure,
                grpc_host=host,
                grpc_port=grpc_port,
                grpc_secure=secure,
                auth_credentials=Auth.api_key(api_key) if api_key else None,
                additional_config=AdditionalConfig(
                    timeout=Timeout(init=timeout, query=timeout, insert=timeout)
                ),
                skip_init_checks=True,
            )
        try:
            with self._translate(f"Weaviate at {url} is not usable"):
                if not self._client.is_ready():
                    raise RecallError(f"Weaviate at {url} is not ready")
                for kind in sorted(MEMORY_KINDS):
                    self._ensure_collection(collection_name(kind))
        except BaseException:
            self._client.close()
            raise

    # Setup -----------------------------------------------------------------------------

    def _ensure_collection(self, name: str) -> None:
        collections = self._client.collections
        if not collections.exists(name):
            try:
                collections.create(
                    name,
                    description="opcore recall index (derived from the event log)",
                    properties=_properties(),
                    vector_config=Configure.Vectors.self_provided(name=VECTOR_NAME),
                    multi_tenancy_config=Configure.multi_tenancy(
                        enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
                    ),
                )
            except WeaviateBaseError:
                if not collections.exists(name):  # not a race with another process
                    raise
        collection = collections.use(name)
        config = collection.config.get()
        if not config.multi_tenancy_config.enabled:
            raise RecallError(
                f"the Weaviate collection {name} exists without multi-tenancy: delete it "
                "and run `opcore memory reindex`"
            )
        self._ensure_tenant(name)

    def _ensure_tenant(self, name: str) -> None:
        tenants = self._client.collections.use(name).tenants
        if tenants.exists(self.workspace):
            return
        try:
            tenants.create([Tenant(name=self.workspace)])
        except WeaviateBaseError:
            if not tenants.exists(self.workspace):
                raise

    def _tenant(self, kind: str) -> Collection[dict[str, Any], None]:
        """The collection of ``kind`` bound to this workspace's tenant."""
        return self._client.collections.use(collection_name(kind)).with_tenant(self.workspace)

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except WeaviateBaseError as exc:
            raise RecallError(f"{what}: {exc}") from exc

    # Writing ---------------------------------------------------------------------------

    def upsert(self, docs: Sequence[IndexedDoc]) -> None:
        if not docs:
            return
        latest = {d.memory_id: d for d in docs}  # the last version of a repeated id wins
        unknown = sorted({d.kind for d in latest.values()} - MEMORY_KINDS)
        if unknown:
            raise RecallError(f"unknown memory kind(s) for the Weaviate index: {unknown}")
        by_kind: dict[str, list[IndexedDoc]] = {}
        for doc in latest.values():
            by_kind.setdefault(doc.kind, []).append(doc)
        with self._lock, self._translate("the Weaviate index refused a write"):
            # A memory whose kind changed must leave its old collection.
            for kind in sorted(MEMORY_KINDS):
                others = [m for m, d in latest.items() if d.kind != kind]
                self._delete_from(kind, others)
            for kind, group in sorted(by_kind.items()):
                collection = self._tenant(kind)
                for chunk in _chunks(group, BATCH_SIZE):
                    result = collection.data.insert_many([self._object(d) for d in chunk])
                    if result.has_errors:
                        first = next(iter(result.errors.values()))
                        raise RecallError(
                            f"Weaviate refused {len(result.errors)} of {len(chunk)} "
                            f"{kind} memories: {first.message}"
                        )

    @staticmethod
    def _object(doc: IndexedDoc) -> DataObject[dict[str, Any], None]:
        properties: dict[str, Any] = {
            "memory_id": doc.memory_id,
            "kind": doc.kind,
            "text": doc.text,
            "created_at": _utc(doc.created_at),
        }
        if doc.contact_id is not None:
            properties["contact_id"] = doc.contact_id
        vector: dict[str, list[float]] | None = None
        if doc.vector is not None:
            properties["embed_model"] = doc.embed_model or UNKNOWN_MODEL
            vector = {VECTOR_NAME: [float(x) for x in doc.vector]}
        return DataObject(properties=properties, uuid=memory_uuid(doc.memory_id), vector=vector)

    def delete(self, memory_ids: Sequence[str]) -> None:
        if not memory_ids:
            return
        ids = list(dict.fromkeys(memory_ids))
        with self._lock, self._translate("the Weaviate index refused a delete"):
            for kind in sorted(MEMORY_KINDS):
                self._delete_from(kind, ids)

    def _delete_from(self, kind: str, memory_ids: Sequence[str]) -> None:
        if not memory_ids:
            return
        collection = self._tenant(kind)
        for chunk in _chunks(memory_ids, BATCH_SIZE):
            uuids = [memory_uuid(m) for m in chunk]
            collection.data.delete_many(where=Filter.by_id().contains_any(uuids))

    def clear(self) -> None:
        """Drop this workspace's tenant from every collection and create it again empty
        (other workspaces are untouched)."""
        with self._lock, self._translate("the Weaviate index could not be cleared"):
            for kind in sorted(MEMORY_KINDS):
                name = collection_name(kind)
                tenants = self._client.collections.use(name).tenants
                if tenants.exists(self.workspace):
                    tenants.remove([self.workspace])
                self._ensure_tenant(name)

    def drop_workspace(self) -> None:
        """Remove this workspace's tenant from every collection (the collections stay).
        The index is not usable for writes afterwards until it is opened again."""
        with self._lock, self._translate("the Weaviate workspace could not be dropped"):
            for kind in sorted(MEMORY_KINDS):
                tenants = self._client.collections.use(collection_name(kind)).tenants
                if tenants.exists(self.workspace):
                    tenants.remove([self.workspace])

    # Reading ---------------------------------------------------------------------------

    def search(
        self,
        query: str,
        vector: Sequence[float] | None,
        *,
        limit: int,
        filters: RecallFilter,
    ) -> list[Hit]:
        if limit <= 0:
            return []
        has_words = bool(keyword_query(query))
        if vector is None and not has_words:
            return []  # nothing to match: an empty or stopword-only query
        kinds = sorted(filters.kinds & MEMORY_KINDS) if filters.kinds else sorted(MEMORY_KINDS)
        where = _filter(filters)
        scored: list[tuple[float, str]] = []
        with self._translate("Weaviate search failed"):
            for kind in kinds:
                query_api = self._tenant(kind).query
                if vector is None:
                    response = query_api.bm25(
                        query=query,
                        query_properties=["text"],
                        limit=limit,
                        filters=where,
                        return_metadata=MetadataQuery(score=True),
                        return_properties=["memory_id"],
                    )
                else:
                    response = query_api.hybrid(
                        query=query if has_words else None,
                        vector=[float(x) for x in vector],
                        target_vector=VECTOR_NAME,
                        alpha=HYBRID_ALPHA,
                        query_properties=["text"],
                        limit=limit,
                        filters=where,
                        return_metadata=MetadataQuery(score=True),
                        return_properties=["memory_id"],
                    )
                for obj in response.objects:
                    memory_id = obj.properties.get("memory_id")
                    if isinstance(memory_id, str):
                        scored.append((float(obj.metadata.score or 0.0), memory_id))
        scored.sort(key=lambda item: (-item[0], item[1]))
        hits: list[Hit] = []
        seen: set[str] = set()
        for score, memory_id in scored:
            if memory_id in seen:
                continue
            seen.add(memory_id)
            rank = len(hits) + 1
            hits.append(
                Hit(
                    memory_id=memory_id,
                    score=score,
                    keyword_rank=rank if vector is None else None,
                )
            )
            if len(hits) == limit:
                break
        return hits

    def stats(self) -> IndexStats:
        items = 0
        models: dict[str, int] = {}
        with self._translate("Weaviate stats failed"):
            for kind in sorted(MEMORY_KINDS):
                aggregate = self._tenant(kind).aggregate
                total = aggregate.over_all(total_count=True)
                items += int(total.total_count or 0)
                grouped = aggregate.over_all(
                    group_by=GroupByAggregate(prop="embed_model"), total_count=True
                )
                for group in grouped.groups:
                    model = group.grouped_by.value
                    if isinstance(model, str) and model:
                        models[model] = models.get(model, 0) + int(group.total_count or 0)
        return IndexStats(items=items, vectors=sum(models.values()), embed_models=models)

    def close(self) -> None:
        with self._lock, self._translate("closing the Weaviate client failed"):
            self._client.close()


def _filter(filters: RecallFilter) -> FilterReturn | None:
    """The Weaviate filter of everything but ``kinds`` (kinds pick the collections)."""
    clauses: list[FilterReturn] = []
    if filters.contact_id is not None:
        clauses.append(Filter.by_property("contact_id").equal(filters.contact_id))
    if filters.since is not None:
        clauses.append(Filter.by_property("created_at").greater_or_equal(_utc(filters.since)))
    if filters.until is not None:
        clauses.append(Filter.by_property("created_at").less_than(_utc(filters.until)))
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else Filter.all_of(clauses)
