"""``opcore init --template consultant``: a new workspace in one command.

Writes ``opcore.toml`` (the flow enabled, default approval policies, your time zone and the
daily digest) and copies the flow template into ``<data dir>/flows/`` for you to edit. An
existing ``opcore.toml`` is never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from config import Settings, load_settings
from config.flows import BUILTIN_DIR, TEMPLATES, read_template

# Default policies per template: the safe side (ask) except where nothing leaves the house.
POLICIES: dict[str, dict[str, str]] = {
    "consultant": {
        "calendar.create_event": "auto",  # your own calendar: no tap needed
        "documents.publish_invoice": "ask",
        "email.send_email": "ask",
    },
    "micro-saas": {
        "documents.append_changelog": "ask",
        "webhook.post": "ask",
        "email.send_email": "ask",
    },
    "content": {
        "documents.publish_post": "ask",
        "webhook.post": "ask",
    },
}
# Settings each template turns on, beyond the flow itself.
EXTRA: dict[str, str] = {
    "micro-saas": (
        "email_tickets = true          # new email threads are support tickets (see /backlog)\n"
        'ticket_events = "ticket*"     # and webhook deliveries of these event types\n'
        '# webhook_sources = { github = { kind = "github", secret = "..." } }\n'
        '# outgoing_webhooks = { releases = { url = "https://...", secret = "..." } }\n'
    ),
    "content": '# outgoing_webhooks = { posts = { url = "https://...", secret = "..." } }\n',
}


def add_commands(sub: Any) -> None:
    init = sub.add_parser("init", help="set up a workspace from a template (consultant, ...)")
    init.add_argument("--template", required=True, choices=TEMPLATES)
    init.add_argument("--timezone", default="", help="IANA time zone, e.g. Europe/Berlin")
    init.add_argument("--config", type=Path, default=Path("opcore.toml"))
    init.add_argument("--force", action="store_true", help="overwrite an existing config file")
    init.set_defaults(func=cmd_init)


def render_config(template: str, *, timezone: str, data_dir: Path) -> str:
    rules = "\n".join(
        f'"{kind}" = {{ mode = "{mode}" }}' for kind, mode in POLICIES.get(template, {}).items()
    )
    return (
        f"# opcore workspace: made by `opcore init --template {template}`. Every setting is in\n"
        "# the README's settings table; OPCORE_* environment variables override this file.\n"
        f'data_dir = "{data_dir}"\n'
        f'flows = "{template}"\n'
        f'timezone = "{timezone}"\n'
        'digest_time = "08:00"\n'
        'quiet_hours = "22:00-07:00"\n'
        '# operator_name = "Your Name"\n'
        '# email_from = "You <you@example.com>"\n'
        '# smtp_url = "smtps://user:password@smtp.example.com:465"\n'
        '# webhook_listen = "127.0.0.1:8470"\n'
        f"{EXTRA.get(template, '')}"
        "\n[approval_rules]\n"
        f"{rules}\n"
    )


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    config: Path = args.config
    if config.exists() and not args.force:
        print(f"opcore: {config} exists; use --force to replace it (it is not merged).")
        return 2
    timezone = args.timezone or settings.timezone
    load_settings(timezone=timezone)  # a bad zone fails here (ConfigError), before any write
    template = read_template(BUILTIN_DIR / f"{args.template}.toml")
    flows_dir = settings.flows_dir
    flows_dir.mkdir(parents=True, exist_ok=True)
    copy = flows_dir / f"{template.name}.toml"
    if not copy.exists():
        shutil.copyfile(BUILTIN_DIR / f"{template.name}.toml", copy)
    config.write_text(
        render_config(template.name, timezone=timezone, data_dir=settings.data_dir),
        encoding="utf-8",
    )
    steps = " \u2192 ".join(s.name for s in template.steps)
    print(f"Workspace ready: {config} (flow {template.name}: {steps}).")
    print(f"Edit the flow in {copy}; then `make run` and try: {EXAMPLES[template.name]}")
    return 0


EXAMPLES = {
    "consultant": "/proposal Jane Doe <jane@acme.example> website audit: 3 pages review; price 2400 EUR; 2 weeks",
    "micro-saas": "/triage bob@client.example: the export fails with a 500 error, we are blocked! then /backlog",
    "content": "/remember Shipped the new onboarding checklist; first users finish setup twice as fast",
}
