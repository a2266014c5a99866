"""The embedded recall index: SQLite FTS5 for keywords, a NumPy matrix for vectors, fused
with reciprocal rank fusion.

It lives in its own SQLite file (default ``<data dir>/recall.db``), whatever database holds
the log: it is derived data, rebuilt from the log by ``opcore memory reindex``. The stdlib
``sqlite3`` ships FTS5, so no extension has to be loaded. Vectors are stored as float32
blobs and held in memory as one normalised matrix, so a vector query is one matrix-vector
product (about 100k x 384 floats at most on one machine) and a masked ``argpartition``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from store.errors import RecallError
from store.memory.base import Hit, IndexedDoc, IndexStats, RecallFilter, fuse

# How many candidates each retriever hands to the fusion. Keyword search hands fewer: on
# paraphrased questions its lower ranks are mostly noise that outvotes the vector's best hit
# (bench/bench_memory.py measured recall@5 0.235 with 50, 0.335 with 10).
VECTOR_CANDIDATES = 50
# Query words in more than this share of memories are left out of the keyword query once the
# index holds COMMON_MIN_ITEMS memories (see SqliteRecallIndex._without_common_words).
COMMON_SHARE = 0.05
COMMON_MIN_ITEMS = 20_000
# Deleted or replaced rows a loaded matrix keeps (masked out) before it is reloaded.
DEAD_ROWS_KEPT = 1000
KEYWORD_CANDIDATES = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY,
    memory_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    contact_id TEXT,
    created_at REAL NOT NULL,
    text TEXT NOT NULL,
    embed_model TEXT,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS docs_contact ON docs (contact_id);
-- The filters' columns ride along UNINDEXED, so a filtered keyword search needs no join.
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    text, kind UNINDEXED, contact_id UNINDEXED, created_at UNINDEXED,
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS docs_ai AFTER INSERT ON docs BEGIN
    INSERT INTO docs_fts(rowid, text, kind, contact_id, created_at)
    VALUES (new.rid, new.text, new.kind, new.contact_id, new.created_at);
END;
CREATE TRIGGER IF NOT EXISTS docs_ad AFTER DELETE ON docs BEGIN
    DELETE FROM docs_fts WHERE rowid = old.rid;
END;
"""
# Bumped when the schema above changes: an older index file is dropped and rebuilt from the
# log (the memory service sees it empty and reindexes).
SCHEMA_VERSION = 2
_DROP = """
DROP TRIGGER IF EXISTS docs_ai;
DROP TRIGGER IF EXISTS docs_ad;
DROP TABLE IF EXISTS docs_fts;
DROP TABLE IF EXISTS docs;
"""

# Words too common to help a keyword match (FTS5 has no stop list of its own).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "about",
        "one",
        "any",
        "did",
        "into",
        "than",
        "then",
        "there",
        "these",
        "those",
    ]
)
_WORD = re.compile(r"\w+", re.UNICODE)


def keyword_query(text: str) -> str:
    """An FTS5 MATCH expression: the query's words OR'ed, each quoted (no operator
    injection: FTS5 syntax in the query is treated as words)."""
    words = [w.lower() for w in _WORD.findall(text)]  # "budget's" -> "budget", "s"
    kept = [w for w in dict.fromkeys(words) if (len(w) > 1 or w.isdigit()) and w not in STOPWORDS]
    return " OR ".join(f'"{w}"' for w in kept)


def _ts(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


class SqliteRecallIndex:
    """See the module docstring. Thread-safe: one connection behind a lock."""

    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            found = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if found != SCHEMA_VERSION:
                self._conn.executescript(_DROP)
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise RecallError(f"cannot open the recall index at {target}: {exc}") from exc
        self._lock = threading.RLock()
        self._matrix: _VectorMatrix | None = None  # loaded on first vector search
        self._matrix_version = -1
        self._executor: ThreadPoolExecutor | None = None
        self._counted: tuple[int, int] | None = None  # (data_version, items)
        self._dirty_count = True

    # Writing ---------------------------------------------------------------------------

    def upsert(self, docs: Sequence[IndexedDoc]) -> None:
        if not docs:
            return
        # One row per memory_id: the last version in the batch wins (two rows with the
        # same id would break the UNIQUE constraint and fail the whole batch).
        docs = list({d.memory_id: d for d in docs}.values())
        rows = [
            (
                d.memory_id,
                d.kind,
                d.contact_id,
                _ts(d.created_at),
                d.text,
                d.embed_model if d.vector is not None else None,
                None if d.vector is None else np.asarray(d.vector, dtype=np.float32).tobytes(),
            )
            for d in docs
        ]
        with self._lock:
            self._write(
                lambda c: (
                    c.executemany("DELETE FROM docs WHERE memory_id = ?", [(r[0],) for r in rows]),
                    c.executemany(
                        "INSERT INTO docs (memory_id, kind, contact_id, created_at, text,"
                        " embed_model, vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    ),
                )
            )
            self._patch_matrix(remove=[d.memory_id for d in docs], add=docs)

    def delete(self, memory_ids: Sequence[str]) -> None:
        if not memory_ids:
            return
        with self._lock:
            self._write(
                lambda c: c.executemany(
                    "DELETE FROM docs WHERE memory_id = ?", [(m,) for m in memory_ids]
                )
            )
            self._patch_matrix(remove=list(memory_ids), add=())

    def clear(self) -> None:
        with self._lock:
            self._write(lambda c: c.execute("DELETE FROM docs"))
            self._matrix = None
            self._dirty_count = True

    def _patch_matrix(self, *, remove: Sequence[str], add: Sequence[IndexedDoc]) -> None:
        self._dirty_count = True
        """Keep a loaded vector matrix in step with this process's own write (reloading it
        costs about a second at 100k memories); drop it when patching is not worth it."""
        if self._matrix is not None and not self._matrix.patch(remove, add):
            self._matrix = None

    def _write(self, work: Any) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                work(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecallError(f"the recall index refused a write: {exc}") from exc

    # Reading ---------------------------------------------------------------------------

    def search(
        self,
        query: str,
        vector: Sequence[float] | None,
        *,
        limit: int,
        filters: RecallFilter,
    ) -> list[Hit]:
        with self._lock:
            if vector is None:
                keyword = self._keyword(query, filters, max(limit, KEYWORD_CANDIDATES))
                semantic: list[str] = []
            else:
                # Both halves release the GIL (SQLite, BLAS): run them side by side.
                matrix = self._current_matrix()
                nearest = self._pool().submit(
                    matrix.nearest, vector, filters, max(limit, VECTOR_CANDIDATES)
                )
                keyword = self._keyword(query, filters, max(limit, KEYWORD_CANDIDATES))
                semantic = nearest.result()
        if vector is None:
            fused = [(m, 1.0 / (60 + r)) for r, m in enumerate(keyword, start=1)]
        else:
            fused = fuse([keyword, semantic])
        k_rank = {m: r for r, m in enumerate(keyword, start=1)}
        v_rank = {m: r for r, m in enumerate(semantic, start=1)}
        return [
            Hit(memory_id=m, score=s, keyword_rank=k_rank.get(m), vector_rank=v_rank.get(m))
            for m, s in fused[:limit]
        ]

    def _keyword(self, query: str, filters: RecallFilter, limit: int) -> list[str]:
        match = self._without_common_words(keyword_query(query))
        if not match:
            return []
        where, params = _where(filters, "")
        # Rank inside FTS5 (filters read its UNINDEXED columns), then join only the top rows:
        # joining every match before sorting costs twice as much on a large index.
        sql = (
            "SELECT d.memory_id FROM (SELECT rowid AS rid, bm25(docs_fts) AS score FROM docs_fts"
            f" WHERE docs_fts MATCH ?{where} ORDER BY score LIMIT ?) AS top"
            " JOIN docs d ON d.rid = top.rid ORDER BY top.score"
        )
        try:
            rows = self._conn.execute(sql, [match, *params, limit]).fetchall()
        except sqlite3.Error as exc:
            raise RecallError(f"keyword search failed: {exc}") from exc
        return [r[0] for r in rows]

    def _without_common_words(self, match: str) -> str:
        """On a large index, leave out query words found in more than COMMON_SHARE of the
        memories (bm25 gives them almost no weight, yet scoring their matches is most of a
        query's time); the rarest word always stays."""
        words = match.split(" OR ") if match else []
        total = self._count()
        if len(words) < 2 or total < COMMON_MIN_ITEMS:
            return match
        cap = int(total * COMMON_SHARE)
        counts = {
            w: int(
                self._conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM docs_fts WHERE docs_fts MATCH ? LIMIT ?)",
                    (w, cap + 1),
                ).fetchone()[0]
            )
            for w in words
        }
        kept = [w for w in words if counts[w] <= cap] or [min(words, key=counts.__getitem__)]
        return " OR ".join(kept)

    def _count(self) -> int:
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        if self._counted is None or self._counted[0] != version or self._dirty_count:
            total = int(self._conn.execute("SELECT count(*) FROM docs").fetchone()[0])
            self._counted = (version, total)
            self._dirty_count = False
        return self._counted[1]

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recall")
        return self._executor

    def _current_matrix(self) -> _VectorMatrix:
        # data_version changes when another connection (another opcore process) commits to
        # the file: then the matrix this process holds is stale.
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        if self._matrix is None or version != self._matrix_version:
            self._matrix = _VectorMatrix.load(self._conn)
            self._matrix_version = version
        return self._matrix

    def stats(self) -> IndexStats:
        with self._lock:
            items = int(self._conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])
            models = dict(
                self._conn.execute(
                    "SELECT embed_model, COUNT(*) FROM docs WHERE vector IS NOT NULL"
                    " GROUP BY embed_model"
                ).fetchall()
            )
        return IndexStats(items=items, vectors=sum(models.values()), embed_models=models)

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._conn.close()


def _where(filters: RecallFilter, prefix: str) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if filters.contact_id is not None:
        clauses.append(f"{prefix}contact_id = ?")
        params.append(filters.contact_id)
    if filters.kinds:
        kinds = sorted(filters.kinds)
        clauses.append(f"{prefix}kind IN ({', '.join('?' * len(kinds))})")
        params.extend(kinds)
    if filters.since is not None:
        clauses.append(f"{prefix}created_at >= ?")
        params.append(_ts(filters.since))
    if filters.until is not None:
        clauses.append(f"{prefix}created_at < ?")
        params.append(_ts(filters.until))
    return "".join(f" AND {c}" for c in clauses), params


class _VectorMatrix:
    """Every stored vector as one L2-normalised float32 matrix, with the metadata the
    filters need as parallel arrays. Rebuilt after a write (cheap next to embedding)."""

    def __init__(
        self,
        ids: list[str],
        matrix: np.ndarray,
        kinds: np.ndarray,
        contacts: np.ndarray,
        created: np.ndarray,
    ) -> None:
        self.ids = ids
        self.matrix = matrix
        self.alive = np.ones(len(ids), dtype=bool)  # False: deleted or replaced since loading
        self.position = {memory_id: i for i, memory_id in enumerate(ids)}
        # Kinds and contacts as integer codes: comparing ints is ~10x faster than objects.
        self.kind_codes = {k: i for i, k in enumerate(sorted(set(kinds.tolist())))}
        self.contact_codes = {
            c: i for i, c in enumerate(sorted({c for c in contacts.tolist() if c is not None}))
        }
        self.kinds = np.array([self.kind_codes[k] for k in kinds.tolist()], dtype=np.int32)
        self.contacts = np.array(
            [self.contact_codes.get(c, -1) for c in contacts.tolist()], dtype=np.int32
        )
        self.created = created

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> _VectorMatrix:
        rows = conn.execute(
            "SELECT memory_id, kind, contact_id, created_at, vector FROM docs"
            " WHERE vector IS NOT NULL ORDER BY rid"
        ).fetchall()
        if not rows:
            empty = np.zeros((0, 0), dtype=np.float32)
            return cls([], empty, np.array([]), np.array([]), np.array([]))
        dims = {len(r[4]) for r in rows}
        if len(dims) > 1:
            raise RecallError(
                "the recall index holds vectors of different sizes (the embedding model "
                "changed): run `opcore memory reindex`"
            )
        raw = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        matrix = raw / np.where(norms == 0, 1.0, norms)
        return cls(
            [r[0] for r in rows],
            matrix.astype(np.float32),
            np.array([r[1] for r in rows], dtype=object),
            np.array([r[2] for r in rows], dtype=object),
            np.array([r[3] for r in rows], dtype=np.float64),
        )

    def patch(self, remove: Sequence[str], add: Sequence[IndexedDoc]) -> bool:
        """Apply a write in place; False when the matrix should be reloaded instead (empty,
        another dimension, or mostly dead rows)."""
        for memory_id in remove:
            row = self.position.pop(memory_id, None)
            if row is not None:
                self.alive[row] = False
        new = [d for d in add if d.vector is not None]
        dead = len(self.alive) - int(self.alive.sum())
        if dead > max(DEAD_ROWS_KEPT, len(self.alive) // 4):
            return False
        if not new:
            return True
        if not self.ids or any(len(d.vector or ()) != self.matrix.shape[1] for d in new):
            return False
        raw = np.asarray([d.vector for d in new], dtype=np.float32)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        start = len(self.ids)
        self.matrix = np.vstack([self.matrix, (raw / np.where(norms == 0, 1.0, norms))]).astype(
            np.float32
        )
        for d in new:
            self.kind_codes.setdefault(d.kind, len(self.kind_codes))
            if d.contact_id is not None:
                self.contact_codes.setdefault(d.contact_id, len(self.contact_codes))
        self.kinds = np.concatenate(
            [self.kinds, np.array([self.kind_codes[d.kind] for d in new], dtype=np.int32)]
        )
        contacts = [self.contact_codes.get(d.contact_id, -1) if d.contact_id else -1 for d in new]
        self.contacts = np.concatenate([self.contacts, np.array(contacts, dtype=np.int32)])
        self.created = np.concatenate(
            [self.created, np.array([_ts(d.created_at) for d in new], dtype=np.float64)]
        )
        self.alive = np.concatenate([self.alive, np.ones(len(new), dtype=bool)])
        for offset, d in enumerate(new):
            self.ids.append(d.memory_id)
            self.position[d.memory_id] = start + offset
        return True

    def nearest(self, vector: Sequence[float], filters: RecallFilter, limit: int) -> list[str]:
        if not self.ids:
            return []
        query = np.asarray(vector, dtype=np.float32)
        if query.shape[0] != self.matrix.shape[1]:
            raise RecallError(
                f"the query vector has {query.shape[0]} dimensions, the index "
                f"{self.matrix.shape[1]}: run `opcore memory reindex`"
            )
        norm = float(np.linalg.norm(query))
        scores = self.matrix @ (query / (norm or 1.0))
        mask = self._mask(filters)
        mask = self.alive if mask is None else (mask & self.alive)
        scores = np.where(mask, scores, -np.inf)
        count = min(limit, len(self.ids))
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self.ids[i] for i in top if np.isfinite(scores[i])]

    def _mask(self, filters: RecallFilter) -> np.ndarray | None:
        mask: np.ndarray | None = None

        def both(m: np.ndarray) -> None:
            nonlocal mask
            mask = m if mask is None else (mask & m)

        if filters.contact_id is not None:
            both(self.contacts == self.contact_codes.get(filters.contact_id, -2))
        if filters.kinds:
            codes = [self.kind_codes[k] for k in filters.kinds if k in self.kind_codes]
            both(np.isin(self.kinds, codes) if codes else np.zeros(len(self.ids), dtype=bool))
        if filters.since is not None:
            both(self.created >= _ts(filters.since))
        if filters.until is not None:
            both(self.created < _ts(filters.until))
        return mask
