"""Serving: the runtime, the reconciler's schedule, and every channel asked for, together.

``opcore run`` serves every configured channel (Telegram, Slack), or the console if none is;
``opcore bot <channel>`` serves one. Each channel has its own notifier (and cursor), so
channels may also run in separate processes.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial
from types import FrameType

from bot.channel import Channel
from bot.console import ConsoleChannel
from bot.dispatch import Dispatcher
from bot.errors import ChannelError
from bot.notifier import Notifier
from bot.webhook_server import WebhookServer, record_delivery
from config import Settings
from connectors.webhooks import WebhookDelivery
from jobs.metrics import OpcoreCollector, metrics_route
from jobs.reconciler import Scheduler
from jobs.runtime import advance_flows, build_runtime
from jobs.service import JobService
from store import queries
from store.db import redact
from store.log import EventLog

logger = logging.getLogger(__name__)

CHANNELS = ("console", "telegram", "slack")


def configured_channels(settings: Settings) -> list[str]:
    names = [
        n
        for n, on in (("telegram", settings.telegram_enabled), ("slack", settings.slack_enabled))
        if on
    ]
    return names or ["console"]


def _make_channel(
    name: str, settings: Settings, dispatcher: Dispatcher, service: JobService
) -> Channel:
    if name == "telegram":
        if not settings.telegram_enabled:
            raise ChannelError(
                "Telegram is not configured: set OPCORE_TELEGRAM_TOKEN (from @BotFather)"
            )
        from bot.telegram import TelegramChannel  # only this adapter imports python-telegram-bot

        telegram: Channel = TelegramChannel(settings=settings, dispatcher=dispatcher)
        return telegram
    if name == "slack":
        if not settings.slack_enabled:
            raise ChannelError(
                "Slack is not configured: set OPCORE_SLACK_BOT_TOKEN and OPCORE_SLACK_APP_TOKEN "
                "(Socket Mode) or OPCORE_SLACK_SIGNING_SECRET (HTTP mode); see bot/slack_manifest.yaml"
            )
        from bot.slack import SlackChannel  # only this adapter imports slack-bolt

        slack: Channel = SlackChannel(settings=settings, dispatcher=dispatcher)
        return slack
    if name == "console":
        return ConsoleChannel(
            dispatcher=dispatcher,
            in_flight=service.in_flight,
            drain_seconds=settings.console_drain_seconds,
        )
    raise ChannelError(f"unknown channel {name!r}; known: {', '.join(CHANNELS)}")


def serve(settings: Settings, names: Sequence[str]) -> int:
    runtime = build_runtime(settings, with_worker=settings.in_process_broker)
    if not settings.in_process_broker:
        print(
            f"opcore: broker is {redact(settings.broker_url)}; start workers with `opcore worker`.",
            file=sys.stderr,
        )
    service = JobService(runtime)
    dispatcher = Dispatcher(settings=settings, service=service, log=runtime.store.log)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    notifiers: list[Notifier] = []
    scheduler: Scheduler | None = None
    webhooks: WebhookServer | None = None
    kicker: FlowKicker | None = None
    try:
        if settings.webhook_listen:
            kicker = FlowKicker(lambda: advance_flows(runtime.conductor, runtime.reactions))
            kicker.start()
            collector = OpcoreCollector(
                head=runtime.store.log.head,
                budget_lines=service.budget_lines,
                broker_depth=lambda: service.status().broker_depth,
                slos=service.slo_reports,
            )
            webhooks = WebhookServer(
                listen=settings.webhook_listen,
                sources=settings.webhook_sources,
                on_delivery=partial(_record_and_kick, runtime.store.log, kicker),
                extra_routes={"/metrics": metrics_route(collector)},
            )
            webhooks.start()
            print(
                f"opcore: webhooks on http://{settings.webhook_listen}/webhooks/<source> "
                f"({', '.join(settings.webhook_sources) or 'no sources configured'}), "
                f"metrics on /metrics.",
                file=sys.stderr,
            )
        channels = {name: _make_channel(name, settings, dispatcher, service) for name in names}
        reconciler = service.reconciler()
        resumed: list[str] = []
        if settings.in_process_broker:
            # The in-process queue died with the previous process: whatever the log says is
            # queued or running is orphaned now, not after a lease.
            # No digest here: the notifiers are not started yet (the scheduler sends it). No
            # inbox either: a slow mail server must not hold the start (the scheduler reads it).
            report = replace(
                reconciler.with_leases(timedelta(0)), daily_digest=None, poll_inbox=None
            ).run_once()
            resumed = [*report.jobs, *(queries.get_action(a).job_id for a in report.actions)]
            if report.total:
                print(
                    f"opcore: resumed {len(report.jobs)} job(s) and {len(report.actions)} action(s) from the log.",
                    file=sys.stderr,
                )
        scheduler = Scheduler(
            reconciler,
            interval=settings.reconcile_interval_seconds,
            snapshot_every=settings.snapshot_every,
        )
        scheduler.start()
        for name, channel in channels.items():
            notifier = Notifier(
                log=runtime.store.log,
                channel=name,
                deliver=channel.deliver,
                home=settings.home_channel,
            )
            notifiers.append(notifier)
            if isinstance(channel, ConsoleChannel):
                channel.watch(resumed)
                channel.notifications_pending = notifier.pending
            notifier.start()
        console = channels.pop("console", None)
        _install_signal_handlers(stop, interrupt=console is not None)
        for name, channel in channels.items():
            thread = threading.Thread(
                target=_run_channel, args=(name, channel, stop), name=f"channel-{name}"
            )
            thread.start()
            threads.append(thread)
        if console is not None:
            console.run(stop)
            stop.set()
        else:
            print(
                f"opcore: serving {', '.join(names)}; Ctrl-C to stop.", file=sys.stderr, flush=True
            )
            while not stop.wait(0.5):
                if not any(t.is_alive() for t in threads):
                    break
        return 0
    finally:
        stop.set()
        if webhooks is not None:
            webhooks.stop()  # before the store closes: nothing is appended after it
        if kicker is not None:
            kicker.stop()
        for thread in threads:
            thread.join(timeout=15)
        for notifier in notifiers:
            notifier.stop()
        if scheduler is not None:
            scheduler.stop()
        runtime.close()


class FlowKicker:
    """Moves the flows on soon after a webhook delivery (a release, a payment) instead of at
    the scheduler's next tick, on one thread, off the request's: the sender gets its 200 at
    once, and a burst of deliveries makes one pass, not one each."""

    def __init__(self, advance: Callable[[], object]) -> None:
        self._advance = advance
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="opcore-flow-kick", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        self._due.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._due.wait(0.5):
                self._due.clear()
                self._advance()  # logs its own errors; the scheduler's tick is the safety net

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _record_and_kick(log: EventLog, kicker: FlowKicker, delivery: WebhookDelivery) -> bool:
    new = record_delivery(log, delivery)
    if new:
        kicker.kick()
    return new


def _run_channel(name: str, channel: Channel, stop: threading.Event) -> None:
    try:
        channel.run(stop)
    except ChannelError as exc:
        logger.error("channel %s stopped: %s", name, exc)
        print(f"opcore: {name}: {exc}", file=sys.stderr)


def _install_signal_handlers(stop: threading.Event, *, interrupt: bool) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if interrupt:
            raise KeyboardInterrupt  # the console is blocked reading stdin

    signal.signal(signal.SIGTERM, _stop)
    if not interrupt:
        signal.signal(signal.SIGINT, _stop)
