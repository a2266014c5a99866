"""The /digest command, and the digest message the notifier shares with it.

A digest is text plus, for the first few decisions it lists that are still waiting, the same
Approve / Reject buttons a proposal card has, numbered like the list (``Approve 1``). The
daily one goes to the home channel, else to the chat the operator last asked something from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from bot.buttons import ApprovalChoice, approval_buttons, parse_button
from bot.commands import ParsedCommand
from bot.messages import Button, InboundMessage, Outbound, Reply
from jobs.digest import BUTTONS, DigestService, waiting_approvals
from store import events as ev
from store import queries
from store.log import utcnow

Handler = Callable[[InboundMessage, ParsedCommand], list[Reply]]

CHAT_CHANNELS = ("console", "telegram", "slack")
FALLBACK_CHAT = ("console", "local")


def digest_buttons(tokens: Sequence[str]) -> tuple[Button, ...]:
    """Approve / Reject for the first :data:`BUTTONS` of ``tokens`` (numbered as the digest
    lists them, from 1) that are still pending now."""
    buttons: list[Button] = []
    offered = 0
    for n, token in enumerate(tokens, start=1):
        if offered == BUTTONS:
            break
        if queries.get_approval(token).status != "pending":
            continue
        offered += 1
        for button in approval_buttons(token, approve_label=f"Approve {n}"):
            choice = parse_button(button.data)
            if isinstance(choice, ApprovalChoice) and not choice.approve:
                button = replace(button, label=f"Reject {n}")
            buttons.append(button)
    return tuple(buttons)


def digest_reply(text: str, tokens: Sequence[str]) -> Reply:
    return Reply(text, digest_buttons(tokens))


def operator_chat() -> tuple[str, str]:
    """The chat of the most recently requested job an operator asked for in a chat, else
    the console."""
    for job in queries.list_jobs(limit=50):
        if job.channel in CHAT_CHANNELS and job.requested_by.startswith(f"{job.channel}:"):
            return job.channel, job.chat_id
    return FALLBACK_CHAT


def daily_notification(event: ev.RecordedEvent) -> Outbound | None:
    """The notifier's message for a ``DigestSent``: daily ones only (``/digest`` answers
    on-demand ones itself). Buttons go on the approvals the digest listed that still wait."""
    data = event.data
    if not isinstance(data, ev.DigestSent) or data.kind != "daily":
        return None
    tokens = [a.token for a in waiting_approvals(event.recorded_at)]
    channel, chat_id = operator_chat()
    return Outbound(channel, chat_id, digest_reply(data.text, tokens))


class DigestCommands:
    """The handlers, registered by the dispatcher."""

    def __init__(self, digests: DigestService, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._digests = digests
        self._clock = clock

    def handlers(self) -> dict[str, Handler]:
        return {"digest": self.digest}

    def digest(self, msg: InboundMessage, cmd: ParsedCommand) -> list[Reply]:
        made = self._digests.on_demand(now=self._clock(), by=msg.sender)
        return [digest_reply(made.text, made.approval_tokens)]
