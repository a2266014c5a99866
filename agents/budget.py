"""Money: every model call is priced before it is made and refused if it would cross a budget.

Budgets are per workspace and per agent, per UTC day and month (settings). Before a call, the
price of the prompt's estimated tokens plus the largest answer allowed is checked against each
budget, with what was already spent and any one-off raise the operator granted this job; a
call that would cross one is not made (:class:`BudgetExceeded`). After the call, the real
usage is priced and recorded with the ``ModelCalled`` event; crossing 80 % of a budget gives
one warning per budget and period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from agents.providers.base import ModelRequest, Usage
from agents.signals import BudgetExceeded
from store import events as ev
from store import queries
from store.projections import periods

WARN_AT = 0.8
DEFAULT_ANSWER_TOKENS = 800


@dataclass(frozen=True)
class Limit:
    scope: str  # "workspace" or "agent:<name>"
    period: str  # "day:…" or "month:…"
    usd: float


@dataclass(frozen=True)
class Budgets:
    prices: Mapping[str, tuple[float, float]]  # USD per million input / output tokens
    default_price: tuple[float, float]
    daily_usd: float
    monthly_usd: float
    agents: Mapping[str, Mapping[str, float]]

    def price(self, model: str, usage: Usage) -> float:
        per_in, per_out = self.prices.get(model, self.default_price)
        return (usage.prompt_tokens * per_in + usage.completion_tokens * per_out) / 1_000_000

    def estimate(self, model: str, request: ModelRequest) -> float:
        prompt = sum(len(m.content) for m in request.messages) // 3 + 16 * len(request.messages)
        answer = request.max_tokens or DEFAULT_ANSWER_TOKENS
        return self.price(model, Usage(prompt_tokens=prompt, completion_tokens=answer))

    def limits(self, agent: str, at: datetime) -> list[Limit]:
        day, month = periods(at.replace(tzinfo=None))
        out = [Limit("workspace", day, self.daily_usd), Limit("workspace", month, self.monthly_usd)]
        own = self.agents.get(agent, {})
        if "daily" in own:
            out.append(Limit(f"agent:{agent}", day, own["daily"]))
        if "monthly" in own:
            out.append(Limit(f"agent:{agent}", month, own["monthly"]))
        return out

    def check(
        self, *, agent: str, job_id: str, estimate: float, allowance: float, at: datetime
    ) -> None:
        """Raise :class:`BudgetExceeded` if a call costing ``estimate`` would cross a budget."""
        for limit in self.limits(agent, at):
            spent, _ = queries.spent(limit.scope, limit.period)
            if spent + estimate > limit.usd + allowance:
                raise BudgetExceeded(
                    ev.BudgetBlocked(
                        job_id=job_id,
                        agent=agent,
                        scope=limit.scope,
                        period=limit.period,
                        limit_usd=limit.usd,
                        spent_usd=round(spent, 6),
                        estimate_usd=round(estimate, 6),
                    )
                )

    def warnings(self, *, agent: str, job_id: str, at: datetime) -> list[ev.NewEvent]:
        """One ``BudgetWarning`` per budget that just crossed 80 % (call after recording a cost)."""
        out = []
        for limit in self.limits(agent, at):
            spent, warned = queries.spent(limit.scope, limit.period)
            if not warned and limit.usd > 0 and spent >= WARN_AT * limit.usd:
                out.append(
                    ev.NewEvent(
                        ev.BudgetWarning(
                            job_id=job_id,
                            scope=limit.scope,
                            period=limit.period,
                            limit_usd=limit.usd,
                            spent_usd=round(spent, 6),
                        ),
                        idempotency_key=f"budget-warning:{limit.scope}:{limit.period}",
                    )
                )
        return out


def allowance(history: list[ev.RecordedEvent]) -> float:
    """Extra USD the operator allowed this job to spend past its budgets."""
    return sum(e.data.usd for e in history if isinstance(e.data, ev.BudgetOverride))
