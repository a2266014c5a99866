"""Agents: the interface, the runtime that runs them, model providers."""
