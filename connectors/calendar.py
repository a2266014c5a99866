"""The calendar connector: create, delete and list events in a CalDAV calendar or an .ics file.

``create_event`` derives the event's UID from the idempotency key (:func:`event_uid`), so every
attempt of one action writes the same event and a second attempt finds the first one's work
instead of adding a duplicate. Its undo, ``delete_event``, succeeds when the event is already
gone. Both backends can tell for certain whether an event exists, so :meth:`lookup` is
definitive.

:class:`CalDavBackend` speaks CalDAV (RFC 4791) over httpx; :class:`IcsFileBackend` keeps one
``.ics`` file (the default when no CalDAV URL is configured). The daily digest reads through
:meth:`CalendarConnector.upcoming`.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import quote, urljoin, urlsplit
from xml.sax.saxutils import escape

import httpx
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from connectors.base import ActionResult, ActionSpec, Connector
from connectors.errors import (
    ConnectorError,
    InvalidParamsError,
    PermanentConnectorError,
    TransientConnectorError,
)
from connectors.ics import DEFAULT_PRODID, CalendarEvent, parse_ics, to_ics

_log = logging.getLogger(__name__)
UID_SUFFIX = "@opcore"
_LISTED_AT_MOST = 50  # events spelled out in a list_events summary


def event_uid(idempotency_key: str) -> str:
    """The UID of the event an action with this key creates: the same for every attempt."""
    if not idempotency_key:
        raise InvalidParamsError("an idempotency key is required to create an event")
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32] + UID_SUFFIX


# --- parameters ---------------------------------------------------------------------------


def _control_characters(value: str, allowed: str) -> str:
    if any(c not in allowed and unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise ValueError("may not contain line breaks or control characters")
    return value


def _one_line(value: str) -> str:
    if not value.strip() and value:
        raise ValueError("may not be only white space")
    return _control_characters(value, "\t")


def _multi_line(value: str) -> str:
    return _control_characters(value.replace("\r\n", "\n").replace("\r", "\n"), "\t\n")


class _Range(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class CreateEvent(_Range):
    """Parameters of ``create_event``: an event in the operator's calendar."""

    title: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_one_line)]
    description: Annotated[str, Field(max_length=5000), AfterValidator(_multi_line)] = ""
    location: Annotated[str, Field(max_length=500), AfterValidator(_one_line)] = ""

    def event(self, uid: str) -> CalendarEvent:
        return CalendarEvent(
            uid=uid,
            title=self.title,
            start=self.start.astimezone(UTC),
            end=self.end.astimezone(UTC),
            description=self.description,
            location=self.location,
        )


class ListEvents(_Range):
    """Parameters of ``list_events``: the events overlapping ``[start, end)``."""


# What create_event's compensation call adds to ``uid``: its params and its result's details.
_COMPENSATION_ECHO = frozenset({*CreateEvent.model_fields, "backend", "url", "path"})


class DeleteEvent(BaseModel):
    """Parameters of ``delete_event``: the event's ``uid``.

    ``delete_event`` is ``create_event``'s compensation, which is called with the create
    params plus the create result's details (``title``, ``start``, ``url``...). Those keys are
    accepted and dropped before validation; any other unknown key is still refused. This keeps
    the schema an agent sees to the one field that matters, instead of ``extra="ignore"``
    (which would also let typos through) or optional copies of every create field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uid: Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_one_line)]

    @model_validator(mode="before")
    @classmethod
    def _drop_compensation_echo(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if k not in _COMPENSATION_ECHO}
        return data


# --- backends -----------------------------------------------------------------------------


class CalendarBackend(ABC):
    """Where events live. Every method raises only :class:`ConnectorError` subclasses."""

    kind: ClassVar[str]

    @abstractmethod
    def create(self, event: CalendarEvent) -> bool:
        """Store ``event`` unless an event with its UID exists; whether this call stored it."""

    @abstractmethod
    def delete(self, uid: str) -> bool:
        """Remove the event with ``uid``; ``False`` if there was none (that is not an error)."""

    @abstractmethod
    def get(self, uid: str) -> CalendarEvent | None:
        """The event with ``uid``, ``None`` if there is none."""

    @abstractmethod
    def events_between(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        """The events overlapping ``[start, end)``, in no particular order."""

    @abstractmethod
    def where(self, uid: str) -> dict[str, str]:
        """Where the event with ``uid`` is kept, for a result's details (``url`` or ``path``)."""


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _caused_by_certificate(exc: BaseException) -> bool:
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return any(isinstance(cause, ssl.SSLCertVerificationError) for cause in chain)


def _status_ok(status_line: str) -> bool:
    """``HTTP/1.1 200 OK`` from a multistatus ``<status>``."""
    parts = status_line.split()
    return len(parts) >= 2 and parts[1].startswith("2")


def _utc_stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


_DAV = "{DAV:}"
_CALDAV = "{urn:ietf:params:xml:ns:caldav}"
_REPORT_HEAD = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">\n'
)


class CalDavBackend(CalendarBackend):
    """A CalDAV calendar collection, e.g. ``https://dav.example.com/user/calendar/``.

    Events are resources ``<collection>/<uid>.ics``. Creating is a PUT with ``If-None-Match:
    *``: 201/204 means this attempt created it, 412 that an earlier attempt did. Because the
    UID is fixed per action, repeating a PUT whose answer was lost is safe (at worst it gets
    412), and so is repeating a DELETE (404 means done) or a read. So every failure to hear an
    answer is a :class:`TransientConnectorError`, whether the request went out or not:
    nothing here can take effect twice. 5xx, 408 and 429 are transient too; 401/403, a missing
    collection and other 4xx are :class:`PermanentConnectorError`.

    Plain ``http://`` is only accepted for loopback hosts: calendars and passwords do not
    travel in clear text. Proxy and netrc settings from the environment are not used.
    """

    kind: ClassVar[str] = "caldav"

    def __init__(self, url: str, *, username: str = "", password: str = "", timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("CalDAV url must look like https://host/path/to/calendar/")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError(
                f"refusing plain http:// to {parts.hostname}: the calendar and the password "
                "would travel in clear text (use https://)"
            )
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError(
                "CalDAV url takes no user, query or fragment (give the user name separately)"
            )
        self.url = url if url.endswith("/") else url + "/"
        self.server = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self._auth = httpx.BasicAuth(username, password) if username else None

    def where(self, uid: str) -> dict[str, str]:
        return {"url": self._href(uid)}

    def _href(self, uid: str) -> str:
        return urljoin(self.url, quote(uid, safe="@") + ".ics")

    # HTTP ---------------------------------------------------------------------------------

    def _request(
        self, method: str, url: str, *, body: str = "", headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        what = f"{method} {url}"
        try:
            with httpx.Client(auth=self._auth, timeout=self.timeout, trust_env=False) as client:
                return client.request(
                    method,
                    url,
                    content=body.encode() or None,
                    headers=headers,
                )
        except httpx.UnsupportedProtocol as exc:
            raise PermanentConnectorError(f"{what}: {exc}") from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            if _caused_by_certificate(exc):
                raise PermanentConnectorError(
                    f"{what}: the server's TLS certificate is not trusted: {exc}"
                ) from exc
            raise TransientConnectorError(f"cannot reach {self.server}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise TransientConnectorError(
                f"{what}: the connection failed before an answer came ({exc!r}); repeating the "
                "request is safe"
            ) from exc
        except httpx.HTTPError as exc:
            raise PermanentConnectorError(f"{what}: {exc!r}") from exc

    def _fail(self, response: httpx.Response, what: str) -> ConnectorError:
        code = response.status_code
        detail = f"{what}: {self.server} answered {code} {response.reason_phrase}"
        if body := " ".join(response.text.split())[:200]:
            detail += f": {body}"
        if code in (408, 425, 429) or (code >= 500 and code not in (501, 505)):
            return TransientConnectorError(detail)
        if code == 401:
            return PermanentConnectorError(f"{detail} (check the CalDAV user name and password)")
        if code == 403:
            return PermanentConnectorError(f"{detail} (this user may not use {self.url})")
        if code in (404, 409):
            return PermanentConnectorError(f"{detail} (no calendar collection at {self.url})")
        if 300 <= code < 400:
            moved = response.headers.get("Location", "elsewhere")
            return PermanentConnectorError(f"{detail} (the calendar moved to {moved})")
        return PermanentConnectorError(detail)

    def _report(self, what: str, filters: str, *, expand: str = "") -> list[tuple[str, str]]:
        """A calendar-query REPORT: ``(href, calendar-data)`` of each matching resource."""
        body = (
            f"{_REPORT_HEAD}<D:prop><D:getetag/><C:calendar-data>{expand}</C:calendar-data>"
            '</D:prop>\n<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
            f"{filters}</C:comp-filter></C:comp-filter></C:filter>\n</C:calendar-query>\n"
        )
        headers = {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"}
        response = self._request("REPORT", self.url, body=body, headers=headers)
        if response.status_code != 207:
            raise self._fail(response, what)
        return self._multistatus(response.content, what)

    def _multistatus(self, content: bytes, what: str) -> list[tuple[str, str]]:
        try:  # expat >= 2.4 (Python 3.11) refuses entity-expansion bombs
            root = ET.fromstring(content)
        except ET.ParseError as exc:
            raise PermanentConnectorError(f"{what}: the answer is not XML: {exc}") from exc
        if root.tag != f"{_DAV}multistatus":
            raise PermanentConnectorError(f"{what}: expected a DAV multistatus, got {root.tag}")
        found: list[tuple[str, str]] = []
        for response in root.iter(f"{_DAV}response"):
            href = urljoin(self.url, (response.findtext(f"{_DAV}href") or "").strip())
            status = response.findtext(f"{_DAV}status")
            if status is not None and not _status_ok(status):
                continue  # e.g. a resource deleted between matching and answering
            data = [
                element.text or ""
                for propstat in response.iter(f"{_DAV}propstat")
                if _status_ok(propstat.findtext(f"{_DAV}status") or "")
                for element in propstat.iter(f"{_CALDAV}calendar-data")
            ]
            if not data:
                raise PermanentConnectorError(
                    f"{what}: the server sent no calendar data for {href}"
                )
            found.append((href, data[0]))
        return found

    def _events(self, href: str, data: str, what: str) -> list[CalendarEvent]:
        try:
            return parse_ics(data)
        except InvalidParamsError as exc:
            raise PermanentConnectorError(f"{what}: cannot read {href}: {exc}") from exc

    def _resources_with(self, uid: str) -> list[tuple[str, list[CalendarEvent]]]:
        """Resources holding an event with ``uid`` (found by UID, whatever their name)."""
        what = f"search for UID {uid!r}"
        match = (
            f'<C:prop-filter name="UID"><C:text-match>{escape(uid)}</C:text-match></C:prop-filter>'
        )
        found = []
        for href, data in self._report(what, match):
            events = [event for event in self._events(href, data, what) if event.uid == uid]
            if events:
                found.append((href, events))
        return found

    # CalendarBackend ------------------------------------------------------------------------

    def create(self, event: CalendarEvent) -> bool:
        href = self._href(event.uid)
        headers = {"If-None-Match": "*", "Content-Type": "text/calendar; charset=utf-8"}
        response = self._request("PUT", href, body=to_ics([event]), headers=headers)
        if response.status_code in (200, 201, 204):
            return True
        if response.status_code == 412:
            return False  # the resource exists: an earlier attempt with this key created it
        raise self._fail(response, f"PUT {href}")

    def delete(self, uid: str) -> bool:
        if self._delete(self._href(uid)):
            return True
        # Not where we put events: another client may have stored it under another name.
        return any([self._delete(href) for href, _ in self._resources_with(uid)])

    def _delete(self, href: str) -> bool:
        response = self._request("DELETE", href)
        if response.status_code == 404:
            return False
        if not response.is_success:
            raise self._fail(response, f"DELETE {href}")
        return True

    def get(self, uid: str) -> CalendarEvent | None:
        href = self._href(uid)
        response = self._request("GET", href, headers={"Accept": "text/calendar"})
        if response.status_code == 200:
            events = [e for e in self._events(href, response.text, f"GET {href}") if e.uid == uid]
        elif response.status_code == 404:
            events = [event for _, found in self._resources_with(uid) for event in found]
        else:
            raise self._fail(response, f"GET {href}")
        return min(events, key=_order) if events else None

    def events_between(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        what = f"list events in {self.url}"
        span = f'start="{_utc_stamp(start)}" end="{_utc_stamp(end)}"'
        # The server expands recurring events into the instances in the range (RFC 4791 9.6.5).
        found = self._report(what, f"<C:time-range {span}/>", expand=f"<C:expand {span}/>")
        events = [event for href, data in found for event in self._events(href, data, what)]
        return [event for event in events if event.overlaps(start, end)]


class IcsFileBackend(CalendarBackend):
    """One iCalendar file holding every event, e.g. ``<data dir>/calendar.ics``, which the
    operator can import into any calendar app.

    Every change rewrites the whole file atomically (temporary file, fsync, ``os.replace``)
    while holding an exclusive ``flock`` on ``<file>.lock``, so concurrent workers on this
    machine do not lose each other's events and a reader never sees half a file. Readers take
    no lock. The file is opcore's own: properties other than those of
    :class:`CalendarEvent` (alarms, recurrence rules) are not kept when it is rewritten.
    """

    kind: ClassVar[str] = "file"

    def __init__(self, path: Path, *, prodid: str = DEFAULT_PRODID) -> None:
        self.path = path
        self.prodid = prodid
        self._lock_path = path.with_name(path.name + ".lock")

    def where(self, uid: str) -> dict[str, str]:
        return {"path": str(self.path)}

    def _error(self, exc: OSError) -> ConnectorError:
        fatal = isinstance(
            exc, PermissionError | FileExistsError | IsADirectoryError | NotADirectoryError
        )
        kind = PermanentConnectorError if fatal else TransientConnectorError
        return kind(f"calendar file: cannot use {self.path}: {exc}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = self._lock_path.open("a")
        except OSError as exc:
            raise self._error(exc) from exc
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            except OSError as exc:
                raise self._error(exc) from exc
            yield  # closing the file releases the lock

    def _read(self) -> list[CalendarEvent]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except UnicodeDecodeError as exc:
            raise PermanentConnectorError(f"calendar file {self.path} is not UTF-8: {exc}") from exc
        except OSError as exc:
            raise self._error(exc) from exc
        try:
            return parse_ics(text)
        except InvalidParamsError as exc:
            raise PermanentConnectorError(
                f"calendar file {self.path} is not valid iCalendar (left untouched): {exc}"
            ) from exc

    def _write(self, events: Sequence[CalendarEvent]) -> None:
        text = to_ics(sorted(events, key=_order), prodid=self.prodid)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".", suffix=".ics.tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(text.encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)  # only still there when writing or renaming failed
        except OSError as exc:
            raise self._error(exc) from exc

    def create(self, event: CalendarEvent) -> bool:
        with self._locked():
            events = self._read()
            if any(existing.uid == event.uid for existing in events):
                return False
            self._write([*events, event])
            return True

    def delete(self, uid: str) -> bool:
        with self._locked():
            events = self._read()
            remaining = [event for event in events if event.uid != uid]
            if len(remaining) == len(events):
                return False
            self._write(remaining)
            return True

    def get(self, uid: str) -> CalendarEvent | None:
        return next((event for event in self._read() if event.uid == uid), None)

    def events_between(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        return [event for event in self._read() if event.overlaps(start, end)]


# --- the connector ------------------------------------------------------------------------


def _order(event: CalendarEvent) -> tuple[datetime, datetime, str]:
    return (event.start, event.end, event.uid)


def _when(event: CalendarEvent) -> str:
    start, end = event.start.astimezone(UTC), event.end.astimezone(UTC)
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def _line(event: CalendarEvent) -> str:
    where = f" @ {event.location}" if event.location else ""
    return f"- {_when(event)} {event.title}{where} [uid {event.uid}]"


class CalendarConnector(Connector):
    """Events in the operator's calendar, kept by a :class:`CalendarBackend`."""

    name: ClassVar[str] = "calendar"
    actions: ClassVar[Mapping[str, ActionSpec]] = MappingProxyType(
        {
            "create_event": ActionSpec(
                name="create_event",
                mode="write",
                description="Add an event (title, start, end, optional description and "
                "location) to the operator's calendar.",
                params=CreateEvent,
                compensation="delete_event",
                free_text=("title", "description", "location"),
            ),
            "delete_event": ActionSpec(
                name="delete_event",
                mode="write",
                description="Delete the event with this UID from the operator's calendar "
                "(done already if it is not there).",
                params=DeleteEvent,
                sensitive=("uid",),
            ),
            "list_events": ActionSpec(
                name="list_events",
                mode="read",
                description="List the events overlapping a time range, earliest first.",
                params=ListEvents,
            ),
        }
    )

    def __init__(self, *, backend: CalendarBackend) -> None:
        self.backend = backend

    def execute(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult:
        validated = self.validate(action, params)
        if isinstance(validated, CreateEvent):
            event = validated.event(event_uid(idempotency_key))
            if not self.backend.create(event):
                _log.info("event %s exists already: an earlier attempt created it", event.uid)
            return self._created(event)
        if isinstance(validated, DeleteEvent):
            deleted = self.backend.delete(validated.uid)
            return self._deleted(validated.uid, done_now=deleted)
        if isinstance(validated, ListEvents):
            return self._listed(validated.start, validated.end)
        raise TypeError(f"{action!r} has no handler for {type(validated).__name__}")

    def lookup(
        self, action: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> ActionResult | None:
        """create_event: the event its key names, if it exists. delete_event: done if the
        event is absent. list_events: never (reading again has no effect)."""
        if self.spec(action).mode == "read":
            return None
        validated = self.validate(action, params)
        if isinstance(validated, CreateEvent):
            found = self.backend.get(event_uid(idempotency_key))
            return None if found is None else self._created(found)
        if isinstance(validated, DeleteEvent):
            present = self.backend.get(validated.uid) is not None
            return None if present else self._deleted(validated.uid, done_now=False)
        raise TypeError(f"{action!r} has no lookup for {type(validated).__name__}")

    @property
    def lookup_is_definitive(self) -> bool:
        return True  # both backends see every event: no event found means none was made

    def upcoming(self, *, now: datetime, days: int) -> list[CalendarEvent]:
        """The events overlapping the next ``days`` days from ``now``, earliest first."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise InvalidParamsError("upcoming: now must be timezone-aware")
        if not 1 <= days <= 3660:
            raise InvalidParamsError(f"upcoming: days must be from 1 to 3660, not {days}")
        start = now.astimezone(UTC)
        return sorted(self.backend.events_between(start, start + timedelta(days=days)), key=_order)

    def _created(self, event: CalendarEvent) -> ActionResult:
        return ActionResult(
            summary=f"Calendar event {event.title!r} on {_when(event)} ({self.backend.kind})",
            details={
                "uid": event.uid,
                "start": event.start.astimezone(UTC).isoformat(),
                "end": event.end.astimezone(UTC).isoformat(),
                "backend": self.backend.kind,
                **self.backend.where(event.uid),
            },
        )

    def _deleted(self, uid: str, *, done_now: bool) -> ActionResult:
        summary = (
            f"Deleted calendar event {uid}"
            if done_now
            else f"Calendar event {uid} is not in the calendar (nothing to delete)"
        )
        return ActionResult(
            summary=f"{summary} ({self.backend.kind})",
            details={"uid": uid, "deleted": done_now, "backend": self.backend.kind},
        )

    def _listed(self, start: datetime, end: datetime) -> ActionResult:
        events = sorted(self.backend.events_between(start, end), key=_order)
        span = (
            f"{start.astimezone(UTC):%Y-%m-%d %H:%M} and {end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        )
        lines = [f"{len(events)} event(s) between {span}:"]
        lines += [_line(event) for event in events[:_LISTED_AT_MOST]]
        if len(events) > _LISTED_AT_MOST:
            lines.append(f"... and {len(events) - _LISTED_AT_MOST} more")
        return ActionResult(
            summary="\n".join(lines),
            details={
                "count": len(events),
                "start": start.astimezone(UTC).isoformat(),
                "end": end.astimezone(UTC).isoformat(),
                "backend": self.backend.kind,
            },
        )


def calendar_connector_from(
    *, caldav_url: str, username: str, password: str, ics_path: Path, timeout: float
) -> CalendarConnector:
    """CalDAV when ``caldav_url`` is set, the ``.ics`` file at ``ics_path`` otherwise."""
    backend: CalendarBackend = (
        CalDavBackend(caldav_url, username=username, password=password, timeout=timeout)
        if caldav_url
        else IcsFileBackend(ics_path)
    )
    return CalendarConnector(backend=backend)
