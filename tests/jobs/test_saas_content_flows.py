"""The micro-SaaS and content flows end to end, and the blackboard between agents.

Micro-SaaS: a ticket (through /triage, a ticket webhook, or a new email thread) is triaged and
posted on the board; GitHub push and release deliveries arrive signed at the webhook endpoint;
the release flow turns the pushed commits into a changelog entry, a webhook post and a note to
the blocked customer, each approved with one tap; the fix closes the board post, so /backlog no
longer lists it. Content: a scheduled slot turns the week's notes into a feed post.

Driven through the console dispatcher with the offline model, real connectors (outbox email,
the documents folder, a local webhook receiver) and in-process workers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from agents import board
from agents.policy import UNVERIFIED
from agents.release_flow import notes_lines, pushed_commits
from agents.triage import board_topic
from bot.dispatch import Dispatcher
from bot.messages import InboundMessage
from bot.webhook_server import WebhookServer, record_delivery
from config import Settings
from config.flows import load_templates, schedule_slot
from config.settings import OutgoingTarget, WebhookSource
from jobs.flows import _job_input
from jobs.reactions import new_thread, ticket_of
from jobs.runtime import Runtime, advance_flows, build_runtime
from jobs.service import JobService
from store import business, queries
from store import events as ev
from store.business import BoardPost
from store.log import utcnow
from tests.connectors.test_outgoing import Receiver, receiver  # noqa: F401  (fixture)
from tests.jobs.test_flows import approve_all, wait_for

SECRET = "gh-secret"
REPO = {"full_name": "sam/invoicer", "default_branch": "main"}


@pytest.fixture
def settings(data_dir: Path, receiver: Receiver) -> Settings:  # noqa: F811
    return Settings(
        data_dir=data_dir,
        operators=("console:local",),
        flows=("micro-saas", "content"),
        operator_name="Sam Maker",
        email_from="Sam <sam@invoicer.example>",
        reconcile_interval_seconds=3600,
        webhook_sources={
            "github": WebhookSource(kind="github", secret=SecretStr(SECRET)),
            "support": WebhookSource(kind="generic", secret=SecretStr("support-secret")),
        },
        outgoing_webhooks={"releases": OutgoingTarget(url=receiver.url, secret=SecretStr("s"))},
        ticket_events="ticket*",
        email_tickets=True,
        timezone="Europe/Berlin",
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings, with_worker=True)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def service(runtime: Runtime) -> JobService:
    return JobService(runtime)


@pytest.fixture
def dispatcher(settings: Settings, runtime: Runtime, service: JobService) -> Dispatcher:
    return Dispatcher(settings=settings, service=service, log=runtime.store.log)


@pytest.fixture
def github(settings: Settings, runtime: Runtime) -> Iterator[httpx.Client]:
    """The webhook endpoint `opcore run` serves, with a client that signs like GitHub."""
    server = WebhookServer(
        listen="127.0.0.1:0",
        sources=settings.webhook_sources,
        on_delivery=partial(record_delivery, runtime.store.log),
    )
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            yield client
    finally:
        server.stop()


def deliver(client: httpx.Client, event: str, delivery: str, payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.post(
        "/webhooks/github",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={signature}",
        },
    )
    assert response.status_code in {200, 202}, response.text


def push(client: httpx.Client, delivery: str, *messages: str) -> None:
    commits = [{"id": f"{delivery}-{n}", "message": m} for n, m in enumerate(messages)]
    deliver(
        client,
        "push",
        delivery,
        {"ref": "refs/heads/main", "repository": REPO, "commits": commits},
    )


def release(client: httpx.Client, delivery: str, tag: str, *, action: str = "published") -> None:
    deliver(
        client,
        "release",
        delivery,
        {
            "action": action,
            "release": {
                "tag_name": tag,
                "html_url": f"https://github.com/sam/invoicer/releases/{tag}",
                "body": "",
            },
            "repository": REPO,
        },
    )


def flows_of(template: str) -> list[business.FlowView]:
    return [f for f in business.list_flows() if f.template == template]


def triage_jobs() -> list[queries.JobView]:
    return [j for j in queries.list_jobs() if j.agent == "triage"]


def say(dispatcher: Dispatcher, text: str) -> str:
    replies = dispatcher.handle_message(InboundMessage("console", "local", "local", text))
    return "\n".join(r.text for r in replies)


def test_a_release_publishes_the_changelog_and_tells_the_blocked_customer(
    runtime: Runtime,
    service: JobService,
    dispatcher: Dispatcher,
    settings: Settings,
    github: httpx.Client,
    receiver: Receiver,  # noqa: F811
) -> None:
    say(
        dispatcher, "/triage bob@client.example: The export fails with a 500 error, we are blocked!"
    )
    blocked = wait_for(lambda: board.open_posts((board.CUSTOMER_BLOCKED,)))
    assert blocked[0].subject == "bob@client.example" and "export" in blocked[0].text.lower()
    assert "blocking" in say(dispatcher, "/backlog")

    push(github, "d-1", "fix: export no longer fails with a 500 on large files", "chore: bump deps")
    push(github, "d-2", "feat: dark mode\n\nLong description of the change.")
    release(github, "d-3", "v1.4.0", action="created")  # not "published": starts nothing
    release(github, "d-4", "v1.4.0")
    release(github, "d-4", "v1.4.0")  # GitHub redelivers: deduplicated by the delivery id
    advance_flows(runtime.conductor, runtime.reactions)  # the reconciler's tick

    flow = wait_for(lambda: flows_of("micro-saas"))
    assert len(flow) == 1 and flow[0].trigger == "webhook:github:d-4"
    job_id = str(wait_for(lambda: flows_of("micro-saas")[0].job_id))
    approved = approve_all(service, job_id)
    kinds = sorted(f"{a.connector}.{a.action}" for a in map(queries.get_action, approved))
    warnings = [f for a in map(queries.get_action, approved) for f in a.flags if "\u26a0" in f]
    assert not warnings  # the webhook payload and the notes trace back to the signed delivery
    assert kinds == ["documents.append_changelog", "email.send_email", "webhook.post"]

    changelog = (settings.documents_path / "CHANGELOG.md").read_text()
    assert "v1.4.0" in changelog and "Export no longer fails with a 500 on large files" in changelog
    assert "Dark mode" in changelog and "bump deps" not in changelog.lower()
    posted = json.loads(receiver.requests[-1].body)
    assert posted["event"] == "release.published"
    assert posted["data"]["fixed"] == ["Export no longer fails with a 500 on large files"]
    mail = [p.read_text() for p in settings.outbox_dir.glob("*.eml")]
    assert any("bob@client.example" in m and "fixed in v1.4.0" in m for m in mail)

    assert not board.open_posts((board.CUSTOMER_BLOCKED,))  # the fix closed it
    assert "backlog is empty" in say(dispatcher, "/backlog")
    releases = business.board(topics=(board.RELEASE_PUBLISHED,))
    assert releases and releases[0].subject == "v1.4.0"
    wait_for(lambda: flows_of("micro-saas")[0].status == "done")


def test_tickets_from_a_webhook_and_a_new_email_thread_are_triaged_into_the_backlog(
    runtime: Runtime, dispatcher: Dispatcher
) -> None:
    log = runtime.store.log
    for n, (sender, text) in enumerate(
        [
            ("ann@a.example", "Could you add an export to Excel spreadsheets? A feature request."),
            ("cy@c.example", "Feature request: export my data to Excel spreadsheets please"),
        ]
    ):
        log.append(
            "webhook-support",
            [
                ev.NewEvent(
                    ev.WebhookReceived(
                        source="support",
                        kind="generic",
                        delivery_id=f"t-{n}",
                        event_type="ticket.created",
                        payload={"email": sender, "subject": "Idea", "text": text},
                    ),
                    idempotency_key=f"webhook:support:t-{n}",
                )
            ],
            metadata=ev.Metadata(actor="webhook:support"),
        )
    log.append(
        "inbox",
        [
            ev.NewEvent(
                ev.EmailReceived(
                    message_id="m-1@d.example",
                    from_address="dee@d.example",
                    subject="Login broken",
                    text="The login page crashes since this morning, we are blocked!",
                ),
                idempotency_key="email:m-1@d.example",
            ),
            ev.NewEvent(
                ev.EmailReceived(
                    message_id="m-2@d.example",
                    in_reply_to="m-0@invoicer.example",
                    from_address="dee@d.example",
                    text="Thanks!",
                ),
                idempotency_key="email:m-2@d.example",
            ),
        ],
        metadata=ev.Metadata(actor="inbox"),
    )
    advance_flows(runtime.conductor, runtime.reactions)
    advance_flows(runtime.conductor, runtime.reactions)  # a second pass starts nothing again
    triaged = wait_for(lambda: len(triage_jobs()) == 3 and triage_jobs())
    assert {j.text for j in triaged} == {
        "ticket from ann@a.example",
        "ticket from cy@c.example",
        "ticket from dee@d.example",
    }
    wait_for(lambda: sum(i.posts for i in board.backlog()) == 3)
    items = board.backlog()
    assert items[0].kind == "blocked" and items[0].customers == ("dee@d.example",)
    assert items[1].kind == "feature" and items[1].posts == 2
    text = say(dispatcher, "/backlog")
    assert text.index("login") < text.index("Excel") and "2 customer(s)" in text
    # The email's sender is whatever its From header says: its job is marked unverified,
    # so no approval rule replies without a tap; a signed webhook's is not.
    unverified = {j.text: _job_input(runtime.store.log, j.job_id).get(UNVERIFIED) for j in triaged}
    assert unverified["ticket from dee@d.example"]
    assert unverified["ticket from ann@a.example"] is None


def test_the_content_flow_drafts_a_post_from_the_weeks_notes_once_per_slot(
    runtime: Runtime, service: JobService, settings: Settings
) -> None:
    conductor = runtime.conductor
    assert conductor is not None
    runtime.memory.remember(
        "Shipped the onboarding checklist; new users finish setup twice as fast.",
        kind="note",
        source="/remember",
        by="console:local",
    )
    zone = ZoneInfo("Europe/Berlin")
    slot, _ = schedule_slot("schedule:weekly-mon@09:00", utcnow(), zone)
    at = slot + timedelta(minutes=5)
    assert conductor.start_from_triggers(now=at) == 1
    assert conductor.start_from_triggers(now=at + timedelta(hours=1)) == 0  # same slot
    conductor.tick(now=at)
    flow = wait_for(lambda: (f := flows_of("content")) and f[0].job_id and f[0])
    approve_all(service, str(flow.job_id))
    feed = (settings.documents_path / "feed.xml").read_text()
    assert "onboarding checklist" in feed
    wait_for(lambda: flows_of("content")[0].status == "done")
    # Four days later the slot is too old to run late: nothing starts.
    assert conductor.start_from_triggers(now=slot + timedelta(days=4)) == 0


def test_a_week_with_nothing_new_ends_the_content_flow_without_a_post(
    runtime: Runtime, settings: Settings
) -> None:
    conductor = runtime.conductor
    assert conductor is not None
    slot, _ = schedule_slot("schedule:weekly-mon@09:00", utcnow(), ZoneInfo("Europe/Berlin"))
    conductor.start_from_triggers(now=slot)
    conductor.tick(now=slot)
    done = wait_for(lambda: (f := flows_of("content")) and f[0].status == "done" and f[0])
    assert not queries.actions_for_job(str(done.results["post"]["job_id"]))
    assert not (settings.documents_path / "feed.xml").exists()


# Pure parts --------------------------------------------------------------------------------


def test_schedule_slots_are_local_time_and_the_latest_at_or_before_now() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    slot, period = schedule_slot("schedule:weekly-mon@09:00", wednesday, berlin)
    assert slot == datetime(2026, 11, 23, 8, 0, tzinfo=UTC) and period == timedelta(days=7)
    slot, period = schedule_slot("schedule:daily@14:00", wednesday, berlin)
    assert slot == datetime(2026, 11, 24, 13, 0, tzinfo=UTC) and period == timedelta(days=1)
    # Monday 08:59 local is before Monday's slot: the week before's.
    early = datetime(2026, 11, 23, 7, 59, tzinfo=UTC)
    assert schedule_slot("schedule:weekly-mon@09:00", early, berlin)[0].day == 16
    # Across the switch to summer time the local hour holds.
    summer = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
    assert schedule_slot("schedule:daily@09:00", summer, berlin)[0].hour == 7


def test_templates_load_and_a_webhook_filter_matches_the_payload(tmp_path: Path) -> None:
    templates = load_templates(("consultant", "micro-saas", "content"), workspace_dir=tmp_path)
    saas = templates["micro-saas"]
    assert saas.matches({"action": "published", "release": {"tag_name": "v1"}})
    assert not saas.matches({"action": "created"}) and not saas.matches({})
    assert templates["content"].trigger.startswith("schedule:")


def test_a_fix_closes_a_post_by_its_reference_or_by_two_words_in_common() -> None:
    post = BoardPost(
        "abcdef0123456789abcdef0123456789",
        board.CUSTOMER_BLOCKED,
        "bob@x.example",
        "bob is blocked",
        {"summary": "The export fails with a 500 error"},
        "agent:triage",
        None,
        utcnow(),
    )
    assert board.related("fix: export no longer fails with a 500", post)
    assert board.related("fix: handle big files (T-abcdef)", post)
    assert not board.related("fix: typo in the export menu", post)
    assert board.keywords("Exports fail! The customers are BLOCKED.") == {
        "export",
        "fail",
        "blocked",
    }


def test_backlog_ranks_blocked_customers_then_bugs_then_features_by_demand() -> None:
    now = utcnow()

    def post(n: int, topic: str, who: str, summary: str, paying: bool = False) -> BoardPost:
        return BoardPost(
            f"{n:032x}", topic, who, summary, {"summary": summary, "paying": paying}, "t", None, now
        )

    items = board.backlog(
        [
            post(1, board.FEATURE_REQUEST, "a@x", "Dark mode for the dashboard"),
            post(2, board.FEATURE_REQUEST, "b@x", "Please a dark mode on the dashboard", True),
            post(3, board.FEATURE_REQUEST, "c@x", "Export to Excel spreadsheets"),
            post(4, board.BUG_REPORTED, "d@x", "Typo on the pricing page"),
            post(5, board.CUSTOMER_BLOCKED, "e@x", "Login crashes"),
        ]
    )
    assert [i.kind for i in items] == ["blocked", "bug", "feature", "feature"]
    assert items[2].posts == 2 and items[2].customers == ("a@x", "b@x")
    assert "Dark mode" in board.render_backlog(items)


def test_triage_posts_blocking_bugs_and_feature_requests() -> None:
    assert board_topic("bug", "urgent", "site down") == board.CUSTOMER_BLOCKED
    assert board_topic("bug", "high", "we are blocked since today") == board.CUSTOMER_BLOCKED
    assert board_topic("bug", "normal", "small glitch") == board.BUG_REPORTED
    assert board_topic("feature_request", "low", "dark mode?") == board.FEATURE_REQUEST
    assert board_topic("billing", "high", "refund") == ""


def test_release_changes_come_from_pushes_since_the_last_release_or_the_notes() -> None:
    def delivery(n: int, kind: str, payload: dict[str, object]) -> ev.RecordedEvent:
        data = ev.WebhookReceived(
            source="github",
            kind="github",
            delivery_id=f"d{n}",
            event_type=kind,
            payload={"repository": REPO, **payload},
        )
        return ev.RecordedEvent(
            event_id=str(n),
            position=n,
            stream_id="webhook-github",
            version=n,
            data=data,
            metadata=ev.Metadata(actor="t"),
            idempotency_key=None,
            recorded_at=utcnow(),
        )

    main = {"ref": "refs/heads/main"}
    history = [
        delivery(1, "push", {**main, "commits": [{"id": "a", "message": "feat: old"}]}),
        delivery(2, "release", {"action": "published"}),
        delivery(3, "push", {**main, "commits": [{"id": "b", "message": "fix: new\n\nbody"}]}),
        delivery(4, "push", {"ref": "refs/heads/wip", "commits": [{"id": "c", "message": "x"}]}),
        delivery(5, "release", {"action": "published"}),
        delivery(6, "push", {**main, "commits": [{"id": "d", "message": "feat: later"}]}),
    ]
    got = pushed_commits(history, repository="sam/invoicer", branch="main", until="d5")
    assert got == ["fix: new"]
    notes = "## What's Changed\n* feat: dark mode by @ana in https://github.com/o/r/pull/1\n\n**Full Changelog**: x"
    assert notes_lines(notes) == ["feat: dark mode"]


def test_ticket_payloads_and_new_threads() -> None:
    assert ticket_of({"email": "a@b.example", "text": "help"}) == {
        "sender": "a@b.example",
        "ticket": "help",
    }
    assert ticket_of({"text": "no sender"}) is None
    assert new_thread(ev.EmailReceived(message_id="m", from_address="a@b.example", text="x"))
    assert not new_thread(
        ev.EmailReceived(message_id="m", from_address="a@b.example", in_reply_to="o", text="x")
    )
