"""Golden runs: answer model requests from a recording, or record what a real model answered.

A recording is one JSON file per flow (indented, keys sorted, so a re-recording diffs well):

- ``header``: ``flow`` (the opcore flow's name), ``recorded_with`` (provider and model, plus
  the endpoint or a note), ``recorded_at`` (UTC, ISO 8601) and the file ``format``;
- ``exchanges``: every request the flow made, in order: its ``task``, the ``digest`` of what
  shapes the answer (messages, schema, temperature, answer length; see
  :func:`agents.cache.digest`), the request itself, and the answer: ``text``, ``model``,
  ``provider``, ``usage``, ``offline``;
- ``expected``: what the flow is expected to produce, written by whoever records the flow (the
  golden tests store the proposals there).

**Replay** (:meth:`GoldenProvider.replay`) answers a request with the next unused exchange of the
same task and digest. A request the recording does not hold means the prompt changed since the
recording: it raises :class:`ProviderRequestError` with a diff of the prompt and the command
that re-records the flow. **Record** (:meth:`GoldenProvider.record`) passes each request to a
real provider and keeps the exchange; :meth:`GoldenProvider.save` writes the file.
"""

from __future__ import annotations

import difflib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from agents.cache import digest
from agents.errors import ProviderRequestError
from agents.providers.base import ChatMessage, ModelProvider, ModelRequest, ModelResponse, Usage

FORMAT = 1
DIGEST_MODEL = "golden"
"""Stands in for the model in the request digest: a recording matches whatever model answers."""
RERECORD = "python -m tests.golden record --flow {flow}"
"""How to re-record a flow (``{flow}`` is its name); quoted when a replayed prompt changed."""
DIFF_LINES = 60  # lines of prompt diff quoted in a replay miss

Mode = Literal["replay", "record"]


class RecordingError(ValueError):
    """A recording file is missing, unreadable or was edited out of shape."""


def request_digest(request: ModelRequest) -> str:
    """What identifies a request in a recording: its messages, schema and sampling settings."""
    return digest(DIGEST_MODEL, request)


@dataclass(frozen=True)
class Exchange:
    """One recorded request and the answer it got."""

    task: str
    digest: str
    messages: tuple[ChatMessage, ...]
    text: str
    model: str
    provider: str
    usage: Usage
    offline: bool = False
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "answer"
    temperature: float = 0.2
    max_tokens: int | None = None
    task_class: str | None = None

    @classmethod
    def of(cls, request: ModelRequest, response: ModelResponse) -> Exchange:
        return cls(
            task=request.task,
            digest=request_digest(request),
            messages=request.messages,
            text=response.text,
            model=response.model,
            provider=response.provider,
            usage=response.usage,
            offline=response.offline,
            json_schema=request.json_schema,
            schema_name=request.schema_name,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            task_class=request.task_class,
        )

    def request(self) -> ModelRequest:
        """The recorded request (without its facts, which do not shape a real model's answer)."""
        return ModelRequest(
            task=self.task,
            messages=self.messages,
            json_schema=self.json_schema,
            schema_name=self.schema_name,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            task_class=self.task_class,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "digest": self.digest,
            "request": {
                "messages": [{"role": m.role, "content": m.content} for m in self.messages],
                "json_schema": None if self.json_schema is None else dict(self.json_schema),
                "schema_name": self.schema_name,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "task_class": self.task_class,
            },
            "answer": {
                "text": self.text,
                "model": self.model,
                "provider": self.provider,
                "offline": self.offline,
                "usage": {
                    "prompt_tokens": self.usage.prompt_tokens,
                    "completion_tokens": self.usage.completion_tokens,
                },
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Exchange:
        request, answer = data["request"], data["answer"]
        messages = tuple(
            ChatMessage(role=m["role"], content=str(m["content"])) for m in request["messages"]
        )
        for m in messages:
            if m.role not in ("system", "user", "assistant"):
                raise RecordingError(f"a message has the unknown role {m.role!r}")
        return cls(
            task=str(data["task"]),
            digest=str(data["digest"]),
            messages=messages,
            text=str(answer["text"]),
            model=str(answer["model"]),
            provider=str(answer["provider"]),
            usage=Usage(
                prompt_tokens=int(answer["usage"]["prompt_tokens"]),
                completion_tokens=int(answer["usage"]["completion_tokens"]),
            ),
            offline=bool(answer.get("offline", False)),
            json_schema=request.get("json_schema"),
            schema_name=str(request.get("schema_name", "answer")),
            temperature=float(request.get("temperature", 0.2)),
            max_tokens=request.get("max_tokens"),
            task_class=request.get("task_class"),
        )


@dataclass
class Recording:
    """The content of one recording file."""

    flow: str
    recorded_with: dict[str, Any]
    recorded_at: str
    exchanges: list[Exchange] = field(default_factory=list)
    expected: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.recorded_with.get("model", "unknown"))

    def to_json(self) -> dict[str, Any]:
        return {
            "header": {
                "format": FORMAT,
                "flow": self.flow,
                "recorded_with": self.recorded_with,
                "recorded_at": self.recorded_at,
            },
            "exchanges": [x.to_json() for x in self.exchanges],
            "expected": self.expected,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def dump(self, path: Path) -> None:
        """Write the file atomically: a reader sees the old recording or the new one, whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(self.dumps(), encoding="utf-8")
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> Recording:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RecordingError(f"no golden recording at {path}: record it first") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordingError(f"cannot read the golden recording {path}: {exc}") from exc
        try:
            header = data["header"]
            if header["format"] != FORMAT:
                raise RecordingError(
                    f"{path} is in recording format {header['format']!r}; this opcore reads "
                    f"format {FORMAT}: re-record it"
                )
            recording = cls(
                flow=str(header["flow"]),
                recorded_with=dict(header["recorded_with"]),
                recorded_at=str(header["recorded_at"]),
                exchanges=[Exchange.from_json(x) for x in data["exchanges"]],
                expected=dict(data.get("expected") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(
                f"the golden recording {path} is not in the expected shape ({type(exc).__name__}: "
                f"{exc}); re-record it rather than editing it by hand"
            ) from exc
        for i, exchange in enumerate(recording.exchanges, 1):
            if request_digest(exchange.request()) != exchange.digest:
                raise RecordingError(
                    f"{path}: exchange {i} ({exchange.task}) does not match its digest: the "
                    "recorded request was edited by hand; re-record the flow instead"
                )
        return recording


class GoldenProvider(ModelProvider):
    """Replays a recording, or records a real provider's answers (see the module docstring)."""

    name = "golden"

    def __init__(
        self,
        recording: Recording,
        *,
        inner: ModelProvider | None = None,
        source: Path | None = None,
        rerecord: str = RERECORD,
    ) -> None:
        self.recording = recording
        self._inner = inner
        self._source = source
        self._rerecord = rerecord
        self._lock = threading.Lock()
        self._used = [False] * len(recording.exchanges)
        self.misses: list[str] = []
        """Every replay miss's message, also for a caller that only sees the job fail."""

    @classmethod
    def replay(cls, path: Path, *, rerecord: str = RERECORD) -> GoldenProvider:
        """Answer from the recording at ``path``; raises :class:`RecordingError` if unusable."""
        return cls(Recording.load(path), source=path, rerecord=rerecord)

    @classmethod
    def record(
        cls, inner: ModelProvider, *, flow: str, recorded_with: Mapping[str, Any] | None = None
    ) -> GoldenProvider:
        """Pass requests to ``inner`` and keep them; ``recorded_with`` adds to the header
        (e.g. the endpoint, or a note that the answers are offline templates)."""
        header = {"provider": inner.name, "model": inner.model, **(recorded_with or {})}
        return cls(Recording(flow=flow, recorded_with=header, recorded_at=""), inner=inner)

    @property
    def mode(self) -> Mode:
        return "replay" if self._inner is None else "record"

    @property
    def model(self) -> str:
        return self.recording.model if self._inner is None else self._inner.model

    def model_for(self, request: ModelRequest) -> str:
        return self.model if self._inner is None else self._inner.model_for(request)

    def complete(self, request: ModelRequest) -> ModelResponse:
        if self._inner is not None:
            response = self._inner.complete(request)
            with self._lock:
                self.recording.exchanges.append(Exchange.of(request, response))
                self._used.append(True)
            return response
        key = request_digest(request)
        with self._lock:
            for i, exchange in enumerate(self.recording.exchanges):
                if not self._used[i] and exchange.task == request.task and exchange.digest == key:
                    self._used[i] = True
                    break
            else:
                message = self._miss(request, key)
                self.misses.append(message)
                raise ProviderRequestError(message)
        return ModelResponse(
            text=exchange.text,
            model=exchange.model,
            provider=self.name,
            usage=exchange.usage,
            latency_s=0.0,
            offline=exchange.offline,
        )

    def unused(self) -> list[Exchange]:
        """The recorded exchanges no request has asked for (yet)."""
        with self._lock:
            return [
                x for x, used in zip(self.recording.exchanges, self._used, strict=True) if not used
            ]

    def save(self, path: Path, *, expected: Mapping[str, Any]) -> Recording:
        """Write what was recorded, with ``expected``, to ``path`` (record mode only)."""
        if self._inner is None:
            raise RecordingError("only a recording GoldenProvider can save; this one replays")
        with self._lock:
            providers = sorted({x.provider for x in self.recording.exchanges})
            if providers:
                self.recording.recorded_with["provider"] = ", ".join(providers)
            self.recording.recorded_at = datetime.now(UTC).isoformat(timespec="seconds")
            self.recording.expected = dict(expected)
            self.recording.dump(path)
        return self.recording

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    def _miss(self, request: ModelRequest, key: str) -> str:
        where = f"the golden recording {self._source or 'of flow ' + repr(self.recording.flow)}"
        how = (
            f"If the change is intended, re-record: {self._rerecord.format(flow=self.recording.flow)} "
            "(against the model in OPCORE_LLM_BASE_URL / OPCORE_LLM_API_KEY / OPCORE_LLM_MODEL, "
            "or --offline for the offline templates)."
        )
        recorded = (
            f"recorded {self.recording.recorded_at or 'earlier'} with "
            f"{self.recording.recorded_with.get('provider', '?')} / {self.recording.model}"
        )
        same_task = [x for x in self.recording.exchanges if x.task == request.task]
        same_key = [x for x in same_task if x.digest == key]
        if same_key:
            return (
                f"{where} answered task {request.task!r} with this prompt {len(same_key)} time(s) "
                f"({recorded}); the flow now asks once more: it makes more model calls than "
                f"when it was recorded. {how}"
            )
        if not same_task:
            tasks = ", ".join(sorted({x.task for x in self.recording.exchanges})) or "none"
            return (
                f"{where} has no request for task {request.task!r} (recorded tasks: {tasks}; "
                f"{recorded}): the flow now makes a model call it did not make then. {how}"
            )
        unused = [
            x for x, used in zip(self.recording.exchanges, self._used, strict=True) if not used
        ]
        closest = next((x for x in unused if x.task == request.task), same_task[0])
        diff = list(
            difflib.unified_diff(
                _render(closest.request()),
                _render(request),
                "recorded prompt",
                "prompt now",
                lineterm="",
            )
        )
        if len(diff) > DIFF_LINES:
            diff = [*diff[:DIFF_LINES], f"… ({len(diff) - DIFF_LINES} more diff lines)"]
        shown = "\n".join(diff) or "(the messages are the same: the schema or sampling changed)"
        return (
            f"the prompt of task {request.task!r} changed since {where} was {recorded} "
            f"(digest {key[:12]}, recorded {closest.digest[:12]}). {how}\n{shown}"
        )


def _render(request: ModelRequest) -> list[str]:
    """A request as lines for a diff; JSON content is pretty-printed so a changed field shows."""
    lines: list[str] = []
    for m in request.messages:
        lines.append(f"[{m.role}]")
        try:
            parsed = json.loads(m.content)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict | list):
            lines += json.dumps(parsed, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
        else:
            lines += m.content.splitlines() or [""]
    lines.append(f"[schema {request.schema_name}]")
    lines += json.dumps(request.json_schema, indent=2, sort_keys=True).splitlines()
    lines.append(f"[temperature {request.temperature}, max_tokens {request.max_tokens}]")
    return lines
