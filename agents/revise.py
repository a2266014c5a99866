"""Edit by reply: the operator corrects a pending draft in plain words; it is revised and asked
again.

The operator presses Edit on a pending email and writes what should change ("shorter, and
offer Tuesday or Wednesday for the call"). A ``revise`` job sends the draft and the
correction to the model, proposes the revised email to the same recipients, and supersedes
the draft it replaces (if that one is still pending: a draft approved in the meantime stands).
Without a model, the offline provider applies explicit edits only (see :data:`OFFLINE_HELP`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.errors import AgentInputError
from agents.providers.base import ChatMessage, ModelRequest
from agents.providers.offline import register_offline_task
from store import queries
from store.errors import NotFoundError

REVISE_TASK = "email.revise"
OFFLINE_HELP = (
    'without a model I apply explicit edits only: `subject: New subject`, `replace "old" with '
    '"new"`, `add: a sentence to add`, `remove: text to remove` (one per line); set '
    "OPCORE_LLM_BASE_URL for corrections in free words"
)

SYSTEM_PROMPT = (
    "You revise an email draft for a solo consultant, following the consultant's correction "
    "exactly and changing nothing else. Keep the voice, the greeting and the signature. Do not "
    "add recipients, prices, dates or links the consultant did not give. Answer with a JSON "
    "object with the keys 'subject' and 'body' only."
)


class RevisionInput(BaseModel):
    model_config = ConfigDict(frozen=True)
    action_id: str = Field(min_length=1, max_length=64)
    correction: str = Field(min_length=1, max_length=4000)


class RevisedEmail(BaseModel):
    model_config = ConfigDict(frozen=True)
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=100_000)


class RevisionOutput(BaseModel):
    action_id: str
    revises: str
    subject: str


_SUBJECT = re.compile(r"^\s*subject\s*:\s*(.+)$", re.IGNORECASE)
_REPLACE = re.compile(
    r"""^\s*replace\s+["“'](.+?)["”']\s+(?:with|by)\s+["“'](.*?)["”']\s*\.?$""", re.IGNORECASE
)
_ADD = re.compile(r"^\s*add\s*:\s*(.+)$", re.IGNORECASE)
_REMOVE = re.compile(r"^\s*(?:remove|delete)\s*:\s*(.+)$", re.IGNORECASE)
_SIGN_OFF = re.compile(
    r"^(best regards|kind regards|regards|best|thanks|thank you|cheers)[,!.]?\s*$", re.IGNORECASE
)


def apply_edits(subject: str, body: str, correction: str) -> tuple[str, str, list[str]]:
    """Apply explicit edits, one per line. Returns (subject, body, lines not understood)."""
    lines = body.split("\n")
    unknown: list[str] = []
    for raw in correction.splitlines():
        if not raw.strip():
            continue
        if m := _SUBJECT.match(raw):
            subject = m.group(1).strip()
        elif m := _REPLACE.match(raw):
            old, new = m.group(1), m.group(2)
            if old not in "\n".join(lines) and old not in subject:
                unknown.append(f"{raw.strip()} (the draft has no {old!r})")
            lines = "\n".join(lines).replace(old, new).split("\n")
            subject = subject.replace(old, new)
        elif m := _ADD.match(raw):
            at = next((i for i, line in enumerate(lines) if _SIGN_OFF.match(line)), len(lines))
            lines[at:at] = [m.group(1).strip(), ""]
        elif m := _REMOVE.match(raw):
            gone = m.group(1).strip()
            text = "\n".join(lines)
            if gone not in text:
                unknown.append(f"{raw.strip()} (the draft has no {gone!r})")
            lines = re.sub(r"[ \t]*" + re.escape(gone) + r"[ \t]*", " ", text).split("\n")
            lines = [line.rstrip() for line in lines]
        else:
            unknown.append(raw.strip())
    return subject, "\n".join(lines), unknown


def offline_revision(facts: Mapping[str, str]) -> str:
    subject, body, unknown = apply_edits(facts["subject"], facts["body"], facts["correction"])
    if unknown:
        # Unchanged on purpose: the agent reports that the correction was not applied.
        return RevisedEmail(subject=facts["subject"], body=facts["body"]).model_dump_json()
    return RevisedEmail(subject=subject, body=body).model_dump_json()


register_offline_task(REVISE_TASK, offline_revision)


class ReviseAgent(Agent[RevisionInput, RevisionOutput]):
    name = "revise"
    description = "Revises a pending email draft with the operator's correction and asks again."
    capabilities = frozenset({Capability("email", "send_email", "write")})
    input_model = RevisionInput
    output_model = RevisionOutput
    model_tier = "draft"
    budget = AgentBudget(per_job_usd=0.05)

    def run(self, ctx: AgentContext, payload: RevisionInput) -> RevisionOutput:
        try:
            original = queries.get_action(payload.action_id)
        except NotFoundError as exc:
            raise AgentInputError(f"there is no draft {payload.action_id!r} to revise") from exc
        if (original.connector, original.action) != ("email", "send_email"):
            raise AgentInputError(
                f"only email drafts can be revised, not {original.connector}.{original.action}"
            )
        ctx.contact_id = original.contact_id
        revised = ctx.step("revise", lambda: self._revise(ctx, original.params, payload))
        proposal = ctx.propose(
            "email",
            "send_email",
            {**original.params, "subject": revised["subject"], "body": revised["body"]},
            summary=f"Send email to {original.params.get('to')}: {revised['subject']}",
            contact_id=original.contact_id,
            revises=original.action_id,
            trusted={"correction": payload.correction, "draft": original.params},
            inherited_flags=original.flags,
        )
        return RevisionOutput(
            action_id=proposal.action_id, revises=original.action_id, subject=revised["subject"]
        )

    @staticmethod
    def _revise(
        ctx: AgentContext, params: Mapping[str, Any], payload: RevisionInput
    ) -> dict[str, Any]:
        facts = {
            "subject": str(params.get("subject", "")),
            "body": str(params.get("body", "")),
            "correction": payload.correction,
        }
        draft, response = ctx.structured(
            ModelRequest(
                task=REVISE_TASK,
                messages=(
                    ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage(
                        "user",
                        json.dumps(
                            {
                                "draft": {"subject": facts["subject"], "body": facts["body"]},
                                "correction": payload.correction,
                            },
                            ensure_ascii=False,
                        ),
                    ),
                ),
                facts=facts,
                json_schema=RevisedEmail.model_json_schema(),
                schema_name="revised_email",
            ),
            RevisedEmail,
        )
        if draft.subject == facts["subject"] and draft.body.strip() == facts["body"].strip():
            hint = f"; {OFFLINE_HELP}" if response.offline else ""
            raise AgentInputError(f"the correction changed nothing in the draft{hint}")
        return {"subject": draft.subject, "body": draft.body, "offline": response.offline}

    def summarize(self, payload: RevisionInput, output: RevisionOutput) -> str:
        return f"Revised the draft: {output.subject}"
