from __future__ import annotations

import threading
from datetime import UTC

import pytest

from store import Store, queries
from store import events as ev
from store.errors import ConcurrencyError, EventSchemaError
from store.migrate import pending
from tests.builders import approve, propose_action
from tests.builders import job_requested as requested

META = ev.Metadata(actor="test", correlation_id="j1")


def test_events_get_global_positions_and_per_stream_versions(store: Store) -> None:
    a = store.log.append("job-j1", [requested("j1")], metadata=META, expected_version=0)
    b = store.log.append("job-j2", [requested("j2")], metadata=META, expected_version=0)
    c = store.log.append(
        "job-j1", [ev.JobStarted(job_id="j1", worker="w", attempt=1)], metadata=META
    )
    assert [a.events[0].position, b.events[0].position, c.events[0].position] == sorted(
        {a.events[0].position, b.events[0].position, c.events[0].position}
    )
    assert (a.events[0].version, b.events[0].version, c.events[0].version) == (1, 1, 2)
    assert store.log.stream_version("job-j1") == 2


def test_a_writer_at_a_stale_version_gets_a_concurrency_error(store: Store) -> None:
    store.log.append("job-j1", [requested()], metadata=META, expected_version=0)
    with pytest.raises(ConcurrencyError) as info:
        store.log.append("job-j1", [requested()], metadata=META, expected_version=0)
    assert info.value.actual == 1


def test_an_idempotency_key_seen_before_writes_nothing_and_returns_the_first_event(
    store: Store,
) -> None:
    first = store.log.append("job-j1", [ev.NewEvent(requested(), "inbound:x")], metadata=META)
    again = store.log.append("job-j9", [ev.NewEvent(requested("j9"), "inbound:x")], metadata=META)
    assert again.duplicate
    assert again.events[0].event_id == first.events[0].event_id
    assert store.log.head() == 1


def test_events_round_trip_with_their_metadata(store: Store) -> None:
    meta = ev.Metadata(actor="console:local", correlation_id="j1", causation_id="c1")
    store.log.append("job-j1", [requested()], metadata=meta)
    [event] = store.log.read_stream("job-j1")
    assert event.data == requested()
    assert event.metadata == meta
    assert event.recorded_at.tzinfo is UTC
    assert store.log.read_correlated("j1") == [event]


def test_unknown_event_types_are_refused_when_read() -> None:
    with pytest.raises(EventSchemaError):
        ev.parse_event("NoSuchEvent", {})
    with pytest.raises(EventSchemaError):
        ev.parse_event("JobStarted", {"job_id": "x"})


def test_the_job_projection_follows_the_job_events(store: Store) -> None:
    log = store.log
    log.append("job-j1", [requested()], metadata=META)
    assert queries.get_job("j1").status == "queued"
    log.append("job-j1", [ev.JobStarted(job_id="j1", worker="w", attempt=1)], metadata=META)
    assert queries.get_job("j1").status == "running"
    propose_action(store)
    log.append(
        "job-j1", [ev.JobCompleted(job_id="j1", summary="drafted", proposals=1)], metadata=META
    )
    assert queries.get_job("j1").status == "awaiting_approval"
    assert [a.token for a in queries.pending_approvals()] == ["tok"]
    approve(store)
    log.append(
        "action-a1", [ev.ActionExecuted(action_id="a1", summary="sent", details={})], metadata=META
    )
    job = queries.get_job("j1")
    assert (job.status, job.open_actions) == ("done", 0)
    assert queries.get_action("a1").status == "executed"
    assert queries.pending_approvals() == []


def test_rebuilding_the_projections_from_the_log_gives_the_same_read_models(store: Store) -> None:
    test_the_job_projection_follows_the_job_events(store)
    before = (queries.get_job("j1"), queries.get_action("a1"), queries.get_approval("tok"))
    assert store.log.rebuild_projections() == store.log.head()
    after = (queries.get_job("j1"), queries.get_action("a1"), queries.get_approval("tok"))
    assert before == after


def test_short_ids_find_a_job_and_ambiguity_is_reported(store: Store) -> None:
    store.log.append("job-abc1", [requested("abc1")], metadata=META)
    store.log.append("job-abc2", [requested("abc2")], metadata=META)
    assert queries.find_job("abc1").job_id == "abc1"
    with pytest.raises(queries.AmbiguousIdError):
        queries.find_job("abc")
    with pytest.raises(queries.NotFoundError):
        queries.find_job("zzz")


def test_migrations_are_versioned_and_applied_once(store: Store) -> None:
    assert pending(store.db) == []


def test_concurrent_appends_at_the_same_version_let_exactly_one_win(store: Store) -> None:
    store.log.append("job-j1", [requested()], metadata=META)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def writer() -> None:
        barrier.wait()
        try:
            store.log.append(
                "job-j1",
                [ev.JobStarted(job_id="j1", worker="w", attempt=1)],
                metadata=META,
                expected_version=1,
            )
            results.append("won")
        except ConcurrencyError:
            results.append("lost")
        finally:
            store.db.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost", "lost", "lost", "won"]
    assert store.log.stream_version("job-j1") == 2
