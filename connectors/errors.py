"""Errors of the ``connectors`` package.

ConnectorError                 root: a connector could not do what was asked
├── UnknownActionError         the connector has no such action (a programming or config error)
├── InvalidParamsError         the action's parameters do not validate
├── TransientConnectorError    the remote side failed in a way a retry may fix (timeouts, 5xx, 4xx-throttling)
├── PermanentConnectorError    a retry would fail the same way (rejected recipient, bad credentials)
└── OutcomeUnknownError        the call may or may not have taken effect (a connection lost after
                               the message went out): never retried blindly, the operator decides
"""


class ConnectorError(Exception):
    """Root of the connector errors."""


class UnknownActionError(ConnectorError):
    """The connector does not offer the requested action."""


class InvalidParamsError(ConnectorError):
    """The parameters given to an action do not validate against its model."""


class TransientConnectorError(ConnectorError):
    """A failure that may go away on retry."""


class PermanentConnectorError(ConnectorError):
    """A failure that a retry would repeat."""


class OutcomeUnknownError(ConnectorError):
    """The remote side may have acted: repeating the call could do it twice."""
