"""Adapters to the outside world behind one contract (see :mod:`connectors.base`)."""
