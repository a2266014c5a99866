"""The calendar connector: iCalendar text, the .ics file backend, and CalDAV against a real
Radicale server on 127.0.0.1 (plus tiny local servers for the failures Radicale won't make)."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import vobject  # an independent iCalendar parser (Radicale's), installed with it

from connectors.calendar import (
    CalDavBackend,
    CalendarConnector,
    IcsFileBackend,
    calendar_connector_from,
    event_uid,
)
from connectors.errors import (
    InvalidParamsError,
    PermanentConnectorError,
    TransientConnectorError,
)
from connectors.ics import CalendarEvent, parse_ics, to_ics
from tests.fakes.caldav_server import CalDavServer, caldav_server_fixture  # noqa: F401
from tests.fakes.smtp_server import free_port

T0 = datetime(2025, 7, 1, 10, 0, tzinfo=UTC)
PARAMS: dict[str, Any] = {
    "title": "Kick-off, Zoë & Jürgen; room ☕",
    "start": "2025-07-01T12:00:00+02:00",
    "end": "2025-07-01T13:30:00+02:00",
    "description": "Agenda:\n1. budget, scope; timeline\n2. \\o/ Grüße",
    "location": "Café Müller, Berlin",
}
NASTY = "Größe: 5, Preis; 3 € — \\ “quoted” 日本語 " * 6


def undo_params(params: Mapping[str, Any], details: Mapping[str, Any]) -> dict[str, Any]:
    """What jobs/effects.py hands a compensation: the params plus the result's details."""
    return {**params, **{k: v for k, v in details.items() if k not in params}}


def event(uid: str, start: datetime, minutes: int = 60, title: str = "") -> CalendarEvent:
    return CalendarEvent(
        uid=uid, title=title or uid, start=start, end=start + timedelta(minutes=minutes)
    )


def create(connector: CalendarConnector, key: str, start: datetime, minutes: int) -> str:
    params = {"title": key, "start": start.isoformat()}
    params["end"] = (start + timedelta(minutes=minutes)).isoformat()
    return str(connector.execute("create_event", params, idempotency_key=key).details["uid"])


# --- iCalendar text -----------------------------------------------------------------------


def test_an_event_round_trips_with_escaping_folding_and_non_ascii() -> None:
    original = CalendarEvent(
        uid="round-trip@opcore",
        title=NASTY,
        start=datetime(2025, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        end=datetime(2025, 7, 1, 11, 30, tzinfo=UTC),
        description="line one, with a comma\nline two; with a semicolon\r\nline three \\ " + NASTY,
        location="Straße 1, 10115 Berlin; Hinterhaus",
    )
    text = to_ics([original], dtstamp=T0)

    raw = text.encode("utf-8")
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")[:-1]
    assert max(len(line) for line in lines) <= 75
    assert any(line.startswith(b" ") for line in lines)  # the long ones were folded
    for line in lines:
        line.decode("utf-8")  # no fold splits a multi-byte character
    unfolded = text.replace("\r\n ", "")
    assert "LOCATION:Straße 1\\, 10115 Berlin\\; Hinterhaus\r\n" in unfolded
    assert (
        "DESCRIPTION:line one\\, with a comma\\nline two\\; with a semicolon\\nline three \\\\ "
        in (unfolded)
    )

    [parsed] = parse_ics(text)
    assert parsed == CalendarEvent(
        uid=original.uid,
        title=original.title,
        start=datetime(2025, 7, 1, 10, 0, tzinfo=UTC),
        end=original.end,
        description=original.description.replace("\r\n", "\n"),
        location=original.location,
    )
    # A second, independent parser reads the same values.
    vevent = vobject.readOne(text).vevent
    assert vevent.summary.value == original.title
    assert vevent.description.value == parsed.description
    assert vevent.location.value == original.location
    assert vevent.dtstart.value == parsed.start


def test_the_calendar_has_what_importers_need_and_times_in_utc() -> None:
    text = to_ics(
        [event("a@opcore", datetime(2025, 1, 5, 9, 0, tzinfo=timezone(timedelta(hours=-5))))],
        prodid="-//Acme//opcore tests//EN",
        dtstamp=datetime(2025, 1, 1, 8, 30, 15, 999, tzinfo=UTC),
    )
    lines = text.split("\r\n")
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-2] == "END:VCALENDAR"
    for needed in (
        "VERSION:2.0",
        "PRODID:-//Acme//opcore tests//EN",
        "BEGIN:VEVENT",
        "UID:a@opcore",
        "DTSTAMP:20250101T083015Z",
        "DTSTART:20250105T140000Z",
        "DTEND:20250105T150000Z",
        "SUMMARY:a@opcore",
        "END:VEVENT",
    ):
        assert needed in lines
    assert not any(line.startswith(("METHOD", "DESCRIPTION", "LOCATION")) for line in lines)


def test_control_characters_are_refused_when_writing() -> None:
    with pytest.raises(InvalidParamsError, match="title contains the control character"):
        to_ics([event("a@opcore", T0, title="bell\x07")])
    with pytest.raises(InvalidParamsError, match="title contains"):
        to_ics([event("a@opcore", T0, title="two\nlines")])


FOREIGN = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Apple Inc.//macOS 14//EN\r
BEGIN:VTIMEZONE\r
TZID:Custom Zone\r
BEGIN:STANDARD\r
DTSTART:19700101T000000\r
TZOFFSETFROM:+0530\r
TZOFFSETTO:+0530\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:tz-1\r
DTSTAMP:20250101T000000Z\r
DTSTART;TZID=Europe/Berlin:20250701T090000\r
DTEND;TZID="America/New_York":20250701T060000\r
SUMMARY:Berlin to New York\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:all-day\r
DTSTAMP:20250101T000000Z\r
DTSTART;VALUE=DATE:20250704\r
SUMMARY:Holiday\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:custom-zone\r
DTSTART;TZID=Custom Zone:20250701T100000\r
DURATION:PT45M\r
SUMMARY:Custom\r
 ly folded\r
END:VEVENT\r
BEGIN:VTODO\r
UID:todo\r
SUMMARY:not an event\r
END:VTODO\r
BEGIN:VEVENT\r
UID:floating\r
DTSTART:20250702T080000\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:two-days\r
DTSTART;VALUE=DATE:20251224\r
DTEND;VALUE=DATE:20251226\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_foreign_events_with_tzid_all_day_dates_and_durations_are_read_in_utc() -> None:
    events = {e.uid: e for e in parse_ics(FOREIGN)}
    assert list(events) == ["tz-1", "all-day", "custom-zone", "floating", "two-days"]
    tz = events["tz-1"]
    assert (tz.start, tz.end) == (
        datetime(2025, 7, 1, 7, tzinfo=UTC),
        datetime(2025, 7, 1, 10, tzinfo=UTC),
    )
    holiday = events["all-day"]
    assert holiday.title == "Holiday"
    assert (holiday.start, holiday.end) == (
        datetime(2025, 7, 4, tzinfo=UTC),
        datetime(2025, 7, 5, tzinfo=UTC),
    )
    custom = events["custom-zone"]
    assert custom.title == "Customly folded"
    assert (custom.start, custom.end) == (
        datetime(2025, 7, 1, 4, 30, tzinfo=UTC),
        datetime(2025, 7, 1, 5, 15, tzinfo=UTC),
    )
    floating = events["floating"]
    assert floating.start == floating.end == datetime(2025, 7, 2, 8, tzinfo=UTC)
    assert events["two-days"].end - events["two-days"].start == timedelta(days=2)
    assert all(e.start.utcoffset() == timedelta(0) for e in events.values())


def test_bare_line_feeds_and_a_byte_order_mark_are_tolerated() -> None:
    text = "\ufeff" + FOREIGN.replace("\r\n", "\n")
    assert [e.uid for e in parse_ics(text)][:2] == ["tz-1", "all-day"]
    assert parse_ics("") == []


def vcal(*lines: str) -> str:
    return "\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", *lines, "END:VCALENDAR", ""])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (vcal("BEGIN:VEVENT", "DTSTART:20250701T100000Z", "END:VEVENT"), "VEVENT #1 has no UID"),
        (vcal("BEGIN:VEVENT", "UID:u", "SUMMARY:x", "END:VEVENT"), "VEVENT 'u' has no DTSTART"),
        (vcal("BEGIN:VEVENT", "UID:u", "DTSTART:2025-07-01", "END:VEVENT"), "cannot read DTSTART"),
        (
            vcal(
                "BEGIN:VEVENT", "UID:u", "DTSTART;TZID=Mars/Olympus:20250701T100000", "END:VEVENT"
            ),
            "time zone 'Mars/Olympus'",
        ),
        (
            vcal(
                "BEGIN:VEVENT",
                "UID:u",
                "DTSTART:20250701T100000Z",
                "DTEND:20250701T090000Z",
                "END:VEVENT",
            ),
            "ends .* before it starts",
        ),
        (
            vcal(
                "BEGIN:VEVENT", "UID:u", "DTSTART:20250701T100000Z", "DURATION:soon", "END:VEVENT"
            ),
            "cannot read DURATION",
        ),
        (
            vcal("BEGIN:VEVENT", "UID:a", "UID:b", "DTSTART:20250701T100000Z", "END:VEVENT"),
            "UID appears 2 times",
        ),
        ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u\r\n", "ends inside BEGIN:VEVENT"),
        (vcal("BEGIN:VEVENT", "UID:u", "END:VTODO"), "END:VTODO closes BEGIN:VEVENT"),
        ("END:VCALENDAR\r\n", "END:VCALENDAR without a BEGIN"),
        ("this is not a calendar\r\n", "not valid iCalendar"),
    ],
)
def test_malformed_components_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidParamsError, match=message):
        parse_ics(text)


def test_an_event_needs_aware_times_in_order() -> None:
    with pytest.raises(InvalidParamsError, match="start must be timezone-aware"):
        CalendarEvent(uid="u", title="t", start=datetime(2025, 7, 1), end=T0)
    with pytest.raises(InvalidParamsError, match="before start"):
        CalendarEvent(uid="u", title="t", start=T0, end=T0 - timedelta(seconds=1))


def test_overlap_follows_the_caldav_time_range_rules() -> None:
    start, end = T0, T0 + timedelta(hours=2)
    assert event("inside", T0 + timedelta(minutes=30)).overlaps(start, end)
    assert event("across the start", T0 - timedelta(minutes=30)).overlaps(start, end)
    assert event("across the end", end - timedelta(minutes=30)).overlaps(start, end)
    assert not event("ends at the start", T0 - timedelta(hours=1)).overlaps(start, end)
    assert not event("starts at the end", end).overlaps(start, end)
    assert event("zero length at the start", T0, minutes=0).overlaps(start, end)
    assert not event("zero length at the end", end, minutes=0).overlaps(start, end)


# --- parameters ---------------------------------------------------------------------------


@pytest.fixture
def ics_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "calendar.ics"


@pytest.fixture
def file_connector(ics_path: Path) -> CalendarConnector:
    return CalendarConnector(backend=IcsFileBackend(ics_path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"end": PARAMS["start"]}, "end must be after start"),
        ({"end": "2025-07-01T11:00:00+02:00"}, "end must be after start"),
        ({"start": "2025-07-01T12:00:00"}, "timezone"),
        ({"title": ""}, "at least 1 character"),
        ({"title": "x" * 201}, "at most 200 characters"),
        ({"title": "two\nlines"}, "line breaks"),
        ({"title": "   "}, "white space"),
        ({"location": "x" * 501}, "at most 500 characters"),
        ({"description": "x" * 5001}, "at most 5000 characters"),
        ({"description": "nul\x00"}, "control characters"),
        ({"attendees": "a@example.com"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_create_params_are_refused_and_nothing_is_written(
    file_connector: CalendarConnector, ics_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParamsError, match=message):
        file_connector.execute("create_event", {**PARAMS, **change}, idempotency_key="k")
    assert not ics_path.exists()


def test_delete_takes_a_uid_plus_what_the_compensation_call_adds_but_nothing_else(
    file_connector: CalendarConnector,
) -> None:
    with pytest.raises(InvalidParamsError, match="Extra inputs"):
        file_connector.execute("delete_event", {"uid": "u", "uuid": "u"}, idempotency_key="k")
    with pytest.raises(InvalidParamsError, match="uid"):
        file_connector.execute("delete_event", {"title": "t"}, idempotency_key="k")
    with pytest.raises(InvalidParamsError, match="end must be after start"):
        file_connector.execute(
            "list_events", {"start": T0.isoformat(), "end": T0.isoformat()}, idempotency_key="k"
        )


def test_the_uid_depends_only_on_the_idempotency_key() -> None:
    assert event_uid("act-1") == event_uid("act-1")
    assert event_uid("act-1") != event_uid("act-2")
    assert event_uid("act-1").endswith("@opcore") and len(event_uid("act-1")) == 32 + 7
    with pytest.raises(InvalidParamsError):
        event_uid("")


# --- the .ics file backend ----------------------------------------------------------------


def test_a_file_create_is_idempotent_and_the_file_parses_back(
    file_connector: CalendarConnector, ics_path: Path
) -> None:
    assert file_connector.lookup("create_event", PARAMS, idempotency_key="act-1") is None
    first = file_connector.execute("create_event", PARAMS, idempotency_key="act-1")
    second = file_connector.execute("create_event", PARAMS, idempotency_key="act-1")
    assert second == first
    assert file_connector.lookup("create_event", PARAMS, idempotency_key="act-1") == first
    assert file_connector.lookup_is_definitive

    uid = event_uid("act-1")
    assert first.details == {
        "uid": uid,
        "start": "2025-07-01T10:00:00+00:00",
        "end": "2025-07-01T11:30:00+00:00",
        "backend": "file",
        "path": str(ics_path),
    }
    assert (
        first.summary == f"Calendar event {PARAMS['title']!r} on 2025-07-01 10:00-11:30 UTC (file)"
    )
    [stored] = parse_ics(ics_path.read_text(encoding="utf-8"))
    assert stored == CalendarEvent(
        uid=uid,
        title=PARAMS["title"],
        start=datetime(2025, 7, 1, 10, tzinfo=UTC),
        end=datetime(2025, 7, 1, 11, 30, tzinfo=UTC),
        description=PARAMS["description"],
        location=PARAMS["location"],
    )
    assert len(list(vobject.readComponents(ics_path.read_text(encoding="utf-8")))) == 1
    assert sorted(p.name for p in ics_path.parent.iterdir()) == [
        "calendar.ics",
        "calendar.ics.lock",
    ]


def test_the_file_is_replaced_atomically_and_a_failed_write_leaves_it_whole(
    file_connector: CalendarConnector, ics_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(file_connector, "act-1", T0, 30)
    before = ics_path.read_bytes()
    inode = ics_path.stat().st_ino
    create(file_connector, "act-2", T0 + timedelta(hours=1), 30)
    assert ics_path.stat().st_ino != inode  # a new file took the old one's name

    after = ics_path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(TransientConnectorError, match="No space left"):
        create(file_connector, "act-3", T0 + timedelta(hours=2), 30)
    assert ics_path.read_bytes() == after != before
    assert not [p for p in ics_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_creates_in_one_file_lose_nothing(
    file_connector: CalendarConnector, ics_path: Path
) -> None:
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [
            pool.submit(create, file_connector, f"act-{n}", T0 + timedelta(hours=n), 30)
            for n in range(12)
        ]
        uids = [future.result() for future in futures]  # re-raises a worker's error
    assert uids == [event_uid(f"act-{n}") for n in range(12)]
    stored = parse_ics(ics_path.read_text(encoding="utf-8"))
    assert [e.uid for e in stored] == uids  # all twelve, in start order


def test_a_file_that_is_not_icalendar_is_a_permanent_error_and_left_alone(
    file_connector: CalendarConnector, ics_path: Path
) -> None:
    ics_path.parent.mkdir(parents=True)
    ics_path.write_bytes(b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n")
    with pytest.raises(PermanentConnectorError, match="not valid iCalendar"):
        file_connector.execute("create_event", PARAMS, idempotency_key="act-1")
    with pytest.raises(PermanentConnectorError, match="ends inside BEGIN:VEVENT"):
        file_connector.upcoming(now=T0, days=1)
    assert ics_path.read_bytes() == b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n"


def test_a_file_path_under_a_file_is_a_permanent_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a directory")
    connector = CalendarConnector(backend=IcsFileBackend(tmp_path / "blocker" / "calendar.ics"))
    with pytest.raises(PermanentConnectorError, match="cannot use"):
        connector.execute("create_event", PARAMS, idempotency_key="act-1")


def test_compensation_deletes_the_event_from_the_file_and_a_second_delete_is_fine(
    file_connector: CalendarConnector, ics_path: Path
) -> None:
    created = file_connector.execute("create_event", PARAMS, idempotency_key="act-1")
    keep = create(file_connector, "act-2", T0, 30)
    undo = undo_params(PARAMS, created.details)
    assert file_connector.lookup("delete_event", undo, idempotency_key="act-1:undo") is None

    done = file_connector.execute("delete_event", undo, idempotency_key="act-1:undo")
    assert done.details == {"uid": created.details["uid"], "deleted": True, "backend": "file"}
    assert [e.uid for e in parse_ics(ics_path.read_text(encoding="utf-8"))] == [keep]
    assert file_connector.lookup("create_event", PARAMS, idempotency_key="act-1") is None
    again = file_connector.execute("delete_event", undo, idempotency_key="act-1:undo")
    assert again.details["deleted"] is False
    assert file_connector.lookup("delete_event", undo, idempotency_key="act-1:undo") == again


def test_listing_the_file_returns_overlapping_events_earliest_first(
    file_connector: CalendarConnector,
) -> None:
    late = create(file_connector, "late", T0 + timedelta(hours=20), 60)
    early = create(file_connector, "early", T0 - timedelta(minutes=30), 60)
    create(file_connector, "before", T0 - timedelta(hours=3), 60)
    create(file_connector, "after", T0 + timedelta(days=1), 60)

    assert [e.uid for e in file_connector.upcoming(now=T0, days=1)] == [early, late]
    result = file_connector.execute(
        "list_events",
        {"start": T0.isoformat(), "end": (T0 + timedelta(days=1)).isoformat()},
        idempotency_key="read-1",
    )
    assert result.details["count"] == 2
    assert result.summary.splitlines() == [
        "2 event(s) between 2025-07-01 10:00 and 2025-07-02 10:00 UTC:",
        f"- 2025-07-01 09:30-10:30 UTC early [uid {early}]",
        f"- 2025-07-02 06:00-07:00 UTC late [uid {late}]",
    ]
    assert file_connector.lookup("list_events", {}, idempotency_key="read-1") is None
    with pytest.raises(InvalidParamsError, match="aware"):
        file_connector.upcoming(now=datetime(2025, 7, 1), days=1)
    with pytest.raises(InvalidParamsError, match="from 1 to 3660"):
        file_connector.upcoming(now=T0, days=0)


def test_the_factory_uses_the_file_without_a_url_and_refuses_clear_text_to_remote_hosts(
    ics_path: Path,
) -> None:
    def make(url: str) -> CalendarConnector:
        return calendar_connector_from(
            caldav_url=url, username="u", password="p", ics_path=ics_path, timeout=5
        )

    assert isinstance(make("").backend, IcsFileBackend)
    assert isinstance(make("https://dav.example.com/u/cal").backend, CalDavBackend)
    assert isinstance(make("http://127.0.0.1:5232/u/cal/").backend, CalDavBackend)
    assert isinstance(make("http://localhost/u/cal/").backend, CalDavBackend)
    with pytest.raises(ValueError, match=r"refusing plain http:// to dav\.example\.com"):
        make("http://dav.example.com/u/cal/")
    with pytest.raises(ValueError, match="refusing plain http://"):
        make("http://10.0.0.2/u/cal/")
    with pytest.raises(ValueError, match="must look like"):
        make("ftp://dav.example.com/cal/")
    with pytest.raises(ValueError, match="no user"):
        make("https://u:p@dav.example.com/cal/")


# --- CalDAV against Radicale --------------------------------------------------------------


def caldav(
    server: CalDavServer, *, password: str | None = None, url: str = ""
) -> CalendarConnector:
    backend = CalDavBackend(
        url or server.url,
        username=server.username,
        password=server.password if password is None else password,
        timeout=5,
    )
    return CalendarConnector(backend=backend)


def dav(server: CalDavServer) -> httpx.Client:
    """Another client of the same calendar (the operator's phone, say)."""
    return httpx.Client(auth=(server.username, server.password), timeout=5, trust_env=False)


def test_a_created_event_is_on_the_server_listed_and_found_by_lookup(
    caldav_server: CalDavServer,
) -> None:
    connector = caldav(caldav_server)
    assert connector.lookup("create_event", PARAMS, idempotency_key="act-1") is None

    result = connector.execute("create_event", PARAMS, idempotency_key="act-1")

    uid = event_uid("act-1")
    url = f"{caldav_server.url}{uid}.ics"
    assert result.details == {
        "uid": uid,
        "start": "2025-07-01T10:00:00+00:00",
        "end": "2025-07-01T11:30:00+00:00",
        "backend": "caldav",
        "url": url,
    }
    with dav(caldav_server) as client:
        stored = client.get(url)
    assert stored.status_code == 200
    [on_server] = parse_ics(stored.text)
    assert on_server.title == PARAMS["title"] and on_server.location == PARAMS["location"]
    assert on_server.description == PARAMS["description"]
    assert connector.upcoming(now=T0 - timedelta(hours=1), days=1) == [on_server]
    assert connector.lookup("create_event", PARAMS, idempotency_key="act-1") == result
    assert connector.lookup_is_definitive


def test_creating_twice_with_one_key_makes_one_event(caldav_server: CalDavServer) -> None:
    connector = caldav(caldav_server)
    first = connector.execute("create_event", PARAMS, idempotency_key="act-1")
    second = connector.execute("create_event", PARAMS, idempotency_key="act-1")  # 412
    assert second == first
    other = connector.execute("create_event", PARAMS, idempotency_key="act-2")
    assert other.details["uid"] != first.details["uid"]
    uids = [e.uid for e in connector.upcoming(now=T0 - timedelta(days=1), days=2)]
    assert sorted(uids) == sorted([event_uid("act-1"), event_uid("act-2")])


def test_a_retry_does_not_overwrite_what_an_earlier_attempt_stored(
    caldav_server: CalDavServer,
) -> None:
    connector = caldav(caldav_server)
    uid = event_uid("act-1")
    url = f"{caldav_server.url}{uid}.ics"
    earlier = to_ics([event(uid, T0, title="as the earlier attempt wrote it")])
    with dav(caldav_server) as client:
        assert client.put(url, content=earlier.encode()).status_code == 201
        etag = client.get(url).headers["ETag"]

        result = connector.execute("create_event", PARAMS, idempotency_key="act-1")

        assert result.details["uid"] == uid
        assert client.get(url).headers["ETag"] == etag  # If-None-Match: * got 412


def test_compensation_deletes_the_event_and_deleting_again_is_fine(
    caldav_server: CalDavServer,
) -> None:
    connector = caldav(caldav_server)
    created = connector.execute("create_event", PARAMS, idempotency_key="act-1")
    undo = undo_params(PARAMS, created.details)
    assert connector.lookup("delete_event", undo, idempotency_key="act-1:undo") is None

    done = connector.execute("delete_event", undo, idempotency_key="act-1:undo")

    assert done.details == {"uid": created.details["uid"], "deleted": True, "backend": "caldav"}
    with dav(caldav_server) as client:
        assert client.get(str(created.details["url"])).status_code == 404
    assert connector.upcoming(now=T0 - timedelta(days=1), days=2) == []
    assert connector.lookup("create_event", PARAMS, idempotency_key="act-1") is None
    again = connector.execute("delete_event", undo, idempotency_key="act-1:undo")
    assert again.details["deleted"] is False
    assert connector.lookup("delete_event", undo, idempotency_key="act-1:undo") == again


def test_deleting_an_event_that_never_existed_succeeds(caldav_server: CalDavServer) -> None:
    result = caldav(caldav_server).execute("delete_event", {"uid": "nope"}, idempotency_key="d")
    assert result.details["deleted"] is False
    assert "nothing to delete" in result.summary


def test_an_event_another_client_stored_under_another_name_is_found_and_deleted(
    caldav_server: CalDavServer,
) -> None:
    connector = caldav(caldav_server)
    foreign = to_ics([event("ABC-123-phone", T0)], prodid="-//Phone//EN")
    with dav(caldav_server) as client:
        put = client.put(f"{caldav_server.url}random-name.ics", content=foreign.encode())
        assert put.status_code == 201
        assert (
            connector.lookup("delete_event", {"uid": "ABC-123-phone"}, idempotency_key="d") is None
        )

        result = connector.execute("delete_event", {"uid": "ABC-123-phone"}, idempotency_key="d")

        assert result.details["deleted"] is True
        assert client.get(f"{caldav_server.url}random-name.ics").status_code == 404


def test_listing_returns_only_overlapping_events_and_expands_recurring_ones(
    caldav_server: CalDavServer,
) -> None:
    connector = caldav(caldav_server)
    inside = create(connector, "inside", T0 + timedelta(hours=3), 60)
    across_start = create(connector, "across-start", T0 - timedelta(minutes=30), 60)
    across_end = create(connector, "across-end", T0 + timedelta(hours=23, minutes=30), 60)
    create(connector, "ends-at-start", T0 - timedelta(hours=1), 60)
    create(connector, "starts-at-end", T0 + timedelta(days=1), 60)
    create(connector, "last-week", T0 - timedelta(days=7), 60)
    daily = vcal(
        "PRODID:-//Phone//EN",
        "BEGIN:VEVENT",
        "UID:standup",
        "DTSTAMP:20250101T000000Z",
        "DTSTART;TZID=Europe/Berlin:20250620T140000",
        "DURATION:PT15M",
        "RRULE:FREQ=DAILY;COUNT=30",
        "SUMMARY:Stand-up",
        "END:VEVENT",
    )
    with dav(caldav_server) as client:
        assert client.put(f"{caldav_server.url}standup.ics", content=daily.encode()).is_success

    found = connector.upcoming(now=T0, days=1)

    assert [e.uid for e in found] == [across_start, "standup", inside, across_end]
    standup = found[1]
    assert (standup.start, standup.end) == (
        datetime(2025, 7, 1, 12, 0, tzinfo=UTC),
        datetime(2025, 7, 1, 12, 15, tzinfo=UTC),
    )
    listing = connector.execute(
        "list_events",
        {"start": T0.isoformat(), "end": (T0 + timedelta(days=1)).isoformat()},
        idempotency_key="read",
    )
    assert listing.details["count"] == 4
    assert "Stand-up [uid standup]" in listing.summary


def test_wrong_credentials_are_a_permanent_error(caldav_server: CalDavServer) -> None:
    connector = caldav(caldav_server, password="wrong")
    with pytest.raises(PermanentConnectorError, match=r"401 .* user name and password"):
        connector.execute("create_event", PARAMS, idempotency_key="act-1")
    with pytest.raises(PermanentConnectorError, match="401"):
        connector.upcoming(now=T0, days=1)


def test_a_collection_that_does_not_exist_is_a_permanent_error(
    caldav_server: CalDavServer,
) -> None:
    missing = caldav(caldav_server, url=f"{caldav_server.base_url}/alice/missing/")
    with pytest.raises(PermanentConnectorError, match="no calendar collection"):
        missing.execute("create_event", PARAMS, idempotency_key="act-1")
    with pytest.raises(PermanentConnectorError, match="no calendar collection"):
        missing.upcoming(now=T0, days=1)
    with pytest.raises(PermanentConnectorError, match="no calendar collection"):
        missing.execute("delete_event", {"uid": "u"}, idempotency_key="d")
    other_user = caldav(caldav_server, url=f"{caldav_server.base_url}/bob/calendar/")
    with pytest.raises(PermanentConnectorError, match="403"):
        other_user.execute("create_event", PARAMS, idempotency_key="act-1")


# --- CalDAV failures a real server won't produce on demand --------------------------------


@pytest.fixture
def http_server() -> Iterator[Callable[[type[http.server.BaseHTTPRequestHandler]], str]]:
    """Start a local http.server with the given handler; returns its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append(server)
        threads.append(thread)
        return f"http://127.0.0.1:{server.server_address[1]}/cal/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(timeout=5)


class Unavailable(http.server.BaseHTTPRequestHandler):
    """Answers every request with 503, as a CalDAV server in maintenance does."""

    requests: list[str] = []

    def answer(self) -> None:
        self.requests.append(self.command)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"down for maintenance"
        self.send_response(503)
        self.send_header("Retry-After", "30")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_GET = do_DELETE = do_REPORT = answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Silent(http.server.BaseHTTPRequestHandler):
    """Reads the request, then says nothing until the client gives up."""

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.connection.settimeout(5)
        self.connection.recv(1)  # returns when the client closes the connection

    do_PUT = do_GET = do_DELETE = do_REPORT = answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def remote(url: str, *, timeout: float = 5) -> CalendarConnector:
    return CalendarConnector(
        backend=CalDavBackend(url, username="u", password="p", timeout=timeout)
    )


def test_a_server_answering_503_is_transient(
    http_server: Callable[[type[http.server.BaseHTTPRequestHandler]], str],
) -> None:
    connector = remote(http_server(Unavailable))
    with pytest.raises(TransientConnectorError, match=r"503 .*down for maintenance"):
        connector.execute("create_event", PARAMS, idempotency_key="act-1")
    with pytest.raises(TransientConnectorError, match="503"):
        connector.execute("delete_event", {"uid": "u"}, idempotency_key="d")
    with pytest.raises(TransientConnectorError, match="503"):
        connector.upcoming(now=T0, days=1)
    with pytest.raises(TransientConnectorError, match="503"):
        connector.lookup("create_event", PARAMS, idempotency_key="act-1")
    assert Unavailable.requests[-4:] == ["PUT", "DELETE", "REPORT", "GET"]


def test_a_put_whose_answer_never_comes_is_transient_because_repeating_it_is_safe(
    http_server: Callable[[type[http.server.BaseHTTPRequestHandler]], str],
) -> None:
    connector = remote(http_server(Silent), timeout=0.3)
    with pytest.raises(TransientConnectorError, match="repeating the request is safe"):
        connector.execute("create_event", PARAMS, idempotency_key="act-1")


def test_nothing_listening_on_the_port_is_transient() -> None:
    port = free_port()
    connector = remote(f"http://127.0.0.1:{port}/cal/")
    with pytest.raises(TransientConnectorError, match=f"cannot reach http://127.0.0.1:{port}"):
        connector.execute("create_event", PARAMS, idempotency_key="act-1")
