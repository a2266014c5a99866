"""Errors of the ``agents`` package.

AgentError                       root: an agent could not finish its work
├── RegistryError                an agent or capability is unknown or declared twice (start-up)
├── CapabilityError              an agent used a connector action it did not declare
├── AgentInputError              the agent's input does not validate
└── ProviderError                a model provider failed
    ├── ProviderTimeoutError     no answer within the timeout (transient)
    ├── ProviderUnavailableError 5xx, 429 or a connection failure (transient)
    ├── ProviderRequestError     4xx other than 429: the request itself is wrong (permanent)
    └── ProviderResponseError    the answer is not what the protocol or the schema promised
"""


class AgentError(Exception):
    """Root of the agent errors."""


class RegistryError(AgentError):
    """An agent or a capability is unknown, or declared twice."""


class CapabilityError(AgentError):
    """An agent tried to use a connector action it did not declare."""


class AgentInputError(AgentError):
    """The input handed to an agent does not validate."""


class ProviderError(AgentError):
    """A model provider failed. ``transient`` says whether a retry may help."""

    transient: bool = False


class ProviderTimeoutError(ProviderError):
    transient = True


class ProviderUnavailableError(ProviderError):
    transient = True
    retry_after: float | None = None  # seconds, from a Retry-After header when the server sent one


class ProviderRequestError(ProviderError):
    transient = False


class ProviderResponseError(ProviderError):
    transient = False
