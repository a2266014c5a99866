"""Invariant 5, property-based: whatever the history, replaying the log gives the live read
models. Histories are random interleavings of every event type across a few jobs, including
orders no healthy system produces (a retry after a discard, a completion after a cancel)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Store
from store import events as ev
from store.models import ALL_MODELS, PROJECTION_MODELS
from store.replay import verify

OPS = [
    "started",
    "attempt_failed",
    "requeued",
    "retried",
    "cancelled",
    "step",
    "model_called",
    "contact",
    "completed",
    "failed",
    "propose",
    "approve",
    "reject",
    "expire",
    "action_started",
    "action_attempt_failed",
    "action_requeued",
    "unknown",
    "executed",
    "action_failed",
    "action_retried",
    "discarded",
    "compensated",
    "question",
    "answer",
    "pause",
    "resume",
]
TRIED = {"examples": 0, "events": 0}


class History:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.requested: set[int] = set()
        self.actions: dict[int, list[str]] = {}
        self.questions: dict[int, list[str]] = {}
        self.counter = 0

    def append(self, stream: str, job: int, *events: ev.EventData) -> None:
        self.store.log.append(
            stream, list(events), metadata=ev.Metadata(actor="prop", correlation_id=f"j{job}")
        )
        TRIED["events"] += len(events)

    def apply(self, job: int, op: str) -> None:
        jid = f"j{job}"
        js = ev.job_stream(jid)
        if job not in self.requested:
            self.requested.add(job)
            self.append(
                js,
                job,
                ev.JobRequested(
                    job_id=jid,
                    agent="lead",
                    input={},
                    text="t",
                    channel="console",
                    chat_id="c",
                    requested_by="console:local",
                ),
            )
        self.counter += 1
        n = self.counter
        needs_action = op.startswith("action") or op in {
            "approve",
            "reject",
            "expire",
            "unknown",
            "executed",
            "discarded",
            "compensated",
        }
        if needs_action and not self.actions.get(job):
            self.apply(job, "propose")
        aid = self.actions.get(job, [""])[-1]
        at = ev.action_stream(aid) if aid else ""
        match op:
            case "started":
                self.append(js, job, ev.JobStarted(job_id=jid, worker="w", attempt=n))
            case "attempt_failed":
                self.append(
                    js,
                    job,
                    ev.JobAttemptFailed(
                        job_id=jid, attempt=n, error_type="E", error="e", retry_in_s=1.5
                    ),
                )
            case "requeued":
                self.append(js, job, ev.JobRequeued(job_id=jid, reason="r"))
            case "retried":
                self.append(js, job, ev.JobRetried(job_id=jid, by="o"))
            case "cancelled":
                self.append(js, job, ev.JobCancelled(job_id=jid, by="o"))
            case "step":
                self.append(js, job, ev.StepCompleted(job_id=jid, step=f"s{n}", result={"n": n}))
            case "model_called":
                self.append(
                    js,
                    job,
                    ev.ModelCalled(
                        job_id=jid,
                        task="t",
                        provider="p",
                        model="m",
                        prompt_tokens=n,
                        completion_tokens=2,
                        latency_ms=1.0,
                        offline=True,
                    ),
                )
            case "contact":
                cid = f"c{n}"
                self.append(
                    ev.contact_stream(cid),
                    job,
                    ev.ContactCreated(
                        contact_id=cid, name="N", email=f"n{n}@x.example", company="X"
                    ),
                    ev.ContactRecalled(contact_id=cid, job_id=jid),
                )
            case "completed":
                self.append(js, job, ev.JobCompleted(job_id=jid, summary="s", proposals=1))
            case "failed":
                self.append(
                    js, job, ev.JobFailed(job_id=jid, error_type="E", error="e", attempts=2)
                )
            case "propose":
                new = f"a{n}"
                self.actions.setdefault(job, []).append(new)
                self.append(
                    ev.action_stream(new),
                    job,
                    ev.ActionProposed(
                        action_id=new,
                        job_id=jid,
                        connector="email",
                        action="send_email",
                        params={"n": n},
                        idempotency_key=f"k{n}",
                        summary="s",
                    ),
                    ev.ApprovalRequested(
                        action_id=new,
                        job_id=jid,
                        token=f"t{new}",
                        expires_at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
                    ),
                )
            case "approve":
                self.append(
                    at,
                    job,
                    ev.ApprovalDecided(
                        action_id=aid,
                        token=f"t{aid}",
                        decision="approved",
                        decided_by="o",
                        channel="console",
                    ),
                )
            case "reject":
                self.append(
                    at,
                    job,
                    ev.ApprovalDecided(
                        action_id=aid,
                        token=f"t{aid}",
                        decision="rejected",
                        decided_by="o",
                        channel="console",
                    ),
                    ev.ActionRejected(action_id=aid, decided_by="o"),
                )
            case "expire":
                self.append(at, job, ev.ApprovalExpired(action_id=aid, token=f"t{aid}"))
            case "action_started":
                self.append(at, job, ev.ActionStarted(action_id=aid, attempt=n, worker="w"))
            case "action_attempt_failed":
                self.append(
                    at,
                    job,
                    ev.ActionAttemptFailed(
                        action_id=aid, attempt=n, error_type="E", error="e", retry_in_s=0.5
                    ),
                )
            case "action_requeued":
                self.append(at, job, ev.ActionRequeued(action_id=aid, reason="r"))
            case "unknown":
                self.append(at, job, ev.ActionOutcomeUnknown(action_id=aid, reason="r"))
            case "executed":
                self.append(
                    at, job, ev.ActionExecuted(action_id=aid, summary="sent", details={"n": n})
                )
            case "action_failed":
                self.append(at, job, ev.ActionFailed(action_id=aid, error_type="E", error="e"))
            case "action_retried":
                self.append(at, job, ev.ActionRetried(action_id=aid, by="o"))
            case "discarded":
                self.append(at, job, ev.ActionDiscarded(action_id=aid, by="o"))
            case "compensated":
                self.append(
                    at,
                    job,
                    ev.ActionCompensated(
                        action_id=aid, compensation="undo", summary="u", reason="r"
                    ),
                )
            case "question":
                token = f"q{n}"
                self.questions.setdefault(job, []).append(token)
                self.append(
                    js,
                    job,
                    ev.QuestionAsked(
                        token=token,
                        kind="job_failed",
                        job_id=jid,
                        text="t",
                        choices=["retry", "discard"],
                    ),
                )
            case "answer":
                if self.questions.get(job):
                    self.append(
                        js,
                        job,
                        ev.QuestionAnswered(
                            token=self.questions[job][-1],
                            choice="retry",
                            answered_by="o",
                            channel="console",
                        ),
                    )
            case "pause":
                self.append(ev.agent_stream("lead"), job, ev.AgentPaused(agent="lead", by="o"))
            case "resume":
                self.append(ev.agent_stream("lead"), job, ev.AgentResumed(agent="lead", by="o"))


def snapshot() -> dict[str, list[dict[str, Any]]]:
    return {
        m._meta.table_name: sorted((dict(r) for r in m.select().dicts()), key=repr)  # type: ignore[call-overload]
        for m in PROJECTION_MODELS
    }


histories = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(OPS)), min_size=1, max_size=40)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=histories)
def test_any_history_replays_to_the_live_read_models(
    store: Store, steps: list[tuple[int, str]]
) -> None:
    for model in ALL_MODELS:
        model.delete().execute()
    history = History(store)
    for job, op in steps:
        history.apply(job, op)
    TRIED["examples"] += 1
    report = verify(store.log)
    assert report.ok, "\n".join(str(d) for d in report.differences)
    before = snapshot()
    store.log.rebuild_projections(from_snapshot=False)
    assert snapshot() == before


def test_report_how_many_histories_were_tried() -> None:
    print(f"\nreplay property: {TRIED['examples']} histories, {TRIED['events']} events tried")
    assert TRIED["examples"] > 0
