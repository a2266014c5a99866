"""Channel overhead: from a received update to the job in the log and queued.

For each platform, the same update is processed by the real library twice in one process:
- ours: the opcore adapter's handler (translation, allowlist, dedup, parse, JobRequested
  appended, Dramatiq message sent; replies are not sent, so no network is involved);
- baseline: the bare library with a handler that does nothing.
Telegram: ``Application.process_update`` on python-telegram-bot. Slack: ``App.dispatch`` of a
signed request on slack-bolt (``process_before_response`` so the listener runs inside the
call). Prints p50/p99 of each over N updates and our added overhead (ours - baseline).
Target: added p50 <= 5 ms and p99 <= 25 ms on the embedded default.

Run ``python -m bench.bench_channels [--updates 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bench.common import row, write_results
from bot.dispatch import Dispatcher
from bot.messages import Reply
from bot.slack import SlackChannel
from bot.telegram import TelegramChannel
from config import Settings
from jobs.runtime import build_runtime
from jobs.service import JobService
from tests.fakes.slack_api import FakeSlack

SECRET = "bench-secret"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def tg_update(n: int) -> dict[str, Any]:
    text = f"/lead Jane Doe <jane{n}@acme.example> wants a website audit"
    return {
        "update_id": 10_000 + n,
        "message": {
            "message_id": n,
            "date": int(time.time()),
            "chat": {"id": 42, "type": "private"},
            "from": {"id": 42, "is_bot": False, "first_name": "Sam"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
        },
    }


async def telegram(
    settings: Settings, dispatcher: Dispatcher, n: int
) -> tuple[list[float], list[float]]:
    channel = TelegramChannel(settings=settings, dispatcher=dispatcher)

    async def no_send(chat_id: Any, reply: Reply) -> list[Any]:
        return []

    channel._send = no_send  # type: ignore[method-assign,assignment]  # measure up to the queue, not the reply
    ours_app = channel._app
    bare = (
        Application.builder()
        .token(settings.telegram_token.get_secret_value())
        .updater(None)
        .build()
    )

    async def nothing(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        return None

    bare.add_handler(MessageHandler(filters.TEXT, nothing))
    ours: list[float] = []
    base: list[float] = []
    for app, out, offset in ((ours_app, ours, 0), (bare, base, n)):
        app._initialized = (
            True  # initialize() would call getMe over the network; nothing else needs it here
        )
        for i in range(n):
            update = Update.de_json(tg_update(i + offset), app.bot)
            start = time.perf_counter()
            await app.process_update(update)
            out.append(time.perf_counter() - start)
    return ours, base


def slack_request(n: int) -> BoltRequest:
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T1",
            "api_app_id": "A1",
            "event_id": f"Ev{n}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
            "event": {
                "type": "message",
                "channel_type": "im",
                "channel": "D1",
                "user": "U1",
                "text": f"/lead Jane Doe <jane{n}@acme.example> wants a website audit",
                "ts": f"{n}.0",
            },
        }
    )
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return BoltRequest(
        body=body,
        headers={
            "x-slack-request-timestamp": [ts],
            "x-slack-signature": [sig],
            "content-type": ["application/json"],
        },
    )


def slack(settings: Settings, dispatcher: Dispatcher, n: int) -> tuple[list[float], list[float]]:
    channel = SlackChannel(settings=settings, dispatcher=dispatcher)  # only its listener runs
    channel._reply = lambda channel, reply, respond=None: None  # type: ignore[method-assign]
    # Bolt asks auth.test once (then caches it): a local Slack answers, nothing leaves the machine.
    fake = FakeSlack(bot_token="xoxb-bench").start()
    client = WebClient(token="xoxb-bench", base_url=fake.api_url)

    def build(listener: Any) -> App:
        app = App(
            token="xoxb-bench", client=client, signing_secret=SECRET, process_before_response=True
        )
        app.event("message")(listener)
        return app

    # The real app runs this listener lazily, after the ack; here it runs inside dispatch.
    ours_app = build(channel._on_event)
    bare = build(lambda event, body: None)
    ours: list[float] = []
    base: list[float] = []
    try:
        for app, out, offset in ((ours_app, ours, 0), (bare, base, n)):
            for i in range(n):
                request = slack_request(i + offset)
                start = time.perf_counter()
                response = app.dispatch(request)
                out.append(time.perf_counter() - start)
                assert response.status == 200, (response.status, response.body)
    finally:
        fake.stop()
    return ours, base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=1000)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            operators=("telegram:42", "slack:U1"),
            telegram_token=SecretStr("1:bench"),
            slack_bot_token=SecretStr("xoxb-bench"),
            slack_signing_secret=SecretStr(SECRET),
        )
        runtime = build_runtime(settings)  # no worker: the jobs stay queued, we measure up to there
        dispatcher = Dispatcher(
            settings=settings, service=JobService(runtime), log=runtime.store.log
        )
        for name, (ours, base) in (
            ("telegram", asyncio.run(telegram(settings, dispatcher, args.updates))),
            ("slack", slack(settings, dispatcher, args.updates)),
        ):
            added50, added99 = pct(ours, 0.5) - pct(base, 0.5), pct(ours, 0.99) - pct(base, 0.99)
            rows.append(
                {
                    "channel": name,
                    "ours_p50_ms": pct(ours, 0.5),
                    "ours_p99_ms": pct(ours, 0.99),
                    "base_p50_ms": pct(base, 0.5),
                    "base_p99_ms": pct(base, 0.99),
                    "added_p50_ms": added50,
                    "added_p99_ms": added99,
                    "target_met": added50 <= 5 and added99 <= 25,
                }
            )
        queued = len(runtime.store.log.read_all(limit=100_000, types=["JobRequested"]))
        runtime.close()
    print(
        f"{'channel':<9} {'ours p50/p99 ms':>16} {'bare p50/p99 ms':>16} {'added p50/p99 ms':>17}  target"
    )
    for r in rows:
        print(
            f"{r['channel']:<9} {r['ours_p50_ms']:>7.2f}/{r['ours_p99_ms']:<8.2f} {r['base_p50_ms']:>7.2f}/"
            f"{r['base_p99_ms']:<8.2f} {r['added_p50_ms']:>8.2f}/{r['added_p99_ms']:<8.2f}  "
            f"{'met' if r['target_met'] else 'NOT met'}"
        )
    print(f"({queued} jobs appended to the log and queued)")
    write_results("bench_channels", {"results": rows, "rows": common_rows(rows)})
    return 0


LIBRARIES = {"telegram": "Telegram (PTB process_update)", "slack": "Slack (Bolt dispatch, signed)"}


def common_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results in the common row format of :mod:`bench.common` (p50s; p99 in the note)."""
    return [
        row(
            f"update -> job queued, {LIBRARIES[r['channel']]}",
            r["ours_p50_ms"],
            "ms",
            baseline=r["base_p50_ms"],
            baseline_name="the bare library, handler does nothing",
            note=(
                f"p99 {r['ours_p99_ms']:.2f} vs {r['base_p99_ms']:.2f} ms; added p50/p99 "
                f"{r['added_p50_ms']:.2f}/{r['added_p99_ms']:.2f} ms (target <= 5/25: "
                f"{'met' if r['target_met'] else 'NOT met'})"
            ),
        )
        for r in rows
    ]


if __name__ == "__main__":
    raise SystemExit(main())
