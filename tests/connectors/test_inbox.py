"""Reading replies: parsing inbound email, and polling IMAP (a real local server) and Maildir."""

from __future__ import annotations

import hashlib
import json
import logging
import mailbox
import os
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors.email import SendEmail, build_message
from connectors.errors import InvalidParamsError, PermanentConnectorError, TransientConnectorError
from connectors.inbox import (
    MAX_TEXT_BYTES,
    ImapInbox,
    InboundEmail,
    MaildirInbox,
    answered_key_hashes,
    html_to_text,
    inbox_from,
    opcore_key_hash,
    parse_email,
    reply_part,
)
from tests.fakes import imap_server as fake_imap
from tests.fakes.imap_server import FakeImap
from tests.fakes.smtp_server import free_port

imap_server = fake_imap.imap_server  # the fixture (tests/conftest.py registers the others)


def plain(body: str, **headers: str) -> bytes:
    """A plain-text email; keyword headers (underscores become dashes) override the defaults."""
    fields = {
        "From": "Bob Client <Bob.Client@Example.ORG>",
        "To": "Zoe <zoe@example.com>, ops@example.com",
        "Subject": "Re: Proposal",
        "Date": "Tue, 05 Mar 2024 10:15:00 +0100",
        "Message-ID": "<reply-1@mail.example.org>",
    }
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v)
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode() + body.replace(
        "\n", "\r\n"
    ).encode()


def message_id(n: int) -> bytes:
    return plain(f"Message number {n}.\n", Message_ID=f"<m{n}@example.org>")


# --- parsing -----------------------------------------------------------------------------


def test_a_plain_email_is_decoded_into_its_fields() -> None:
    email = parse_email(plain("Yes, let's do it.\n"))

    assert email == InboundEmail(
        message_id="reply-1@mail.example.org",
        in_reply_to=None,
        references=(),
        from_address="bob.client@example.org",
        from_name="Bob Client",
        to=("zoe@example.com", "ops@example.com"),
        subject="Re: Proposal",
        date=datetime(2024, 3, 5, 10, 15, tzinfo=timezone(timedelta(hours=1))),
        text="Yes, let's do it.\n",
        reply_text="Yes, let's do it.",
        auto_submitted=False,
    )
    assert email.date is not None and email.date.tzinfo is not None


def test_multipart_alternative_takes_the_plain_part_and_leaves_attachments_out() -> None:
    msg = EmailMessage()
    msg["From"] = "bob@example.org"
    msg["Message-ID"] = "<alt@example.org>"
    msg.set_content("Plain: accepted.\n")
    msg.add_alternative("<p>HTML: <b>accepted</b>.</p>", subtype="html")
    msg.add_attachment(b"not the body\n", maintype="text", subtype="plain", filename="notes.txt")

    email = parse_email(msg.as_bytes())

    assert email.text == "Plain: accepted.\n"


def test_an_html_only_email_becomes_readable_text_without_script_style_or_quote() -> None:
    html = (
        "<html><head><title>t</title><style>p{color:red}</style></head><body>"
        '<div dir="ltr">Sounds good &amp; agreed.<br>See <a href="https://example.org/terms">the'
        " terms</a>.<ul><li>one</li><li>two</li></ul><script>alert(1)</script></div>"
        '<div class="gmail_quote"><div class="gmail_attr">On Tue, Mar 5, 2024 at 9:00 AM Zo&euml;'
        " &lt;zoe@example.com&gt; wrote:<br></div><blockquote>Our proposal: 50 &euro;</blockquote>"
        "</div></body></html>"
    )
    msg = EmailMessage()
    msg["From"] = "bob@example.org"
    msg.set_content(html, subtype="html")

    email = parse_email(msg.as_bytes())

    assert email.text == (
        "Sounds good & agreed.\nSee the terms <https://example.org/terms>.\n\n- one\n- two\n\n"
        "On Tue, Mar 5, 2024 at 9:00 AM Zoë <zoe@example.com> wrote:\n\n> Our proposal: 50 €"
    )
    assert (
        email.reply_text
        == "Sounds good & agreed.\nSee the terms <https://example.org/terms>.\n\n- one\n- two"
    )


def test_html_that_html_parser_rejects_is_stripped_of_tags_instead() -> None:
    assert html_to_text("<p>Fine &amp;</p><![foo[ x ]]><p>more</p>") == "Fine & more"


def test_a_gmail_reply_keeps_only_the_new_part_even_with_a_wrapped_quote_header() -> None:
    body = (
        "Thanks, we accept the proposal.\n"
        "Please send the contract.\n"
        "\n"
        "-- \n"
        "Bob Client | ACME\n"
        "\n"
        "On Tue, Mar 5, 2024 at 9:00 AM Zoë Café <\n"
        "zoe@example.com> wrote:\n"
        "\n"
        "> Hello Bob,\n"
        "> here is our proposal.\n"
    )
    assert parse_email(plain(body)).reply_text == (
        "Thanks, we accept the proposal.\nPlease send the contract."
    )
    no_signature = body.replace("-- \nBob Client | ACME\n", "")
    assert reply_part(no_signature) == "Thanks, we accept the proposal.\nPlease send the contract."


@pytest.mark.parametrize(
    "separator",
    [
        "-----Original Message-----\nFrom: Zoe\nSent: Tuesday, March 5, 2024 9:00 AM\n",
        "________________________________\nFrom: Zoe <zoe@example.com>\n"
        "Sent: Tuesday, March 5, 2024 9:00 AM\nTo: Bob\n",
        "From: Zoe <zoe@example.com>\nSent: Tuesday, March 5, 2024 9:00 AM\nSubject: Proposal\n",
        "Am Di., 5. März 2024 um 09:00 Uhr schrieb Zoë <zoe@example.com>:\n",
    ],
)
def test_an_outlook_or_localised_reply_drops_the_earlier_message(separator: str) -> None:
    body = f"Agreed, go ahead.\n\n{separator}\nHello Bob, here is our proposal.\nZoë\n"
    assert parse_email(plain(body)).reply_text == "Agreed, go ahead."


def test_a_bottom_posted_reply_keeps_the_answers_between_the_quotes() -> None:
    body = (
        "On Tue, Mar 5, 2024, Zoë <zoe@example.com> wrote:\n"
        "> Can you start Monday?\n"
        "Yes.\n"
        "> And the price?\n"
        "\n"
        "Fine by me.\n"
        "--\n"
        "Bob\n"
        "\n"
        "Sent from my iPhone\n"
    )
    assert parse_email(plain(body)).reply_text == "Yes.\n\nFine by me."
    assert reply_part("Great!\n\nSent from my iPhone\n") == "Great!"


def test_encoded_word_subjects_and_names_and_raw_utf8_headers_are_decoded() -> None:
    raw = plain(
        "Danke.\n",
        Subject="=?utf-8?q?Re=3A_=C3=9Cberweisung=3A_50_=E2=82=AC?= =?iso-8859-1?b?R3L832Uh?= ok",
        From="=?utf-8?b?Wm/DqyBDYWbDqQ==?= <ZOE@example.com>",
    )
    email = parse_email(raw)
    assert email.subject == "Re: Überweisung: 50 €Grüße! ok"
    assert (email.from_name, email.from_address) == ("Zoë Café", "zoe@example.com")

    utf8 = "Subject: Grüße aus Köln\r\nFrom: Jürgen <j@example.de>\r\n\r\nHallo\r\n".encode()
    email = parse_email(utf8)
    assert (email.subject, email.from_name) == ("Grüße aus Köln", "Jürgen")


def test_bodies_in_other_charsets_and_unknown_charsets_are_decoded_without_failing() -> None:
    latin = (
        b"From: a@example.org\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe\r\n"
    )
    assert parse_email(latin).text == "Grüße\n"
    unknown = latin.replace(b"iso-8859-1", b"x-no-such-charset").replace(b"Gr=FC=DFe", b"Hi")
    assert parse_email(unknown).text == "Hi\n"


def test_a_missing_message_id_gets_a_stable_id_from_the_bytes() -> None:
    raw = plain("No id here.\n", Message_ID="")
    first, again = parse_email(raw), parse_email(raw)
    other = parse_email(plain("Another one.\n", Message_ID=""))

    assert first.message_id == again.message_id != other.message_id
    assert hashlib.sha256(raw).hexdigest() in first.message_id
    assert opcore_key_hash(first.message_id) is None


def test_reply_headers_become_the_ids_the_email_answers() -> None:
    email = parse_email(
        plain(
            "ok\n",
            In_Reply_To="<b@x.org> (Zoe's message of Tuesday)",
            References="<a@x.org>\r\n <b@x.org>",
        )
    )
    assert email.in_reply_to == "b@x.org"
    assert email.references == ("a@x.org", "b@x.org")
    assert email.answers() == ("b@x.org", "a@x.org")


@pytest.mark.parametrize(
    ("headers", "automatic"),
    [
        ({}, False),
        ({"Auto-Submitted": "no"}, False),
        ({"Auto-Submitted": "auto-replied; owner-email=bob@example.org"}, True),
        ({"Auto-Submitted": "auto-generated"}, True),
        ({"Precedence": "bulk"}, True),
        ({"Precedence": "junk"}, True),
        ({"Precedence": "list"}, True),
        ({"X-Autoreply": "yes"}, True),
        ({"From": "Mail Delivery System <MAILER-DAEMON@mx.example.org>"}, True),
        ({"Return-Path": "<>"}, True),
        ({"Return-Path": "<bob@example.org>"}, False),
    ],
)
def test_auto_replies_bounces_and_bulk_mail_are_flagged(
    headers: dict[str, str], automatic: bool
) -> None:
    raw = plain("I am out of office.\n", **{k.replace("-", "_"): v for k, v in headers.items()})
    assert parse_email(raw).auto_submitted is automatic


def test_a_delivery_status_report_is_a_bounce() -> None:
    raw = (
        b"From: postmaster@example.org\r\nMessage-ID: <dsn@example.org>\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--b--\r\n"
    )
    email = parse_email(raw)
    assert email.auto_submitted is True
    assert email.text == "Delivery failed."


def test_a_reply_to_a_message_we_sent_is_traced_back_to_the_action_key() -> None:
    sent = build_message(
        SendEmail(to="bob@example.org", subject="Proposal", body="50 € per hour?"),
        sender="Zoë <zoe@example.com>",
        idempotency_key="act-42",
    )
    reply = EmailMessage()
    reply["From"] = "Bob <bob@example.org>"
    reply["Message-ID"] = "<CAB+x=y@mail.gmail.com>"
    reply["In-Reply-To"] = sent["Message-ID"]
    reply["References"] = f"<thread-root@example.org> {sent['Message-ID']}"
    reply.set_content("Deal.\n")

    email = parse_email(reply.as_bytes())

    key_hash = hashlib.sha256(b"act-42").hexdigest()[:32]
    assert opcore_key_hash(str(sent["Message-ID"])) == key_hash
    assert answered_key_hashes(email, domain="example.com") == (key_hash,)
    assert answered_key_hashes(email, domain="other.example") == ()
    assert opcore_key_hash("thread-root@example.org") is None
    assert opcore_key_hash(email.message_id) is None


@pytest.mark.parametrize(
    "raw",
    [b"", b"just some bytes without any header\r\n", b"Subject: no sender\r\n\r\nhi\r\n"],
)
def test_input_that_is_not_an_email_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidParamsError):
        parse_email(raw)


def test_body_text_is_capped() -> None:
    email = parse_email(plain("é" * 80_000))
    assert len(email.text.encode()) <= MAX_TEXT_BYTES
    assert email.text == "é" * (MAX_TEXT_BYTES // 2)


# --- IMAP --------------------------------------------------------------------------------


def inbox_for(server: FakeImap, *, timeout: float = 5) -> ImapInbox:
    return ImapInbox(server.url(), timeout=timeout)


def ids(emails: tuple[InboundEmail, ...]) -> list[str]:
    return [e.message_id for e in emails]


def test_imap_poll_reads_each_message_once_and_then_only_new_ones(imap_server: FakeImap) -> None:
    imap_server.add(message_id(1))
    imap_server.add(message_id(2))
    inbox = inbox_for(imap_server)

    first = inbox.poll(None)
    assert (ids(first.emails), first.cursor, first.skipped) == (
        ["m1@example.org", "m2@example.org"],
        "1:2",
        0,
    )
    assert first.emails[0].text == "Message number 1.\n"

    again = inbox.poll(first.cursor)
    assert (again.emails, again.cursor) == ((), "1:2")  # "UID 3:*" still matches UID 2

    imap_server.add(message_id(3))
    third = inbox.poll(again.cursor)
    assert (ids(third.emails), third.cursor) == (["m3@example.org"], "1:3")


@pytest.mark.parametrize("uid_last", [False, True])
def test_imap_poll_pages_with_limit_whatever_the_order_of_fetch_items(
    imap_server: FakeImap, uid_last: bool
) -> None:
    imap_server.uid_last = uid_last
    for n in range(1, 6):
        imap_server.add(message_id(n))
    inbox = inbox_for(imap_server)

    seen: list[str] = []
    cursor = None
    for _ in range(3):
        batch = inbox.poll(cursor, limit=2)
        seen += ids(batch.emails)
        cursor = batch.cursor
    assert seen == [f"m{n}@example.org" for n in range(1, 6)]
    assert cursor == "1:5"


def test_imap_a_changed_uidvalidity_reads_the_mailbox_again(
    imap_server: FakeImap, caplog: pytest.LogCaptureFixture
) -> None:
    imap_server.add(message_id(1))
    inbox = inbox_for(imap_server)
    cursor = inbox.poll(None).cursor

    imap_server.set_uidvalidity(7)
    with caplog.at_level(logging.WARNING, logger="connectors.inbox"):
        batch = inbox.poll(cursor)

    assert (ids(batch.emails), batch.cursor) == (["m1@example.org"], "7:1")
    assert "UIDVALIDITY changed from 1 to 7" in caplog.text


def test_imap_never_sets_the_seen_flag(imap_server: FakeImap) -> None:
    uid = imap_server.add(message_id(1))
    inbox_for(imap_server).poll(None)

    assert imap_server.flags(uid) == frozenset()
    fetches = [c for c in imap_server.commands if " FETCH " in c]
    assert fetches and all("BODY[]" not in c and "RFC822 " not in c for c in fetches)
    assert any("BODY.PEEK[]" in c for c in fetches)
    assert any(" EXAMINE " in c for c in imap_server.commands)


def test_the_fake_server_sets_seen_when_a_client_fetches_body_in_a_selected_mailbox(
    imap_server: FakeImap,
) -> None:
    import imaplib

    uid = imap_server.add(message_id(1))
    imap = imaplib.IMAP4("127.0.0.1", imap_server.port, timeout=5)
    imap.login(imap_server.user, imap_server.password)
    imap.select("INBOX")
    imap.uid("FETCH", str(uid), "(BODY[])")
    imap.logout()
    assert imap_server.flags(uid) == {"\\Seen"}


def test_imap_a_malformed_message_is_skipped_counted_and_logged(
    imap_server: FakeImap, caplog: pytest.LogCaptureFixture
) -> None:
    imap_server.add(message_id(1))
    bad = imap_server.add(b"\x00\x01 this is not an email")
    imap_server.add(message_id(3))

    with caplog.at_level(logging.WARNING, logger="connectors.inbox"):
        batch = inbox_for(imap_server).poll(None)

    assert (ids(batch.emails), batch.skipped, batch.cursor) == (
        ["m1@example.org", "m3@example.org"],
        1,
        "1:3",
    )
    assert f"UID {bad}" in caplog.text


def test_imap_an_oversized_message_is_skipped_without_downloading_it(
    imap_server: FakeImap,
) -> None:
    imap_server.add(message_id(1))
    big = imap_server.add(plain("x" * 5_000, Message_ID="<big@example.org>"))
    batch = ImapInbox(imap_server.url(), timeout=5, max_message_bytes=1_000).poll(None)

    assert (ids(batch.emails), batch.skipped, batch.cursor) == (["m1@example.org"], 1, "1:2")
    body_fetches = [c for c in imap_server.commands if "BODY.PEEK[]" in c]
    assert body_fetches == [body_fetches[0]] and str(big) not in body_fetches[0].split()[3]


def test_imap_a_wrong_password_is_permanent(imap_server: FakeImap) -> None:
    inbox = ImapInbox(imap_server.url(password="wrong"), timeout=5)
    with pytest.raises(PermanentConnectorError, match="AUTHENTICATIONFAILED"):
        inbox.poll(None)


def test_imap_an_unknown_mailbox_is_permanent(imap_server: FakeImap) -> None:
    with pytest.raises(PermanentConnectorError, match="cannot open the mailbox"):
        ImapInbox(imap_server.url(mailbox="Archive"), timeout=5).poll(None)


def test_imap_a_server_that_is_gone_is_transient() -> None:
    inbox = ImapInbox(f"imap://u:p@127.0.0.1:{free_port()}/INBOX", timeout=2)
    with pytest.raises(TransientConnectorError, match="cannot reach"):
        inbox.poll(None)


def test_imap_dropped_and_stalled_connections_are_transient_and_the_next_poll_works(
    imap_server: FakeImap,
) -> None:
    imap_server.add(message_id(1))
    inbox = inbox_for(imap_server, timeout=0.3)

    imap_server.fail_next(1)
    with pytest.raises(TransientConnectorError):
        inbox.poll(None)
    imap_server.fail_next(1, mode="stall")
    with pytest.raises(TransientConnectorError):
        inbox.poll(None)

    assert ids(inbox.poll(None).emails) == ["m1@example.org"]
    assert imap_server.connections == 3


def test_imap_url_credentials_and_mailbox_are_percent_decoded() -> None:
    inbox = ImapInbox(
        "imaps://me%40example.com:p%40ss%3Aw%2Frd@imap.example.com/Sent%20Items", timeout=5
    )
    assert (inbox.user, inbox._password, inbox.mailbox) == (
        "me@example.com",
        "p@ss:w/rd",
        "Sent Items",
    )
    assert (inbox.port, inbox.server) == (993, "imaps://imap.example.com:993/Sent Items")
    assert "p@ss" not in repr(inbox)


@pytest.mark.parametrize(
    "url",
    [
        "imap://u:p@imap.example.com/INBOX",  # clear text to a remote host
        "https://u:p@imap.example.com/",
        "imaps://imap.example.com/INBOX",  # no user
        "imaps://u:pässword@imap.example.com/INBOX",
    ],
)
def test_imap_urls_that_cannot_work_are_refused_at_start_up(url: str) -> None:
    with pytest.raises(InvalidParamsError):
        ImapInbox(url, timeout=5)


@pytest.mark.parametrize("cursor", ["", "1", "a:b", '{"t":0,"seen":[]}'])
def test_imap_a_foreign_cursor_is_refused(imap_server: FakeImap, cursor: str) -> None:
    with pytest.raises(InvalidParamsError):
        inbox_for(imap_server).poll(cursor)


def test_a_reply_in_the_mailbox_finds_the_action_it_answers(imap_server: FakeImap) -> None:
    sent = build_message(
        SendEmail(to="bob@example.org", subject="Proposal", body="Shall we?"),
        sender="zoe@example.com",
        idempotency_key="act-7",
    )
    reply = EmailMessage()
    reply["From"] = "bob@example.org"
    reply["Subject"] = "Re: Proposal"
    reply["In-Reply-To"] = sent["Message-ID"]
    reply.set_content(f"Yes!\n\nOn Mon, Zoe wrote:\n> {sent.get_content().strip()}\n")
    imap_server.add(reply.as_bytes())

    [email] = inbox_for(imap_server).poll(None).emails

    assert email.reply_text == "Yes!"
    assert answered_key_hashes(email, domain="example.com") == (
        hashlib.sha256(b"act-7").hexdigest()[:32],
    )


# --- Maildir -----------------------------------------------------------------------------


@pytest.fixture
def maildir(tmp_path: Path) -> mailbox.Maildir:
    return mailbox.Maildir(tmp_path / "Mail", create=True)


def deliver(box: mailbox.Maildir, raw: bytes, *, cur: bool = False) -> str:
    msg = mailbox.MaildirMessage(raw)
    if cur:
        msg.set_subdir("cur")
        msg.set_flags("S")
    return box.add(msg)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_maildir_reads_new_and_cur_once_then_only_new_messages_and_changes_nothing(
    maildir: mailbox.Maildir, tmp_path: Path
) -> None:
    deliver(maildir, message_id(1))
    deliver(maildir, message_id(2), cur=True)
    root = tmp_path / "Mail"
    before = snapshot(root)
    inbox = MaildirInbox(root)

    first = inbox.poll(None)
    assert sorted(ids(first.emails)) == ["m1@example.org", "m2@example.org"]
    assert first.skipped == 0
    again = inbox.poll(first.cursor)
    assert again.emails == ()

    deliver(maildir, message_id(3))
    third = inbox.poll(again.cursor)
    assert ids(third.emails) == ["m3@example.org"]
    assert inbox.poll(third.cursor).emails == ()
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(os.listdir(root / "new")) == sorted(
        k.split("/", 1)[1] for k in after if k.startswith("new/")
    )


def test_maildir_a_message_a_mail_client_moves_to_cur_is_not_read_again(
    maildir: mailbox.Maildir, tmp_path: Path
) -> None:
    key = deliver(maildir, message_id(1))
    inbox = MaildirInbox(tmp_path / "Mail")
    cursor = inbox.poll(None).cursor

    os.rename(tmp_path / "Mail" / "new" / key, tmp_path / "Mail" / "cur" / f"{key}:2,S")

    assert inbox.poll(cursor).emails == ()


def test_maildir_pages_with_limit_and_the_cursor_keeps_only_recent_keys(
    maildir: mailbox.Maildir, tmp_path: Path
) -> None:
    for n in range(1, 6):
        deliver(maildir, message_id(n))
    time.sleep(0.1)  # longer than the settle time: the watermark could pass all five at once
    inbox = MaildirInbox(tmp_path / "Mail", settle_seconds=0.05)

    seen: list[str] = []
    cursor = None
    for _ in range(3):
        batch = inbox.poll(cursor, limit=2)
        seen += ids(batch.emails)
        cursor = batch.cursor
    assert sorted(seen) == [f"m{n}@example.org" for n in range(1, 6)]
    assert cursor is not None and json.loads(cursor)["seen"] == []  # the cursor stays small

    deliver(maildir, message_id(6))
    newest = inbox.poll(cursor)
    assert ids(newest.emails) == ["m6@example.org"]
    assert inbox.poll(newest.cursor).emails == ()


def test_maildir_a_malformed_message_is_skipped_counted_and_logged(
    maildir: mailbox.Maildir, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deliver(maildir, message_id(1))
    bad = deliver(maildir, b"\x00 not an email")
    inbox = MaildirInbox(tmp_path / "Mail")

    with caplog.at_level(logging.WARNING, logger="connectors.inbox"):
        batch = inbox.poll(None)

    assert (ids(batch.emails), batch.skipped) == (["m1@example.org"], 1)
    assert bad in caplog.text
    assert inbox.poll(batch.cursor).skipped == 0  # not tried again


def test_maildir_that_does_not_exist_is_permanent_and_a_foreign_cursor_is_refused(
    tmp_path: Path, maildir: mailbox.Maildir
) -> None:
    with pytest.raises(PermanentConnectorError, match="not a Maildir"):
        MaildirInbox(tmp_path / "nowhere").poll(None)
    with pytest.raises(InvalidParamsError):
        MaildirInbox(tmp_path / "Mail").poll("1:2")


# --- factory -----------------------------------------------------------------------------


def test_inbox_from_picks_what_is_configured(tmp_path: Path) -> None:
    assert inbox_from(imap_url="", maildir=None, timeout=5) is None
    assert isinstance(inbox_from(imap_url="", maildir=tmp_path, timeout=5), MaildirInbox)
    imap = inbox_from(imap_url="imaps://u:p@imap.example.com/INBOX", maildir=None, timeout=5)
    assert isinstance(imap, ImapInbox)
    with pytest.raises(InvalidParamsError, match="not both"):
        inbox_from(imap_url="imaps://u:p@imap.example.com/INBOX", maildir=tmp_path, timeout=5)
