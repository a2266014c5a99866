"""The Telegram channel, on python-telegram-bot (PTB). It only translates (see bot/channel.py).

Long polling by default; webhook mode when ``OPCORE_TELEGRAM_WEBHOOK_URL`` is set, with PTB's
own webhook server on ``OPCORE_TELEGRAM_WEBHOOK_LISTEN`` (it answers 403 to a request
without the right ``X-Telegram-Bot-Api-Secret-Token``, so the secret is required).
``OPCORE_TELEGRAM_API_URL`` points the bot at a self-hosted Bot API server, or at the test
suite's local one.

Inbound, text messages and commands become :class:`InboundMessage`, button presses
:class:`ButtonPress` (``platform_id`` = the ``update_id``, which the dispatcher uses to drop
redeliveries). Every button press is answered at once with the outcome, and after a
decision the message it came from is edited to show what was decided and by whom, without
buttons, so it cannot be pressed twice. Anything else (edits, stickers, channel posts,
updates PTB cannot even parse) is logged and dropped; a handler that fails is logged, and
the bot goes on. Outbound, replies are HTML, escaped and split by
:mod:`bot.telegram_render`; a 429 is waited out (bounded) and a chat that became a
supergroup is followed to its new id.

Updates are handled one at a time, in order (PTB's default), so a redelivered update never
races its first delivery through the dispatcher's dedup.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from datetime import timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from telegram import BotCommand, CallbackQuery, Message, Update
from telegram.constants import ParseMode
from telegram.error import ChatMigrated, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot.buttons import EditChoice, parse_button
from bot.channel import Channel
from bot.commands import COMMANDS
from bot.dispatch import Dispatcher
from bot.errors import ChannelError
from bot.messages import ButtonPress, InboundMessage, Outbound, Reply
from bot.telegram_render import Rendered, answer_text, decided, render
from config import Settings

logger = logging.getLogger(__name__)

CHANNEL = "telegram"
ALLOWED_UPDATES = (Update.MESSAGE, Update.CALLBACK_QUERY)  # all we act on; Telegram filters
POLL_TIMEOUT = timedelta(seconds=10)  # long polling: how long one getUpdates may wait
SEND_ATTEMPTS = 3  # tries of one message when Telegram answers 429
MAX_RETRY_WAIT = 30.0  # a longer 429 wait fails the send (the notifier tries again later)
KEYED_MESSAGES = 1000  # named messages remembered for in-place replacement
DELIVER_TIMEOUT = 90.0  # bound on deliver(): several parts, each possibly waiting out a 429
FINISH_TIMEOUT = 10.0  # at stop, how long deliveries in flight may take to finish
STOP_CHECK = 0.1  # how often the loop looks at the stop flag
START_RETRY_MIN = 1.0  # Telegram unreachable at start: first wait, doubling ...
START_RETRY_MAX = 60.0  # ... up to this
BUTTON_FAILED = "Sorry, that did not work. Try again, or see /approvals."
SECRET_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def sanitized_updates(payload: bytes) -> bytes:
    """A getUpdates answer in which every update PTB cannot parse is replaced by an empty
    update with the same ``update_id``. PTB parses a batch as a whole: one bad update would
    fail it, the offset would never move past it, and the bot would be stuck on it forever.
    The empty update reaches the catch-all handler, which logs it."""
    try:
        body = json.loads(payload)
    except ValueError:
        return payload
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, list):
        return payload
    clean: list[Any] = []
    for item in result:
        try:
            _check_ids(Update.de_json(item, None))
        except Exception as exc:  # noqa: BLE001 - whatever PTB trips on, it must not jam polling
            update_id = item.get("update_id") if isinstance(item, dict) else None
            if not isinstance(update_id, int):
                logger.warning("dropped a Telegram update without an update_id: %.200r", item)
                continue
            logger.warning(
                "dropped Telegram update %s, which cannot be parsed (%s: %s)",
                update_id,
                type(exc).__name__,
                exc,
            )
            clean.append({"update_id": update_id})
        else:
            clean.append(item)
    if clean == result:
        return payload
    return json.dumps({**body, "result": clean}).encode()


def _check_ids(update: Update | None) -> None:
    """PTB does not check types: a user or chat id that is not an integer parses, then PTB
    hashes it (an unhashable one ends its update fetcher: every later update is lost)."""
    if update is None:
        return
    for kind, found in (("user", update.effective_user), ("chat", update.effective_chat)):
        if found is not None and not isinstance(found.id, int):
            raise TypeError(f"the {kind} id is {type(found.id).__name__}, not an integer")


class _UpdatesRequest(HTTPXRequest):
    """The connection getUpdates uses, answering PTB with :func:`sanitized_updates`."""

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: Any = None,
        read_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        write_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        connect_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        pool_timeout: Any = HTTPXRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        code, payload = await super().do_request(
            url,
            method,
            request_data,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
        if code == HTTPStatus.OK and url.endswith("/getUpdates"):
            payload = sanitized_updates(payload)
        return code, payload


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def file_url(api_url: str) -> str:
    """``https://api.telegram.org/bot`` -> ``https://api.telegram.org/file/bot``."""
    api = api_url.rstrip("/")
    return api[: -len("/bot")] + "/file/bot" if api.endswith("/bot") else api + "/file/bot"


def retry_seconds(exc: RetryAfter) -> float:
    wait = exc.retry_after  # an int today, a timedelta in a later PTB
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


def describe(exc: TelegramError) -> str:
    if isinstance(exc, InvalidToken):
        return "Telegram refused the bot token (check OPCORE_TELEGRAM_TOKEN)"
    return f"Telegram: {exc.message}"


class TelegramChannel(Channel):
    """The Telegram adapter. ``run`` owns an asyncio loop in the calling thread; ``deliver``
    may be called from any thread while it runs."""

    name = CHANNEL

    def __init__(self, *, settings: Settings, dispatcher: Dispatcher) -> None:
        token = settings.telegram_token.get_secret_value()
        if not token:
            raise ChannelError("Telegram is not configured: set OPCORE_TELEGRAM_TOKEN")
        secret = settings.telegram_webhook_secret.get_secret_value()
        if settings.telegram_webhook_url and not (
            0 < len(secret) <= 256 and set(secret) <= SECRET_CHARS
        ):
            raise ChannelError(
                "Telegram webhook mode needs OPCORE_TELEGRAM_WEBHOOK_SECRET: 1-256 characters, "
                "letters, digits, _ and - (Telegram sends it with every update; requests "
                "without it are refused)"
            )
        self._settings = settings
        self._dispatcher = dispatcher
        api = settings.telegram_api_url.rstrip("/")
        self._app = (
            Application.builder()
            .token(token)
            .base_url(api)
            .base_file_url(file_url(api))
            .get_updates_request(_UpdatesRequest(connection_pool_size=1))
            .build()
        )
        self._app.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT, self._on_text)
        )
        self._app.add_handler(CallbackQueryHandler(self._on_button))
        self._app.add_handler(TypeHandler(Update, self._on_other))  # whatever is left
        self._app.add_error_handler(self._on_error)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._waiting: set[concurrent.futures.Future[None]] = set()  # deliver() callers
        self._sending: set[asyncio.Task[Any]] = set()  # their sends, on the loop
        self._migrated: dict[str, int] = {}  # chat id -> the supergroup it became
        # Named messages (a quick draft) that a later one may replace in place; in memory: after
        # a restart the replacement is sent as a new message.
        self._keyed: dict[str, tuple[int | str, int]] = {}
        self._started = False  # receiving updates in the current run

    # Running -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. Telegram unreachable at start (network down, DNS)
        is retried with backoff until it answers or ``stop`` is set; a refused token, a bad
        webhook or a port in use raise :class:`ChannelError` at once."""
        delay = START_RETRY_MIN
        while not stop.is_set():
            try:
                self._run_once(stop)
                return
            except NetworkError as exc:
                if self._started:
                    raise ChannelError(describe(exc)) from exc
                logger.warning("cannot reach Telegram (%s); trying again in %.0f s", exc, delay)
                if stop.wait(delay):
                    return
                delay = min(delay * 2, START_RETRY_MAX)

    def _run_once(self, stop: threading.Event) -> None:
        self._started = False
        try:
            asyncio.run(self._main(stop))
        except NetworkError:
            raise
        except TelegramError as exc:
            raise ChannelError(describe(exc)) from exc
        except OSError as exc:  # the webhook server could not listen
            raise ChannelError(
                f"Telegram webhook server on {self._settings.telegram_webhook_listen}: {exc}"
            ) from exc
        finally:
            with self._lock:
                self._loop = None
                waiting = list(self._waiting)
            for future in waiting:  # never left hanging by a loop that is gone
                future.cancel()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until updates are being received (for callers that need to know)."""
        return self._ready.wait(timeout)

    async def _main(self, stop: threading.Event) -> None:
        with self._lock:
            self._loop = asyncio.get_running_loop()
        async with self._app:  # getMe: a bad token fails here
            await self._register_commands()
            await self._app.start()
            try:
                await self._receive()
                self._started = True
                self._ready.set()
                while not stop.is_set():
                    await asyncio.sleep(STOP_CHECK)
            finally:
                self._ready.clear()  # new deliveries are refused from here on
                if self._sending:
                    await asyncio.wait(set(self._sending), timeout=FINISH_TIMEOUT)
                updater = self._app.updater
                if updater is not None and updater.running:
                    await updater.stop()
                if self._app.running:
                    await self._app.stop()

    async def _register_commands(self) -> None:
        commands = [BotCommand(spec.name, spec.help[:256]) for spec in COMMANDS.values()]
        try:
            await self._app.bot.set_my_commands(commands)
        except TelegramError as exc:  # the menu is a convenience; commands work without it
            logger.warning("could not register the Telegram command menu: %s", exc)

    async def _receive(self) -> None:
        updater = self._app.updater
        if updater is None:  # pragma: no cover - the builder always makes one
            raise ChannelError("the Telegram application has no updater")
        url = self._settings.telegram_webhook_url
        if not url:
            await updater.start_polling(
                timeout=POLL_TIMEOUT,
                allowed_updates=list(ALLOWED_UPDATES),
                drop_pending_updates=False,
                error_callback=self._on_polling_error,
            )
            logger.info("Telegram: long polling %s", self._settings.telegram_api_url)
            return
        host, _, port = self._settings.telegram_webhook_listen.rpartition(":")
        await updater.start_webhook(
            listen=host.strip("[]"),
            port=int(port),
            url_path=urlsplit(url).path.lstrip("/"),
            webhook_url=url,
            secret_token=self._settings.telegram_webhook_secret.get_secret_value(),
            allowed_updates=list(ALLOWED_UPDATES),
            drop_pending_updates=False,
        )
        logger.info(
            "Telegram: webhook %s, listening on %s", url, self._settings.telegram_webhook_listen
        )

    @staticmethod
    def _on_polling_error(exc: TelegramError) -> None:
        logger.warning("Telegram polling failed: %s; retrying", exc)

    # Outbound ----------------------------------------------------------------------------

    def deliver(self, outbound: Outbound) -> None:
        """Send from any thread: scheduled on the channel's loop, waited for (bounded)."""
        with self._lock:
            loop = self._loop
            if loop is None or not self._ready.is_set():
                raise ChannelError("the Telegram channel is not running")
            if loop is _running_loop():
                raise ChannelError("deliver() was called on the channel's own loop; await _send")
            coro = self._delivering(outbound)
            try:
                future = asyncio.run_coroutine_threadsafe(coro, loop)
            except RuntimeError as exc:  # the loop closed under us
                coro.close()
                raise ChannelError("the Telegram channel is stopping") from exc
            self._waiting.add(future)
        try:
            future.result(timeout=DELIVER_TIMEOUT)
        except TimeoutError as exc:
            future.cancel()
            raise ChannelError(
                f"Telegram did not take the message in {DELIVER_TIMEOUT:.0f} s"
            ) from exc
        except concurrent.futures.CancelledError as exc:
            raise ChannelError("the Telegram channel stopped before the message was sent") from exc
        except ChannelError:
            raise
        except TelegramError as exc:
            raise ChannelError(describe(exc)) from exc
        except Exception as exc:  # the notifier only understands ChannelError
            raise ChannelError(f"Telegram: {type(exc).__name__}: {exc}") from exc
        finally:
            with self._lock:
                self._waiting.discard(future)

    async def _delivering(self, outbound: Outbound) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sending.add(task)
        try:
            where = self._keyed.get(outbound.key) if outbound.key else None
            if outbound.replace and where is not None and await self._edit(where, outbound.reply):
                return
            chat_id, message_id = await self._send_with_id(outbound.chat_id, outbound.reply)
            if outbound.key is not None:
                self._keyed[outbound.key] = (chat_id, message_id)
                while len(self._keyed) > KEYED_MESSAGES:
                    self._keyed.pop(next(iter(self._keyed)))
        finally:
            if task is not None:
                self._sending.discard(task)

    async def _edit(self, where: tuple[int | str, int], reply: Reply) -> bool:
        """Replace a message we sent (a quick draft) in place; False if it cannot be (too
        long for one message, or Telegram refuses): the caller sends a new one."""
        parts = render(reply)
        if len(parts) != 1:
            return False
        chat_id, message_id = where
        try:
            await self._app.bot.edit_message_text(
                parts[0].html,
                chat_id=chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=parts[0].keyboard,
            )
        except TelegramError as exc:
            logger.warning("could not edit Telegram message %s: %s; sending anew", message_id, exc)
            return False
        return True

    async def _send(self, chat_id: int | str, reply: Reply) -> int | str:
        """Send ``reply`` (in parts if long); return the chat id it went to (it changes if
        the chat migrated). Telegram errors propagate."""
        return (await self._send_with_id(chat_id, reply))[0]

    async def _send_with_id(self, chat_id: int | str, reply: Reply) -> tuple[int | str, int]:
        """:meth:`_send`, also returning the id of the last message sent (the one with the
        buttons)."""
        message_id = 0
        for part in render(reply):
            chat_id, message_id = await self._send_part(chat_id, part)
        return chat_id, message_id

    async def _send_part(self, chat_id: int | str, part: Rendered) -> tuple[int | str, int]:
        chat_id = self._migrated.get(str(chat_id), chat_id)
        attempt, followed = 1, False
        while True:
            try:
                sent = await self._app.bot.send_message(
                    chat_id=chat_id,
                    text=part.html,
                    parse_mode=ParseMode.HTML,
                    reply_markup=part.keyboard,
                )
                return chat_id, sent.message_id
            except RetryAfter as exc:
                wait = retry_seconds(exc)
                if attempt >= SEND_ATTEMPTS or wait > MAX_RETRY_WAIT:
                    raise
                logger.warning(
                    "Telegram asks to wait %.1f s before sending to %s (attempt %d of %d)",
                    wait,
                    chat_id,
                    attempt,
                    SEND_ATTEMPTS,
                )
                attempt += 1
                await asyncio.sleep(wait)
            except ChatMigrated as exc:
                if followed:
                    raise
                logger.warning(
                    "Telegram chat %s became supergroup %s; sending there "
                    "(update OPCORE_HOME_CHANNEL if it names the old chat)",
                    chat_id,
                    exc.new_chat_id,
                )
                self._migrated[str(chat_id)] = exc.new_chat_id
                chat_id, followed = exc.new_chat_id, True

    # Inbound -----------------------------------------------------------------------------

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        user = message.from_user if message is not None else None
        chat = message.chat if message is not None else None
        if message is None or user is None or chat is None or not isinstance(message.text, str):
            logger.warning(
                "dropped Telegram update %s: a message without sender, chat or text",
                update.update_id,
            )
            return
        inbound = InboundMessage(
            CHANNEL, str(user.id), str(chat.id), message.text, platform_id=str(update.update_id)
        )
        replies = await asyncio.to_thread(self._dispatcher.handle_message, inbound)
        chat_id: int | str = chat.id
        for reply in replies:
            chat_id = await self._send(chat_id, reply)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        user = query.from_user if query is not None else None
        if query is None or user is None:
            logger.warning(
                "dropped Telegram update %s: a button press without sender", update.update_id
            )
            if query is not None:
                await self._answer(query, "")
            return
        message = query.message
        chat = message.chat if message is not None else None
        chat_id = chat.id if chat is not None else user.id
        data = query.data if isinstance(query.data, str) else ""  # PTB does not check types
        press = ButtonPress(
            CHANNEL, str(user.id), str(chat_id), data, platform_id=str(update.update_id)
        )
        answer = BUTTON_FAILED
        try:
            reply, decision = await asyncio.to_thread(self._press, press)
            answer = reply.text
        finally:  # answered whatever happens: the client shows a spinner until it is
            await self._answer(query, answer)
        if decision:
            await self._show_decision(query, reply, chat_id)
        elif reply.text and isinstance(parse_button(press.data), EditChoice):
            await self._send(chat_id, Reply(reply.text))  # the prompt, not only a toast

    def _press(self, press: ButtonPress) -> tuple[Reply, bool]:
        """In a worker thread: the dispatcher's answer, and whether it is a decision an
        operator took on one of our buttons (the message then shows it, without buttons)."""
        reply = self._dispatcher.handle_button(press)
        choice = parse_button(press.data)
        decision = (
            bool(reply.text)
            and choice is not None
            and not isinstance(choice, EditChoice)  # the draft still waits, buttons and all
            and self._dispatcher.is_operator(press.channel, press.sender_id)
        )
        return reply, decision

    async def _answer(self, query: CallbackQuery, text: str) -> None:
        try:
            await query.answer(text=answer_text(text) or None)
        except TelegramError as exc:  # e.g. "query is too old": the press is handled anyway
            logger.warning("could not answer Telegram button press %s: %s", query.id, exc)

    async def _show_decision(self, query: CallbackQuery, reply: Reply, chat_id: int) -> None:
        message = query.message
        if message is None:
            return
        user = query.from_user
        who = user.full_name + (f" (@{user.username})" if user.username else "")
        text = message.text if isinstance(message, Message) else None
        original = text if isinstance(text, str) else ""  # PTB does not check types
        try:
            await self._app.bot.edit_message_text(
                decided(original, reply.text.split("\n")[0] if reply.buttons else reply.text, who),
                chat_id=message.chat.id,
                message_id=message.message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=None,  # no keyboard: the buttons are gone
            )
        except TelegramError as exc:
            logger.warning(
                "could not edit Telegram message %s after a decision: %s; sending it instead",
                message.message_id,
                exc,
            )
            await self._send(chat_id, Reply(reply.text))
            return
        if reply.buttons:  # asked again (an input changed): the new card, with its buttons
            await self._send(chat_id, reply)

    async def _on_other(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update):
            return
        kinds = [key for key in update.to_dict() if key != "update_id"]
        if update.message is not None:
            logger.info("dropped Telegram update %s: a message without text", update.update_id)
        elif not kinds:
            logger.warning(
                "dropped Telegram update %s: nothing in it could be read", update.update_id
            )
        else:
            logger.info(
                "dropped Telegram update %s: %s is not something I act on",
                update.update_id,
                ", ".join(kinds),
            )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        logger.error(
            "Telegram update %s could not be handled: %r",
            update_id,
            context.error,
            exc_info=context.error,
        )
