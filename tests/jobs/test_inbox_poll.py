"""Inbox polling: mail read from a Maildir or an IMAP server (the local fake) becomes
``EmailReceived`` events exactly once, routed to the sender's contact, traced back to the
action it answers; the reconciler reads it on time, before the flows move, and a reply to a
proposal reaches the consultant flow as a question to the operator."""

from __future__ import annotations

import logging
import mailbox
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from config import Settings
from connectors.inbox import ImapInbox, MaildirInbox, key_hash
from jobs.errors import InboxSetupError
from jobs.inbox_poll import (
    CURSOR_REFRESH,
    INBOX_STREAM,
    InboxPoller,
    email_key,
    inbox_name,
    last_cursor,
)
from jobs.reconciler import Reconciler, Scheduler
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import Store, business, queries
from store import events as ev
from store.log import AppendResult, EventLog, utcnow
from tests.builders import create_contact, propose_action, request_job
from tests.fakes import imap_server as fake_imap
from tests.fakes.imap_server import FakeImap

imap_server = fake_imap.imap_server  # the fixture (tests/conftest.py registers the others)


def email(
    message_id: str,
    body: str = "Sounds good.",
    *,
    sender: str = "Bob Stranger <bob@elsewhere.example>",
    **headers: str,
) -> bytes:
    """An email; keyword headers (underscores become dashes) are added as given."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "sam@studio.example"
    msg["Subject"] = "Re: Proposal"
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


@pytest.fixture
def mail_root(tmp_path: Path) -> Path:
    return tmp_path / "Mail"


@pytest.fixture
def maildir(mail_root: Path) -> mailbox.Maildir:
    return mailbox.Maildir(mail_root, create=True)


def maildir_poller(store: Store, root: Path) -> InboxPoller:
    return InboxPoller(store.log, MaildirInbox(root))


def received(store: Store) -> list[ev.RecordedEvent]:
    """The ``EmailReceived`` events, in log order."""
    return [e for e in store.log.iterate() if isinstance(e.data, ev.EmailReceived)]


def mails(store: Store) -> list[ev.EmailReceived]:
    return [e.data for e in received(store) if isinstance(e.data, ev.EmailReceived)]


def polled(store: Store) -> list[ev.InboxPolled]:
    return [
        e.data for e in store.log.read_stream(INBOX_STREAM) if isinstance(e.data, ev.InboxPolled)
    ]


# --- reading and recording -------------------------------------------------------------------


def test_maildir_mail_is_recorded_once_across_polls_and_an_idle_inbox_writes_nothing(
    store: Store, maildir: mailbox.Maildir, mail_root: Path
) -> None:
    poller = maildir_poller(store, mail_root)
    maildir.add(email("m1@elsewhere.example"))

    first = poller.poll()
    assert (first.recorded, first.duplicates) == (1, 0)
    # The same message delivered again (a second copy) and a new one: only the new one counts.
    maildir.add(email("m1@elsewhere.example"))
    maildir.add(email("m2@elsewhere.example"))
    second = poller.poll()
    assert (second.recorded, second.duplicates) == (1, 1)

    assert [m.message_id for m in mails(store)] == [
        "m1@elsewhere.example",
        "m2@elsewhere.example",
    ]
    assert [e.idempotency_key for e in received(store)] == [
        "email:m1@elsewhere.example",
        "email:m2@elsewhere.example",
    ]
    assert [(p.inbox, p.count) for p in polled(store)] == [(poller.name, 1), (poller.name, 2)]
    # Nothing new: no event at all (the cursor is refreshed at most once an hour when idle).
    assert poller.poll().recorded == 0
    assert len(polled(store)) == 2
    later = utcnow() + CURSOR_REFRESH + timedelta(minutes=1)
    assert poller.poll(now=later).recorded == 0
    assert len(polled(store)) == 3 and polled(store)[-1].count == 0


def test_imap_mail_is_recorded_once_even_when_the_mailbox_is_read_again(
    store: Store, imap_server: FakeImap
) -> None:
    poller = InboxPoller(store.log, ImapInbox(imap_server.url(), timeout=5))
    imap_server.add(email("m1@elsewhere.example"))
    imap_server.add(email("m2@elsewhere.example"))

    assert poller() == 2  # the reconciler's hook: how many were recorded
    imap_server.add(email("m3@elsewhere.example"))
    assert poller() == 1
    assert [p.cursor for p in polled(store)] == ["1:2", "1:3"]

    imap_server.set_uidvalidity(7)  # the mailbox was recreated: everything is read again
    again = poller.poll()
    assert (again.recorded, again.duplicates) == (0, 3)
    assert len(received(store)) == 3
    assert polled(store)[-1].cursor == "7:3"
    saved = last_cursor(poller.name)
    assert saved is not None and saved.cursor == "7:3"


class Crash(Exception):
    """The process dies here."""


class CrashBeforeCursor(EventLog):
    """A log whose process dies when the cursor is about to be stored."""

    def append(
        self, stream_id: str, events: Sequence[ev.EventData | ev.NewEvent], **kw: Any
    ) -> AppendResult:
        if any(isinstance(e, ev.InboxPolled) for e in events):
            raise Crash
        return super().append(stream_id, events, **kw)


def test_a_crash_between_the_emails_and_the_cursor_reads_them_again_and_records_nothing_twice(
    store: Store, maildir: mailbox.Maildir, mail_root: Path
) -> None:
    maildir.add(email("m1@elsewhere.example"))
    maildir.add(email("m2@elsewhere.example"))
    inbox = MaildirInbox(mail_root)
    with pytest.raises(Crash):
        InboxPoller(CrashBeforeCursor(store.log.db), inbox).poll()
    assert len(received(store)) == 2 and polled(store) == []

    after_restart = InboxPoller(store.log, inbox).poll()

    assert (after_restart.recorded, after_restart.duplicates) == (0, 2)
    assert len(received(store)) == 2
    assert [p.count for p in polled(store)] == [2]


def test_a_contacts_mail_goes_to_their_stream_and_a_strangers_to_the_inbox(
    store: Store, maildir: mailbox.Maildir, mail_root: Path
) -> None:
    create_contact(store, contact_id="c1", email="jane@acme.example", name="Jane Doe")
    maildir.add(email("jane-1@acme.example", "Yes!", sender="Jane Doe <Jane@ACME.example>"))
    maildir.add(email("bob-1@elsewhere.example", "Who are you?"))

    assert maildir_poller(store, mail_root).poll().recorded == 2

    [jane] = [
        e for e in store.log.read_stream(ev.contact_stream("c1")) if e.type == "EmailReceived"
    ]
    assert isinstance(jane.data, ev.EmailReceived)
    assert (jane.data.contact_id, jane.data.from_address, jane.data.from_name) == (
        "c1",
        "jane@acme.example",
        "Jane Doe",
    )
    assert jane.data.text == "Yes!" and jane.metadata.actor == "inbox"
    [bob] = [e for e in store.log.read_stream(INBOX_STREAM) if e.type == "EmailReceived"]
    assert isinstance(bob.data, ev.EmailReceived)
    assert (bob.data.contact_id, bob.data.from_address) == (None, "bob@elsewhere.example")


def test_auto_replies_and_bounces_are_recorded_as_auto_submitted(
    store: Store, maildir: mailbox.Maildir, mail_root: Path
) -> None:
    create_contact(store, contact_id="c1", email="jane@acme.example")
    maildir.add(
        email(
            "ooo@acme.example",
            "I am out of office until Monday.",
            sender="jane@acme.example",
            Auto_Submitted="auto-replied",
        )
    )
    maildir.add(
        email(
            "bounce@mx.example",
            "Delivery failed.",
            sender="MAILER-DAEMON@mx.example",
        )
    )
    maildir.add(email("person@acme.example", "Real answer.", sender="jane@acme.example"))

    assert maildir_poller(store, mail_root).poll().recorded == 3

    flags = {m.message_id: m.auto_submitted for m in mails(store)}
    assert flags == {
        "ooo@acme.example": True,
        "bounce@mx.example": True,
        "person@acme.example": False,
    }


def test_a_reply_to_an_email_we_sent_names_the_action_it_answers(
    store: Store, maildir: mailbox.Maildir, mail_root: Path
) -> None:
    request_job(store, "j1")
    propose_action(store, job_id="j1", action_id="a1", token="tok")  # key "j1:proposal:1"
    ours = f"<{key_hash('j1:proposal:1')}@studio.example>"
    maildir.add(email("r1@elsewhere.example", "Agreed.", In_Reply_To=ours))
    maildir.add(  # found through References (a client that drops In-Reply-To)
        email("r2@elsewhere.example", "Agreed again.", References=f"<root@x.example> {ours}")
    )
    maildir.add(  # a Message-ID of the same shape that is not one of ours
        email("r3@elsewhere.example", "Other.", In_Reply_To=f"<{'0' * 32}@studio.example>")
    )

    maildir_poller(store, mail_root).poll()

    answers = {m.message_id: m.answers_action for m in mails(store)}
    assert answers == {
        "r1@elsewhere.example": "a1",
        "r2@elsewhere.example": "a1",
        "r3@elsewhere.example": None,
    }


def test_an_inbox_that_is_down_is_logged_and_read_at_the_next_poll(
    store: Store, imap_server: FakeImap, caplog: pytest.LogCaptureFixture
) -> None:
    poller = InboxPoller(store.log, ImapInbox(imap_server.url(), timeout=5))
    imap_server.add(email("m1@elsewhere.example"))
    imap_server.fail_next(1)

    with caplog.at_level(logging.WARNING, logger="jobs.inbox_poll"):
        assert poller.poll().recorded == 0
    assert "unavailable (the next poll tries again)" in caplog.text
    assert polled(store) == []

    assert poller.poll().recorded == 1


def test_a_broken_inbox_setting_is_logged_at_every_poll_and_never_raises(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    poller = InboxPoller(store.log, MaildirInbox(tmp_path / "missing"))
    with caplog.at_level(logging.ERROR, logger="jobs.inbox_poll"):
        assert poller.poll().recorded == 0
    assert "is not a Maildir" in caplog.text


def test_long_message_ids_get_a_key_that_fits_and_names_identify_the_inbox(
    tmp_path: Path,
) -> None:
    assert email_key("a@b.example") == "email:a@b.example"
    long_key = email_key("x" * 300 + "@b.example")
    assert long_key.startswith("email:sha256:") and len(long_key) <= 255
    assert inbox_name(ImapInbox("imaps://u:secret@imap.example.com/INBOX", timeout=5)) == (
        "imap:u@imap.example.com:993/INBOX"
    )
    assert inbox_name(MaildirInbox(tmp_path)) == f"maildir:{tmp_path.resolve()}"


# --- wiring: settings, reconciler, scheduler -------------------------------------------------


def test_the_poller_comes_from_the_settings(store: Store, data_dir: Path, tmp_path: Path) -> None:
    assert InboxPoller.from_settings(Settings(data_dir=data_dir), log=store.log) is None
    on = InboxPoller.from_settings(Settings(data_dir=data_dir, maildir=tmp_path), log=store.log)
    assert on is not None and on.name.startswith("maildir:")
    both = Settings(
        data_dir=data_dir, maildir=tmp_path, imap_url=SecretStr("imaps://u:p@h.example/INBOX")
    )
    with pytest.raises(InboxSetupError, match="not both"):
        InboxPoller.from_settings(both, log=store.log)


def reconciler(store: Store, calls: list[str], *, every: float) -> Reconciler:
    def poll_inbox(*, now: Any) -> int:
        calls.append("inbox")
        return 1

    def advance(*, now: Any) -> int:
        calls.append("flows")
        return 0

    return Reconciler(
        log=store.log,
        send_job=lambda job_id: True,
        send_action=lambda action_id: True,
        queue_lease=timedelta(minutes=1),
        run_lease=timedelta(minutes=10),
        advance_flows=advance,
        poll_inbox=poll_inbox,
        inbox_every=timedelta(seconds=every),
    )


def test_the_reconciler_reads_the_inbox_before_the_flows_and_at_most_every_interval(
    store: Store,
) -> None:
    calls: list[str] = []
    rec = reconciler(store, calls, every=60)
    start = utcnow()

    rec.run_once(now=start)
    rec.run_once(now=start + timedelta(seconds=59))  # not due: the flows still move
    rec.run_once(now=start + timedelta(seconds=60))

    assert calls == ["inbox", "flows", "flows", "inbox", "flows"]
    # Between reconciles: the inbox if due, and the flows only when mail came.
    calls.clear()
    assert rec.check_inbox(now=start + timedelta(seconds=90)) == 0
    assert rec.check_inbox(now=start + timedelta(seconds=120)) == 1
    assert calls == ["inbox", "flows"]


def test_the_inbox_is_due_on_its_own_timer_between_reconciles(store: Store) -> None:
    calls: list[str] = []
    rec = reconciler(store, calls, every=45)
    start = utcnow()
    assert rec.inbox_due_in(now=start) == 0.0  # never read: at once
    rec.run_once(now=start)
    assert rec.inbox_due_in(now=start + timedelta(seconds=30)) == 15.0  # not at the next reconcile
    assert rec.inbox_due_in(now=start + timedelta(seconds=50)) == 0.0
    assert rec.inbox_due_in(now=start - timedelta(hours=1)) == 45.0  # the clock went back
    no_timer = reconciler(store, calls, every=0)  # read at every pass
    assert no_timer.inbox_due_in(now=start) is None


def test_the_scheduler_reads_the_inbox_more_often_than_it_reconciles(store: Store) -> None:
    calls: list[str] = []
    scheduler = Scheduler(reconciler(store, calls, every=0.05), interval=3600, snapshot_every=1)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while calls.count("inbox") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.stop()
    assert calls.count("inbox") >= 3  # no reconcile ran (an hour away): the inbox did
    assert calls.count("flows") == calls.count("inbox")  # mail came each time: flows moved


# --- a reply reaches the consultant flow ------------------------------------------------------

PROPOSAL = "/proposal Jane Doe <jane@acme.example> website audit: 3 pages review, accessibility report; price 2400 EUR; 2 weeks"


def wait_for(check: Callable[[], Any], *, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {check}")


@pytest.fixture
def flow_settings(data_dir: Path, mail_root: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        operators=("console:local",),
        flows=("consultant",),
        operator_name="Sam Consultant",
        email_from="Sam <sam@studio.example>",
        reconcile_interval_seconds=3600,
        maildir=mail_root,
    )


@pytest.fixture
def runtime(flow_settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(flow_settings, with_worker=True)
    try:
        yield rt
    finally:
        rt.close()


def test_a_reply_in_the_maildir_asks_the_operator_whether_the_proposal_was_won(
    runtime: Runtime, flow_settings: Settings, maildir: mailbox.Maildir
) -> None:
    service = JobService(runtime)
    dispatcher = Dispatcher(settings=flow_settings, service=service, log=runtime.store.log)
    dispatcher.handle_message(InboundMessage("console", "local", "local", PROPOSAL))
    job_id = str(wait_for(lambda: business.list_flows())[0].job_id)
    wait_for(lambda: queries.get_job(job_id).status == "awaiting_approval")
    [action] = queries.actions_for_job(job_id)
    token = queries.approval_for_action(action.action_id).token
    service.decide(token, approve=True, decided_by="console:local", channel="console")
    wait_for(lambda: queries.get_action(action.action_id).status == "executed")
    flow = wait_for(
        lambda: (f := business.list_flows()[0]).status == "waiting" and f.step == "accepted" and f
    )
    # Jane answers the email that went out (its Message-ID, as written to the outbox).
    [sent] = list(flow_settings.outbox_dir.glob("*.eml"))
    reply = EmailMessage()
    reply["From"] = "Jane Doe <jane@acme.example>"
    reply["To"] = "sam@studio.example"
    reply["Subject"] = "Re: Website audit"
    reply["Message-ID"] = "<jane-reply-1@acme.example>"
    reply["In-Reply-To"] = str(message_from_bytes(sent.read_bytes())["Message-ID"])
    reply.set_content("Sounds great, let's go ahead!\n\nOn Mon, Sam wrote:\n> The proposal\n")
    maildir.add(reply.as_bytes())

    service.reconciler().run_once()  # reads the inbox, then moves the flows on

    assert flow.contact_id is not None
    [mail] = [
        e.data
        for e in runtime.store.log.read_stream(ev.contact_stream(flow.contact_id))
        if isinstance(e.data, ev.EmailReceived)
    ]
    assert mail.answers_action == action.action_id and mail.text == "Sounds great, let's go ahead!"
    question = wait_for(lambda: [q for q in queries.pending_questions() if q.kind == "flow_reply"])[
        0
    ]
    assert question.choices == ["won", "lost", "wait"]
    assert "Jane Doe replied" in question.text and "let's go ahead" in question.text
    assert "The proposal" not in question.text  # the quote is not part of the reply

    service.answer(question.token, "won", by="console:local", channel="console")
    service.advance_flows()
    moved = wait_for(lambda: (f := business.list_flows()[0]).step == "milestones" and f)
    assert moved.flow_id == flow.flow_id
