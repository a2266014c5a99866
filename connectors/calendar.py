"""The calendar connector: create, delete and list events in a CalDAV calendar or an .ics file.

``create_event`` derives the event's UID from the idempotency key (:func:`event_uid`), so every
attempt of one action writes the same event and a second attempt finds the first one's work
instead of adding a duplicate. Its undo, ``delete_event``, succeeds when the event is already
gone. Both backends can tell for certain whether an event exists, so :meth:`lookup` is
definitive.

:class:`CalDavBackend` speaks CalDAV (RFC 4791) over httpx; :class:`IcsFileBackend` keeps one
``.ics`` file (the default when no CalDAV URL is configured). The daily digest reads through
:meth:`CalendarConnector.upcoming`. The backends live in :mod:`connectors.calendar_backends`
(the contract and the file) and :mod:`connectors.caldav`; they are re-exported here.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from connectors.base import ActionResult, ActionSpec, Connector
from connectors.caldav import CalDavBackend
from connectors.calendar_backends import CalendarBackend, IcsFileBackend, _order
from connectors.errors import InvalidParamsError
from connectors.ics import CalendarEvent

__all__ = [
    "UID_SUFFIX",
    "CalDavBackend",
    "CalendarBackend",
    "CalendarConnector",
    "CreateEvent",
    "DeleteEvent",
    "IcsFileBackend",
    "ListEvents",
    "calendar_connector_from",
    "event_uid",
]

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


# --- the connector ------------------------------------------------------------------------


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
