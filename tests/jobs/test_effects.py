"""Invariant 2: every external effect happens at most once, whatever is redelivered."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from agents.retry import RetryPolicy
from agents.signals import RetryLater
from connectors.base import ActionResult, ActionSpec, Connector
from connectors.email import EmailConnector, OutboxDelivery
from connectors.errors import PermanentConnectorError, TransientConnectorError
from jobs.effects import Effects, execute_action
from store import Store, queries
from store import events as ev
from tests.builders import approve, propose_action, request_job

META = ev.Metadata(actor="test", correlation_id="j1")


class Params(BaseModel):
    n: int = 0


class CountingConnector(Connector):
    """Counts real effects; can be told to fail."""

    name = "counting"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "poke": ActionSpec("poke", "write", "poke", Params)
    }

    def __init__(
        self, *, fail: Exception | None = None, slow: threading.Event | None = None
    ) -> None:
        self.effects: list[str] = []
        self.fail = fail
        self.slow = slow

    def execute(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult:
        if self.slow is not None:
            self.slow.wait(5)
        if self.fail is not None:
            raise self.fail
        self.effects.append(idempotency_key)
        return ActionResult("poked", {"key": idempotency_key})


def propose(
    store: Store,
    *,
    connector: str = "counting",
    action: str = "poke",
    params: dict[str, Any] | None = None,
    approved: bool = True,
) -> str:
    request_job(store)
    propose_action(store, connector=connector, action=action, params=params or {"n": 1})
    if approved:
        approve(store)
    return "a1"


def test_an_approved_action_runs_once_and_a_redelivery_does_nothing(store: Store) -> None:
    connector = CountingConnector()
    action_id = propose(store)
    assert execute_action(store.log, {"counting": connector}, action_id) == "executed"
    assert execute_action(store.log, {"counting": connector}, action_id) == "executed"
    assert connector.effects == ["j1:proposal:1"]
    types = [e.type for e in store.log.read_stream("action-a1")]
    assert types[-2:] == ["ActionStarted", "ActionExecuted"]


def test_an_action_that_was_not_approved_is_never_executed(store: Store) -> None:
    connector = CountingConnector()
    action_id = propose(store, approved=False)
    assert execute_action(store.log, {"counting": connector}, action_id) == "awaiting_approval"
    assert connector.effects == []


def test_two_workers_racing_for_one_action_cause_one_effect(store: Store) -> None:
    gate = threading.Event()
    connector = CountingConnector(slow=gate)
    action_id = propose(store)
    results: list[str] = []

    def worker() -> None:
        results.append(execute_action(store.log, {"counting": connector}, action_id))
        store.db.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(connector.effects) == 1
    assert queries.get_action(action_id).status == "executed"


def effects(connector: Connector, store: Store, *, max_retries: int = 2) -> Effects:
    return Effects(
        log=store.log,
        connectors={connector.name: connector},
        retry=RetryPolicy(max_retries=max_retries, min_backoff_ms=100, max_backoff_ms=1000),
    )


def test_a_transient_connector_failure_is_retried_with_backoff_and_then_succeeds(
    store: Store,
) -> None:
    connector = CountingConnector(fail=TransientConnectorError("smtp down"))
    action_id = propose(store)
    runner = effects(connector, store)
    with pytest.raises(RetryLater) as signal:
        runner.execute(action_id)
    assert 50 <= signal.value.delay_ms <= 100
    assert queries.get_action(action_id).status == "retrying"
    connector.fail = None
    assert runner.execute(action_id) == "executed"
    assert connector.effects == ["j1:proposal:1"]
    types = [e.type for e in store.log.read_stream("action-a1")]
    assert types[-4:] == ["ActionStarted", "ActionAttemptFailed", "ActionStarted", "ActionExecuted"]


def test_after_the_last_retry_the_action_fails_with_one_question(store: Store) -> None:
    connector = CountingConnector(fail=TransientConnectorError("smtp down"))
    action_id = propose(store)
    runner = effects(connector, store, max_retries=1)
    with pytest.raises(RetryLater):
        runner.execute(action_id)
    assert runner.execute(action_id) == "failed"
    [failed] = [
        e.data for e in store.log.read_stream("action-a1") if isinstance(e.data, ev.ActionFailed)
    ]
    assert failed.transient
    [question] = queries.pending_questions()
    assert (question.kind, question.choices) == ("action_failed", ["retry", "discard"])
    assert queries.get_job("j1").status == "failed"


def test_a_permanent_failure_is_not_retried(store: Store) -> None:
    connector = CountingConnector(fail=PermanentConnectorError("550 no such user"))
    action_id = propose(store)
    assert effects(connector, store).execute(action_id) == "failed"
    assert [e.type for e in store.log.read_stream("action-a1")].count("ActionStarted") == 1


def test_a_crash_between_start_and_result_is_resolved_by_the_outbox_not_repeated(
    store: Store, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    connector = EmailConnector(sender="me@example.com", delivery=OutboxDelivery(outbox))
    params = {"to": "jane@acme.example", "subject": "Hi", "body": "Hello"}
    action_id = propose(store, connector="email", action="send_email", params=params)
    # The first attempt wrote the file, then the process died before ActionExecuted.
    store.log.append(
        "action-a1", [ev.ActionStarted(action_id="a1", attempt=1, worker="dead")], metadata=META
    )
    connector.execute("send_email", params, idempotency_key="j1:proposal:1")
    later = datetime.now(UTC) + timedelta(hours=1)
    assert execute_action(store.log, {"email": connector}, action_id, now=later) == "executed"
    assert len(list(outbox.glob("*.eml"))) == 1


def test_a_crash_with_an_unknowable_outcome_is_put_to_the_operator_not_repeated(
    store: Store,
) -> None:
    connector = CountingConnector()
    action_id = propose(store)
    store.log.append(
        "action-a1", [ev.ActionStarted(action_id="a1", attempt=1, worker="dead")], metadata=META
    )
    assert (
        execute_action(store.log, {"counting": connector}, action_id) == "running"
    )  # within its lease
    later = datetime.now(UTC) + timedelta(hours=1)
    assert execute_action(store.log, {"counting": connector}, action_id, now=later) == "unknown"
    assert connector.effects == []
    [question] = queries.pending_questions()
    assert question.kind == "action_unknown" and question.choices == ["done", "retry", "discard"]
    assert execute_action(store.log, {"counting": connector}, action_id, now=later) == "unknown"
    assert len(queries.pending_questions()) == 1


class Calendar(Connector):
    """A connector with a reversible action: a hold can be released."""

    name = "calendar"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "hold": ActionSpec("hold", "write", "hold a slot", Params, compensation="release"),
        "release": ActionSpec("release", "write", "release a slot", Params),
        "invite": ActionSpec("invite", "write", "send an invite", Params),
    }

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.fail_invite = False

    def execute(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult:
        if action == "invite" and self.fail_invite:
            raise PermanentConnectorError("the invitee's calendar refused")
        self.done.append((action, idempotency_key))
        return ActionResult(f"{action} ok", {"slot": "tue-10"})


def plan(store: Store) -> None:
    """Job j1 with two approved actions: hold (reversible), then invite."""
    request_job(store)
    for n, (action_id, action) in enumerate((("a1", "hold"), ("a2", "invite")), start=1):
        store.log.append(
            ev.action_stream(action_id),
            [
                ev.ActionProposed(
                    action_id=action_id,
                    job_id="j1",
                    connector="calendar",
                    action=action,
                    params={"n": n},
                    idempotency_key=f"j1:proposal:{n}",
                    summary=action,
                ),
                ev.ApprovalRequested(
                    action_id=action_id,
                    job_id="j1",
                    token=f"t{n}",
                    expires_at=datetime.now(UTC) + timedelta(hours=1),
                ),
                ev.ApprovalDecided(
                    action_id=action_id,
                    token=f"t{n}",
                    decision="approved",
                    decided_by="o",
                    channel="console",
                ),
            ],
            metadata=META,
        )


def test_when_a_later_step_fails_for_good_the_earlier_ones_are_compensated_once(
    store: Store,
) -> None:
    calendar = Calendar()
    calendar.fail_invite = True
    plan(store)
    run = Effects(log=store.log, connectors={"calendar": calendar})
    assert run.execute("a1") == "executed"
    assert run.execute("a2") == "failed"
    assert calendar.done == [("hold", "j1:proposal:1"), ("release", "j1:proposal:1:undo")]
    assert queries.get_action("a1").status == "compensated"
    assert run.compensate("a1", reason="again") == "compensated"  # already undone: nothing runs
    assert len(calendar.done) == 2
    [undone] = [
        e.data
        for e in store.log.read_stream("action-a1")
        if isinstance(e.data, ev.ActionCompensated)
    ]
    assert undone.compensation == "release" and "invite failed" in undone.reason


def test_undo_compensates_a_reversible_action_and_refuses_an_irreversible_one(store: Store) -> None:
    calendar = Calendar()
    plan(store)
    run = Effects(log=store.log, connectors={"calendar": calendar})
    run.execute("a1")
    run.execute("a2")
    assert run.compensate("a1", reason="/undo", by="console:local") == "compensated"
    assert run.compensate("a2", reason="/undo", by="console:local") == "irreversible"
    assert calendar.done[-1] == ("release", "j1:proposal:1:undo")
