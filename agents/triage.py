"""Support triage: classify a customer's ticket and draft an acknowledgement to approve.

``/triage bob@client.example: The export gives a 500 error since this morning, we are blocked!``
The operator names the sender; the ticket is the customer's words, which are untrusted: they go
to the model as data, and anything the draft takes from them alone (a copy recipient, a link,
an amount) is highlighted in the approval.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents import board
from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.errors import AgentInputError
from agents.providers.base import ChatMessage, ModelRequest
from agents.providers.offline import register_offline_task
from agents.untrusted import DATA_RULE, clean, data_message
from connectors.email import is_sendable_address
from store import business
from store import events as ev

CLASSIFY_TASK = "triage.classify"
REPLY_TASK = "triage.reply"
USAGE = "/triage <customer email>: <their message>, e.g. /triage bob@client.example: the export fails with a 500 error"

Category = Literal["bug", "billing", "how_to", "feature_request", "other"]
Urgency = Literal["low", "normal", "high", "urgent"]

_SENDER = re.compile(r"^\s*<?([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>?\s*[:,-]?\s*")

# Offline classification: keyword cues, first match wins (ordered from most specific).
_CUES: tuple[tuple[Category, tuple[str, ...]], ...] = (
    ("billing", ("invoice", "refund", "charge", "charged", "payment", "billing", "price", "vat")),
    (
        "bug",
        (
            "error",
            "bug",
            "broken",
            "crash",
            "fails",
            "failed",
            "500",
            "doesn't work",
            "does not work",
            "not working",
            "exception",
        ),
    ),
    (
        "feature_request",
        ("feature", "would be nice", "could you add", "please add", "wish", "suggestion"),
    ),
    ("how_to", ("how do", "how can", "how to", "where do", "is it possible", "can i")),
)
_URGENT = (
    "urgent",
    "asap",
    "immediately",
    "blocked",
    "down",
    "outage",
    "cannot work",
    "production",
)
_HIGH = ("since this morning", "since yesterday", "customers", "deadline", "today")


class TriageInput(BaseModel):
    model_config = ConfigDict(frozen=True)
    sender: str = Field(min_length=3, max_length=320)
    ticket: str = Field(min_length=1, max_length=8000)


class Classification(BaseModel):
    model_config = ConfigDict(frozen=True)
    category: Category
    urgency: Urgency
    summary: str = Field(min_length=1, max_length=200)


class ReplyDraft(BaseModel):
    model_config = ConfigDict(frozen=True)
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20_000)


class TriageOutput(BaseModel):
    category: Category
    urgency: Urgency
    summary: str
    action_id: str
    board: str = ""
    """The blackboard topic posted (customer_blocked, bug_reported, feature_request), or ""."""
    board_ref: str = ""


def parse_triage(text: str) -> TriageInput:
    """``bob@client.example: their words`` -> sender and ticket. Pure; raises with a hint."""
    match = _SENDER.match(text)
    if match is None:
        raise AgentInputError(f"start with the customer's email address. usage: {USAGE}")
    sender, ticket = match.group(1), text[match.end() :].strip()
    if not is_sendable_address(sender):
        raise AgentInputError(f"{sender} does not look like an address I can reply to")
    if not ticket:
        raise AgentInputError(f"paste the customer's message after the address. usage: {USAGE}")
    if len(ticket) > 8000:
        raise AgentInputError("that ticket is longer than 8000 characters; shorten it")
    return TriageInput(sender=sender, ticket=ticket)


def classify_offline(ticket: str) -> Classification:
    lower = ticket.lower()
    category: Category = next(
        (cat for cat, cues in _CUES if any(c in lower for c in cues)), "other"
    )
    urgency: Urgency = (
        "urgent"
        if any(c in lower for c in _URGENT)
        else "high"
        if any(c in lower for c in _HIGH) or ticket.count("!") >= 2
        else "normal"
    )
    first = re.split(r"(?<=[.!?])\s", " ".join(ticket.split()), maxsplit=1)[0]
    summary = first if len(first) <= 120 else first[:119].rstrip() + "…"
    return Classification(category=category, urgency=urgency, summary=summary)


def _offline_classification(facts: Mapping[str, str]) -> str:
    return classify_offline(facts["ticket"]).model_dump_json()


_NEXT_STEP = {
    "bug": "I am looking into it now and will come back to you with what I find{when}.",
    "billing": "I will check the billing details and come back to you{when}.",
    "how_to": "I will send you the steps{when}.",
    "feature_request": "I have noted the request and will tell you whether and when it can be done.",
    "other": "I will come back to you{when}.",
}
_WHEN = {
    "urgent": " within the hour",
    "high": " today",
    "normal": " within one working day",
    "low": " this week",
}


def _offline_reply(facts: Mapping[str, str]) -> str:
    category = facts["category"]
    when = _WHEN.get(facts["urgency"], "")
    lines = [
        "Hello,",
        "",
        f"Thank you for your message about: {facts['summary']}",
        "",
        _NEXT_STEP.get(category, _NEXT_STEP["other"]).format(when=when),
    ]
    if category == "bug":
        lines += [
            "",
            "If you can, reply with the time it happened and a screenshot or the exact error "
            "message; it helps me find the cause faster.",
        ]
    lines += ["", "Best regards,"]
    if facts.get("operator"):
        lines.append(facts["operator"])
    subject = f"Re: {facts['summary']}"
    if len(subject) > 200:
        subject = subject[:199] + "…"
    return ReplyDraft(subject=subject, body="\n".join(lines)).model_dump_json()


register_offline_task(CLASSIFY_TASK, _offline_classification)
register_offline_task(REPLY_TASK, _offline_reply)

CLASSIFY_PROMPT = (
    "You triage support tickets for a solo business. Classify the ticket: category one of bug, "
    "billing, how_to, feature_request, other; urgency one of low, normal, high, urgent; and a "
    "one-line summary in your own words. Answer with a JSON object with the keys 'category', "
    "'urgency' and 'summary' only. " + DATA_RULE
)
REPLY_PROMPT = (
    "You draft a short acknowledgement of a support ticket for a solo business owner: thank the "
    "customer, restate the problem in one line, say what happens next and when, ask for the one "
    "detail that would help most. Promise nothing else; no prices, no links. Answer with a JSON "
    "object with the keys 'subject' and 'body' only. " + DATA_RULE
)


class TriageAgent(Agent[TriageInput, TriageOutput]):
    name = "triage"
    description = "Classifies a support ticket and drafts an acknowledgement to approve."
    capabilities = frozenset({Capability("email", "send_email", "write")})
    input_model = TriageInput
    output_model = TriageOutput
    model_tier = "classify"
    budget = AgentBudget(per_job_usd=0.05)
    untrusted_fields = frozenset({"ticket"})

    def run(self, ctx: AgentContext, payload: TriageInput) -> TriageOutput:
        contact = ctx.step("contact", lambda: self._contact(ctx, payload))
        ctx.contact_id = contact["contact_id"]
        found = ctx.step("classify", lambda: self._classify(ctx, payload))
        posted = ctx.step("board", lambda: self._post(ctx, payload, contact, found))
        draft = ctx.step("reply", lambda: self._reply(ctx, payload, found))
        proposal = ctx.propose(
            "email",
            "send_email",
            {"to": contact["email"], "subject": draft["subject"], "body": draft["body"]},
            summary=f"Send email to {contact['email']}: {draft['subject']}",
            contact_id=contact["contact_id"],
        )
        return TriageOutput(
            category=found["category"],
            urgency=found["urgency"],
            summary=found["summary"],
            action_id=proposal.action_id,
            board=posted["topic"],
            board_ref=posted["ref"],
        )

    @staticmethod
    def _post(
        ctx: AgentContext, payload: TriageInput, contact: dict[str, Any], found: dict[str, Any]
    ) -> dict[str, Any]:
        """Post what the ticket tells the rest of the business on the blackboard."""
        topic = board_topic(found["category"], found["urgency"], payload.ticket)
        if not topic:
            return {"topic": "", "ref": ""}
        post_id = uuid.uuid5(uuid.NAMESPACE_URL, f"opcore:board:{ctx.job_id}").hex
        who = contact["email"]
        text = {
            board.CUSTOMER_BLOCKED: f"{who} is blocked by a bug: {found['summary']}",
            board.BUG_REPORTED: f"{who} reports a bug: {found['summary']}",
            board.FEATURE_REQUEST: f"{who} asks for: {found['summary']}",
        }[topic]
        ctx.record(
            ev.BOARD_STREAM,
            ev.BoardPosted(
                post_id=post_id,
                topic=topic,
                subject=who,
                text=text,
                data={
                    "contact_id": contact["contact_id"],
                    "summary": found["summary"],
                    "urgency": found["urgency"],
                    "paying": business.is_paying(contact["contact_id"]),
                },
                by=f"agent:{TriageAgent.name}",
                job_id=ctx.job_id,
            ),
            key=f"board:{ctx.job_id}",
        )
        return {"topic": topic, "ref": board.ref_of(post_id)}

    @staticmethod
    def _contact(ctx: AgentContext, payload: TriageInput) -> dict[str, Any]:
        local = payload.sender.split("@", 1)[0]
        name = " ".join(p.capitalize() for p in re.split(r"[._-]+", local) if p) or local
        contact, created = ctx.find_or_create_contact(name=name, email=payload.sender, company="")
        return {"contact_id": contact.contact_id, "email": contact.email, "created": created}

    @staticmethod
    def _classify(ctx: AgentContext, payload: TriageInput) -> dict[str, Any]:
        found, _ = ctx.structured(
            ModelRequest(
                task=CLASSIFY_TASK,
                messages=(
                    ChatMessage("system", CLASSIFY_PROMPT),
                    data_message(untrusted={"ticket": payload.ticket}),
                ),
                facts={"ticket": clean(payload.ticket)},
                json_schema=Classification.model_json_schema(),
                schema_name="ticket_classification",
                task_class="classify",
            ),
            Classification,
        )
        return found.model_dump()

    @staticmethod
    def _reply(ctx: AgentContext, payload: TriageInput, found: dict[str, Any]) -> dict[str, Any]:
        facts = {
            "category": str(found["category"]),
            "urgency": str(found["urgency"]),
            "summary": str(found["summary"]),
            "operator": ctx.operator_name,
        }
        draft, response = ctx.structured(
            ModelRequest(
                task=REPLY_TASK,
                messages=(
                    ChatMessage("system", REPLY_PROMPT),
                    data_message(
                        trusted={"classification": facts, "signature": ctx.operator_name},
                        untrusted={"ticket": payload.ticket},
                    ),
                ),
                facts=facts,
                json_schema=ReplyDraft.model_json_schema(),
                schema_name="ticket_reply",
                task_class="draft",
            ),
            ReplyDraft,
        )
        return {"subject": draft.subject, "body": draft.body, "offline": response.offline}

    def summarize(self, payload: TriageInput, output: TriageOutput) -> str:
        posted = (
            f" On the board as {output.board.replace('_', ' ')} [{output.board_ref}]."
            if output.board
            else ""
        )
        return (
            f"Ticket from {payload.sender}: {output.category.replace('_', ' ')}, "
            f"{output.urgency}. {output.summary} Drafted a reply.{posted}"
        )


_BLOCKED = ("blocked", "cannot work", "can't work", "can not work", "down", "outage", "stuck")


def board_topic(category: str, urgency: str, ticket: str) -> str:
    """The blackboard topic a classified ticket is posted under, "" for none. Pure."""
    if category == "feature_request":
        return board.FEATURE_REQUEST
    if category != "bug":
        return ""
    lower = ticket.lower()
    if urgency == "urgent" or (urgency == "high" and any(c in lower for c in _BLOCKED)):
        return board.CUSTOMER_BLOCKED
    return board.BUG_REPORTED
