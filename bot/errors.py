"""Errors of the ``bot`` package.

BotError              root: a channel or the dispatcher could not do what was asked
└── ChannelError      a channel cannot start or deliver (bad settings, closed output)
"""


class BotError(Exception):
    """Root of the bot errors."""


class ChannelError(BotError):
    """A channel cannot start, or cannot deliver a message."""
