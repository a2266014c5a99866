"""Rendering our replies for Telegram: pure functions, no I/O.

Text is sent with ``parse_mode=HTML``; every piece of our text is escaped here, so a name
like ``A_B*C <x> & co`` is shown as written and never breaks a message. Telegram counts
a message's length after entity parsing (``&amp;`` is one character), in UTF-16 code units,
and refuses more than 4,096. We split the *plain* text on line boundaries and escape each
part afterwards, so a split never falls inside an HTML entity, and put the buttons on the
last part. Buttons become one row of an inline keyboard whose ``callback_data`` is the
button's short opaque token (at most 64 bytes, checked by :class:`bot.messages.Button`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import CallbackQueryLimit, MessageLimit

from bot.messages import Button, Reply

LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096
ANSWER_LIMIT = int(CallbackQueryLimit.ANSWER_CALLBACK_QUERY_TEXT_LENGTH)  # 200
MAX_PARTS = 8  # a reply longer than this many messages is cut (the trace is in the log)
EMPTY = "…"  # Telegram refuses an empty text; a reply with only buttons shows this
CUT = "\n… (cut: too long for Telegram)"


@dataclass(frozen=True)
class Rendered:
    """One message to send: HTML text and, on the last part of a reply, its keyboard."""

    html: str
    keyboard: InlineKeyboardMarkup | None = None


def escape(text: str) -> str:
    """Escape for ``parse_mode=HTML``: ``&``, ``<`` and ``>`` (quotes need no escaping)."""
    return html.escape(text, quote=False)


def units(text: str) -> int:
    """Telegram's length of a text: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def _longest_prefix(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` units; at least 1, so a caller
    cutting in a loop always advances."""
    total = 0
    for i, char in enumerate(text):
        total += units(char)
        if total > limit:
            return max(i, 1)
    return len(text)


def split_text(text: str, limit: int = LIMIT) -> list[str]:
    """Split plain ``text`` into parts of at most ``limit`` units, on line boundaries.
    Nothing is lost: each line is whole in one part, except a line longer than a whole
    message, which is cut into consecutive parts."""
    parts: list[str] = []
    current: str | None = None  # None: nothing in the current part yet
    size = 0
    for line in text.split("\n"):
        line_size = units(line)
        if current is not None:
            if size + 1 + line_size <= limit:
                current, size = f"{current}\n{line}", size + 1 + line_size
                continue
            parts.append(current)
        while line_size > limit:  # a line longer than a whole message
            cut = _longest_prefix(line, limit)
            parts.append(line[:cut])
            line = line[cut:]
            line_size = units(line)
        current, size = line, line_size
    parts.append(current or "")
    return parts


def keyboard(buttons: tuple[Button, ...]) -> InlineKeyboardMarkup | None:
    """One row of inline buttons; ``callback_data`` is the button's opaque token."""
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in buttons]]
    )


def render(reply: Reply, *, limit: int = LIMIT, max_parts: int = MAX_PARTS) -> list[Rendered]:
    """The messages that show ``reply``: escaped HTML parts under ``limit``, buttons on the
    last. An empty reply (no text, no buttons) renders to nothing."""
    if not reply.text.strip() and not reply.buttons:
        return []
    parts = [p for p in split_text(reply.text, limit) if p.strip()] or [EMPTY]
    if len(parts) > max_parts:
        last = split_text(parts[max_parts - 1], limit - units(CUT))[0]
        parts = [*parts[: max_parts - 1], last + CUT]
    rendered = [Rendered(escape(p)) for p in parts]
    rendered[-1] = Rendered(rendered[-1].html, keyboard(reply.buttons))
    return rendered


def fit(text: str, limit: int) -> str:
    """``text`` escaped, shortened (with "…") so that it shows at most ``limit`` units."""
    if units(text) <= limit:
        return escape(text)
    return escape(text[: _longest_prefix(text, max(limit - 1, 1))]) + "…"


def decided(original: str, outcome: str, who: str, *, limit: int = LIMIT) -> str:
    """The text a decided message is edited to: the original, then the decision and who
    made it (the original is shortened if the whole would be too long)."""
    outcome, who = fit(outcome, 1000), fit(who, 200)
    tail = f"\n\n<b>{outcome}</b>\nby {who}"
    if not original.strip():
        return tail.lstrip("\n")
    shown = units(html.unescape(f"\n\n{outcome}\nby {who}"))  # what Telegram counts
    return fit(original, limit - shown) + tail


def answer_text(text: str) -> str:
    """The toast shown to whoever pressed a button (Telegram allows 200 characters)."""
    if units(text) <= ANSWER_LIMIT:
        return text
    return text[: _longest_prefix(text, ANSWER_LIMIT - 1)] + "…"
