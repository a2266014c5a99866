"""Contacts as vCards: :func:`read_vcards` (vCard 2.1, 3.0 and 4.0) and :func:`write_vcards`
(vCard 4.0)."""

from __future__ import annotations

import quopri
import re
from collections.abc import Iterable

from store.contacts_records import (
    ContactFileError,
    ContactRecord,
    ImportResult,
    RowError,
    _record,
    _result,
)

Params = dict[str, list[str]]
_ENCODINGS = frozenset({"QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT"})


class _BadValue(Exception):
    """A property's value cannot be decoded (turned into a RowError by the card reader)."""


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Unfolded content lines with the number of their first physical line. The line after a
    quoted-printable value ending in ``=`` (a soft line break, vCard 2.1 and 3.0) continues
    it, whole; otherwise a line starting with a space or tab continues the previous one,
    without that first space."""
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff")), 1):
        if lines and lines[-1][1].endswith("=") and _is_quoted_printable(lines[-1][1]):
            lines[-1] = (lines[-1][0], lines[-1][1][:-1] + raw)  # all of it: spaces are text
        elif lines and raw[:1] in (" ", "\t"):
            lines[-1] = (lines[-1][0], lines[-1][1] + raw[1:])
        else:
            lines.append((number, raw))
    return lines


def _is_quoted_printable(line: str) -> bool:
    head = line.split(":", 1)[0].upper()
    return ":" in line and "QUOTED-PRINTABLE" in head


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _content_line(line: str) -> tuple[str, Params, str] | None:
    """``[group.]NAME;PARAM=a,b;BARE:value`` -> (NAME, params, raw value); None if no colon."""
    colon, quoted = -1, False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            colon = index
            break
    if colon < 0:
        return None
    head, value = line[:colon], line[colon + 1 :]
    name, *raw_params = _split_outside_quotes(head, ";")
    params: Params = {}
    for param in raw_params:
        key, equals, values = param.partition("=")
        if equals:
            parsed = [v.strip() for v in values.replace('"', "").split(",")]
            params.setdefault(key.strip().upper(), []).extend(parsed)
        elif param.strip():  # vCard 2.1: TYPE and ENCODING values stand alone
            bare = param.strip().upper()
            params.setdefault("ENCODING" if bare in _ENCODINGS else "TYPE", []).append(bare)
    return name.rpartition(".")[2].strip().upper(), params, value


def _decoded(value: str, params: Params) -> str:
    encoding = (params.get("ENCODING") or [""])[0].upper()
    if encoding != "QUOTED-PRINTABLE":
        return value
    charset = (params.get("CHARSET") or ["utf-8"])[0]
    try:
        text = quopri.decodestring(value.encode("utf-8")).decode(charset)
        text.encode("utf-8")  # unicode-escape, utf-7...: lone surrogates the log cannot hold
    except (LookupError, UnicodeError) as exc:  # UnicodeError: idna raises it bare
        raise _BadValue(f"cannot decode the quoted-printable value as {charset}: {exc}") from exc
    return text


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "\\")
            out.append("\n" if following in "nN" else following)
        else:
            out.append(char)
    return "".join(out)


def _components(value: str) -> list[str]:
    """A structured value (N, ORG) split on its unescaped semicolons, each part unescaped."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            current += [char, next(chars, "")]
        elif char == ";":
            parts.append(_unescape("".join(current)))
            current = []
        else:
            current.append(char)
    parts.append(_unescape("".join(current)))
    return parts


def _preference(params: Params) -> int:
    """1 (most preferred) to 100 as vCard 4.0's PREF; TYPE=pref (2.1, 3.0) counts as 1."""
    for value in params.get("PREF", []):
        if value.isdigit():
            return int(value)
    return 1 if "PREF" in (t.upper() for t in params.get("TYPE", [])) else 101


def _card(begin: int, props: list[tuple[int, str, Params, str]]) -> ContactRecord | RowError:
    values: dict[str, list[tuple[int, str]]] = {}  # name -> (preference, value), file order
    for number, name, params, raw in props:
        try:
            value = _decoded(raw, params)
        except _BadValue as exc:
            return RowError(number, str(exc))
        values.setdefault(name, []).append((_preference(params), value))

    def ranked(name: str) -> list[str]:  # sorted() is stable: file order among equals
        return [v for _, v in sorted(values.get(name, []), key=lambda item: item[0])]

    def first(name: str) -> str:
        found = values.get(name)
        return found[0][1] if found else ""

    name = _unescape(first("FN"))
    if not name.strip() and "N" in values:
        family, given, additional, *_ = [*_components(first("N")), "", "", ""]
        name = " ".join(p for p in (given, additional, family) if p.strip())
    phone = next(iter(ranked("TEL")), "")
    if phone[:4].lower() == "tel:":
        phone = phone[4:]
    return _record(
        begin,
        name=name,
        emails=[_unescape(e) for e in ranked("EMAIL")],
        company=_components(first("ORG"))[0],
        phone=_unescape(phone),
        notes="\n".join(_unescape(n) for n in ranked("NOTE")),
    )


def read_vcards(text: str) -> ImportResult:
    """Contacts from vCards 2.1, 3.0 or 4.0: FN (else N), EMAIL and TEL (the preferred one,
    else the first), ORG, NOTE."""
    items: list[ContactRecord | RowError] = []
    card: list[tuple[int, str, Params, str]] | None = None
    begin = 0
    found = False
    for number, line in _logical_lines(text):
        if not line.strip():
            continue
        parsed = _content_line(line)
        marker = (parsed[0], parsed[2].strip().upper()) if parsed else None
        if marker == ("BEGIN", "VCARD"):
            if card is not None:
                items.append(RowError(begin, "vCard has no END:VCARD"))
            card, begin, found = [], number, True
        elif marker == ("END", "VCARD"):
            if card is None:
                items.append(RowError(number, "END:VCARD without BEGIN:VCARD"))
            else:
                items.append(_card(begin, card))
                card = None
        elif card is None:
            items.append(RowError(number, "text outside a vCard"))
        elif parsed is None:
            items.append(RowError(number, "not a vCard property (no colon)"))
        else:
            card.append((number, *parsed))
    if card is not None:
        items.append(RowError(begin, "vCard has no END:VCARD"))
    if not found:
        raise ContactFileError("no vCard in the file (no BEGIN:VCARD line)")
    return _result(items)


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def _fold(line: str) -> str:
    """Lines of at most 75 octets of UTF-8, never splitting a character (RFC 6350 3.2)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > 75:
            pieces.append("".join(current))
            current, size = [" "], 1
        current.append(char)
        size += width
    pieces.append("".join(current))
    return "\r\n".join(pieces)


def write_vcards(contacts: Iterable[ContactRecord]) -> str:
    """vCard 4.0, CRLF line ends, folded at 75 octets, text escaped."""
    lines: list[str] = []
    for c in contacts:
        lines += ["BEGIN:VCARD", "VERSION:4.0", f"FN:{_escape(c.name)}"]
        lines.append(f"EMAIL:{_escape(c.email)}")
        lines += [f"ORG:{_escape(c.company)}"] if c.company else []
        lines += [f"TEL:{_escape(c.phone)}"] if c.phone else []
        lines += [f"NOTE:{_escape(c.notes)}"] if c.notes else []
        lines.append("END:VCARD")
    return "".join(_fold(line) + "\r\n" for line in lines)
