"""Inbox polling: replies read from the configured inbox become events in the log.

:class:`InboxPoller` reads what is new in the inbox (IMAP or Maildir, ``connectors.inbox``)
after the cursor of the last ``InboxPolled`` event, and appends one ``EmailReceived`` per
message with the idempotency key ``email:<message id>``: to the sender's contact stream
(``contact-<id>``) when the From address is a known contact, else to the ``inbox`` stream.
A message that replies to an email opcore sent (its In-Reply-To or References name a
Message-ID that ``build_message`` derived from an action's idempotency key) carries that
action's id in ``answers_action``. Auto-replies, bounces and bulk mail are recorded too, with
``auto_submitted=True``: the history keeps them, and the conductor does not ask about them.

Then ``InboxPolled`` is appended with the new cursor, after the messages: a crash between the
two reads the same messages again on the next poll, and their keys drop the duplicates
(reading is at least once, recording exactly once). When nothing arrived, the cursor is
stored only when it is the first one or the last one is older than :data:`CURSOR_REFRESH`, so
an idle inbox does not fill the log.

A connector failure (server down, bad password, missing Maildir) or a store failure is
logged and the poll ends; the next poll tries again. Nothing here raises to the scheduler.
Email content is untrusted data (DESIGN.md, invariant 6): it is recorded, never acted upon.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from config import Settings
from connectors.errors import ConnectorError, InvalidParamsError, TransientConnectorError
from connectors.inbox import (
    ImapInbox,
    InboundEmail,
    Inbox,
    MaildirInbox,
    answered_key_hashes,
    inbox_from,
    key_hash,
)
from jobs.errors import InboxSetupError
from store import events as ev
from store import queries
from store.errors import StoreError
from store.log import EventLog, to_recorded, utcnow
from store.models import ActionRow, EventRecord

logger = logging.getLogger(__name__)

INBOX_STREAM = "inbox"  # InboxPolled, and the mail of senders who are not contacts
ACTOR = "inbox"
BATCH = 100  # messages per read of the inbox
MAX_BATCHES = 10  # reads per poll; what is left comes at the next poll
CURSOR_REFRESH = timedelta(hours=1)  # an idle inbox stores its cursor at most this often
IMAP_TIMEOUT = 30.0  # seconds per IMAP session
_MAX_KEY = 255  # the log's idempotency key column


def email_key(message_id: str) -> str:
    """The idempotency key of a message's ``EmailReceived``: ``email:<message id>``, or a
    hash of the id when it would not fit the log's key column."""
    key = f"email:{message_id}"
    if len(key) <= _MAX_KEY:
        return key
    return f"email:sha256:{hashlib.sha256(message_id.encode()).hexdigest()}"


def _text(value: str) -> str:
    """Text as the log can hold it everywhere: PostgreSQL refuses NUL characters, JSON lone
    surrogates (what a charset such as utf-7 or a literal ``\\ud800`` beside an encoded word
    decodes to), and one message it refused would stop the inbox at that message for good."""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def inbox_name(inbox: Inbox) -> str:
    """What ``InboxPolled.inbox`` calls this inbox (no password): a cursor belongs to one."""
    if isinstance(inbox, ImapInbox):
        return f"imap:{inbox.user}@{inbox.host}:{inbox.port}/{inbox.mailbox}"
    if isinstance(inbox, MaildirInbox):
        return f"maildir:{inbox.path.expanduser().resolve()}"
    return repr(inbox)


@dataclass(frozen=True)
class SavedCursor:
    cursor: str
    at: datetime


def last_cursor(name: str) -> SavedCursor | None:
    """The cursor of the last ``InboxPolled`` for the inbox ``name``, newest first."""
    rows = (
        EventRecord.select()
        .where(
            (EventRecord.stream_id == INBOX_STREAM) & (EventRecord.type == ev.InboxPolled.type_name)
        )
        .order_by(EventRecord.version.desc())
    )
    for row in rows.iterator():
        event = to_recorded(row)
        if isinstance(event.data, ev.InboxPolled) and event.data.inbox == name:
            return SavedCursor(event.data.cursor, event.recorded_at)
    return None


def sent_email_actions(hashes: Iterable[str]) -> dict[str, str]:
    """Key hash -> action id, for the ``email.send_email`` actions whose idempotency key
    hashes to one of ``hashes`` (what :func:`connectors.inbox.key_hash` puts in the
    Message-ID of the email it sent). The read model has no column for the hash, so the
    actions' keys are hashed here."""
    wanted = set(hashes)
    if not wanted:
        return {}
    found: dict[str, str] = {}
    rows = ActionRow.select(ActionRow.action_id, ActionRow.idempotency_key).where(
        (ActionRow.connector == "email") & (ActionRow.action == "send_email")
    )
    for row in rows.iterator():
        digest = key_hash(row.idempotency_key)
        if digest in wanted:
            found[digest] = row.action_id
    return found


@dataclass(frozen=True)
class PollReport:
    """What one poll did: emails newly recorded, already in the log, unreadable ones."""

    recorded: int = 0
    duplicates: int = 0
    skipped: int = 0


class InboxPoller:
    """Reads new mail into the log; one poll at a time per instance (a second caller while
    one runs returns at once)."""

    def __init__(self, log: EventLog, inbox: Inbox, *, name: str | None = None) -> None:
        self._log = log
        self._inbox = inbox
        self.name = name or inbox_name(inbox)
        self._busy = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, log: EventLog) -> InboxPoller | None:
        """The poller of the configured inbox (``imap_url`` or ``maildir``), None when
        neither is set. Settings that cannot work raise :class:`InboxSetupError` at start."""
        try:
            inbox = inbox_from(
                imap_url=settings.imap_url.get_secret_value(),
                maildir=settings.maildir,
                timeout=IMAP_TIMEOUT,
            )
        except InvalidParamsError as exc:
            raise InboxSetupError(f"OPCORE_IMAP_URL / OPCORE_MAILDIR: {exc}") from exc
        return None if inbox is None else cls(log, inbox)

    def __call__(self, *, now: datetime | None = None) -> int:
        """The reconciler's hook: :meth:`poll`, returning how many emails were recorded."""
        return self.poll(now=now).recorded

    def poll(self, *, now: datetime | None = None) -> PollReport:
        """Read what is new and record it. Never raises for a connector or store failure:
        it is logged, and the next poll starts again from the last stored cursor."""
        if not self._busy.acquire(blocking=False):
            logger.info("inbox %s: a poll is already running", self.name)
            return PollReport()
        try:
            return self._poll(now or utcnow())
        finally:
            self._busy.release()

    def _poll(self, now: datetime) -> PollReport:
        report = PollReport()
        try:
            saved = last_cursor(self.name)
            cursor = saved.cursor if saved is not None else None
            for _ in range(MAX_BATCHES):
                batch = self._inbox.poll(cursor, limit=BATCH)
                recorded, duplicates = self._record_all(batch.emails)
                report = PollReport(
                    report.recorded + recorded,
                    report.duplicates + duplicates,
                    report.skipped + batch.skipped,
                )
                read = len(batch.emails) + batch.skipped
                if batch.cursor is not None and (
                    read
                    or saved is None
                    or (batch.cursor != cursor and now - saved.at >= CURSOR_REFRESH)
                ):
                    self._save_cursor(batch.cursor, read)
                    saved = SavedCursor(batch.cursor, now)
                cursor = batch.cursor
                if read < BATCH:
                    break
        except TransientConnectorError as exc:
            logger.warning("inbox %s unavailable (the next poll tries again): %s", self.name, exc)
        except ConnectorError as exc:
            logger.error("inbox %s cannot be read (the next poll tries again): %s", self.name, exc)
        except StoreError as exc:
            logger.error(
                "inbox %s: recording mail failed (the next poll retries): %s", self.name, exc
            )
        if report.recorded or report.skipped:
            logger.info(
                "inbox %s: %d email(s) recorded, %d already known, %d unreadable",
                self.name,
                report.recorded,
                report.duplicates,
                report.skipped,
            )
        return report

    def _record_all(self, emails: tuple[InboundEmail, ...]) -> tuple[int, int]:
        answered = sent_email_actions(h for e in emails for h in answered_key_hashes(e))
        recorded = duplicates = 0
        for email in emails:
            action_id = next(
                (answered[h] for h in answered_key_hashes(email) if h in answered), None
            )
            if self._record(email, action_id):
                recorded += 1
            else:
                duplicates += 1
        return recorded, duplicates

    def _record(self, email: InboundEmail, answers_action: str | None) -> bool:
        """Append the message's ``EmailReceived``; False when its key was in the log."""
        contact = queries.contact_by_email(email.from_address)
        contact_id = contact.contact_id if contact is not None else None
        if contact_id is None and answers_action is not None:
            # A reply from another address (a colleague, a personal account) to an email we
            # sent: it belongs with the contact that email went to.
            contact_id = queries.get_action(answers_action).contact_id
        result = self._log.append(
            ev.contact_stream(contact_id) if contact_id is not None else INBOX_STREAM,
            [
                ev.NewEvent(
                    ev.EmailReceived(
                        message_id=_text(email.message_id),
                        in_reply_to=_text(email.in_reply_to) if email.in_reply_to else None,
                        references=[_text(r) for r in email.references],
                        from_address=_text(email.from_address),
                        from_name=_text(email.from_name),
                        subject=_text(email.subject),
                        text=_text(email.reply_text),
                        answers_action=answers_action,
                        contact_id=contact_id,
                        auto_submitted=email.auto_submitted,
                    ),
                    idempotency_key=email_key(email.message_id),
                )
            ],
            metadata=ev.Metadata(actor=ACTOR),
        )
        return not result.duplicate

    def _save_cursor(self, cursor: str, count: int) -> None:
        self._log.append(
            INBOX_STREAM,
            [ev.InboxPolled(inbox=self.name, cursor=cursor, count=count)],
            metadata=ev.Metadata(actor=ACTOR),
        )
