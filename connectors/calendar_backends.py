"""The calendar backend contract (:class:`CalendarBackend`) and the ``.ics`` file backend.

:class:`IcsFileBackend` keeps every event in one iCalendar file; the CalDAV backend lives in
:mod:`connectors.caldav`, the connector in :mod:`connectors.calendar`.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from connectors.errors import (
    ConnectorError,
    InvalidParamsError,
    PermanentConnectorError,
    TransientConnectorError,
)
from connectors.ics import DEFAULT_PRODID, CalendarEvent, parse_ics, to_ics


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


def _order(event: CalendarEvent) -> tuple[datetime, datetime, str]:
    return (event.start, event.end, event.uid)


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
