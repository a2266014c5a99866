"""The console channel: stdin in, stdout out, buttons as numbered choices.

A real channel, not a test helper: the same dispatcher, the same approval tokens as Telegram
and Slack. It works interactively and with piped input; at end of input it waits (bounded)
for the jobs it started, prints what they produced, and returns.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TextIO

from bot.channel import Channel
from bot.dispatch import Dispatcher
from bot.messages import Button, ButtonPress, InboundMessage, Outbound, Reply

logger = logging.getLogger(__name__)

CHANNEL = "console"
USER = "local"
CHAT = "local"
PROMPT = "you> "
_CHOICE = re.compile(r"[0-9]{1,6}")  # ASCII digits only: "²".isdigit() is true but int() fails
BOT = "bot> "
INDENT = " " * len(BOT)


class ConsoleChannel(Channel):
    name = CHANNEL

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        in_flight: Callable[[list[str]], list[str]],
        drain_seconds: float,
        notifications_pending: Callable[[], bool] = lambda: False,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._in_flight = in_flight
        self.notifications_pending = notifications_pending
        self._drain_seconds = drain_seconds
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._interactive = self._stdin.isatty()
        self._lock = threading.Lock()
        self._buttons: dict[int, Button] = {}
        self._next_number = 1
        self._jobs: list[str] = []  # jobs whose progress this session waits for
        dispatcher.on_job_activity = self._jobs.append

    # Output ----------------------------------------------------------------------------

    def show(self, reply: Reply) -> None:
        if not reply.text and not reply.buttons:
            return
        with self._lock:
            lines = reply.text.splitlines() or [""]
            out = [BOT + lines[0]] + [INDENT + line if line else "" for line in lines[1:]]
            if reply.buttons:
                choices = []
                for button in reply.buttons:
                    number = self._next_number
                    self._next_number += 1
                    self._buttons[number] = button
                    choices.append(f"[{number}] {button.label}")
                out.append(INDENT + "   ".join(choices))
            self._stdout.write("\n".join(out) + "\n")
            self._stdout.flush()

    def deliver(self, outbound: Outbound) -> None:
        """Notifier sink: a message from a job, arriving while the operator may be typing."""
        if self._interactive:
            self._stdout.write("\n")
        self.show(outbound.reply)
        if self._interactive:
            self._stdout.write(PROMPT)
            self._stdout.flush()

    # Input -----------------------------------------------------------------------------

    def watch(self, job_ids: list[str]) -> None:
        """Also wait for these jobs at end of input (e.g. jobs resumed at start)."""
        self._jobs.extend(job_ids)

    def run(self, stop: threading.Event) -> None:
        self.show(Reply("opcore console. Type /help for commands, Ctrl-D to quit."))
        while not stop.is_set():
            if self._interactive:
                self._stdout.write(PROMPT)
                self._stdout.flush()
            line = self._stdin.readline()
            if not line:
                break
            try:
                self.handle_line(line.rstrip("\n"))
            except Exception:  # the outermost edge: one bad line must not end the session
                logger.exception("could not handle a console line")
                self.show(
                    Reply(
                        "Something went wrong with that line; it is in the log. The rest goes on."
                    )
                )
        self.drain()

    def handle_line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if _CHOICE.fullmatch(text):
            self._press(int(text))
            return
        msg = InboundMessage(CHANNEL, USER, CHAT, text, platform_id=None)
        for reply in self._dispatcher.handle_message(msg):
            self.show(reply)

    def _press(self, number: int) -> None:
        button = self._buttons.get(number)
        if button is None:
            # Piped input can name a button before the job that shows it has finished.
            self._wait(lambda: number in self._buttons)
            button = self._buttons.get(number)
        if button is None:
            self.show(Reply(f"There is no choice [{number}]. See /approvals."))
            return
        press = ButtonPress(CHANNEL, USER, CHAT, button.data, platform_id=uuid.uuid4().hex)
        self.show(self._dispatcher.handle_button(press))

    # Waiting ---------------------------------------------------------------------------

    def settled(self) -> bool:
        return not self._in_flight(self._jobs) and not self.notifications_pending()

    def _wait(self, done: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + self._drain_seconds
        while time.monotonic() < deadline:
            if done():
                return True
            if self.settled():  # nothing left that could make it true
                return done()
            time.sleep(0.05)
        return done()

    def drain(self) -> None:
        """End of input: wait (bounded) for the jobs this session started."""
        if self._wait(self.settled):
            return
        busy = self._in_flight(self._jobs)
        if busy:
            ids = ", ".join(j[:6] for j in busy)
            self.show(
                Reply(
                    f"Still working on job(s) {ids} after {self._drain_seconds:.0f} s; "
                    "they stay in the log and finish on the next start."
                )
            )
