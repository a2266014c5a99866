"""The micro-SaaS release step: a GitHub release becomes a changelog entry, a webhook post and,
for every customer waiting on a fix or a feature in it, a short note; each to approve.

The changes are the commits pushed to the repository's default branch since its previous
release (GitHub ``push`` deliveries the webhook endpoint recorded), else the lines of the
release's own notes. They are grouped like ``/release`` does (:func:`agents.release_notes.
group_changes`); the changelog section is built from them without the model, so it cannot
drop or invent a change. With ``release_email_to`` set, the customer email is drafted the way
``/release`` drafts it.

Blackboard: the open ``customer_blocked`` / ``bug_reported`` / ``feature_request`` posts that a
fix or a feature addresses (their ``T-…`` reference in the commit, or two significant words in
common) get an email to the customer concerned, and a ``bug_fixed`` / ``feature_shipped`` post
closes them; a ``release_published`` post tells the content agent.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from agents import board
from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.errors import AgentInputError
from agents.flow_input import FlowContext, FlowJobInput
from agents.release_notes import ReleaseGroups, ReleaseInput, ReleaseNotesAgent, group_changes
from store import events as ev
from store.business import BoardPost
from store.log import utcnow

MAX_CHANGES = 60
# "* feat: dark mode by @ana in https://github.com/o/r/pull/12" (GitHub's generated notes)
_GENERATED = re.compile(r"\s+by\s+@[\w-]+(?:\[bot\])?\s+in\s+\S+\s*$")
_SKIP_LINE = re.compile(r"^(#+\s|\*\*Full Changelog\*\*|Full Changelog|<!--)", re.I)


def release_of(flow: FlowContext) -> dict[str, str]:
    """Version, repository, link and notes of the release that started the flow."""
    payload = flow.input.get("payload")
    release = payload.get("release") if isinstance(payload, Mapping) else None
    repository = payload.get("repository") if isinstance(payload, Mapping) else None
    if not isinstance(release, Mapping) or not release.get("tag_name"):
        raise AgentInputError(
            f"flow {flow.flow_id[:8]}: the delivery is not a GitHub release (no release.tag_name)"
        )
    repo = repository if isinstance(repository, Mapping) else {}
    return {
        "version": str(release["tag_name"])[:60],
        "name": str(release.get("name") or ""),
        "url": str(release.get("html_url") or ""),
        "notes": str(release.get("body") or ""),
        "repository": str(repo.get("full_name") or ""),
        "branch": str(repo.get("default_branch") or "main"),
        "delivery": str(flow.input.get("delivery_id") or ""),
    }


def notes_lines(notes: str) -> list[str]:
    """Change lines from a release's own notes: bullets, headings and the footer dropped."""
    lines = []
    for raw in notes.splitlines():
        line = raw.strip()
        if not line or _SKIP_LINE.match(line):
            continue
        line = _GENERATED.sub("", re.sub(r"^(?:[-*•]|\d+[.)])\s+", "", line)).strip(" .")
        if line:
            lines.append(line)
    return lines


def pushed_commits(
    deliveries: list[ev.RecordedEvent], *, repository: str, branch: str, until: str
) -> list[str]:
    """First lines of the commits pushed to ``branch`` of ``repository`` after the previous
    published release and before the delivery ``until`` (this release). Pure."""
    commits: dict[str, str] = {}
    for event in deliveries:
        data = event.data
        if not isinstance(data, ev.WebhookReceived):
            continue
        repo = data.payload.get("repository")
        if not isinstance(repo, Mapping) or repo.get("full_name") != repository:
            continue
        if data.delivery_id == until:
            break
        if data.event_type == "release" and data.payload.get("action") == "published":
            commits.clear()  # an earlier release: its commits are not news
        elif data.event_type == "push" and data.payload.get("ref") == f"refs/heads/{branch}":
            for commit in data.payload.get("commits") or []:
                if isinstance(commit, Mapping) and commit.get("message"):
                    first = str(commit["message"]).strip().splitlines()[0].strip()
                    commits.setdefault(str(commit.get("id") or first), first)
    return list(commits.values())


def changelog_body(groups: ReleaseGroups, url: str) -> str:
    """The changelog section's Markdown. Pure."""
    lines: list[str] = []
    if groups.breaking:
        lines += ["**Breaking:** check the changes marked below before you update.", ""]
    for heading, items in (
        ("New", groups.new),
        ("Fixed", groups.fixed),
        ("Improved", groups.improved),
    ):
        if items:
            lines += [f"### {heading}", *(f"- {item}" for item in items), ""]
    if url:
        lines.append(f"[Release page]({url})")
    return "\n".join(lines).strip()


class ReleaseFlowOutput(BaseModel):
    version: str
    changes: int
    customer_facing: int
    source: str  # "commits" or "release notes"
    notified: int
    webhook: bool
    email: bool


class ReleasePublishAgent(Agent[FlowJobInput, ReleaseFlowOutput]):
    name = "release_publish"
    description = (
        "Turns a GitHub release into a changelog entry, a webhook post and notes to the "
        "customers it helps (each to approve)."
    )
    capabilities = frozenset(
        {
            Capability("documents", "append_changelog", "write"),
            Capability("webhook", "post", "write"),
            Capability("email", "send_email", "write"),
        }
    )
    input_model = FlowJobInput
    output_model = ReleaseFlowOutput
    model_tier = "draft"
    budget = AgentBudget(per_job_usd=0.05)

    def __init__(
        self,
        *,
        webhook_target: str = "",  # a configured outgoing webhook's name; "": none
        email_to: str = "",
        zone: ZoneInfo | None = None,
    ) -> None:
        self._target = webhook_target
        self._email_to = email_to
        self._zone = zone or ZoneInfo("UTC")

    def run(self, ctx: AgentContext, payload: FlowJobInput) -> ReleaseFlowOutput:
        release = release_of(payload.flow)
        found = ctx.step("changes", lambda: self._changes(ctx, payload.flow, release))
        changes: list[str] = found["changes"][:MAX_CHANGES]
        groups = group_changes(changes)
        if not groups.customer_facing:
            return ReleaseFlowOutput(
                version=release["version"],
                changes=len(changes),
                customer_facing=0,
                source=found["source"],
                notified=0,
                webhook=False,
                email=False,
            )
        trusted = {"changes": changes, "release": release}
        day = ctx.step("date", lambda: {"date": utcnow().astimezone(self._zone).date().isoformat()})
        ctx.propose(
            "documents",
            "append_changelog",
            {
                "version": release["version"],
                "date": date.fromisoformat(day["date"]),
                "body": changelog_body(groups, release["url"]),
            },
            summary=f"Add {release['version']} to CHANGELOG.md ({_counts(groups)})",
            trusted=trusted,
        )
        webhook = bool(self._target)
        if webhook:
            ctx.propose(
                "webhook",
                "post",
                {
                    "target": self._target,
                    "event": "release.published",
                    "payload": {
                        "version": release["version"],
                        "repository": release["repository"],
                        "url": release["url"],
                        "new": groups.new,
                        "fixed": groups.fixed,
                        "improved": groups.improved,
                        "breaking": groups.breaking,
                    },
                },
                summary=f"Announce {release['version']} to the {self._target} webhook",
                trusted=trusted,
            )
        email = bool(self._email_to)
        if email:
            notes = ReleaseInput(
                version=release["version"], to=self._email_to, changes=changes, text=""
            )
            draft = ctx.step("draft", lambda: ReleaseNotesAgent._draft(ctx, notes, groups))
            ctx.propose(
                "email",
                "send_email",
                {"to": self._email_to, "subject": draft["subject"], "body": draft["body"]},
                summary=f"Send release notes {release['version']} to {self._email_to}",
                trusted={**trusted, "to": self._email_to},
            )
        notified = self._close_posts(ctx, release, groups, trusted)
        ctx.record(
            ev.BOARD_STREAM,
            ev.BoardPosted(
                post_id=_post_id(ctx.job_id, "release"),
                topic=board.RELEASE_PUBLISHED,
                subject=release["version"],
                text=f"{release['repository'] or 'the product'} {release['version']}: "
                f"{_counts(groups)}",
                data={"version": release["version"], "changelog": changelog_body(groups, "")},
                by=f"agent:{self.name}",
                job_id=ctx.job_id,
            ),
            key=f"board:{ctx.job_id}:release",
        )
        return ReleaseFlowOutput(
            version=release["version"],
            changes=len(changes),
            customer_facing=len(groups.customer_facing),
            source=found["source"],
            notified=notified,
            webhook=webhook,
            email=email,
        )

    @staticmethod
    def _changes(ctx: AgentContext, flow: FlowContext, release: dict[str, str]) -> dict[str, Any]:
        source = str(flow.input.get("source") or "github")
        commits = pushed_commits(
            ctx.stream(f"webhook-{source}"),
            repository=release["repository"],
            branch=release["branch"],
            until=release["delivery"],
        )
        if commits:
            return {"changes": commits, "source": "commits"}
        lines = notes_lines(release["notes"])
        if not lines:
            raise AgentInputError(
                f"release {release['version']}: no commits were pushed since the last release "
                "and the release has no notes; nothing to write a changelog from"
            )
        return {"changes": lines, "source": "release notes"}

    def _close_posts(
        self,
        ctx: AgentContext,
        release: dict[str, str],
        groups: ReleaseGroups,
        trusted: dict[str, Any],
    ) -> int:
        """Tell each customer whose blocking bug or request this release addresses, and close
        the post on the board."""
        pairs: list[tuple[BoardPost, str, str]] = []
        for post in board.open_posts(board.BUGS):
            fix = next((f for f in groups.fixed if board.related(f, post)), None)
            if fix is not None:
                pairs.append((post, fix, board.BUG_FIXED))
        for post in board.open_posts((board.FEATURE_REQUEST,)):
            feature = next((f for f in groups.new if board.related(f, post)), None)
            if feature is not None:
                pairs.append((post, feature, board.FEATURE_SHIPPED))
        for post, change, topic in pairs:
            contact_id = post.data.get("contact_id")
            what = "fixed" if topic == board.BUG_FIXED else "now available"
            if isinstance(contact_id, str) and post.subject:
                ctx.propose(
                    "email",
                    "send_email",
                    {
                        "to": post.subject,
                        "subject": f"{release['version']}: {change}",
                        "body": _customer_note(post, change, what, release, ctx.operator_name),
                    },
                    summary=f"Tell {post.subject} that {post.data.get('summary') or 'their ticket'} is {what} in {release['version']}",
                    contact_id=contact_id,
                    trusted=trusted,
                )
            ctx.record(
                ev.BOARD_STREAM,
                ev.BoardPosted(
                    post_id=_post_id(ctx.job_id, post.post_id),
                    topic=topic,
                    subject=post.subject,
                    text=f"{what.capitalize()} in {release['version']}: {change}",
                    data={"resolves": post.post_id, "version": release["version"]},
                    by=f"agent:{self.name}",
                    job_id=ctx.job_id,
                ),
                key=f"board:{ctx.job_id}:{post.post_id}",
            )
        return len(pairs)

    def summarize(self, payload: FlowJobInput, output: ReleaseFlowOutput) -> str:
        if not output.customer_facing:
            return (
                f"Release {output.version}: {output.changes} change(s), all internal; nothing "
                "to publish."
            )
        parts = ["the changelog entry"]
        if output.webhook:
            parts.append("the webhook post")
        if output.email:
            parts.append("the customer email")
        if output.notified:
            parts.append(f"{output.notified} note(s) to customers waiting on it")
        return (
            f"Release {output.version}: {output.customer_facing} customer-facing change(s) from "
            f"the {output.source}. Ready for your approval: {', '.join(parts)}."
        )


def _post_id(job_id: str, what: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"opcore:board:{job_id}:{what}").hex


def _counts(groups: ReleaseGroups) -> str:
    counts = [
        f"{len(items)} {label}"
        for items, label in (
            (groups.new, "new"),
            (groups.fixed, "fixed"),
            (groups.improved, "improved"),
        )
        if items
    ]
    return ", ".join(counts) or "no customer-facing change"


def _customer_note(
    post: BoardPost, change: str, what: str, release: dict[str, str], operator: str
) -> str:
    lines = [
        "Hello,",
        "",
        f"You told us about this: {post.data.get('summary') or post.text}",
        "",
        f"It is {what} in {release['version']}: {change}.",
    ]
    if release["url"]:
        lines.append(f"Details: {release['url']}")
    lines += ["", "Thank you for reporting it; reply if anything is still not right.", ""]
    lines += ["Best regards,", operator] if operator else ["Best regards,"]
    return "\n".join(lines)
