"""What an agent may do during one job: call the model, find contacts, propose actions.

Every call leaves an event: ``ModelCalled`` for the model, ``ContactCreated`` or
``ContactRecalled`` for contacts, ``ActionProposed`` + ``ApprovalRequested`` for effects.
Replaying a job after a crash is safe: contact creation and proposals carry idempotency keys
derived from the job, so a second run finds what the first one wrote.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agents import policy, provenance
from agents.approvals import supersede
from agents.base import Agent, Capability
from agents.budget import Budgets, allowance, job_spent
from agents.cache import ModelCache, digest
from agents.errors import CapabilityError, ProviderResponseError
from agents.providers.base import ChatMessage, ModelProvider, ModelRequest, ModelResponse
from agents.providers.offline import OfflineProvider
from config.settings import ApprovalRule
from connectors.base import Connector
from store import events as ev
from store import queries
from store.errors import RecallError
from store.log import EventLog, utcnow
from store.memory.base import RecallFilter
from store.memory.service import Memory, Recall
from store.queries import ContactView

M = TypeVar("M", bound=BaseModel)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposal:
    action_id: str
    token: str
    summary: str


class AgentContext:
    """Handed to :meth:`Agent.run`. One per job run."""

    def __init__(
        self,
        *,
        job_id: str,
        agent: Agent[Any, Any],
        log: EventLog,
        model: ModelProvider,
        connectors: Mapping[str, Connector],
        approval_ttl: timedelta,
        operator_name: str,
        on_checkpoint: Callable[[str], None] = lambda point: None,
        budgets: Budgets | None = None,
        cache: ModelCache | None = None,
        rules: Mapping[str, ApprovalRule] | None = None,
        memory: Memory | None = None,
    ) -> None:
        self.job_id = job_id
        self._memory = memory
        self._rules = rules or {}
        self._cache = cache
        self._last_key: str | None = None
        self.contact_id: str | None = None  # spend is attributed to the contact once known
        self._budgets = budgets
        self.on_checkpoint = on_checkpoint
        self.operator_name = operator_name
        self._agent = agent
        self._log = log
        self._model = model
        self._connectors = connectors
        self._approval_ttl = approval_ttl
        self._proposals = 0
        self._actor = f"agent:{agent.name}"
        history = log.read_stream(ev.job_stream(job_id))
        self._steps: dict[str, dict[str, Any]] = {
            e.data.step: e.data.result for e in history if isinstance(e.data, ev.StepCompleted)
        }
        requested = history[0].data if history else None
        self._input: dict[str, Any] = (
            dict(requested.input) if isinstance(requested, ev.JobRequested) else {}
        )
        self.channel = requested.channel if isinstance(requested, ev.JobRequested) else ""

    # Checkpoints -----------------------------------------------------------------------

    def step(self, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work`` once per job: its result is checkpointed as ``StepCompleted``, and a
        resumed or retried job gets the recorded result instead of doing the work again."""
        if name in self._steps:
            return self._steps[name]
        result = work()
        recorded = self._log.append(
            ev.job_stream(self.job_id),
            [
                ev.NewEvent(
                    ev.StepCompleted(job_id=self.job_id, step=name, result=result),
                    idempotency_key=f"step:{self.job_id}:{name}",
                )
            ],
            metadata=self._meta(),
        )
        first = recorded.events[0].data
        assert isinstance(first, ev.StepCompleted)
        self._steps[name] = first.result
        self.on_checkpoint(f"after_{name}")
        return first.result

    @property
    def completed_steps(self) -> list[str]:
        return list(self._steps)

    def _meta(self) -> ev.Metadata:
        return ev.Metadata(actor=self._actor, correlation_id=self.job_id)

    # Model -----------------------------------------------------------------------------

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer from the cache if the same prompt went to the same model within the TTL;
        otherwise price the call, refuse it if it would cross a budget (:class:`BudgetExceeded`),
        make it and cache it. Every answer is recorded (model, tokens, cost, latency, cache hit)
        in the job's stream."""
        if request.task_class is None:
            request = replace(request, task_class=self._agent.model_tier)
        model_name = self._model.model_for(request)
        key = digest(model_name, request)
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            saved = self._budgets.price(hit.model, hit.usage) if self._budgets is not None else 0.0
            self._record(
                request, hit, started=time.perf_counter(), estimate=saved, cost=0.0, cached=True
            )
            self._last_key = key
            return hit
        estimate = 0.0
        if self._budgets is not None:
            estimate = self._budgets.estimate(model_name, request)
            history = self._log.read_stream(ev.job_stream(self.job_id))
            self._budgets.check(
                agent=self._agent.name,
                job_id=self.job_id,
                estimate=estimate,
                allowance=allowance(history),
                at=utcnow(),
                job_spent=job_spent(history),
            )
        started = time.perf_counter()
        response = self._model.complete(request)
        cost = (
            self._budgets.price(response.model, response.usage)
            if self._budgets is not None
            else 0.0
        )
        self._record(request, response, started=started, estimate=estimate, cost=cost, cached=False)
        if self._cache is not None:
            self._cache.put(key, response)
        self._last_key = key
        if self._budgets is not None:
            warnings = self._budgets.warnings(
                agent=self._agent.name, job_id=self.job_id, at=utcnow()
            )
            if warnings:
                self._log.append(ev.job_stream(self.job_id), warnings, metadata=self._meta())
        return response

    def _record(
        self,
        request: ModelRequest,
        response: ModelResponse,
        *,
        started: float,
        estimate: float,
        cost: float,
        cached: bool,
    ) -> None:
        self._log.append(
            ev.job_stream(self.job_id),
            [
                ev.ModelCalled(
                    job_id=self.job_id,
                    task=request.task,
                    provider=response.provider,
                    model=response.model,
                    prompt_tokens=response.usage.prompt_tokens,
                    completion_tokens=response.usage.completion_tokens,
                    latency_ms=round((time.perf_counter() - started) * 1000, 1),
                    offline=response.offline,
                    agent=self._agent.name,
                    estimated_usd=round(estimate, 6),
                    cost_usd=round(cost, 6),
                    contact_id=self.contact_id,
                    cached=cached,
                )
            ],
            metadata=self._meta(),
        )

    def structured(self, request: ModelRequest, schema: type[M]) -> tuple[M, ModelResponse]:
        """Call the model for a JSON answer validated by ``schema``; an invalid answer gets one
        repair attempt (the model sees its answer and the validation error), then fails."""
        response = self.complete(request)
        try:
            return schema.model_validate_json(response.text), response
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:5]
            )
        repair = replace(
            request,
            task=f"{request.task}.repair",
            messages=(
                *request.messages,
                ChatMessage("assistant", response.text[:4000]),
                ChatMessage(
                    "user",
                    f"That answer does not match the required JSON schema ({problem}). "
                    "Answer again with only a JSON object that matches it.",
                ),
            ),
        )
        response = self.complete(repair)
        try:
            return schema.model_validate_json(response.text), response
        except ValidationError as exc:
            raise ProviderResponseError(
                f"the model's answer is still not valid JSON for {schema.__name__} after one repair attempt "
                f"({_problems(exc)})"
            ) from exc

    # Contacts --------------------------------------------------------------------------

    def find_or_create_contact(
        self, *, name: str, email: str, company: str
    ) -> tuple[ContactView, bool]:
        """The contact with this email, created if new. Returns (contact, created)."""
        contact, created = self._find_or_create_contact(name=name, email=email, company=company)
        self.contact_id = contact.contact_id
        return contact, created

    def _find_or_create_contact(
        self, *, name: str, email: str, company: str
    ) -> tuple[ContactView, bool]:
        existing = queries.contact_by_email(email)
        if existing is None:
            contact_id = uuid.uuid4().hex
            result = self._log.append(
                ev.contact_stream(contact_id),
                [
                    ev.NewEvent(
                        ev.ContactCreated(
                            contact_id=contact_id, name=name, email=email.lower(), company=company
                        ),
                        idempotency_key=f"contact:{email.lower()}",
                    )
                ],
                metadata=self._meta(),
                expected_version=0,
            )
            if not result.duplicate:
                return queries.get_contact(contact_id), True
            existing = queries.contact_by_email(email)
            if existing is None:  # that contact's address was changed since: a new contact
                return self._create_contact(name=name, email=email, company=company), True
        self._log.append(
            ev.contact_stream(existing.contact_id),
            [
                ev.NewEvent(
                    ev.ContactRecalled(contact_id=existing.contact_id, job_id=self.job_id),
                    idempotency_key=f"contact-recalled:{existing.contact_id}:{self.job_id}",
                )
            ],
            metadata=self._meta(),
        )
        return existing, False

    def _create_contact(self, *, name: str, email: str, company: str) -> ContactView:
        contact_id = uuid.uuid4().hex
        result = self._log.append(
            ev.contact_stream(contact_id),
            [
                ev.NewEvent(
                    ev.ContactCreated(
                        contact_id=contact_id, name=name, email=email.lower(), company=company
                    ),
                    idempotency_key=f"contact:{email.lower()}:{self.job_id}",
                )
            ],
            metadata=self._meta(),
            expected_version=0,
        )
        first = result.events[0].data
        assert isinstance(first, ev.ContactCreated)
        return queries.get_contact(first.contact_id)

    # Actions ---------------------------------------------------------------------------

    def propose(
        self,
        connector: str,
        action: str,
        params: Mapping[str, Any],
        *,
        summary: str,
        contact_id: str | None = None,
        revises: str | None = None,
        trusted: Mapping[str, Any] | None = None,
        inherited_flags: Sequence[str] = (),
        preliminary: bool = False,
        revision_reason: str = "revised on request",
    ) -> Proposal:
        """Propose a write action; the approval policy decides whether it waits for the operator
        (the default), goes through, or is refused, and the log says which rule decided.

        Recipients, amounts and links are checked against the operator's input and the store
        (:mod:`agents.provenance`); what comes from neither is flagged in the approval and
        keeps the proposal from being approved automatically. ``trusted`` adds values the
        operator gave outside the job's input (a correction); ``inherited_flags`` are the
        warnings of the draft this one revises, kept while what they point at is still there. A recipient equal to the
        contact's address is bound to it: if the address changes before the decision,
        approving asks again. ``revises`` names the pending proposal this one replaces."""
        cap = Capability(connector, action, "write")
        if cap not in self._agent.capabilities:
            raise CapabilityError(
                f"agent {self._agent.name!r} did not declare {cap}; declared: "
                f"{', '.join(str(c) for c in sorted(self._agent.capabilities)) or 'nothing'}"
            )
        conn = self._connectors[connector]
        validated = conn.validate(action, params).model_dump(mode="json")
        self._proposals += 1
        key = f"{self.job_id}:proposal:{self._proposals}"
        action_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(9)
        sources = provenance.Sources.of(
            [
                *(v for k, v in self._input.items() if k not in self._agent.untrusted_fields),
                *(trusted or {}).values(),
                self.operator_name,
                getattr(conn, "sender", ""),
            ]
        )
        flags = provenance.review(conn.spec(action), connector, validated, sources)
        flags = list(
            dict.fromkeys([*provenance.still_relevant(inherited_flags, validated), *flags])
        )
        bindings = self._bindings(validated, contact_id)
        by_rule = policy.evaluate(self._rules, connector, action, validated)
        decision = policy.unverified(by_rule, self._input)
        if decision is not by_rule:
            flags.append(f"{provenance.NOTE} {decision.reason}")
        if decision.verdict == "auto" and provenance.warnings(flags):
            decision = policy.Decision(
                "ask", decision.rule, f"flagged for a look: {provenance.warnings(flags)[0]}"
            )
        rule = self._rules.get(f"{connector}.{action}")
        ttl = (
            timedelta(hours=rule.expires_hours)
            if rule and rule.expires_hours
            else self._approval_ttl
        )
        by = f"policy:{decision.rule} ({decision.reason})"
        outcome: list[ev.EventData | ev.NewEvent] = []
        if decision.verdict == "auto":
            outcome = [
                ev.ApprovalDecided(
                    action_id=action_id,
                    token=token,
                    decision="approved",
                    decided_by=by,
                    channel="policy",
                )
            ]
        elif decision.verdict == "never":
            outcome = [
                ev.ApprovalDecided(
                    action_id=action_id,
                    token=token,
                    decision="rejected",
                    decided_by=by,
                    channel="policy",
                ),
                ev.ActionRejected(action_id=action_id, decided_by=by),
            ]
        result = self._log.append(
            ev.action_stream(action_id),
            [
                ev.NewEvent(
                    ev.ActionProposed(
                        action_id=action_id,
                        job_id=self.job_id,
                        connector=connector,
                        action=action,
                        params=validated,
                        idempotency_key=key,
                        summary=summary,
                        contact_id=contact_id,
                        flags=flags,
                        bindings=bindings,
                        revises=revises,
                        preliminary=preliminary,
                    ),
                    idempotency_key=key,
                ),
                ev.ApprovalRequested(
                    action_id=action_id,
                    job_id=self.job_id,
                    token=token,
                    expires_at=utcnow() + ttl,
                ),
                *outcome,
            ],
            metadata=self._meta(),
            expected_version=0,
        )
        if result.duplicate:  # a re-run of this job: the proposal already exists
            first = result.events[0].data
            assert isinstance(first, ev.ActionProposed)
            approval = queries.approval_for_action(first.action_id)
            action_id, token = first.action_id, approval.token
        if revises is not None:
            supersede(  # a quick draft or an edited one: closed unless decided meanwhile
                self._log,
                revises,
                by_action_id=action_id,
                reason=revision_reason,
                meta=self._meta(),
            )
        return Proposal(action_id=action_id, token=token, summary=summary)

    def asks(self, connector: str, action: str, params: Mapping[str, Any]) -> bool:
        """Whether the approval policy would ask the operator about this action."""
        return policy.evaluate(self._rules, connector, action, params).verdict == "ask"

    def decided(self, action_id: str) -> bool:
        """Whether the operator (or a rule) decided on this proposal: it is no longer pending."""
        return queries.approval_for_action(action_id).status not in {"pending", "superseded"}

    def withdraw(self, action_id: str, *, because_of: str, reason: str) -> bool:
        """Close this job's own pending proposal unexecuted (``because_of`` stands instead)."""
        return supersede(
            self._log, action_id, by_action_id=because_of, reason=reason, meta=self._meta()
        )

    def recall(
        self,
        query: str,
        *,
        contact_id: str | None = None,
        kinds: Sequence[str] = (),
        limit: int = 5,
    ) -> Recall | None:
        """Recall memories (and the contact's facts); recorded in this job's trace. None
        when memory is not configured or the index failed (the job goes on without it)."""
        if self._memory is None:
            return None
        try:
            return self._memory.recall(
                query,
                filters=RecallFilter(contact_id=contact_id, kinds=frozenset(kinds)),
                limit=limit,
                job_id=self.job_id,
            )
        except RecallError as exc:
            logger.warning("job %s went on without recall: %s", self.job_id, exc)
            return None

    def remember(self, text: str, *, kind: str, contact_id: str | None = None) -> str | None:
        """Store a memory from this job (it shows in the trace); its id, or None without
        memory."""
        if self._memory is None:
            return None
        return self._memory.remember(
            text,
            kind=kind,
            contact_id=contact_id,
            job_id=self.job_id,
            source=f"{self._agent.name} agent",
            by=self._actor,
            correlation_id=self.job_id,
        ).memory_id

    def record(
        self,
        stream: str,
        data: ev.EventData,
        *,
        key: str,
        expected_version: int | None = None,
    ) -> ev.EventData:
        """Append one business event for this job (an invoice number taken, a board post),
        once: a re-run finds the event its first run recorded under ``key``."""
        recorded = self._log.append(
            stream,
            [ev.NewEvent(data, idempotency_key=key)],
            metadata=self._meta(),
            expected_version=expected_version,
        )
        return recorded.events[0].data

    def stream(self, stream: str) -> list[ev.RecordedEvent]:
        return self._log.read_stream(stream)

    @property
    def offline(self) -> bool:
        """Whether the model is the offline template provider (no real model configured)."""
        return isinstance(self._model, OfflineProvider)

    @staticmethod
    def _bindings(params: Mapping[str, Any], contact_id: str | None) -> dict[str, str]:
        if contact_id is None:
            return {}
        contact = queries.get_contact(contact_id)
        to = params.get("to")
        if isinstance(to, str) and to.lower() == contact.email.lower():
            return {"to": f"contact:{contact_id}.email"}
        return {}


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:5]
    )
