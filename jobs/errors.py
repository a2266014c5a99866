"""Errors of the ``jobs`` package.

JobsError               root: the job machinery could not do what was asked
├── BrokerError         the broker is unreachable or refused a message
├── WorkerSetupError    a worker cannot start with these settings (e.g. memory:// in `opcore worker`)
└── InboxSetupError     the inbox settings cannot work (both IMAP and a Maildir, a bad IMAP url)
"""


class JobsError(Exception):
    """Root of the jobs errors."""


class BrokerError(JobsError):
    """The broker is unreachable or refused a message."""


class WorkerSetupError(JobsError):
    """A worker cannot start with the given settings."""


class InboxSetupError(JobsError):
    """The inbox to poll is configured in a way that cannot work."""
