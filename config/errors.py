"""Errors of the ``config`` package.

ConfigError
    A setting is missing, malformed or contradicts another one.
"""


class ConfigError(Exception):
    """Root of the config errors: the settings cannot be used as given."""
