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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from store.errors import RecallError
from store.memory.base import Hit, IndexedDoc, IndexStats, RecallFilter, fuse

# How many candidates each retriever hands to the fusion.
CANDIDATES = 50

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
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    text, content='docs', content_rowid='rid', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS docs_ai AFTER INSERT ON docs BEGIN
    INSERT INTO docs_fts(rowid, text) VALUES (new.rid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS docs_ad AFTER DELETE ON docs BEGIN
    INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.rid, old.text);
END;
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
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RecallError(f"cannot open the recall index at {target}: {exc}") from exc
        self._lock = threading.RLock()
        self._matrix: _VectorMatrix | None = None  # loaded on first vector search
        self._matrix_version = -1

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
            self._matrix = None

    def delete(self, memory_ids: Sequence[str]) -> None:
        if not memory_ids:
            return
        with self._lock:
            self._write(
                lambda c: c.executemany(
                    "DELETE FROM docs WHERE memory_id = ?", [(m,) for m in memory_ids]
                )
            )
            self._matrix = None

    def clear(self) -> None:
        with self._lock:
            self._write(lambda c: c.execute("DELETE FROM docs"))
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
            keyword = self._keyword(query, filters, CANDIDATES)
            semantic = [] if vector is None else self._vector(vector, filters, CANDIDATES)
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
        match = keyword_query(query)
        if not match:
            return []
        where, params = _where(filters, "d.")
        sql = (
            "SELECT d.memory_id FROM docs_fts JOIN docs d ON d.rid = docs_fts.rowid"
            f" WHERE docs_fts MATCH ?{where} ORDER BY bm25(docs_fts) LIMIT ?"
        )
        try:
            rows = self._conn.execute(sql, [match, *params, limit]).fetchall()
        except sqlite3.Error as exc:
            raise RecallError(f"keyword search failed: {exc}") from exc
        return [r[0] for r in rows]

    def _vector(self, vector: Sequence[float], filters: RecallFilter, limit: int) -> list[str]:
        # data_version changes when another connection (another opcore process) commits to
        # the file: then the matrix this process holds is stale.
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        if self._matrix is None or version != self._matrix_version:
            self._matrix = _VectorMatrix.load(self._conn)
            self._matrix_version = version
        return self._matrix.nearest(vector, filters, limit)

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
        self.kinds = kinds
        self.contacts = contacts
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
        if mask is not None:
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
            both(self.contacts == filters.contact_id)
        if filters.kinds:
            both(np.isin(self.kinds, sorted(filters.kinds)))
        if filters.since is not None:
            both(self.created >= _ts(filters.since))
        if filters.until is not None:
            both(self.created < _ts(filters.until))
        return mask
