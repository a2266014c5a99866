"""A small IMAP4rev1 server on 127.0.0.1 that imaplib talks to unchanged (RFC 3501 syntax).

It keeps one mailbox, ``INBOX``, and speaks the wire protocol faithfully where a client can
get it wrong: tagged and untagged responses ending in CRLF, quoted strings and synchronizing
literals (``{n}`` answered with ``+``) in commands, literals in FETCH responses, response
codes (``[UIDVALIDITY n]``, ``[UIDNEXT n]``, ``[READ-ONLY]``, ``[AUTHENTICATIONFAILED]``),
command states (LOGIN before SELECT before FETCH), and the rules a reader must respect:

- ``BODY[]`` and ``RFC822`` set ``\\Seen`` in a mailbox opened with SELECT (and report the
  new FLAGS); ``BODY.PEEK[]`` never does, and nothing changes in an EXAMINEd mailbox.
- ``UID n:*`` always matches the highest UID, even when it is below ``n`` (RFC 3501, 6.4.8).
- Messages added during a session are announced with an untagged ``EXISTS``.

Supported: CAPABILITY, NOOP, LOGOUT, LOGIN, SELECT, EXAMINE, CLOSE, SEARCH and UID SEARCH
(ALL, SEEN, UNSEEN, UID <set>, <sequence set>), FETCH and UID FETCH (UID, FLAGS,
RFC822.SIZE, BODY[], BODY.PEEK[], RFC822). Anything else is answered ``BAD``.

Test helpers: :meth:`FakeImap.add`, :meth:`~FakeImap.set_uidvalidity`, :meth:`~FakeImap.url`,
:meth:`~FakeImap.fail_next` (drop or stall the next connections), :meth:`~FakeImap.flags`, and
:attr:`~FakeImap.commands` (every command line received, literals elided).
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

import pytest

CAPABILITIES = "IMAP4rev1"
MAILBOX = "INBOX"
SYSTEM_FLAGS = r"(\Answered \Flagged \Deleted \Seen \Draft)"
_MAX_LINE = 65_536
_ATOM_END = re.compile(rb"[ ()]")
_LITERAL = re.compile(rb"\{(\d{1,9})(\+?)\}$")
_SET_ITEM = re.compile(r"(\d+|\*)(?::(\d+|\*))?")
_TAG = re.compile(r"[^\x00-\x20(){%*\"\\\]+\x7f-\xff]+")
_Matcher = Callable[[int], bool]


class ImapSyntaxError(Exception):
    """A command the server cannot parse: answered with BAD."""


@dataclass
class StoredMessage:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)


class FakeImap:
    """The server's state and its test helpers; one instance per ``imap_server`` fixture."""

    def __init__(self, *, user: str = "opcore@example.com", password: str = "p@ss:w/rd%1") -> None:
        self.user = user
        self.password = password
        self.uidvalidity = 1
        self.uid_next = 1
        self.messages: list[StoredMessage] = []
        self.commands: list[str] = []
        #: Put the UID after the body literal in FETCH responses (servers may order items freely).
        self.uid_last = False
        self.connections = 0
        self._lock = threading.Lock()
        self._failures: list[Literal["drop", "stall"]] = []
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Session)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def url(
        self, user: str | None = None, password: str | None = None, *, mailbox: str = MAILBOX
    ) -> str:
        """``imap://user:password@127.0.0.1:port/INBOX``, percent-encoded."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        return (
            f"imap://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(mailbox, safe='')}"
        )

    def add(self, raw: bytes, *, flags: tuple[str, ...] = ()) -> int:
        """Deliver ``raw`` into INBOX; returns its UID."""
        with self._lock:
            uid = self.uid_next
            self.uid_next += 1
            self.messages.append(StoredMessage(uid, raw, set(flags)))
            return uid

    def set_uidvalidity(self, value: int) -> None:
        """As if the mailbox were recreated: the UIDs a client remembers mean nothing now."""
        with self._lock:
            self.uidvalidity = value

    def flags(self, uid: int) -> frozenset[str]:
        with self._lock:
            return frozenset(next(m.flags for m in self.messages if m.uid == uid))

    def fail_next(self, n: int, *, mode: Literal["drop", "stall"] = "drop") -> None:
        """The next ``n`` connections are closed at once (``drop``) or get no greeting until
        the server stops (``stall``, for client timeouts)."""
        with self._lock:
            self._failures.extend([mode] * n)

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _connected(self, sock: socket.socket) -> Literal["drop", "stall"] | None:
        with self._lock:
            self.connections += 1
            self._sockets.add(sock)
            return self._failures.pop(0) if self._failures else None


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeImap


class _Session(socketserver.StreamRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # many small response lines: no 40 ms delayed-ACK stalls
    state = "nonauth"  # nonauth -> auth -> selected (RFC 3501, 3)
    readonly = True
    view: list[StoredMessage]  # the messages this session knows, in sequence order

    def handle(self) -> None:
        fake = self.server.fake
        self.request.settimeout(10)
        failure = fake._connected(self.request)
        if failure == "drop":
            return
        if failure == "stall":
            fake._stopped.wait(10)
            return
        self.view = []
        self.send(f"* OK [CAPABILITY {CAPABILITIES}] fake IMAP4rev1 server ready")
        while not fake._stopped.is_set():
            try:
                command = self.read_command()
            except ImapSyntaxError as exc:
                self.send(f"* BAD {exc}")
                continue
            except OSError:
                return
            if command is None:
                return
            tag, tokens = command
            if not tokens:
                self.send(f"{tag} BAD missing command")
                continue
            try:
                if not self.dispatch(tag, tokens[0].upper(), tokens[1:]):
                    return
            except ImapSyntaxError as exc:
                self.send(f"{tag} BAD {exc}")

    # --- wire ----------------------------------------------------------------------------

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.wfile.write(data + b"\r\n")
        self.wfile.flush()

    def read_command(self) -> tuple[str, list[str]] | None:
        """One command: its tag and tokens (atoms, parenthesised lists as one token, quoted
        strings and literals unquoted). None at end of input."""
        tokens: list[str] = []
        shown: list[str] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line:
                return None
            if not line.endswith(b"\r\n"):
                if len(line) > _MAX_LINE:
                    raise ImapSyntaxError("line too long")
                return None  # the client went away in the middle of a line
            line = line[:-2]
            literal = _LITERAL.search(line)
            part = line[: literal.start()] if literal else line
            tokens.extend(_tokens(part))
            shown.append(part.decode("latin-1"))
            if literal is None:
                break
            if not literal[2]:  # synchronizing: the client waits for a continuation
                self.send("+ Ready for literal data")
            data = self.rfile.read(int(literal[1]))
            tokens.append(data.decode("utf-8", "replace"))
            shown.append(f"{{{len(data)}}}")
        self.server.fake.commands.append(" ".join(shown).strip())
        if not tokens:
            return None
        tag, rest = tokens[0], tokens[1:]
        if not _TAG.fullmatch(tag):
            raise ImapSyntaxError("invalid tag")
        return tag, rest

    # --- commands ------------------------------------------------------------------------

    def dispatch(self, tag: str, name: str, args: list[str]) -> bool:
        """Answer one command; False when the session ends."""
        fake = self.server.fake
        if name == "CAPABILITY":
            self.send(f"* CAPABILITY {CAPABILITIES}")
        elif name == "NOOP":
            self.announce()
        elif name == "LOGOUT":
            self.send("* BYE fake IMAP4rev1 server logging out")
            self.send(f"{tag} OK LOGOUT completed")
            return False
        elif name == "LOGIN" and self.state == "nonauth":
            if len(args) != 2:
                raise ImapSyntaxError("LOGIN takes a user name and a password")
            if (args[0], args[1]) != (fake.user, fake.password):
                self.send(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials")
                return True
            self.state = "auth"
        elif name in ("SELECT", "EXAMINE") and self.state in ("auth", "selected"):
            if len(args) != 1:
                raise ImapSyntaxError(f"{name} takes one mailbox name")
            if args[0].upper() != MAILBOX:
                self.state = "auth"
                self.send(f"{tag} NO [NONEXISTENT] Unknown mailbox")
                return True
            self.select(tag, name)
            return True
        elif name == "CLOSE" and self.state == "selected":
            self.state = "auth"
        elif name == "UID" and self.state == "selected" and args:
            sub = args[0].upper()
            if sub == "SEARCH":
                self.search(args[1:], by_uid=True)
            elif sub == "FETCH":
                self.fetch(args[1:], by_uid=True)
            else:
                raise ImapSyntaxError(f"UID {sub} is not supported")
        elif name == "SEARCH" and self.state == "selected":
            self.search(args, by_uid=False)
        elif name == "FETCH" and self.state == "selected":
            self.fetch(args, by_uid=False)
        else:
            raise ImapSyntaxError(f"{name} is unknown or not valid in state {self.state}")
        self.send(f"{tag} OK {name} completed")
        return True

    def select(self, tag: str, name: str) -> None:
        fake = self.server.fake
        with fake._lock:
            self.view = list(fake.messages)
            validity, uid_next = fake.uidvalidity, fake.uid_next
        self.state = "selected"
        self.readonly = name == "EXAMINE"
        self.send(f"* FLAGS {SYSTEM_FLAGS}")
        self.send(f"* {len(self.view)} EXISTS")
        self.send("* 0 RECENT")
        self.send(f"* OK [UIDVALIDITY {validity}] UIDs valid")
        self.send(f"* OK [UIDNEXT {uid_next}] Predicted next UID")
        mode = "READ-ONLY" if self.readonly else "READ-WRITE"
        self.send(f"{tag} OK [{mode}] {name} completed")

    def announce(self) -> None:
        """Tell the client about messages delivered since it last heard (untagged EXISTS)."""
        fake = self.server.fake
        with fake._lock:
            known = {m.uid for m in self.view}
            arrived = [m for m in fake.messages if m.uid not in known]
        if arrived:
            self.view.extend(arrived)
            self.send(f"* {len(self.view)} EXISTS")

    def search(self, args: list[str], *, by_uid: bool) -> None:
        self.announce()
        if not args:
            raise ImapSyntaxError("SEARCH needs criteria")
        matches = set(range(1, len(self.view) + 1))
        i = 0
        while i < len(args):
            key = args[i].upper()
            if key == "ALL":
                pass
            elif key in ("SEEN", "UNSEEN"):
                want = key == "SEEN"
                matches = {n for n in matches if ("\\Seen" in self.view[n - 1].flags) == want}
            elif key == "UID" and i + 1 < len(args):
                i += 1
                uids = self.uid_matcher(args[i])
                matches = {n for n in matches if uids(self.view[n - 1].uid)}
            elif _SET_ITEM.match(key):
                seqs = _set_matcher(key, len(self.view))
                matches = {n for n in matches if seqs(n)}
            else:
                raise ImapSyntaxError(f"search key {key} is not supported")
            i += 1
        found = sorted(self.view[n - 1].uid if by_uid else n for n in matches)
        self.send(" ".join(["* SEARCH", *map(str, found)]))

    def uid_matcher(self, spec: str) -> _Matcher:
        return _set_matcher(spec, max((m.uid for m in self.view), default=0))

    def fetch(self, args: list[str], *, by_uid: bool) -> None:
        self.announce()
        if len(args) != 2:
            raise ImapSyntaxError("FETCH takes a set and data items")
        spec, items_arg = args
        items = items_arg[1:-1].split() if items_arg.startswith("(") else [items_arg]
        items = [item.upper() for item in items]
        known = {"UID", "FLAGS", "RFC822.SIZE", "BODY[]", "BODY.PEEK[]", "RFC822"}
        if not items or not set(items) <= known:
            raise ImapSyntaxError(f"unsupported FETCH items {items_arg}")
        if by_uid:
            items = [i for i in items if i != "UID"]
            matches = self.uid_matcher(spec)
            chosen = [(n, m) for n, m in enumerate(self.view, 1) if matches(m.uid)]
        else:
            matches = _set_matcher(spec, len(self.view))
            chosen = [(n, m) for n, m in enumerate(self.view, 1) if matches(n)]
        for seq, message in chosen:
            self.send(self.fetch_response(seq, message, items, by_uid=by_uid))

    def fetch_response(
        self, seq: int, message: StoredMessage, items: list[str], *, by_uid: bool
    ) -> bytes:
        fake = self.server.fake
        parts: list[bytes] = []
        flags_changed = False
        for item in items:
            if item == "UID":
                parts.append(b"UID %d" % message.uid)
            elif item == "FLAGS":
                parts.append(b"FLAGS (%s)" % " ".join(sorted(message.flags)).encode())
            elif item == "RFC822.SIZE":
                parts.append(b"RFC822.SIZE %d" % len(message.raw))
            else:
                name = b"RFC822" if item == "RFC822" else b"BODY[]"
                parts.append(b"%s {%d}\r\n%s" % (name, len(message.raw), message.raw))
                if item != "BODY.PEEK[]" and not self.readonly:
                    with fake._lock:
                        flags_changed = "\\Seen" not in message.flags
                        message.flags.add("\\Seen")
        if flags_changed and "FLAGS" not in items:
            parts.append(b"FLAGS (%s)" % " ".join(sorted(message.flags)).encode())
        if by_uid:
            uid = b"UID %d" % message.uid
            parts = [*parts, uid] if fake.uid_last else [uid, *parts]
        return b"* %d FETCH (%s)" % (seq, b" ".join(parts))


def _set_matcher(spec: str, largest: int) -> _Matcher:
    """A sequence set (``1:3,5,7:*``) as a membership test; ``*`` is ``largest``."""
    ranges: list[tuple[int, int]] = []
    for item in spec.split(","):
        m = _SET_ITEM.fullmatch(item)
        if not m:
            raise ImapSyntaxError(f"bad sequence set {spec!r}")
        if "0" in (m[1], m[2]):
            raise ImapSyntaxError(f"bad sequence set {spec!r}: numbers start at 1")
        ends = [largest if x == "*" else int(x) for x in (m[1], m[2] or m[1])]
        ranges.append((min(ends), max(ends)))
    return lambda n: any(lo <= n <= hi for lo, hi in ranges)


def _tokens(data: bytes) -> Iterator[str]:
    """Atoms, quoted strings (unescaped) and parenthesised lists (kept whole, as one token)."""
    i = 0
    while i < len(data):
        c = data[i : i + 1]
        if c == b" ":
            i += 1
        elif c == b'"':
            out = bytearray()
            i += 1
            while i < len(data) and data[i : i + 1] != b'"':
                if data[i : i + 1] == b"\\":
                    i += 1
                out += data[i : i + 1]
                i += 1
            if i >= len(data):
                raise ImapSyntaxError("unterminated quoted string")
            i += 1
            yield out.decode("utf-8", "replace")
        elif c == b"(":
            depth, start = 0, i
            while i < len(data):
                depth += {b"(": 1, b")": -1}.get(data[i : i + 1], 0)
                i += 1
                if depth == 0:
                    break
            if depth:
                raise ImapSyntaxError("unbalanced parentheses")
            yield data[start:i].decode("latin-1")
        else:
            start, depth = i, 0
            while i < len(data):  # an atom, with [...] sections that may hold spaces
                c = data[i : i + 1]
                depth += {b"[": 1, b"]": -1}.get(c, 0)
                if depth == 0 and _ATOM_END.match(c):
                    break
                i += 1
            if data[i : i + 1] == b")":
                raise ImapSyntaxError("unexpected )")
            yield data[start:i].decode("latin-1")


@pytest.fixture
def imap_server() -> Iterator[FakeImap]:
    """A fake IMAP server on 127.0.0.1, stopped after the test."""
    server = FakeImap()
    try:
        yield server
    finally:
        server.stop()
