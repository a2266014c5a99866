"""Pairing: claim the bot from a chat with a one-time code, no numeric ids to copy.

``opcore pair telegram`` issues a code (valid 10 minutes, used once; only its hash is kept)
and prints it; the operator sends ``/pair <code>`` to the bot from Telegram, and that
account becomes an operator, like one listed in ``OPCORE_OPERATORS``.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from store import events as ev
from store.errors import ConcurrencyError
from store.log import EventLog, utcnow
from store.models import PairedOperatorRow, PairingCodeRow

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_TTL = timedelta(minutes=10)


def _hash(code: str) -> str:
    normal = code.strip().upper().replace("-", "").replace(" ", "")
    return hashlib.sha256(f"opcore-pairing:{normal}".encode()).hexdigest()


def issue(
    log: EventLog, channel: str, *, by: str, now: datetime | None = None
) -> tuple[str, datetime]:
    """A new one-time code for ``channel``, e.g. ``KX7P-M2QD``, and when it expires."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(8))
    code = f"{raw[:4]}-{raw[4:]}"
    expires = (now or utcnow()) + CODE_TTL
    log.append(
        ev.PAIRING_STREAM,
        [ev.PairingCodeIssued(code_hash=_hash(code), channel=channel, expires_at=expires)],
        metadata=ev.Metadata(actor=by),
    )
    return code, expires


def redeem(
    log: EventLog,
    code: str,
    *,
    channel: str,
    user_id: str,
    chat_id: str,
    now: datetime | None = None,
) -> bool:
    """Make the sender an operator if ``code`` is valid for this channel, unused and fresh."""
    digest = _hash(code)
    for _ in range(3):
        version = log.stream_version(ev.PAIRING_STREAM)
        row = PairingCodeRow.get_or_none(PairingCodeRow.code_hash == digest)
        if row is None or row.used_by is not None or row.channel != channel:
            return False
        if (now or utcnow()).replace(tzinfo=None) >= row.expires_at:
            return False
        try:
            log.append(
                ev.PAIRING_STREAM,
                [
                    ev.OperatorPaired(
                        code_hash=digest, channel=channel, user_id=user_id, chat_id=chat_id
                    )
                ],
                metadata=ev.Metadata(actor=f"{channel}:{user_id}"),
                expected_version=version,
            )
        except ConcurrencyError:
            continue  # another pairing event landed first: look again
        return True
    return False


def is_paired(operator: str) -> bool:
    return PairedOperatorRow.get_or_none(PairedOperatorRow.operator == operator) is not None


def paired_operators() -> list[tuple[str, str]]:
    return [
        (r.operator, r.chat_id)
        for r in PairedOperatorRow.select().order_by(PairedOperatorRow.paired_at)
    ]
