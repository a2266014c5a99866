from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from agents.approvals import Outcome, decide
from store import Store, queries
from tests.builders import propose_action, request_job


def setup(store: Store) -> None:
    request_job(store)
    propose_action(store)


def test_the_first_decision_wins_and_later_ones_hear_who_decided(store: Store) -> None:
    setup(store)
    first = decide(store.log, "tok", approve=False, decided_by="slack:U1", channel="slack")
    later = decide(store.log, "tok", approve=True, decided_by="console:local", channel="console")
    assert first.outcome is Outcome.REJECTED
    assert later.outcome is Outcome.ALREADY_DECIDED
    assert later.approval is not None and later.approval.decided_by == "slack:U1"
    assert queries.get_action("a1").status == "rejected"


def test_an_expired_approval_cannot_be_approved(store: Store) -> None:
    setup(store)
    result = decide(
        store.log,
        "tok",
        approve=True,
        decided_by="console:local",
        channel="console",
        now=datetime.now(UTC) + timedelta(days=30),
    )
    assert result.outcome is Outcome.EXPIRED
    assert queries.get_action("a1").status == "expired"
    assert queries.get_job("j1").open_actions == 0
    again = decide(store.log, "tok", approve=True, decided_by="console:local", channel="console")
    assert again.outcome is Outcome.ALREADY_DECIDED


def test_an_unknown_token_is_unknown(store: Store) -> None:
    assert (
        decide(store.log, "nope", approve=True, decided_by="x:y", channel="x").outcome
        is Outcome.UNKNOWN
    )


def test_simultaneous_presses_record_exactly_one_decision(store: Store) -> None:
    setup(store)
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(5)

    def press(i: int) -> None:
        barrier.wait()
        outcomes.append(
            decide(store.log, "tok", approve=i % 2 == 0, decided_by=f"t:{i}", channel="t").outcome
        )
        store.db.close()

    threads = [threading.Thread(target=press, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decided = [o for o in outcomes if o in {Outcome.APPROVED, Outcome.REJECTED}]
    assert len(decided) == 1
    assert outcomes.count(Outcome.ALREADY_DECIDED) == 4
    types = [e.type for e in store.log.read_stream("action-a1")]
    assert types.count("ApprovalDecided") == 1
