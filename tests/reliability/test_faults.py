"""Faults of the things opcore depends on, with real processes: Redis and PostgreSQL restarted
under running workers, a model provider answering 5xx, 429 and nothing, and the outside world
(SMTP, CalDAV, a webhook receiver) down and back. Every test ends with every effect exactly
once and ``opcore replay --verify`` clean.

``tests/test_reliability.py`` kills opcore's own processes and flushes Redis; this file breaks
what is around them. Redis and PostgreSQL are private servers started in the test (on free
ports, in temporary directories), so restarting them never disturbs the machine's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, NoReturn

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from store import events as ev
from store import open_store
from tests.conftest import IN_CI
from tests.e2e_helpers import LEAD, opcore, opcore_env
from tests.fakes.caldav_server import CalDavServer, start_caldav_server
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.smtp_server import Recorder, free_port
from tests.reliability.conftest import Recorder as Figures
from tests.reliability.conftest import sized

pytestmark = pytest.mark.e2e

DRAFT = json.dumps(
    {"subject": "Your website audit", "body": "Hi,\n\nHappy to help with the audit.\n\nSam"}
)
# Short leases and a fast reconciler, so that a lost message is re-sent within seconds.
FAST = {
    "job_lease_seconds": "4",
    "queue_lease_seconds": "1.5",
    "reconcile_interval_seconds": "0.5",
    "retry_min_backoff_ms": "100",
    "retry_max_backoff_ms": "1000",
    "max_retries": "20",
}
APPROVE = r"\[(\d+)\] Approve(?! all)"


def lead(n: int) -> str:
    return LEAD.replace("jane@", f"jane{n}@")


# Tools and private servers ---------------------------------------------------------------


def missing(what: str) -> NoReturn:
    """Skip (on a laptop) or fail (in CI) when something a test needs is not installed."""
    if IN_CI:
        pytest.fail(f"{what} is not installed, and CI=true requires it")
    pytest.skip(f"{what} is not installed (set CI=true to make this a failure)")


def require_tool(name: str, path: str | Path | None) -> str:
    if path is None or not Path(path).exists():
        missing(name)
    return str(path)


def wait_for_port(port: int, *, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


class PrivateRedis:
    """A ``redis-server`` of this test, with an append-only file fsynced at every write."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_tool("redis-server", shutil.which("redis-server"))
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--logfile", str(self.directory.parent / f"{self.directory.name}.log")]
        self._proc = subprocess.Popen([self.binary, *args])
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline or self._proc.poll() is not None:
                        raise AssertionError(f"redis-server did not start on {self.url}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, *, crash: bool = False) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
            self._proc.wait(timeout=10)

    def restart(self, *, down: float, keep_data: bool) -> None:
        """A clean restart (SIGTERM; the data comes back from the append-only file), or a crash
        of a Redis that kept nothing (SIGKILL, files gone: it comes back empty)."""
        self.stop(crash=not keep_data)
        if not keep_data:
            shutil.rmtree(self.directory)
        time.sleep(down)
        self.start()
        self.restarts += 1

    def keys(self) -> int:
        client = redis.Redis.from_url(self.url)
        try:
            return int(client.dbsize())
        finally:
            client.close()

    def messages(self) -> int:
        """opcore's messages in Redis: queued, delayed, or taken by a worker and not acked."""
        client = redis.Redis.from_url(self.url)
        try:
            return sum(int(client.hlen(f"opcore:opcore{q}.msgs")) for q in ("", ".DQ"))
        finally:
            client.close()


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = [
        p.parent for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()
    ]
    versions.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


class PrivatePostgres:
    """A PostgreSQL cluster of this test (``initdb`` in a temporary directory, trust auth on a
    free loopback port). As root it runs as the ``postgres`` user, since initdb refuses root."""

    def __init__(self) -> None:
        bindir = _postgres_bin()
        self.pg_ctl = require_tool("pg_ctl (PostgreSQL server)", bindir and bindir / "pg_ctl")
        self.initdb = require_tool("initdb (PostgreSQL server)", bindir and bindir / "initdb")
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = [require_tool("runuser", shutil.which("runuser")), "-u", "postgres", "--"]
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                missing("a postgres user (initdb refuses to run as root)")
        # Not under tmp_path: the postgres user may not enter the root-only pytest directory.
        self.root = Path(tempfile.mkdtemp(prefix="opcore-pg-"))
        if self._as:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.data = self.root / "data"
        self.restarts = 0
        self._run(self.initdb, "-D", str(self.data), "--auth=trust", "-U", "postgres")

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        log = str(self.root / "server.log")
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: a crash (recovery from the WAL at start)."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, *, mode: str, down: float) -> None:
        self.stop(mode)
        time.sleep(down)
        self.start()
        self.restarts += 1

    def remove(self) -> None:
        subprocess.run(
            [*self._as, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


# The outside world, down and back ----------------------------------------------------------


class SlowRecorder(Recorder):
    """Accepts mail like :class:`Recorder`, after ``delay`` seconds (so messages are in flight
    when something else breaks), answering the first ``refuse_first`` RCPTs with a 421."""

    def __init__(self, *, delay: float = 0.0, refuse_first: int = 0) -> None:
        super().__init__()
        self.delay = delay
        self.refuse_first = refuse_first
        self.refused = 0
        self.receiving = 0  # messages whose DATA arrived (accepted or not yet)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refused < self.refuse_first:
            self.refused += 1
            return "421 4.3.2 Service not available, try again later"
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.receiving += 1
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)

    def per_recipient(self) -> Counter[str]:
        return Counter(rcpt for envelope in self.envelopes for rcpt in envelope.rcpt_tos)


class Smtp:
    """An aiosmtpd server on a port chosen up front, so it can be down when opcore starts."""

    def __init__(self, handler: SlowRecorder) -> None:
        self.handler = handler
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, server_hostname="localhost"
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp() -> Iterator[Callable[..., Smtp]]:
    servers: list[Smtp] = []

    def make(*, delay: float = 0.0, refuse_first: int = 0, up: bool = True) -> Smtp:
        server = Smtp(SlowRecorder(delay=delay, refuse_first=refuse_first))
        if up:
            server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


class WebhookReceiver:
    """A webhook receiver that is down until :meth:`start`, then answers ``statuses`` in turn
    (the last one for every later request). Acts (``accepted``) only on a 2xx."""

    def __init__(self, statuses: list[int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/opcore"
        self.statuses = statuses
        self.keys: list[str] = []  # the Idempotency-Key of every request
        self.accepted: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key", "")
                with receiver._lock:
                    receiver.keys.append(key)
                    turn = min(len(receiver.keys), len(receiver.statuses)) - 1
                    status = receiver.statuses[turn]
                    if status < 300:
                        receiver.accepted.append(key)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# opcore processes ------------------------------------------------------------------------


def spawn(
    args: list[str], env: dict[str, str], cwd: Path, log: IO[str], **kw: Any
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        cwd=cwd,
        stderr=log,
        text=True,
        **kw,
    )


class Console:
    """A long-running ``opcore console`` (``opcore run`` on a terminal: channel, notifier and
    reconciler), fed line by line; its output is read on a thread so the pipe never fills."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self._log = (cwd / "console.log").open("w")
        self.proc: subprocess.Popen[str] = spawn(
            ["console"], env, cwd, self._log, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.log_path = cwd / "console.log"
        self._lines: list[str] = []
        self._pressed: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def out(self) -> str:
        return "".join(list(self._lines))

    def say(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines))
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            found: list[str] = re.findall(pattern, self.out)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"waited for {count} x {pattern!r}; the console said:\n{self.out}\n"
                    f"{self.log_path.read_text()[-4000:]}"
                )
            time.sleep(0.05)

    def ask_until(self, line: str, pattern: str, *, timeout: float = 30) -> None:
        """Say ``line`` again every half second until an answer matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            seen = len(self.out)
            self.say(line)
            time.sleep(0.5)
            if re.search(pattern, self.out[seen:]):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no answer to {line!r} matched {pattern!r}:\n{self.out}")

    def approve(self, count: int, *, timeout: float = 30) -> list[int]:
        """Press every Approve button shown and not pressed yet, once ``count`` are shown."""
        shown = [int(n) for n in self.wait_for(APPROVE, count=count, timeout=timeout)]
        fresh = [n for n in shown if n not in self._pressed]
        self._pressed.update(fresh)
        self.say(*map(str, fresh))
        return fresh

    def close(self, *, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log.close()
        return self.proc.returncode


class Workers:
    """``opcore worker`` processes; :meth:`stop` says whether each lived through everything."""

    def __init__(self, env: dict[str, str], cwd: Path, count: int) -> None:
        self._log = (cwd / "workers.log").open("w")
        self.log_path = cwd / "workers.log"
        self.procs: list[subprocess.Popen[str]] = [
            spawn(["worker"], env, cwd, self._log, stdout=subprocess.DEVNULL) for _ in range(count)
        ]

    def alive(self) -> int:
        return sum(proc.poll() is None for proc in self.procs)

    def stop(self) -> list[int | None]:
        """Stop them (SIGTERM, as a supervisor does) and return their exit codes."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._log.close()
        return [proc.returncode for proc in self.procs]


# What the log says -------------------------------------------------------------------------


def read_log(env: dict[str, str]) -> list[ev.RecordedEvent]:
    """Every event in the log opcore used (read here, not through a slow ``opcore events``)."""
    url = (
        env.get("OPCORE_DATABASE_URL") or f"sqlite:///{Path(env['OPCORE_DATA_DIR']) / 'opcore.db'}"
    )
    store = open_store(url, run_migrations=False)
    try:
        return store.log.read_all(limit=10_000_000)
    finally:
        store.close()


def types_by_job(log: list[ev.RecordedEvent]) -> dict[str, list[str]]:
    """The event types of each job (and its actions), for jobs the log has a request for."""
    by_job: dict[str, list[str]] = {}
    for event in log:
        by_job.setdefault(event.metadata.correlation_id or "", []).append(event.type)
    return {job: types for job, types in by_job.items() if "JobRequested" in types}


def actions_of(log: list[ev.RecordedEvent], connector: str) -> dict[str, list[str]]:
    """The event types of each action of ``connector``, by action id."""
    found: dict[str, list[str]] = {
        e.data.action_id: []
        for e in log
        if isinstance(e.data, ev.ActionProposed) and e.data.connector == connector
    }
    for event in log:
        action_id = getattr(event.data, "action_id", None)
        if action_id in found:
            found[action_id].append(event.type)
    return found


def assert_replay_converges(env: dict[str, str], cwd: Path) -> None:
    verify = opcore(["replay", "--verify"], env, cwd=cwd)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "match" in verify.stdout


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll ``condition``; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


# 1 and 2. Redis and PostgreSQL restarted under running workers ------------------------------


@dataclass
class LeadsRun:
    """What happened to leads sent through a console and two workers while things broke."""

    env: dict[str, str]
    leads: int
    sent: Counter[str]  # emails the SMTP server accepted, by recipient
    status: str  # the console's /status at the end
    model_requests: int
    seconds_to_last_email: float  # from the second fault


def leads_through_faults(
    tmp_path: Path,
    smtp: Callable[..., Smtp],
    *,
    leads: int,
    settings: dict[str, str],
    while_drafting: Callable[[], None],
    while_sending: Callable[[], None],
) -> LeadsRun:
    """``leads`` leads typed into a long-running ``opcore console`` with two ``opcore worker``
    processes (one thread each), broken twice: ``while_drafting`` runs when two jobs wait for
    the model and the others wait in the queue; ``while_sending``, after every draft is
    approved, when the first email is in the SMTP server's hands and the others are queued.
    Returns once every email arrived; asserts that no opcore process died on the way."""
    mail = smtp(delay=0.5)
    with FakeOpenAI(default_content=DRAFT) as model:
        for _ in range(leads):
            model.delay(0.5, DRAFT)  # each draft takes a while: jobs are running at the fault
        env = opcore_env(
            tmp_path / "data",
            llm_base_url=model.base_url,
            smtp_url=mail.url,
            worker_threads="1",
            **FAST,
            **settings,
        )
        workers = Workers(env, tmp_path, count=2)
        console = Console(env, tmp_path)
        try:
            console.say(*(lead(n) for n in range(leads)))
            model.wait_for_requests(2, timeout=30)
            while_drafting()
            console.approve(leads, timeout=60)
            wait_until(lambda: mail.handler.receiving > 0, timeout=30, what="the first send")
            while_sending()
            took = wait_until(
                lambda: len(mail.handler.envelopes) >= leads, timeout=60, what="every email"
            )
            console.wait_for(r"Sent to jane\d+@", count=leads, timeout=30)
            time.sleep(1.0)  # room for a duplicate to show up, if there were one
            console.say("/status")  # the console's own connections work again
            [status] = console.wait_for(r"Jobs: [^\n]*", timeout=30)
            alive = workers.alive()
        finally:
            exit_codes = workers.stop()
            console_exit = console.close()
        requests = len(model.requests)
    assert alive == 2 and exit_codes == [0, 0], workers.log_path.read_text()[-4000:]
    assert console_exit == 0, console.log_path.read_text()[-4000:]
    assert "Something went wrong" not in console.out
    return LeadsRun(env, leads, mail.handler.per_recipient(), status, requests, took)


def assert_each_lead_done_once(run: LeadsRun, log: list[ev.RecordedEvent]) -> None:
    assert run.sent == {f"jane{n}@acme.example": 1 for n in range(run.leads)}
    assert run.status == f"Jobs: 0 running, 0 awaiting approval, {run.leads} done, 0 failed"
    jobs = types_by_job(log)
    assert len(jobs) == run.leads
    for types in jobs.values():
        assert types.count("ModelCalled") == 1 and types.count("ActionExecuted") == 1, types
        assert "ActionOutcomeUnknown" not in types and "JobFailed" not in types, types


@pytest.mark.postgres
@pytest.mark.redis
def test_restarting_redis_under_running_workers_loses_no_job_and_sends_each_email_once(
    tmp_path: Path, postgres_url: str, smtp: Callable[..., Smtp], figures: Figures
) -> None:
    leads = sized(6, 24)
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    seen: dict[str, int] = {}

    def restart_keeping_data() -> None:  # a clean restart: the append-only file has it all
        seen["messages before the restart"] = server.messages()
        server.restart(down=1.0, keep_data=True)
        seen["messages after the restart"] = server.messages()

    def restart_losing_data() -> None:  # a crash of a Redis that kept nothing: queues gone
        server.restart(down=1.0, keep_data=False)
        seen["keys after the crash"] = server.keys()

    try:
        run = leads_through_faults(
            tmp_path,
            smtp,
            leads=leads,
            settings={"database_url": postgres_url, "broker_url": server.url},
            while_drafting=restart_keeping_data,
            while_sending=restart_losing_data,
        )
    finally:
        server.stop()
    log = read_log(run.env)
    assert_each_lead_done_once(run, log)
    assert seen["messages after the restart"] >= leads - 2  # all but the two drafting
    assert seen["keys after the crash"] == 0
    requeued = sum(isinstance(e.data, ev.ActionRequeued) for e in log)
    assert requeued >= 1  # what the crashed Redis held came back from the log
    assert_replay_converges(run.env, tmp_path)
    figures.add("leads", run.leads)
    figures.add("Redis restarts (clean with data, crash without)", server.restarts)
    figures.add("messages kept by the clean restart", seen["messages after the restart"])
    figures.add("emails sent", sum(run.sent.values()))
    figures.add("duplicate emails", sum(run.sent.values()) - len(run.sent))
    figures.add("jobs re-sent by the reconciler", sum(e.type == "JobRequeued" for e in log))
    figures.add("actions re-sent by the reconciler", requeued)
    figures.add("model requests", run.model_requests)
    figures.add("seconds from the crash to the last email", run.seconds_to_last_email, "s")


@pytest.mark.postgres
@pytest.mark.redis
def test_restarting_postgresql_mid_run_loses_nothing_and_sends_each_email_once(
    tmp_path: Path,
    private_postgres: PrivatePostgres,
    smtp: Callable[..., Smtp],
    figures: Figures,
) -> None:
    broker = PrivateRedis(tmp_path / "redis")
    broker.start()
    try:
        run = leads_through_faults(
            tmp_path,
            smtp,
            leads=sized(4, 16),
            settings={"database_url": private_postgres.url, "broker_url": broker.url},
            # A crash (recovery from the WAL at start) while two jobs wait for the model: their
            # drafts come back while the database is down.
            while_drafting=lambda: private_postgres.restart(mode="immediate", down=1.0),
            # A clean restart (every connection closed) while an email is being sent.
            while_sending=lambda: private_postgres.restart(mode="fast", down=0.5),
        )
    finally:
        broker.stop()
    log = read_log(run.env)
    assert_each_lead_done_once(run, log)
    assert_replay_converges(run.env, tmp_path)
    figures.add("leads", run.leads)
    figures.add("PostgreSQL restarts (crash, clean)", private_postgres.restarts)
    figures.add("emails sent", sum(run.sent.values()))
    figures.add("duplicate emails", sum(run.sent.values()) - len(run.sent))
    figures.add(
        "model requests (a draft lost with the database is asked again)", run.model_requests
    )
    figures.add("seconds from the second restart to the last email", run.seconds_to_last_email, "s")


# 3. The model provider: 5xx, 429 with Retry-After, timeouts -----------------------------------


def test_a_model_answering_503_429_and_nothing_is_retried_with_backoff_and_proposes_once(
    tmp_path: Path, figures: Figures
) -> None:
    with FakeOpenAI(default_content=DRAFT) as model:
        model.status(503)
        model.status(429, headers={"Retry-After": "1"})
        model.delay(2.0, DRAFT)  # longer than llm_timeout: a timeout
        model.reply(DRAFT)
        env = opcore_env(
            tmp_path / "data",
            llm_base_url=model.base_url,
            llm_timeout="0.5",
            retry_min_backoff_ms="100",
            max_retries="4",
        )
        result = opcore(["console"], env, stdin=f"{LEAD}\n1\n", cwd=tmp_path)
        requests = list(model.requests)
    assert result.returncode == 0, result.stderr
    assert len(requests) == 4
    after_429 = requests[2].at - requests[1].at
    assert after_429 >= 1.0, (
        f"the retry after a 429 with Retry-After: 1 came {after_429:.2f} s later"
    )
    log = read_log(env)
    failed = [e.data for e in log if isinstance(e.data, ev.JobAttemptFailed)]
    assert [f.error_type for f in failed] == [
        "ProviderUnavailableError",
        "ProviderUnavailableError",
        "ProviderTimeoutError",
    ]
    assert [f.attempt for f in failed] == [1, 2, 3]
    assert failed[1].retry_in_s >= 1.0  # Retry-After: 1
    assert failed[0].retry_in_s < failed[2].retry_in_s  # the backoff doubles (with jitter)
    types = [e.type for e in log]
    assert types.count("ModelCalled") == 1
    assert types.count("ActionProposed") == 1 and types.count("ActionExecuted") == 1
    assert result.stdout.count("Approve and send") == 1
    assert "failed:" not in result.stdout
    assert result.stdout.count("Sent to jane@acme.example.") == 1
    assert len(list((tmp_path / "data" / "outbox").glob("*.eml"))) == 1
    assert_replay_converges(env, tmp_path)
    figures.add("model requests (503, 429, timeout, 200)", len(requests))
    figures.add("retry delays", ", ".join(f"{f.retry_in_s:.2f}" for f in failed), "s")
    figures.add("seconds between the 429 and the next request", after_429, "s")
    figures.add("proposals", types.count("ActionProposed"))


def test_a_model_that_keeps_timing_out_fails_once_clearly_and_retry_proposes_once(
    tmp_path: Path, figures: Figures
) -> None:
    with FakeOpenAI(default_content=DRAFT) as model:
        for _ in range(3):
            model.delay(2.0, DRAFT)
        env = opcore_env(
            tmp_path / "data",
            llm_base_url=model.base_url,
            llm_timeout="0.4",
            retry_min_backoff_ms="100",
            max_retries="2",
        )
        # [1] Retry on the failure message, then [3] Approve and send on the new proposal.
        result = opcore(["console"], env, stdin=f"{LEAD}\n1\n3\n", cwd=tmp_path)
        requests = len(model.requests)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("failed:") == 1
    assert "(lead) failed: ProviderTimeoutError" in out and "after 3 attempts" in out
    assert "[1] Retry   [2] Discard" in out
    assert out.count("Approve and send") == 1
    assert out.count("Sent to jane@acme.example.") == 1
    types = [e.type for e in read_log(env)]
    assert types.count("JobAttemptFailed") == 2 and types.count("JobFailed") == 1
    assert types.count("JobRetried") == 1
    assert types.count("ActionProposed") == 1 and types.count("ActionExecuted") == 1
    assert requests == 4
    assert len(list((tmp_path / "data" / "outbox").glob("*.eml"))) == 1
    assert_replay_converges(env, tmp_path)
    figures.add("model requests (3 timeouts, then the retry)", requests)
    figures.add("failure messages", out.count("failed:"))
    figures.add("proposals", types.count("ActionProposed"))


# 4. Connectors down and back ------------------------------------------------------------


def test_an_smtp_outage_across_a_restart_is_retried_then_reconciled_and_sends_once(
    tmp_path: Path, smtp: Callable[..., Smtp], figures: Figures
) -> None:
    mail = smtp(refuse_first=1, up=False)  # down; once up, one 421 before it accepts
    env = opcore_env(
        tmp_path / "data",
        smtp_url=mail.url,
        email_from="Sam <sam@rivera.example>",
        console_drain_seconds="2.5",
        **FAST,
    )
    first = opcore(["console"], env, stdin=f"{LEAD}\n1\n", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Still working on job(s)" in first.stdout and "Sent to" not in first.stdout
    [during] = actions_of(read_log(env), "email").values()
    assert during.count("ActionAttemptFailed") >= 2 and "ActionExecuted" not in during
    mail.start()
    second = opcore(["console"], {**env, "OPCORE_CONSOLE_DRAIN_SECONDS": "30"}, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resumed 0 job(s) and 1 action(s)" in second.stderr
    assert second.stdout.count("Sent to jane@acme.example.") == 1
    assert mail.handler.refused == 1
    assert mail.handler.per_recipient() == {"jane@acme.example": 1}
    [after] = actions_of(read_log(env), "email").values()
    assert after.count("ActionExecuted") == 1 and after.count("ActionStarted") >= 3
    assert "ActionRequeued" in after and "ActionOutcomeUnknown" not in after
    assert_replay_converges(env, tmp_path)
    figures.add("failed attempts (down, then 421)", after.count("ActionAttemptFailed"))
    figures.add("emails sent", len(mail.handler.envelopes))


def test_a_caldav_outage_during_approved_milestones_is_retried_and_creates_each_event_once(
    tmp_path: Path, figures: Figures
) -> None:
    calendar: CalDavServer = start_caldav_server(tmp_path / "caldav")
    port = int(calendar.base_url.rsplit(":", 1)[1])
    env = opcore_env(
        tmp_path / "data",
        flows="consultant",
        caldav_url=calendar.url,
        caldav_username=calendar.username,
        caldav_password=calendar.password,
        **FAST,
    )
    console = Console(env, tmp_path)
    try:
        console.say(
            "/proposal jane@acme.example Website audit: audit, report; price 2400 EUR; 2 weeks"
        )
        console.approve(1)
        console.wait_for(r"Sent to jane@acme\.example\.")
        calendar.stop()  # CalDAV goes down before the milestones are approved
        console.ask_until("/flows", r"waiting for won")  # the flow moved on after the send
        console.say("/won jane@acme.example")
        console.wait_for(r"The consultant flow moves on")
        console.wait_for(r"actions to approve")
        console.say("/approvals")
        console.approve(3)  # the proposal's, then the two calendar events
        time.sleep(1.5)  # the first attempts meet a closed port
        calendar = start_caldav_server(tmp_path / "caldav", port=port)
        events_dir = calendar.storage / "collection-root" / "alice" / "calendar"
        took = wait_until(
            lambda: len(list(events_dir.glob("*.ics"))) >= 2, timeout=30, what="two events"
        )
        console.wait_for(r"Done: Add to calendar", count=2)
        time.sleep(0.5)
    finally:
        exit_code = console.close()
        calendar.stop()
    assert exit_code == 0, console.log_path.read_text()[-4000:]
    stored = sorted(events_dir.glob("*.ics"))
    assert len(stored) == 2
    actions = actions_of(read_log(env), "calendar")
    assert len(actions) == 2
    for types in actions.values():
        assert types.count("ActionExecuted") == 1 and types.count("ActionAttemptFailed") >= 1
    assert_replay_converges(env, tmp_path)
    figures.add("calendar events created", len(stored))
    figures.add(
        "failed attempts while CalDAV was down",
        sum(t.count("ActionAttemptFailed") for t in actions.values()),
    )
    figures.add("seconds from CalDAV back to both events", took, "s")


def _signed(event: str, delivery: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    mac = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={mac}",
    }


def test_a_webhook_receiver_down_then_failing_gets_the_release_post_exactly_once(
    tmp_path: Path, figures: Figures
) -> None:
    receiver = WebhookReceiver([503, 200])  # down; then one 503; then accepting
    listen = free_port()
    env = opcore_env(
        tmp_path / "data",
        flows="micro-saas",
        webhook_listen=f"127.0.0.1:{listen}",
        webhook_sources=json.dumps({"github": {"kind": "github", "secret": "gh-secret"}}),
        outgoing_webhooks=json.dumps({"releases": {"url": receiver.url, "secret": "s"}}),
        release_webhook="releases",
        **FAST,
    )
    console = Console(env, tmp_path)
    try:
        wait_for_port(listen, timeout=30)
        repo = {"full_name": "sam/app", "default_branch": "main"}
        commits = [{"id": "c1", "message": "fix: login works again"}]
        push = {"ref": "refs/heads/main", "repository": repo, "commits": commits}
        release = {"action": "published", "release": {"tag_name": "v2.0.0"}, "repository": repo}
        for event, delivery, payload in (("push", "p-1", push), ("release", "r-1", release)):
            body, headers = _signed(event, delivery, payload)
            url = f"http://127.0.0.1:{listen}/webhooks/github"
            assert httpx.post(url, content=body, headers=headers).is_success
        console.wait_for(r"actions to approve")
        console.say("/approvals")
        console.wait_for(r"to the releases webhook")
        approved = console.approve(2)
        time.sleep(1.5)  # the first attempts meet a closed port
        receiver.start()
        took = wait_until(lambda: bool(receiver.accepted), timeout=30, what="the webhook post")
        console.wait_for(r"Done: Announce v2\.0\.0 to the releases webhook")
        time.sleep(1.0)
    finally:
        exit_code = console.close()
        receiver.stop()
    assert exit_code == 0, console.log_path.read_text()[-4000:]
    assert len(approved) >= 2
    assert len(receiver.accepted) == 1 and len(set(receiver.keys)) == 1
    assert len(receiver.keys) == 2  # the 503, then the accepted one
    [types] = actions_of(read_log(env), "webhook").values()
    assert types.count("ActionExecuted") == 1 and types.count("ActionAttemptFailed") >= 2
    assert "ActionOutcomeUnknown" not in types
    assert_replay_converges(env, tmp_path)
    figures.add("webhook requests (503, then 200)", len(receiver.keys))
    figures.add("webhook posts accepted", len(receiver.accepted))
    figures.add("failed attempts (down, then 503)", types.count("ActionAttemptFailed"))
    figures.add("seconds from the receiver up to the post", took, "s")
