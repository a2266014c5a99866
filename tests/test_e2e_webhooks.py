"""`opcore run` with its HTTP endpoint: a signed GitHub release starts the micro-SaaS flow at
once (not at the scheduler's next tick), and /metrics shows it, from a real subprocess."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e_helpers import opcore_env, start_opcore

SECRET = "gh-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def signed(event: str, delivery: str, payload: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={mac}",
    }


def test_a_release_webhook_starts_the_flow_at_once_and_metrics_show_it(tmp_path: Path) -> None:
    port = free_port()
    env = opcore_env(
        tmp_path / "data",
        webhook_listen=f"127.0.0.1:{port}",
        webhook_sources=json.dumps({"github": {"kind": "github", "secret": SECRET}}),
        flows="micro-saas",
        reconcile_interval_seconds="3600",  # only the delivery itself can move the flow
    )
    process = start_opcore(["run"], env, cwd=tmp_path, stdin=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(f"{base}/metrics", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "opcore run did not serve /metrics"
                time.sleep(0.2)
        assert first.status_code == 200 and metric(first.text, "opcore_up") == 1
        repo = {"full_name": "sam/app", "default_branch": "main"}
        body, headers = signed(
            "push",
            "p-1",
            {
                "ref": "refs/heads/main",
                "repository": repo,
                "commits": [{"id": "c1", "message": "fix: login works again"}],
            },
        )
        assert httpx.post(f"{base}/webhooks/github", content=body, headers=headers).is_success
        forged = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        assert (
            httpx.post(f"{base}/webhooks/github", content=body, headers=forged).status_code == 401
        )
        body, headers = signed(
            "release",
            "r-1",
            {"action": "published", "release": {"tag_name": "v2.0.0"}, "repository": repo},
        )
        assert httpx.post(f"{base}/webhooks/github", content=body, headers=headers).is_success
        deadline = time.monotonic() + 20
        while True:
            text = httpx.get(f"{base}/metrics", timeout=2).text
            if (metric(text, "opcore_approvals_waiting") or 0) >= 1:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert metric(text, "opcore_flows", template="micro-saas", status="running") == 1
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
