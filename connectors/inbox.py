"""Reading replies: inbound email from an IMAP mailbox or a local Maildir, as plain data.

:func:`parse_email` turns raw RFC 5322 bytes into an :class:`InboundEmail` (headers decoded,
the plain-text body, the new part of a reply without quotes and signature, whether a machine
sent it). :func:`opcore_key_hash` recognises the Message-IDs :func:`connectors.email.build_message`
generates, so a reply to a proposal that went out finds the action it answers.

An :class:`Inbox` is polled with an opaque cursor: the caller records the emails of a batch,
then stores the batch's cursor and passes it back next time. Reading is at least once (a
message may come again after a crash, a UIDVALIDITY change or a flag change in a Maildir);
the caller drops what it has seen by Message-ID. Nothing here marks, moves or deletes mail.
Email content is untrusted data (DESIGN.md, invariant 6): it is parsed, never acted upon here.
"""

from __future__ import annotations

import hashlib
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
from datetime import UTC, datetime
from email import message_from_bytes
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from connectors.email import _is_loopback, _key_hash
from connectors.errors import InvalidParamsError, PermanentConnectorError, TransientConnectorError

_log = logging.getLogger(__name__)

MAX_TEXT_BYTES = 100_000  # body text (and reply text) is cut to this many UTF-8 bytes
MAX_MESSAGE_BYTES = 25_000_000  # larger messages are skipped (counted) without being read
_MAX_HTML_CHARS = 1_000_000  # HTML beyond this is not converted (the text is cut anyway)
_MAX_HEADER_CHARS = 2_000
_MAX_REFERENCES = 50
_MAX_MIME_DEPTH = 20

_MSG_ID = re.compile(r"<\s*([^<>\s]+?)\s*>")
_BARE_ID = re.compile(r"[^<>\s@]+@[^<>\s@]+")
_KEY_HASH = re.compile(rf"[0-9a-f]{{{len(_key_hash('x'))}}}")
_FOLD = re.compile(r"\r?\n(?=[ \t])")

# --- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboundEmail:
    """One received email, decoded. Ids are without angle brackets; addresses lower-cased."""

    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    from_address: str
    from_name: str
    to: tuple[str, ...]
    subject: str
    date: datetime | None
    text: str  # the plain-text body (HTML converted when there is no plain part)
    reply_text: str  # the new part only: no quoted lines, earlier message or signature
    auto_submitted: bool  # auto-reply, bounce, bulk or list mail: not a person answering

    def answers(self) -> tuple[str, ...]:
        """The Message-IDs this email replies to: In-Reply-To first, then References."""
        ids = (self.in_reply_to, *self.references) if self.in_reply_to else self.references
        return tuple(dict.fromkeys(ids))


def parse_email(raw: bytes) -> InboundEmail:
    """Parse raw RFC 5322 bytes. Raises :class:`InvalidParamsError` when they are not an email
    (empty, no header fields, no From address, larger than :data:`MAX_MESSAGE_BYTES`).

    A message without a Message-ID gets a stable one derived from the SHA-256 of its bytes.
    """
    if not isinstance(raw, bytes | bytearray):
        raise InvalidParamsError(f"an email is bytes, not {type(raw).__name__}")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidParamsError(f"email of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    msg = message_from_bytes(bytes(raw), policy=compat32)  # lenient: defects, not exceptions
    headers: dict[str, str] = {}
    for name, value in msg.raw_items():
        headers.setdefault(name.lower(), _FOLD.sub("", _utf8(value)).strip())
    if not headers:
        raise InvalidParamsError("not an email: no header fields")
    from_name, from_address = parseaddr(headers.get("from", ""))
    if "@" not in from_address:
        raise InvalidParamsError(f"no usable From address in {headers.get('from', '')[:200]!r}")
    message_id = _first_id(headers.get("message-id", ""))
    if message_id is None:
        message_id = f"sha256.{hashlib.sha256(raw).hexdigest()}@inbox.opcore.invalid"
    references = tuple(_MSG_ID.findall(headers.get("references", "")))
    if len(references) > _MAX_REFERENCES:  # keep the thread's root and the most recent ones
        references = (references[0], *references[-(_MAX_REFERENCES - 1) :])
    text = _truncate(_body_text(msg))
    return InboundEmail(
        message_id=message_id[:_MAX_HEADER_CHARS],
        in_reply_to=_first_id(headers.get("in-reply-to", "")),
        references=tuple(r[:_MAX_HEADER_CHARS] for r in references),
        from_address=from_address.strip().lower()[:_MAX_HEADER_CHARS],
        from_name=_decode_words(from_name).strip()[:_MAX_HEADER_CHARS],
        to=tuple(addr.strip().lower() for _, addr in getaddresses([headers.get("to", "")]) if addr),
        subject=_decode_words(headers.get("subject", "")).strip()[:_MAX_HEADER_CHARS],
        date=_date(headers.get("date")),
        text=text,
        reply_text=reply_part(text),
        auto_submitted=_is_automatic(msg, headers, from_address),
    )


def opcore_key_hash(message_id: str, *, domain: str | None = None) -> str | None:
    """The idempotency-key hash inside a Message-ID that ``build_message`` generated, else None.

    ``domain`` (the sender's domain) makes the match strict; without it any ``<hash>@host``
    of the right shape matches, and the caller's lookup of the hash decides.
    """
    local, at, host = message_id.strip().strip("<>").rpartition("@")
    if not at or not _KEY_HASH.fullmatch(local):
        return None
    if domain is not None and host.lower() != domain.lower():
        return None
    return local


def answered_key_hashes(email: InboundEmail, *, domain: str | None = None) -> tuple[str, ...]:
    """The key hashes of opcore's own messages that ``email`` replies to (nearest first)."""
    found = (opcore_key_hash(i, domain=domain) for i in email.answers())
    return tuple(dict.fromkeys(h for h in found if h is not None))


def _utf8(value: str) -> str:
    """Header text as parsed (8-bit bytes kept as surrogates) with raw bytes read as UTF-8."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; undecodable parts are replaced, never fatal."""
    try:
        parts = decode_header(value)
    except HeaderParseError:
        return value
    out: list[str] = []
    for part, charset in parts:
        if isinstance(part, str):
            out.append(part)
        elif charset is None:
            try:  # decode_header encoded the unencoded words this way
                out.append(part.decode("raw-unicode-escape"))
            except UnicodeDecodeError:  # a literal backslash-u in the header
                out.append(part.decode("latin-1"))
        else:
            out.append(_decode_bytes(part, charset))
    return "".join(out)


def _decode_bytes(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):  # an unknown (or NUL-laden) charset: guess UTF-8
        return data.decode("utf-8", "replace")


def _first_id(value: str) -> str | None:
    if m := _MSG_ID.search(value):
        return m[1]
    bare = _BARE_ID.search(value)
    return bare[0] if bare else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)  # "-0000"


def _truncate(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    data = text.encode("utf-8", "replace")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _is_automatic(msg: Message, headers: dict[str, str], from_address: str) -> bool:
    auto = headers.get("auto-submitted", "").split(";")[0].strip().lower()
    return bool(
        (auto and auto != "no")
        or headers.get("precedence", "").strip().lower() in {"bulk", "junk", "list"}
        or from_address.partition("@")[0].lower() == "mailer-daemon"
        or re.fullmatch(r"<\s*>", headers.get("return-path", "-"))
        or msg.get_content_type() == "multipart/report"
        or any(
            headers.get(h, "no").strip().lower() != "no" for h in ("x-autoreply", "x-autorespond")
        )
    )


def _body_text(msg: Message) -> str:
    plain: list[str] = []
    html: list[str] = []
    for part in _leaf_parts(msg, 0):
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        content = _decode_bytes(payload, part.get_content_charset() or "utf-8")
        (plain if ctype == "text/plain" else html).append(content.replace("\r\n", "\n"))
    if plain:
        return "\n".join(plain)
    return "\n".join(html_to_text(h[:_MAX_HTML_CHARS]) for h in html)


def _leaf_parts(part: Message, depth: int) -> Iterator[Message]:
    """Inline leaf parts in order; attachments and attached messages are not the body."""
    if part.get_content_disposition() == "attachment" or depth > _MAX_MIME_DEPTH:
        return
    if part.get_content_maintype() == "message":
        return
    if not part.is_multipart():
        yield part
        return
    children = part.get_payload()
    if isinstance(children, list):
        for child in children:
            if isinstance(child, Message):
                yield from _leaf_parts(child, depth + 1)


class _HtmlText(HTMLParser):
    """HTML to readable text: blocks become lines, blockquotes become "> " lines."""

    _BLOCKS = re.compile(
        r"address|article|aside|blockquote|dd|div|dl|dt|footer|form|h[1-6]|header|hr|li|ol|p"
        r"|pre|section|table|tr|ul"
    )
    _PARAGRAPHS = re.compile(r"blockquote|h[1-6]|ol|p|table|ul")
    _HIDDEN = re.compile(r"head|script|style|template|title")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._quote = self._hidden = self._pre = 0
        self._links: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._HIDDEN.fullmatch(tag):
            self._hidden += 1
        elif tag == "br":
            self._break()
        elif self._BLOCKS.fullmatch(tag):
            self._break(paragraph=bool(self._PARAGRAPHS.fullmatch(tag)))
            self._quote += tag == "blockquote"
            self._pre += tag == "pre"
            if tag == "li":
                self._line.append("- ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", []))
        elif tag == "img" and (alt := dict(attrs).get("alt")):
            self.handle_data(f"[{alt}]")

    def handle_endtag(self, tag: str) -> None:
        if self._HIDDEN.fullmatch(tag):
            self._hidden = max(0, self._hidden - 1)
        elif self._BLOCKS.fullmatch(tag):
            self._break(paragraph=bool(self._PARAGRAPHS.fullmatch(tag)))
            if tag == "blockquote":
                self._quote = max(0, self._quote - 1)
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag == "a" and self._links:
            href, words = self._links.pop()
            if href.startswith(("http:", "https:")) and href not in "".join(words):
                self.handle_data(f" <{href}>")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        for _, words in self._links:
            words.append(data)
        if not self._pre:
            self._line.append(re.sub(r"\s+", " ", data))
            return
        first, *rest = data.split("\n")
        self._line.append(first)
        for line in rest:
            self._break()
            self._line.append(line)

    def _break(self, *, paragraph: bool = False) -> None:
        text = "".join(self._line)
        text = text.rstrip() if self._pre else re.sub(r" +", " ", text).strip()
        self._line = []
        if text:
            self.lines.append("> " * self._quote + text)
        if paragraph and self.lines and self.lines[-1] != "":
            self.lines.append("")

    def text(self) -> str:
        self.close()
        self._break()
        return re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines)).strip()


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of an HTML body (quotes as "> " lines)."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        return parser.text()
    except AssertionError as exc:  # html.parser's answer to e.g. "<![foo[" (CPython gh-77057)
        _log.info("HTML body did not parse (%s); stripping its tags instead", exc)
        stripped = unescape(re.sub(r"<[^>]*>", " ", html))
        return re.sub(r"[ \t]+", " ", stripped).strip()


# --- the new part of a reply ------------------------------------------------------------------

_QUOTE_HEADER = re.compile(
    r"(On\s.{1,300}\swrote|Am\s.{1,300}\sschrieb.{0,200}|Le\s.{1,300}\sa\sécrit"
    r"|El\s.{1,300}\sescribió|Op\s.{1,300}\sschreef.{0,200}|Il\s.{1,300}\sha\sscritto)\s?:",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(
    r"-{2,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine|Forwarded message)"
    r"\s*-{2,}",
    re.IGNORECASE,
)
_OUTLOOK_FROM = re.compile(r"\*{0,2}(From|Von|De):\*{0,2}\s", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(r"\*{0,2}(Sent|Date|Gesendet|Datum|Envoyé):\*{0,2}\s", re.IGNORECASE)
_MOBILE_FOOTER = re.compile(r"(Sent from my |Get Outlook for )\S.*", re.IGNORECASE)


def reply_part(text: str) -> str:
    """The part of a reply its author wrote now: without quoted (">") lines, the earlier
    message below an "On ... wrote:" line or an Outlook separator, and the signature."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line in ("--", "-- ") or _ORIGINAL.fullmatch(line.strip()):
            break
        if _outlook_header(lines, i):
            break
        if n := _quote_header(lines, i):
            if any(k.strip() for k in kept):
                break  # top-posted: everything below is the earlier message
            i += n  # bottom-posted or inline: drop the header, keep unquoted answers below
            continue
        if not line.lstrip().startswith(">"):
            kept.append(line)
        i += 1
    while kept and (not kept[-1].strip() or _MOBILE_FOOTER.fullmatch(kept[-1].strip())):
        kept.pop()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")


def _quote_header(lines: Sequence[str], i: int) -> int:
    """How many lines (1 or 2: clients wrap it) an "On <date>, <name> wrote:" header takes."""
    line = lines[i].strip()
    if _QUOTE_HEADER.fullmatch(line):
        return 1
    if i + 1 < len(lines) and _QUOTE_HEADER.fullmatch(f"{line} {lines[i + 1].strip()}"):
        return 2
    return 0


def _outlook_header(lines: Sequence[str], i: int) -> bool:
    """Outlook's "From: ... / Sent: ..." block, optionally after a line of underscores."""
    line = lines[i].strip()
    if re.fullmatch(r"_{10,}", line):
        following = [x for x in lines[i + 1 : i + 4] if x.strip()]
        return bool(following) and bool(_OUTLOOK_FROM.match(following[0].strip()))
    if not _OUTLOOK_FROM.match(line):
        return False
    return any(_OUTLOOK_SENT.match(x.strip()) for x in lines[i + 1 : i + 5])


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
