"""The notifier: follows the log and tells the operator what jobs did.

Jobs run in workers, possibly in other processes; they never talk to a channel. The
notifier reads new events after its saved cursor, renders the ones a person should see, and
hands them to the channel that requested the job. The cursor is saved after delivery, so a
restart resends at most the last notification and never loses one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from bot import render
from bot.digest_commands import daily_notification
from bot.errors import ChannelError
from bot.messages import Outbound, Reply
from store import events as ev
from store import queries
from store.errors import NotFoundError, StoreError
from store.log import EventLog

logger = logging.getLogger(__name__)

WATCHED = (
    ev.JobCompleted.type_name,
    ev.ActionExecuted.type_name,
    ev.ActionCompensated.type_name,
    ev.QuestionAsked.type_name,  # failures for good, unknown outcomes, budgets: with buttons
    ev.BudgetWarning.type_name,
    ev.ApprovalExpired.type_name,  # only the reconciler's: a tap on an expired button is answered
    ev.ApprovalsReminded.type_name,
    ev.ApprovalRequested.type_name,  # only a quick draft's: shown while the better one is written
    ev.DigestSent.type_name,  # only the daily one: /digest answers on-demand ones itself
)

QUICK_DRAFT = "Quick draft: a better one is being written and will replace this message."


def draft_key(job_id: str) -> str:
    return f"draft:{job_id}"


def notification_for(event: ev.RecordedEvent) -> Outbound | None:
    """Pure with respect to the log: what to tell whom about ``event`` (``None``: nothing)."""
    data = event.data
    try:
        match data:
            case ev.ApprovalRequested():
                action = queries.get_action(data.action_id)
                if not action.preliminary:
                    return None  # announced when its job completes
                if queries.get_approval(data.token).status != "pending":
                    return None  # replaced or decided already: nothing to show
                job = queries.get_job(data.job_id)
                card = render.proposal(
                    job, action, queries.get_approval(data.token), headline=QUICK_DRAFT
                )
                return Outbound(job.channel, job.chat_id, card, key=draft_key(job.job_id))
            case ev.JobCompleted():
                job = queries.get_job(data.job_id)
                replies = []
                replaces_quick = False
                for action in queries.actions_for_job(job.job_id):
                    approval = queries.approval_for_action(action.action_id)
                    if approval.status == "pending":
                        replies.append(
                            render.proposal(job, action, approval, headline=data.summary)
                        )
                        if action.revises is not None:
                            replaces_quick = queries.get_action(action.revises).preliminary
                if len(replies) == 1 and replaces_quick:
                    return Outbound(
                        job.channel,
                        job.chat_id,
                        replies[0],
                        key=draft_key(job.job_id),
                        replace=True,
                    )
                reply = (
                    replies[0]
                    if len(replies) == 1
                    else Reply(f"{data.summary} [job {job.short_id}]")
                )
                if len(replies) > 1:
                    reply = Reply(
                        reply.text + f"\n{len(replies)} actions to approve: see /approvals"
                    )
                return Outbound(job.channel, job.chat_id, reply)
            case ev.QuestionAsked():
                job = queries.get_job(data.job_id)
                about = queries.get_action(data.action_id) if data.action_id else None
                q = queries.get_question(data.token)
                return Outbound(job.channel, job.chat_id, render.question(job, q, about))
            case ev.ActionExecuted():
                action = queries.get_action(data.action_id)
                job = queries.get_job(action.job_id)
                if data.details.get("manual"):
                    return None  # the operator said so; the answer to the button confirmed it
                return Outbound(job.channel, job.chat_id, Reply(render.action_done(job, action)))
            case ev.BudgetWarning():
                job = queries.get_job(data.job_id)
                text = (
                    f"Budget warning: {data.scope} has spent ${data.spent_usd:.4f} of ${data.limit_usd:.2f} "
                    f"for {data.period} (80 %). /budget for details."
                )
                return Outbound(job.channel, job.chat_id, Reply(text))
            case ev.ApprovalExpired() if event.metadata.actor == "reconciler":
                action = queries.get_action(data.action_id)
                job = queries.get_job(action.job_id)
                text = (
                    f"Expired without a decision, so not done: {action.summary}. "
                    f"(/trace {job.short_id})"
                )
                return Outbound(job.channel, job.chat_id, Reply(text))
            case ev.ApprovalsReminded():
                items = []
                for token in data.tokens:
                    approval = queries.get_approval(token)
                    if approval.status == "pending":
                        items.append((approval, queries.get_action(approval.action_id)))
                if not items:
                    return None  # all decided since
                if len(items) == 1:
                    approval, action = items[0]
                    card = render.proposal(
                        queries.get_job(approval.job_id),
                        action,
                        approval,
                        headline=f"Reminder: waiting since {render.when(approval.requested_at)}.",
                    )
                    return Outbound(data.channel, data.chat_id, card)
                return Outbound(data.channel, data.chat_id, Reply(render.reminder(data, items)))
            case ev.ActionCompensated():
                action = queries.get_action(data.action_id)
                job = queries.get_job(action.job_id)
                text = f"Undone: {action.summary} ({data.summary}; {data.reason}). (/trace {job.short_id})"
                return Outbound(job.channel, job.chat_id, Reply(text))
            case ev.DigestSent():
                return daily_notification(event)
    except NotFoundError as exc:
        logger.error("cannot render a notification for event %s: %s", event.position, exc)
    return None


def addressed(outbound: Outbound, home: str) -> Outbound:
    """Where a notification goes: the home channel if one is set (``telegram:12345``,
    ``slack:C0123``, ``console``), else the chat the job came from."""
    if not home:
        return outbound
    channel, _, chat = home.partition(":")
    return replace(outbound, channel=channel, chat_id=chat or "local")


MAX_DELIVERY_FAILURES = 5


class Notifier:
    """Polls the log for notifications addressed to ``channel`` and delivers them with
    ``deliver``. One per channel and process, each with its own cursor. A delivery that
    fails is tried again on the next poll; after a few failures it is skipped (the work it
    announced is still in /approvals and the trace)."""

    def __init__(
        self,
        *,
        log: EventLog,
        channel: str,
        deliver: Callable[[Outbound], None],
        interval: float = 0.2,
        home: str = "",
    ) -> None:
        self._log = log
        self._home = home
        self._failures = 0
        self._channel = channel
        self._deliver = deliver
        self._interval = interval
        self._cursor_name = f"notifier:{channel}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = 0
        self.caught_up = threading.Event()

    @property
    def position(self) -> int:
        return self._position

    def poll_once(self) -> int:
        """Deliver what is new; return how many notifications went out."""
        saved = queries.cursor(self._cursor_name)
        if saved is None:
            # A channel's first start: tell it what happens from now on, not the whole past.
            saved = self._log.head()
            queries.save_cursor(self._cursor_name, saved)
        self._position = saved
        sent = 0
        while True:
            batch = self._log.read_all(after=self._position, limit=200, types=WATCHED)
            if not batch:
                break
            for event in batch:
                outbound = notification_for(event)
                if outbound is not None:
                    outbound = addressed(outbound, self._home)
                if outbound is not None and outbound.channel == self._channel:
                    try:
                        self._deliver(outbound)
                    except ChannelError as exc:
                        self._failures += 1
                        if self._failures < MAX_DELIVERY_FAILURES:
                            logger.warning(
                                "notifier for %s: %s; will try again", self._channel, exc
                            )
                            return sent
                        logger.error(
                            "notifier for %s: giving up on event %d after %d failures: %s",
                            self._channel,
                            event.position,
                            self._failures,
                            exc,
                        )
                    else:
                        sent += 1
                self._failures = 0
                self._position = event.position
                queries.save_cursor(self._cursor_name, self._position)
        return sent

    def pending(self) -> bool:
        """Whether events this notifier has not delivered yet are in the log."""
        return bool(self._log.read_all(after=self._position, limit=1, types=WATCHED))

    def start(self) -> None:
        self.poll_once()
        self._thread = threading.Thread(
            target=self._run, name=f"notifier-{self._channel}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                self.caught_up.set()
            except Exception:  # a thread that dies stops all notifications: log, and poll again
                logger.exception("notifier for %s failed; retrying", self._channel)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.poll_once()  # flush what arrived since the last poll
        except StoreError as exc:
            logger.error("notifier for %s: final flush failed: %s", self._channel, exc)
