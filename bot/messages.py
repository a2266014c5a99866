"""Our own message types. Platform objects are converted into these at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_TEXT = 4000


@dataclass(frozen=True)
class InboundMessage:
    channel: str
    sender_id: str
    chat_id: str
    text: str
    platform_id: str | None = None  # update_id / event_id; used to drop redeliveries

    @property
    def sender(self) -> str:
        return f"{self.channel}:{self.sender_id}"


@dataclass(frozen=True)
class ButtonPress:
    channel: str
    sender_id: str
    chat_id: str
    data: str
    platform_id: str | None = None

    @property
    def sender(self) -> str:
        return f"{self.channel}:{self.sender_id}"


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # short opaque token, at most 64 bytes (Telegram's limit)

    def __post_init__(self) -> None:
        if len(self.data.encode()) > 64:
            raise ValueError(f"button data is {len(self.data.encode())} bytes; the limit is 64")


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: tuple[Button, ...] = field(default=())


@dataclass(frozen=True)
class Outbound:
    """A reply addressed to a chat, for notifications that do not answer a message."""

    channel: str
    chat_id: str
    reply: Reply
    # A name for the message (``draft:<job id>``) so a later one can replace it in place:
    # with ``replace``, a channel that remembers the named message edits it instead of
    # sending a new one (and sends a new one if it cannot).
    key: str | None = None
    replace: bool = False
