"""The documents folder on disk: :class:`Folder` (safe, atomic, locked file operations
confined to one directory), the Atom feed (``feed.xml``) kept in it, and :func:`slugify` for
the names of post pages."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
import threading
import time
import unicodedata
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from connectors.errors import (
    ConnectorError,
    PermanentConnectorError,
    TransientConnectorError,
)

ATOM = "http://www.w3.org/2005/Atom"
FEED_LIMIT = 50
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()

ET.register_namespace("", ATOM)


def _fs_error(exc: OSError, path: Path) -> ConnectorError:
    fatal = isinstance(
        exc, PermissionError | FileExistsError | IsADirectoryError | NotADirectoryError
    ) or exc.errno in (errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP)
    kind = PermanentConnectorError if fatal else TransientConnectorError
    return kind(f"documents: cannot use {path}: {exc}")


class Folder:
    """Safe, atomic file operations confined to one directory."""

    def __init__(self, root: Path, *, lock_timeout: float) -> None:
        self.root = root
        self.lock_timeout = lock_timeout

    def path(self, relative: str) -> Path:
        """``relative`` inside the folder, symlinks resolved; refused when it leads outside."""
        root = self.root.resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or target == root:
            raise PermanentConnectorError(
                f"documents: {relative!r} leads outside the documents folder {root}"
            )
        return target

    def read(self, relative: str) -> bytes | None:
        path = self.path(relative)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _fs_error(exc, path) from exc

    def read_text(self, relative: str) -> str | None:
        data = self.read(relative)
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise PermanentConnectorError(f"documents: {relative} is not UTF-8 text") from exc

    def exists(self, relative: str) -> bool:
        return self.path(relative).is_file()

    def write(self, relative: str, data: bytes) -> None:
        """Replace ``relative`` with ``data`` atomically (temporary file, fsync, rename)."""
        path = self.path(relative)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.path(relative)  # the parent just made may be a symlink made meanwhile
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)  # only still there when writing or renaming failed
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise _fs_error(exc, path) from exc

    def remove(self, relative: str) -> None:
        path = self.path(relative)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _fs_error(exc, path) from exc

    def glob(self, folder: str, pattern: str) -> list[str]:
        """Names of the files in ``folder`` matching ``pattern``, as paths relative to the root."""
        base = self.path(folder)
        try:
            return sorted(f"{folder}/{p.name}" for p in base.glob(pattern) if p.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _fs_error(exc, base) from exc

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock: one writer at a time, across threads and processes."""
        root = self.root.resolve()
        with _THREAD_LOCKS_GUARD:
            lock = _THREAD_LOCKS.setdefault(root, threading.Lock())
        if not lock.acquire(timeout=self.lock_timeout):
            raise TransientConnectorError(f"documents: {root} is busy (another writer)")
        try:
            lock_path = root / ".opcore.lock"
            try:
                root.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise _fs_error(exc, lock_path) from exc
            try:
                deadline = time.monotonic() + self.lock_timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise TransientConnectorError(
                                f"documents: {root} is locked by another process"
                            ) from None
                        time.sleep(0.01)
                yield
            finally:
                os.close(fd)  # closing releases the flock
        finally:
            lock.release()


def slugify(title: str) -> str:
    """``Hello, Wörld!`` -> ``hello-world``: ASCII letters and digits joined by ``-``."""
    ascii_ = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")[:60].rstrip("-")
    return slug or "post"


# --- the Atom feed ---------------------------------------------------------------------


def _atom_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _q(tag: str) -> str:
    return f"{{{ATOM}}}{tag}"


def read_feed(folder: Folder) -> ET.Element | None:
    """The root of ``feed.xml`` in ``folder``; ``None`` when there is no feed yet."""
    data = folder.read("feed.xml")
    if data is None:
        return None
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise PermanentConnectorError(f"documents: feed.xml is not well-formed XML: {exc}") from exc
    if root.tag != _q("feed"):
        raise PermanentConnectorError(f"documents: feed.xml is not an Atom feed ({root.tag})")
    return root


def new_feed(author: str) -> ET.Element:
    """An empty feed by ``author``; :func:`write_feed` fills in its title and time."""
    root = ET.Element(_q("feed"))
    ET.SubElement(root, _q("id")).text = f"urn:uuid:{uuid.uuid4()}"
    ET.SubElement(root, _q("title"))
    ET.SubElement(root, _q("updated"))
    author_element = ET.SubElement(root, _q("author"))
    ET.SubElement(author_element, _q("name")).text = author
    ET.SubElement(root, _q("generator")).text = "opcore"
    return root


def write_feed(folder: Folder, root: ET.Element, *, title: str, now: datetime) -> None:
    """Write ``root`` as ``feed.xml`` in ``folder``, titled ``title`` and updated ``now``."""
    for tag, value in (("title", title), ("updated", _atom_time(now))):
        element = root.find(_q(tag))
        if element is None:
            element = ET.SubElement(root, _q(tag))
        element.text = value
    ET.indent(root)
    folder.write("feed.xml", ET.tostring(root, encoding="utf-8", xml_declaration=True))


def feed_entries(root: ET.Element, entry_id: str) -> list[ET.Element]:
    """The feed's entries with the id ``entry_id``."""
    return [e for e in root.findall(_q("entry")) if e.findtext(_q("id")) == entry_id]
