"""RFC 5545 iCalendar for our calendar events: :func:`to_ics` writes, :func:`parse_ics` reads.

Writing produces one VCALENDAR with a VEVENT per :class:`CalendarEvent`, times in UTC (``Z``),
text escaped (``\\,`` ``\\;`` ``\\n`` ``\\\\``) and lines folded at 75 octets without splitting a
UTF-8 sequence, which Google, Apple and CalDAV servers import as is. There is no METHOD
property: RFC 4791 forbids it in a CalDAV resource, and file imports do not need it.

Reading accepts what other producers write: ``TZID`` parameters (IANA names, Windows names and
zones defined by a VTIMEZONE in the same text), floating times (read as UTC: there is no other
zone to read them in), all-day ``DATE`` values (midnight UTC of that day), ``DURATION`` instead
of ``DTEND``. A recurring VEVENT is returned once, as its first occurrence (CalDAV servers
expand recurrences for us, see :mod:`connectors.calendar`). Anything that cannot be read as an
event raises :class:`InvalidParamsError` naming the component and the property.

The ``icalendar`` package does the escaping, folding and time-zone work; it is lenient where we
must not be (an unterminated component silently disappears), so the nesting of BEGIN/END lines
is checked here first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import icalendar

from connectors.errors import InvalidParamsError

DEFAULT_PRODID = "-//opcore//calendar connector//EN"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FOLDED = re.compile(r"\r?\n[ \t]")
_BEGIN_END = re.compile(r"(BEGIN|END):(.*)", re.IGNORECASE)
# The properties an event is made of: a broken one is an error, a broken other one is not ours.
_USED = frozenset({"UID", "SUMMARY", "DESCRIPTION", "LOCATION", "DTSTART", "DTEND", "DURATION"})


@dataclass(frozen=True)
class CalendarEvent:
    """One calendar event. ``start`` and ``end`` are aware; ``end`` is not before ``start``
    (zero-length events exist: a VEVENT with neither DTEND nor DURATION)."""

    uid: str
    title: str
    start: datetime
    end: datetime
    description: str = ""
    location: str = ""

    def __post_init__(self) -> None:
        if not self.uid:
            raise InvalidParamsError("a calendar event needs a non-empty uid")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise InvalidParamsError(f"event {self.uid}: {name} must be timezone-aware")
        if self.end < self.start:
            raise InvalidParamsError(
                f"event {self.uid}: end {self.end.isoformat()} is before start "
                f"{self.start.isoformat()}"
            )

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether the event falls in ``[start, end)``, as a CalDAV time-range filter decides
        (RFC 4791 section 9.9): a zero-length event counts when it sits at ``start``."""
        return self.start < end and (self.end > start or self.start == start)


def _check_text(owner: str, name: str, value: str, *, multiline: bool) -> str:
    """``value`` with line breaks as ``\\n``; control characters iCalendar cannot carry refused."""
    text = _LINE_BREAK.sub("\n", value)
    allowed = "\t\n" if multiline else "\t"
    for char in text:
        if char not in allowed and unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise InvalidParamsError(
                f"event {owner}: {name} contains the control character {char!r}"
            )
    return text


def to_ics(
    events: Sequence[CalendarEvent],
    *,
    prodid: str = DEFAULT_PRODID,
    dtstamp: datetime | None = None,
) -> str:
    """A VCALENDAR holding ``events``, with CRLF line ends. ``dtstamp`` (default: now) is the
    DTSTAMP of every VEVENT."""
    stamp = (dtstamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    calendar = icalendar.Calendar()
    calendar.add("prodid", _check_text("calendar", "prodid", prodid, multiline=False))
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    for event in events:
        uid = _check_text(event.uid, "uid", event.uid, multiline=False)
        vevent = icalendar.Event()
        vevent.add("uid", uid)
        vevent.add("dtstamp", stamp)
        vevent.add("dtstart", event.start.astimezone(UTC))
        vevent.add("dtend", event.end.astimezone(UTC))
        vevent.add("summary", _check_text(uid, "title", event.title, multiline=False))
        if event.description:
            description = _check_text(uid, "description", event.description, multiline=True)
            vevent.add("description", description)
        if event.location:
            vevent.add("location", _check_text(uid, "location", event.location, multiline=False))
        calendar.add_component(vevent)
    ical: bytes = calendar.to_ical(sorted=False)
    return ical.decode("utf-8")


def _check_nesting(text: str) -> None:
    """Every BEGIN has its END, in order: ``icalendar`` drops unterminated components."""
    stack: list[str] = []
    for number, line in enumerate(_FOLDED.sub("", text).splitlines(), start=1):
        if not (m := _BEGIN_END.fullmatch(line.strip())):
            continue
        name = m[2].strip().upper()
        if m[1].upper() == "BEGIN":
            stack.append(name)
        elif not stack:
            raise InvalidParamsError(f"iCalendar line {number}: END:{name} without a BEGIN")
        elif (opened := stack.pop()) != name:
            raise InvalidParamsError(f"iCalendar line {number}: END:{name} closes BEGIN:{opened}")
    if stack:
        raise InvalidParamsError(f"iCalendar text ends inside BEGIN:{stack[-1]} (no END)")


def _single(vevent: icalendar.Component, name: str, where: str) -> Any:
    value = vevent.get(name)
    if isinstance(value, list):
        raise InvalidParamsError(f"{where}: {name} appears {len(value)} times")
    return value


def _text(vevent: icalendar.Component, name: str, where: str) -> str:
    value = _single(vevent, name, where)
    return "" if value is None else str(value)


def _as_utc(vevent: icalendar.Component, name: str, where: str) -> datetime | None:
    """DTSTART/DTEND as an aware UTC datetime; ``None`` when the property is absent."""
    prop = _single(vevent, name, where)
    if prop is None:
        return None
    value = getattr(prop, "dt", None)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            if tzid := prop.params.get("TZID"):
                raise InvalidParamsError(
                    f"{where}: {name} names the time zone {tzid!r}, which is neither an IANA or "
                    "Windows zone name nor defined by a VTIMEZONE in the calendar"
                )
            return value.replace(tzinfo=UTC)  # floating time: no better zone to read it in
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    raise InvalidParamsError(f"{where}: {name} is not a date or date-time: {prop.to_ical()!r}")


def _event(vevent: icalendar.Component, index: int) -> CalendarEvent:
    uid = _text(vevent, "UID", f"VEVENT #{index}")
    where = f"VEVENT {uid!r}" if uid else f"VEVENT #{index}"
    if broken := [f"{name}: {why}" for name, why in vevent.errors if name in _USED]:
        raise InvalidParamsError(f"{where}: cannot read {'; '.join(broken)}")
    if not uid:
        raise InvalidParamsError(f"{where} has no UID")
    start = _as_utc(vevent, "DTSTART", where)
    if start is None:
        raise InvalidParamsError(f"{where} has no DTSTART")
    end = _as_utc(vevent, "DTEND", where)
    if end is None and (duration := _single(vevent, "DURATION", where)) is not None:
        if not isinstance(delta := getattr(duration, "dt", None), timedelta):
            raise InvalidParamsError(f"{where}: DURATION is not a duration")
        end = start + delta
    if end is None:  # RFC 5545 3.6.1: an all-day event lasts the day, a timed one no time
        all_day = not isinstance(_single(vevent, "DTSTART", where).dt, datetime)
        end = start + timedelta(days=1) if all_day else start
    if end < start:
        raise InvalidParamsError(f"{where}: ends ({end.isoformat()}) before it starts")
    return CalendarEvent(
        uid=uid,
        title=_text(vevent, "SUMMARY", where),
        start=start,
        end=end,
        description=_text(vevent, "DESCRIPTION", where),
        location=_text(vevent, "LOCATION", where),
    )


def parse_ics(text: str) -> list[CalendarEvent]:
    """The VEVENTs of every VCALENDAR in ``text``, in the order they appear. Other components
    (VTODO, VJOURNAL, VTIMEZONE) are skipped; an unreadable VEVENT raises
    :class:`InvalidParamsError`."""
    text = text.removeprefix("\ufeff")
    _check_nesting(text)
    try:
        calendars = icalendar.Calendar.from_ical(text, multiple=True)
    except ValueError as exc:  # icalendar's parse errors are ValueErrors
        raise InvalidParamsError(f"not valid iCalendar: {exc}") from exc
    vevents = [vevent for calendar in calendars for vevent in calendar.walk("VEVENT")]
    return [_event(vevent, index) for index, vevent in enumerate(vevents, start=1)]
