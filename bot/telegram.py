"""The Telegram channel, on python-telegram-bot. It only translates (see bot/channel.py).

Long polling by default; webhook mode when ``OPCORE_TELEGRAM_WEBHOOK_URL`` is set (PTB's
webhook server answers 403 to a request without the right
``X-Telegram-Bot-Api-Secret-Token``). ``OPCORE_TELEGRAM_API_URL`` points the bot at a
self-hosted Bot API server, or at the test suite's local one.

Replies are sent as HTML, escaped, split under Telegram's 4096-character limit on line
boundaries; approval buttons are inline keyboards whose ``callback_data`` is the short
opaque token. Every button press is answered at once, and the message it came from is
edited to show the decision and who made it, without buttons, so it cannot be pressed twice.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
import warnings
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import MessageLimit, ParseMode
from telegram.error import ChatMigrated, RetryAfter, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bot.channel import Channel
from bot.commands import COMMANDS
from bot.dispatch import Dispatcher
from bot.errors import ChannelError
from bot.messages import ButtonPress, InboundMessage, Outbound, Reply
from config import Settings

logger = logging.getLogger(__name__)

CHANNEL = "telegram"
LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096
SEND_ATTEMPTS = 4
DELIVER_TIMEOUT = 60.0
T = TypeVar("T")


def split_text(text: str, limit: int = LIMIT) -> list[str]:
    """Split plain text into parts that stay under ``limit`` once HTML-escaped, on line
    boundaries where possible (a single over-long line is cut)."""
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(html.escape(line)) > limit:  # a line longer than a whole message
            cut = limit // 6  # an escaped character is at most 6 long (&quot;)
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:cut])
            line = line[cut:]
        candidate = f"{current}\n{line}" if current else line
        if len(html.escape(candidate)) > limit:
            parts.append(current)
            current = line
        else:
            current = candidate
    if current or not parts:
        parts.append(current)
    return parts


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in reply.buttons]]
    )


def _seconds(exc: RetryAfter) -> float:
    """``retry_after`` in seconds, whether PTB gives an int or (from v23) a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB announces the type change on every access
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramChannel(Channel):
    name = CHANNEL

    def __init__(self, *, settings: Settings, dispatcher: Dispatcher) -> None:
        self._settings = settings
        self._dispatcher = dispatcher
        api = settings.telegram_api_url.rstrip("/")
        file_api = api[: -len("/bot")] + "/file/bot" if api.endswith("/bot") else api + "/file"
        self._app = (
            Application.builder()
            .token(settings.telegram_token.get_secret_value())
            .base_url(api)
            .base_file_url(file_api)
            .get_updates_read_timeout(30)
            .build()
        )
        self._app.add_handler(MessageHandler(filters.TEXT, self._on_text))
        self._app.add_handler(CallbackQueryHandler(self._on_button))
        self._app.add_handler(
            MessageHandler(~filters.TEXT & ~filters.UpdateType.EDITED, self._on_other)
        )
        self._app.add_error_handler(self._on_error)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    # Running -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self._main(stop))

    async def _main(self, stop: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            async with self._app:
                await self._app.bot.set_my_commands(
                    [BotCommand(s.name, s.help[:256]) for s in COMMANDS.values()]
                )
                await self._app.start()
                updater = self._app.updater
                assert updater is not None
                if self._settings.telegram_webhook_url:
                    host, _, port = self._settings.telegram_webhook_listen.rpartition(":")
                    await updater.start_webhook(
                        listen=host,
                        port=int(port),
                        url_path=urlsplit(self._settings.telegram_webhook_url).path.lstrip("/"),
                        webhook_url=self._settings.telegram_webhook_url,
                        secret_token=self._settings.telegram_webhook_secret.get_secret_value()
                        or None,
                    )
                else:
                    await updater.start_polling(
                        poll_interval=0.0, timeout=10, drop_pending_updates=False
                    )
                self._ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.1)
                await updater.stop()
                await self._app.stop()
        except TelegramError as exc:
            raise ChannelError(f"Telegram: {exc}") from exc
        finally:
            self._ready.clear()
            self._loop = None

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    # Outbound ----------------------------------------------------------------------------

    def deliver(self, outbound: Outbound) -> None:
        loop = self._loop
        if loop is None or not self._ready.is_set():
            raise ChannelError("the Telegram channel is not running")
        self._on_loop(loop, self._send(outbound.chat_id, outbound.reply))

    def _on_loop(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=DELIVER_TIMEOUT)
        except TelegramError as exc:
            raise ChannelError(f"Telegram: {exc}") from exc
        except TimeoutError as exc:
            future.cancel()
            raise ChannelError("Telegram did not answer in time") from exc

    async def _send(self, chat_id: str | int, reply: Reply) -> list[Message]:
        if not reply.text and not reply.buttons:
            return []
        parts = split_text(reply.text)
        sent = []
        for i, part in enumerate(parts):
            markup = keyboard(reply) if i == len(parts) - 1 else None
            message, chat_id = await self._send_one(chat_id, html.escape(part) or "…", markup)
            sent.append(message)
        return sent

    async def _send_one(
        self, chat_id: str | int, text: str, markup: InlineKeyboardMarkup | None
    ) -> tuple[Message, str | int]:
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                message = await self._app.bot.send_message(
                    chat_id=chat_id, text=text, parse_mode=ParseMode.HTML, reply_markup=markup
                )
                return message, chat_id
            except RetryAfter as exc:
                wait = _seconds(exc)
                if attempt == SEND_ATTEMPTS:
                    raise
                logger.warning(
                    "Telegram asks to wait %.1f s before sending (attempt %d)", wait, attempt
                )
                await asyncio.sleep(float(wait))
            except ChatMigrated as exc:
                logger.warning("chat %s migrated to %s; sending there", chat_id, exc.new_chat_id)
                chat_id = exc.new_chat_id
        raise ChannelError("unreachable")  # pragma: no cover - the loop returns or raises

    # Inbound -----------------------------------------------------------------------------

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user, chat = update.effective_message, update.effective_user, update.effective_chat
        if message is None or user is None or chat is None or message.text is None:
            logger.warning(
                "dropped a Telegram update without sender, chat or text: %s", update.update_id
            )
            return
        if update.edited_message is not None:
            return  # an edit of an old message is not a new instruction
        inbound = InboundMessage(
            CHANNEL, str(user.id), str(chat.id), message.text, platform_id=str(update.update_id)
        )
        replies = await asyncio.to_thread(self._dispatcher.handle_message, inbound)
        for reply in replies:
            await self._send(chat.id, reply)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        user = query.from_user
        chat_id = query.message.chat.id if query.message is not None else user.id
        press = ButtonPress(
            CHANNEL, str(user.id), str(chat_id), query.data or "", platform_id=str(update.update_id)
        )
        reply = await asyncio.to_thread(self._dispatcher.handle_button, press)
        await query.answer(text=reply.text[:200] or None)
        if not reply.text or reply.text.startswith("That button is not one of mine"):
            return
        original = query.message
        if isinstance(original, Message) and original.text is not None:
            who = user.full_name + (f" (@{user.username})" if user.username else "")
            decided = f"{html.escape(original.text)}\n\n<b>{html.escape(reply.text)}</b>\n— {html.escape(who)}"
            if len(decided) > LIMIT:
                decided = f"<b>{html.escape(reply.text)}</b>\n— {html.escape(who)}"
            try:
                await original.edit_text(decided, parse_mode=ParseMode.HTML, reply_markup=None)
            except TelegramError as exc:
                logger.warning("could not edit the decided message: %s", exc)

    async def _on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        logger.info("ignored a Telegram update with no text (update %s)", update.update_id)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        logger.error(
            "Telegram handler failed for %r: %s",
            getattr(update, "update_id", update),
            context.error,
        )
