"""Parsing inbound email: raw RFC 5322 bytes into plain data.

:func:`parse_email` turns raw bytes into an :class:`InboundEmail` (headers decoded, the
plain-text body, the new part of a reply without quotes and signature, whether a machine sent
it). :func:`opcore_key_hash` recognises the Message-IDs :func:`connectors.email.build_message`
generates, so a reply to a proposal that went out finds the action it answers
(:func:`key_hash` is the same hash computed from an action's idempotency key).

Email content is untrusted data (DESIGN.md, invariant 6): it is parsed, never acted upon here.
Reading mailboxes is :mod:`connectors.inbox`.
"""

from __future__ import annotations

import hashlib
import logging
import re
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

from connectors.email import _key_hash
from connectors.errors import InvalidParamsError

# Split out of connectors/inbox.py: its records keep the logger name they always had.
_log = logging.getLogger("connectors.inbox")

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


def key_hash(idempotency_key: str) -> str:
    """The hash of an action's idempotency key that ``build_message`` puts in the Message-ID
    of the email it sends: what :func:`opcore_key_hash` finds in a reply."""
    return _key_hash(idempotency_key)


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
