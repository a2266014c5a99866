"""A decision trace: why a job did what it did, told from its events.

:func:`build` folds a job's correlated events (its own, its actions', its memories') into a
:class:`Trace`: what was asked, what was recalled, each model call (model, tokens, cost, cache
hit), each proposal with its flags, who decided it (a tap in which channel, or which policy
rule) and how long it waited, each connector call with its outcome, and the timings.
:func:`story` tells it in a few lines for a phone (``/trace``); :func:`tree` prints everything
in the terminal (``opcore trace``), each event under the action it belongs to; :func:`as_json`
is the same for tools (``opcore trace --json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from store import events as ev
from store import queries
from store.errors import AmbiguousIdError, NotFoundError
from store.queries import JobView, short_id

ICON = {
    "executed": "\u2705",
    "approved": "\u2611",
    "rejected": "\u274c",
    "expired": "\u231b",
    "failed": "\u26a0",
    "pending": "\u23f3",
    "superseded": "\u21aa",
    "compensated": "\u21a9",
    "discarded": "\U0001f5d1",
    "unknown": "\u2753",
}


@dataclass
class ModelCall:
    task: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    cached: bool
    offline: bool
    latency_ms: float


@dataclass
class ActionStory:
    action_id: str
    what: str  # connector.action
    summary: str
    flags: list[str]
    proposed_at: datetime
    status: str = "pending"
    decided_by: str = ""
    decided_via: str = ""  # "policy" or the channel of the tap
    decided_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    outcome: str = ""
    events: list[ev.RecordedEvent] = field(default_factory=list)

    @property
    def waited_s(self) -> float | None:
        if self.decided_at is None:
            return None
        return (self.decided_at - self.proposed_at).total_seconds()

    @property
    def run_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000


@dataclass
class Recall:
    query: str
    mode: str
    cached: bool
    memories: int
    facts: int
    top: list[str]


@dataclass
class Trace:
    job: JobView
    asked: str
    requested_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: str = ""
    recalls: list[Recall] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    models: list[ModelCall] = field(default_factory=list)
    actions: list[ActionStory] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    job_events: list[ev.RecordedEvent] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return sum(m.cost_usd for m in self.models)

    def action(self, action_id: str) -> ActionStory | None:
        return next((a for a in self.actions if a.action_id == action_id), None)


def build(job: JobView, events: Sequence[ev.RecordedEvent]) -> Trace:
    """The trace of ``job`` from its correlated events (log order). Pure."""
    trace = Trace(job=job, asked=job.text)
    actions: dict[str, ActionStory] = {}
    for event in events:
        d = event.data
        at = event.recorded_at
        action_id = getattr(d, "action_id", None)
        story = actions.get(action_id) if isinstance(action_id, str) else None
        if story is not None:
            story.events.append(event)
        match d:
            case ev.JobRequested():
                trace.requested_at, trace.asked = at, d.text or trace.asked
            case ev.JobStarted():
                trace.started_at = trace.started_at or at
            case ev.JobCompleted():
                trace.finished_at, trace.outcome = at, d.summary
            case ev.JobFailed():
                trace.finished_at = at
                trace.outcome = f"failed: {d.error_type}: {d.error}"
            case ev.JobAttemptFailed():
                trace.problems.append(f"attempt {d.attempt} failed: {d.error_type}: {d.error}")
            case ev.BudgetBlocked():
                trace.problems.append(
                    f"budget {d.scope} ({d.period}) stopped a call: ${d.spent_usd:.4f} of "
                    f"${d.limit_usd:.2f}"
                )
            case ev.MemoryRecalled():
                trace.recalls.append(
                    Recall(
                        query=d.query,
                        mode=d.mode,
                        cached=d.cached,
                        memories=len(d.hits),
                        facts=len(d.facts),
                        top=[str(h.get("preview", ""))[:70] for h in d.hits[:2]],
                    )
                )
            case ev.FactAsserted():
                trace.facts.append(f"{d.key} = {d.value}")
            case ev.ModelCalled():
                trace.models.append(
                    ModelCall(
                        task=d.task,
                        model=f"{d.provider}/{d.model}",
                        tokens_in=d.prompt_tokens,
                        tokens_out=d.completion_tokens,
                        cost_usd=d.cost_usd,
                        cached=d.cached,
                        offline=d.offline,
                        latency_ms=d.latency_ms,
                    )
                )
            case ev.ActionProposed():
                story = ActionStory(
                    action_id=d.action_id,
                    what=f"{d.connector}.{d.action}",
                    summary=d.summary,
                    flags=list(d.flags),
                    proposed_at=at,
                    events=[event],
                )
                actions[d.action_id] = story
                trace.actions.append(story)
            case ev.ApprovalDecided() if story is not None:
                story.status = d.decision
                story.decided_by, story.decided_via, story.decided_at = (
                    d.decided_by,
                    d.channel,
                    at,
                )
            case ev.ApprovalExpired() if story is not None:
                story.status, story.decided_at = "expired", at
            case ev.ActionSuperseded() if story is not None:
                story.status = "superseded"
            case ev.ActionStarted() if story is not None:
                story.started_at, story.attempts = story.started_at or at, d.attempt
            case ev.ActionExecuted() if story is not None:
                story.status, story.finished_at, story.outcome = "executed", at, d.summary
            case ev.ActionFailed() if story is not None:
                story.finished_at = at
                story.outcome = f"{d.error_type}: {d.error}"
                story.status = "failed" if not d.transient else story.status
            case ev.ActionOutcomeUnknown() if story is not None:
                story.status, story.outcome = "unknown", d.reason
            case ev.ActionDiscarded() if story is not None:
                story.status = "discarded"
            case ev.ActionCompensated() if story is not None:
                story.status, story.outcome = "compensated", f"undone: {d.summary}"
            case ev.QuestionAsked():
                trace.questions.append(f"asked you: {d.text[:120]}")
            case ev.QuestionAnswered():
                trace.questions.append(f"you answered {d.choice} ({d.answered_by})")
        if story is None and not isinstance(d, ev.ActionProposed):
            trace.job_events.append(event)
    return trace


def resolve(ref: str) -> tuple[JobView, str | None]:
    """A job, from its id or an action's (full or a unique prefix): (job, action id or None).
    Raises NotFoundError (or AmbiguousIdError) with the reason."""
    ref = ref.strip().split()[0] if ref.strip() else ""
    try:
        return queries.find_job(ref), None
    except AmbiguousIdError:
        raise
    except NotFoundError:
        try:
            action = queries.find_action(ref)
        except NotFoundError:
            raise NotFoundError(f"no job or action {ref!r}") from None
        return queries.get_job(action.job_id), action.action_id


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _decision(story: ActionStory) -> str:
    if not story.decided_by:
        return "waiting for you" if story.status == "pending" else story.status
    verb = "approved" if story.status not in {"rejected", "expired"} else story.status
    if story.decided_via == "policy":
        rule = story.decided_by.removeprefix("policy:")
        return f"{verb} by rule {rule}"
    waited = f" after {_duration(story.waited_s)}" if story.waited_s is not None else ""
    return f"{verb} by {story.decided_by} (tap in {story.decided_via}){waited}"


def _models_line(trace: Trace) -> str:
    if not trace.models:
        return "Model: no call"
    names = sorted({m.model for m in trace.models})
    tokens = sum(m.tokens_in + m.tokens_out for m in trace.models)
    hits = sum(m.cached for m in trace.models)
    offline = " (offline templates)" if all(m.offline for m in trace.models) else ""
    cache = f" \u00b7 {hits} cache hit(s)" if hits else ""
    return (
        f"Model: {len(trace.models)} call(s) \u00b7 {', '.join(names)}{offline} \u00b7 "
        f"{tokens:,} tokens \u00b7 ${trace.cost_usd:.4f}{cache}"
    )


def story(trace: Trace, *, focus: str | None = None) -> str:
    """The trace in a few lines for a phone; ``focus`` puts one action first."""
    job = trace.job
    total = ""
    last = max(
        (e.recorded_at for e in [*trace.job_events, *(e for a in trace.actions for e in a.events)]),
        default=None,
    )
    if trace.requested_at and last:
        total = f", {_duration((last - trace.requested_at).total_seconds())} end to end"
    lines = [f"\U0001f50e Job {job.short_id} \u00b7 {job.agent} \u00b7 {job.status}{total}"]
    lines.append(f"Asked: {trace.asked[:160]}")
    if trace.requested_at and trace.started_at:
        queued = (trace.started_at - trace.requested_at).total_seconds()
        lines.append(f"Queued {_duration(queued)} before a worker took it")
    for recall in trace.recalls:
        top = f": {recall.top[0]!r}" if recall.top else ""
        cached = ", cached" if recall.cached else ""
        lines.append(
            f"Recalled {recall.memories} memor{'y' if recall.memories == 1 else 'ies'}, "
            f"{recall.facts} fact(s) ({recall.mode}{cached}){top}"
        )
    lines.append(_models_line(trace))
    ordered = sorted(trace.actions, key=lambda a: a.action_id != focus)
    for story_ in ordered:
        icon = ICON.get(story_.status, "\u2022")
        lines.append(f"{icon} {story_.summary[:120]}")
        warnings = [f for f in story_.flags if f.startswith("\u26a0")]
        if warnings:
            lines.append(f"   flagged: {warnings[0][2:][:100]}")
        lines.append(f"   {_decision(story_)}")
        if story_.started_at is not None:
            ran = f" in {story_.run_ms:.0f} ms" if story_.run_ms is not None else ""
            tries = f", {story_.attempts} attempts" if story_.attempts > 1 else ""
            result = story_.outcome[:100] or "running"
            lines.append(f"   {story_.what}: {result}{ran}{tries}")
    lines += trace.questions[-3:]
    lines += [f"\u26a0 {p}" for p in trace.problems[-3:]]
    if trace.outcome:
        lines.append(f"Result: {trace.outcome[:200]}")
    lines.append(f"Full tree: opcore trace {job.short_id}")
    return "\n".join(lines)


def tree(trace: Trace, describe: Any) -> str:
    """Every event, the job's first and each action's under it; ``describe(event)`` words one."""
    job = trace.job
    events = [*trace.job_events, *(e for a in trace.actions for e in a.events)]
    if not events:
        return f"No events for job {job.short_id}."
    start = min(e.recorded_at for e in events)
    end = max(e.recorded_at for e in events)
    lines = [
        f"Trace of job {job.short_id} ({job.agent}): {job.status}, "
        f"{(end - start).total_seconds():.2f} s, {len(events)} events",
        f"  asked: {trace.asked[:200]}",
        f"  {_models_line(trace)}",
    ]

    def row(prefix: str, event: ev.RecordedEvent) -> str:
        offset = (event.recorded_at - start).total_seconds()
        return f"{prefix}+{offset:7.3f}s {event.type}  {describe(event)}"

    for event in trace.job_events:
        lines.append(row("\u251c\u2500 ", event))
    for n, story_ in enumerate(trace.actions):
        last = n == len(trace.actions) - 1
        branch, indent = ("\u2514\u2500 ", "   ") if last else ("\u251c\u2500 ", "\u2502  ")
        lines.append(
            f"{branch}action {short_id(story_.action_id)} {story_.what} "
            f"[{story_.status}] {story_.summary[:100]}"
        )
        lines += [f"{indent}   {flag}" for flag in story_.flags]
        lines += [row(indent, event) for event in story_.events]
    return "\n".join(lines)


def as_json(trace: Trace) -> dict[str, Any]:
    """The trace for tools: the story's facts, every action with its events."""

    def event_json(e: ev.RecordedEvent) -> dict[str, Any]:
        return {
            "position": e.position,
            "type": e.type,
            "recorded_at": e.recorded_at.isoformat(),
            "actor": e.metadata.actor,
            "data": e.data.model_dump(mode="json"),
        }

    return {
        "job": {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in asdict(trace.job).items()
        },
        "asked": trace.asked,
        "outcome": trace.outcome,
        "cost_usd": round(trace.cost_usd, 6),
        "recalls": [asdict(r) for r in trace.recalls],
        "models": [asdict(m) for m in trace.models],
        "actions": [
            {
                "action_id": a.action_id,
                "what": a.what,
                "summary": a.summary,
                "status": a.status,
                "flags": a.flags,
                "decided_by": a.decided_by,
                "decided_via": a.decided_via,
                "waited_s": a.waited_s,
                "run_ms": a.run_ms,
                "attempts": a.attempts,
                "outcome": a.outcome,
                "events": [event_json(e) for e in a.events],
            }
            for a in trace.actions
        ],
        "questions": trace.questions,
        "problems": trace.problems,
        "events": [event_json(e) for e in trace.job_events],
    }
