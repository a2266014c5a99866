"""Golden runs: the business-critical flows, replayed from recorded model answers.

A flow (:class:`GoldenFlow`, listed in :mod:`tests.golden.flows`) is an operator's command for
one agent. :func:`run_flow` runs it for real: a fresh store, the real :class:`JobRunner`, the real
agent and connectors; only the model is a :class:`GoldenProvider`. Recording a flow keeps every
model exchange and the proposals the job made (``expected``) in
``tests/golden/recordings/<flow>.json``; replaying it must reproduce those proposals exactly,
use every recorded exchange, and show the recorded model in the trace (:func:`compare`).

``python -m tests.golden record [--flow NAME] [--offline]`` re-records, ``python -m tests.golden
check`` replays and prints what changed; ``tests/golden/test_golden.py`` replays under pytest.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agents.base import Agent
from agents.providers.golden import GoldenProvider, Recording
from agents.registry import AgentRegistry
from agents.runner import JobRunner
from connectors.email import EmailConnector, OutboxDelivery
from store import Store, queries
from store import events as ev

RECORDINGS = Path(__file__).parent / "recordings"
OPERATOR = "Sam"  # the operator's name: it signs the drafts, so it is part of the prompts
SENDER = "me@example.com"
RECIPIENT_FIELDS = ("to", "cc", "bcc", "reply_to")


@dataclass(frozen=True)
class Expect:
    """What must hold of a flow's proposals whatever the model answers (checked when recording
    too: a re-recording that breaks it is not saved). The exact proposals are in the recording."""

    connector: str
    action: str
    recipient: str
    """The one address the proposal goes to (``params["to"]``): the one the operator typed."""
    not_recipients: tuple[str, ...] = ()
    """Addresses that must appear in no recipient field (to, cc, bcc, reply_to)."""
    proposals: int = 1
    status: str = "awaiting_approval"


@dataclass(frozen=True)
class GoldenFlow:
    """One golden flow: an operator's command for one agent and what must come of it."""

    name: str
    agent: Callable[[], Agent[Any, Any]]
    parse: Callable[[str], BaseModel]
    command: str
    """What the operator typed after the agent's command (parsed by ``parse``)."""
    expect: Expect
    description: str = ""
    directory: Path = RECORDINGS
    """Where its recording lives (tests record into a temporary directory instead)."""

    @property
    def recording(self) -> Path:
        return self.directory / f"{self.name}.json"

    @property
    def job_id(self) -> str:
        return f"golden-{self.name}"


@dataclass
class FlowRun:
    """What one run of a flow left in the store."""

    job_id: str
    status: str
    summary: str
    error: str | None
    proposals: list[dict[str, Any]]
    model_calls: list[ev.ModelCalled]
    misses: list[str] = field(default_factory=list)


def run_flow(flow: GoldenFlow, model: GoldenProvider, store: Store, workdir: Path) -> FlowRun:
    """Request the flow's job in ``store`` and run it with the real runner and agent."""
    agent = flow.agent()
    payload = flow.parse(flow.command).model_dump(mode="json")
    connectors = {"email": EmailConnector(sender=SENDER, delivery=OutboxDelivery(workdir))}
    registry = AgentRegistry.with_agents(connectors, [agent])
    store.log.append(
        ev.job_stream(flow.job_id),
        [
            ev.JobRequested(
                job_id=flow.job_id,
                agent=agent.name,
                input=payload,
                text=f"/{agent.name} {flow.command}",
                channel="console",
                chat_id="local",
                requested_by="console:local",
            )
        ],
        metadata=ev.Metadata(actor="console:local", correlation_id=flow.job_id),
    )
    runner = JobRunner(
        log=store.log,
        registry=registry,
        model=model,
        approval_ttl=timedelta(hours=24),
        operator_name=OPERATOR,
    )
    outcome = runner.run(flow.job_id)
    job = queries.get_job(flow.job_id)
    return FlowRun(
        job_id=flow.job_id,
        status=outcome.status,
        summary=outcome.summary,
        error=job.error,
        proposals=[
            {
                "connector": a.connector,
                "action": a.action,
                "params": a.params,
                "flags": list(a.flags),
                "status": a.status,
            }
            for a in queries.actions_for_job(flow.job_id)
        ],
        model_calls=[
            e.data
            for e in store.log.read_correlated(flow.job_id)
            if isinstance(e.data, ev.ModelCalled)
        ],
        misses=list(model.misses),
    )


def expected_of(run: FlowRun) -> dict[str, Any]:
    """What a recording keeps of a run, to compare replays with."""
    return {"status": run.status, "proposals": run.proposals}


def violations(flow: GoldenFlow, run: FlowRun) -> list[str]:
    """How ``run`` breaks the flow's invariants (:class:`Expect`); empty when it keeps them."""
    expect = flow.expect
    problems = [f"the model was asked something not recorded: {m}" for m in run.misses]
    if run.status != expect.status:
        problems.append(
            f"the job ended {run.status!r}, not {expect.status!r}"
            + (f": {run.error}" if run.error else "")
        )
    if len(run.proposals) != expect.proposals:
        problems.append(f"the job made {len(run.proposals)} proposal(s), not {expect.proposals}")
    for i, proposal in enumerate(run.proposals, 1):
        kind = f"{proposal['connector']}.{proposal['action']}"
        if kind != f"{expect.connector}.{expect.action}":
            problems.append(f"proposal {i} is {kind}, not {expect.connector}.{expect.action}")
        params = proposal["params"]
        if params.get("to") != expect.recipient:
            problems.append(f"proposal {i} goes to {params.get('to')!r}, not {expect.recipient!r}")
        recipients = _recipients(params)
        for address in expect.not_recipients:
            if address.lower() in recipients:
                problems.append(f"proposal {i} has {address} among its recipients")
    return problems


def compare(flow: GoldenFlow, recording: Recording, run: FlowRun, model: GoldenProvider) -> str:
    """Everything a replay did differently from the recording, as text; empty when nothing."""
    parts = violations(flow, run)
    expected = recording.expected
    if expected.get("status") != run.status:
        parts.append(f"the job ended {run.status!r}; recorded: {expected.get('status')!r}")
    if expected.get("proposals") != run.proposals:
        parts.append(
            "the proposals differ from the recording:\n"
            + proposal_diff(expected.get("proposals") or [], run.proposals)
        )
    unused = model.unused()
    if unused:
        tasks = ", ".join(x.task for x in unused)
        parts.append(f"{len(unused)} recorded model exchange(s) were not asked for: {tasks}")
    recorded_trace = [(x.task, x.model) for x in recording.exchanges]
    trace = [(c.task, c.model) for c in run.model_calls]
    if trace != recorded_trace:
        parts.append(f"the trace's model calls are {trace}; recorded: {recorded_trace}")
    return "\n".join(parts)


def proposal_diff(recorded: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> str:
    """A unified diff of two lists of proposals, a line a field (see :func:`render_proposals`)."""
    diff = difflib.unified_diff(
        render_proposals(recorded),
        render_proposals(replayed),
        "recorded proposals",
        "replayed proposals",
        lineterm="",
    )
    return "\n".join(diff)


def render_proposals(proposals: list[dict[str, Any]]) -> list[str]:
    """Proposals as lines for a diff: one line a field, multi-line text a line per line."""
    lines: list[str] = []
    for i, proposal in enumerate(proposals, 1):
        lines.append(
            f"proposal {i}: {proposal.get('connector')}.{proposal.get('action')} "
            f"({proposal.get('status')})"
        )
        lines.append(f"  flags: {json.dumps(proposal.get('flags'), ensure_ascii=False)}")
        params: Mapping[str, Any] = proposal.get("params") or {}
        for key in sorted(params):
            value = params[key]
            if isinstance(value, str) and "\n" in value:
                lines.append(f"  {key}:")
                lines += [f"    | {line}" for line in value.split("\n")]
            else:
                lines.append(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    return lines


def _recipients(params: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for key in RECIPIENT_FIELDS:
        value = params.get(key)
        values = value if isinstance(value, list | tuple) else [value]
        found |= {v.lower() for v in values if isinstance(v, str)}
    return found
