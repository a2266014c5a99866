"""Channels (console, later Telegram and Slack), dispatch, notifier, rendering and the CLI."""
