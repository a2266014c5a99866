"""The channel contract: what every chat adapter (console, Telegram, Slack) provides.

An adapter only translates. Inbound, it turns platform updates into
:class:`~bot.messages.InboundMessage` / :class:`~bot.messages.ButtonPress` and hands them to
the :class:`~bot.dispatch.Dispatcher` (whose calls block on the database: call them from a
worker thread, e.g. ``asyncio.to_thread``, never on an event loop). Outbound, it renders a
:class:`~bot.messages.Reply` natively (text, buttons) and sends it. Platform objects never
leave the adapter.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import ClassVar

from bot.messages import Outbound


class Channel(ABC):
    """A running chat channel. ``run`` blocks until ``stop`` is set; ``deliver`` is called
    from other threads (the notifier) and must be thread-safe."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Receive updates and answer them until ``stop`` is set, then clean up and return."""

    @abstractmethod
    def deliver(self, outbound: Outbound) -> None:
        """Send a notification (a job's draft with buttons, a result, a question) to
        ``outbound.chat_id``. Raise :class:`bot.errors.ChannelError` if it cannot be sent."""
