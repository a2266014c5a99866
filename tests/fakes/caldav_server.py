"""A real CalDAV server (Radicale) on 127.0.0.1, in-process, with one calendar collection.

Radicale runs in a thread of the test process, so the network guard of ``tests/conftest.py``
covers it too. Authentication is htpasswd with plain-text passwords (one user, ``alice``), so
tests can check what wrong credentials do; rights are ``owner_only``: alice may use
``/alice/...``. Storage lives in the test's ``tmp_path``; nothing outside it is read or
written (``/etc/radicale`` is never consulted because the configuration is built in code).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from radicale import config as radicale_config
from radicale import server as radicale_server

from tests.fakes.smtp_server import free_port

USER = "alice"
PASSWORD = "correct horse"
_MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop>
    <D:displayname>opcore tests</D:displayname>
    <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
  </D:prop></D:set>
</C:mkcalendar>
"""


@dataclass
class CalDavServer:
    """A running Radicale: ``url`` is the calendar collection (ending in ``/``)."""

    base_url: str
    url: str
    username: str
    password: str
    storage: Path
    _shutdown: socket.socket
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop accepting requests, wait for the running ones and join the server thread."""
        self._shutdown.close()  # the server selects on the other end and returns
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("Radicale did not stop within 10 s")


def _configuration(tmp_path: Path, port: int) -> radicale_config.Configuration:
    (tmp_path / "radicale-collections" / "collection-root").mkdir(parents=True, exist_ok=True)
    users = tmp_path / "radicale-users"
    users.write_text(f"{USER}:{PASSWORD}\n", encoding="utf-8")
    configuration = radicale_config.load()
    configuration.update(
        {
            "server": {
                "hosts": f"127.0.0.1:{port}",
                "max_connections": "20",
                "timeout": "5",
                "delay_on_error": "0",
            },
            "auth": {
                "type": "htpasswd",
                "htpasswd_filename": str(users),
                "htpasswd_encryption": "plain",
                "delay": "0",  # Radicale sleeps after a failed login by default
            },
            "rights": {"type": "owner_only"},
            "storage": {"filesystem_folder": str(tmp_path / "radicale-collections")},
            "web": {"type": "none"},
            "hook": {"type": "none"},
        },
        "opcore tests",
    )
    return configuration


def _wait_until_listening(port: int, thread: threading.Thread, *, deadline: float) -> None:
    while True:
        if not thread.is_alive():
            raise RuntimeError("Radicale exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Radicale is not listening on 127.0.0.1:{port}") from None
            time.sleep(0.01)


def start_caldav_server(tmp_path: Path, *, port: int | None = None) -> CalDavServer:
    """Start Radicale on ``port`` (default: a free loopback port) and create ``/alice/calendar/``
    in it. Started again on the same ``tmp_path`` (after :meth:`CalDavServer.stop`), it serves
    the calendar it stored before: a server that was down and came back."""
    port = port or free_port()
    existing = (tmp_path / "radicale-collections" / "collection-root" / USER / "calendar").is_dir()
    configuration = _configuration(tmp_path, port)
    stop_here, stop_there = socket.socketpair()
    thread = threading.Thread(
        target=radicale_server.serve,
        args=(configuration, stop_there),
        name=f"radicale-{port}",
        daemon=True,
    )
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    server = CalDavServer(
        base_url=base_url,
        url=f"{base_url}/{USER}/calendar/",
        username=USER,
        password=PASSWORD,
        storage=tmp_path / "radicale-collections",
        _shutdown=stop_here,
        _thread=thread,
    )
    try:
        _wait_until_listening(port, thread, deadline=time.monotonic() + 5)
        if existing:
            return server
        response = httpx.request(
            "MKCALENDAR",
            server.url,
            content=_MKCALENDAR.encode(),
            headers={"Content-Type": "application/xml; charset=utf-8"},
            auth=(USER, PASSWORD),
            timeout=5,
        )
        if response.status_code != 201:
            raise RuntimeError(f"MKCALENDAR answered {response.status_code}: {response.text}")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(name="caldav_server")
def caldav_server_fixture(tmp_path: Path) -> Iterator[CalDavServer]:
    """A Radicale server with an empty calendar at ``.url``; stopped after the test."""
    server = start_caldav_server(tmp_path)
    try:
        yield server
    finally:
        server.stop()
