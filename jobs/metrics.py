"""Prometheus metrics, computed from the log's read models at each scrape.

``opcore run`` serves them at ``GET /metrics`` on the webhook endpoint's address
(``OPCORE_WEBHOOK_LISTEN``). Nothing is counted in memory: every figure is read from the store
when Prometheus asks, so several processes report the same truth and a restart loses nothing.
The counters (events, failures, actions executed) only grow because the log only grows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import cast

import peewee
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.slo import SloReport
from store import queries
from store.errors import StoreError
from store.log import utcnow
from store.models import EventRecord, FlowRow, JobRow

logger = logging.getLogger(__name__)

LATENCY_WINDOW = 500  # the latest finished jobs the latency quantiles are computed over
QUEUED = ("queued", "retrying")


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank). Pure."""
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


class OpcoreCollector(Collector):
    """Queue depth, job latency, failures, approvals waiting, spend, flows and the log."""

    def __init__(
        self,
        *,
        head: Callable[[], int],
        budget_lines: Callable[[], Sequence[tuple[str, str, float, float]]],
        broker_depth: Callable[[], int | None] = lambda: None,
        slos: Callable[[], Sequence[SloReport]] = lambda: (),
    ) -> None:
        self._head = head
        self._budget_lines = budget_lines
        self._broker_depth = broker_depth
        self._slos = slos

    def collect(self) -> Iterable[Metric]:
        try:
            yield from self._collect()
        except (StoreError, peewee.PeeweeException) as exc:
            logger.error("metrics: the store did not answer: %s", exc)
            up = GaugeMetricFamily("opcore_up", "1 when the store answered this scrape")
            up.add_metric([], 0)
            yield up

    def _collect(self) -> Iterable[Metric]:
        counts = queries.count_jobs_by_status()
        jobs = GaugeMetricFamily("opcore_jobs", "Jobs by status", labels=["status"])
        for status, n in sorted(counts.items()):
            jobs.add_metric([status], n)
        yield jobs

        depth = GaugeMetricFamily(
            "opcore_queue_depth", "Jobs queued or waiting to retry (the log's view)"
        )
        depth.add_metric([], sum(counts.get(s, 0) for s in QUEUED))
        yield depth
        broker = self._broker_depth()
        if broker is not None:
            messages = GaugeMetricFamily(
                "opcore_broker_messages", "Messages in the broker's queues"
            )
            messages.add_metric([], broker)
            yield messages

        waiting = GaugeMetricFamily("opcore_approvals_waiting", "Proposals waiting for a decision")
        approvals = queries.pending_approvals(limit=10_000)
        waiting.add_metric([], len(approvals))
        yield waiting
        oldest = GaugeMetricFamily(
            "opcore_approval_oldest_seconds", "Age of the oldest proposal waiting"
        )
        now = utcnow()
        oldest.add_metric(
            [], max(((now - a.requested_at).total_seconds() for a in approvals), default=0.0)
        )
        yield oldest

        yield from self._latency()

        for name, doc, types in (
            ("opcore_job_failures", "Jobs that failed for good", ("JobFailed",)),
            ("opcore_job_attempt_failures", "Job attempts that failed", ("JobAttemptFailed",)),
            ("opcore_actions_executed", "Connector actions executed", ("ActionExecuted",)),
            ("opcore_action_failures", "Connector calls that failed", ("ActionFailed",)),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], EventRecord.select().where(EventRecord.type.in_(types)).count())
            yield counter

        events = CounterMetricFamily("opcore_events", "Events appended to the log")
        events.add_metric([], self._head())
        yield events

        spend = GaugeMetricFamily(
            "opcore_spend_usd", "Model spend in the budget period", labels=["scope", "period"]
        )
        limit = GaugeMetricFamily(
            "opcore_budget_usd", "Budget of the period", labels=["scope", "period"]
        )
        for scope, period, spent, cap in self._budget_lines():
            kind = period.split(":", 1)[0]
            spend.add_metric([scope, kind], spent)
            limit.add_metric([scope, kind], cap)
        yield spend
        yield limit

        flows = GaugeMetricFamily(
            "opcore_flows", "Business flows by template and status", labels=["template", "status"]
        )
        query = FlowRow.select(FlowRow.template, FlowRow.status, peewee.fn.COUNT(FlowRow.flow_id))
        grouped = query.group_by(FlowRow.template, FlowRow.status).tuples()
        for template, status, n in cast(Iterable[tuple[str, str, int]], grouped):
            flows.add_metric([template, status], n)
        yield flows

        yield from self._objectives()

        up = GaugeMetricFamily("opcore_up", "1 when the store answered this scrape")
        up.add_metric([], 1)
        yield up

    def _objectives(self) -> Iterable[Metric]:
        reports = self._slos()
        if not reports:
            return
        target = GaugeMetricFamily("opcore_slo_target", "The objective's target", labels=["slo"])
        outcomes = GaugeMetricFamily(
            "opcore_slo_outcomes", "Outcomes counted in the window", labels=["slo", "outcome"]
        )
        budget = GaugeMetricFamily(
            "opcore_slo_error_budget_remaining",
            "Share of the window's error budget not spent (negative: overspent)",
            labels=["slo"],
        )
        burn = GaugeMetricFamily(
            "opcore_slo_burn_rate", "Burn rate over the fast window (1 = on budget)", labels=["slo"]
        )
        for r in reports:
            target.add_metric([r.name], r.slo.target)
            outcomes.add_metric([r.name, "good"], r.good)
            outcomes.add_metric([r.name, "bad"], r.bad)
            outcomes.add_metric([r.name, "pending"], r.pending)
            budget.add_metric([r.name], r.budget_left)
            burn.add_metric([r.name], r.burn_rate)
        yield from (target, outcomes, budget, burn)

    @staticmethod
    def _latency() -> Iterable[Metric]:
        rows = (
            JobRow.select(JobRow.requested_at, JobRow.started_at, JobRow.finished_at)
            .where(JobRow.finished_at.is_null(False))
            .order_by(JobRow.finished_at.desc())
            .limit(LATENCY_WINDOW)
        )
        waits, runs = [], []
        for row in rows:
            started, finished = row.started_at, row.finished_at
            if started is not None and finished is not None:
                waits.append(_seconds(started - row.requested_at))
                runs.append(_seconds(finished - started))
        for name, doc, values in (
            ("opcore_job_queue_seconds", "Request to start, latest finished jobs", waits),
            ("opcore_job_run_seconds", "Start to finish, latest finished jobs", runs),
        ):
            family = GaugeMetricFamily(name, doc, labels=["quantile"])
            ordered = sorted(values)
            for q in (0.5, 0.95, 0.99):
                family.add_metric([str(q)], quantile(ordered, q))
            yield family


def _seconds(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0)


def metrics_route(collector: OpcoreCollector) -> Callable[[], tuple[int, str, bytes]]:
    """A ``GET /metrics`` route for :class:`bot.webhook_server.WebhookServer`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def serve() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    return serve
