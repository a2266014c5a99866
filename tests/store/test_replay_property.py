"""Invariant 5, property-based: random but plausible histories replay to the live read models.

Each generated history is a few jobs, each walking a random path through its lifecycle
(requested, started, steps and model calls, contacts, proposals and their approvals,
execution, retries, questions to the operator, completion or failure), the jobs' appends
interleaved in a random order that keeps each job's own order. Now and then a walk takes a
step no healthy system takes (an action retried after a discard, a job completed after it
was cancelled): the projections must converge whatever the order. Appends go to the streams
production uses, with the job id as correlation id, and now and then a batch is redelivered
(same idempotency key) or a snapshot of the read models is taken between appends.

Properties: ``verify`` finds no difference between the live tables and a replay, and
``rebuild_projections`` (from the latest snapshot and from the first event) leaves every
projection table as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from store import Store, snapshots
from store import events as ev
from store.db import is_postgres
from store.models import ALL_MODELS, PROJECTION_MODELS
from store.projections import periods
from store.replay import verify

T = TypeVar("T")
Draw = Callable[[st.SearchStrategy[T]], T]
Tables = dict[str, dict[str, dict[str, Any]]]

AGENTS = ("lead", "scout")
# Free text as users and connectors write it (no NUL: PostgreSQL refuses it in text columns).
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
# JSON as agents and connectors produce it. Finite floats only: a NaN or an infinity makes the
# live read model differ from the replayed one (see
# test_non_finite_numbers_in_params_replay_to_the_live_action at the end of this file).
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
JSON_OBJECT = st.dictionaries(TEXT, JSON, max_size=3)
# Model costs: any finite amount (money columns are double precision on both backends).
COSTS = st.floats(min_value=0, max_value=2, allow_nan=False)
MAX_STEPS_PER_JOB = 20
EXAMPLES = {"sqlite": 60, "postgres": 15}
TRIED: dict[str, dict[str, int]] = {}  # backend -> examples, appends, events (reported at the end)


# What a history is ---------------------------------------------------------------------


@dataclass(frozen=True)
class Append:
    """One call to ``EventLog.append``."""

    stream: str
    events: tuple[ev.EventData | ev.NewEvent, ...]
    job_id: str
    actor: str

    def __str__(self) -> str:
        shown = []
        for item in self.events:
            data = item.data if isinstance(item, ev.NewEvent) else item
            key = f" [key={item.idempotency_key}]" if isinstance(item, ev.NewEvent) else ""
            shown.append(f"{data!r}{key}")
        return f"{self.stream} <- " + " + ".join(shown)


@dataclass(frozen=True)
class TakeSnapshot:
    def __str__(self) -> str:
        return "snapshots.take()"


Step = Append | TakeSnapshot


@dataclass(frozen=True)
class History:
    steps: tuple[Step, ...]

    def __repr__(self) -> str:
        lines = "\n".join(f"  {n:3d}. {step}" for n, step in enumerate(self.steps))
        return f"History(\n{lines}\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # what hypothesis prints for a falsifying example


# Generating a job's path through its lifecycle -----------------------------------------

# The healthy paths, by status: (operation, weight).
JOB_PATHS: dict[str, tuple[tuple[str, int], ...]] = {
    "queued": (("start", 5), ("cancel", 1), ("requeue", 1)),
    "running": (
        ("propose", 5),
        ("complete", 3),
        ("step", 2),
        ("model", 2),
        ("contact_new", 1),
        ("contact_recall", 1),
        ("attempt_fail", 1),
        ("fail", 1),
        ("cancel", 1),
        ("budget_blocked", 1),
    ),
    "retrying": (("start", 2), ("requeue", 2), ("fail", 1), ("cancel", 1)),
    "failed": (("retry", 1),),
}
ACTION_PATHS: dict[str, tuple[tuple[str, int], ...]] = {
    "awaiting_approval": (("approve", 5), ("reject", 2), ("expire", 1), ("reask", 1)),
    "approved": (("action_start", 5), ("action_requeue", 1), ("discard", 1)),
    "running": (
        ("execute", 4),
        ("action_attempt_fail", 2),
        ("action_fail", 2),
        ("unknown", 2),
        ("action_requeue", 1),
    ),
    "retrying": (("action_start", 2), ("action_requeue", 2), ("discard", 1)),
    "unknown": (("action_retry", 2), ("discard", 1)),
    "failed": (("action_retry", 2), ("discard", 1)),
    "executed": (("compensate", 2), ("compensation_failed", 1)),
}


@dataclass
class _Action:
    action_id: str
    token: str
    status: str = "awaiting_approval"


@dataclass
class _Question:
    token: str
    kind: str
    action_id: str | None = None
    answered: bool = False


@dataclass
class _World:
    """What every job's walk shares: unique ids, the contacts and the agents' state."""

    costs: st.SearchStrategy[float] = COSTS
    counter: int = 0
    contacts: list[str] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)

    def next(self) -> int:
        self.counter += 1
        return self.counter


@dataclass
class _Job:
    world: _World
    job_id: str
    agent: str
    status: str = "queued"
    attempts: int = 0
    actions: list[_Action] = field(default_factory=list)
    questions: list[_Question] = field(default_factory=list)
    script: list[Append] = field(default_factory=list)
    last_keyed: Append | None = None

    # The options at this point of the walk -------------------------------------------

    def plausible(self) -> list[tuple[str, str]]:
        """What a healthy system could append next: (operation, target), repeated by weight.
        Empty when the job's story is over."""
        ops: list[tuple[str, str]] = []
        for op, weight in JOB_PATHS.get(self.status, ()):
            if op == "contact_recall" and not self.world.contacts:
                continue
            ops += [(op, "")] * weight
        for action in self.actions:
            for op, weight in ACTION_PATHS.get(action.status, ()):
                ops += [(op, action.action_id)] * weight
        for question in self.questions:
            if not question.answered:
                ops += [(f"answer:{choice}", question.token) for choice in _choices(question.kind)]
        if ops:  # now and then, while the job is alive: the operator, a redelivery
            ops.append(("pause", "") if self.agent not in self.world.paused else ("resume", ""))
            if self.last_keyed is not None:
                ops.append(("redeliver", ""))
        return ops

    def unhealthy(self) -> list[tuple[str, str]]:
        """Any single event about this job or its actions, whatever their state."""
        ops = [
            (f"x_{name}", "")
            for name in (
                "start",
                "attempt_fail",
                "requeue",
                "retry",
                "cancel",
                "complete",
                "fail",
                "recall_missing",
            )
        ]
        for action in self.actions:
            ops += [
                (f"x_{name}", action.action_id)
                for name in (
                    "approve",
                    "reject_decision",
                    "rejected",
                    "expire",
                    "action_start",
                    "action_attempt_fail",
                    "action_requeue",
                    "unknown",
                    "execute",
                    "action_fail",
                    "action_retry",
                    "discard",
                    "compensate",
                )
            ]
        ops += [("x_answer", q.token) for q in self.questions]
        return ops

    # Emitting the events of one operation ---------------------------------------------

    def emit(self, op: str, target: str, draw: Draw[Any]) -> None:
        n = self.world.next()
        j = self.job_id
        action = next((a for a in self.actions if a.action_id == target), None)
        a = target
        match op:
            case "start" | "x_start":
                self.attempts += 1
                self._job("worker:w1", ev.JobStarted(job_id=j, worker="w1", attempt=self.attempts))
            case "attempt_fail" | "x_attempt_fail":
                retry_in = draw(st.sampled_from([0.25, 1.5, 30.0, 3600.0]))
                self._job(
                    "worker:w1",
                    ev.JobAttemptFailed(
                        job_id=j,
                        attempt=self.attempts,
                        error_type="TimeoutError",
                        error=draw(TEXT),
                        retry_in_s=retry_in,
                    ),
                )
            case "requeue" | "x_requeue":
                self._job("reconciler", ev.JobRequeued(job_id=j, reason="not moving"))
            case "retry" | "x_retry":
                self._job("operator", ev.JobRetried(job_id=j, by="operator"))
            case "cancel" | "x_cancel":
                self._job("operator", ev.JobCancelled(job_id=j, by="operator"))
            case "complete" | "x_complete":
                self._job(
                    "worker:w1",
                    ev.JobCompleted(job_id=j, summary=draw(TEXT), proposals=len(self.actions)),
                )
            case "fail" | "x_fail":
                failed = ev.JobFailed(
                    job_id=j,
                    error_type="AgentError",
                    error=draw(TEXT),
                    transient=draw(st.booleans()),
                    attempts=max(self.attempts, 1),
                )
                if op == "fail":
                    self._job("worker:w1", failed, self._ask("job_failed", None))
                else:
                    self._job("worker:w1", failed)
            case "step":
                self._job(
                    "worker:w1",
                    ev.NewEvent(
                        ev.StepCompleted(job_id=j, step=f"step{n}", result=draw(JSON_OBJECT)),
                        idempotency_key=f"{j}:step{n}",
                    ),
                    keyed=True,
                )
            case "model":
                cost = draw(self.world.costs)
                self._job(
                    "worker:w1",
                    ev.ModelCalled(
                        job_id=j,
                        task="draft",
                        provider=draw(st.sampled_from(["offline", "openai"])),
                        model="m",
                        prompt_tokens=draw(st.integers(0, 5000)),
                        completion_tokens=draw(st.integers(0, 2000)),
                        latency_ms=12.5,
                        offline=False,
                        agent=draw(st.sampled_from([self.agent, ""])),
                        estimated_usd=cost,
                        cost_usd=cost,
                        contact_id=draw(st.sampled_from([None, *self.world.contacts[-2:]])),
                        cached=draw(st.booleans()),
                    ),
                )
                if draw(st.booleans()):  # the spend crossed 80 % of a budget
                    self.emit("budget_warning", "", draw)
            case "budget_warning":
                # The period of today's appends (a history straddling midnight warns a
                # period with no spend yet: the warning is then a no-op, live and replayed).
                day, month = periods(datetime.now(UTC).replace(tzinfo=None))
                self._job(
                    "worker:w1",
                    ev.BudgetWarning(
                        job_id=j,
                        scope=draw(st.sampled_from(["workspace", f"agent:{self.agent}"])),
                        period=draw(st.sampled_from([day, month])),
                        limit_usd=10.0,
                        spent_usd=8.5,
                    ),
                )
            case "budget_blocked":
                day, _ = periods(datetime.now(UTC).replace(tzinfo=None))
                blocked = ev.BudgetBlocked(
                    job_id=j,
                    agent=self.agent,
                    scope="workspace",
                    period=day,
                    limit_usd=10.0,
                    spent_usd=9.75,
                    estimate_usd=0.5,
                )
                self._job("worker:w1", blocked, self._ask("budget", None))
            case "contact_new":
                cid = f"c{n}"
                self.world.contacts.append(cid)
                email = draw(st.sampled_from([f"ann.{n}@example.com", f"Ann.{n}@Example.COM"]))
                self._append(
                    ev.contact_stream(cid),
                    "worker:w1",
                    ev.NewEvent(
                        ev.ContactCreated(
                            contact_id=cid, name=draw(TEXT), email=email, company=draw(TEXT)
                        ),
                        idempotency_key=f"contact:{email.lower()}",
                    ),
                    keyed=True,
                )
            case "contact_recall":
                cid = draw(st.sampled_from(self.world.contacts))
                self._append(
                    ev.contact_stream(cid),
                    "worker:w1",
                    ev.NewEvent(
                        ev.ContactRecalled(contact_id=cid, job_id=j),
                        idempotency_key=f"recall:{cid}:{j}:{n}",
                    ),
                    keyed=True,
                )
            case "x_recall_missing":
                self._append(
                    ev.contact_stream(f"gone{n}"),
                    "worker:w1",
                    ev.ContactRecalled(contact_id=f"gone{n}", job_id=j),
                )
            case "propose":
                new = _Action(action_id=f"a{n}", token=f"t{n}")
                self.actions.append(new)
                self._append(
                    ev.action_stream(new.action_id),
                    "worker:w1",
                    ev.NewEvent(
                        ev.ActionProposed(
                            action_id=new.action_id,
                            job_id=j,
                            connector="email",
                            action="send_email",
                            params=draw(JSON_OBJECT),
                            idempotency_key=f"{j}:proposal:{n}",
                            summary=draw(TEXT),
                            contact_id=draw(st.sampled_from([None, *self.world.contacts[-1:]])),
                        ),
                        idempotency_key=f"{j}:proposal:{n}",
                    ),
                    _approval_requested(new, j, n),
                    keyed=True,
                )
            case "reask":
                assert action is not None
                action.token = f"t{n}"
                self._action(a, "worker:w1", _approval_requested(action, j, n))
            case "approve" | "x_approve":
                token = action.token if action else ""
                healthy = op == "approve"
                self._action(
                    a, "operator", _decision(a, token, "approved", keyed=healthy), keyed=healthy
                )
            case "reject":
                token = action.token if action else ""
                rejected = ev.ActionRejected(action_id=a, decided_by="operator")
                if draw(st.booleans()):  # one batch, as agents/approvals.py appends it
                    self._action(a, "operator", _decision(a, token, "rejected"), rejected)
                else:
                    self._action(a, "operator", _decision(a, token, "rejected"))
                    self._action(a, "operator", rejected)
            case "x_reject_decision":
                token = action.token if action else ""
                self._action(a, "operator", _decision(a, token, "rejected", keyed=False))
            case "x_rejected":
                self._action(a, "operator", ev.ActionRejected(action_id=a, decided_by="operator"))
            case "expire" | "x_expire":
                token = action.token if action else ""
                self._action(a, "operator", ev.ApprovalExpired(action_id=a, token=token))
            case "action_start" | "x_action_start":
                self._action(a, "worker:w2", ev.ActionStarted(action_id=a, attempt=n, worker="w2"))
            case "action_attempt_fail" | "x_action_attempt_fail":
                self._action(
                    a,
                    "worker:w2",
                    ev.ActionAttemptFailed(
                        action_id=a,
                        attempt=n,
                        error_type="TransientConnectorError",
                        error="503",
                        retry_in_s=draw(st.sampled_from([0.5, 2.0, 60.0])),
                    ),
                )
            case "action_requeue" | "x_action_requeue":
                self._action(a, "reconciler", ev.ActionRequeued(action_id=a, reason="not moving"))
            case "unknown":
                self._action(
                    a,
                    "worker:w2",
                    ev.ActionOutcomeUnknown(action_id=a, reason=draw(TEXT)),
                    self._ask("action_unknown", a),
                )
            case "x_unknown":
                self._action(
                    a, "worker:w2", ev.ActionOutcomeUnknown(action_id=a, reason="stopped mid-call")
                )
            case "execute" | "x_execute":
                self._action(
                    a,
                    "worker:w2",
                    ev.ActionExecuted(action_id=a, summary=draw(TEXT), details=draw(JSON_OBJECT)),
                )
            case "action_fail":
                self._action(
                    a,
                    "worker:w2",
                    ev.ActionFailed(action_id=a, error_type="ConnectorError", error=draw(TEXT)),
                    self._ask("action_failed", a),
                )
            case "x_action_fail":
                self._action(
                    a,
                    "worker:w2",
                    ev.ActionFailed(action_id=a, error_type="ConnectorError", error=draw(TEXT)),
                )
            case "action_retry" | "x_action_retry":
                self._action(a, "operator", ev.ActionRetried(action_id=a, by="operator"))
            case "discard" | "x_discard":
                self._action(a, "operator", ev.ActionDiscarded(action_id=a, by="operator"))
            case "compensate" | "x_compensate":
                self._action(
                    a,
                    "operator",
                    ev.ActionCompensated(
                        action_id=a, compensation="recall_email", summary="recalled", reason="undo"
                    ),
                )
            case "compensation_failed":
                self._action(
                    a,
                    "operator",
                    ev.ActionCompensationFailed(
                        action_id=a,
                        compensation="recall_email",
                        error_type="ConnectorError",
                        error="too late",
                    ),
                )
            case "pause":
                self.world.paused.add(self.agent)
                self._append(
                    ev.agent_stream(self.agent),
                    "operator",
                    ev.AgentPaused(agent=self.agent, by="operator"),
                )
            case "resume":
                self.world.paused.discard(self.agent)
                self._append(
                    ev.agent_stream(self.agent),
                    "operator",
                    ev.AgentResumed(agent=self.agent, by="operator"),
                )
            case "x_answer":
                question = next(q for q in self.questions if q.token == target)
                self._answer(question, "", [])
            case "redeliver":
                assert self.last_keyed is not None
                self.script.append(self.last_keyed)
            case _ if op.startswith("answer:"):
                question = next(q for q in self.questions if q.token == target)
                self._answer_as_production(question, op.removeprefix("answer:"))
            case _:
                raise AssertionError(f"unknown operation {op!r}")

    def _answer_as_production(self, question: _Question, choice: str) -> None:
        """The answer and its consequence in one batch, as agents/questions.py appends them."""
        j, a = self.job_id, question.action_id
        consequence: list[ev.EventData] = []
        match question.kind, choice:
            case "budget", "raise":
                consequence = [
                    ev.BudgetOverride(job_id=j, usd=0.75, by="operator"),
                    ev.JobRetried(job_id=j, by="operator"),
                ]
            case "budget", "skip":
                consequence = [ev.JobCancelled(job_id=j, by="operator")]
            case "budget", "pause":
                if self.agent not in self.world.paused:
                    self.emit("pause", "", _no_draw)
                consequence = [ev.JobRetried(job_id=j, by="operator")]
            case "job_failed", "retry":
                consequence = [ev.JobRetried(job_id=j, by="operator")]
            case _, "retry" if a is not None:
                consequence = [ev.ActionRetried(action_id=a, by="operator")]
            case _, "discard" if a is not None:
                consequence = [ev.ActionDiscarded(action_id=a, by="operator")]
            case _, "done" if a is not None:
                consequence = [
                    ev.ActionExecuted(
                        action_id=a, summary="Marked as done by operator", details={"manual": True}
                    )
                ]
        self._answer(question, choice, consequence)

    def _answer(self, question: _Question, choice: str, consequence: list[ev.EventData]) -> None:
        question.answered = True
        answered = ev.QuestionAnswered(
            token=question.token,
            choice=choice or "retry",
            answered_by="operator",
            channel="console",
        )
        stream = (
            ev.action_stream(question.action_id)
            if question.action_id
            else ev.job_stream(self.job_id)
        )
        first: ev.EventData | ev.NewEvent = answered
        if choice:  # the first answer is keyed; an unhealthy second one is not
            first = ev.NewEvent(answered, idempotency_key=f"answer:{question.token}")
        self._append(stream, "operator", first, *consequence, keyed=bool(choice))

    # Appending, and following the statuses the way the read models do ----------------

    def _ask(self, kind: str, action_id: str | None) -> ev.QuestionAsked:
        question = _Question(token=f"q{self.world.next()}", kind=kind, action_id=action_id)
        self.questions.append(question)
        return ev.QuestionAsked(
            token=question.token,
            kind=kind,  # type: ignore[arg-type]
            job_id=self.job_id,
            action_id=action_id,
            text=f"what now? ({kind})",
            choices=_choices(kind),
        )

    def _job(self, actor: str, *events: ev.EventData | ev.NewEvent, keyed: bool = False) -> None:
        self._append(ev.job_stream(self.job_id), actor, *events, keyed=keyed)

    def _action(
        self, action_id: str, actor: str, *events: ev.EventData | ev.NewEvent, keyed: bool = False
    ) -> None:
        self._append(ev.action_stream(action_id), actor, *events, keyed=keyed)

    def _append(
        self, stream: str, actor: str, *events: ev.EventData | ev.NewEvent, keyed: bool = False
    ) -> None:
        step = Append(stream=stream, events=events, job_id=self.job_id, actor=actor)
        self.script.append(step)
        if keyed:
            self.last_keyed = step
        for item in events:
            self._follow(item.data if isinstance(item, ev.NewEvent) else item)

    def _follow(self, data: ev.EventData) -> None:
        job_status = {
            ev.JobStarted: "running",
            ev.JobAttemptFailed: "retrying",
            ev.JobRequeued: "queued",
            ev.JobRetried: "queued",
            ev.JobCancelled: "cancelled",
            ev.JobCompleted: "done",
            ev.JobFailed: "failed",
            ev.BudgetBlocked: "blocked",
        }.get(type(data))
        if job_status is not None:
            self.status = job_status
            return
        action_id = getattr(data, "action_id", None)
        action = next((x for x in self.actions if x.action_id == action_id), None)
        if action is None or isinstance(data, ev.QuestionAsked | ev.QuestionAnswered):
            return
        match data:
            case ev.ApprovalRequested():
                action.status = "awaiting_approval"
            case ev.ApprovalDecided(decision="approved"):
                action.status = "approved"
            case ev.ActionRequeued() if action.status in {"approved", "retrying"}:
                action.status = "approved"
            case ev.ActionRetried():
                action.status = "approved"
            case _:
                action.status = {
                    ev.ActionRejected: "rejected",
                    ev.ApprovalExpired: "expired",
                    ev.ActionStarted: "running",
                    ev.ActionAttemptFailed: "retrying",
                    ev.ActionOutcomeUnknown: "unknown",
                    ev.ActionExecuted: "executed",
                    ev.ActionFailed: "failed",
                    ev.ActionDiscarded: "discarded",
                    ev.ActionCompensated: "compensated",
                }.get(type(data), action.status)


def _no_draw(strategy: st.SearchStrategy[T]) -> T:
    raise AssertionError("this operation draws nothing")


def _choices(kind: str) -> list[str]:
    return {
        "action_unknown": ["done", "retry", "discard"],
        "action_failed": ["retry", "discard"],
        "job_failed": ["retry", "discard"],
        "budget": ["raise", "skip", "pause"],
    }[kind]


def _approval_requested(action: _Action, job_id: str, n: int) -> ev.ApprovalRequested:
    return ev.ApprovalRequested(
        action_id=action.action_id,
        job_id=job_id,
        token=action.token,
        expires_at=datetime(2031, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
    )


def _decision(action_id: str, token: str, decision: str, *, keyed: bool = True) -> ev.NewEvent:
    """The decision, keyed as agents/approvals.py keys it (an unhealthy extra one is not)."""
    return ev.NewEvent(
        ev.ApprovalDecided(
            action_id=action_id,
            token=token,
            decision=decision,  # type: ignore[arg-type]
            decided_by="operator",
            channel="console",
        ),
        idempotency_key=f"decision:{action_id}:{token}" if keyed else None,
    )


def _walk(draw: Draw[Any], world: _World, job_id: str) -> list[Append]:
    job = _Job(world=world, job_id=job_id, agent=draw(st.sampled_from(AGENTS)))
    job._job(
        "console:local",
        ev.JobRequested(
            job_id=job_id,
            agent=job.agent,
            input=draw(JSON_OBJECT),
            text=draw(TEXT),
            channel="console",
            chat_id="local",
            requested_by="console:local",
        ),
    )
    for _ in range(draw(st.integers(0, MAX_STEPS_PER_JOB))):
        # Shrinks towards the healthy path: one step in eight, any event at all.
        unhealthy = draw(st.integers(0, 7)) == 7
        options = job.unhealthy() if unhealthy else job.plausible()
        if not options:
            break
        op, target = draw(st.sampled_from(options))
        job.emit(op, target, draw)
    return job.script


@st.composite
def histories(draw: Draw[Any], *, costs: st.SearchStrategy[float] = COSTS) -> History:
    world = _World(costs=costs)
    scripts = [_walk(draw, world, f"job{n}") for n in range(draw(st.integers(1, 4)))]
    snapshots_taken = draw(st.integers(0, 2))
    # Interleave the jobs: a random order of job indices (-1: a snapshot), each job's own
    # appends staying in their order.
    order = draw(
        st.permutations(
            [i for i, script in enumerate(scripts) for _ in script] + [-1] * snapshots_taken
        )
    )
    cursors = [0] * len(scripts)
    steps: list[Step] = []
    for i in order:
        if i < 0:
            steps.append(TakeSnapshot())
            continue
        steps.append(scripts[i][cursors[i]])
        cursors[i] += 1
    return History(tuple(steps))


# The properties ------------------------------------------------------------------------


def _tables() -> Tables:
    """Every projection table's rows, by primary key."""
    out: Tables = {}
    for model in PROJECTION_MODELS:
        pk: str = model._meta.primary_key.name  # type: ignore[union-attr]
        rows = cast(list[dict[str, Any]], list(model.select().dicts()))
        out[model._meta.table_name] = {str(row[pk]): row for row in rows}
    return out


def _table_differences(before: Tables, after: Tables) -> list[str]:
    lines = []
    for table, rows in before.items():
        for key in sorted(set(rows) | set(after[table])):
            old, new = rows.get(key), after[table].get(key)
            if old != new:
                lines.append(f"{table}[{key}]: before={old!r} after={new!r}")
    return lines


def _play(store: Store, history: History, counts: dict[str, int]) -> None:
    for step in history.steps:
        if isinstance(step, TakeSnapshot):
            snapshots.take(store.db)
            continue
        store.log.append(
            step.stream,
            list(step.events),
            metadata=ev.Metadata(actor=step.actor, correlation_id=step.job_id),
        )
        counts["appends"] += 1
        counts["events"] += len(step.events)


def test_random_histories_replay_to_the_live_read_models(store: Store) -> None:
    backend = "postgres" if is_postgres(store.db) else "sqlite"
    counts = TRIED.setdefault(backend, {"examples": 0, "appends": 0, "events": 0})

    # The property is a closure over the (function-scoped) store, so each backend gets its
    # own example count; every example starts from empty tables.
    @settings(max_examples=EXAMPLES[backend], deadline=None)
    @given(history=histories(costs=COSTS))
    def replay_converges(history: History) -> None:
        for model in ALL_MODELS:
            model.delete().execute()
        counts["examples"] += 1
        _play(store, history, counts)

        report = verify(store.log)
        assert report.ok, "verify found differences:\n" + "\n".join(map(str, report.differences))

        live = _tables()
        for from_snapshot in (True, False):
            store.log.rebuild_projections(from_snapshot=from_snapshot)
            changed = _table_differences(live, _tables())
            assert not changed, (
                f"rebuild_projections(from_snapshot={from_snapshot}) changed the read models:\n"
                + "\n".join(changed)
            )

    replay_converges()
    print(
        f"\nreplay property ({backend}): {counts['examples']} histories tried, "
        f"{counts['appends']} appends, {counts['events']} events"
    )


# Known divergences, each the smallest history that shows it -----------------------------
# Strict xfails: when store/ is fixed they pass, and pytest asks for the marker to go.


def _meta(job_id: str = "job0") -> ev.Metadata:
    return ev.Metadata(actor="worker:w1", correlation_id=job_id)


def _model_called(job_id: str, **fields: Any) -> ev.ModelCalled:
    values: dict[str, Any] = {
        "job_id": job_id,
        "task": "draft",
        "provider": "openai",
        "model": "m",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "latency_ms": 12.5,
        "offline": False,
        "agent": "lead",
    }
    return ev.ModelCalled(**(values | fields))


def test_model_costs_replay_to_the_live_spend(store: Store, request: pytest.FixtureRequest) -> None:
    store.log.append(ev.job_stream("job0"), [_job_requested("job0")], metadata=_meta())
    for cost in (0.521484375, 0.0123):
        store.log.append(
            ev.job_stream("job0"), [_model_called("job0", cost_usd=cost)], metadata=_meta()
        )
    report = verify(store.log)
    assert report.ok, "\n".join(map(str, report.differences))
    live = _tables()
    store.log.rebuild_projections(from_snapshot=False)
    assert not _table_differences(live, _tables())


def test_non_finite_numbers_are_refused_before_they_reach_the_log() -> None:
    with pytest.raises(ValidationError, match="non-finite"):
        ev.ActionProposed(
            action_id="a1",
            job_id="job0",
            connector="email",
            action="send_email",
            params={"amount": float("nan")},
            idempotency_key="job0:proposal:1",
            summary="s",
        )
    with pytest.raises(ValidationError):
        _model_called("job0", latency_ms=float("nan"))
    with pytest.raises(ValidationError):
        _model_called("job0", cost_usd=float("inf"))


def _job_requested(job_id: str) -> ev.JobRequested:
    return ev.JobRequested(
        job_id=job_id,
        agent="lead",
        input={},
        text="/lead Ann",
        channel="console",
        chat_id="local",
        requested_by="console:local",
    )
