"""The Slack channel, on slack-bolt. It only translates (see bot/channel.py).

Socket Mode when ``OPCORE_SLACK_APP_TOKEN`` is set (no public URL needed; slack_sdk's
builtin WebSocket client), HTTP mode otherwise: a small threaded HTTP server on
``OPCORE_SLACK_HTTP_LISTEN`` serving ``/slack/events``, with Slack's request signing checked
by Bolt (a bad, missing or stale signature gets 401). ``OPCORE_SLACK_API_URL`` points the Web
API client (``auth.test`` at start, ``apps.connections.open``, ``chat.*``) elsewhere (tests).

Every request is acknowledged within Slack's 3 seconds, whatever the database does: each
listener's ack function only acks, and the work (the dispatcher blocks on the database) runs
afterwards as a Bolt *lazy listener* on the channel's own thread pool, so a full pool delays
work, never an ack. A request Bolt cannot take (malformed JSON, wrong types) is logged and
answered 400 in HTTP mode (401 if it is not signed either), acknowledged and dropped in
Socket Mode; nothing a payload contains can stop the channel.

Inbound: direct messages (``message`` events in IM channels) and app mentions (the bot's
``<@id>`` stripped) become :class:`InboundMessage` with ``platform_id`` = the ``event_id``,
so a retried delivery (``X-Slack-Retry-Num``) is dropped by the dispatcher; a retry arriving
while the first delivery is still being handled is dropped here. Slack's composer keeps a
leading ``/`` for its own commands, so in a DM or a mention ``lead Jane …`` is taken as
``/lead Jane …``. ``/opcore lead Jane …`` becomes ``/lead Jane …`` too (``platform_id`` = the
``trigger_id``). A button click becomes a
:class:`ButtonPress` whose data is the button's value (``platform_id`` = the ``action_ts``).
The bot's own messages, edits and other subtypes are ignored (and Bolt's IgnoringSelfEvents
middleware drops events of the bot user before they reach us).

Outbound: Block Kit rendered by :mod:`bot.slack_render`, posted with ``chat.postMessage``; a
429 is waited out (bounded). After a decision the message is updated with ``chat.update``
to show what was decided and by whom, without buttons. A slash command used where the bot
cannot post is answered privately through its ``response_url``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar, cast

from slack_bolt import Ack, App, BoltContext, BoltRequest, BoltResponse, Respond
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    RateLimitErrorRetryHandler,
    RetryState,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.buttons import EditChoice, parse_button
from bot.channel import Channel
from bot.dispatch import Dispatcher
from bot.errors import ChannelError
from bot.messages import ButtonPress, InboundMessage, Outbound, Reply
from bot.slack_render import (
    ACTION_ID,
    CHANNEL,
    Ignored,
    SlackMessage,
    as_dict,
    as_str,
    decided,
    malformed,
    message_from_command,
    message_from_event,
    press_from_action,
    render,
    slack_user,
)
from config import Settings

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MAX_BODY = 1_000_000  # bytes of one HTTP request; Slack's are far smaller
WORKERS = 8  # threads doing the work after the acks (each may block on the database)
RATE_LIMIT_RETRIES = 3  # tries of one Web API call when Slack answers 429
MAX_RETRY_WAIT = 30.0  # a longer Retry-After fails the call (the notifier tries again later)
FINISH_TIMEOUT = 10.0  # at stop, how long work in flight may take to finish
START_RETRY_MIN = 1.0  # Slack unreachable at start: first wait, doubling ...
START_RETRY_MAX = 60.0  # ... up to this
FAILED = "Sorry, that did not work. Try again in a moment."
BUTTON_FAILED = "Sorry, that did not work. Try again, or see /approvals."
NOT_POSTABLE = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action"}

T = TypeVar("T")


# Web API ----------------------------------------------------------------------------------


def describe(exc: SlackApiError) -> str:
    response = exc.response
    error = response.get("error") if isinstance(response.data, dict) else None
    return f"{error or 'error'} (HTTP {response.status_code})"


def _api_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"  # the client joins method names onto it


class _RateLimitRetry(RateLimitErrorRetryHandler):
    """Waits out a 429 like slack_sdk's handler, unless Slack asks for more than
    ``MAX_RETRY_WAIT`` seconds: then the call fails and its caller decides."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        values = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), [])
        try:
            return float(values[0]) <= MAX_RETRY_WAIT if values else True
        except ValueError:
            return False


def _ack(ack: Ack) -> None:
    ack()


def _ack_other(ack: Ack, body: dict[str, Any]) -> None:
    ack()  # acknowledged, so Slack does not retry an event we have no use for
    logger.debug("ignored a Slack %s event", as_dict(body.get("event")).get("type"))


# HTTP mode ---------------------------------------------------------------------------------


def _own_team(context: BoltContext) -> str | None:
    """The bot's own workspace (auth.test's team, which Bolt resolves for each request)."""
    result = context.authorize_result
    return result.team_id if result is not None else None


class _SlackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of Slack requests beyond it had
    # connections dropped (the client retries after 1 s, then 3 s: past Slack's deadline) or
    # reset (a button press Slack does not retry: lost). As the webhook server does.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, signing_secret: str) -> None:
        super().__init__(address, _SlackHTTPHandler)
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)

    def answer(self, raw: str, headers: dict[str, str]) -> BoltResponse:
        """Bolt's answer to one request; a request Bolt cannot even parse (it parses before
        it checks the signature) gets 401 if unsigned, else 400."""
        timestamp = headers.get("x-slack-request-timestamp", "")
        if not (timestamp.isascii() and timestamp.isdigit()):  # "²" is a digit to isdigit()
            return BoltResponse(status=401, body={"error": "invalid request"})
        try:
            request = BoltRequest(body=raw, headers=dict(headers))
            problem = malformed(request.body)
        except Exception as exc:  # noqa: BLE001 - whatever Bolt trips on, the request is malformed
            problem = f"unreadable ({type(exc).__name__}: {str(exc)[:100]})"
        if problem is None:
            return self.app.dispatch(request)
        if not self.verifier.is_valid_request(raw, headers):
            return BoltResponse(status=401, body={"error": "invalid request"})
        logger.warning("dropped a malformed Slack request: %s", problem)
        return BoltResponse(
            status=400, body={"error": "malformed request"}, headers={"x-slack-no-retry": "1"}
        )


class _SlackHTTPHandler(BaseHTTPRequestHandler):
    server: _SlackHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("slack http: " + format, *args)

    def do_GET(self) -> None:
        self._send(405, '{"error": "POST only"}', {"content-type": "application/json"})

    def do_POST(self) -> None:
        try:
            status, body, headers = self._handle()
        except Exception:  # one bad request must not take the server down
            logger.exception("a Slack HTTP request failed")
            status, body, headers = 500, "", {}
        self._send(status, body, headers)

    def _handle(self) -> tuple[int, str, dict[str, str]]:
        if self.path.split("?", 1)[0] != EVENTS_PATH:
            return 404, "", {}
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return 411, "", {}
        if int(length) > MAX_BODY:
            logger.warning("refused a Slack request of %s bytes", length)
            self.close_connection = True
            left = int(length) if int(length) <= 8 * MAX_BODY else 0
            while left > 0:  # read it (bounded), so the client gets to see the answer
                left -= len(self.rfile.read(min(left, 65536))) or left
            return 413, "", {}
        try:
            raw = self.rfile.read(int(length)).decode("utf-8")
        except UnicodeDecodeError:
            return 400, "", {}
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.answer(raw, headers)
        return (
            response.status,
            response.body,
            {k: v[0] for k, v in response.headers.items() if v},
        )

    def _send(self, status: int, body: str, headers: dict[str, str]) -> None:
        data = body.encode()
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in {"content-length", "connection"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


KEYED_MESSAGES = 1000  # named messages remembered for in-place replacement


# Socket Mode --------------------------------------------------------------------------------


class _SocketModeHandler(SocketModeHandler):
    """Bolt's Socket Mode adapter, except that every envelope is acknowledged: one Bolt
    cannot take (malformed) is logged and dropped, since Slack sending it again would not
    help, and nothing in it reaches the dispatcher."""

    def handle(self, client: BaseSocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        payload: dict[str, Any] | None = None
        problem = malformed(req.payload)
        if problem is None:
            try:
                headers: dict[str, str | list[str]] = {}
                if req.retry_attempt is not None:
                    headers["x-slack-retry-num"] = str(req.retry_attempt)
                request = BoltRequest(mode="socket_mode", body=req.payload, headers=dict(headers))
                response = self.app.dispatch(request)
            except Exception as exc:  # noqa: BLE001 - whatever Bolt trips on, ack and drop
                problem = f"unreadable ({type(exc).__name__}: {str(exc)[:100]})"
            else:
                if response.status != 200:
                    logger.warning("Slack %s envelope answered %d", req.type, response.status)
                elif response.body:
                    json_body = response.headers.get("content-type", [""])[0].startswith(
                        "application/json"
                    )
                    payload = json.loads(response.body) if json_body else {"text": response.body}
        if problem is not None:
            logger.warning("dropped a malformed Slack %s envelope: %s", req.type, problem)
        try:
            client.send_socket_mode_response(
                SocketModeResponse(envelope_id=req.envelope_id, payload=payload)
            )
        except Exception as exc:  # noqa: BLE001 - a lost ack means a retry, which is deduplicated
            logger.warning("could not acknowledge Slack envelope %s: %s", req.envelope_id, exc)


# The channel -----------------------------------------------------------------------------------


class SlackChannel(Channel):
    """The Slack adapter. ``run`` serves until ``stop`` is set; ``deliver`` may be called
    from any thread, running or not (it only needs the Web API)."""

    name = CHANNEL

    def __init__(self, *, settings: Settings, dispatcher: Dispatcher) -> None:
        self._token = settings.slack_bot_token.get_secret_value()
        self._app_token = settings.slack_app_token.get_secret_value()
        self._signing_secret = settings.slack_signing_secret.get_secret_value()
        if not self._token:
            raise ChannelError("Slack is not configured: set OPCORE_SLACK_BOT_TOKEN (xoxb-…)")
        if self._app_token and not self._app_token.startswith("xapp-"):
            raise ChannelError(
                "OPCORE_SLACK_APP_TOKEN must be an app-level token (xapp-…, Basic Information "
                "-> App-Level Tokens, scope connections:write)"
            )
        if not self._app_token and not self._signing_secret:
            raise ChannelError(
                "Slack needs OPCORE_SLACK_APP_TOKEN (Socket Mode) or OPCORE_SLACK_SIGNING_SECRET "
                "(HTTP mode); see bot/slack_manifest.yaml"
            )
        self._settings = settings
        self._dispatcher = dispatcher
        self._client = WebClient(
            token=self._token,
            base_url=_api_url(settings.slack_api_url),
            retry_handlers=[
                ConnectionErrorRetryHandler(),
                _RateLimitRetry(max_retry_count=RATE_LIMIT_RETRIES - 1),
            ],
        )
        self._lock = threading.Lock()
        # Named messages (a quick draft) a later one may replace in place: (channel, ts).
        self._keyed: dict[str, tuple[str, str]] = {}
        self._busy: set[str] = set()  # platform ids being handled right now
        self._ready = threading.Event()
        self._http_port: int | None = None

    @property
    def socket_mode(self) -> bool:
        return bool(self._app_token)

    @property
    def http_port(self) -> int | None:
        """The port the HTTP-mode server listens on, once it does."""
        return self._http_port

    def wait_ready(self, timeout: float) -> bool:
        """Wait until requests are being received (for callers that need to know)."""
        return self._ready.wait(timeout)

    # Running -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then finish the work in flight (bounded). Slack
        unreachable at start is retried with backoff until it answers or ``stop`` is set; a
        refused token or a port in use raise :class:`ChannelError` at once."""
        executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="slack")
        try:
            app = self._until_reachable(stop, "auth.test", lambda: self._build_app(executor))
            if app is None:
                return
            if self.socket_mode:
                self._serve_socket_mode(app, stop)
            else:
                self._serve_http(app, stop)
        finally:
            self._ready.clear()
            _finish(executor)

    def _until_reachable(
        self, stop: threading.Event, what: str, attempt: Callable[[], T]
    ) -> T | None:
        delay = START_RETRY_MIN
        while not stop.is_set():
            try:
                return attempt()
            except OSError as exc:
                logger.warning(
                    "cannot reach Slack (%s: %s); trying again in %.0f s", what, exc, delay
                )
                if stop.wait(delay):
                    break
                delay = min(delay * 2, START_RETRY_MAX)
        return None

    def _build_app(self, executor: ThreadPoolExecutor) -> App:
        try:
            app = App(
                client=self._client,  # its token; auth.test (now) and every call: slack_api_url
                signing_secret=self._signing_secret,
                request_verification_enabled=not self.socket_mode,
                token_verification_enabled=True,
                process_before_response=True,  # ack first, then the lazy listeners
                listener_executor=executor,
                raise_error_for_unhandled_request=False,
            )
        except BoltError as exc:
            raise ChannelError(f"Slack refused the bot token: {exc}") from exc
        app.event("message")(ack=_ack, lazy=[self._on_event])
        app.event("app_mention")(ack=_ack, lazy=[self._on_event])
        app.event(re.compile(r".*"))(_ack_other)
        app.command(re.compile(r"^/.+"))(ack=_ack, lazy=[self._on_command])
        app.action(ACTION_ID)(ack=_ack, lazy=[self._on_button])
        app.error(self._on_error)
        return app

    def _serve_http(self, app: App, stop: threading.Event) -> None:
        listen = self._settings.slack_http_listen
        host, _, port = listen.rpartition(":")
        try:
            server = _SlackHTTPServer((host.strip("[]"), int(port)), app, self._signing_secret)
        except OSError as exc:
            raise ChannelError(f"Slack HTTP server on {listen}: {exc}") from exc
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="slack-http",
            daemon=True,
        )
        thread.start()
        self._http_port = int(server.server_address[1])
        logger.info("Slack HTTP mode: listening on %s:%d%s", host, self._http_port, EVENTS_PATH)
        self._ready.set()
        try:
            stop.wait()
        finally:
            self._ready.clear()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def _serve_socket_mode(self, app: App, stop: threading.Event) -> None:
        handler = _SocketModeHandler(app, self._app_token, web_client=self._client)
        try:
            try:
                connected = self._until_reachable(
                    stop, "Socket Mode", lambda: _call(handler.connect)
                )
            except SlackApiError as exc:
                raise ChannelError(f"Slack refused the app-level token: {describe(exc)}") from exc
            except SlackClientError as exc:
                raise ChannelError(f"Slack Socket Mode: {exc}") from exc
            if connected is None:
                return  # stopped before Slack could be reached
            if handler.client.is_connected():
                logger.info("Slack Socket Mode: connected")
            else:  # the SDK logged why; its monitor keeps reconnecting
                logger.warning("Slack Socket Mode: the WebSocket did not open; retrying")
            self._ready.set()
            stop.wait()
        finally:
            self._ready.clear()
            _call(handler.close)

    # Outbound ----------------------------------------------------------------------------

    def deliver(self, outbound: Outbound) -> None:
        try:
            where = self._keyed.get(outbound.key) if outbound.key else None
            if outbound.replace and where is not None and self._update(where, outbound.reply):
                return
            ts = self._send(outbound.chat_id, outbound.reply)
            if outbound.key is not None and ts is not None:
                self._keyed[outbound.key] = (outbound.chat_id, ts)
                while len(self._keyed) > KEYED_MESSAGES:
                    self._keyed.pop(next(iter(self._keyed)))
        except SlackApiError as exc:
            raise ChannelError(
                f"Slack refused the message to {outbound.chat_id}: {describe(exc)}"
            ) from exc
        except Exception as exc:  # the notifier only understands ChannelError
            raise ChannelError(f"cannot reach Slack: {type(exc).__name__}: {exc}") from exc

    def _send(self, channel: str, reply: Reply) -> str | None:
        """Post ``reply`` (in parts if long); the ``ts`` of the last part. Slack and network
        errors propagate."""
        ts: str | None = None
        for message in render(reply):
            response = self._client.chat_postMessage(
                channel=channel, text=message.text, blocks=message.blocks, unfurl_links=False
            )
            ts = as_str(response.get("ts"))
        return ts

    def _update(self, where: tuple[str, str], reply: Reply) -> bool:
        """Replace a message we posted (a quick draft) in place; False if it cannot be."""
        parts = render(reply)
        if len(parts) != 1:
            return False
        channel, ts = where
        try:
            self._client.chat_update(
                channel=channel, ts=ts, text=parts[0].text, blocks=parts[0].blocks
            )
        except SlackApiError as exc:
            logger.warning("could not update Slack message %s: %s; posting anew", ts, describe(exc))
            return False
        return True

    def _reply(self, channel: str, reply: Reply, respond: Respond | None = None) -> None:
        """Answer in ``channel``; where the bot cannot post (a slash command used in a
        channel it is not in), privately through the command's ``response_url``."""
        try:
            self._send(channel, reply)
            return
        except SlackApiError as exc:
            private = respond is not None and exc.response.get("error") in NOT_POSTABLE
            if not private:
                logger.error("could not answer in Slack channel %s: %s", channel, describe(exc))
        except Exception as exc:  # noqa: BLE001 - logged; the work itself is done and recorded
            logger.error("could not answer in Slack channel %s: %s", channel, exc)
            private = False
        if private and respond is not None:
            for message in render(reply):
                self._respond(respond, message, response_type="ephemeral")

    @staticmethod
    def _respond(respond: Respond, message: SlackMessage, **options: Any) -> bool:
        try:
            result = respond(text=message.text, blocks=message.blocks, **options)
        except Exception as exc:  # noqa: BLE001 - a response_url that fails is logged
            logger.error("could not answer through Slack's response_url: %s", exc)
            return False
        if result.status_code != 200:
            logger.error("Slack's response_url answered %d: %s", result.status_code, result.body)
        return bool(result.status_code == 200)

    # Inbound -----------------------------------------------------------------------------

    @contextmanager
    def _first(self, platform_id: str | None) -> Iterator[bool]:
        """Whether this delivery is the only one of ``platform_id`` being handled now (a
        retry racing its first delivery is dropped; later ones the dispatcher drops)."""
        if platform_id is None:
            yield True
            return
        with self._lock:
            first = platform_id not in self._busy
            self._busy.add(platform_id)
        try:
            yield first
        finally:
            if first:
                with self._lock:
                    self._busy.discard(platform_id)

    def _answer(self, msg: InboundMessage, respond: Respond | None = None) -> None:
        with self._first(msg.platform_id) as first:
            if not first:
                logger.info("dropped a Slack retry of %s while handling it", msg.platform_id)
                return
            try:
                replies = self._dispatcher.handle_message(msg)
            except Exception:  # logged and answered; the channel goes on
                logger.exception("the dispatcher failed on a Slack message from %s", msg.sender)
                replies = [Reply(FAILED)]
        for reply in replies:
            self._reply(msg.chat_id, reply, respond)

    def _on_event(self, body: dict[str, Any], context: BoltContext) -> None:
        msg = message_from_event(body, bot_user_id=context.bot_user_id, own_team=_own_team(context))
        if isinstance(msg, Ignored):
            _log_ignored(msg, body.get("event_id"))
            return
        self._answer(msg)

    def _on_command(
        self, command: dict[str, Any], respond: Respond | None, context: BoltContext
    ) -> None:
        msg = message_from_command(command, own_team=_own_team(context))
        if isinstance(msg, Ignored):
            _log_ignored(msg, command.get("trigger_id"))
            return
        self._answer(msg, respond)

    def _on_button(
        self,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond | None,
        context: BoltContext,
    ) -> None:
        press = press_from_action(body, action, own_team=_own_team(context))
        if isinstance(press, Ignored):
            _log_ignored(press, body.get("trigger_id"))
            return
        with self._first(press.platform_id) as first:
            if not first:
                return
            try:
                reply = self._dispatcher.handle_button(press)
                choice = parse_button(press.data)
                decision = (
                    bool(reply.text)
                    and choice is not None
                    and not isinstance(choice, EditChoice)  # the draft still waits
                    and self._dispatcher.is_operator(press.channel, press.sender_id)
                )
            except Exception:  # logged and answered; the channel goes on
                logger.exception("the dispatcher failed on a Slack button from %s", press.sender)
                reply, decision = Reply(BUTTON_FAILED), False
        if not reply.text:
            return  # a redelivery: the first one was answered
        if decision:
            self._show_decision(body, press, reply, respond)
        else:
            self._tell(press, reply)

    def _show_decision(
        self, body: dict[str, Any], press: ButtonPress, reply: Reply, respond: Respond | None
    ) -> None:
        """Update the message the button was on: the decision and who made it, no buttons
        (so they cannot be pressed twice); if it cannot be updated, say it instead."""
        if reply.buttons:  # asked again (an input changed): the new card, with its buttons
            self._reply(press.chat_id, reply)
            reply = Reply(reply.text.split("\n")[0])
        message = as_dict(body.get("message"))
        ts = as_str(message.get("ts")) or as_str(as_dict(body.get("container")).get("message_ts"))
        update = decided(message, reply.text, slack_user(press.sender_id))
        if ts is not None and not as_dict(body.get("container")).get("is_ephemeral"):
            try:
                self._client.chat_update(
                    channel=press.chat_id, ts=ts, text=update.text, blocks=update.blocks
                )
                return
            except Exception as exc:  # noqa: BLE001 - said instead, below
                logger.warning("could not update Slack message %s after a decision: %s", ts, exc)
        elif respond is not None and self._respond(respond, update, replace_original=True):
            return
        self._reply(press.chat_id, Reply(reply.text))

    def _tell(self, press: ButtonPress, reply: Reply) -> None:
        """Answer only whoever pressed (a stranger, a button that is not ours): the message
        and its buttons stay as they are for the operator."""
        for message in render(reply):
            try:
                self._client.chat_postEphemeral(
                    channel=press.chat_id,
                    user=slack_user(press.sender_id),
                    text=message.text,
                    blocks=message.blocks,
                )
            except Exception as exc:  # noqa: BLE001 - logged; nothing else depends on it
                logger.warning("could not answer Slack user %s: %s", press.sender_id, exc)

    @staticmethod
    def _on_error(error: Exception, body: dict[str, Any]) -> None:
        logger.error("a Slack listener failed: %r", error, exc_info=error)


def _log_ignored(ignored: Ignored, platform_id: object) -> None:
    if ignored.routine:
        logger.debug("ignored Slack delivery %s: %s", platform_id, ignored.reason)
    else:
        logger.warning("dropped Slack delivery %s: %s", platform_id, ignored.reason)


def _call(method: object) -> bool:
    """Call one of the Socket Mode adapter's (unannotated) methods."""
    cast(Callable[[], None], method)()
    return True


def _finish(executor: ThreadPoolExecutor) -> None:
    """Let the work in flight finish (bounded), then drop what has not started."""
    waiter = threading.Thread(target=executor.shutdown, kwargs={"wait": True}, daemon=True)
    waiter.start()
    waiter.join(timeout=FINISH_TIMEOUT)
    if waiter.is_alive():
        logger.warning("Slack work still running %.0f s after stop; leaving it", FINISH_TIMEOUT)
        executor.shutdown(wait=False, cancel_futures=True)
