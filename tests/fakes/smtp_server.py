"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what it accepts."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Recorder:
    """An aiosmtpd handler that keeps what it accepts and answers DATA with ``reply``."""

    def __init__(
        self, reply: str = "250 OK", rcpt_reply: str | None = None, refuse: str = ""
    ) -> None:
        self.reply = reply
        self.rcpt_reply = rcpt_reply
        self.refuse = refuse
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        if address == self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reply.startswith("250"):
            self.envelopes.append(envelope)
        return self.reply


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., int]]:
    """Start an aiosmtpd server on 127.0.0.1; returns its port. Stopped after the test."""
    controllers: list[Controller] = []

    def start(handler: Recorder, **smtp_kwargs: Any) -> int:
        port = free_port()
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, server_hostname="localhost", **smtp_kwargs
        )
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()
