"""The CalDAV calendar backend: :class:`CalDavBackend` speaks CalDAV (RFC 4791) over httpx."""

from __future__ import annotations

import ipaddress
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import quote, urljoin, urlsplit
from xml.sax.saxutils import escape

import httpx

from connectors.calendar_backends import CalendarBackend, _order
from connectors.errors import (
    ConnectorError,
    InvalidParamsError,
    PermanentConnectorError,
    TransientConnectorError,
)
from connectors.ics import CalendarEvent, parse_ics, to_ics


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
