from __future__ import annotations

from store import Store, queries, snapshots
from store import events as ev
from store.replay import verify
from tests.builders import approve, propose_action, request_job


def history(store: Store, jobs: range) -> None:
    for n in jobs:
        job, action = f"j{n}", f"a{n}"
        request_job(store, job)
        propose_action(store, job_id=job, action_id=action, token=f"t{n}")
        approve(store, action_id=action, token=f"t{n}", job_id=job)


def test_a_rebuild_from_a_snapshot_replays_only_the_tail_and_matches(store: Store) -> None:
    history(store, range(5))
    position = snapshots.take(store.db)
    assert position == store.log.head()
    history(store, range(5, 7))
    store.log.append(
        "action-a6",
        [ev.ActionExecuted(action_id="a6", summary="sent", details={})],
        metadata=ev.Metadata(actor="t", correlation_id="j6"),
    )
    before = (queries.get_job("j6"), queries.get_action("a2"), queries.get_approval("t4"))
    tail = store.log.head() - position
    assert store.log.rebuild_projections() == tail
    assert (queries.get_job("j6"), queries.get_action("a2"), queries.get_approval("t4")) == before
    assert store.log.rebuild_projections(from_snapshot=False) == store.log.head()
    assert (queries.get_job("j6"), queries.get_action("a2"), queries.get_approval("t4")) == before


def test_verify_checks_the_snapshot_path_too(store: Store) -> None:
    history(store, range(3))
    snapshots.take(store.db)
    history(store, range(3, 4))
    report = verify(store.log)
    assert report.ok and report.snapshot_position > 0
    # A snapshot that lies (a bug, a hand edit) is caught.
    from store.models import SnapshotRow

    row = SnapshotRow.select().order_by(SnapshotRow.position.desc()).first()
    assert row is not None
    row.data = row.data.replace('"approved"', '"proposed"')
    row.save()
    bad = verify(store.log)
    assert not bad.ok
    assert all("snapshot" in d.table for d in bad.differences)


def test_only_the_last_few_snapshots_are_kept(store: Store) -> None:
    for n in range(5):
        history(store, range(n, n + 1))
        snapshots.take(store.db)
    from store.models import SnapshotRow

    assert SnapshotRow.select().count() == snapshots.KEEP
    assert snapshots.due(head=store.log.head(), every=1) is False
    history(store, range(9, 10))
    assert snapshots.due(head=store.log.head(), every=3)
