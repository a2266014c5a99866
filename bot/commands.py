"""Slash commands: the table of what exists, and pure parsing of a message into a command."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandSpec:
    name: str
    usage: str
    help: str
    needs_args: bool = False


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("help", "/help", "what I can do"),
        CommandSpec(
            "lead",
            "/lead <name> <email> <what they want>",
            "qualify a lead and draft a reply, e.g. /lead Jane Doe <jane@acme.example> wants a website audit",
            needs_args=True,
        ),
        CommandSpec(
            "proposal",
            "/proposal <email> <title>: <scope item>, <scope item>; price <amount> <currency>; <timeline>",
            "draft a proposal email to approve, e.g. /proposal jane@acme.example website audit: 3 pages review, accessibility report; price 2400 EUR; 2 weeks",
            needs_args=True,
        ),
        CommandSpec(
            "release",
            "/release <version> to <email>: <change>; <change>",
            "draft customer release notes to approve, e.g. /release v1.4.0 to customers@list.example: fix: export 500; feat: dark mode",
            needs_args=True,
        ),
        CommandSpec(
            "triage",
            "/triage <customer email>: <their message>",
            "classify a support ticket and draft a reply, e.g. /triage bob@client.example: the export fails",
            needs_args=True,
        ),
        CommandSpec("approvals", "/approvals", "actions waiting for your approval, with buttons"),
        CommandSpec(
            "trace",
            "/trace <job>",
            "what happened in a job, step by step, with timings",
            needs_args=True,
        ),
        CommandSpec("status", "/status", "queue depth, jobs running, last error"),
        CommandSpec(
            "digest",
            "/digest",
            "the digest now: decisions waiting, done, failed, spend, upcoming, overdue invoices",
        ),
        CommandSpec("flows", "/flows", "open business flows and where each stands"),
        CommandSpec(
            "won",
            "/won <contact email>",
            "the client accepted: the consultant flow moves on, e.g. /won jane@acme.example",
            needs_args=True,
        ),
        CommandSpec(
            "paid",
            "/paid <invoice number>",
            "record a payment that came outside Stripe, e.g. /paid 2026-0007",
            needs_args=True,
        ),
        CommandSpec(
            "backlog",
            "/backlog",
            "open bugs and feature requests from triaged tickets, grouped and ranked",
        ),
        CommandSpec("budget", "/budget", "model spend today and this month against the budgets"),
        CommandSpec(
            "pause",
            "/pause <agent>",
            "stop starting an agent's jobs; they wait in the log",
            needs_args=True,
        ),
        CommandSpec(
            "resume", "/resume <agent>", "start a paused agent's waiting jobs", needs_args=True
        ),
        CommandSpec(
            "cancel", "/cancel <job>", "cancel a job; its pending approvals expire", needs_args=True
        ),
        CommandSpec(
            "undo",
            "/undo <job>",
            "undo the job's executed actions that can be undone",
            needs_args=True,
        ),
        CommandSpec(
            "contact",
            "/contact <email> email=<new> name=<First_Last> company=<Name>",
            "correct a contact; drafts waiting for the old details ask again",
            needs_args=True,
        ),
        CommandSpec(
            "remember",
            "/remember <note> | /remember <contact> <key>: <value> | /remember rule: <rule>",
            "store a note, a fact about a contact, or a business rule, e.g. /remember jane@acme.example rate: 120 EUR/h",
            needs_args=True,
        ),
        CommandSpec(
            "recall",
            "/recall <question> [contact:<email>] [kind:<kind>]",
            "what opcore remembers about it, best first, with sources",
            needs_args=True,
        ),
        CommandSpec(
            "facts",
            "/facts <contact>|workspace [all]",
            "a contact's (or the workspace's) current facts; 'all' adds their history",
            needs_args=True,
        ),
        CommandSpec(
            "why",
            "/why <fact or memory id> | /why <contact> <key>",
            "where a fact comes from: the events that set and changed it",
            needs_args=True,
        ),
        CommandSpec(
            "forget",
            "/forget <memory or fact id>",
            "stop recalling it (logged; /unforget within the undo window)",
            needs_args=True,
        ),
        CommandSpec(
            "history",
            "/history <contact> [days]",
            "what happened with a contact (jobs, emails, decisions, facts), default 30 days",
            needs_args=True,
        ),
        CommandSpec(
            "unforget", "/unforget <id>", "bring back something forgotten", needs_args=True
        ),
        CommandSpec(
            "pair",
            "/pair <code>",
            "claim this bot with the code `opcore pair <channel>` printed",
            needs_args=True,
        ),
    )
}

_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]*)(?:@\S+)?(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True)
class ParsedCommand:
    name: str
    args: str


def parse_command(text: str) -> ParsedCommand | None:
    """``/lead  Jane …`` -> ParsedCommand("lead", "Jane …"); ``None`` if not a command.
    A ``@botname`` suffix (Telegram groups) is ignored."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    return ParsedCommand(match.group(1).lower(), (match.group(2) or "").strip())


def help_text() -> str:
    lines = ["Commands:"]
    lines += [f"{spec.usage} - {spec.help}" for spec in COMMANDS.values()]
    return "\n".join(lines)
