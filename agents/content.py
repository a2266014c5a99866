"""The content step: on the content flow's schedule, notes and finished work become a post.

What goes in: the memories stored since the previous scheduled slot of kind ``note``,
``deliverable`` or ``case_study`` that belong to no contact (what you noted about a client
stays private), and the releases the release agent posted on the blackboard
(``release_published``). Nothing new: no post, and the flow ends quietly. Otherwise a draft
(the model's, or the offline template's without one) is proposed as ``documents.publish_post``
(the Atom feed and a Markdown page) and, when an outgoing webhook is configured for posts,
``webhook.post``; each waits for approval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from agents import board
from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.flow_input import FlowJobInput
from agents.providers.base import ChatMessage, ModelRequest
from agents.providers.offline import register_offline_task
from store import business
from store.log import utcnow

DRAFT_TASK = "content.post"
KINDS = ("note", "deliverable", "case_study")
MAX_ITEMS = 20


class PostDraft(BaseModel):
    model_config = ConfigDict(frozen=True)
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(min_length=1, max_length=500)
    body: str = Field(min_length=1, max_length=20_000)


class PostOutput(BaseModel):
    items: int
    title: str = ""
    webhook: bool = False
    offline: bool = False


def _first_sentence(text: str, limit: int = 280) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"


def offline_post(facts: Mapping[str, str]) -> str:
    """A post without a model: the period's items as a list under a plain introduction."""
    items = [line for line in facts["items"].split("\n") if line]
    title = f"Notes from the week of {facts['week']}"
    body = "\n".join(
        [
            f"Here is what happened since {facts['since']}:",
            "",
            *(f"- {item}" for item in items),
            "",
            f"\u2014 {facts['author']}" if facts.get("author") else "",
        ]
    ).strip()
    summary = _first_sentence(f"{len(items)} update(s): " + "; ".join(items), 400)
    return PostDraft(title=title, summary=summary, body=body).model_dump_json()


register_offline_task(DRAFT_TASK, offline_post)

SYSTEM_PROMPT = (
    "You write a short blog post for a solo business owner from their own notes of the "
    "period (a JSON document: the items, the dates, the author). Plain, friendly, first "
    "person; one short introduction, then the items as paragraphs or a list. Use only what "
    "the items say: no client names, no prices, no email addresses, no invented results or "
    "links. Answer with a JSON object with the keys 'title', 'summary' (one sentence) and "
    "'body' (Markdown) only."
)


class PostDraftAgent(Agent[FlowJobInput, PostOutput]):
    name = "post_draft"
    description = "Drafts a post from the period's notes and releases, to publish on approval."
    capabilities = frozenset(
        {
            Capability("documents", "publish_post", "write"),
            Capability("webhook", "post", "write"),
        }
    )
    input_model = FlowJobInput
    output_model = PostOutput
    model_tier = "draft"
    budget = AgentBudget(per_job_usd=0.05)

    def __init__(self, *, webhook_target: str = "", zone: ZoneInfo | None = None) -> None:
        self._target = webhook_target  # a configured outgoing webhook's name; "": none
        self._zone = zone or ZoneInfo("UTC")

    def run(self, ctx: AgentContext, payload: FlowJobInput) -> PostOutput:
        flow = payload.flow
        slot = _moment(flow.input.get("slot")) or utcnow()
        period = timedelta(days=int(flow.input.get("period_days") or 7))
        since = slot - period
        items = ctx.step("items", lambda: {"items": self._items(since)})["items"]
        if not items:
            return PostOutput(items=0)
        facts = {
            "items": "\n".join(items),
            "since": f"{since.astimezone(self._zone):%A %d %B}",
            "week": f"{slot.astimezone(self._zone):%d %B %Y}",
            "author": ctx.operator_name,
        }
        draft = ctx.step("draft", lambda: self._draft(ctx, facts))
        trusted = {"items": items}
        ctx.propose(
            "documents",
            "publish_post",
            {"title": draft["title"], "summary": draft["summary"], "body": draft["body"]},
            summary=f"Publish the post \u201c{draft['title']}\u201d ({len(items)} item(s))",
            trusted=trusted,
        )
        if self._target:
            ctx.propose(
                "webhook",
                "post",
                {
                    "target": self._target,
                    "event": "post.published",
                    "payload": {
                        "title": draft["title"],
                        "summary": draft["summary"],
                        "body": draft["body"],
                    },
                },
                summary=f"Send \u201c{draft['title']}\u201d to the {self._target} webhook",
                trusted={**trusted, **draft},
            )
        return PostOutput(
            items=len(items),
            title=draft["title"],
            webhook=bool(self._target),
            offline=bool(draft["offline"]),
        )

    @staticmethod
    def _items(since: datetime) -> list[str]:
        notes = [
            _first_sentence(m.text)
            for m in business.memories_since(since, kinds=KINDS, limit=MAX_ITEMS)
            if m.contact_id is None
        ]
        releases = [
            f"Released {p.subject}: {p.text.split(': ', 1)[-1]}"
            for p in business.board(topics=(board.RELEASE_PUBLISHED,), limit=MAX_ITEMS)
            if p.posted_at > since
        ]
        return list(dict.fromkeys([*notes, *reversed(releases)]))[:MAX_ITEMS]

    @staticmethod
    def _draft(ctx: AgentContext, facts: dict[str, str]) -> dict[str, Any]:
        draft, response = ctx.structured(
            ModelRequest(
                task=DRAFT_TASK,
                messages=(
                    ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", json.dumps({"period": facts}, ensure_ascii=False)),
                ),
                facts=facts,
                json_schema=PostDraft.model_json_schema(),
                schema_name="post_draft",
                task_class="draft",
            ),
            PostDraft,
        )
        return {**draft.model_dump(), "offline": response.offline}

    def summarize(self, payload: FlowJobInput, output: PostOutput) -> str:
        if not output.items:
            return "Nothing new in memory since the last post: no post this time."
        note = " (offline template draft)" if output.offline else ""
        return (
            f"Drafted \u201c{output.title}\u201d from {output.items} note(s) and release(s){note}; "
            "ready for your approval."
        )


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
