"""Money: every model call is priced before it is made and refused if it would cross a budget.

Budgets are per workspace and per agent, per UTC day and month (settings). Before a call, the
price of the prompt's estimated tokens plus the largest answer allowed is checked against each
budget, with what was already spent and any one-off raise the operator granted this job; a
call that would cross one is not made (:class:`BudgetExceeded`). After the call, the real
usage is priced and recorded with the ``ModelCalled`` event; crossing 80 % of a budget gives
one warning per budget and period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agents.providers.base import ModelRequest, Usage
from agents.signals import BudgetExceeded
from store import events as ev
from store import queries
from store.projections import periods

if TYPE_CHECKING:
    from agents.base import Agent

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
    per_job: Mapping[str, float] = field(default_factory=dict)  # agent -> USD per job

    @classmethod
    def declared(
        cls,
        agents: Iterable[Agent[Any, Any]],
        *,
        overrides: Mapping[str, Mapping[str, float]],
        **kwargs: Any,
    ) -> Budgets:
        """Budgets with each agent's declared limits, overridden per agent by ``overrides``."""
        limits: dict[str, dict[str, float]] = {}
        per_job: dict[str, float] = {}
        for agent in agents:
            own: dict[str, float] = {}
            if agent.budget.daily_usd is not None:
                own["daily"] = agent.budget.daily_usd
            if agent.budget.monthly_usd is not None:
                own["monthly"] = agent.budget.monthly_usd
            limits[agent.name] = own | dict(overrides.get(agent.name, {}))
            if agent.budget.per_job_usd is not None:
                per_job[agent.name] = agent.budget.per_job_usd
        for name, given in overrides.items():
            limits.setdefault(name, dict(given))
        return cls(agents=limits, per_job=per_job, **kwargs)

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
        self,
        *,
        agent: str,
        job_id: str,
        estimate: float,
        allowance: float,
        at: datetime,
        job_spent: float = 0.0,
    ) -> None:
        """Raise :class:`BudgetExceeded` if a call costing ``estimate`` would cross a budget."""
        per_job = self.per_job.get(agent)
        if per_job is not None and job_spent + estimate > per_job + allowance:
            raise BudgetExceeded(
                ev.BudgetBlocked(
                    job_id=job_id,
                    agent=agent,
                    scope=f"job:{agent}",
                    period=f"job {job_id[:8]}",
                    limit_usd=per_job,
                    spent_usd=round(job_spent, 6),
                    estimate_usd=round(estimate, 6),
                )
            )
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


def job_spent(history: list[ev.RecordedEvent]) -> float:
    """What the model calls of this job have cost so far (USD)."""
    return sum(e.data.cost_usd for e in history if isinstance(e.data, ev.ModelCalled))


def allowance(history: list[ev.RecordedEvent]) -> float:
    """Extra USD the operator allowed this job to spend past its budgets."""
    return sum(e.data.usd for e in history if isinstance(e.data, ev.BudgetOverride))
