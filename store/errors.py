"""Errors of the ``store`` package.

StoreError                      root: the store could not read or write as asked
├── DatabaseError               the database is unreachable or refused a statement
├── MigrationError              the schema could not be brought up to date
├── ConcurrencyError            a stream was appended at a version someone else took first
├── EventSchemaError            an event's type is unknown or its data does not validate
├── NotFoundError               a job, action, approval or contact does not exist
│   └── AmbiguousIdError        a short id matches more than one record
├── RecallError                 the recall index or the embedder failed
│   └── EmbeddingError          the embedding model could not embed the text
└── ArchiveError                an export archive is malformed, tampered with or not importable
"""


class StoreError(Exception):
    """Root of the store errors."""


class DatabaseError(StoreError):
    """The database is unreachable or refused a statement."""


class MigrationError(StoreError):
    """The schema could not be brought up to date."""


class ConcurrencyError(StoreError):
    """Optimistic concurrency: the stream is not at the version the writer expected."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id!r} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventSchemaError(StoreError):
    """An event type is unknown, or its data does not match the type's model."""


class NotFoundError(StoreError):
    """The record asked for does not exist."""


class AmbiguousIdError(NotFoundError):
    """A short id prefix matches more than one record."""


class RecallError(StoreError):
    """The recall index (SQLite or Weaviate) or the embedder failed."""


class EmbeddingError(RecallError):
    """The embedding model could not embed the text (unreachable, bad answer, not installed)."""


class ArchiveError(StoreError):
    """An export archive is malformed, fails its checksums, or the target is not empty."""
