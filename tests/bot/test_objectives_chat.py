"""Objectives in chat: /status shows them, and the reconciler's pass checks them."""

from __future__ import annotations

from datetime import timedelta

from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from jobs.runtime import Runtime
from jobs.service import JobService
from store import events as ev
from store import queries
from store.log import utcnow
from tests.jobs.test_flows import wait_for


def test_status_lists_the_objectives_and_the_reconciler_checks_them(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher
) -> None:
    [reply] = dispatcher.handle_message(InboundMessage("console", "local", "local", "/status"))
    assert "Objectives:" in reply.text
    assert "- invoices sent within 1 h of approval: nothing counted yet (target 99 %)" in reply.text

    dispatcher.handle_message(
        InboundMessage("console", "local", "local", "/lead Jane Doe <jane@acme.example> audit")
    )
    [approval] = wait_for(queries.pending_approvals)
    action = queries.get_action(approval.action_id)
    # Approved, and then the worker never gets to it: past the hour it is a miss.
    runtime.store.log.append(
        ev.action_stream(action.action_id),
        [
            ev.ApprovalDecided(
                action_id=action.action_id,
                token=approval.token,
                decision="approved",
                decided_by="console:local",
                channel="console",
            )
        ],
        metadata=ev.Metadata(actor="test", correlation_id=action.job_id),
    )
    assert runtime.slos is not None
    runtime.slos.slos = {
        "replies": runtime.settings.slos["invoices_sent"].model_copy(
            update={"agent": "lead", "description": "replies sent within 1 h"}
        )
    }
    service.reconciler().with_leases(timedelta(days=1)).run_once(
        now=utcnow() + timedelta(minutes=90)
    )
    [alert] = [q for q in queries.pending_questions() if q.kind == "slo_burn"]
    assert alert.job_id == action.job_id
    assert "Objective burning fast: replies sent within 1 h" in alert.text
