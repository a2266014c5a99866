"""Slack's formats, both ways: pure functions, no I/O, no Slack SDK.

Outbound, a :class:`~bot.messages.Reply` becomes Block Kit: sections of ``mrkdwn`` text, then
an actions block with the buttons. Slack's ``mrkdwn`` gives ``&``, ``<`` and ``>`` a meaning
(``<…>`` is a link, a mention or a command), so every piece of our text is escaped here and
a name like ``A_B <x> & co`` arrives intact. A section holds at most 3,000 characters: the
*plain* text is split on line boundaries and each part escaped afterwards (measuring the
escaped length), so a split never falls inside ``&amp;``. A long reply becomes several
sections, then several messages; the buttons go on the last one. Each button's ``value`` is
the reply's short opaque token and its ``action_id`` is ``opcore_btn_<i>``.

Inbound, events, slash commands and button presses become our own
:class:`~bot.messages.InboundMessage` / :class:`~bot.messages.ButtonPress`, or
:class:`Ignored` with the reason (the bot's own messages, edits, malformed payloads). Slack
sends what the user typed with ``&``, ``<``, ``>`` escaped and links, emails and mentions
marked up (``&lt;<mailto:jane@acme.example|jane@acme.example>&gt;``); :func:`plain_text`
turns that back into what was typed (``<jane@acme.example>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from bot.buttons import ApprovalChoice, parse_button
from bot.commands import COMMANDS
from bot.messages import Button, ButtonPress, InboundMessage, Reply

CHANNEL = "slack"

SECTION_LIMIT = 3000  # characters of a section's text (Slack refuses more)
SECTIONS_PER_MESSAGE = 10  # Slack allows 50 blocks; 10 full sections keep a message ≤ 30k
MAX_MESSAGES = 8  # a reply longer than this many messages is cut (the full text is in the log)
BUTTONS_PER_BLOCK = 25  # elements of one actions block
LABEL_LIMIT = 75  # characters of a button's label
MAX_BLOCKS = 50  # blocks of one message
ACTION_PREFIX = "opcore_btn_"
ACTION_ID = re.compile(rf"^{ACTION_PREFIX}\d+$")
CUT = "\n… (cut: too long for Slack; the full text is in the log)"

_USER_ID = re.compile(r"^[A-Za-z0-9_]{2,40}$")
_MARKUP = re.compile(r"<([^<>]*)>")
_ENTITIES = re.compile(r"&(amp|lt|gt);")


@dataclass(frozen=True)
class SlackMessage:
    """One message to post: the fallback ``text`` (notifications, screen readers; Slack
    treats it as mrkdwn, so it is escaped too) and the blocks that show it."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


# Text ------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Slack's escaping: only ``&``, ``<`` and ``>`` are special (and ``&`` first)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return _ENTITIES.sub(lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m.group(1)], text)


def _from_markup(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):  # a user: <@U123> or <@U123|sam>
        return f"@{label}" if label else f"<{target}>"
    if target.startswith("#"):  # a channel: <#C123|general>
        return f"#{label}" if label else target
    if target.startswith("!"):  # <!here>, <!subteam^S1|@team>, <!date^…|fallback>
        return label or f"@{target[1:].split('^')[0]}"
    if target.startswith("mailto:"):
        return target.removeprefix("mailto:")
    if re.match(r"^[a-z][a-z0-9+.-]*://", target):
        bare = re.sub(r"^[a-z][a-z0-9+.-]*://", "", target)
        if not label or label in {target, bare, bare.rstrip("/")}:
            return label or target
        return f"{label} ({target})"
    return match.group(0)  # not Slack markup: leave it as it came


def plain_text(text: str) -> str:
    """What the user typed, from the text of a Slack message or slash command: links,
    emails, channels and special mentions back to their text, ``&lt;`` back to ``<``. User
    mentions stay ``<@U123>``."""
    return unescape(_MARKUP.sub(_from_markup, text))


def mention(user_id: str) -> str:
    """``<@U123>`` (a clickable name in Slack); an id that is not one is shown escaped."""
    return f"<@{user_id}>" if _USER_ID.match(user_id) else escape(user_id)


def _escaped_len(text: str) -> int:
    return len(text) + 3 * (text.count("<") + text.count(">")) + 4 * text.count("&")


def _longest_prefix(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` once escaped; at least 1, so a
    caller cutting in a loop always advances."""
    total = 0
    for i, char in enumerate(text):
        total += _escaped_len(char)
        if total > limit:
            return max(i, 1)
    return len(text)


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Split plain ``text`` into parts whose escaped length is at most ``limit``, on line
    boundaries. Nothing is lost: each line is whole in one part, except a line longer than
    a whole part, which is cut into consecutive parts."""
    parts: list[str] = []
    current: str | None = None  # None: nothing in the current part yet
    size = 0
    for line in text.split("\n"):
        line_size = _escaped_len(line)
        if current is not None:
            if size + 1 + line_size <= limit:
                current, size = f"{current}\n{line}", size + 1 + line_size
                continue
            parts.append(current)
        while line_size > limit:
            cut = _longest_prefix(line, limit)
            parts.append(line[:cut])
            line = line[cut:]
            line_size = _escaped_len(line)
        current, size = line, line_size
    parts.append(current or "")
    return parts


def fit(text: str, limit: int) -> str:
    """``text`` escaped, shortened (with "…") so that it is at most ``limit`` characters."""
    if _escaped_len(text) <= limit:
        return escape(text)
    return escape(text[: _longest_prefix(text, max(limit - 1, 1))]) + "…"


# Blocks ----------------------------------------------------------------------------------


def section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


def _label(text: str) -> str:
    return text if len(text) <= LABEL_LIMIT else text[: LABEL_LIMIT - 1] + "…"


def button_blocks(buttons: tuple[Button, ...]) -> list[dict[str, Any]]:
    """Actions blocks of Block Kit buttons: ``value`` is the button's opaque token,
    ``action_id`` is ``opcore_btn_<i>`` (unique in the message)."""
    elements: list[dict[str, Any]] = []
    for i, button in enumerate(buttons):
        element: dict[str, Any] = {
            "type": "button",
            "action_id": f"{ACTION_PREFIX}{i}",
            "text": {"type": "plain_text", "text": _label(button.label) or "…", "emoji": True},
            "value": button.data,
        }
        choice = parse_button(button.data)
        if isinstance(choice, ApprovalChoice) and choice.approve:
            element["style"] = "primary"
        elements.append(element)
    return [
        {"type": "actions", "elements": elements[i : i + BUTTONS_PER_BLOCK]}
        for i in range(0, len(elements), BUTTONS_PER_BLOCK)
    ]


def render(reply: Reply) -> list[SlackMessage]:
    """The messages that show ``reply``: escaped sections under Slack's limits, the buttons
    on the last message. An empty reply (no text, no buttons) renders to nothing."""
    if not reply.text.strip() and not reply.buttons:
        return []
    parts = [p for p in split_text(reply.text) if p.strip()]
    groups = [
        parts[i : i + SECTIONS_PER_MESSAGE] for i in range(0, len(parts), SECTIONS_PER_MESSAGE)
    ]
    if len(groups) > MAX_MESSAGES:
        groups = groups[:MAX_MESSAGES]
        last = groups[-1][-1]
        groups[-1][-1] = split_text(last, SECTION_LIMIT - _escaped_len(CUT))[0] + CUT
    messages = [
        SlackMessage(escape(group[0]), [section(escape(p)) for p in group]) for group in groups
    ]
    if reply.buttons:
        actions = button_blocks(reply.buttons)
        if messages:
            last_message = messages[-1]
            messages[-1] = SlackMessage(last_message.text, [*last_message.blocks, *actions])
        else:
            labels = " / ".join(b.label for b in reply.buttons)
            messages = [SlackMessage(fit(labels, SECTION_LIMIT), actions)]
    return messages


def decided(message: Mapping[str, Any], outcome: str, user_id: str) -> SlackMessage:
    """What a message with buttons is updated to after a decision: its blocks without the
    buttons, then the outcome and who decided. ``message`` is the message as Slack sent it
    back with the button press (its text and blocks already in Slack's format)."""
    shown = message.get("blocks")
    blocks = [
        b
        for b in (shown if isinstance(shown, list) else [])
        if isinstance(b, dict) and b.get("type") != "actions"
    ][: MAX_BLOCKS - 1]
    original = message.get("text")
    original = original if isinstance(original, str) else ""
    if not blocks and original.strip():
        blocks = [section(original[:SECTION_LIMIT])]
    who = mention(user_id)
    line = f"*{fit(outcome, SECTION_LIMIT - len(who) - 8)}*\nby {who}"
    blocks.append(section(line))
    tail = f"{fit(outcome, 1000)} (by {who})"
    head = re.sub(r"&[a-z]*$", "", original[: SECTION_LIMIT - len(tail) - 2]).rstrip()
    return SlackMessage(f"{head}\n\n{tail}" if head else tail, blocks)


# Inbound: Slack payloads -> our messages -----------------------------------------------


@dataclass(frozen=True)
class Ignored:
    """A payload that is not for us; ``routine`` ones (our own messages, edits) are only
    logged at debug level, the others (malformed) as warnings."""

    reason: str
    routine: bool = False


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def as_dict(value: object) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], value) if isinstance(value, dict) else {}


def malformed(body: object) -> str | None:
    """Pure: why a request body cannot be handled at all, or ``None`` if Bolt may have it."""
    if not isinstance(body, dict):
        return f"the body is {type(body).__name__}, not an object"
    if not isinstance(body.get("event", {}), dict):  # Bolt's middleware reads it, any type
        return f"an event that is {type(body['event']).__name__}, not an object"
    kind = body.get("type")
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return "an event callback without an event"
        for key in ("user", "channel", "bot_id", "subtype", "channel_type"):
            if key in event and not isinstance(event[key], str | None):
                return f"an event whose {key} is {type(event[key]).__name__}"
    elif kind in ("block_actions", "interactive_message"):  # Bolt reads actions[0] of both
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions:
            return "a button press without actions"
        if not all(isinstance(a, dict) for a in actions):
            return "a button press whose actions are not objects"
        if kind == "block_actions" and not all(
            isinstance(a.get("action_id"), str) for a in actions
        ):
            return "a button press without an action_id"  # Bolt's matcher reads actions[0]'s
        for key in ("user", "channel", "container", "message", "team"):
            if key in body and not isinstance(body[key], dict | None):
                return f"a button press whose {key} is {type(body[key]).__name__}"
    if "callback_id" in body and not isinstance(body["callback_id"], str):
        return f"a payload whose callback_id is {type(body['callback_id']).__name__}"
    return None


def _strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        return re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return re.sub(r"^\s*<@[A-Z0-9]+(?:\|[^>]*)?>", "", text)


def sender_id(user: str, sender_team: str | None, own_team: str | None) -> str:
    """Who sent it, as the operator list names people: ``U123`` for a member of the bot's own
    workspace, ``T999/U123`` for someone from another one (a Slack Connect channel), so an
    operator is bound to the workspace and never matched by a user id alone."""
    if sender_team and own_team and sender_team != own_team:
        return f"{sender_team}/{user}"
    return user


def slack_user(sender: str) -> str:
    """The Slack user id inside a sender id (``T999/U123`` -> ``U123``), for Slack's API."""
    return sender.rpartition("/")[2]


def message_from_event(
    body: Mapping[str, Any], *, bot_user_id: str | None, own_team: str | None = None
) -> InboundMessage | Ignored:
    """Pure: the message a ``message`` or ``app_mention`` event carries for the dispatcher."""
    event = as_dict(body.get("event"))
    kind = event.get("type")
    if event.get("bot_id") or event.get("subtype"):
        return Ignored(f"a {kind} event from a bot, or an edit ({event.get('subtype')})", True)
    if kind == "message" and event.get("channel_type") != "im":
        return Ignored("a message outside a direct message", True)
    user, channel, text = as_str(event.get("user")), as_str(event.get("channel")), event.get("text")
    if user is not None and user == bot_user_id:
        return Ignored("the bot's own message", True)
    if user is None or channel is None or not isinstance(text, str):
        return Ignored(f"a {kind} event without user, channel or text")
    if kind == "app_mention":
        text = _strip_mention(text, bot_user_id)
    team = as_str(event.get("user_team")) or as_str(body.get("team_id"))
    return InboundMessage(
        CHANNEL,
        sender_id(user, team, own_team),
        channel,
        as_command(plain_text(text)),
        platform_id=as_str(body.get("event_id")),
    )


def as_command(text: str) -> str:
    """``lead Jane …`` -> ``/lead Jane …``: Slack's composer takes a message starting with
    ``/`` for one of Slack's own commands, so in a DM or a mention a command is typed
    without it. Anything else is left as it is."""
    text = text.strip()
    first = text.split(maxsplit=1)[0].lower() if text else ""
    return f"/{text}" if first in COMMANDS else text


def message_from_command(
    command: Mapping[str, Any], *, own_team: str | None = None
) -> InboundMessage | Ignored:
    """Pure: ``/opcore lead Jane …`` -> ``/lead Jane …`` (bare ``/opcore`` -> ``/help``)."""
    user, channel = as_str(command.get("user_id")), as_str(command.get("channel_id"))
    text = command.get("text")
    if user is None or channel is None or not isinstance(text, str | None):
        return Ignored("a slash command without user or channel")
    words = plain_text(text or "").strip().lstrip("/")
    team = as_str(command.get("user_team_id")) or as_str(command.get("team_id"))
    return InboundMessage(
        CHANNEL,
        sender_id(user, team, own_team),
        channel,
        f"/{words}" if words else "/help",
        platform_id=as_str(command.get("trigger_id")),
    )


def press_from_action(
    body: Mapping[str, Any], action: Mapping[str, Any], *, own_team: str | None = None
) -> ButtonPress | Ignored:
    """Pure: the press of one of our buttons (its value is the opaque token)."""
    user = as_str(as_dict(body.get("user")).get("id"))
    channel = as_str(as_dict(body.get("channel")).get("id")) or as_str(
        as_dict(body.get("container")).get("channel_id")
    )
    value = action.get("value")
    if user is None or channel is None or not isinstance(value, str):
        return Ignored("a button press without user, channel or value")
    # action_ts is a time, not an id: two people pressing in the same microsecond share it.
    stamp = as_str(action.get("action_ts")) or as_str(body.get("trigger_id"))
    platform_id = f"{user}:{stamp}" if stamp else None
    team = as_str(as_dict(body.get("user")).get("team_id")) or as_str(
        as_dict(body.get("team")).get("id")
    )
    who = sender_id(user, team, own_team)
    return ButtonPress(CHANNEL, who, channel, value, platform_id=platform_id)
