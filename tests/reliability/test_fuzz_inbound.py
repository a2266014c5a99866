"""Bad input at every inbound edge: property-based fuzzing, with the inputs tried counted.

Each edge is fed generated input through the real code path, with local fakes only:

* Telegram updates: the real PTB Application polling tests/fakes/telegram_api.py (and its
  webhook server for the secret check);
* Slack requests: the real Bolt app in HTTP mode, signed, unsigned and forged;
* inbound webhooks: the real webhook server (Stripe, GitHub, generic), real signatures over
  random bodies and forged ones;
* slash-command arguments: the real dispatcher on a seeded store;
* imported archives, contacts files (CSV, vCard) and inbound email (MIME).

The properties (DESIGN.md invariant 8): nothing raises but the package's typed errors (or
answers anything but a clean 4xx); a bad input is logged and dropped and writes nothing to
the event log (a good one writes what a good one writes); the bot still answers a valid
message afterwards; a forged signature is always 401/403; a stranger never causes a job.

Sizes come from ``sized(ci, full)`` (tests/reliability/conftest.py); every test reports how
many inputs it actually tried through the ``figures`` fixture.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from telegram import Update

from bot import slack as slack_module
from bot.commands import COMMANDS, parse_command
from bot.dispatch import Dispatcher
from bot.messages import ButtonPress, InboundMessage
from bot.slack import SlackChannel
from bot.telegram import TelegramChannel, sanitized_updates
from bot.webhook_server import WebhookServer, record_delivery
from config import Settings
from config.settings import WebhookSource
from connectors.errors import InvalidParamsError
from connectors.inbox import Inbox, InboxBatch, parse_email
from connectors.inbox import _parse_or_skip as parse_or_skip
from jobs.inbox_poll import InboxPoller, last_cursor
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService
from store import Store, open_store, queries
from store import events as ev
from store.archive import KINDS as ARCHIVE_KINDS
from store.archive import _line as archive_line
from store.archive import export_archive, import_archive
from store.contacts_io import (
    COMPANY_MAX,
    NAME_MAX,
    NOTES_MAX,
    PHONE_MAX,
    ContactFileError,
    decode,
    import_contacts,
    is_valid_email,
    read_csv,
    read_vcards,
    stored_contacts,
    write_csv,
    write_vcards,
)
from store.errors import StoreError
from store.models import FactRow, MemoryRow
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET, FakeSlack, sign
from tests.fakes.slack_api import OPERATOR as SLACK_OPERATOR
from tests.fakes.slack_api import dm_event as slack_dm
from tests.fakes.telegram_api import TOKEN, FakeTelegram, text_update
from tests.reliability.conftest import Recorder, sized

T = TypeVar("T")


def fuzz(ci: int, full: int) -> settings:
    """Hypothesis settings for one edge: ``ci`` examples in CI, ``full`` at full scale."""
    return settings(
        max_examples=sized(ci, full),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws. False comes first: Hypothesis starts from (and
    shrinks towards) the first choice, so the common case is the simple one."""
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.005)


@dataclass
class Tried:
    """Inputs actually tried, by kind (incremented inside the ``@given`` bodies)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, figures: Recorder, name: str, *, detail: bool = True) -> None:
        figures.add(name, self.total)
        for kind, n in sorted(self.counts.items()) if detail else ():
            figures.add(f"  of which {kind}", n)


class Captured(logging.Handler):
    """Log records of some loggers at or above a level, for properties on what was logged."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._lock_records:
            taken, self.records = self.records, []
        return taken


@contextmanager
def captured(*names: str, level: int = logging.ERROR) -> Iterator[Captured]:
    handler = Captured(level)
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def describe(records: list[logging.LogRecord]) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()[:300]}"
        + (f" [{type(r.exc_info[1]).__name__}: {r.exc_info[1]}]" if r.exc_info else "")
        for r in records
    ]


def new_events(store: Store, after: int) -> list[ev.RecordedEvent]:
    """The events appended after position ``after``, read back (so they can be read)."""
    return store.log.read_all(after=after, limit=100_000)


# Shared text strategies ---------------------------------------------------------------------

COMMAND_NAMES = sorted(COMMANDS)
EMAILS = (
    "jane@acme.example",
    "bob@client.example",
    "customers@list.example",
    "x@y.example",
    "not-an-address",
    "a@b",
    "jane@acme.example>",
    "<jane@acme.example>",
    "mailto:jane@acme.example",
)
WORDS = (
    "Jane",
    "Doe",
    "Acme",
    "wants",
    "a",
    "website",
    "audit",
    "to",
    "price",
    "2400",
    "EUR",
    "-1",
    "1e309",
    "weeks",
    "v1.2.3",
    "fix:",
    "feat:",
    ":",
    ";",
    ",",
    "|",
    "=",
    "rule:",
    "rate:",
    "contact:",
    "kind:",
    "all",
    "workspace",
    "lead",
    "triage",
    "0",
    "99999999999999999999",
    "<b>",
    "&amp;",
    "<@U123>",
    "@opcore_bot",
    "\x00",
    "\x7f",
    "\u202e",
    "\U0001f600",
    "\r\n",
    "\t",
    "é",
    "'",
    '"',
    "\\",
    "%s",
    "{}",
    "ap:tok:y",
    *EMAILS,
)


# A valid /lead from the operator, sent by someone without the secret or the signature: its
# address must never reach the log.
FORGED_ADDRESS = "forged@evil.example"
FORGED_LEAD = f"/lead Mallory Forger <{FORGED_ADDRESS}> wants everything"


def phrases(max_words: int = 10) -> st.SearchStrategy[str]:
    """Words opcore's parsers care about, mixed with arbitrary text."""
    word = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))
    return st.lists(word, max_size=max_words).map(" ".join)


def job_commands() -> st.SearchStrategy[str]:
    """Commands shaped like the ones that start jobs (some valid, most nearly so)."""
    email = st.one_of(st.sampled_from(EMAILS), st.emails())
    name = st.one_of(st.sampled_from(["Jane Doe", "Bob", "Ann Lee-Smith", ""]), phrases(3))
    return st.one_of(
        st.builds(lambda n, e, w: f"/lead {n} <{e}> wants {w}", name, email, phrases(6)),
        st.builds(lambda e, w: f"/triage {e}: {w}", email, phrases(8)),
        st.builds(
            lambda e, t, a, b, p, c: f"/proposal {e} {t}: {a}, {b}; price {p} {c}; 2 weeks",
            email,
            phrases(3),
            phrases(3),
            phrases(3),
            st.one_of(st.integers(-5, 10**7).map(str), phrases(1)),
            st.sampled_from(["EUR", "USD", "eur", "XXX", ""]),
        ),
        st.builds(
            lambda v, e, a, b: f"/release {v} to {e}: fix: {a}; feat: {b}",
            st.one_of(st.sampled_from(["v1.4.0", "1.0", "v", "v1.4.0-rc.1"]), phrases(1)),
            email,
            phrases(4),
            phrases(4),
        ),
    )


def message_texts() -> st.SearchStrategy[str]:
    """What someone may type to the bot: commands with random arguments, job commands,
    plain text, arbitrary text (now and then longer than the limit)."""
    command = st.builds(
        lambda name, sep, args: f"/{name}{sep}{args}",
        st.sampled_from([*COMMAND_NAMES, "unknown", "LEAD", "help@opcore_bot", "_x", "1"]),
        st.sampled_from([" ", "  ", "\n", "\t", "", "@opcore_bot "]),
        phrases(),
    )
    return st.one_of(
        command,
        job_commands(),
        phrases(),
        st.text(max_size=300),
        st.builds(
            lambda c, n: c * n, st.sampled_from(["x", "é", "\U0001f600"]), st.integers(3990, 4200)
        ),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary JSON (finite numbers: what a platform's JSON encoder can produce)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


# Edge 1: Telegram updates --------------------------------------------------------------------

TG_OPERATOR = 42
TG_STRANGER = 999


def _tg_user(draw: st.DrawFn, uid: Any) -> dict[str, Any]:
    user = {"id": uid, "is_bot": False, "first_name": "Sam", "username": "sam"}
    return _damaged(draw, user, ["id", "is_bot", "first_name", "username"])


def _damaged(draw: st.DrawFn, obj: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """``obj`` with some of ``keys`` missing or holding junk of another type (now and then)."""
    if not rarely(draw, 4):
        return obj
    copy = dict(obj)
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True)):
        if draw(st.booleans()):
            copy.pop(key, None)
        else:
            copy[key] = draw(json_values(4))
    return copy


@st.composite
def tg_messages(draw: st.DrawFn, *, text: bool = True) -> dict[str, Any]:
    uid = draw(st.sampled_from([TG_OPERATOR, TG_OPERATOR, TG_STRANGER, 7]) | st.integers(1, 2**40))
    chat = draw(st.sampled_from([uid, uid, -1001234]) | st.integers(-(10**13), 10**13))
    kind = "private" if chat > 0 else "supergroup"
    message: dict[str, Any] = {
        "message_id": draw(st.integers(1, 2**31)),
        "date": draw(st.integers(0, 2**31)),
        "chat": _damaged(draw, {"id": chat, "type": kind, "title": "Ops"}, ["id", "type"]),
        "from": _tg_user(draw, uid),
    }
    if text:
        body = draw(message_texts())
        message["text"] = body
        if body.startswith("/") and draw(st.booleans()):
            length = len(body.split()[0]) if body.split() else 1
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
    else:
        message[draw(st.sampled_from(["sticker", "photo", "caption", "location", "x"]))] = draw(
            json_values(4)
        )
    return _damaged(draw, message, ["message_id", "date", "chat", "from", "text"])


def button_data() -> st.SearchStrategy[str]:
    token = st.one_of(
        st.sampled_from(["tok", "gone-token", "a" * 33, "", "ü"]), st.text(max_size=8)
    )
    return st.one_of(
        st.builds(
            lambda kind, tok, code: f"{kind}:{tok}:{code}",
            st.sampled_from(["ap", "ab", "q", "x", ""]),
            token,
            st.sampled_from(
                ["y", "n", "e", "d", "r", "x", "b", "s", "p", "u", "l", "w", "o", "t", "z", ""]
            ),
        ),
        st.text(max_size=70),
    )


@st.composite
def tg_button_presses(draw: st.DrawFn) -> dict[str, Any]:
    uid = draw(st.sampled_from([TG_OPERATOR, TG_STRANGER]) | st.integers(1, 2**40))
    query: dict[str, Any] = {
        "id": f"cbq-{draw(st.integers(0, 10**9))}",
        "from": _tg_user(draw, uid),
        "chat_instance": "ci-1",
        "data": draw(button_data()),
    }
    if draw(st.booleans()):
        query["message"] = draw(tg_messages())
    return {"callback_query": _damaged(draw, query, ["id", "from", "data", "message"])}


def tg_updates() -> st.SearchStrategy[dict[str, Any]]:
    """One update (without its update_id, which the fake Bot API adds)."""
    kinds = ["message", "edited_message", "channel_post", "my_chat_member", "poll", "x_unknown"]
    return st.one_of(
        tg_messages().map(lambda m: {"message": m}),
        tg_messages().map(lambda m: {"message": m}),
        tg_messages(text=False).map(lambda m: {"message": m}),
        tg_button_presses(),
        st.builds(lambda k, m: {k: m}, st.sampled_from(kinds), tg_messages()),
        st.dictionaries(st.sampled_from([*kinds, "callback_query"]), json_values(6), max_size=2),
    )


def _well_formed_operator_text(update: dict[str, Any]) -> bool:
    """Whether ``update`` is a text message from the operator that can be answered: the only
    kind of update that may write to the log (a command such as /lead, /remember)."""
    message = update.get("message")
    if not isinstance(message, dict):
        return False
    sender = message.get("from")
    chat = message.get("chat")
    return (
        isinstance(sender, dict)
        and sender.get("id") == TG_OPERATOR
        and isinstance(chat, dict)
        and "id" in chat
        and isinstance(message.get("text"), str)
    )


@dataclass
class TelegramBot:
    api: FakeTelegram
    channel: TelegramChannel
    runtime: Runtime


def _tg_settings(data_dir: Path, api: FakeTelegram) -> Settings:
    return Settings(
        data_dir=data_dir,
        operators=(f"telegram:{TG_OPERATOR}",),
        telegram_token=SecretStr(TOKEN),
        telegram_api_url=api.base_url,
    )


@contextmanager
def running_channel(
    run: Callable[[threading.Event], None], ready: Callable[[float], bool]
) -> Iterator[None]:
    """A channel's ``run(stop)`` in a thread, ready before the body, stopped after it."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            run(stop)
        except BaseException as exc:  # noqa: BLE001 - any failure of run() fails the test
            failures.append(exc)

    thread = threading.Thread(target=serve, name="channel-under-fuzz", daemon=True)
    thread.start()
    assert ready(10), f"the channel did not start: {failures}"
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive(), "run() did not return after stop was set"
    assert not failures, failures


@pytest.fixture
def telegram_bot(data_dir: Path, telegram_api: FakeTelegram) -> Iterator[TelegramBot]:
    settings = _tg_settings(data_dir, telegram_api)
    runtime = build_runtime(settings)  # no worker: a job requested stays in the log, queued
    try:
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )
        channel = TelegramChannel(settings=settings, dispatcher=dispatcher)
        with running_channel(channel.run, channel.wait_ready):
            yield TelegramBot(telegram_api, channel, runtime)
    finally:
        runtime.close()


def test_telegram_updates_never_crash_the_bot_and_only_the_operator_writes(
    telegram_bot: TelegramBot, figures: Recorder
) -> None:
    """Random batches of updates (plausible messages and button presses from the operator,
    strangers and unknown users, fields missing or of the wrong type, other update kinds,
    junk) go through the real polling path; after each batch the operator's next message is
    still answered, no handler failed, and only a well-formed operator message wrote to the
    log (never a stranger, never junk)."""
    api, store = telegram_bot.api, telegram_bot.runtime.store
    tried = Tried()
    sentinels = itertools.count(1)

    with captured("bot.telegram", "telegram", level=logging.ERROR) as errors:

        @fuzz(100, 1500)
        @given(batch=st.lists(tg_updates(), min_size=1, max_size=5))
        def feed(batch: list[dict[str, Any]]) -> None:
            head = store.log.head()
            for update in batch:
                kind = next(iter(update), "empty") if len(update) == 1 else "mixed"
                tried.add(kind if kind in {"message", "callback_query"} else "other or junk")
                api.push({k: v for k, v in update.items() if k != "update_id"})
            tag = f"zz-sentinel-{next(sentinels)}"
            api.push(text_update(f"/trace {tag}", uid=TG_OPERATOR))
            wait_for(
                lambda: any(tag in t for t in api.texts(TG_OPERATOR)),
                what="the operator's next message answered",
            )
            failed = errors.take()
            assert not failed, describe(failed)
            written = new_events(store, head)
            note(f"written: {[(e.type, e.metadata.actor) for e in written]}")
            if not any(_well_formed_operator_text(u) for u in batch):
                assert written == [], "a stranger, a button or junk wrote to the log"
            assert all(e.metadata.actor == f"telegram:{TG_OPERATOR}" for e in written)
            assert all(j.requested_by == f"telegram:{TG_OPERATOR}" for j in queries.list_jobs())

        feed()
    tried.report(figures, "telegram updates tried")


def test_every_getupdates_answer_is_made_parseable_without_losing_an_update_id(
    figures: Recorder,
) -> None:
    """What polling sees: ``sanitized_updates`` turns any getUpdates answer into one PTB can
    parse as a whole, keeping every update with an integer update_id, in order (so the offset
    moves past a bad update instead of being stuck on it for ever)."""
    tried = Tried()

    @fuzz(150, 3000)
    @given(
        batch=st.lists(
            st.one_of(
                tg_updates().map(lambda u: {"update_id": 1, **u}),
                st.builds(lambda i, u: {**u, "update_id": i}, json_values(3), tg_updates()),
                json_values(8),
            ),
            max_size=6,
        )
    )
    def check(batch: list[Any]) -> None:
        tried.add("updates", len(batch))
        raw = json.dumps({"ok": True, "result": batch}).encode()
        kept = json.loads(sanitized_updates(raw))["result"]
        for update in kept:
            parsed = Update.de_json(update, None)  # raises if the batch would still jam PTB
            if parsed is not None:  # and PTB hashes these ids (unhashable: its fetcher dies)
                for found in (parsed.effective_user, parsed.effective_chat):
                    assert found is None or isinstance(found.id, int)
        with_ids = [
            u["update_id"]
            for u in batch
            if isinstance(u, dict) and isinstance(u.get("update_id"), int)
        ]
        out_ids = [u.get("update_id") for u in kept if isinstance(u.get("update_id"), int)]
        assert out_ids == with_ids
        assert len(kept) <= len(batch)

    check()
    tried.report(figures, "getUpdates items tried")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ptb_hashes(update: dict[str, Any]) -> bool:
    """Whether PTB can hash the ids of ``update`` (it cannot process one it cannot)."""
    try:
        parsed = Update.de_json(update, None)
    except Exception:  # noqa: BLE001 - PTB refuses it: a 400, never queued
        return True
    if parsed is None:
        return True
    try:
        for found in (parsed.effective_user, parsed.effective_chat):
            if found is not None:
                hash(found.id)
    except TypeError:
        return False
    return True


TG_SECRET = "s3cret-fuzz"


def test_telegram_webhook_refuses_every_forged_secret_and_survives_any_json(
    data_dir: Path, telegram_api: FakeTelegram, figures: Recorder
) -> None:
    """Webhook mode (PTB's own server): a request without the exact secret token is 403
    whatever it carries; with it, any JSON is 200 (queued) or 400, never a crash of the bot,
    which still answers the operator afterwards. No forged request ever causes a job."""
    port = _free_port()
    settings = _tg_settings(data_dir, telegram_api).model_copy(
        update={
            "telegram_webhook_url": "https://bot.example/tg/hook",
            "telegram_webhook_secret": SecretStr(TG_SECRET),
            "telegram_webhook_listen": f"127.0.0.1:{port}",
        }
    )
    runtime = build_runtime(settings)
    url = f"http://127.0.0.1:{port}/tg/hook"
    tried = Tried()
    update_ids = itertools.count(10_000)
    secrets = st.one_of(
        st.none(),
        st.sampled_from(["", TG_SECRET.upper(), TG_SECRET + "x", "x" + TG_SECRET, TG_SECRET[:-1]]),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    ).filter(lambda s: s != TG_SECRET)  # (what HTTP can carry: no surrounding spaces)
    forged_bodies = st.one_of(
        st.builds(lambda u: json.dumps(u).encode(), tg_updates()),
        st.just(json.dumps({"update_id": 1, **text_update(FORGED_LEAD)}).encode()),
        st.binary(max_size=200),
    )
    authentic_bodies = st.one_of(
        # What Telegram sends has integer ids: PTB hashes them, and in webhook mode (no
        # sanitized_updates) an unhashable one would end its update fetcher.
        tg_updates()
        .map(lambda u: {"update_id": 0, **u})
        .filter(_ptb_hashes)
        .map(lambda u: json.dumps(u).encode()),
        json_values(8).map(lambda v: json.dumps(v).encode()),
    )
    try:
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )
        channel = TelegramChannel(settings=settings, dispatcher=dispatcher)
        with running_channel(channel.run, channel.wait_ready), httpx.Client(timeout=10) as client:

            @fuzz(80, 2000)
            @given(
                forged=st.booleans(),
                secret=secrets,
                forged_body=forged_bodies,
                body=authentic_bodies,
                json_type=st.booleans(),
            )
            def post(
                forged: bool, secret: str | None, forged_body: bytes, body: bytes, json_type: bool
            ) -> None:
                if forged:
                    tried.add("forged")
                    headers = {"Content-Type": "application/json"}
                    if secret is not None:
                        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
                    assert client.post(url, content=forged_body, headers=headers).status_code == 403
                    return
                tried.add("authentic")
                data = json.loads(body)
                if isinstance(data, dict) and "update_id" in data:
                    data["update_id"] = next(update_ids)
                    body = json.dumps(data).encode()
                headers = {
                    "X-Telegram-Bot-Api-Secret-Token": TG_SECRET,
                    "Content-Type": "application/json" if json_type else "text/plain",
                }
                status = client.post(url, content=body, headers=headers).status_code
                assert status in ({200, 400} if json_type else {403})

            post()
            tag = "zz-webhook-sentinel"
            sentinel = {"update_id": next(update_ids), **text_update(f"/trace {tag}")}
            right = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
            assert client.post(url, json=sentinel, headers=right).status_code == 200
            wait_for(lambda: any(tag in t for t in telegram_api.texts(TG_OPERATOR)))
            tried.add("not JSON, with the secret", 3)
            for junk in (b"{not json", b"\xff\xfe", b""):  # PTB's handler: a 500, nothing queued
                response = client.post(
                    url, content=junk, headers={**right, "Content-Type": "application/json"}
                )
                assert response.status_code >= 400
        assert all(j.requested_by == f"telegram:{TG_OPERATOR}" for j in queries.list_jobs())
        assert not [
            e for e in runtime.store.log.iterate() if FORGED_ADDRESS in e.data.model_dump_json()
        ]
    finally:
        runtime.close()
    tried.report(figures, "telegram webhook requests tried")


# Edge 2: Slack requests -----------------------------------------------------------------------

SLACK_USERS = (SLACK_OPERATOR, "U_STRANGER", "UBOT", "")


def slack_texts() -> st.SearchStrategy[str]:
    """What Slack sends for typed text: escaped, links and mentions marked up."""
    markup = st.sampled_from(
        [
            "&lt;jane@acme.example&gt;",
            "<mailto:jane@acme.example|jane@acme.example>",
            "<https://acme.example|acme>",
            "<@UBOT>",
            "<@U_OPERATOR|sam>",
            "<!here>",
            "<#C1|general>",
            "&amp;",
            "<",
            "<<>>",
            "lead",
            "help",
        ]
    )
    words = st.lists(st.one_of(markup, st.sampled_from(WORDS), st.text(max_size=10)), max_size=10)
    return st.one_of(message_texts(), words.map(" ".join))


@st.composite
def slack_events(draw: st.DrawFn) -> dict[str, Any]:
    user = draw(st.sampled_from(SLACK_USERS) | st.text(max_size=12))
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["message", "message", "app_mention", "reaction_added", "x"])),
        "channel_type": draw(st.sampled_from(["im", "im", "channel", "mpim"])),
        "channel": draw(st.sampled_from(["D1", "C1"]) | st.text(max_size=8)),
        "user": user,
        "text": draw(slack_texts()),
        "ts": f"{draw(st.floats(0, 2e9)):.6f}",
    }
    if rarely(draw, 6):
        event[draw(st.sampled_from(["subtype", "bot_id"]))] = draw(
            st.sampled_from(["bot_message", "message_changed", "B2"]) | st.text(max_size=5)
        )
    body: dict[str, Any] = {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": draw(st.sampled_from(["Ev-fixed"]) | st.uuids().map(lambda u: f"Ev{u.hex}")),
        "event_time": 1,
        "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
        "event": _damaged(draw, event, ["type", "user", "channel", "text", "channel_type"]),
    }
    return _damaged(draw, body, ["event", "event_id", "type", "team_id"])


@st.composite
def slack_commands(draw: st.DrawFn, response_url: str) -> dict[str, str]:
    fields = {
        "command": draw(st.sampled_from(["/opcore", "/opcore", "/other"]) | st.text(max_size=8)),
        "text": draw(slack_texts()),
        "user_id": draw(st.sampled_from(SLACK_USERS) | st.text(max_size=12)),
        "channel_id": draw(st.sampled_from(["D1", "C1", ""])),
        "team_id": "T1",
        "trigger_id": draw(st.uuids().map(lambda u: f"trig{u.hex}")),
        "response_url": response_url,
        "token": "legacy",
        "api_app_id": "A1",
    }
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2)):
        fields.pop(key, None)
    return fields


@st.composite
def slack_presses(draw: st.DrawFn) -> dict[str, Any]:
    action: dict[str, Any] = {
        "type": "button",
        "action_id": draw(st.sampled_from(["opcore_btn_0", "opcore_btn_7", "other"])),
        "block_id": "b",
        "value": draw(button_data()),
        "action_ts": draw(st.uuids().map(lambda u: f"{u.int % 10**10}.000001")),
    }
    message = {"ts": "1700000000.000001", "text": draw(st.text(max_size=30)), "type": "message"}
    body: dict[str, Any] = {
        "type": draw(
            st.sampled_from(
                ["block_actions"] * 3 + ["interactive_message", "dialog_submission", "shortcut"]
            )
        ),
        "team": {"id": "T1", "domain": "acme"},
        "user": {"id": draw(st.sampled_from(SLACK_USERS) | st.text(max_size=12)), "team_id": "T1"},
        "api_app_id": "A1",
        "trigger_id": "trig-press",
        "container": {"type": "message", "channel_id": "D1", "message_ts": message["ts"]},
        "channel": {"id": draw(st.sampled_from(["D1", "C1"]))},
        "message": _damaged(draw, message, ["ts", "text"]),
        "actions": draw(
            st.lists(
                st.just(action).map(
                    lambda a: _damaged(draw, a, ["value", "action_id", "action_ts"])
                ),
                max_size=2,
            )
        ),
    }
    if body["type"] != "block_actions" or rarely(draw, 10):
        body["callback_id"] = draw(st.sampled_from(["opcore_btn_0", "cb"]) | json_values(2))
    return _damaged(draw, body, ["user", "channel", "container", "message", "actions", "team"])


JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class SlackRequest:
    kind: str
    body: str
    content_type: str
    operator_message: bool  # an event or command from the operator that may be handled


def slack_requests(response_url: str) -> st.SearchStrategy[SlackRequest]:
    def event(body: dict[str, Any]) -> SlackRequest:
        inner = body.get("event") if isinstance(body.get("event"), dict) else {}
        mine = isinstance(inner, dict) and inner.get("user") == SLACK_OPERATOR
        return SlackRequest("event", json.dumps(body), JSON_TYPE, mine)

    def command(fields: dict[str, str]) -> SlackRequest:
        mine = fields.get("user_id") == SLACK_OPERATOR
        return SlackRequest("slash command", urlencode(fields), FORM_TYPE, mine)

    def press(body: dict[str, Any]) -> SlackRequest:
        return SlackRequest(
            "button press", urlencode({"payload": json.dumps(body)}), FORM_TYPE, False
        )

    junk = st.one_of(
        json_values(10).map(lambda v: SlackRequest("junk", json.dumps(v), JSON_TYPE, False)),
        st.dictionaries(
            st.sampled_from(["payload", "command", "text", "x"]), st.text(max_size=30)
        ).map(lambda f: SlackRequest("junk", urlencode(f), FORM_TYPE, False)),
        st.builds(
            lambda t, c: SlackRequest("junk", t, c, False),
            st.text(max_size=200),
            st.sampled_from([JSON_TYPE, FORM_TYPE, "text/plain", ""]),
        ),
        st.just(
            SlackRequest(
                "junk", json.dumps({"type": "url_verification", "challenge": "c"}), JSON_TYPE, False
            )
        ),
    )
    return st.one_of(
        slack_events().map(event),
        slack_events().map(event),
        slack_commands(response_url).map(command),
        slack_presses().map(press),
        junk,
    )


def slack_forgeries() -> st.SearchStrategy[Callable[[str], dict[str, str | bytes]]]:
    """Ways a request can fail Slack's signature check: each maps a body to its headers."""

    def now() -> int:
        return int(time.time())

    def wrong_secret(body: str) -> dict[str, str | bytes]:
        return dict(sign(body, secret="not-the-secret"))

    def stale(body: str) -> dict[str, str | bytes]:
        return dict(sign(body, timestamp=now() - 6 * 60))

    def future(body: str) -> dict[str, str | bytes]:
        return dict(sign(body, timestamp=now() + 6 * 60))

    def unsigned(body: str) -> dict[str, str | bytes]:
        return {}

    def other_body(body: str) -> dict[str, str | bytes]:
        return dict(sign(body + " "))

    def signature_only(body: str) -> dict[str, str | bytes]:
        return {"X-Slack-Signature": sign(body)["X-Slack-Signature"]}

    garbled = st.sampled_from(
        [b"soon", b"", b"1.5", b"-1", b"\xb2", b"\xb9\xb2\xb3", b"1e9", b"99999999999999999999999"]
    ).map(lambda ts: lambda body: {**sign(body), "X-Slack-Request-Timestamp": ts})
    bad_signature = st.text(alphabet="v0=abcdef0123456789", max_size=70).map(
        lambda sig: lambda body: {**sign(body), "X-Slack-Signature": sig}
    )
    return st.one_of(
        st.sampled_from([wrong_secret, stale, future, unsigned, other_body, signature_only]),
        garbled,
        bad_signature,
    )


def raw_headers(headers: dict[str, str | bytes]) -> dict[bytes, bytes]:
    """Headers as bytes: a value such as b"\\xb2" (a digit to ``str.isdigit``) is not ASCII."""
    return {
        k.encode(): v if isinstance(v, bytes) else v.encode("latin-1") for k, v in headers.items()
    }


@dataclass
class SlackBot:
    api: FakeSlack
    runtime: Runtime
    url: str


@pytest.fixture
def slack_bot(
    data_dir: Path, slack_api: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SlackBot]:
    # One worker thread: the work after the acks runs in order, so once the operator's last
    # message is answered, everything sent before it has been handled.
    monkeypatch.setattr(slack_module, "WORKERS", 1)
    settings = Settings(
        data_dir=data_dir,
        operators=(f"slack:{SLACK_OPERATOR}",),
        slack_bot_token=SecretStr(BOT_TOKEN),
        slack_api_url=slack_api.api_url,
        slack_signing_secret=SecretStr(SIGNING_SECRET),
        slack_http_listen="127.0.0.1:0",
    )
    runtime = build_runtime(settings)
    try:
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )
        channel = SlackChannel(settings=settings, dispatcher=dispatcher)
        with running_channel(channel.run, channel.wait_ready):
            yield SlackBot(slack_api, runtime, f"http://127.0.0.1:{channel.http_port}/slack/events")
    finally:
        runtime.close()


def test_slack_requests_get_401_unless_signed_and_never_crash_the_app(
    slack_bot: SlackBot, figures: Recorder
) -> None:
    """Random events, slash commands, button presses and junk (JSON, forms, text) reach the
    real Bolt app in HTTP mode, signed or forged (wrong secret, stale or future or garbled
    timestamp, no or wrong signature): every forged one is 401 and never handled; every signed
    one is acked with a 2xx or a clean 4xx; no listener fails; only a signed operator message
    writes to the log; the operator's next message is still answered."""
    api, store = slack_bot.api, slack_bot.runtime.store
    tried = Tried()
    sentinels = itertools.count(1)
    requests = st.lists(
        st.tuples(
            slack_requests(api.response_url()),
            st.one_of(st.none(), st.none(), st.none(), slack_forgeries()),  # 3 in 4 signed
        ),
        min_size=1,
        max_size=4,
    )
    forged_lead = SlackRequest(
        "event", json.dumps(slack_dm(FORGED_LEAD, event_id="Ev-forged")), JSON_TYPE, True
    )

    def said(fragment: str) -> bool:
        return any(fragment in str(p.get("text", "")) for p in api.posted())

    with (
        captured("bot.slack", "slack_bolt", level=logging.ERROR) as errors,
        httpx.Client(timeout=10) as client,
    ):

        @fuzz(80, 2000)
        @given(batch=requests, forge_lead=st.none() | slack_forgeries())
        def send(
            batch: list[tuple[SlackRequest, Callable[[str], dict[str, str | bytes]] | None]],
            forge_lead: Callable[[str], dict[str, str | bytes]] | None,
        ) -> None:
            head = store.log.head()
            if forge_lead is not None:
                batch = [*batch, (forged_lead, forge_lead)]
            for request, forgery in batch:
                headers = sign(request.body) if forgery is None else forgery(request.body)
                tried.add(f"{request.kind}, {'signed' if forgery is None else 'forged'}")
                response = client.post(
                    slack_bot.url,
                    content=request.body.encode(),
                    headers=raw_headers({"Content-Type": request.content_type, **headers}),
                )
                if forgery is None:
                    assert 200 <= response.status_code < 500, (request, response.text)
                else:
                    assert response.status_code == 401, (request, headers, response.text)
            tag = f"zz-slack-sentinel-{next(sentinels)}"
            sentinel = json.dumps(slack_dm(f"/trace {tag}", event_id=f"Ev-{tag}"))
            response = client.post(
                slack_bot.url,
                content=sentinel,
                headers={"Content-Type": JSON_TYPE, **sign(sentinel)},
            )
            assert response.status_code == 200
            wait_for(lambda: said(tag), what="the operator's next message answered")
            failed = errors.take()
            assert not failed, describe(failed)
            written = new_events(store, head)
            note(f"written: {[(e.type, e.metadata.actor) for e in written]}")
            if not any(r.operator_message and f is None for r, f in batch):
                assert written == [], "a forged request, a stranger or junk wrote to the log"
            assert all(e.metadata.actor == f"slack:{SLACK_OPERATOR}" for e in written)
            assert all(FORGED_ADDRESS not in e.data.model_dump_json() for e in written)

        send()
    assert all(j.requested_by == f"slack:{SLACK_OPERATOR}" for j in queries.list_jobs())
    tried.report(figures, "slack requests tried")


# Edge 3: inbound webhooks ---------------------------------------------------------------------

WEBHOOK_SECRETS = {
    "stripe": "whsec_fuzz_secret",
    "gh": "gh-fuzz-secret",
    "shop": "shop-fuzz-secret",
}
WEBHOOK_SOURCES = {
    "stripe": WebhookSource(kind="stripe", secret=SecretStr(WEBHOOK_SECRETS["stripe"])),
    "gh": WebhookSource(kind="github", secret=SecretStr(WEBHOOK_SECRETS["gh"])),
    "shop": WebhookSource(
        kind="generic", secret=SecretStr(WEBHOOK_SECRETS["shop"]), tolerance_seconds=60
    ),
}
ASCII_VALUES = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40
).map(
    str.strip  # what HTTP can carry in a header value
)


def webhook_bodies() -> st.SearchStrategy[bytes]:
    """Bodies a sender may post: JSON objects shaped like each source's (with or without the
    ids the parser needs), any JSON, JSON the log could not hold, forms, and bytes."""
    event_ids = st.one_of(
        st.uuids().map(lambda u: f"evt_{u.hex}"),
        st.sampled_from(["evt_fixed", "", "a b"]),
        json_values(1),
    )
    shaped = st.fixed_dictionaries(
        {"type": st.sampled_from(["invoice.paid", "push", ""]) | json_values(1)},
        optional={"id": event_ids, "data": json_values(10), "object": st.just("event")},
    )
    hostile = st.sampled_from(
        [
            b'{"id": "evt_x", "type": "t", "n": NaN}',
            b'{"id": "evt_x", "type": "t", "n": 1e999}',
            b'{"id": "evt_x", "type": "t", "s": "\\ud800"}',
            b'{"id": "evt_x", "type": "t", "n": ' + b"9" * 5000 + b"}",
            b'{"a":' * 70 + b"1" + b"}" * 70,
            b"[" * 5000,
            b'{"id": "evt_x", "type": "t"} trailing',
            b"\xef\xbb\xbf{}",
            b"\xff\xfe{}",
            b"null",
        ]
    )
    return st.one_of(
        shaped.map(lambda d: json.dumps(d).encode()),
        json_values(12).map(lambda v: json.dumps(v).encode()),
        shaped.map(lambda d: urlencode({"payload": json.dumps(d)}).encode()),
        st.dictionaries(st.sampled_from(["payload", "x"]), st.text(max_size=30), max_size=3).map(
            lambda f: urlencode(f, doseq=True).encode()
        ),
        hostile,
        st.binary(max_size=300),
    )


@st.composite
def webhook_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(source, body, headers): most shaped as that source sends them, the rest anything."""
    source = draw(st.sampled_from(sorted(WEBHOOK_SOURCES)))
    headers = draw(webhook_headers())
    if rarely(draw, 3):
        return source, draw(webhook_bodies()), headers
    payload = draw(st.dictionaries(st.text(max_size=10), json_values(10), max_size=5))
    if source == "stripe":
        payload["id"] = draw(st.uuids().map(lambda u: f"evt_{u.hex}") | st.just("evt_fixed"))
        payload["type"] = draw(
            st.sampled_from(["invoice.paid", "charge.refunded"]) | st.text(max_size=30)
        )
    elif source == "gh":
        headers["X-GitHub-Delivery"] = draw(st.uuids().map(str) | st.just("fixed-delivery"))
        headers["X-GitHub-Event"] = draw(
            st.sampled_from(["push", "ping", "release"]) | ASCII_VALUES
        )
        if draw(st.booleans()):
            headers["Content-Type"] = FORM_TYPE
            return source, urlencode({"payload": json.dumps(payload)}).encode(), headers
    elif draw(st.booleans()):
        headers["X-Webhook-Id"] = draw(st.uuids().map(str) | ASCII_VALUES)
    return source, json.dumps(payload).encode(), headers


def webhook_headers() -> st.SearchStrategy[dict[str, str]]:
    """The headers the parsers read, present or not, with plausible or junk values."""
    names = st.sampled_from(
        [
            "X-GitHub-Delivery",
            "X-GitHub-Event",
            "X-Webhook-Id",
            "Webhook-Id",
            "X-Webhook-Event",
            "Content-Type",
        ]
    )
    values = st.one_of(
        st.uuids().map(str),
        st.sampled_from(["push", "ping", "application/x-www-form-urlencoded", "application/json"]),
        ASCII_VALUES,
    )
    return st.dictionaries(names, values, max_size=4)


def signed_headers(source: str, body: bytes, *, timestamped: bool, at: int) -> dict[str, str]:
    """The headers of an authentic delivery, signed as ``source``'s sender signs."""
    secret = WEBHOOK_SECRETS[source]
    if source == "stripe":
        digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={at},v1={digest}"}
    if source == "gh":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    if timestamped:
        digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        return {"X-Signature-256": f"sha256={digest}", "X-Timestamp": str(at)}
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Signature-256": f"sha256={digest}"}


Forgery = Callable[[str, bytes, int], dict[str, str]]


def webhook_forgeries() -> st.SearchStrategy[Forgery]:
    """Ways a delivery fails its source's check: each maps (source, body, now) to headers."""

    def wrong_secret(source: str, body: bytes, at: int) -> dict[str, str]:
        secret = "not-" + WEBHOOK_SECRETS[source]
        digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        plain = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {
            "Stripe-Signature": f"t={at},v1={digest}",
            "X-Hub-Signature-256": f"sha256={plain}",
            "X-Signature-256": f"sha256={plain}",
        }

    def other_body(source: str, body: bytes, at: int) -> dict[str, str]:
        return signed_headers(source, body + b" ", timestamped=False, at=at)

    # GitHub signs no timestamp (a captured delivery stays valid, its id dedupes a replay):
    # the timestamp forgeries apply to the other schemes, GitHub gets another body instead.
    def stale(source: str, body: bytes, at: int) -> dict[str, str]:
        if source == "gh":
            return other_body(source, body, at)
        return signed_headers(source, body, timestamped=True, at=at - 3600)

    def future(source: str, body: bytes, at: int) -> dict[str, str]:
        if source == "gh":
            return other_body(source, body, at)
        return signed_headers(source, body, timestamped=True, at=at + 3600)

    def unsigned(source: str, body: bytes, at: int) -> dict[str, str]:
        return {}

    def other_source(source: str, body: bytes, at: int) -> dict[str, str]:
        others = [s for s in WEBHOOK_SECRETS if s != source]
        return signed_headers(others[at % 2], body, timestamped=False, at=at)

    def timestamp_dropped(source: str, body: bytes, at: int) -> dict[str, str]:
        if source == "gh":
            return other_body(source, body, at)
        signed = signed_headers(source, body, timestamped=True, at=at)
        signed.pop("X-Timestamp", None)
        if "Stripe-Signature" in signed:
            signed["Stripe-Signature"] = signed["Stripe-Signature"].split(",", 1)[1]
        return signed

    def junk_header(value: str) -> Forgery:
        def forge(source: str, body: bytes, at: int) -> dict[str, str]:
            return {
                "Stripe-Signature": value,
                "X-Hub-Signature-256": value,
                "X-Signature-256": value,
                "X-Timestamp": value,
            }

        return forge

    junk = st.one_of(
        ASCII_VALUES,
        st.builds(lambda h: f"sha256={h}", st.text(alphabet="0123456789abcdefABCDEF", max_size=70)),
        st.builds(lambda t, h: f"t={t},v1={h}", st.integers(-5, 2**40), ASCII_VALUES),
    ).map(junk_header)
    return st.one_of(
        st.sampled_from(
            [wrong_secret, other_body, stale, future, unsigned, other_source, timestamp_dropped]
        ),
        junk,
    )


def _source_payload(source: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """What the log must hold for an accepted delivery: the JSON object the body carries."""
    lowered = {k.lower(): v for k, v in headers.items()}
    form = (
        source == "gh"
        and lowered.get("content-type", "").split(";")[0].strip().lower() == FORM_TYPE
    )
    text = parse_qs(body.decode())["payload"][0] if form else body.decode()
    payload: dict[str, Any] = json.loads(text)
    return payload


@pytest.fixture
def webhooks(store: Store) -> Iterator[WebhookServer]:
    with WebhookServer(
        listen="127.0.0.1:0",
        sources=WEBHOOK_SOURCES,
        on_delivery=lambda delivery: record_delivery(store.log, delivery),
    ) as server:
        yield server


def test_webhooks_refuse_forgeries_with_401_and_record_each_authentic_delivery_once(
    webhooks: WebhookServer, store: Store, figures: Recorder
) -> None:
    """Random bodies and headers to every source, validly signed or forged (wrong secret,
    another body, another source's signature, stale or future or dropped timestamp, junk
    signature headers), and to unknown sources: a forgery is always 401 and writes nothing;
    an authentic delivery is 200 and recorded once (its payload reads back as sent), or 400
    and writes nothing; a redelivery is acknowledged as a duplicate and writes nothing;
    nothing is ever a 5xx."""
    tried, outcomes = Tried(), Tried()
    base = f"http://127.0.0.1:{webhooks.port}"
    with httpx.Client(base_url=base, timeout=10) as client:

        @fuzz(200, 4000)
        @given(
            request=webhook_requests(),
            forgery=st.one_of(st.none(), webhook_forgeries()),
            timestamped=st.booleans(),
            unknown=st.one_of(*[st.none()] * 7, st.text(min_size=1, max_size=20)),
        )
        def deliver(
            request: tuple[str, bytes, dict[str, str]],
            forgery: Forgery | None,
            timestamped: bool,
            unknown: str | None,
        ) -> None:
            source, body, headers = request
            head = store.log.head()
            at = int(time.time())
            if unknown is not None and unknown not in WEBHOOK_SOURCES:
                tried.add("to an unknown source")
                path = f"/webhooks/{quote(unknown, safe='')}"
                signed = signed_headers(source, body, timestamped=timestamped, at=at)
                assert (
                    client.post(path, content=body, headers={**headers, **signed}).status_code
                    == 404
                )
                assert store.log.head() == head
                return
            path = f"/webhooks/{source}"
            if forgery is not None:
                tried.add(f"{WEBHOOK_SOURCES[source].kind}, forged")
                forged = {**headers, **forgery(source, body, at)}
                response = client.post(path, content=body, headers=forged)
                assert response.status_code == 401, (forged, response.text)
                assert store.log.head() == head
                return
            tried.add(f"{WEBHOOK_SOURCES[source].kind}, signed")
            signed = {**headers, **signed_headers(source, body, timestamped=timestamped, at=at)}
            response = client.post(path, content=body, headers=signed)
            assert response.status_code in (200, 400), response.text
            written = new_events(store, head)
            outcomes.add(
                "refused as malformed (400)" if response.status_code == 400 else "recorded"
            )
            if response.status_code == 400:
                assert written == []
                return
            if response.json()["duplicate"]:
                assert written == []
            else:
                [event] = written
                assert isinstance(event.data, ev.WebhookReceived)
                assert event.data.payload == _source_payload(source, signed, body)
                assert event.data.source == source
            again = client.post(path, content=body, headers=signed)
            assert (again.status_code, again.json()) == (200, {"ok": True, "duplicate": True})
            assert store.log.head() == head + len(written)

        deliver()
    tried.report(figures, "webhook deliveries tried")
    for outcome, n in sorted(outcomes.counts.items()):
        figures.add(f"signed deliveries {outcome}", n)


# Edge 4: slash-command arguments ---------------------------------------------------------------

OPERATOR = InboundMessage("console", "local", "local", "")
STRANGER = InboundMessage("console", "mallory", "mallory-chat", "")
# What each command may append when it does what it was asked; anything else is a bug.
FLOW_EVENTS = frozenset(
    {
        "FlowStarted",
        "FlowStepStarted",
        "FlowStepCompleted",
        "FlowWaiting",
        "FlowCompleted",
        "FlowFailed",
    }
)
WRITES: dict[str, frozenset[str]] = {
    "approvals": frozenset({"ApprovalsBundled"}),
    "digest": frozenset({"DigestSent"}),
    "lead": frozenset({"JobRequested"}),
    "triage": frozenset({"JobRequested"}),
    "proposal": frozenset({"JobRequested"}),
    "release": frozenset({"JobRequested"}),
    "pause": frozenset({"AgentPaused"}),
    "resume": frozenset({"AgentResumed"}),
    "cancel": frozenset({"JobCancelled", "ApprovalExpired"}),
    "undo": frozenset({"ActionCompensated", "ActionCompensationFailed"}),
    "contact": frozenset({"ContactUpdated"}),
    "remember": frozenset({"MemoryStored", "MemoryRestored", "FactAsserted", "FactRetracted"}),
    "forget": frozenset({"MemoryForgotten", "FactRetracted"}),
    "unforget": frozenset({"MemoryRestored", "FactRestored"}),
    "won": frozenset({"ContactWon", "JobRequested"} | FLOW_EVENTS),
    "paid": frozenset({"PaymentRecorded", "JobRequested"} | FLOW_EVENTS),
}
REFUSALS = ("Usage:", "Unknown command", "Nothing changed.", "Nothing was done.")


@dataclass
class Seeded:
    dispatcher: Dispatcher
    runtime: Runtime
    refs: list[str]  # ids, short ids, addresses and names the store knows


@pytest.fixture
def seeded(data_dir: Path) -> Iterator[Seeded]:
    """A dispatcher on a store with real history: a lead approved and sent, one waiting for
    approval, a contact with facts, memories (one forgotten). The worker made it, and is
    stopped before the fuzzing, so only the dispatcher writes."""
    settings = Settings(data_dir=data_dir, operators=("console:local",))
    runtime = build_runtime(settings, with_worker=True)
    try:
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )

        def say(text: str) -> str:
            return "\n".join(
                r.text for r in dispatcher.handle_message(replace(OPERATOR, text=text))
            )

        say("/lead Jane Doe <jane@acme.example> wants a website audit")
        [first] = wait_for(queries.pending_approvals, what="the first draft")
        dispatcher.handle_button(ButtonPress("console", "local", "local", f"ap:{first.token}:y"))
        wait_for(lambda: queries.get_action(first.action_id).status == "executed", what="sent")
        say("/lead Bob Stone <bob@stone.example> wants a quote")
        wait_for(lambda: len(queries.pending_approvals()) == 1, what="the second draft")
        say("/remember jane@acme.example rate: 120 EUR/h")
        say("/remember rule: never email on Sundays")
        say("/remember Acme wants the audit report by Friday")
        gone = say("/remember the weekly call is on Mondays")
        memory_id = gone.split("(", 1)[1].split(")", 1)[0]
        say(f"/forget {memory_id}")
        say("/recall audit")  # recall first stores the emails sent so far as memories
        wait_for(
            lambda: all(j.status in {"done", "awaiting_approval"} for j in queries.list_jobs())
        )
        assert runtime.worker is not None
        runtime.worker.stop(timeout=10_000)
        runtime.worker = None
        refs = [
            "jane@acme.example",
            "bob@stone.example",
            "Jane Doe",
            "lead",
            "triage",
            "release_notes",
        ]
        for job in queries.list_jobs():
            refs += [job.job_id, job.short_id]
            refs += [a.action_id for a in queries.actions_for_job(job.job_id)]
        for event in runtime.store.log.iterate():
            for key in ("fact_id", "memory_id", "token"):
                value = getattr(event.data, key, None)
                if isinstance(value, str):
                    refs.append(value)
        yield Seeded(dispatcher, runtime, sorted(set(refs)))
    finally:
        runtime.close()


def test_every_command_answers_random_arguments_and_a_refusal_writes_nothing(
    seeded: Seeded, figures: Recorder
) -> None:
    """Every command with random arguments (words its parser looks for, ids and addresses
    the store knows, arbitrary text), from the operator and from a stranger, through the real
    dispatcher: it always answers and never raises; a refusal (usage, unknown, nothing
    changed) writes nothing; a command writes only the events it is about (a job command
    exactly one JobRequested, when it says so); a stranger never writes anything."""
    store, dispatcher = seeded.runtime.store, seeded.dispatcher
    tried, outcomes = Tried(), Tried()
    platform_ids = itertools.count(1)
    known = st.sampled_from(seeded.refs)
    arguments = st.one_of(
        phrases(),
        st.builds(lambda r, w: f"{r} {w}".strip(), known, phrases(3)),
        st.builds(
            lambda r, k, v: f"{r} {k}: {v}",
            known,
            st.sampled_from(["rate", "phone", ""]),
            phrases(3),
        ),
        st.builds(
            lambda e, kv: f"{e} {kv}",
            known,
            st.lists(
                st.builds(
                    lambda k, v: f"{k}={v}",
                    st.sampled_from(["email", "name", "company", "x"]),
                    phrases(1),
                ),
                max_size=3,
            ).map(" ".join),
        ),
        job_commands().map(lambda t: t.split(" ", 1)[1]),
        st.text(max_size=200),
    )

    @fuzz(400, 8000)
    @given(
        name=st.sampled_from(COMMAND_NAMES),
        args=arguments,
        separator=st.sampled_from([" ", "\n", "@opcore_bot ", "  "]),
        stranger=st.sampled_from([False] * 5 + [True]),
    )
    def command(name: str, args: str, separator: str, stranger: bool) -> None:
        tried.add(f"/{name}")
        sender = STRANGER if stranger else OPERATOR
        text = f"/{name}{separator}{args}"
        head = store.log.head()
        replies = dispatcher.handle_message(
            replace(sender, text=text, platform_id=str(next(platform_ids)))
        )
        written = new_events(store, head)
        types = [e.type for e in written]
        answer = "\n".join(r.text for r in replies)
        note(f"{text!r} -> {answer[:300]!r}, wrote {types}")
        if stranger:
            outcomes.add("from a stranger: refused, nothing written")
            assert types == []
            return
        outcomes.add(
            "from the operator: wrote events" if types else "from the operator: wrote nothing"
        )
        assert answer.strip(), "the operator got no answer"
        if answer.startswith(REFUSALS) or any(r in answer for r in REFUSALS[2:]):
            assert types == [], "a refused command wrote to the log"
        assert set(types) <= WRITES.get(name, frozenset()), f"/{name} wrote {types}"
        if name in {"lead", "triage", "proposal", "release"}:
            submitted = "[job " in answer or "waits in the log" in answer  # run, or paused
            assert types.count("JobRequested") == (1 if submitted else 0)

    command()
    assert all(j.requested_by == "console:local" for j in queries.list_jobs())
    tried.report(figures, f"command arguments tried (all {len(COMMANDS)} commands)", detail=False)
    outcomes.report(figures, "  commands")


def test_any_text_parses_to_at_most_one_well_formed_command(figures: Recorder) -> None:
    """``parse_command`` on any text: None, or a lower-case command name and stripped
    arguments; ``/<name> <args>`` always gives back that name and those arguments."""
    tried = Tried()
    names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True)

    @fuzz(500, 20_000)
    @given(
        text=st.one_of(message_texts(), st.text()), name=names, args=st.text(), bot=st.booleans()
    )
    def parse(text: str, name: str, args: str, bot: bool) -> None:
        tried.add("texts", 2)
        parsed = parse_command(text)
        if parsed is not None:
            assert parsed.name == parsed.name.lower() and parsed.args == parsed.args.strip()
            assert parsed.name.isascii() and parsed.name[0].isalpha()
        suffix = "@opcore_bot" if bot else ""
        again = parse_command(f"/{name}{suffix} {args}")
        assert again is not None and again.name == name.lower() and again.args == args.strip()

    parse()
    tried.report(figures, "command texts parsed")


# Edge 5a: imported archives ----------------------------------------------------------------------


def _manifest(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest a forger computes for ``records`` (the checksums are not signatures)."""
    digests = {kind: hashlib.sha256() for kind in ARCHIVE_KINDS}
    counts = dict.fromkeys(ARCHIVE_KINDS, 0)
    for record in records:
        kind = record.get("record")
        if isinstance(kind, str) and kind in digests:
            digests[kind].update(archive_line(record).encode() + b"\n")
            counts[kind] += 1
    return {
        "record": "manifest",
        "counts": counts,
        "sha256": {k: d.hexdigest() for k, d in digests.items()},
    }


class Blob:
    """Bytes with a short repr (a strategy's arguments are shown when a test fails)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<{len(self.data)} bytes>"


# Lines a JSON parser can read (or nearly) that Python cannot hold or write back as read.
HOSTILE_LINES = (
    "[" * 5000 + "]" * 5000,
    '{"record": "event", "position": ' + "9" * 5000 + "}",
    '{"record": "event", "text": "\\ud800"}',
    '{"record": "fact", "n": NaN}',
    '{"record": "manifest", "counts": null, "sha256": null}',
    '{"record": "manifest", "counts": [], "sha256": "x"}',
    "\ufeff{}",
)


@st.composite
def damaged_archives(draw: st.DrawFn, blob: Blob) -> tuple[str, Blob]:
    """(how it was damaged, the bytes): a real archive damaged in one of several ways."""
    how, data = draw(_damaged_archives(blob.data))
    return how, Blob(data)


# How an archive is damaged, the likelier ones listed more often.
ARCHIVE_DAMAGE = (
    "forged",
    "hostile",
    "bytes",
    "lines",
    "manifest",
    "forged",
    "hostile",
    "bytes",
    "lines",
    "forged",
    "random",
    "intact",
)


@st.composite
def _damaged_archives(draw: st.DrawFn, original: bytes) -> tuple[str, bytes]:
    lines = original.decode().splitlines()
    how = draw(st.sampled_from(ARCHIVE_DAMAGE))
    if how == "intact":
        return how, original
    if how == "random":
        return how, draw(st.binary(max_size=500))
    if how == "hostile":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(HOSTILE_LINES)))
        return how, ("\n".join(lines) + "\n").encode()
    if how == "bytes":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
            if op == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif op == "delete":
                del data[at : at + draw(st.integers(1, 40))]
            else:
                del data[at:]
        return how, bytes(data)
    if how == "lines":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(lines)))
            op = draw(st.sampled_from(["drop", "duplicate", "swap", "junk", "blank"]))
            if op == "drop" and at < len(lines):
                del lines[at]
            elif op == "duplicate" and at < len(lines):
                lines.insert(at, lines[at])
            elif op == "swap" and at + 1 < len(lines):
                lines[at], lines[at + 1] = lines[at + 1], lines[at]
            elif op == "junk":
                lines.insert(at, json.dumps(draw(json_values(8))))
            else:
                lines.insert(at, "")
        return how, ("\n".join(lines) + "\n").encode()
    records = [json.loads(line) for line in lines]
    header, body = records[0], records[1:-1]
    if how == "manifest":
        manifest = _manifest(body)
        manifest[draw(st.sampled_from(["counts", "sha256"]))] = draw(json_values(6))
        return how, "\n".join(archive_line(r) for r in [header, *body, manifest]).encode() + b"\n"
    # forged: change records (or the header), then fix the manifest as a forger would
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from([header, *body])) if body else header
        op = draw(st.sampled_from(["set", "set", "delete", "add", "nest"]))
        keys = sorted(target)
        if op == "set" and keys:
            target[draw(st.sampled_from(keys))] = draw(json_values(6))
        elif op == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        elif op == "add":
            kind = draw(st.sampled_from(ARCHIVE_KINDS))
            extra = {
                **draw(st.dictionaries(st.text(max_size=8), json_values(4), max_size=4)),
                "record": kind,
            }
            body.insert(draw(st.integers(0, len(body))), extra)
        elif isinstance(target.get("data"), dict) and target["data"]:
            data = target["data"]
            data[draw(st.sampled_from(sorted(data)))] = draw(json_values(6))
    lines_out = [archive_line(r) for r in [header, *body, _manifest(body)]]
    return how, ("\n".join(lines_out) + "\n").encode()


def archive_events(data: bytes) -> list[dict[str, Any]]:
    """The event records of an archive, its lines read as the import reads them (not
    ``str.splitlines``, which also splits inside a string holding U+2028)."""
    records = map(json.loads, io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    return [r for r in records if r.get("record") == "event"]


def test_a_damaged_or_forged_archive_is_refused_with_a_store_error_and_writes_nothing(
    seeded: Seeded, tmp_path: Path, figures: Recorder
) -> None:
    """A real export, damaged (bytes flipped, inserted, cut; lines dropped, repeated,
    swapped, junk; manifest replaced), forged (records changed, removed or added, with the
    checksums recomputed as a forger would) or replaced by random bytes, imported into an
    empty store: the import either refuses with a StoreError (ArchiveError for what the
    archive's own checks catch) and leaves the store empty, or imports exactly the archive's
    events (a forgery the checks cannot tell: exporting again gives the same events)."""
    source = tmp_path / "source.jsonl"
    export_archive(seeded.runtime.store, source)
    seeded.runtime.close()
    original = source.read_bytes()
    targets = itertools.count(1)
    tried, outcomes = Tried(), Tried()

    @fuzz(100, 1500)
    @given(damaged=damaged_archives(Blob(original)))
    def load(damaged: tuple[str, Blob]) -> None:
        how, data = damaged[0], damaged[1].data
        tried.add(how)
        n = next(targets)
        path = tmp_path / f"archive-{n}.jsonl"
        path.write_bytes(data)
        target = open_store(f"sqlite:///{tmp_path / f'target-{n}.db'}")
        try:
            try:
                import_archive(target, path)
            except StoreError as exc:
                outcomes.add(f"refused with {type(exc).__name__}")
                note(f"refused: {exc}")
                assert target.log.head() == 0, "a refused archive left events behind"
                assert FactRow.select().count() == 0 and MemoryRow.select().count() == 0
                assert how != "intact", exc
                return
            outcomes.add("imported")
            again = tmp_path / f"again-{n}.jsonl"
            export_archive(target, again)
            events = archive_events(data)
            exported = archive_events(again.read_bytes())
            assert [(e["type"], e["data"]) for e in exported] == [
                (e["type"], e["data"]) for e in events
            ]
        finally:
            target.close()
            (tmp_path / f"target-{n}.db").unlink(missing_ok=True)

    load()
    tried.report(figures, "archives tried")
    outcomes.report(figures, "  archives")


# Edge 5b: contacts files (CSV, vCard) ------------------------------------------------------------

CSV_HEADERS = (
    "Name",
    "Email",
    "E-mail Address",
    "E-mail 1 - Value",
    "Email 2 Address",
    "Given Name",
    "Family Name",
    "First Name",
    "Last Name",
    "Company",
    "Organization 1 - Name",
    "Phone",
    "Mobile Phone",
    "Phone 1 - Value",
    "Notes",
    "Birthday",
    "",
)
CHARSETS = (
    "utf-8",
    "latin-1",
    "cp1252",
    "utf-16",
    "ascii",
    "idna",
    "unicode-escape",
    "utf-7",
    "rot13",
    "bogus",
)


def contact_cells() -> st.SearchStrategy[str]:
    """What a contacts export holds in a cell: addresses (good and bad), names, phones,
    cells a spreadsheet would run as formulas, multi-value cells, quotes and line breaks."""
    return st.one_of(
        st.sampled_from(EMAILS),
        st.emails(),
        st.builds(lambda n, e: f"{n} <{e}>", phrases(2), st.sampled_from(EMAILS)),
        st.builds(lambda a, b: f"{a} ::: {b}", st.sampled_from(EMAILS), st.sampled_from(EMAILS)),
        st.sampled_from(
            ["=1+1", "'=1+1", "''=x", "+44 20 7946 0958", "-1", "@SUM(A1)", "\t=x", "'"]
        ),
        st.sampled_from(["a\nb", 'say "hi"', "a,b;c\td", "x" * 201, "é\r\nü"]),
        phrases(3),
        st.text(max_size=30),
    )


def contact_names() -> st.SearchStrategy[str]:
    """Names, among them some a spreadsheet would take for formulas (or guarded ones)."""
    return st.one_of(
        st.sampled_from(["Jane Doe", "=1+1", "'=1+1", "''=x", "@SUM(A1)", "-minus", "'", "+44 20"]),
        contact_cells(),
    )


def contact_emails() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(EMAILS), st.emails(), contact_cells())


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, Blob]:
    columns = st.lists(st.sampled_from(CSV_HEADERS) | st.text(max_size=10), max_size=5)
    header = draw(st.permutations(["Name", "Email", *draw(columns)]))
    if rarely(draw, 5):  # now and then no usual columns at all
        header = draw(
            st.lists(st.sampled_from(CSV_HEADERS) | st.text(max_size=10), min_size=1, max_size=7)
        )

    def cell(column: str) -> st.SearchStrategy[str]:
        if column == "Name":
            return contact_names()
        return contact_emails() if column == "Email" else contact_cells()

    row = st.tuples(*[cell(c) for c in header]).map(list)
    rows = draw(
        st.lists(st.one_of(row, st.lists(contact_cells(), max_size=len(header) + 1)), max_size=6)
    )
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    out = io.StringIO()
    if draw(st.booleans()):
        writer = csv.writer(
            out,
            delimiter=delimiter,
            quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        )
        for row in [header, *rows]:
            writer.writerow(row)
    else:  # written by hand: quotes and delimiters as they come
        out.write("\n".join(delimiter.join(row) for row in [header, *rows]))
    text = out.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]))
    return "csv", Blob(text.encode(encoding, errors="replace"))


@st.composite
def vcard_files(draw: st.DrawFn) -> tuple[str, Blob]:
    names = st.sampled_from(
        ["FN", "N", "EMAIL", "EMAIL", "TEL", "ORG", "NOTE", "VERSION", "item1.EMAIL", "X-FOO"]
    )
    params = st.lists(
        st.one_of(
            st.sampled_from(
                ["TYPE=work", "TYPE=pref", "PREF=1", "PREF=x", "QUOTED-PRINTABLE", "INTERNET"]
            ),
            st.sampled_from(["ENCODING=QUOTED-PRINTABLE", "ENCODING=B", 'X="a;b:c"', "=", ""]),
            st.sampled_from(CHARSETS).map(lambda c: f"CHARSET={c}"),
        ),
        max_size=3,
    )
    values = st.one_of(
        contact_cells(),
        st.sampled_from(
            ["=C3=A9", "=00", "=E9t=E9", "=", "=ZZ", "Doe;Jane;;;", "a\\,b\\;c\\nd\\", "\\ud800"]
        ),
        st.sampled_from(["xn--a", "+2AA-", "\\\\ud83d", "tel:+1 555"]),
    )
    plain = st.builds(lambda n, p, v: ";".join([n, *p]) + ":" + v, names, params, values)
    quoted_printable = st.builds(  # vCard 2.1 style, in any charset
        lambda n, c, v: f"{n};ENCODING=QUOTED-PRINTABLE;CHARSET={c}:{v}",
        names,
        st.sampled_from(["idna", "unicode-escape", "utf-7", *CHARSETS]),
        st.one_of(
            st.sampled_from(["xn--a", "+2AA-", "\\ud800", "=C3=A9", "=00", "=FF", "Jane"]), values
        ),
    )
    prop = st.one_of(plain, quoted_printable)
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        usual = [f"FN:{draw(contact_names())}", f"EMAIL:{draw(contact_emails())}"]
        props = draw(st.permutations([*usual, *draw(st.lists(prop, max_size=4))]))
        card = [
            "BEGIN:VCARD",
            *[p.replace("\r", "").replace("\n", "\\n") for p in props],
            "END:VCARD",
        ]
        damage = draw(st.sampled_from(["none", "no END", "none", "a junk line", "none"]))
        if damage == "no END":
            card.pop()
        elif damage == "a junk line":
            card.insert(draw(st.integers(0, len(card))), draw(st.text(max_size=20)))
        lines += card
    text = "\r\n".join(lines)
    if draw(st.booleans()):  # folded at random places
        at = draw(st.integers(0, len(text)))
        text = text[:at] + "\r\n " + text[at:]
    return "vcf", Blob(text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))))


def test_a_contacts_file_imports_its_good_rows_reports_the_bad_ones_and_round_trips(
    tmp_path: Path, figures: Recorder
) -> None:
    """Random CSV exports (any header, delimiter, quoting, encoding, formula cells, bad
    addresses) and vCards (any properties, parameters, charsets, quoted-printable, folding,
    missing END) and random bytes: reading raises only ContactFileError and keeps only valid
    addresses within the store's sizes; importing never raises; importing the same file
    again writes nothing; and the stored contacts, exported as CSV and as vCard and imported
    back, change nothing."""
    tried, outcomes = Tried(), Tried()
    stores = itertools.count(1)

    @fuzz(100, 2000)
    @given(
        file=st.one_of(
            csv_files(), vcard_files(), st.binary(max_size=300).map(lambda b: ("csv", Blob(b)))
        )
    )
    def load(file: tuple[str, Blob]) -> None:
        fmt, data = file[0], file[1].data
        tried.add(fmt)
        try:
            text, _ = decode(data)
            result = read_csv(text) if fmt == "csv" else read_vcards(text)
        except ContactFileError:
            outcomes.add("refused as unreadable")
            return
        outcomes.add("read", 1)
        outcomes.add("rows refused", len(result.errors))
        for record in result.records:
            assert is_valid_email(record.email) and record.email == record.email.lower()
            assert len(record.name) <= NAME_MAX and len(record.company) <= COMPANY_MAX
            assert len(record.phone) <= PHONE_MAX and len(record.notes) <= NOTES_MAX
        n = next(stores)
        store = open_store(f"sqlite:///{tmp_path / f'contacts-{n}.db'}")
        try:
            import_contacts(store.log, result.records, by="fuzz", source="fuzz")
            outcomes.add("contacts imported", len(result.records))
            head = store.log.head()
            again = import_contacts(store.log, result.records, by="fuzz", source="fuzz")
            assert (again.created, again.updated, store.log.head()) == (0, 0, head)
            stored = stored_contacts()
            for written, read in (
                () if not stored else ((write_csv, read_csv), (write_vcards, read_vcards))
            ):
                back = read(written(stored))
                assert back.errors == []
                note(f"{written.__name__}: {stored} -> {back.records}")
                import_contacts(store.log, back.records, by="fuzz", source="round trip")
                assert store.log.head() == head, f"{written.__name__} did not round-trip"
        finally:
            store.close()
            (tmp_path / f"contacts-{n}.db").unlink(missing_ok=True)

    load()
    tried.report(figures, "contacts files tried")
    outcomes.report(figures, "  contacts")


# Edge 5c: inbound email ----------------------------------------------------------------------------


def header_texts() -> st.SearchStrategy[str]:
    """Header values as mail clients (and spammers) write them."""
    return st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "=?utf-8?q?Caf=C3=A9?=",
                    "=?iso-8859-1?b?qWNvbGU=?=",
                    "=?bogus?q?x?=",
                    "=?utf-8?b?@@?=",
                ]
            ),
            st.sampled_from(
                ["\\ud800", "\\U0001f600", "\\u", "\\x", "Re:", "Fwd:", "\u00e9", "\U0001f600"]
            ),
            phrases(2),
        ),
        max_size=5,
    ).map(" ".join)


@st.composite
def mime_parts(draw: st.DrawFn, depth: int = 0) -> str:
    """One MIME entity (headers, blank line, body) as text; multipart now and then."""
    if depth < 2 and rarely(draw, 4):
        boundary = draw(st.sampled_from(["b1", "==b2==", ""]))
        kind = draw(st.sampled_from(["alternative", "mixed", "report", "related"]))
        parts = draw(st.lists(mime_parts(depth + 1), max_size=3))
        body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + draw(
            st.sampled_from([f"--{boundary}--\r\n", ""])
        )
        return f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n\r\n{body}'
    ctype = draw(
        st.sampled_from(
            ["text/plain", "text/html", "message/rfc822", "application/pdf", "text/x-junk", ""]
        )
    )
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(["", "base64", "quoted-printable", "8bit", "x-junk"]))
    disposition = draw(st.sampled_from(["", "attachment", "inline"]))
    body = draw(
        st.one_of(
            st.sampled_from(
                [
                    "SGVsbG8=",
                    "=C3=A9=\r\nsoft",
                    "+2AA-",
                    "\\ud800",
                    "<p>Hi</p><blockquote>old</blockquote>",
                ]
            ),
            st.sampled_from(
                ["<![foo[", "<a href='https://x.example'>x</a>", "On Mon, Jane wrote:\r\n> quoted"]
            ),
            message_texts(),
        )
    )
    head = f"Content-Type: {ctype}; charset={charset}\r\n" if ctype else ""
    head += f"Content-Transfer-Encoding: {encoding}\r\n" if encoding else ""
    head += f"Content-Disposition: {disposition}\r\n" if disposition else ""
    return f"{head}\r\n{body}"


@st.composite
def raw_emails(draw: st.DrawFn) -> Blob:
    if rarely(draw, 6):
        return Blob(draw(st.binary(max_size=300)))
    sender = draw(
        st.one_of(
            st.sampled_from(
                ["Bob <bob@client.example>", "bob@client.example", "MAILER-DAEMON@x.example"]
            ),
            st.builds(lambda n, e: f"{n} <{e}>", header_texts(), st.sampled_from(EMAILS[:4])),
            st.builds(lambda n, e: f"{n} <{e}>", header_texts(), st.emails()),
            st.sampled_from(["", "<>", "not an address", "=?utf-8?q?x?="]),
        )
    )
    message_id = draw(
        st.one_of(
            st.none(),
            st.uuids().map(lambda u: f"<{u.hex}@client.example>"),
            st.sampled_from(
                ["<same@client.example>", "no-brackets@x", "<>", "<" + "a" * 300 + "@x>"]
            ),
        )
    )
    headers = [f"From: {sender}", "To: sam@studio.example"]
    headers += [f"Message-ID: {message_id}"] if message_id is not None else []
    headers += [f"Subject: {draw(header_texts())}"]
    extra = st.sampled_from(
        [
            "In-Reply-To: <abc@studio.example>",
            "References: " + " ".join(f"<r{i}@x>" for i in range(80)),
            "Auto-Submitted: auto-replied",
            "Precedence: bulk",
            "Date: Mon, 32 Foo 99999 25:61:00 +9999",
            "Date: Tue, 1 Jul 2025 10:00:00 -0000",
            "Return-Path: <>",
            "X-Autoreply: yes",
            "Subject: second subject",
        ]
    )
    headers += draw(st.lists(extra, max_size=3))
    text = "\r\n".join(headers) + "\r\n" + draw(mime_parts())
    raw = text.encode("utf-8", errors="surrogateescape" if draw(st.booleans()) else "replace")
    if rarely(draw, 5):  # 8-bit bytes in the headers
        raw = raw.replace(b"Subject: ", b"Subject: \xe9\xff ", 1)
    return Blob(raw)


class ListInbox(Inbox):
    """An inbox holding ``raws``: read (real parsing, malformed ones skipped) unless the
    cursor is the one it hands out, ``token``."""

    def __init__(self, raws: list[bytes], *, token: str) -> None:
        self.raws = raws
        self.token = token

    def poll(self, cursor: str | None, *, limit: int = 100) -> InboxBatch:
        if cursor == self.token:
            return InboxBatch((), self.token, 0)
        parsed = [parse_or_skip(raw, f"#{i}") for i, raw in enumerate(self.raws)]
        emails = tuple(e for e in parsed if e is not None)
        return InboxBatch(emails, self.token, len(parsed) - len(emails))


def test_any_inbound_email_is_parsed_or_skipped_and_recorded_exactly_once(
    store: Store, figures: Recorder
) -> None:
    """Random MIME (encoded words in any charset, literal backslash escapes, 8-bit headers,
    missing or odd Message-IDs and From, nested multiparts with any charset and transfer
    encoding, HTML, attachments) and random bytes, polled from an inbox: parsing raises only
    InvalidParamsError (the message is skipped and counted); every parsed message is
    recorded, its event reads back, and the inbox moves past the batch (no message can stop
    it); polling the same mail again records nothing."""
    tried, outcomes = Tried(), Tried()
    inboxes = itertools.count(1)

    with captured("jobs.inbox_poll", "connectors.inbox", level=logging.ERROR) as errors:

        @fuzz(100, 2000)
        @given(batch=st.lists(raw_emails(), min_size=1, max_size=4))
        def poll(batch: list[Blob]) -> None:
            raws = [b.data for b in batch]
            tried.add("messages", len(raws))
            parsed: list[str] = []
            for raw in raws:
                with suppress(InvalidParamsError):  # not an email: the poller skips it
                    parsed.append(parse_email(raw).message_id)
            head = store.log.head()
            n = next(inboxes)
            report = InboxPoller(store.log, ListInbox(raws, token=f"read-{n}"), name="fuzz").poll()
            failed = errors.take()
            assert not failed, describe(failed)
            assert report.skipped == len(raws) - len(parsed)
            assert report.recorded + report.duplicates == len(parsed)
            saved = last_cursor("fuzz")
            assert saved is not None and saved.cursor == f"read-{n}", "the inbox is stuck"
            received = [
                e.data for e in new_events(store, head) if isinstance(e.data, ev.EmailReceived)
            ]
            assert len(received) == report.recorded
            assert {e.message_id for e in received} <= set(parsed)
            outcomes.add("recorded", report.recorded)
            outcomes.add("skipped as not an email", report.skipped)
            outcomes.add("already recorded", report.duplicates)
            head = store.log.head()
            again = ListInbox(raws, token=f"again-{n}")  # the same mail, read again
            twice = InboxPoller(store.log, again, name="fuzz").poll()
            assert twice.recorded == 0 and twice.duplicates == len(parsed)
            assert [e.type for e in new_events(store, head)] == ["InboxPolled"]

        poll()
    tried.report(figures, "inbound emails tried", detail=False)
    outcomes.report(figures, "  emails")
