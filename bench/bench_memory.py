"""Recall benchmarks: hybrid retrieval quality and search latency of the embedded index.

Quality, on the generated business memories of :mod:`bench.memory_data` (about 3,000 at scale
1: clients, quotes, promises, meeting notes, tickets, ...): every memory and query is
embedded with ``LocalEmbedder`` (all-MiniLM-L6-v2, the ``local-embeddings`` extra) and loaded
into a ``SqliteRecallIndex`` in a temporary directory. For paraphrased queries (other words
than the memory's) and lexical queries (the memory's own words), it reports recall@5 and MRR
over the top 10 of keyword-only search (no vector) and hybrid search (vector given, fused
with reciprocal rank fusion), plus vector-only ranking computed with NumPy for context. The
README's claim, "hybrid beats keyword-only on paraphrased queries" (better recall@5 and MRR),
is checked: the run exits 1 if it does not hold, 2 if the embedding model is not installed.

Latency, at 10k and 100k memories (``--scale 0.1``: 1k and 10k): synthetic texts drawn from
the generator's vocabulary with random 384-dimension float32 vectors (no model needed),
inserted with batched ``upsert``. It times ``SqliteRecallIndex.search`` (hybrid, the query
vector given: query embedding excluded) over the generated queries, beside a brute-force
NumPy baseline in the same run (cosine over the full normalised matrix, ``argsort``, top 5),
and the parts of a search (FTS5 keyword query, vector nearest, the bare matrix product, a
filtered search for the masking), and the first search after opening the index (which loads
the matrix from SQLite). Target: p95 <= 25 ms at 100k.

Run ``python -m bench.bench_memory [--scale 0.1] [--quality-only|--latency-only]``. Prints
the tables and writes ``bench/results/bench_memory.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import row, write_results
from bench.memory_data import Dataset, Query, generate, synthetic_texts, token_stream
from store.errors import EmbeddingError
from store.memory.base import IndexedDoc, RecallFilter
from store.memory.sqlite_index import VECTOR_CANDIDATES, SqliteRecallIndex

DIMS = 384
TARGET_P95_MS = 25.0
TARGET_SIZE = 100_000
INSERT_BATCH = 5_000
KINDS = ["note", "draft", "proposal", "deliverable", "case_study", "summary", "document", "worklog"]


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    """p50 (the median) and p95 of samples in seconds, in milliseconds."""
    return {
        "p50_ms": statistics.median(samples) * 1e3,
        "p95_ms": percentile(samples, 0.95) * 1e3,
    }


# Quality ---------------------------------------------------------------------------------


def rank_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """recall@5 and MRR over the top 10, from the 1-based rank of each query's target."""
    n = len(ranks)
    return {
        "queries": n,
        "recall@5": sum(1 for r in ranks if r is not None and r <= 5) / n,
        "mrr@10": sum(1.0 / r for r in ranks if r is not None and r <= 10) / n,
    }


def rank_in(ids: Sequence[str], target: str) -> int | None:
    for rank, memory_id in enumerate(ids, start=1):
        if memory_id == target:
            return rank
    return None


def bench_quality(dataset: Dataset) -> dict[str, Any]:
    from store.memory.embeddings import LocalEmbedder

    embedder = LocalEmbedder()  # EmbeddingError without the extra: the caller reports it
    start = time.perf_counter()
    item_vectors = embedder.embed([i.text for i in dataset.items])
    query_vectors = embedder.embed([q.text for q in dataset.queries])
    embed_s = time.perf_counter() - start
    matrix = np.asarray(item_vectors, dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [i.memory_id for i in dataset.items]
    by_query = dict(zip((q.query_id for q in dataset.queries), query_vectors, strict=True))

    ranks: dict[tuple[str, str], list[int | None]] = {}
    per_intent: dict[tuple[str, str], list[int | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = SqliteRecallIndex(Path(tmp) / "recall.db")
        try:
            index.upsert(
                [
                    IndexedDoc(
                        memory_id=i.memory_id,
                        kind=i.kind,
                        text=i.text,
                        created_at=i.created_at,
                        contact_id=i.contact_id,
                        vector=v,
                        embed_model=embedder.model,
                    )
                    for i, v in zip(dataset.items, item_vectors, strict=True)
                ]
            )
            for q in dataset.queries:
                vector = by_query[q.query_id]
                results = {
                    "keyword": [
                        h.memory_id
                        for h in index.search(q.text, None, limit=10, filters=RecallFilter())
                    ],
                    "hybrid": [
                        h.memory_id
                        for h in index.search(q.text, vector, limit=10, filters=RecallFilter())
                    ],
                    "vector": [
                        ids[i]
                        for i in np.argsort(-(matrix @ np.asarray(vector, dtype=np.float32)))[:10]
                    ],
                }
                for mode, found in results.items():
                    rank = rank_in(found, q.target)
                    ranks.setdefault((q.style, mode), []).append(rank)
                    if q.style == "paraphrase":
                        per_intent.setdefault((q.intent, mode), []).append(rank)
        finally:
            index.close()

    def mean_overlap(queries: list[Query]) -> float:
        return statistics.mean(q.overlap for q in queries)

    return {
        "embed_model": embedder.model,
        "embed_seconds": embed_s,
        "embedded_texts": len(dataset.items) + len(dataset.queries),
        "memories": len(dataset.items),
        "queries": {
            style: {
                "count": len(dataset.by_style(style)),
                "mean_word_overlap": mean_overlap(dataset.by_style(style)),
            }
            for style in ("paraphrase", "lexical")
        },
        "results": [
            {"style": style, "mode": mode, **rank_metrics(r)}
            for (style, mode), r in sorted(ranks.items())
        ],
        "paraphrase_by_intent": [
            {"intent": intent, "mode": mode, **rank_metrics(r)}
            for (intent, mode), r in sorted(per_intent.items())
        ],
    }


def print_quality(q: dict[str, Any]) -> bool:
    """Print the quality tables; True when hybrid beats keyword-only on paraphrases."""
    queries = q["queries"]
    print(
        f"\nQUALITY: {q['memories']} memories; {queries['paraphrase']['count']} paraphrased and "
        f"{queries['lexical']['count']} lexical queries; {q['embed_model']} "
        f"({q['embedded_texts']} texts embedded in {q['embed_seconds']:.1f} s)"
    )
    print(
        f"mean share of the target's words repeated by the query: paraphrased "
        f"{queries['paraphrase']['mean_word_overlap']:.2f}, lexical "
        f"{queries['lexical']['mean_word_overlap']:.2f} (client and person names excluded)"
    )
    print(f"{'queries':<11} {'mode':<15} {'recall@5':>8} {'MRR@10':>7}")
    by = {(r["style"], r["mode"]): r for r in q["results"]}
    for style in ("paraphrase", "lexical"):
        for mode, label in (
            ("keyword", "keyword-only"),
            ("hybrid", "hybrid"),
            ("vector", "vector-only*"),
        ):
            r = by[(style, mode)]
            print(f"{style:<11} {label:<15} {r['recall@5']:>8.3f} {r['mrr@10']:>7.3f}")
    print("* vector-only: NumPy cosine over the same vectors, for context (not an index mode)")
    print("\nparaphrased recall@5 by target (keyword-only | hybrid | vector-only*):")
    intents = {(r["intent"], r["mode"]): r for r in q["paraphrase_by_intent"]}
    for intent in sorted({i for i, _ in intents}):
        cells = " | ".join(
            f"{intents[(intent, m)]['recall@5']:.2f}" for m in ("keyword", "hybrid", "vector")
        )
        print(f"  {intent:<12} ({intents[(intent, 'hybrid')]['queries']:>3} queries) {cells}")
    kw, hy = by[("paraphrase", "keyword")], by[("paraphrase", "hybrid")]
    holds = bool(hy["recall@5"] > kw["recall@5"] and hy["mrr@10"] > kw["mrr@10"])
    print(
        "\nclaim: hybrid beats keyword-only on paraphrased queries "
        f"(recall@5 {hy['recall@5']:.3f} vs {kw['recall@5']:.3f}, "
        f"MRR@10 {hy['mrr@10']:.3f} vs {kw['mrr@10']:.3f}): "
        f"{'HOLDS' if holds else 'DOES NOT HOLD'}"
    )
    vec = by[("paraphrase", "vector")]
    if vec["recall@5"] > hy["recall@5"]:
        print(
            "note: hybrid trails vector-only ranking on paraphrased queries "
            f"(recall@5 {hy['recall@5']:.3f} vs {vec['recall@5']:.3f}): the fusion lets "
            "keyword matches outvote the vector's best hits"
        )
    return holds


# Latency ---------------------------------------------------------------------------------


def timed(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def synthetic_docs(
    texts: list[str], vectors: np.ndarray, rng: np.random.Generator, start: int
) -> list[IndexedDoc]:
    epoch = datetime(2023, 1, 1, tzinfo=UTC)
    kinds = rng.integers(0, len(KINDS), size=len(texts))
    contacts = rng.integers(0, 500, size=len(texts))
    days = rng.integers(0, 730, size=len(texts))
    return [
        IndexedDoc(
            memory_id=f"syn-{start + i:07d}",
            kind=KINDS[kinds[i]],
            text=text,
            created_at=epoch + timedelta(days=int(days[i])),
            contact_id=f"ct-{contacts[i]:03d}",
            vector=tuple(vectors[i].tolist()),
            embed_model="random-384",
        )
        for i, text in enumerate(texts)
    ]


def bench_latency(
    tokens: list[str], query_texts: list[str], size: int, n_queries: int, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((size, DIMS), dtype=np.float32)
    texts = synthetic_texts(tokens, size, rng)
    queries = [query_texts[i % len(query_texts)] for i in range(n_queries)]
    qvecs = rng.standard_normal((n_queries, DIMS), dtype=np.float32)
    qtuples = [tuple(v.tolist()) for v in qvecs]
    out: dict[str, Any] = {"items": size, "queries": n_queries}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recall.db"
        index = SqliteRecallIndex(path)
        start = time.perf_counter()
        for lo in range(0, size, INSERT_BATCH):
            hi = min(size, lo + INSERT_BATCH)
            index.upsert(synthetic_docs(texts[lo:hi], vectors[lo:hi], rng, lo))
        insert_s = time.perf_counter() - start
        index.close()
        out["insert"] = {"seconds": insert_s, "docs_per_s": size / insert_s}

        # A fresh process would open the file and pay the matrix load on its first search.
        index = SqliteRecallIndex(path)
        try:
            start = time.perf_counter()
            index.search(queries[0], qtuples[0], limit=5, filters=RecallFilter())
            out["first_query_ms"] = (time.perf_counter() - start) * 1e3

            def hybrid(i: int) -> object:
                return index.search(queries[i], qtuples[i], limit=5, filters=RecallFilter())

            def keyword(i: int) -> object:
                return index.search(queries[i], None, limit=5, filters=RecallFilter())

            matrix_holder = index._matrix  # the loaded matrix, for the profile rows
            assert matrix_holder is not None

            def vector_part(i: int) -> object:
                return matrix_holder.nearest(qtuples[i], RecallFilter(), VECTOR_CANDIDATES)

            def product(i: int) -> object:
                return matrix_holder.matrix @ qvecs[i]

            filters = RecallFilter(kinds=frozenset({"note", "proposal"}), contact_id="ct-042")

            def filtered(i: int) -> object:
                return index.search(queries[i], qtuples[i], limit=5, filters=filters)

            # The baseline: brute force over the same vectors, normalised once like ours.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            base_matrix = (vectors / norms).astype(np.float32)

            def baseline(i: int) -> object:
                q = qvecs[i] / np.linalg.norm(qvecs[i])
                return np.argsort(-(base_matrix @ q))[:5]

            figures: dict[str, Callable[[int], object]] = {
                "hybrid": hybrid,
                "baseline": baseline,
                "keyword": keyword,
                "vector_part": vector_part,
                "matrix_product": product,
                "hybrid_filtered": filtered,
            }
            for fn in figures.values():
                timed(fn, 10)  # warm up
            for name, fn in figures.items():
                out[name] = summary_ms(timed(fn, n_queries))
        finally:
            index.close()
    out["ratio_p50"] = out["hybrid"]["p50_ms"] / out["baseline"]["p50_ms"]
    out["ratio_p95"] = out["hybrid"]["p95_ms"] / out["baseline"]["p95_ms"]
    return out


def print_latency(rows: list[dict[str, Any]]) -> None:
    print(f"\nLATENCY (ms; query embedding excluded; {rows[0]['queries']} queries per figure)")
    print(f"{'items':>7} {'figure':<42} {'p50':>7} {'p95':>7}")
    labels = [
        ("hybrid", "ours: SqliteRecallIndex.search, hybrid"),
        ("baseline", "baseline: NumPy cosine + argsort top 5"),
        ("keyword", "  part: keyword only (FTS5 + bm25)"),
        ("vector_part", "  part: vector nearest (product+partition)"),
        ("matrix_product", "  part: bare matrix product"),
        ("hybrid_filtered", "  hybrid with kind + contact filters"),
    ]
    for r in rows:
        for key, label in labels:
            print(f"{r['items']:>7} {label:<42} {r[key]['p50_ms']:>7.2f} {r[key]['p95_ms']:>7.2f}")
        print(
            f"{r['items']:>7} {'ratio ours/baseline':<42} {r['ratio_p50']:>6.2f}x {r['ratio_p95']:>6.2f}x"
        )
        print(
            f"{r['items']:>7} {'first search after opening (matrix load)':<42} {r['first_query_ms']:>7.1f}"
        )
        print(
            f"{r['items']:>7} {'batched upsert (docs/s)':<42} {r['insert']['docs_per_s']:>7.0f}"
            f"  ({r['insert']['seconds']:.1f} s)"
        )


# Main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--quality-only", action="store_true")
    only.add_argument("--latency-only", action="store_true")
    parser.add_argument("--queries", type=int, default=200, help="latency queries per size")
    args = parser.parse_args(argv)

    dataset = generate(args.scale)
    report: dict[str, Any] = {
        "scale": args.scale,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "dataset": {
            "seed": dataset.seed,
            "clients": dataset.clients,
            "memories": len(dataset.items),
            "paraphrased_queries": len(dataset.by_style("paraphrase")),
            "lexical_queries": len(dataset.by_style("lexical")),
        },
    }
    status = 0
    if not args.latency_only:
        try:
            quality = bench_quality(dataset)
        except EmbeddingError as exc:
            print(
                f"the quality benchmark needs the local embedding model: {exc}\n"
                "(run with --latency-only to skip it)",
                file=sys.stderr,
            )
            return 2
        report["quality"] = quality
        holds = print_quality(quality)
        report["claims"] = {"hybrid beats keyword-only on paraphrased queries": holds}
        if not holds:
            status = 1
    if not args.quality_only:
        tokens = token_stream(dataset)
        # Paraphrased and lexical questions, mixed (the generator lists them by style).
        query_texts = [q.text for q in dataset.queries]
        random.Random(dataset.seed).shuffle(query_texts)
        sizes = [max(100, round(10_000 * args.scale)), max(1_000, round(100_000 * args.scale))]
        rows = [
            bench_latency(tokens, query_texts, size, args.queries, seed=dataset.seed + size)
            for size in sizes
        ]
        report["latency"] = rows
        print_latency(rows)
        at_target = [r for r in rows if r["items"] == TARGET_SIZE]
        name = f"hybrid search p95 <= {TARGET_P95_MS:g} ms at {TARGET_SIZE:,} memories"
        if at_target:
            met = at_target[0]["hybrid"]["p95_ms"] <= TARGET_P95_MS
            print(f"target: {name}: {'met' if met else 'NOT met'}")
            report["targets"] = {name: met}
        else:
            print(f"target: {name}: not measured at this scale")
    report["rows"] = common_rows(report)
    write_results("bench_memory", report)
    return status


def common_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Quality and latency in the common row format of :mod:`bench.common`."""
    out = []
    if "quality" in report:
        q = report["quality"]
        by = {(r["style"], r["mode"]): r for r in q["results"]}
        for style, label in (("paraphrase", "paraphrased"), ("lexical", "lexical")):
            for metric in ("recall@5", "mrr@10"):
                hybrid, keyword = by[(style, "hybrid")], by[(style, "keyword")]
                out.append(
                    row(
                        f"recall quality: {metric}, {hybrid['queries']} {label} questions "
                        f"over {q['memories']:,} memories",
                        hybrid[metric],
                        "",
                        baseline=keyword[metric],
                        baseline_name="keyword-only search, same index",
                        better="higher",
                        note=f"hybrid; vectors alone {by[(style, 'vector')][metric]:.3f}",
                    )
                )
    for r in report.get("latency", []):
        out.append(
            row(
                f"recall search p50, {r['items']:,} memories (hybrid, top 5)",
                r["hybrid"]["p50_ms"],
                "ms",
                baseline=r["baseline"]["p50_ms"],
                baseline_name="NumPy brute-force cosine, same vectors",
                note=(
                    f"p95 {r['hybrid']['p95_ms']:.1f} vs {r['baseline']['p95_ms']:.1f} ms; "
                    f"filtered p95 {r['hybrid_filtered']['p95_ms']:.1f} ms"
                ),
            )
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
