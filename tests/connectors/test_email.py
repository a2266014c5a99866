"""The email connector: outbox files, validation, and SMTP against a real local server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from connectors.email import (
    EmailConnector,
    OutboxDelivery,
    SendEmail,
    SmtpDelivery,
    build_message,
    email_connector_from,
)
from connectors.errors import (
    InvalidParamsError,
    OutcomeUnknownError,
    PermanentConnectorError,
    TransientConnectorError,
    UnknownActionError,
)
from tests.fakes.smtp_server import Recorder, free_port

SENDER = "Zoë Café <zoe@example.com>"
PARAMS: dict[str, Any] = {
    "to": "client@example.org",
    "subject": "Überweisung: 50 € — danke",
    "body": "Hallo,\n\ndie Rechnung ist bezahlt. Grüße, Zoë\n",
}


def parse(path: Path) -> EmailMessage:
    with path.open("rb") as f:
        msg = BytesParser(policy=default).parse(f)
    assert isinstance(msg, EmailMessage)
    return msg


def eml_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.eml"))


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "data" / "outbox"


@pytest.fixture
def connector(outbox: Path) -> EmailConnector:
    return EmailConnector(sender=SENDER, delivery=OutboxDelivery(outbox))


# --- outbox -------------------------------------------------------------------------------


def test_a_send_writes_one_parseable_rfc5322_file_with_the_right_headers(
    connector: EmailConnector, outbox: Path
) -> None:
    params = {**PARAMS, "cc": ["a@example.net", "b@example.net"], "reply_to": "zoe@example.org"}
    result = connector.execute("send_email", params, idempotency_key="act-1")

    [path] = eml_files(outbox)
    assert [p.name for p in outbox.iterdir()] == [path.name]  # no temporary file left behind
    msg = parse(path)
    assert msg["To"] == "client@example.org"
    assert msg["Cc"] == "a@example.net, b@example.net"
    assert msg["Reply-To"] == "zoe@example.org"
    assert msg["X-Opcore-Idempotency-Key"] == "act-1"
    assert msg["Message-ID"].endswith("@example.com>")
    assert msg["Date"].datetime.utcoffset().total_seconds() == 0
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content() == PARAMS["body"]
    assert result.summary == f"Written to {path} (delivery: outbox)"
    assert result.details == {
        "message_id": msg["Message-ID"],
        "path": str(path),
        "to": "client@example.org",
        "delivery": "outbox",
    }


def test_a_non_ascii_sender_name_and_subject_are_encoded_and_round_trip(
    connector: EmailConnector, outbox: Path
) -> None:
    connector.execute("send_email", PARAMS, idempotency_key="act-1")
    [path] = eml_files(outbox)
    raw = path.read_bytes()
    raw.decode("ascii")  # headers are RFC 2047 encoded, the body is transfer-encoded
    msg = parse(path)
    assert msg["Subject"] == PARAMS["subject"]
    assert msg["From"].addresses[0].display_name == "Zoë Café"
    assert msg["From"].addresses[0].addr_spec == "zoe@example.com"


def test_a_second_send_with_the_same_key_writes_nothing(
    connector: EmailConnector, outbox: Path
) -> None:
    first = connector.execute("send_email", PARAMS, idempotency_key="act-1")
    [path] = eml_files(outbox)
    before = path.read_bytes()
    second = connector.execute(
        "send_email", {**PARAMS, "subject": "changed"}, idempotency_key="act-1"
    )
    assert second == first
    assert eml_files(outbox) == [path]
    assert path.read_bytes() == before


def test_lookup_sees_nothing_before_a_send_and_the_result_after_it(
    connector: EmailConnector,
) -> None:
    assert connector.lookup("send_email", PARAMS, idempotency_key="act-1") is None
    result = connector.execute("send_email", PARAMS, idempotency_key="act-1")
    assert connector.lookup("send_email", PARAMS, idempotency_key="act-1") == result
    assert connector.lookup("send_email", PARAMS, idempotency_key="act-2") is None


def test_different_keys_write_different_files(connector: EmailConnector, outbox: Path) -> None:
    one = connector.execute("send_email", PARAMS, idempotency_key="act-1")
    two = connector.execute("send_email", PARAMS, idempotency_key="act-2")
    assert len(eml_files(outbox)) == 2
    assert one.details["message_id"] != two.details["message_id"]


def test_the_message_id_is_stable_for_a_key_and_differs_between_keys() -> None:
    params = SendEmail.model_validate(PARAMS)

    def message_id(key: str) -> str:
        return str(build_message(params, sender=SENDER, idempotency_key=key)["Message-ID"])

    assert message_id("act-1") == message_id("act-1")
    assert message_id("act-1") != message_id("act-2")


def test_a_key_that_could_break_a_header_is_refused(connector: EmailConnector) -> None:
    for key in ("", "act\r\nBcc: x@evil.com", "act 1", "x" * 201):
        with pytest.raises(InvalidParamsError):
            connector.execute("send_email", PARAMS, idempotency_key=key)


def test_an_outbox_path_that_is_a_file_is_a_permanent_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "outbox"
    not_a_dir.write_text("")
    connector = EmailConnector(sender=SENDER, delivery=OutboxDelivery(not_a_dir))
    with pytest.raises(PermanentConnectorError, match="email outbox") as info:
        connector.execute("send_email", PARAMS, idempotency_key="act-1")
    assert isinstance(info.value.__cause__, OSError)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nBcc: victim@example.com"},
        {"subject": "Hi\u2028Bcc: victim@example.com"},
        {"to": "client@example.org\r\nBcc: victim@example.com"},
        {"to": "client@example.org\n"},
        {"to": "client@example.org, victim@example.com"},
        {"to": "Client <client@example.org>"},
        {"cc": ["ok@example.org", "x@example.org\r\nBcc: victim@example.com"]},
        {"reply_to": "a@example.org,b@example.org"},
    ],
)
def test_header_injection_is_refused_and_nothing_is_written(
    connector: EmailConnector, outbox: Path, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParamsError):
        connector.execute("send_email", {**PARAMS, **change}, idempotency_key="act-1")
    assert not outbox.exists()


@pytest.mark.parametrize(
    "address",
    ["not-an-address", "a@b", "a@@example.com", "@example.com", "a@example.c", "a..b@example.com"],
)
def test_an_implausible_address_is_refused(connector: EmailConnector, address: str) -> None:
    with pytest.raises(InvalidParamsError, match="plain address"):
        connector.execute("send_email", {**PARAMS, "to": address}, idempotency_key="act-1")


@pytest.mark.parametrize(
    "change",
    [{"subject": ""}, {"subject": "x" * 301}, {"body": "x" * 100_001}, {"bcc": "a@example.org"}],
)
def test_out_of_bounds_or_unknown_params_are_refused(
    connector: EmailConnector, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParamsError):
        connector.execute("send_email", {**PARAMS, **change}, idempotency_key="act-1")


def test_an_unknown_action_is_refused(connector: EmailConnector) -> None:
    with pytest.raises(UnknownActionError):
        connector.execute("send_fax", PARAMS, idempotency_key="act-1")
    with pytest.raises(UnknownActionError):
        connector.lookup("send_fax", PARAMS, idempotency_key="act-1")


def test_a_bad_sender_fails_at_construction(outbox: Path) -> None:
    with pytest.raises(ValueError):
        EmailConnector(sender="me@example.com, you@example.com", delivery=OutboxDelivery(outbox))


def test_the_factory_picks_smtp_when_a_url_is_set_and_the_outbox_otherwise(outbox: Path) -> None:
    kwargs: dict[str, Any] = {"outbox_dir": outbox, "sender": SENDER, "smtp_timeout": 1.0}
    assert isinstance(email_connector_from(smtp_url="", **kwargs).delivery, OutboxDelivery)
    smtp = email_connector_from(smtp_url="smtps://u:p@mail.example.com", **kwargs).delivery
    assert isinstance(smtp, SmtpDelivery)
    assert (smtp.host, smtp.port, smtp.implicit_tls) == ("mail.example.com", 465, True)


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://", "smtp://host/path"])
def test_a_malformed_smtp_url_fails_at_construction(url: str) -> None:
    with pytest.raises(ValueError):
        SmtpDelivery(url, timeout=1.0)


# --- SMTP against a real aiosmtpd server ---------------------------------------------------


def smtp_connector(url: str) -> EmailConnector:
    return EmailConnector(sender=SENDER, delivery=SmtpDelivery(url, timeout=2.0))


def test_a_message_arrives_with_the_right_envelope_and_message_id(
    smtp_server: Callable[..., int],
) -> None:
    handler = Recorder()
    port = smtp_server(handler)
    connector = smtp_connector(f"smtp://127.0.0.1:{port}")
    result = connector.execute(
        "send_email", {**PARAMS, "cc": ["copy@example.net"]}, idempotency_key="act-1"
    )

    [envelope] = handler.envelopes
    assert envelope.mail_from == "zoe@example.com"
    assert envelope.rcpt_tos == ["client@example.org", "copy@example.net"]
    assert isinstance(envelope.original_content, bytes)
    msg = BytesParser(policy=default).parsebytes(envelope.original_content)
    assert msg["Message-ID"] == result.details["message_id"]
    assert msg["Subject"] == PARAMS["subject"]
    assert result.details["delivery"] == "smtp"
    assert result.details["to"] == "client@example.org"
    assert connector.lookup("send_email", PARAMS, idempotency_key="act-1") is None


def test_a_recipient_refused_among_others_is_reported_not_raised(
    smtp_server: Callable[..., int],
) -> None:
    handler = Recorder(refuse="gone@example.net")
    connector = smtp_connector(f"smtp://127.0.0.1:{smtp_server(handler)}")
    params = {**PARAMS, "cc": ["gone@example.net"]}
    result = connector.execute("send_email", params, idempotency_key="act-1")
    assert [e.rcpt_tos for e in handler.envelopes] == [["client@example.org"]]
    assert result.details["refused"] == "gone@example.net"
    assert "refused: gone@example.net" in result.summary


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"zoe@example.com",
        b"p:ss w@rd",
    )
    return AuthResult(success=ok, handled=False)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize(
    ("password", "outcome"), [("p%3Ass%20w%40rd", None), ("wrong", PermanentConnectorError)]
)
def test_smtp_auth_uses_the_url_decoded_user_and_password(
    smtp_server: Callable[..., int], password: str, outcome: type[Exception] | None
) -> None:
    handler = Recorder()
    port = smtp_server(
        handler, authenticator=authenticator, auth_required=True, auth_require_tls=False
    )
    connector = smtp_connector(f"smtp://zoe%40example.com:{password}@127.0.0.1:{port}")
    if outcome is None:
        connector.execute("send_email", PARAMS, idempotency_key="act-1")
        assert len(handler.envelopes) == 1
    else:
        with pytest.raises(outcome, match="535"):
            connector.execute("send_email", PARAMS, idempotency_key="act-1")
        assert handler.envelopes == []


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (Recorder(reply="550 5.7.1 Message rejected"), PermanentConnectorError),
        (Recorder(reply="451 4.3.0 Try again later"), TransientConnectorError),
        (Recorder(rcpt_reply="550 5.1.1 No such user"), PermanentConnectorError),
        (Recorder(rcpt_reply="450 4.2.1 Mailbox busy"), TransientConnectorError),
    ],
)
def test_smtp_replies_map_5xx_to_permanent_and_4xx_to_transient(
    smtp_server: Callable[..., int], handler: Recorder, error: type[Exception]
) -> None:
    connector = smtp_connector(f"smtp://127.0.0.1:{smtp_server(handler)}")
    with pytest.raises(error) as info:
        connector.execute("send_email", PARAMS, idempotency_key="act-1")
    assert info.value.__cause__ is not None
    code = (handler.rcpt_reply or handler.reply)[:3]
    assert code in str(info.value)


def test_nothing_listening_on_the_port_is_transient() -> None:
    connector = smtp_connector(f"smtp://127.0.0.1:{free_port()}")
    with pytest.raises(TransientConnectorError, match="cannot reach") as info:
        connector.execute("send_email", PARAMS, idempotency_key="act-1")
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def _hang_up_after_data(sock: socket.socket, received: list[bytes]) -> None:
    """A raw SMTP server that takes the message, then drops the connection before its 250."""
    conn, _ = sock.accept()
    reader = conn.makefile("rb")

    def say(text: str) -> None:
        conn.sendall(text.encode() + b"\r\n")

    say("220 test ESMTP")
    body: list[bytes] = []
    in_data = False
    while line := reader.readline():
        if in_data:
            if line == b".\r\n":
                received.append(b"".join(body))
                conn.close()  # accepted, but the confirmation never arrives
                return
            body.append(line)
            continue
        command = line.strip().upper()
        if command.startswith(b"DATA"):
            say("354 go ahead")
            in_data = True
        else:
            say("250 ok")


def test_a_connection_lost_after_the_message_went_out_is_an_unknown_outcome_not_a_retry() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    received: list[bytes] = []
    thread = threading.Thread(target=_hang_up_after_data, args=(sock, received), daemon=True)
    thread.start()
    connector = smtp_connector(f"smtp://127.0.0.1:{sock.getsockname()[1]}")
    with pytest.raises(OutcomeUnknownError, match="may have been delivered"):
        connector.execute("send_email", PARAMS, idempotency_key="act-1")
    thread.join(timeout=5)
    sock.close()
    assert len(received) == 1


# --- attachments from the documents folder --------------------------------------------------

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n\x00\xff binary\n%%EOF\n"


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    folder = tmp_path / "documents"
    (folder / "invoices").mkdir(parents=True)
    (folder / "invoices" / "2026-0007.pdf").write_bytes(PDF)
    (folder / "notes.txt").write_text("Zoë's notes\n")
    (folder / "data.weird-extension").write_bytes(b"\x01\x02")
    return folder


@pytest.fixture
def with_documents(outbox: Path, documents: Path) -> EmailConnector:
    return EmailConnector(sender=SENDER, delivery=OutboxDelivery(outbox), documents_dir=documents)


def attachments_of(msg: EmailMessage) -> list[tuple[str | None, str, bytes]]:
    found = []
    for part in msg.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((part.get_filename(), part.get_content_type(), payload))
    return found


def test_attachments_are_added_with_their_mime_type(
    with_documents: EmailConnector, outbox: Path
) -> None:
    params = {
        **PARAMS,
        "attachments": ["invoices/2026-0007.pdf", "notes.txt", "data.weird-extension"],
    }
    with_documents.execute("send_email", params, idempotency_key="act-1")

    [path] = eml_files(outbox)
    path.read_bytes().decode("ascii")  # still 7-bit clean: the attachments are base64
    msg = parse(path)
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage) and body.get_content() == PARAMS["body"]
    assert attachments_of(msg) == [
        ("2026-0007.pdf", "application/pdf", PDF),
        ("notes.txt", "text/plain", "Zoë's notes\n".encode()),
        ("data.weird-extension", "application/octet-stream", b"\x01\x02"),
    ]


def test_a_pdf_attachment_arrives_at_the_smtp_server(
    smtp_server: Callable[..., int], documents: Path
) -> None:
    handler = Recorder()
    url = f"smtp://127.0.0.1:{smtp_server(handler)}"
    connector = email_connector_from(
        smtp_url=url,
        outbox_dir=documents / "unused",
        sender=SENDER,
        smtp_timeout=2.0,
        documents_dir=documents,
    )
    params = {**PARAMS, "attachments": ["invoices/2026-0007.pdf"]}
    connector.execute("send_email", params, idempotency_key="act-1")

    [envelope] = handler.envelopes
    assert isinstance(envelope.original_content, bytes)
    msg = BytesParser(policy=default).parsebytes(envelope.original_content)
    assert isinstance(msg, EmailMessage)
    assert attachments_of(msg) == [("2026-0007.pdf", "application/pdf", PDF)]


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "invoices/../../secret.txt",
        "/etc/passwd",
        "~/secret.txt",
        "invoices\\..\\..\\secret.txt",
        "escape/secret.txt",  # a symlink inside the folder that points out of it
        "",
    ],
)
def test_an_attachment_outside_the_documents_folder_is_refused(
    with_documents: EmailConnector, outbox: Path, documents: Path, name: str
) -> None:
    (documents.parent / "secret.txt").write_text("do not send")
    (documents / "escape").symlink_to(documents.parent)
    params = {**PARAMS, "attachments": [name]}
    with pytest.raises(InvalidParamsError):
        with_documents.validate("send_email", params)
    with pytest.raises(InvalidParamsError):
        with_documents.execute("send_email", params, idempotency_key="act-1")
    assert not outbox.exists()


def test_a_missing_attachment_is_refused_when_the_action_is_validated(
    with_documents: EmailConnector, outbox: Path
) -> None:
    # Refused at validation, so a proposal naming a document that does not exist fails before
    # it reaches the operator, and nothing is ever sent.
    params = {**PARAMS, "attachments": ["invoices/2026-0099.pdf"]}
    with pytest.raises(InvalidParamsError, match="no document 'invoices/2026-0099"):
        with_documents.validate("send_email", params)
    with pytest.raises(InvalidParamsError):
        with_documents.execute("send_email", params, idempotency_key="act-1")
    with pytest.raises(InvalidParamsError, match="not a file"):
        with_documents.validate("send_email", {**PARAMS, "attachments": ["invoices"]})
    assert not outbox.exists()


def test_attachments_are_refused_without_a_documents_folder(
    connector: EmailConnector, outbox: Path
) -> None:
    params = {**PARAMS, "attachments": ["invoices/2026-0007.pdf"]}
    with pytest.raises(InvalidParamsError, match="no documents folder"):
        connector.execute("send_email", params, idempotency_key="act-1")
    assert not outbox.exists()


def test_too_many_or_too_large_attachments_are_refused(
    with_documents: EmailConnector, documents: Path
) -> None:
    with pytest.raises(InvalidParamsError):
        with_documents.validate("send_email", {**PARAMS, "attachments": ["notes.txt"] * 11})
    with (documents / "huge.bin").open("wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)  # sparse: no 10 MB actually written
    with pytest.raises(InvalidParamsError, match="larger than 10 MB"):
        with_documents.validate("send_email", {**PARAMS, "attachments": ["huge.bin"]})


def test_a_repeat_after_the_document_is_gone_returns_the_first_delivery(
    with_documents: EmailConnector, documents: Path
) -> None:
    params = {**PARAMS, "attachments": ["invoices/2026-0007.pdf"]}
    first = with_documents.execute("send_email", params, idempotency_key="act-1")
    (documents / "invoices" / "2026-0007.pdf").unlink()
    assert with_documents.execute("send_email", params, idempotency_key="act-1") == first


def test_params_without_attachments_dump_as_before() -> None:
    assert "attachments" not in SendEmail.model_validate(PARAMS).model_dump(mode="json")
    dumped = SendEmail.model_validate({**PARAMS, "attachments": ["a.pdf"]}).model_dump(mode="json")
    assert dumped["attachments"] == ["a.pdf"]
