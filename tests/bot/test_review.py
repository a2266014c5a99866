"""Reviewing proposals from chat: highlights, Edit by reply, re-approval after a change,
expiry and reminders (issue 5)."""

from __future__ import annotations

import email
from datetime import timedelta

from agents import approvals as approvals_mod
from bot.dispatch import Dispatcher
from bot.notifier import notification_for
from jobs.runtime import Runtime
from jobs.service import JobService
from store import events as ev
from store import queries
from store.log import utcnow
from tests.bot.test_dispatch import LEAD, msg, press, wait_for


def pending_one() -> queries.ApprovalView:
    wait_for(lambda: len(queries.pending_approvals()) == 1)
    [approval] = queries.pending_approvals()
    return approval


def test_a_new_lead_draft_is_noted_as_a_first_message_without_warnings(
    dispatcher: Dispatcher,
) -> None:
    dispatcher.handle_message(msg(LEAD))
    approval = pending_one()
    action = queries.get_action(approval.action_id)
    assert action.flags == ("🔹 first message to jane@acme.example",)
    assert action.bindings == {"to": f"contact:{action.contact_id}.email"}
    _, card = dispatcher.handle_message(msg("/approvals"))
    assert "Note:\n🔹 first message to jane@acme.example" in card.text


def test_edit_then_a_correction_in_words_replaces_the_draft(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    dispatcher.handle_message(msg(LEAD))
    first = pending_one()
    prompt = dispatcher.handle_button(press(f"ap:{first.token}:e"))
    assert prompt.text.startswith("What should change?")
    assert queries.get_approval(first.token).status == "pending"  # still waiting meanwhile
    [ack] = dispatcher.handle_message(
        msg('subject: Audit of acme.example\nreplace "30-minute" with "20-minute"')
    )
    assert ack.text.startswith("Revising")
    wait_for(lambda: queries.get_approval(first.token).status == "superseded")
    second = pending_one()
    revised = queries.get_action(second.action_id)
    assert revised.params["subject"] == "Audit of acme.example"
    assert "20-minute call" in revised.params["body"]
    assert revised.params["to"] == "jane@acme.example"
    assert queries.get_action(first.action_id).status == "superseded"
    # the old button no longer sends anything; the new one sends the revised draft once
    old = dispatcher.handle_button(press(f"ap:{first.token}:y"))
    assert old.text.startswith("Already decided: superseded")
    dispatcher.handle_button(press(f"ap:{second.token}:y"))
    wait_for(lambda: len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1)
    [eml] = runtime.settings.outbox_dir.glob("*.eml")
    assert email.message_from_bytes(eml.read_bytes())["Subject"] == "Audit of acme.example"
    # the plain message after the edit is not taken as another correction
    [reply] = dispatcher.handle_message(msg("thanks"))
    assert "commands" in reply.text


def test_a_correction_the_offline_provider_cannot_apply_says_so_and_keeps_the_draft(
    dispatcher: Dispatcher,
) -> None:
    dispatcher.handle_message(msg(LEAD))
    first = pending_one()
    dispatcher.handle_button(press(f"ap:{first.token}:e"))
    dispatcher.handle_message(msg("make it warmer please"))
    wait_for(lambda: any(j.status == "failed" for j in queries.list_jobs()))
    [failed] = [j for j in queries.list_jobs() if j.status == "failed"]
    assert "changed nothing" in (failed.error or "") and "explicit edits" in (failed.error or "")
    assert queries.get_approval(first.token).status == "pending"


def test_a_changed_contact_address_forces_re_approval_with_the_new_address(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    dispatcher.handle_message(msg(LEAD))
    first = pending_one()
    [updated] = dispatcher.handle_message(
        msg("/contact jane@acme.example email=jane.doe@acme.example")
    )
    assert updated.text.startswith("Updated: Jane Doe <jane.doe@acme.example>")
    again = dispatcher.handle_button(press(f"ap:{first.token}:y"))
    assert again.text.startswith(
        "Not sent: to changed from jane@acme.example to jane.doe@acme.example"
    )
    assert "⚠ to changed from jane@acme.example to jane.doe@acme.example" in again.text
    assert [b.label for b in again.buttons] == ["Approve and send", "Edit", "Reject"]
    assert queries.get_action(first.action_id).status == "superseded"
    assert not list(runtime.settings.outbox_dir.glob("*.eml"))  # nothing went to the old one
    second = pending_one()
    assert queries.get_action(second.action_id).params["to"] == "jane.doe@acme.example"
    assert dispatcher.handle_button(press(f"ap:{second.token}:y")).text.startswith("Approved")
    wait_for(lambda: len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1)
    [eml] = runtime.settings.outbox_dir.glob("*.eml")
    assert email.message_from_bytes(eml.read_bytes())["To"] == "jane.doe@acme.example"


def test_contact_command_refuses_bad_input(dispatcher: Dispatcher) -> None:
    [usage] = dispatcher.handle_message(msg("/contact jane@acme.example phone=123"))
    assert usage.text.startswith("Usage: /contact")
    [missing] = dispatcher.handle_message(msg("/contact nobody@acme.example name=X"))
    assert "no contact" in missing.text and "Nothing changed" in missing.text


def test_overdue_approvals_expire_on_their_own_and_the_operator_is_told(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    dispatcher.handle_message(msg(LEAD))
    first = pending_one()
    report = approvals_mod.sweep(
        runtime.store.log, now=utcnow() + timedelta(hours=25), remind_after=None
    )
    assert report.expired == 1
    assert queries.get_action(first.action_id).status == "expired"
    [expired] = [
        e
        for e in runtime.store.log.read_stream(ev.action_stream(first.action_id))
        if isinstance(e.data, ev.ApprovalExpired)
    ]
    outbound = notification_for(expired)
    assert outbound is not None and outbound.reply.text.startswith("Expired without a decision")
    assert dispatcher.handle_button(press(f"ap:{first.token}:y")).text.startswith("Already decided")


def test_one_reminder_per_chat_and_period(dispatcher: Dispatcher, runtime: Runtime) -> None:
    dispatcher.handle_message(msg(LEAD))
    dispatcher.handle_message(msg("/lead Bob <bob@client.example> needs a logo"))
    wait_for(lambda: len(queries.pending_approvals()) == 2)
    later = utcnow() + timedelta(hours=5)
    log = runtime.store.log
    assert approvals_mod.sweep(log, now=later, remind_after=timedelta(hours=4)).reminders == 1
    assert approvals_mod.sweep(log, now=later, remind_after=timedelta(hours=4)).reminders == 0
    [reminded] = log.read_stream(ev.REMINDER_STREAM)
    outbound = notification_for(reminded)
    assert outbound is not None
    assert outbound.reply.text.startswith("Reminder: 2 decisions waiting for you")
    assert "/approvals" in outbound.reply.text
    # decided since: the next reminder only lists what still waits, as a card with buttons
    dispatcher.handle_button(press(f"ap:{queries.pending_approvals()[0].token}:n"))
    much_later = later + timedelta(hours=5)
    assert approvals_mod.sweep(log, now=much_later, remind_after=timedelta(hours=4)).reminders == 1
    second = log.read_stream(ev.REMINDER_STREAM)[-1]
    card = notification_for(second)
    assert card is not None and card.reply.text.startswith("Reminder: waiting since")
    assert card.reply.buttons


def test_flagged_proposals_are_left_out_of_approve_all(
    dispatcher: Dispatcher, service: JobService, runtime: Runtime
) -> None:
    for i in range(3):
        dispatcher.handle_message(msg(f"/lead Lead {i} <lead{i}@acme.example> wants an audit"))
    wait_for(lambda: len(queries.pending_approvals()) == 3)
    flagged = queries.pending_approvals()[0]
    runtime.store.log.append(  # as a manipulated draft would be
        ev.action_stream("flagged"),
        [
            ev.ActionProposed(
                action_id="flagged",
                job_id=flagged.job_id,
                connector="email",
                action="send_email",
                params={"to": "x@evil.example", "subject": "s", "body": "b"},
                idempotency_key="flagged",
                summary="Send email to x@evil.example",
                flags=["⚠ to x@evil.example was not given by you and is not a known contact"],
            ),
            ev.ApprovalRequested(
                action_id="flagged",
                job_id=flagged.job_id,
                token="flaggedtok",
                expires_at=utcnow() + timedelta(hours=1),
            ),
        ],
        metadata=ev.Metadata(actor="test"),
    )
    replies = dispatcher.handle_message(msg("/approvals"))
    [bundle] = [r for r in replies if r.buttons and r.buttons[0].label.startswith("Approve all")]
    assert bundle.buttons[0].label == "Approve all 3" and "1 flagged" in bundle.text
    [card] = [r for r in replies if "x@evil.example" in r.text and "CHECK BEFORE" in r.text]
    assert card.text.index("CHECK BEFORE APPROVING") < card.text.index("To: x@evil.example")
    dispatcher.handle_button(press(bundle.buttons[0].data))
    assert queries.get_approval("flaggedtok").status == "pending"
    [left] = queries.pending_approvals()  # the three others were approved through the bundle
    assert left.token == "flaggedtok"
