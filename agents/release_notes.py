"""Release notes: group a release's changes for customers and draft the email to approve.

``/release v1.4.0 to customers@list.example: fix: export 500 on large files; feat: dark mode;
chore: bump deps`` groups the changes by their conventional-commit prefix (New, Fixed,
Improved; chore, refactor, test, ci, build and style are internal and left out), drafts the
notes and proposes sending them to the address the operator gave. The grouping is a pure
function (:func:`group_changes`); the model only writes the prose around the changes, and a
draft that drops a change, renames the version or leaks an internal change is replaced by the
deterministic template draft.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.errors import AgentInputError
from agents.providers.base import ChatMessage, ModelRequest
from agents.providers.offline import register_offline_task
from connectors.email import is_sendable_address

DRAFT_TASK = "release_notes.draft"
USAGE = (
    "/release <version> to <email>: <change>; <change>; … (or one change a line; prefixes "
    "feat/fix/perf/docs/chore/refactor are recognised), e.g. /release v1.4.0 to "
    "customers@list.example: fix: export 500 on large files; feat: dark mode; chore: bump deps"
)
MAX_CHANGES = 60

_VERSION = re.compile(r"^\s*(?P<version>[vV]?\d+(?:\.\d+){0,3}(?:[-+][0-9A-Za-z][0-9A-Za-z.-]*)?)")
_RECIPIENT = re.compile(
    r"\s+(?:(?:to|for)\s+)?<?(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>?"
    r"\s*:\s*",
    re.IGNORECASE,
)
_CONVENTIONAL = re.compile(
    r"^(?P<type>[A-Za-z]+)(?:\((?P<scope>[^)]*)\))?(?P<breaking>!)?\s*:\s*(?P<description>.*)$"
)
_BULLET = re.compile(r"^(?:[-*•]|\d+[.)])\s+")
NEW_TYPES = frozenset({"feat", "feature"})
FIXED_TYPES = frozenset({"fix", "bugfix", "hotfix"})
IMPROVED_TYPES = frozenset({"perf", "docs", "doc", "improvement", "improve"})
INTERNAL_TYPES = frozenset({"chore", "refactor", "test", "tests", "ci", "build", "style"})
BREAKING = " (breaking change)"


class ReleaseGroups(BaseModel):
    """A release's changes as customers see them; ``omitted`` are the internal ones."""

    model_config = ConfigDict(frozen=True)
    new: list[str] = Field(default_factory=list)
    fixed: list[str] = Field(default_factory=list)
    improved: list[str] = Field(default_factory=list)
    omitted: list[str] = Field(default_factory=list)
    breaking: bool = False

    @property
    def customer_facing(self) -> list[str]:
        return [*self.new, *self.fixed, *self.improved]


class ReleaseInput(BaseModel):
    model_config = ConfigDict(frozen=True)
    version: str = Field(min_length=1, max_length=60)
    to: str = Field(min_length=3, max_length=320)
    changes: list[str] = Field(min_length=1, max_length=MAX_CHANGES)
    text: str = Field(max_length=8000)


class ReleaseDraft(BaseModel):
    model_config = ConfigDict(frozen=True)
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20_000)


class ReleaseOutput(BaseModel):
    action_id: str
    version: str
    to: str
    subject: str
    new: int
    fixed: int
    improved: int
    omitted: int
    offline: bool
    replaced_model_draft: str = ""
    """Why the model's draft was replaced by the template draft; ``""`` if it was not."""


def split_changes(text: str) -> list[str]:
    """Change lines separated by ``;`` or line breaks, list bullets and blanks dropped. Pure."""
    lines = (_BULLET.sub("", " ".join(part.split())) for part in re.split(r"[;\n]", text))
    return [line.strip(" .") for line in lines if line.strip(" .")]


def group_changes(changes: Iterable[str]) -> ReleaseGroups:
    """Group change lines by conventional-commit type. Pure and deterministic.

    ``feat`` -> New, ``fix`` -> Fixed, ``perf``/``docs`` -> Improved; ``chore``, ``refactor``,
    ``test``, ``ci``, ``build`` and ``style`` are internal (``omitted``). A line without a known
    prefix is kept whole under Improved. A ``!`` after the type marks a breaking change. The
    scope in ``fix(api): …`` is dropped; the description is capitalised; duplicates go."""
    groups: dict[str, list[str]] = {"new": [], "fixed": [], "improved": [], "omitted": []}
    breaking = False
    for line in changes:
        line = " ".join(line.split()).strip(" .")
        if not line:
            continue
        match = _CONVENTIONAL.match(line)
        kind = match.group("type").lower() if match else ""
        if match is None or kind not in NEW_TYPES | FIXED_TYPES | IMPROVED_TYPES | INTERNAL_TYPES:
            group, description, is_breaking = "improved", line, False
        else:
            description = match.group("description").strip(" .")
            is_breaking = bool(match.group("breaking"))
            group = (
                "new"
                if kind in NEW_TYPES
                else "fixed"
                if kind in FIXED_TYPES
                else "improved"
                if kind in IMPROVED_TYPES
                else "omitted"
            )
        if not description:
            continue
        entry = description[:1].upper() + description[1:]
        if is_breaking and group != "omitted":
            entry += BREAKING
            breaking = True
        if entry not in groups[group]:
            groups[group].append(entry)
    return ReleaseGroups(**groups, breaking=breaking)


def parse_release(text: str) -> ReleaseInput:
    """``v1.4.0 to customers@list.example: fix: …; feat: …`` -> version, recipient, change
    lines. Pure; raises with a usage hint on anything it cannot read."""
    text = text.strip()
    if not text:
        raise AgentInputError(f"usage: {USAGE}")
    if len(text) > 8000:
        raise AgentInputError("those release notes are longer than 8000 characters; shorten them")
    version = _VERSION.match(text)
    if version is None:
        raise AgentInputError(f"start with the version, e.g. v1.4.0. usage: {USAGE}")
    recipient = _RECIPIENT.match(text, version.end())
    if recipient is None:
        raise AgentInputError(
            f"after the version, give the address the notes go to and a ':', "
            f"e.g. v1.4.0 to customers@list.example: … usage: {USAGE}"
        )
    email = recipient.group("email")
    if not is_sendable_address(email):
        raise AgentInputError(f"{email} does not look like an address I can send to")
    changes = split_changes(text[recipient.end() :])
    if not changes:
        raise AgentInputError(f"list the changes after the ':'. usage: {USAGE}")
    if len(changes) > MAX_CHANGES:
        raise AgentInputError(f"at most {MAX_CHANGES} changes, please")
    if not group_changes(changes).customer_facing:
        raise AgentInputError(
            "every change is internal (chore, refactor, test, ci, build, style): there is "
            "nothing to tell customers. Add a feat:, fix: or perf: change."
        )
    try:
        return ReleaseInput(version=version.group("version"), to=email, changes=changes, text=text)
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise AgentInputError(
            f"I could not read those release notes ({problems}). usage: {USAGE}"
        ) from exc


def subject_for(version: str) -> str:
    return f"What's new in {version}"


_SECTIONS = (("new", "New"), ("fixed", "Fixed"), ("improved", "Improved"))


def offline_draft(facts: Mapping[str, str]) -> str:
    """Release notes without a model: the grouped changes under New, Fixed, Improved."""
    lines = ["Hello,", "", f"Version {facts['version']} is out. Here is what changed:"]
    if facts.get("breaking"):
        lines += [
            "",
            "Please note: this release includes a breaking change (marked below); check it "
            "before you update.",
        ]
    for key, heading in _SECTIONS:
        items = [item for item in facts.get(key, "").split("\n") if item]
        if items:
            lines += ["", heading, *(f"- {item}" for item in items)]
    lines += [
        "",
        "Questions, or something not working as you expect? Just reply to this email.",
        "",
        "Best regards,",
    ]
    if facts.get("operator"):
        lines.append(facts["operator"])
    return ReleaseDraft(subject=facts["subject"], body="\n".join(lines)).model_dump_json()


register_offline_task(DRAFT_TASK, offline_draft)


def draft_problems(body: str, version: str, groups: ReleaseGroups) -> list[str]:
    """What a draft body gets wrong: a change left out or reworded, the version missing, an
    internal change shown to customers. Pure; ``[]`` means the draft is faithful."""
    text = _normal(body)
    problems = [
        f"the change {item!r}" for item in groups.customer_facing if _normal(item) not in text
    ]
    if _normal(version) not in text:
        problems.append(f"the version {version!r}")
    problems += [
        f"the internal change {item!r} (it should stay out)"
        for item in groups.omitted
        if _normal(item) in text
    ]
    return problems


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def _facts(ctx: AgentContext, payload: ReleaseInput, groups: ReleaseGroups) -> dict[str, str]:
    return {
        "version": payload.version,
        "new": "\n".join(groups.new),
        "fixed": "\n".join(groups.fixed),
        "improved": "\n".join(groups.improved),
        "breaking": "yes" if groups.breaking else "",
        "operator": ctx.operator_name,
        "subject": subject_for(payload.version),
    }


SYSTEM_PROMPT = (
    "You draft a release-notes email to customers for a small software business. The release's "
    "facts arrive as a JSON document: the version and the changes grouped as new, fixed and "
    "improved (one change a line). Write a one- or two-sentence friendly introduction naming "
    "the version, then the non-empty groups under the headings 'New', 'Fixed' and 'Improved', "
    "one bullet per change, keeping each change's wording exactly as given. Do not add, merge, "
    "drop or reword changes, and mention nothing that is not in the document (no dates, links, "
    "prices or internal work). If 'breaking' is not empty, ask readers to check the breaking "
    "change before updating. End with an invitation to reply with questions, then 'Best "
    "regards,' and the operator's name. Answer with a JSON object with the keys 'subject' and "
    "'body' only."
)


class ReleaseNotesAgent(Agent[ReleaseInput, ReleaseOutput]):
    name = "release_notes"
    description = "Groups a release's changes for customers and drafts the notes to approve."
    capabilities = frozenset({Capability("email", "send_email", "write")})
    input_model = ReleaseInput
    output_model = ReleaseOutput
    model_tier = "draft"
    budget = AgentBudget(per_job_usd=0.05)

    def run(self, ctx: AgentContext, payload: ReleaseInput) -> ReleaseOutput:
        groups = group_changes(payload.changes)
        if not groups.customer_facing:
            raise AgentInputError("every change is internal: there is nothing to tell customers")
        draft = ctx.step("draft", lambda: self._draft(ctx, payload, groups))
        proposal = ctx.propose(
            "email",
            "send_email",
            {"to": payload.to, "subject": draft["subject"], "body": draft["body"]},
            summary=f"Send release notes {payload.version} to {payload.to}: {draft['subject']}",
        )
        return ReleaseOutput(
            action_id=proposal.action_id,
            version=payload.version,
            to=payload.to,
            subject=draft["subject"],
            new=len(groups.new),
            fixed=len(groups.fixed),
            improved=len(groups.improved),
            omitted=len(groups.omitted),
            offline=draft["offline"],
            replaced_model_draft=draft["replaced"],
        )

    @staticmethod
    def _draft(ctx: AgentContext, payload: ReleaseInput, groups: ReleaseGroups) -> dict[str, Any]:
        facts = _facts(ctx, payload, groups)
        draft, response = ctx.structured(
            ModelRequest(
                task=DRAFT_TASK,
                messages=(
                    ChatMessage("system", SYSTEM_PROMPT),
                    ChatMessage("user", json.dumps({"release": facts}, ensure_ascii=False)),
                ),
                facts=facts,
                json_schema=ReleaseDraft.model_json_schema(),
                schema_name="release_notes_email",
                task_class="draft",
            ),
            ReleaseDraft,
        )
        problems = draft_problems(draft.body, payload.version, groups)
        replaced = ""
        if problems:
            draft = ReleaseDraft.model_validate_json(offline_draft(facts))
            replaced = "the model's draft left out, reworded or added " + _joined(problems)
        return {
            "subject": draft.subject,
            "body": draft.body,
            "offline": response.offline,
            "replaced": replaced,
        }

    def summarize(self, payload: ReleaseInput, output: ReleaseOutput) -> str:
        counts = [
            f"{n} {label}"
            for n, label in (
                (output.new, "new"),
                (output.fixed, "fixed"),
                (output.improved, "improved"),
            )
            if n
        ]
        omitted = f"; {output.omitted} internal left out" if output.omitted else ""
        note = ""
        if output.replaced_model_draft:
            note = f" (template draft used: {output.replaced_model_draft})"
        elif output.offline:
            note = " (offline template draft: set OPCORE_LLM_BASE_URL for model-written drafts)"
        return (
            f"Drafted release notes {payload.version} for {payload.to}: "
            f"{', '.join(counts)}{omitted}.{note}"
        )


def _joined(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
