"""Small builders of events and log entries shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from store import Store
from store import events as ev


def meta(job_id: str = "j1") -> ev.Metadata:
    return ev.Metadata(actor="test", correlation_id=job_id)


def job_requested(
    job_id: str = "j1", *, agent: str = "lead", payload: dict[str, Any] | None = None
) -> ev.JobRequested:
    return ev.JobRequested(
        job_id=job_id,
        agent=agent,
        input={"name": "Jane"} if payload is None else payload,
        text="/lead Jane",
        channel="console",
        chat_id="local",
        requested_by="console:local",
    )


def request_job(
    store: Store, job_id: str = "j1", *, agent: str = "lead", payload: dict[str, Any] | None = None
) -> str:
    store.log.append(
        ev.job_stream(job_id),
        [job_requested(job_id, agent=agent, payload=payload)],
        metadata=meta(job_id),
    )
    return job_id


def propose_action(
    store: Store,
    *,
    job_id: str = "j1",
    action_id: str = "a1",
    token: str = "tok",
    connector: str = "email",
    action: str = "send_email",
    params: dict[str, Any] | None = None,
) -> str:
    """An action proposed by ``job_id`` with its approval requested (valid for an hour)."""
    store.log.append(
        ev.action_stream(action_id),
        [
            ev.ActionProposed(
                action_id=action_id,
                job_id=job_id,
                connector=connector,
                action=action,
                params=params or {"to": "x@y.example"},
                idempotency_key=f"{job_id}:proposal:1",
                summary="send",
            ),
            ev.ApprovalRequested(
                action_id=action_id,
                job_id=job_id,
                token=token,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            ),
        ],
        metadata=meta(job_id),
    )
    return action_id


def approve(store: Store, *, action_id: str = "a1", token: str = "tok", job_id: str = "j1") -> None:
    store.log.append(
        ev.action_stream(action_id),
        [
            ev.ApprovalDecided(
                action_id=action_id,
                token=token,
                decision="approved",
                decided_by="console:local",
                channel="console",
            )
        ],
        metadata=meta(job_id),
    )


def create_contact(
    store: Store, *, contact_id: str = "c1", email: str = "jane@acme.example", name: str = "Jane"
) -> str:
    store.log.append(
        ev.contact_stream(contact_id),
        [ev.ContactCreated(contact_id=contact_id, name=name, email=email, company="")],
        metadata=ev.Metadata(actor="test"),
    )
    return contact_id
