"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions wire format.

``POST /v1/chat/completions`` answers with a chat completion (``GET /v1/models`` lists the one
model). ``POST /v1/embeddings`` answers with one embedding per input, made by
``embed_fn`` (default: a 64-dimension bag of hashed words, with ``synonyms`` mapping words to
one concept so tests can make paraphrases land close); ``embedding_failures`` answers that
many requests with 503 first. Scriptable: queue behaviours with :meth:`FakeOpenAI.reply`, :meth:`~FakeOpenAI.status`,
:meth:`~FakeOpenAI.delay` and :meth:`~FakeOpenAI.raw`; each request takes the next one, and with
an empty queue the server replies with ``default_content``. Every request is recorded in
``.requests`` (path, headers, parsed JSON body, arrival time).

Usable in-process (``with FakeOpenAI() as server:`` or the ``openai_server`` fixture) and from a
subprocess under test: point its base URL setting at ``server.base_url``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

COMPLETIONS_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
EMBED_DIMS = 64


def bag_of_words(text: str, synonyms: Mapping[str, str]) -> list[float]:
    """A toy embedding: each word (or its concept, via ``synonyms``) hashed to a dimension."""
    vector = [0.0] * EMBED_DIMS
    for word in text.lower().replace("?", " ").replace(".", " ").replace(",", " ").split():
        concept = synonyms.get(word, word)
        digest = hashlib.sha256(concept.encode()).digest()
        vector[digest[0] % EMBED_DIMS] += 1.0
    return vector


DEFAULT_ERROR = b'{"error": {"message": "boom", "type": "server_error"}}'


@dataclass
class Behaviour:
    """What the server does with one request."""

    content: str | None = None  # the assistant's message content (a completion)
    status: int = 200
    body: bytes | None = None  # sent as is instead of a completion
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    prompt_tokens: int = 12
    completion_tokens: int = 34


@dataclass
class Recorded:
    """One request the server received. ``body`` is the parsed JSON (``{"_raw": ...}`` if not)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic())

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class FakeOpenAI:
    """A scriptable OpenAI-compatible server on an ephemeral loopback port."""

    def __init__(self, *, default_content: str = "hello", model: str = "test-model") -> None:
        self.default_content = default_content
        self.model = model
        self.requests: list[Recorded] = []
        self.synonyms: dict[str, str] = {}
        self.embed_fn: Callable[[str], list[float]] = lambda text: bag_of_words(text, self.synonyms)
        self.embedding_failures = 0
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what an OpenAI client takes as its base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    # -- script ---------------------------------------------------------------------------

    def reply(self, content: str, *, prompt_tokens: int = 12, completion_tokens: int = 34) -> None:
        """Answer the next request with a completion whose message content is ``content``."""
        self._push(
            Behaviour(
                content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        )

    def status(
        self,
        code: int,
        body: bytes | str = DEFAULT_ERROR,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next request with HTTP ``code``, ``body`` and extra ``headers``."""
        raw = body.encode() if isinstance(body, str) else body
        self._push(Behaviour(status=code, body=raw, headers=dict(headers or {})))

    def delay(self, seconds: float, content: str = "late") -> None:
        """Wait ``seconds`` before answering the next request (to trigger client timeouts)."""
        self._push(Behaviour(content=content, delay=seconds))

    def raw(self, body: bytes, *, status: int = 200) -> None:
        """Answer the next request with ``body`` as is (malformed or unexpected JSON)."""
        self._push(Behaviour(status=status, body=body))

    @property
    def pending(self) -> int:
        """How many scripted behaviours no request has used yet."""
        with self._lock:
            return len(self._script)

    def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> list[Recorded]:
        """Wait until ``count`` requests have arrived (from another process, say)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} requests within {timeout}s, got {len(self.requests)}"
                )
            time.sleep(0.01)
        return list(self.requests)

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a request still waiting in a delay is let go at once."""
        self._stopping.set()
        if self._started:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._started = False
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving (called from the handler threads) ----------------------------------------

    def _push(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._script.append(behaviour)

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)

    def _next(self, recorded: Recorded) -> Behaviour:
        with self._lock:
            self.requests.append(recorded)
            if self._script:
                return self._script.popleft()
            return Behaviour(content=self.default_content)

    def _completion(self, step: Behaviour, body: Mapping[str, Any]) -> bytes:
        model = body.get("model")
        total = step.prompt_tokens + step.completion_tokens
        payload = {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model if isinstance(model, str) and model else self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": step.content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": step.prompt_tokens,
                "completion_tokens": step.completion_tokens,
                "total_tokens": total,
            },
        }
        return json.dumps(payload).encode()


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeOpenAI/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                models = {"object": "list", "data": [{"id": fake.model, "object": "model"}]}
                self._send(200, json.dumps(models).encode(), {})
            else:
                self._send(404, b'{"error": {"message": "not found"}}', {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or "0")
            raw = self.rfile.read(length)
            try:
                parsed = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                parsed = None
            body = parsed if isinstance(parsed, dict) else {"_raw": raw.decode(errors="replace")}
            recorded = Recorded(self.path, dict(self.headers.items()), body)
            if self.path == EMBEDDINGS_PATH:
                fake._record(recorded)
                self._embeddings(body)
                return
            if self.path != COMPLETIONS_PATH:
                fake._record(recorded)  # a wrong path does not use up a scripted behaviour
                self._send(404, b'{"error": {"message": "not found"}}', {})
                return
            step = fake._next(recorded)
            if step.delay and fake._stopping.wait(step.delay):
                return  # the server is stopping: drop the request
            if step.body is not None:
                self._send(step.status, step.body, step.headers)
            else:
                self._send(step.status, fake._completion(step, body), step.headers)

        def _embeddings(self, body: Mapping[str, Any]) -> None:
            with fake._lock:
                failing = fake.embedding_failures > 0
                fake.embedding_failures -= 1 if failing else 0
            if failing:
                self._send(503, DEFAULT_ERROR, {})
                return
            inputs = body.get("input")
            texts = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                self._send(400, b'{"error": {"message": "input must be strings"}}', {})
                return
            data = [
                {"object": "embedding", "index": i, "embedding": fake.embed_fn(t)}
                for i, t in enumerate(texts)
            ]
            payload = {
                "object": "list",
                "data": data,
                "model": body.get("model") or fake.model,
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
            self._send(200, json.dumps(payload).encode(), {})

        def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except ConnectionError:
                pass  # the client gave up (a timeout test): nobody to answer

    return Handler


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    """A started :class:`FakeOpenAI`, stopped after the test."""
    with FakeOpenAI() as server:
        yield server
