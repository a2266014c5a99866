"""Milestones: when the client accepts, the kick-off and the delivery go into the calendar.

Dates come from the proposal's own timeline as the operator typed it (``2 weeks``, ``10 days``,
``3 months``, ``by 2026-12-20``); without one the delivery is four weeks out. The kick-off is
the next working day at 10:00 in the operator's time zone. Each event is a proposal to approve
(``calendar.create_event``, undone by deleting it), and the win is remembered as work done for
the contact, so the next proposal can recall it.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from agents.base import Agent, AgentBudget, Capability
from agents.context import AgentContext
from agents.flow_input import FlowJobInput
from store import queries
from store.log import utcnow

_SPAN = re.compile(r"(?P<n>\d{1,3})\s*(?P<unit>day|week|month)s?", re.I)
_BY = re.compile(r"\b(?:by|until|before)\s+(?P<date>\d{4}-\d{2}-\d{2})\b", re.I)
DEFAULT_SPAN = timedelta(weeks=4)


def delivery_span(timeline: str) -> timedelta:
    match = _SPAN.search(timeline or "")
    if match is None:
        return DEFAULT_SPAN
    n, unit = int(match["n"]), match["unit"].lower()
    return timedelta(days=n * {"day": 1, "week": 7, "month": 30}[unit])


def next_working_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def plan(timeline: str, *, now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Kick-off and delivery moments (aware, UTC) for a timeline. Pure."""
    kickoff_day = next_working_day(now.astimezone(zone).date())
    by = _BY.search(timeline or "")
    if by is not None:
        delivery_day = max(date.fromisoformat(by["date"]), kickoff_day)
    else:
        delivery_day = kickoff_day + delivery_span(timeline)
        while delivery_day.weekday() >= 5:
            delivery_day += timedelta(days=1)
    kickoff = datetime.combine(kickoff_day, time(10), zone)
    delivery = datetime.combine(delivery_day, time(10), zone)
    return kickoff.astimezone(ZoneInfo("UTC")), delivery.astimezone(ZoneInfo("UTC"))


class MilestonesOutput(BaseModel):
    events: int
    kickoff: str
    delivery: str


class MilestonesAgent(Agent[FlowJobInput, MilestonesOutput]):
    name = "milestones"
    description = "Puts a won project's kick-off and delivery in the calendar (to approve)."
    capabilities = frozenset({Capability("calendar", "create_event", "write")})
    input_model = FlowJobInput
    output_model = MilestonesOutput
    budget = AgentBudget(per_job_usd=0.0)

    def __init__(self, *, zone: ZoneInfo | None = None) -> None:
        self._zone = zone or ZoneInfo("UTC")

    def run(self, ctx: AgentContext, payload: FlowJobInput) -> MilestonesOutput:
        flow = payload.flow
        terms = flow.proposal_terms()
        contact = queries.get_contact(flow.require_contact())
        ctx.contact_id = contact.contact_id
        dates = ctx.step("plan", lambda: self._plan(terms))
        kickoff, delivery = (datetime.fromisoformat(dates[k]) for k in ("kickoff", "delivery"))
        who = contact.company or contact.name
        title = str(terms["title"])
        for label, start in (("Kick-off", kickoff), ("Delivery", delivery)):
            ctx.propose(
                "calendar",
                "create_event",
                {
                    "title": f"{label}: {title} ({who})",
                    "start": start.isoformat(),
                    "end": (start + timedelta(hours=1)).isoformat(),
                    "description": f"{title} for {contact.name} <{contact.email}>.",
                },
                summary=f"Add to calendar: {label.lower()} of {title} ({who}), {start.astimezone(self._zone):%a %d %b %H:%M}",
                contact_id=contact.contact_id,
            )
        scope = "; ".join(str(s) for s in terms.get("scope") or [])
        ctx.step(
            "remember",
            lambda: {
                "memory_id": ctx.remember(
                    f"Won: {title} for {contact.name} ({who}). Scope: {scope}. "
                    f"Price: {terms.get('price_amount', '')} {terms.get('currency', '')}. "
                    f"Kick-off {kickoff:%Y-%m-%d}, delivery {delivery:%Y-%m-%d}.",
                    kind="worklog",
                    contact_id=contact.contact_id,
                )
            },
        )
        return MilestonesOutput(
            events=2, kickoff=kickoff.isoformat(), delivery=delivery.isoformat()
        )

    def _plan(self, terms: dict[str, Any]) -> dict[str, Any]:
        kickoff, delivery = plan(str(terms.get("timeline") or ""), now=utcnow(), zone=self._zone)
        return {"kickoff": kickoff.isoformat(), "delivery": delivery.isoformat()}

    def summarize(self, payload: FlowJobInput, output: MilestonesOutput) -> str:
        return f"Won! Kick-off and delivery are ready to go into your calendar ({output.kickoff[:10]} to {output.delivery[:10]})."
