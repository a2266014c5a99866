"""Reading replies: inbound email from an IMAP mailbox or a local Maildir, as plain data.

An :class:`Inbox` is polled with an opaque cursor: the caller records the emails of a batch,
then stores the batch's cursor and passes it back next time. Reading is at least once (a
message may come again after a crash, a UIDVALIDITY change or a flag change in a Maildir);
the caller drops what it has seen by Message-ID. Nothing here marks, moves or deletes mail.

Parsing a message (:func:`parse_email`, :class:`InboundEmail`, :func:`reply_part`,
:func:`answered_key_hashes`...) lives in :mod:`connectors.email_parse`; its public names are
re-exported here. Email content is untrusted data (DESIGN.md, invariant 6).
"""

from __future__ import annotations

import imaplib
import json
import logging
import os
import re
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from connectors.email import _is_loopback
from connectors.email_parse import (
    MAX_MESSAGE_BYTES,
    MAX_TEXT_BYTES,
    InboundEmail,
    answered_key_hashes,
    html_to_text,
    key_hash,
    opcore_key_hash,
    parse_email,
    reply_part,
)
from connectors.errors import InvalidParamsError, PermanentConnectorError, TransientConnectorError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT_BYTES",
    "ImapInbox",
    "InboundEmail",
    "Inbox",
    "InboxBatch",
    "MaildirInbox",
    "answered_key_hashes",
    "html_to_text",
    "inbox_from",
    "key_hash",
    "opcore_key_hash",
    "parse_email",
    "reply_part",
]

_log = logging.getLogger(__name__)

# --- inboxes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxBatch:
    """What one poll found. Store ``cursor`` after recording ``emails``; ``skipped`` counts
    messages that could not be read (malformed or too large) and were passed over."""

    emails: tuple[InboundEmail, ...]
    cursor: str | None
    skipped: int


class Inbox(ABC):
    """A source of inbound email, read from a cursor, at least once, without changing it."""

    @abstractmethod
    def poll(self, cursor: str | None, *, limit: int = 100) -> InboxBatch:
        """At most ``limit`` emails after ``cursor`` (``None``: from the beginning)."""


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidParamsError(f"limit must be at least 1, not {limit}")


def _parse_or_skip(raw: bytes, where: str) -> InboundEmail | None:
    try:
        return parse_email(raw)
    except InvalidParamsError as exc:
        _log.warning("inbox: skipping malformed message %s: %s", where, exc)
        return None


class ImapInbox(Inbox):
    """A mailbox on an IMAP server: ``imaps://user:pass@host[:993]/INBOX`` (implicit TLS) or
    ``imap://...`` (clear text, loopback hosts only). User, password and mailbox are
    percent-decoded.

    The mailbox is opened with EXAMINE (read-only) and bodies are fetched with
    ``BODY.PEEK[]``, so no flag changes. The cursor is ``"<uidvalidity>:<last uid>"``; when
    the server's UIDVALIDITY changes, reading starts again from the first message.
    """

    def __init__(
        self, url: str, *, timeout: float, max_message_bytes: int = MAX_MESSAGE_BYTES
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise InvalidParamsError("IMAP url must look like imaps://user:pass@host[:port]/INBOX")
        if parts.query or parts.fragment:
            raise InvalidParamsError("IMAP url takes no query or fragment")
        self.tls = parts.scheme == "imaps"
        self.host = parts.hostname
        if not self.tls and not _is_loopback(self.host):
            raise InvalidParamsError(
                f"imap:// sends the password in clear text; use imaps:// for {self.host}"
            )
        try:
            self.port = parts.port or (993 if self.tls else 143)
        except ValueError as exc:
            raise InvalidParamsError(f"IMAP url has a bad port: {exc}") from exc
        self.user = unquote(parts.username)
        self._password = unquote(parts.password or "")
        self.mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
        for what, value in (("user", self.user), ("password", self._password)):
            if not value.isascii() or "\r" in value or "\n" in value:
                raise InvalidParamsError(f"IMAP {what} must be ASCII without line breaks")
        if not self.mailbox.isascii() or not self.mailbox.isprintable():
            raise InvalidParamsError(f"IMAP mailbox must be printable ASCII: {self.mailbox!r}")
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.server = f"{parts.scheme}://{self.host}:{self.port}/{self.mailbox}"

    def __repr__(self) -> str:
        return f"ImapInbox({self.server!r}, user={self.user!r})"

    def poll(self, cursor: str | None, *, limit: int = 100) -> InboxBatch:
        _check_limit(limit)
        validity, last_uid = _imap_cursor(cursor)
        try:
            imap = (
                imaplib.IMAP4_SSL(
                    self.host,
                    self.port,
                    ssl_context=ssl.create_default_context(),
                    timeout=self.timeout,
                )
                if self.tls
                else imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
            )
            try:
                return self._poll(imap, validity, last_uid, limit)
            finally:
                try:
                    imap.logout()
                except (imaplib.IMAP4.error, OSError) as exc:
                    _log.info("IMAP LOGOUT from %s failed after reading: %r", self.server, exc)
        except imaplib.IMAP4.abort as exc:  # before .error: abort is its subclass
            raise TransientConnectorError(f"{self.server}: connection lost: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            reply = str(exc)
            kind = (
                TransientConnectorError
                if re.search(r"\[(UNAVAILABLE|INUSE|LIMIT)\]|\bBYE\b", reply)
                else PermanentConnectorError
            )
            raise kind(f"{self.server}: {reply}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentConnectorError(f"{self.server}: {exc}") from exc
        except OSError as exc:  # refused, unreachable, timed out, TLS broken
            raise TransientConnectorError(f"cannot reach {self.server}: {exc!r}") from exc

    def _poll(
        self, imap: imaplib.IMAP4, validity: int | None, last_uid: int, limit: int
    ) -> InboxBatch:
        imap.login(_quoted(self.user), self._password)
        typ, data = imap.select(_quoted(self.mailbox), readonly=True)  # EXAMINE
        if typ != "OK":
            raise PermanentConnectorError(f"{self.server}: cannot open the mailbox: {data!r}")
        _, codes = imap.response("UIDVALIDITY")
        if not codes or not isinstance(codes[-1], bytes) or not codes[-1].strip().isdigit():
            raise PermanentConnectorError(f"{self.server}: the server sent no UIDVALIDITY")
        current = int(codes[-1])
        if validity is not None and validity != current:
            _log.warning(
                "%s: UIDVALIDITY changed from %d to %d; reading the mailbox from the start",
                self.server,
                validity,
                current,
            )
            last_uid = 0
        typ, data = imap.uid("SEARCH", f"UID {last_uid + 1}:*")
        if typ != "OK":
            raise PermanentConnectorError(f"{self.server}: UID SEARCH failed: {data!r}")
        found = {
            int(n) for line in data if isinstance(line, bytes) for n in line.split() if n.isdigit()
        }
        # "n:*" always includes the highest UID, even when it is below n (RFC 3501, 6.4.8)
        batch = sorted(uid for uid in found if uid > last_uid)[:limit]
        emails: list[InboundEmail] = []
        skipped = 0
        if batch:
            sizes = _fetch_items(imap, batch, "(UID RFC822.SIZE)")
            small = []
            for uid in batch:
                if int(sizes.get(uid, b"0")) > self.max_message_bytes:
                    _log.warning("%s: skipping UID %d of %s bytes", self.server, uid, sizes[uid])
                    skipped += 1
                else:
                    small.append(uid)
            bodies = _fetch_items(imap, small, "(UID BODY.PEEK[])") if small else {}
            for uid in small:
                if uid not in bodies:
                    _log.warning("%s: UID %d vanished before it was fetched", self.server, uid)
                elif (email := _parse_or_skip(bodies[uid], f"UID {uid} in {self.server}")) is None:
                    skipped += 1
                else:
                    emails.append(email)
        return InboxBatch(tuple(emails), f"{current}:{batch[-1] if batch else last_uid}", skipped)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_cursor(cursor: str | None) -> tuple[int | None, int]:
    if cursor is None:
        return None, 0
    m = re.fullmatch(r"(\d{1,12}):(\d{1,12})", cursor)
    if not m:
        raise InvalidParamsError(f"not an IMAP inbox cursor: {cursor[:100]!r}")
    return int(m[1]), int(m[2])


def _uid_set(uids: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1:3,7``."""
    ranges: list[list[int]] = []
    for uid in sorted(uids):
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)


_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def _fetch_items(imap: imaplib.IMAP4, uids: Sequence[int], items: str) -> dict[int, bytes]:
    """UID -> the body literal (or the RFC822.SIZE digits) from one ``UID FETCH``.

    A server may put the UID before or after the literal; unsolicited FETCH responses for
    other messages (flag updates) are ignored.
    """
    typ, data = imap.uid("FETCH", _uid_set(uids), items)
    if typ != "OK":
        raise PermanentConnectorError(f"UID FETCH {items} failed: {data!r}")
    wanted = set(uids)
    found: dict[int, bytes] = {}
    literal: bytes | None = None
    for item in data:
        if isinstance(item, tuple):
            head, literal = item[0], item[1]
            text = head
        elif isinstance(item, bytes):
            text = item
        else:
            continue
        uid = _FETCH_UID.search(text)
        if literal is not None and uid and int(uid[1]) in wanted:
            found[int(uid[1])] = literal
            literal = None
        elif literal is None and uid and (size := _FETCH_SIZE.search(text)):
            found[int(uid[1])] = size[1]
        if isinstance(item, bytes):
            literal = None  # the end of a FETCH response: a literal without a UID is dropped
    return found


class MaildirInbox(Inbox):
    """The messages in a Maildir's ``new/`` and ``cur/`` (read only: nothing is moved).

    A message's key is its file name before the ``:info`` flags. The cursor is compact JSON
    ``{"t": <watermark ns>, "seen": [keys]}``: a message is new when its file's ctime is at or
    after the watermark and its key is not in ``seen``. ctime is used, not mtime, because a
    delivery's rename into ``new/`` sets it and no tool can set it to the past (``cp -p``,
    ``rsync -t`` or a restore can do that to mtime). The watermark trails the scan's start by
    ``settle_seconds`` (so a file being renamed in while the directory is listed is not
    missed) and never passes a message left for the next batch; ``seen`` holds only the keys at
    or after it, so the cursor stays small. A mail client changing a message's flags renames
    it and updates its ctime: that message comes again (the caller dedupes by Message-ID).
    """

    def __init__(
        self,
        path: Path,
        *,
        settle_seconds: float = 2.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.path = path
        self.settle_ns = int(settle_seconds * 1e9)
        self.max_message_bytes = max_message_bytes

    def __repr__(self) -> str:
        return f"MaildirInbox({str(self.path)!r})"

    def poll(self, cursor: str | None, *, limit: int = 100) -> InboxBatch:
        _check_limit(limit)
        watermark, seen = _maildir_cursor(cursor)
        started = time.time_ns()
        files = self._scan()
        fresh = sorted(
            (ctime, key)
            for key, (ctime, _, _) in files.items()
            if ctime >= watermark and key not in seen
        )
        batch, rest = fresh[:limit], fresh[limit:]
        emails: list[InboundEmail] = []
        skipped = 0
        for _, key in batch:
            _, size, path = files[key]
            if size > self.max_message_bytes:
                _log.warning("%s: skipping %s of %d bytes", self, key, size)
                skipped += 1
                continue
            raw = self._read(key, path)
            if raw is None:
                _log.info("%s: message %s was deleted before it was read", self, key)
            elif (email := _parse_or_skip(raw, f"{key} in {self.path}")) is None:
                skipped += 1
            else:
                emails.append(email)
        mark = started - self.settle_ns
        if rest:
            mark = min(mark, rest[0][0])
        done = seen | {key for _, key in batch}
        keep = sorted(key for key, (ctime, _, _) in files.items() if ctime >= mark and key in done)
        new_cursor = json.dumps({"t": mark, "seen": keep}, separators=(",", ":"))
        return InboxBatch(tuple(emails), new_cursor, skipped)

    def _scan(self) -> dict[str, tuple[int, int, Path]]:
        """key -> (ctime ns, size, path). new/ is listed before cur/, so a message moved from
        one to the other during the scan is seen at least once."""
        files: dict[str, tuple[int, int, Path]] = {}
        for sub in ("new", "cur"):
            for name, path in self._entries(sub):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    _log.debug("%s: %s moved while listing", self, path)
                    continue
                except OSError as exc:
                    raise _maildir_error(exc, path) from exc
                files[name.split(":", 1)[0]] = (st.st_ctime_ns, st.st_size, path)
        return files

    def _entries(self, sub: str) -> list[tuple[str, Path]]:
        directory = self.path / sub
        try:
            with os.scandir(directory) as it:
                return [
                    (e.name, Path(e.path)) for e in it if not e.name.startswith(".") and e.is_file()
                ]
        except FileNotFoundError as exc:
            raise PermanentConnectorError(f"{self.path} is not a Maildir (no {sub}/)") from exc
        except OSError as exc:
            raise _maildir_error(exc, directory) from exc

    def _read(self, key: str, path: Path) -> bytes | None:
        """The file's bytes; it may have moved (flags, new/ to cur/) since the scan."""
        for attempt in (path, *self._find(key)):
            try:
                return attempt.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _maildir_error(exc, attempt) from exc
        return None

    def _find(self, key: str) -> Iterator[Path]:
        for sub in ("new", "cur"):
            for name, path in self._entries(sub):
                if name == key or name.startswith(key + ":"):
                    yield path


def _maildir_cursor(cursor: str | None) -> tuple[int, frozenset[str]]:
    if cursor is None:
        return 0, frozenset()
    try:
        data = json.loads(cursor)
    except ValueError as exc:
        raise InvalidParamsError(f"not a Maildir inbox cursor: {cursor[:100]!r}") from exc
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("t"), int)
        or not isinstance(data.get("seen"), list)
        or not all(isinstance(k, str) for k in data["seen"])
    ):
        raise InvalidParamsError(f"not a Maildir inbox cursor: {cursor[:100]!r}")
    return data["t"], frozenset(data["seen"])


def _maildir_error(exc: OSError, path: Path) -> PermanentConnectorError | TransientConnectorError:
    kind = PermanentConnectorError if isinstance(exc, PermissionError) else TransientConnectorError
    return kind(f"Maildir: cannot read {path}: {exc}")


def inbox_from(*, imap_url: str, maildir: Path | None, timeout: float) -> Inbox | None:
    """The configured inbox: IMAP when ``imap_url`` is set, a Maildir when ``maildir`` is,
    None when neither is; both at once is a configuration error."""
    if imap_url and maildir is not None:
        raise InvalidParamsError(
            "configure either an IMAP url or a Maildir for the inbox, not both"
        )
    if imap_url:
        return ImapInbox(imap_url, timeout=timeout)
    return MaildirInbox(maildir) if maildir is not None else None
