"""GET /metrics: Prometheus text computed from the read models at each scrape."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from bot.webhook_server import WebhookServer
from jobs.metrics import OpcoreCollector, metrics_route, quantile
from jobs.runtime import Runtime
from jobs.service import JobService
from store import queries
from tests.jobs.test_flows import wait_for


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_metrics_report_queue_approvals_failures_latency_and_spend(
    runtime: Runtime, service: JobService, dispatcher: Dispatcher
) -> None:
    collector = OpcoreCollector(
        head=runtime.store.log.head,
        budget_lines=service.budget_lines,
        slos=service.slo_reports,
    )
    server = WebhookServer(
        listen="127.0.0.1:0",
        sources={},
        on_delivery=lambda delivery: True,
        extra_routes={"/metrics": metrics_route(collector)},
    )
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        before = samples(httpx.get(url).text)
        assert before["opcore_up"] == 1 and before["opcore_approvals_waiting"] == 0
        dispatcher.handle_message(
            InboundMessage(
                "console", "local", "local", "/lead Jane Doe <jane@acme.example> wants an audit"
            )
        )
        wait_for(queries.pending_approvals)
        response = httpx.get(url)
        assert response.headers["content-type"].startswith("text/plain")
        after = samples(response.text)
        assert after["opcore_approvals_waiting"] == 1
        assert after["opcore_jobs{status=awaiting_approval}"] == 1
        assert after["opcore_events_total"] > before["opcore_events_total"]
        assert after["opcore_job_failures_total"] == 0
        assert after["opcore_job_run_seconds{quantile=0.5}"] >= 0
        assert any(k.startswith("opcore_budget_usd{") for k in after)
        # the objectives of the default settings, counted from the log
        assert after["opcore_slo_target{slo=invoices_sent}"] == 0.99
        # the job waits for its approval: not ended, so not counted yet
        assert after["opcore_slo_outcomes{outcome=good,slo=jobs_succeed}"] == 0
        assert after["opcore_slo_outcomes{outcome=bad,slo=jobs_succeed}"] == 0
        assert after["opcore_slo_error_budget_remaining{slo=jobs_succeed}"] == 1
        assert after["opcore_slo_burn_rate{slo=invoices_sent}"] == 0
    finally:
        server.stop()


def test_quantile_is_the_nearest_rank() -> None:
    assert quantile([], 0.5) == 0.0
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.99) == 5.0
