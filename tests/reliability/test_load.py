"""Load: many operators on Telegram and Slack at once, through the real ``opcore run``.

One ``opcore run`` process serves both channels (Telegram by long polling against the local
Bot API server, Slack in HTTP mode with signed requests), with the offline model, and sends
email to a local SMTP server; on the embedded defaults (SQLite, in-process broker and worker
threads) and on PostgreSQL + Redis with two ``opcore worker`` processes.

``test_many_operators_…``: N Telegram and N Slack operators, each a thread with a chat of its
own, send ``/lead …`` messages one after another and tap *Approve and send* on each draft as
soon as it arrives. Every third message and tap is delivered twice: a Telegram update twice
in one ``getUpdates`` batch, a Slack request again with ``X-Slack-Retry-Num``. Before them,
bursts of Slack requests arrive at the same instant. It proves that nothing is lost (each
message gives exactly one job, one "On it" answer and one draft with buttons; each tap one
decision shown, one "Sent to" message and one email; every Slack request is acknowledged in
time) and nothing is duplicated (no job, decision, action or email twice, whatever was
delivered twice), that nothing was logged at ERROR and that ``opcore replay --verify`` is
clean afterwards. It reports latency (message -> draft with buttons at the fake server, tap ->
email accepted by the SMTP server: p50 and p99) and throughput.

``test_operators_tapping_one_draft_at_once_…``: every operator taps Approve or Reject on the
same draft at the same instant, from both channels: one decision wins, the others are told.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e_helpers import json_lines, opcore, opcore_env, start_opcore
from tests.fakes import slack_api as slack_fake
from tests.fakes import telegram_api as telegram_fake
from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_server import Recorder
from tests.fakes.telegram_api import FakeTelegram
from tests.reliability.conftest import Recorder as Figures
from tests.reliability.conftest import sized

pytestmark = pytest.mark.e2e

TELEGRAM_OPERATORS = sized(5, 20)
SLACK_OPERATORS = sized(5, 20)
MESSAGES_PER_OPERATOR = sized(4, 25)
MESSAGES = (TELEGRAM_OPERATORS + SLACK_OPERATORS) * MESSAGES_PER_OPERATOR
TWICE_EVERY = 3  # every third message and tap is delivered twice
RACES = sized(6, 40)  # drafts every operator taps at once
SLACK_BURST = 40  # Slack requests posted at the same instant, before the load ...
BURST_ROUNDS = sized(3, 10)  # ... this many times
WAIT = float(sized(30, 120))  # seconds one answer may take before it counts as lost
APPROVE = "Approve and send"
TELEGRAM_UID = 7000  # operator k is Telegram user (and private chat) 7000 + k
TAG = re.compile(r"\b([ts]\d+x\d+)\b", re.IGNORECASE)  # t3x17: Telegram operator 3, message 17


def lead_text(tag: str) -> str:
    return f"/lead Pat {tag.upper()} <{tag}@load.example> wants a website audit, budget 3k"


def tags_in(text: str) -> set[str]:
    """The leads a text a person reads is about (never button data: tokens are random)."""
    return {t.lower() for t in TAG.findall(text)}


def one_tag(text: str) -> str:
    tags = tags_in(text)
    return tags.pop() if len(tags) == 1 else f"? {sorted(tags)}"


def slack_text(params: dict[str, Any]) -> str:
    """What a Slack message shows: its text and its sections (not the buttons)."""
    sections = [
        str(b.get("text", {}).get("text", ""))
        for b in params.get("blocks") or []
        if b.get("type") == "section"
    ]
    return "\n".join([str(params.get("text", "")), *sections])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values`` in seconds, in milliseconds."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered))))
    return round(ordered[rank - 1] * 1000, 1)


# What the fakes saw, by lead ----------------------------------------------------------------


@dataclass
class Seen:
    at: float  # time.monotonic() in this process, when the fake took it
    item: dict[str, Any]


@dataclass
class Arrivals:
    """Everything the fake servers received that concerns one lead (its tag), by kind:
    ``card`` (the draft with buttons), ``on_it``, ``sent`` (the result notification),
    ``decided`` (the message edited after a tap), ``answer`` (a Telegram button answer),
    ``email``; ``other`` collects whatever the bot said that is none of these."""

    seen: dict[tuple[str, str], list[Seen]] = field(default_factory=lambda: defaultdict(list))
    other: list[dict[str, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, kind: str, tag: str, item: dict[str, Any]) -> None:
        with self._changed:
            self.seen[(kind, tag)].append(Seen(time.monotonic(), item))
            self._changed.notify_all()

    def add_other(self, item: dict[str, Any]) -> None:
        with self._changed:
            self.other.append(item)

    def first(self, kind: str, tag: str, timeout: float) -> Seen | None:
        with self._changed:
            self._changed.wait_for(lambda: bool(self.seen.get((kind, tag))), timeout)
            found = self.seen.get((kind, tag))
            return found[0] if found else None

    def wait_count(self, kind: str, tag: str, n: int, timeout: float) -> list[Seen]:
        """The ``kind`` arrivals for ``tag`` once there are ``n`` (fewer if it timed out)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.seen.get((kind, tag), [])) >= n, timeout)
            return list(self.seen.get((kind, tag), []))

    def count(self, kind: str, tag: str) -> int:
        with self._changed:
            return len(self.seen.get((kind, tag), []))

    def total(self, kind: str) -> int:
        with self._changed:
            return sum(len(v) for (k, _), v in self.seen.items() if k == kind)

    def wait_all(self, kind: str, tags: list[str], timeout: float) -> list[str]:
        """The tags still without a ``kind`` after waiting up to ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: all(self.seen.get((kind, t)) for t in tags), timeout)
            return [t for t in tags if not self.seen.get((kind, t))]


# The fakes' HTTP servers keep socketserver's listen backlog of 5, which drops connections
# (a 1 s retry) when opcore calls them from many threads at once; Telegram and Slack do not.
BACKLOG = 128


def classify(arrivals: Arrivals, text: str, item: dict[str, Any], *, card: bool) -> None:
    tags = tags_in(text)
    if len(tags) != 1:
        arrivals.add_other(item)
    elif card:
        arrivals.add("card", tags.pop(), item)
    elif text.startswith("On it: drafting a reply to"):
        arrivals.add("on_it", tags.pop(), item)
    elif text.startswith("Sent to "):
        arrivals.add("sent", tags.pop(), item)
    else:
        arrivals.add_other(item)


class TimedTelegram(FakeTelegram):
    """The local Bot API, telling :class:`Arrivals` what the bot sent, as it arrives."""

    def __init__(self, arrivals: Arrivals) -> None:
        super().__init__()
        self._server.socket.listen(BACKLOG)
        self.arrivals = arrivals
        self.queries: dict[str, str] = {}  # callback query id -> tag
        self._push_lock = threading.Lock()
        self._ids = itertools.count(1)

    def deliver(self, update: dict[str, Any], *, copies: int) -> None:
        """Queue ``update`` ``copies`` times with one update_id, in one getUpdates batch
        (ids are given in queue order, so the offset never skips one)."""
        with self._push_lock:
            numbered = {"update_id": next(self._ids), **update}
            self.push_raw(*[numbered] * copies)

    def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        sent = super()._api_sendMessage(params)
        classify(self.arrivals, sent["text"], sent, card="reply_markup" in sent)
        return sent

    def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        edited = super()._api_editMessageText(params)
        self.arrivals.add("decided", one_tag(edited["text"]), edited)
        return edited

    def _api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        answered = super()._api_answerCallbackQuery(params)  # a second answer is a 400
        tag = self.queries.get(str(params.get("callback_query_id")), "?")
        self.arrivals.add("answer", tag, params)
        return answered


class TimedSlack(FakeSlack):
    """The local Slack, telling :class:`Arrivals` what the bot posted, as it arrives."""

    def __init__(self, arrivals: Arrivals) -> None:
        super().__init__()
        self._server.socket.listen(BACKLOG)
        self.arrivals = arrivals

    def _result(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        result = super()._result(method, params)
        if method == "chat.postMessage":
            blocks = params.get("blocks") or []
            message = {
                "type": "message",
                "ts": result["ts"],
                "channel": params.get("channel"),
                "text": params.get("text", ""),
                "blocks": blocks,
                "bot_id": slack_fake.BOT_ID,
            }
            card = any(b.get("type") == "actions" for b in blocks)
            classify(self.arrivals, slack_text(params), message, card=card)
        elif method == "chat.update":
            self.arrivals.add("decided", one_tag(slack_text(params)), params)
        elif method.startswith("chat."):
            self.arrivals.add_other({"method": method, **params})
        return result


class TimedSMTP(Recorder):
    """The SMTP server, telling :class:`Arrivals` of every email it accepts."""

    def __init__(self, arrivals: Arrivals) -> None:
        super().__init__()
        self.arrivals = arrivals

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        for rcpt in envelope.rcpt_tos:
            self.arrivals.add("email", one_tag(rcpt), {"to": rcpt})
        return answer


# The operators ----------------------------------------------------------------------------------


@dataclass
class Load:
    telegram: TimedTelegram
    slack: TimedSlack
    slack_url: str
    arrivals: Arrivals
    problems: list[str] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    tapped_at: dict[str, float] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, **counts: int) -> None:
        with self._lock:
            self.deliveries.update(counts)

    def measure(self, what: str, seconds: float) -> None:
        with self._lock:
            self.latency[what].append(seconds)

    def telegram_operator(self, k: int) -> None:
        uid = TELEGRAM_UID + k
        for i in range(MESSAGES_PER_OPERATOR):
            tag, copies = f"t{k}x{i}", 2 if (k + i) % TWICE_EVERY == 0 else 1
            sent = time.monotonic()
            self.telegram.deliver(telegram_fake.text_update(lead_text(tag), uid=uid), copies=copies)
            self.note(messages=1, redelivered=copies - 1)
            card = self.arrivals.first("card", tag, WAIT)
            if card is None:
                self.problems.append(f"{tag}: no draft with buttons within {WAIT:.0f} s")
                continue
            self.measure("telegram message", card.at - sent)
            [data] = [
                b["callback_data"]
                for b in card.item["reply_markup"]["inline_keyboard"][0]
                if b["text"] == APPROVE
            ]
            press = telegram_fake.callback_update(data, message=card.item, uid=uid)
            self.telegram.queries[press["callback_query"]["id"]] = tag
            copies = 2 if (k + i + 1) % TWICE_EVERY == 0 else 1
            self.tapped_at[tag] = time.monotonic()
            self.telegram.deliver(press, copies=copies)
            self.note(taps=1, redelivered=copies - 1)

    def slack_operator(self, k: int) -> None:
        user, chat = f"UOP{k:03d}", f"DOP{k:03d}"
        with httpx.Client(timeout=10) as client:

            def post(payload: dict[str, Any], *, form: bool, copies: int) -> None:
                body = json.dumps(payload)
                kind = "application/json"
                if form:
                    body, kind = urlencode({"payload": body}), "application/x-www-form-urlencoded"
                for attempt in range(copies):
                    retry = {
                        "X-Slack-Retry-Num": str(attempt),
                        "X-Slack-Retry-Reason": "http_timeout",
                    }
                    headers = {
                        "Content-Type": kind,
                        **slack_fake.sign(body),
                        **(retry if attempt else {}),
                    }
                    posted = time.monotonic()
                    status = client.post(self.slack_url, content=body, headers=headers).status_code
                    self.measure("slack ack", time.monotonic() - posted)
                    if status != 200:
                        self.problems.append(f"Slack answered {status} to {body[:80]}")

            for i in range(MESSAGES_PER_OPERATOR):
                tag, copies = f"s{k}x{i}", 2 if (k + i) % TWICE_EVERY == 0 else 1
                event = slack_fake.dm_event(
                    lead_text(tag).removeprefix("/"),
                    user=user,
                    event_id=f"EvLoad-{tag}",
                    channel=chat,
                )
                sent = time.monotonic()
                post(event, form=False, copies=copies)
                self.note(messages=1, redelivered=copies - 1)
                card = self.arrivals.first("card", tag, WAIT)
                if card is None:
                    self.problems.append(f"{tag}: no draft with buttons within {WAIT:.0f} s")
                    continue
                self.measure("slack message", card.at - sent)
                [value] = [
                    e["value"]
                    for b in card.item["blocks"]
                    if b.get("type") == "actions"
                    for e in b["elements"]
                    if e["text"]["text"] == APPROVE
                ]
                press = slack_fake.button_payload(value, message=card.item, user=user, channel=chat)
                press["trigger_id"] = f"trig-load-{tag}"
                press["actions"][0]["action_ts"] = f"1800000000.{k:03d}{i:03d}"
                copies = 2 if (k + i + 1) % TWICE_EVERY == 0 else 1
                self.tapped_at[tag] = time.monotonic()
                post(press, form=True, copies=copies)
                self.note(taps=1, redelivered=copies - 1)


def slack_burst(url: str, size: int, rounds: int) -> list[float]:
    """``rounds`` times, ``size`` signed Slack requests posted at the same instant (Slack
    delivers bursts): how long each took to be acknowledged (``inf``: it failed). The events
    (reactions) are acknowledged and ignored."""
    acks: list[float] = []

    def one(client: httpx.Client, together: threading.Barrier, event_id: str) -> None:
        body = slack_fake.dm_event("", event_id=event_id)
        body["event"] = {"type": "reaction_added", "user": "UOP000", "reaction": "eyes"}
        raw = json.dumps(body)
        headers = {"Content-Type": "application/json", **slack_fake.sign(raw)}
        together.wait(timeout=30)
        posted = time.monotonic()
        try:
            ok = client.post(url, content=raw, headers=headers).status_code == 200
        except httpx.TransportError:  # reset: a request Slack would see fail
            ok = False
        acks.append(time.monotonic() - posted if ok else math.inf)

    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=size)) as client:
        for r in range(rounds):
            together = threading.Barrier(size)
            burst = (partial(one, client, together, f"EvBurst-{r}-{n}") for n in range(size))
            failures = run_all(*burst)
            assert not failures, failures
    return acks


def run_all(*workers: Callable[[], None]) -> list[BaseException]:
    failures: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


# The opcore process -----------------------------------------------------------------------------


@dataclass
class Process:
    popen: subprocess.Popen[str]
    stderr: list[str] = field(default_factory=list)

    def drain(self) -> None:
        """Read stdout and stderr as they come: a full pipe would block opcore."""
        assert self.popen.stdout is not None and self.popen.stderr is not None
        out, err = self.popen.stdout, self.popen.stderr
        threading.Thread(target=lambda: [None for _ in out], daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(err), daemon=True).start()

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise

    def errors(self) -> list[str]:
        lines = []
        for line in list(self.stderr):
            try:
                entry = json.loads(line)
            except ValueError:
                if not line.startswith("opcore"):  # what `opcore run`/`worker` print at start
                    lines.append(line)  # not a log record: a traceback, a crash
                continue
            if entry.get("level") in {"ERROR", "CRITICAL"} or entry.get("exc"):
                lines.append(line)
        return lines


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"opcore run: {what} not ready in {timeout} s"
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Opcore:
    """``opcore run`` serving Telegram and Slack (and ``opcore worker`` processes on Redis)."""

    env: dict[str, str]
    cwd: Path
    slack_url: str
    processes: list[Process]
    codes: list[int] | None = None

    def stop(self) -> None:
        """Stop every process (SIGTERM, as a service manager does); each must exit 0."""
        if self.codes is None:
            self.codes = [each.stop() for each in self.processes]
        assert self.codes == [0] * len(self.codes), "".join(self.processes[0].stderr[-20:])

    def errors(self) -> list[str]:
        return [line for each in self.processes for line in each.errors()]

    def why(self) -> str:
        """For a failure message: what went wrong inside, or the last lines it wrote."""
        return "".join(self.errors()[:5] or self.processes[0].stderr[-10:])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return opcore(list(args), self.env, cwd=self.cwd, timeout=120)


# Verdicts and figures ---------------------------------------------------------------------------


def report(
    figures: Figures, load: Load, arrivals: Arrivals, tags: list[str], *, elapsed: float
) -> None:
    """Latency and throughput, reported before the verdicts so a failing run shows them too."""
    for tag in tags:
        email = arrivals.first("email", tag, 0)
        if email is not None:
            channel = "telegram" if tag.startswith("t") else "slack"
            load.measure(f"{channel} tap", email.at - load.tapped_at[tag])
    figures.add("telegram operators", TELEGRAM_OPERATORS)
    figures.add("slack operators", SLACK_OPERATORS)
    figures.add("messages sent", load.deliveries["messages"])
    figures.add("taps sent", load.deliveries["taps"])
    figures.add("deliveries sent twice", load.deliveries["redelivered"])
    figures.add("emails sent", arrivals.total("email"))
    for what, label in (("message", "message -> draft with buttons"), ("tap", "tap -> email")):
        both = load.latency[f"telegram {what}"] + load.latency[f"slack {what}"]
        if both:
            figures.add(f"p50 {label}", percentile(both, 50), "ms")
            figures.add(f"p99 {label}", percentile(both, 99), "ms")
        for channel in ("telegram", "slack"):
            values = load.latency[f"{channel} {what}"]
            if values:
                figures.add(f"p99 {label} ({channel})", percentile(values, 99), "ms")
    if load.latency["slack ack"]:
        slowest = percentile(load.latency["slack ack"], 100)
        figures.add("slowest Slack acknowledgement", slowest, "ms")
    figures.add("wall time, first message to last email", round(elapsed, 2), "s")
    figures.add("throughput (message, draft, tap, email)", round(MESSAGES / elapsed, 2), "leads/s")


def assert_nothing_lost(load: Load, tags: list[str], *missing: list[str]) -> None:
    """Every message got its draft (and was tapped), every tap its email, its "Sent to"
    message and its decision shown; every Slack request was acknowledged in time."""
    assert not load.problems, load.problems[:20]
    assert len(tags) == MESSAGES
    for kind, lost in zip(("email", "'Sent to' message", "decision shown"), missing, strict=True):
        assert not lost, f"taps without an {kind}: {lost[:20]}"
    acks = load.latency["slack ack"]
    assert max(acks) < 3.0, f"a Slack request was acknowledged after {max(acks):.2f} s"


def assert_nothing_duplicated(arrivals: Arrivals, tags: list[str]) -> None:
    """On the wire: one of each per lead, whatever was delivered twice, and nothing else."""
    counts = {
        kind: {tag: arrivals.count(kind, tag) for tag in tags}
        for kind in ("on_it", "card", "decided", "email", "sent")
    }
    counts["answer"] = {t: arrivals.count("answer", t) for t in tags if t.startswith("t")}
    for kind, per_tag in counts.items():
        wrong = {tag: n for tag, n in per_tag.items() if n != 1}
        assert not wrong, f"{kind}: not exactly once for {wrong}"
    assert arrivals.other == [], arrivals.other[:5]
    assert arrivals.total("email") == MESSAGES  # and no email to anyone else


def assert_the_log_has_each_once(running: Opcore, tags: list[str]) -> None:
    """In the event log: one job per message, done; one proposal, decision and execution
    each; no idempotency key twice."""
    jobs = json_lines(running.cli("jobs", "--json", "--limit", "100000").stdout)
    by_tag = Counter(t for job in jobs for t in tags_in(str(job["text"])))
    assert sorted(by_tag) == tags and set(by_tag.values()) == {1}, by_tag
    assert len(jobs) == MESSAGES and {j["status"] for j in jobs} == {"done"}
    events = json_lines(running.cli("events", "--json", "--limit", "1000000").stdout)
    kinds = Counter(e["type"] for e in events)
    for kind in ("JobRequested", "ActionProposed", "ApprovalDecided", "ActionExecuted"):
        assert kinds[kind] == MESSAGES, (kind, kinds[kind])
    keys = [e["idempotency_key"] for e in events if e["idempotency_key"]]
    assert len(keys) == len(set(keys)), Counter(keys).most_common(3)


# The tests ------------------------------------------------------------------------------------------

WORKER_PROCESSES = 2  # `opcore worker` processes on the Redis broker


@pytest.fixture
def arrivals() -> Arrivals:
    return Arrivals()


@pytest.fixture
def telegram(arrivals: Arrivals) -> Iterator[TimedTelegram]:
    fake = TimedTelegram(arrivals)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def slack(arrivals: Arrivals) -> Iterator[TimedSlack]:
    fake = TimedSlack(arrivals)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of the store and the queue: the embedded defaults (SQLite, in-process
    broker and worker threads), or PostgreSQL and Redis with separate worker processes."""
    if request.param == "embedded":
        return {}
    return {
        "database_url": request.getfixturevalue("postgres_url"),
        "broker_url": request.getfixturevalue("redis_url"),
    }


@pytest.fixture
def opcore_run(
    tmp_path: Path,
    backend: dict[str, str],
    telegram: TimedTelegram,
    slack: TimedSlack,
    arrivals: Arrivals,
    smtp_server: Callable[..., int],
) -> Iterator[Opcore]:
    """The real ``opcore run`` against the local Telegram, Slack and SMTP servers, ready."""
    smtp_port = smtp_server(TimedSMTP(arrivals))
    slack_port = free_port()
    operators = [f"telegram:{TELEGRAM_UID + k}" for k in range(TELEGRAM_OPERATORS)]
    operators += [f"slack:UOP{k:03d}" for k in range(SLACK_OPERATORS)]
    env = opcore_env(
        tmp_path / "data",
        operators=",".join(operators),
        telegram_token=telegram_fake.TOKEN,
        telegram_api_url=telegram.base_url,
        slack_bot_token=slack_fake.BOT_TOKEN,
        slack_signing_secret=slack_fake.SIGNING_SECRET,
        slack_api_url=slack.api_url,
        slack_http_listen=f"127.0.0.1:{slack_port}",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        log_format="json",
        **backend,
    )
    separate = WORKER_PROCESSES if backend else 0  # the embedded broker works inside `run`
    processes = [Process(start_opcore(["run"], env, cwd=tmp_path))]
    processes += [Process(start_opcore(["worker"], env, cwd=tmp_path)) for _ in range(separate)]
    for each in processes:
        each.drain()
    running = Opcore(env, tmp_path, f"http://127.0.0.1:{slack_port}/slack/events", processes)
    try:
        wait_until("Telegram", lambda: bool(telegram.calls_to("getUpdates")))
        wait_until("Slack", lambda: listening(slack_port))
        yield running
    finally:
        if running.codes is None:
            running.codes = [each.stop() for each in processes]


def test_many_operators_on_telegram_and_slack_lose_nothing_and_duplicate_nothing(
    opcore_run: Opcore,
    telegram: TimedTelegram,
    slack: TimedSlack,
    arrivals: Arrivals,
    figures: Figures,
) -> None:
    load = Load(telegram, slack, opcore_run.slack_url, arrivals)
    burst = slack_burst(load.slack_url, SLACK_BURST, BURST_ROUNDS)
    started = time.monotonic()
    failures = run_all(
        *(partial(load.telegram_operator, k) for k in range(TELEGRAM_OPERATORS)),
        *(partial(load.slack_operator, k) for k in range(SLACK_OPERATORS)),
    )
    tags = sorted(load.tapped_at)
    missing_email = arrivals.wait_all("email", tags, WAIT)
    missing_sent = arrivals.wait_all("sent", tags, WAIT)
    missing_decided = arrivals.wait_all("decided", tags, WAIT)
    finished = time.monotonic()
    time.sleep(1.0)  # anything duplicated late has time to show up
    opcore_run.stop()
    assert not failures, failures
    assert not opcore_run.errors(), opcore_run.errors()[:5]

    figures.add("Slack bursts: requests at once", SLACK_BURST)
    figures.add("Slack bursts", BURST_ROUNDS)
    figures.add("Slack bursts: slowest acknowledgement", percentile(burst, 100), "ms")
    report(figures, load, arrivals, tags, elapsed=finished - started)
    assert_nothing_lost(load, tags, missing_email, missing_sent, missing_decided)
    # A connection dropped by a full listen queue costs at least 1 s (the client's first SYN
    # retry; the second comes at 3 s, past Slack's deadline), a reset one the request.
    slow = [round(t, 2) for t in burst if t >= 1.0]
    assert not slow, f"{len(slow)} of {len(burst)} Slack requests in bursts took {slow[:10]} s"
    assert_nothing_duplicated(arrivals, tags)
    assert_the_log_has_each_once(opcore_run, tags)
    replay = opcore_run.cli("replay", "--verify")
    assert replay.returncode == 0 and "match" in replay.stdout, replay.stdout + replay.stderr


def test_operators_tapping_one_draft_at_once_on_both_channels_decide_it_once(
    opcore_run: Opcore,
    telegram: TimedTelegram,
    arrivals: Arrivals,
    figures: Figures,
) -> None:
    """A draft from Telegram; at the same instant its operator taps Approve and every Slack
    operator taps Approve or Reject on it too (its token, as /approvals shows it in Slack):
    one decision wins, everyone else is told who decided what, and an email goes only if an
    approval won, once."""
    tags = [f"t0x{r}" for r in range(RACES)]
    with httpx.Client(timeout=10) as client:
        winners = {
            tag: race(opcore_run, telegram, arrivals, client, tag, r) for r, tag in enumerate(tags)
        }
    approved = [t for t in tags if winners[t].endswith(":y")]
    assert arrivals.wait_all("email", approved, WAIT) == []
    time.sleep(1.0)  # an email for a rejected draft, or a second one, has time to show up
    opcore_run.stop()
    assert not opcore_run.errors(), opcore_run.errors()[:5]

    figures.add("drafts raced on", RACES)
    figures.add("taps at once on each", 1 + SLACK_OPERATORS)
    figures.add("won by the Telegram tap", sum(w.startswith("telegram") for w in winners.values()))
    figures.add("won by an approval", len(approved))
    emails = {t: arrivals.count("email", t) for t in tags}
    assert emails == {t: int(t in approved) for t in tags}
    events = json_lines(opcore_run.cli("events", "--json", "--limit", "1000000").stdout)
    kinds = Counter(e["type"] for e in events)
    assert kinds["ApprovalDecided"] == RACES
    assert (kinds["ActionExecuted"], kinds["ActionRejected"]) == (
        len(approved),
        RACES - len(approved),
    )
    replay = opcore_run.cli("replay", "--verify")
    assert replay.returncode == 0 and "match" in replay.stdout, replay.stdout + replay.stderr


OUTCOME = re.compile(r"^(Approved: Send email to|Rejected: nothing sent)", re.MULTILINE)
ALREADY = re.compile(r"Already decided: (approved|rejected) by (telegram:\d+|slack:\w+)")


def race(
    running: Opcore,
    telegram: TimedTelegram,
    arrivals: Arrivals,
    client: httpx.Client,
    tag: str,
    r: int,
) -> str:
    """One race on a new draft; who won and how (``slack:UOP003:n``)."""
    uid = TELEGRAM_UID
    telegram.deliver(telegram_fake.text_update(lead_text(tag), uid=uid), copies=1)
    card = arrivals.first("card", tag, WAIT)
    assert card is not None, f"{tag}: no draft; {running.why()}"
    [approve] = [
        b["callback_data"]
        for b in card.item["reply_markup"]["inline_keyboard"][0]
        if b["text"] == APPROVE
    ]
    tap = telegram_fake.callback_update(approve, message=card.item, uid=uid)
    telegram.queries[tap["callback_query"]["id"]] = tag
    choices = {f"telegram:{uid}": "y"}
    bodies = []
    for k in range(SLACK_OPERATORS):
        choice = "n" if k % 2 == 0 else "y"
        choices[f"slack:UOP{k:03d}"] = choice
        shown = {"type": "message", "ts": f"18000{k:05d}.{r:06d}", "text": card.item["text"]}
        data = approve.removesuffix(":y") + f":{choice}"
        press = slack_fake.button_payload(
            data, message=shown, user=f"UOP{k:03d}", channel=f"DOP{k:03d}"
        )
        press["actions"][0]["action_ts"] = f"19000{k:05d}.{r:06d}"
        bodies.append(urlencode({"payload": json.dumps(press)}))
    together = threading.Barrier(1 + len(bodies))

    def telegram_tap() -> None:
        together.wait(timeout=10)
        telegram.deliver(tap, copies=1)

    def slack_tap(body: str) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded", **slack_fake.sign(body)}
        together.wait(timeout=10)
        assert client.post(running.slack_url, content=body, headers=headers).is_success

    assert not run_all(telegram_tap, *(partial(slack_tap, b) for b in bodies))
    answer = arrivals.first("answer", tag, WAIT)
    shown_after = [s.item for s in arrivals.wait_count("decided", tag, 1 + len(bodies), WAIT)]
    assert answer is not None and len(shown_after) == 1 + len(bodies), (answer, shown_after)
    told = {f"telegram:{uid}": str(answer.item.get("text", ""))}  # the toast on Telegram
    told |= {f"slack:U{d['channel'][1:]}": str(d["text"]) for d in shown_after if "channel" in d}
    won = [who for who, text in told.items() if OUTCOME.search(text)]
    assert len(won) == 1, told  # one decision, and it was taken by someone
    [winner] = won
    verb = "approved" if choices[winner] == "y" else "rejected"
    for who, text in told.items():
        if who != winner:
            seen = ALREADY.search(text)
            assert seen is not None and seen.groups() == (verb, winner), (who, text)
    return f"{winner}:{choices[winner]}"
