"""The email connector: one write action, ``send_email``, delivered by SMTP or to an outbox.

:func:`build_message` turns validated parameters into an RFC 5322 message whose Message-ID is
derived from the idempotency key, so every attempt of one action carries the same id and a
remote side can drop duplicates. :class:`OutboxDelivery` writes ``.eml`` files (the default
when no SMTP server is configured) and can see earlier attempts; :class:`SmtpDelivery` cannot.

Attachments are documents named by their path relative to the documents folder the connector
is given (``documents_dir``); without one, attachments are refused. A named file must exist
inside that folder (symlinks resolved) and be at most 10 MB: this is checked when the action is
validated (a proposal naming a missing document fails at once, before any approval), and the
file is read when the message is built.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import mimetypes
import os
import re
import smtplib
import ssl
import tempfile
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from email.policy import default as default_policy
from email.utils import format_datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Annotated, Any, ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from connectors.base import ActionResult, ActionSpec, Connector
from connectors.errors import (
    ConnectorError,
    InvalidParamsError,
    OutcomeUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
)

_log = logging.getLogger(__name__)
_ADDRESS = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,}|xn--[A-Za-z0-9-]+))"
)
_SENDER = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>")
# RFC 5322 with CRLF, and 7-bit clean so that servers without 8BITMIME accept it too.
_POLICY = SMTP.clone(cte_type="7bit")
_KEY = re.compile(r"[!-~]{1,200}")  # printable ASCII, no spaces: safe inside a header
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024


def _check_address(value: str) -> str:
    if any(c in value for c in "\r\n, "):
        raise ValueError("an address may not contain line breaks, commas or spaces")
    if len(value) > 254 or not (m := _ADDRESS.fullmatch(value)) or len(m["local"]) > 64:
        raise ValueError("expected one plain address like name@example.com")
    return value


def is_sendable_address(value: str) -> bool:
    """Whether ``value`` is one plain address this connector will send to."""
    try:
        _check_address(value)
    except ValueError:
        return False
    return True


def _check_header_text(value: str) -> str:
    if any(c != "\t" and unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise ValueError("may not contain line breaks or control characters")
    return value


def _check_document_path(value: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in value) or "\\" in value:
        raise ValueError("a document path may not contain control characters or backslashes")
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or value.startswith("~"):
        raise ValueError(
            "an attachment is a path relative to the documents folder, like invoices/2026-0007.pdf"
        )
    return value


EmailAddress = Annotated[str, AfterValidator(_check_address)]
DocumentPath = Annotated[
    str, Field(min_length=1, max_length=255), AfterValidator(_check_document_path)
]


class SendEmail(BaseModel):
    """Parameters of ``send_email``: one recipient, optional copies, a plain-text body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: EmailAddress
    subject: Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_check_header_text)]
    body: Annotated[str, Field(max_length=100_000)]
    cc: tuple[EmailAddress, ...] = Field(default=(), max_length=50)
    reply_to: EmailAddress | None = None
    attachments: tuple[DocumentPath, ...] = Field(default=(), max_length=MAX_ATTACHMENTS)

    @model_serializer(mode="wrap")
    def _omit_no_attachments(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An email without attachments dumps as it did before attachments existed.
        data: dict[str, Any] = handler(self)
        if not data.get("attachments"):
            data.pop("attachments", None)
        return data


@dataclass(frozen=True)
class Attachment:
    """A file to attach: its name in the message, its bytes and its MIME type."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"

    @classmethod
    def of(cls, path: Path) -> Attachment:
        """The file at ``path``; a :class:`ConnectorError` when it cannot be read whole."""
        try:
            with path.open("rb") as f:
                data = f.read(MAX_ATTACHMENT_BYTES + 1)
        except OSError as exc:
            raise PermanentConnectorError(f"cannot read the attachment {path}: {exc}") from exc
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise PermanentConnectorError(f"the attachment {path} grew past 10 MB")
        guessed, encoding = mimetypes.guess_type(path.name, strict=False)
        content_type = guessed if guessed and not encoding else "application/octet-stream"
        return cls(filename=path.name, data=data, content_type=content_type)


def resolve_attachments(documents_dir: Path | None, names: Sequence[str]) -> list[Path]:
    """The files ``names`` point at inside ``documents_dir``; :class:`InvalidParamsError` when
    one is outside it, missing, not a file or larger than 10 MB, or there is no folder."""
    if not names:
        return []
    if documents_dir is None:
        raise InvalidParamsError(
            "send_email: this email connector has no documents folder, so it sends no attachments"
        )
    root = documents_dir.resolve()
    paths = []
    for name in names:
        path = (root / name).resolve()
        if not path.is_relative_to(root) or path == root:
            raise InvalidParamsError(
                f"send_email: attachment {name!r} is outside the documents folder"
            )
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidParamsError(f"send_email: no document {name!r} ({exc.strerror})") from exc
        if not path.is_file():
            raise InvalidParamsError(f"send_email: attachment {name!r} is not a file")
        if size > MAX_ATTACHMENT_BYTES:
            raise InvalidParamsError(f"send_email: attachment {name!r} is larger than 10 MB")
        paths.append(path)
    return paths


def parse_sender(sender: str) -> Address:
    """``name@example.com`` or ``Display Name <name@example.com>`` as an :class:`Address`."""
    m = _SENDER.fullmatch(sender)
    name, addr = (m["name"].strip().strip('"'), m["addr"]) if m else ("", sender)
    _check_address(addr)
    _check_header_text(name)
    return Address(display_name=name, addr_spec=addr)


def _key_hash(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def build_message(
    params: SendEmail,
    *,
    sender: str,
    idempotency_key: str,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """An RFC 5322 message whose Message-ID depends only on ``idempotency_key`` and sender
    (multipart/mixed when ``attachments`` are given)."""
    if not _KEY.fullmatch(idempotency_key):
        raise InvalidParamsError("idempotency_key must be 1-200 printable ASCII characters")
    from_ = parse_sender(sender)
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = from_
    msg["To"] = params.to
    if params.cc:
        msg["Cc"] = ", ".join(params.cc)
    if params.reply_to is not None:
        msg["Reply-To"] = params.reply_to
    msg["Subject"] = params.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{_key_hash(idempotency_key)}@{from_.domain}>"
    msg["X-Opcore-Idempotency-Key"] = idempotency_key
    msg.set_content(params.body, subtype="plain", charset="utf-8")
    for attachment in attachments:
        maintype, subtype = attachment.content_type.split("/", 1)
        msg.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return msg


class Delivery(ABC):
    """Where a built message goes."""

    @abstractmethod
    def deliver(self, msg: EmailMessage, *, idempotency_key: str) -> ActionResult:
        """Hand ``msg`` over once; raise a :class:`ConnectorError` when that fails."""

    @abstractmethod
    def lookup(self, *, idempotency_key: str) -> ActionResult | None:
        """The result of an earlier delivery with this key, ``None`` if unknown."""

    #: Whether a ``None`` from :meth:`lookup` proves that nothing was delivered.
    definitive: bool = False


class OutboxDelivery(Delivery):
    """One ``.eml`` file per key in ``directory``; a key already written is not written again.

    Files appear atomically (temporary file, fsync, rename), so a file that exists is whole.
    """

    definitive = True  # the file is written atomically: no file, no delivery

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, idempotency_key: str) -> Path:
        return self.directory / f"{_key_hash(idempotency_key)}.eml"

    def _result(self, path: Path, msg: EmailMessage) -> ActionResult:
        details = {"message_id": str(msg["Message-ID"]), "path": str(path), "to": str(msg["To"])}
        return ActionResult(
            summary=f"Written to {path} (delivery: outbox)",
            details={**details, "delivery": "outbox"},
        )

    def lookup(self, *, idempotency_key: str) -> ActionResult | None:
        path = self._path(idempotency_key)
        try:
            with path.open("rb") as f:
                return self._result(
                    path, BytesParser(policy=default_policy).parse(f, headersonly=True)
                )
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _outbox_error(exc, path) from exc

    def deliver(self, msg: EmailMessage, *, idempotency_key: str) -> ActionResult:
        if (earlier := self.lookup(idempotency_key=idempotency_key)) is not None:
            return earlier
        path = self._path(idempotency_key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(msg.as_bytes())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)  # only still there when writing or renaming failed
        except OSError as exc:
            raise _outbox_error(exc, path) from exc
        return self._result(path, msg)


def _outbox_error(exc: OSError, path: Path) -> ConnectorError:
    fatal = isinstance(
        exc, PermissionError | FileExistsError | IsADirectoryError | NotADirectoryError
    )
    kind = PermanentConnectorError if fatal else TransientConnectorError
    return kind(f"email outbox: cannot use {path}: {exc}")


class SmtpDelivery(Delivery):
    """Send through an SMTP server given as ``smtp://[user[:pass]@]host[:port]`` (STARTTLS
    when offered, port 25) or ``smtps://...`` (implicit TLS, port 465).

    SMTP cannot say whether an earlier attempt got through (a connection lost after the final
    ``.`` is ambiguous); the stable Message-ID lets the receiving side drop the duplicate.
    The password is never sent in clear text to a host other than loopback.
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP url must look like smtp://[user[:pass]@]host[:port] or smtps://")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("SMTP url takes no path, query or fragment")
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "")
        self.timeout = timeout
        self.server = f"{parts.scheme}://{self.host}:{self.port}"

    def lookup(self, *, idempotency_key: str) -> ActionResult | None:
        return None  # SMTP cannot tell; see the class docstring

    def deliver(self, msg: EmailMessage, *, idempotency_key: str) -> ActionResult:
        try:
            refused = self._send(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            kind = (
                TransientConnectorError if all(c < 500 for c in codes) else PermanentConnectorError
            )
            raise kind(f"{self.server} refused every recipient: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            kind = PermanentConnectorError if exc.smtp_code >= 500 else TransientConnectorError
            err = exc.smtp_error
            reply = err.decode(errors="replace") if isinstance(err, bytes) else err
            raise kind(f"{self.server} replied {exc.smtp_code} {reply}") from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientConnectorError(f"{self.server} closed the connection: {exc}") from exc
        except (smtplib.SMTPException, ssl.SSLCertVerificationError) as exc:
            raise PermanentConnectorError(f"{self.server}: {exc}") from exc
        except OSError as exc:  # refused, unreachable, timed out, TLS broken mid-way
            raise TransientConnectorError(f"cannot reach {self.server}: {exc!r}") from exc
        summary = f"Sent to {msg['To']} via {self.server} (delivery: smtp)"
        if refused:
            summary += f"; refused: {', '.join(sorted(refused))}"
        details = {"message_id": str(msg["Message-ID"]), "to": str(msg["To"]), "delivery": "smtp"}
        return ActionResult(summary=summary, details={**details, "refused": ", ".join(refused)})

    def _send(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        tls = ssl.create_default_context()
        smtp = (
            smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=tls)
            if self.implicit_tls
            else smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        )
        with closing(smtp):
            secure = self.implicit_tls
            smtp.ehlo()
            if not secure and smtp.has_extn("starttls"):
                smtp.starttls(context=tls)
                smtp.ehlo()
                secure = True
            if self.user is not None:
                if not secure and not _is_loopback(self.host):
                    raise PermanentConnectorError(
                        f"{self.server} offers no STARTTLS; refusing to send the password in "
                        "clear text (use smtps:// or a server with STARTTLS)"
                    )
                smtp.login(self.user, self._password)
            sent_body = False
            data = smtp.data

            def tracked_data(content: Any) -> tuple[int, bytes]:
                nonlocal sent_body
                sent_body = True  # from here on, a lost connection leaves the outcome unknown
                return data(content)

            smtp.data = tracked_data  # type: ignore[method-assign,assignment]
            try:
                refused = smtp.send_message(msg)
            except smtplib.SMTPResponseException:
                raise  # the server answered (accepted or refused): the outcome is known
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                if sent_body:
                    raise OutcomeUnknownError(
                        f"{self.server}: the connection was lost after the message was sent, before the "
                        f"server confirmed it ({exc!r}); it may have been delivered"
                    ) from exc
                raise
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError) as exc:
                # The message was accepted; failing now would make a retry send it twice.
                _log.warning("SMTP QUIT to %s failed after delivery: %r", self.server, exc)
        return refused


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmailConnector(Connector):
    """Sends plain-text email through a :class:`Delivery`."""

    name: ClassVar[str] = "email"
    actions: ClassVar[Mapping[str, ActionSpec]] = MappingProxyType(
        {
            "send_email": ActionSpec(
                name="send_email",
                mode="write",
                description=(
                    "Send a plain-text email to one address (optional Cc, Reply-To, and up to "
                    "10 attachments named by their path in the documents folder)."
                ),
                params=SendEmail,
                sensitive=("to", "cc", "reply_to", "attachments"),
                free_text=("subject", "body"),
            )
        }
    )

    def __init__(
        self, *, sender: str, delivery: Delivery, documents_dir: Path | None = None
    ) -> None:
        parse_sender(sender)  # fail at start-up, not at the first send
        self.sender = sender
        self.delivery = delivery
        self.documents_dir = documents_dir

    def validate(self, action: str, params: Mapping[str, Any]) -> BaseModel:
        validated = super().validate(action, params)
        if isinstance(validated, SendEmail):
            resolve_attachments(self.documents_dir, validated.attachments)
        return validated

    def execute(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult:
        validated = super().validate(action, params)  # the files are checked below
        if not isinstance(validated, SendEmail):
            raise TypeError(f"{action!r} is not validated by SendEmail")
        if (earlier := self.delivery.lookup(idempotency_key=idempotency_key)) is not None:
            return earlier  # delivered already: the attachments need not be read again
        files = resolve_attachments(self.documents_dir, validated.attachments)
        msg = build_message(
            validated,
            sender=self.sender,
            idempotency_key=idempotency_key,
            attachments=[Attachment.of(path) for path in files],
        )
        return self.delivery.deliver(msg, idempotency_key=idempotency_key)

    def lookup(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult | None:
        self.spec(action)
        return self.delivery.lookup(idempotency_key=idempotency_key)

    @property
    def lookup_is_definitive(self) -> bool:
        return self.delivery.definitive


def email_connector_from(
    *,
    smtp_url: str,
    outbox_dir: Path,
    sender: str,
    smtp_timeout: float,
    documents_dir: Path | None = None,
) -> EmailConnector:
    """SMTP when ``smtp_url`` is set, the outbox directory otherwise. Attachments are read
    from ``documents_dir`` (none: attachments are refused)."""
    delivery: Delivery = (
        SmtpDelivery(smtp_url, timeout=smtp_timeout) if smtp_url else OutboxDelivery(outbox_dir)
    )
    return EmailConnector(sender=sender, delivery=delivery, documents_dir=documents_dir)
