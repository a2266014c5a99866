"""Proposal drafting: a scoped, priced proposal email to approve, in the operator's terms.

``/proposal jane@acme.example website audit: 3 pages review, accessibility report; price 2400
EUR; 2 weeks`` finds or creates the contact (Jane, Acme), drafts a proposal email stating the
scope items, the price and the timeline exactly as the operator typed them, and proposes
sending it. Every value here is the operator's own word; the model only writes the prose
around it. A draft that leaves out a term, or states an amount the operator did not give, is
replaced by the deterministic template draft, which states them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.errors import AgentInputError
from agents.lead import company_from_email
from agents.providers.base import ChatMessage, ModelRequest
from agents.providers.offline import register_offline_task
from connectors.email import is_sendable_address

DRAFT_TASK = "proposal.draft"
USAGE = (
    "/proposal [name] <email> <title>: <scope item>, <scope item>[; price <amount> <currency>]"
    "[; <timeline>], e.g. /proposal jane@acme.example website audit: 3 pages review, "
    "accessibility report; price 2400 EUR; 2 weeks"
)
MAX_SCOPE_ITEMS = 20

_EMAIL = re.compile(r"<?\b([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b>?")
_PRICE_LABEL = re.compile(r"^(?:price|fee|cost|total)\b\s*(?:[:=]|is\b|of\b)?\s*", re.IGNORECASE)
_TIMELINE_LABEL = re.compile(
    r"^(?:(?:timeline|timeframe|time frame|deadline|duration)\b\s*(?:[:=]|is\b)?"
    r"|delivery\s*[:=]|delivery(?=\s+(?:in|within|by|before|until)\b))\s*",
    re.IGNORECASE,
)
_DURATION = re.compile(
    r"^(?:(?:in|within|over|about|approx\.?|approximately|around)\s+)?"
    r"(?:\d+(?:[.,]\d+)?|one|two|three|four|five|six|a|an)(?:\s*(?:-|to)\s*\d+)?\s*"
    r"(?:working\s+|business\s+)?(?:days?|weeks?|months?|sprints?)\b"
    r"|^(?:by|before|until|starting|from)\s+\S",
    re.IGNORECASE,
)
_AMOUNT = r"\d(?:[\d,.']*\d)?(?:\s?[kK])?"
_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP"}
_WORDS = {
    "euro": "EUR",
    "euros": "EUR",
    "dollar": "USD",
    "dollars": "USD",
    "pound": "GBP",
    "pounds": "GBP",
}
_CODES = "EUR|USD|GBP|CHF|CAD|AUD|NZD|SEK|NOK|DKK|PLN|CZK|JPY|INR|SGD|HKD|ZAR|MXN|BRL"
_CODE = rf"(?P<code>{_CODES}|euros?|dollars?|pounds?)"
_NOTE = r"(?:\s*(?P<note>[^\d\s].*))?"
_MONEY_FORMS = tuple(
    re.compile(form, re.IGNORECASE)
    for form in (
        rf"(?P<sym>[€$£])\s?(?P<amount>{_AMOUNT}){_NOTE}",
        rf"(?P<amount>{_AMOUNT})\s?(?P<sym>[€$£]){_NOTE}",
        rf"(?P<amount>{_AMOUNT})\s?{_CODE}\b{_NOTE}",
        rf"{_CODE}\s?(?P<amount>{_AMOUNT}){_NOTE}",
    )
)
# Any amount of money in a draft: a symbol or a currency next to a number.
_MONEY_IN_TEXT = re.compile(
    rf"[€$£]\s?\d(?:[\d,.']*\d)?(?:\s?k\b)?|\d(?:[\d,.']*\d)?\s?(?:k\s?)?(?:[€$£]|(?:{_CODES}|euros?|dollars?|pounds?)\b)"
    rf"|\b(?:{_CODES})\s?\d(?:[\d,.']*\d)?",
    re.IGNORECASE,
)
_GENERIC_MAILBOXES = frozenset(
    {"info", "hello", "contact", "sales", "office", "admin", "team", "support", "mail", "hi"}
)


class ProposalInput(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)
    company: str = Field(default="", max_length=200)
    title: str = Field(min_length=1, max_length=200)
    scope: list[str] = Field(min_length=1, max_length=MAX_SCOPE_ITEMS)
    price_amount: str = Field(default="", max_length=40)
    currency: str = Field(default="", max_length=3)
    price_note: str = Field(default="", max_length=200)
    timeline: str = Field(default="", max_length=200)
    text: str = Field(max_length=4000)

    @property
    def price(self) -> str:
        """The price as the operator stated it, e.g. ``2400 EUR excl. VAT``; ``""`` if none."""
        if not self.price_amount:
            return ""
        return " ".join(p for p in (self.price_amount, self.currency, self.price_note) if p)


class ProposalDraft(BaseModel):
    model_config = ConfigDict(frozen=True)
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20_000)


class ProposalOutput(BaseModel):
    contact_id: str
    contact_created: bool
    action_id: str
    subject: str
    offline: bool
    replaced_model_draft: str = ""
    """Why the model's draft was replaced by the template draft; ``""`` if it was not."""


def parse_proposal(text: str) -> ProposalInput:
    """Read recipient, title, scope, price and timeline out of one line. Pure; raises with a
    usage hint on anything it cannot read."""
    text = " ".join(text.split())
    if not text:
        raise AgentInputError(f"usage: {USAGE}")
    if len(text) > 4000:
        raise AgentInputError("that proposal is longer than 4000 characters; shorten it")
    match = _EMAIL.search(text)
    if match is None:
        raise AgentInputError(f"I need the recipient's email address. usage: {USAGE}")
    email = match.group(1)
    if not is_sendable_address(email):
        raise AgentInputError(
            f"{email} does not look like an address I can send to. usage: {USAGE}"
        )
    name = text[: match.start()].strip(" ,;:-(")
    rest = text[match.end() :].strip(" ,-").lstrip(":").strip()
    title, colon, terms = rest.partition(":")
    title = title.strip(" ,;-")
    if not colon or not title:
        raise AgentInputError(f"give a title, then ':' and the scope items. usage: {USAGE}")
    scope, price, timeline = _terms(terms)
    if not scope:
        raise AgentInputError(f"list at least one scope item after the ':'. usage: {USAGE}")
    if len(scope) > MAX_SCOPE_ITEMS:
        raise AgentInputError(f"at most {MAX_SCOPE_ITEMS} scope items, please")
    amount, currency, note = price
    try:
        return ProposalInput(
            name=(name or _name_from_email(email))[:200],
            email=email,
            company=company_from_email(email),
            title=title,
            scope=scope,
            price_amount=amount,
            currency=currency,
            price_note=note,
            timeline=timeline,
            text=text,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise AgentInputError(
            f"I could not read that proposal ({problems}). usage: {USAGE}"
        ) from exc


def _terms(terms: str) -> tuple[list[str], tuple[str, str, str], str]:
    """``a, b; price 2400 EUR; 2 weeks`` -> scope items, (amount, currency, note), timeline.

    A segment is the price when it starts with price/fee/cost/total and an amount with its
    currency follows (a later segment starting with ``price`` must be one); a segment after
    the first is the timeline when it starts with timeline/deadline/duration/delivery or reads
    like a duration or a date (``2 weeks``, ``by 30 June``); everything else is scope items,
    separated by commas."""
    scope: list[str] = []
    price: tuple[str, str, str] | None = None
    timeline = ""
    for index, segment in enumerate(s.strip(" ,.") for s in terms.split(";")):
        if not segment:
            continue
        label = _PRICE_LABEL.match(segment)
        if label and (
            read := _price(
                segment[label.end() :], strict=index > 0 and segment[:5].lower() == "price"
            )
        ):
            if price is not None:
                raise AgentInputError(f"give one price only. usage: {USAGE}")
            price = read
        elif index > 0 and ((label := _TIMELINE_LABEL.match(segment)) or _DURATION.match(segment)):
            if timeline:
                raise AgentInputError(f"give one timeline only. usage: {USAGE}")
            timeline = segment[label.end() :] if label else segment
            if not timeline:
                raise AgentInputError(f"the timeline is empty. usage: {USAGE}")
        else:
            scope += [item.strip(" .") for item in segment.split(",") if item.strip(" .")]
    return scope, price or ("", "", ""), timeline


def _price(raw: str, *, strict: bool) -> tuple[str, str, str] | None:
    """``2400 EUR``, ``€2,400``, ``EUR 2400``, ``2.4k euros excl. VAT`` -> (amount, currency,
    note). Unreadable: an error when the segment said ``price``, else ``None`` (a scope item
    such as ``cost review``)."""
    raw = raw.strip()
    for form in _MONEY_FORMS:
        found = form.fullmatch(raw)
        if found is None:
            continue
        groups = found.groupdict()
        if groups.get("sym"):
            currency = _SYMBOLS[groups["sym"]]
        else:
            code = groups["code"].lower()
            currency = _WORDS.get(code, code.upper())
        return found.group("amount"), currency, (groups.get("note") or "").lstrip(",; ").strip()
    if not strict:
        return None
    raise AgentInputError(
        f"I could not read the price {raw!r}: give an amount and a currency, "
        f"e.g. 'price 2400 EUR'. usage: {USAGE}"
    )


def _name_from_email(email: str) -> str:
    local = email.split("@", 1)[0]
    return " ".join(part.capitalize() for part in re.split(r"[._+-]+", local) if part) or local


def subject_for(proposal: ProposalInput) -> str:
    title = _without_article(proposal.title)
    title = title[:1].upper() + title[1:]
    if len(title) > 80:
        title = title[:79].rstrip() + "…"
    for_company = f" for {proposal.company}" if proposal.company else ""
    return f"Proposal: {title}{for_company}"


def _without_article(phrase: str) -> str:
    return re.sub(r"^(?:a|an|the)\s+", "", phrase.strip(), flags=re.IGNORECASE)


def _greeting(name: str) -> str:
    first = name.split()[0] if name.strip() else ""
    if not first or first.lower() in _GENERIC_MAILBOXES:
        return "Hello,"
    return f"Hi {first},"


def offline_draft(facts: Mapping[str, str]) -> str:
    """A complete proposal email without a model: the scope, price and timeline verbatim."""
    company = facts.get("company", "")
    for_company = f" for {company}" if company else ""
    scope = [item for item in facts["scope"].split("\n") if item]
    lines = [
        _greeting(facts.get("name", "")),
        "",
        f"Thank you for your interest. Here is my proposal for the "
        f"{_without_article(facts['title'])}{for_company}.",
        "",
        "Scope of work:",
        *(f"- {item}" for item in scope),
        "",
        f"Price: {facts['price']}"
        if facts.get("price")
        else "Price: I will confirm the price as soon as we have agreed the scope.",
        f"Timeline: {facts['timeline']}"
        if facts.get("timeline")
        else "Timeline: to be agreed together once you confirm the scope.",
        "",
        "Anything not listed above is outside this proposal; if you need more, or less, tell me "
        "and I will update it.",
        "",
        "If this works for you, reply to confirm and I will schedule the start.",
        "",
        "Best regards,",
    ]
    if facts.get("operator"):
        lines.append(facts["operator"])
    return ProposalDraft(subject=facts["subject"], body="\n".join(lines)).model_dump_json()


register_offline_task(DRAFT_TASK, offline_draft)


def missing_terms(body: str, proposal: ProposalInput) -> list[str]:
    """What a draft body fails to state as the operator gave it, or states that they did not
    give (an amount of money). Pure; ``[]`` means the draft keeps to the operator's terms."""
    text = _normal(body)
    problems = [f"scope item {item!r}" for item in proposal.scope if _normal(item) not in text]
    if proposal.price_amount:
        symbols = {sym for sym, code in _SYMBOLS.items() if code == proposal.currency}
        has_currency = _normal(proposal.currency) in text or any(s in text for s in symbols)
        if _normal(proposal.price_amount) not in text or not has_currency:
            problems.append(f"the price {proposal.price!r}")
        elif proposal.price_note and _normal(proposal.price_note) not in text:
            problems.append(f"the price note {proposal.price_note!r}")
        stray = [m.group(0) for m in _MONEY_IN_TEXT.finditer(body)]
        if any(_digits(s) != _digits(proposal.price_amount) for s in stray):
            problems.append("an amount other than the price you gave")
    elif _MONEY_IN_TEXT.search(body):
        problems.append("a price although you gave none")
    if proposal.timeline and _normal(proposal.timeline) not in text:
        problems.append(f"the timeline {proposal.timeline!r}")
    return problems


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit() or c in "kK").lower()


def _facts(ctx: AgentContext, payload: ProposalInput, contact: Mapping[str, Any]) -> dict[str, str]:
    return {
        "name": str(contact["name"]),
        "email": str(contact["email"]),
        "company": str(contact["company"]),
        "title": payload.title,
        "scope": "\n".join(payload.scope),
        "price": payload.price,
        "timeline": payload.timeline,
        "operator": ctx.operator_name,
        "subject": subject_for(payload),
    }


SYSTEM_PROMPT = (
    "You draft a short proposal email for a solo consultant, in the consultant's voice: clear, "
    "friendly, specific, no hype. The proposal's facts arrive as a JSON document. State every "
    "scope item, the price and the timeline exactly as written there, word for word; list the "
    "scope items as bullet points. If the price is empty, say the price will follow once the "
    "scope is agreed: never invent a price, a discount, a tax, a payment term, a date or any "
    "other fact. If the timeline is empty, say it will be agreed together. End with a short "
    "call to reply to confirm, then 'Best regards,' and the operator's name. Answer with a JSON "
    "object with the keys 'subject' and 'body' only."
)


# Recalled from memory for a new proposal, and how the model may use it.
RELATED_KINDS = ("proposal", "deliverable", "case_study", "worklog")
RELATED_PROMPT = (
    "'related_past_work' lists the consultant's own earlier work recalled from memory. You "
    "may mention one relevant example in one sentence as a reference. Never take a price, a "
    "date, a name or a term from it: this proposal's facts are only those in 'proposal'."
)


class ProposalAgent(Agent[ProposalInput, ProposalOutput]):
    name = "proposal"
    description = "Drafts a proposal email (scope, price, timeline as given) to approve."
    capabilities = frozenset({Capability("email", "send_email", "write")})
    input_model = ProposalInput
    output_model = ProposalOutput
    model_tier = "draft"
    budget = AgentBudget(per_job_usd=0.05)

    def run(self, ctx: AgentContext, payload: ProposalInput) -> ProposalOutput:
        contact = ctx.step("contact", lambda: self._contact(ctx, payload))
        ctx.contact_id = contact["contact_id"]
        related = ctx.step("recall", lambda: self._recall(ctx, payload))
        draft = ctx.step("draft", lambda: self._draft(ctx, payload, contact, related["items"]))
        proposal = ctx.propose(
            "email",
            "send_email",
            {"to": contact["email"], "subject": draft["subject"], "body": draft["body"]},
            summary=f"Send proposal to {contact['email']}: {draft['subject']}",
            contact_id=contact["contact_id"],
        )
        return ProposalOutput(
            contact_id=contact["contact_id"],
            contact_created=contact["created"],
            action_id=proposal.action_id,
            subject=draft["subject"],
            offline=draft["offline"],
            replaced_model_draft=draft["replaced"],
        )

    @staticmethod
    def _contact(ctx: AgentContext, payload: ProposalInput) -> dict[str, Any]:
        contact, created = ctx.find_or_create_contact(
            name=payload.name, email=payload.email, company=payload.company
        )
        return {
            "contact_id": contact.contact_id,
            "created": created,
            "name": contact.name,
            "email": contact.email,
            "company": contact.company,
        }

    @staticmethod
    def _recall(ctx: AgentContext, payload: ProposalInput) -> dict[str, Any]:
        """Past work like this one (any client): proposals, deliverables, case studies."""
        recalled = ctx.recall(
            " ".join([payload.title, *payload.scope]),
            kinds=RELATED_KINDS,
            limit=3,
        )
        items = [
            {"kind": r.item.kind, "text": r.item.text[:1500]}
            for r in (recalled.items if recalled else ())
        ]
        return {"items": items}

    @staticmethod
    def _draft(
        ctx: AgentContext,
        payload: ProposalInput,
        contact: Mapping[str, Any],
        related: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        facts = _facts(ctx, payload, contact)
        document: dict[str, Any] = {"proposal": facts}
        messages = [ChatMessage("system", SYSTEM_PROMPT)]
        if related:
            document["related_past_work"] = related
            messages.append(ChatMessage("system", RELATED_PROMPT))
        draft, response = ctx.structured(
            ModelRequest(
                task=DRAFT_TASK,
                messages=(
                    *messages,
                    ChatMessage("user", json.dumps(document, ensure_ascii=False)),
                ),
                facts=facts,
                json_schema=ProposalDraft.model_json_schema(),
                schema_name="proposal_email",
                task_class="draft",
            ),
            ProposalDraft,
        )
        problems = missing_terms(draft.body, payload)
        replaced = ""
        if problems:
            # The operator's terms are the point of a proposal: keep them, drop the prose.
            draft = ProposalDraft.model_validate_json(offline_draft(facts))
            replaced = "the model's draft left out or changed " + _joined(problems)
        return {
            "subject": draft.subject,
            "body": draft.body,
            "offline": response.offline,
            "replaced": replaced,
        }

    def summarize(self, payload: ProposalInput, output: ProposalOutput) -> str:
        who = f"{payload.name} ({payload.company})" if payload.company else payload.name
        terms = [f"{len(payload.scope)} scope item{'s' if len(payload.scope) != 1 else ''}"]
        terms.append(payload.price or "no price yet")
        if payload.timeline:
            terms.append(payload.timeline)
        note = ""
        if output.replaced_model_draft:
            note = f" (template draft used: {output.replaced_model_draft})"
        elif output.offline:
            note = " (offline template draft: set OPCORE_LLM_BASE_URL for model-written drafts)"
        return f"Drafted a proposal for {who}: {', '.join(terms)}.{note}"


def _joined(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
