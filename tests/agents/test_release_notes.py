"""Release notes: parsing, the pure grouping, the template, faithful drafts, runs end to end."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from agents.errors import AgentInputError
from agents.providers.base import ModelProvider
from agents.providers.offline import OfflineProvider
from agents.providers.scripted import ScriptedProvider
from agents.registry import AgentRegistry
from agents.release_notes import (
    DRAFT_TASK,
    SYSTEM_PROMPT,
    ReleaseDraft,
    ReleaseGroups,
    ReleaseNotesAgent,
    draft_problems,
    group_changes,
    offline_draft,
    parse_release,
    split_changes,
    subject_for,
)
from agents.runner import JobRunner, RunOutcome
from connectors.email import EmailConnector, OutboxDelivery
from store import Store, queries
from tests.builders import request_job

EXAMPLE = (
    "v1.4.0 to customers@list.example: fix: export 500 on large files; feat: dark mode; "
    "chore: bump deps"
)


def run_release(
    store: Store, tmp_path: Path, model: ModelProvider, text: str = EXAMPLE
) -> RunOutcome:
    request_job(store, "j1", agent="release_notes", payload=parse_release(text).model_dump())
    connectors = {
        "email": EmailConnector(sender="me@example.com", delivery=OutboxDelivery(tmp_path))
    }
    return JobRunner(
        log=store.log,
        registry=AgentRegistry.with_agents(connectors, [ReleaseNotesAgent()]),
        model=model,
        approval_ttl=timedelta(hours=1),
        operator_name="Sam",
    ).run("j1")


# Parsing ------------------------------------------------------------------------------


def test_the_example_line_gives_version_recipient_and_change_lines() -> None:
    release = parse_release(EXAMPLE)
    assert (release.version, release.to) == ("v1.4.0", "customers@list.example")
    assert release.changes == [
        "fix: export 500 on large files",
        "feat: dark mode",
        "chore: bump deps",
    ]
    assert subject_for(release.version) == "What's new in v1.4.0"


def test_changes_may_come_one_a_line_with_bullets_and_without_to() -> None:
    release = parse_release(
        "2.0.0-rc.1 <team@client.example>:\n- feat(api)!: remove the v1 endpoints\n"
        "* perf: faster search.\n\n1. docs: a new setup guide"
    )
    assert (release.version, release.to) == ("2.0.0-rc.1", "team@client.example")
    assert release.changes == [
        "feat(api)!: remove the v1 endpoints",
        "perf: faster search",
        "docs: a new setup guide",
    ]


def test_split_changes_drops_blanks_and_collapses_spaces() -> None:
    assert split_changes(" fix:  a ;;\n\n - feat: b.\n") == ["fix: a", "feat: b"]


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "usage: /release"),
        ("to customers@list.example: feat: x", "start with the version"),
        ("v1.4.0: feat: x", "give the address the notes go to"),
        ("v1.4.0 to customers@list.example feat: x", "give the address the notes go to"),
        ("v1.4.0 to customers@list.c: feat: x", "does not look like an address"),
        ("v1.4.0 to customers@list.example: ; \n", "list the changes"),
        (
            "v1.4.0 to customers@list.example: chore: bump deps; ci: cache",
            "every change is internal",
        ),
        ("v1 to a@b.example: " + "feat: x; " * 900, "longer than 8000 characters"),
    ],
)
def test_bad_input_is_refused_with_a_clear_hint(text: str, hint: str) -> None:
    with pytest.raises(AgentInputError, match=hint):
        parse_release(text)


# Grouping (pure) -----------------------------------------------------------------------


def test_changes_are_grouped_by_prefix_and_internal_ones_are_left_out() -> None:
    groups = group_changes(
        [
            "fix: export 500 on large files",
            "feat: dark mode",
            "perf: faster search",
            "docs: a new setup guide",
            "chore: bump deps",
            "refactor(core): split the parser",
            "test: more cases",
            "ci: cache wheels",
        ]
    )
    assert groups == ReleaseGroups(
        new=["Dark mode"],
        fixed=["Export 500 on large files"],
        improved=["Faster search", "A new setup guide"],
        omitted=["Bump deps", "Split the parser", "More cases", "Cache wheels"],
    )
    assert groups.customer_facing == [
        "Dark mode",
        "Export 500 on large files",
        "Faster search",
        "A new setup guide",
    ]


def test_scopes_breaking_marks_unknown_prefixes_and_duplicates() -> None:
    groups = group_changes(
        [
            "FIX(api): timeouts on login",
            "fix: timeouts on login",
            "feat!: drop the v1 endpoints",
            "security: tighter session cookies",
            "smaller install size",
            "chore!: internal only",
            "feat: ",
        ]
    )
    assert groups.fixed == ["Timeouts on login"]
    assert groups.new == ["Drop the v1 endpoints (breaking change)"]
    assert groups.improved == ["Security: tighter session cookies", "Smaller install size"]
    assert groups.omitted == ["Internal only"]
    assert groups.breaking


def test_grouping_is_deterministic_and_keeps_the_order_given() -> None:
    lines = ["feat: b", "fix: z", "feat: a"]
    assert group_changes(lines) == group_changes(list(lines))
    assert group_changes(lines).new == ["B", "A"]


# The template and the faithfulness check ----------------------------------------------


def facts_for(text: str = EXAMPLE) -> dict[str, str]:
    release = parse_release(text)
    groups = group_changes(release.changes)
    return {
        "version": release.version,
        "new": "\n".join(groups.new),
        "fixed": "\n".join(groups.fixed),
        "improved": "\n".join(groups.improved),
        "breaking": "yes" if groups.breaking else "",
        "operator": "Sam",
        "subject": subject_for(release.version),
    }


def test_the_offline_draft_lists_the_groups_and_leaves_out_internal_work() -> None:
    first = offline_draft(facts_for())
    assert first == offline_draft(facts_for())
    draft = ReleaseDraft.model_validate(json.loads(first))
    assert draft.subject == "What's new in v1.4.0"
    assert "Version v1.4.0 is out." in draft.body
    assert "\nNew\n- Dark mode\n\nFixed\n- Export 500 on large files\n" in draft.body
    assert "Improved" not in draft.body  # empty groups get no heading
    assert "deps" not in draft.body.lower()
    assert "breaking" not in draft.body
    assert draft.body.rstrip().endswith("Best regards,\nSam")
    release = parse_release(EXAMPLE)
    assert draft_problems(draft.body, release.version, group_changes(release.changes)) == []


def test_a_breaking_change_is_announced_in_the_template() -> None:
    draft = ReleaseDraft.model_validate_json(
        offline_draft(facts_for("v2.0.0 to a@b.example: feat!: drop the v1 endpoints"))
    )
    assert "this release includes a breaking change" in draft.body
    assert "- Drop the v1 endpoints (breaking change)" in draft.body


def test_draft_problems_catch_a_dropped_change_a_wrong_version_and_leaked_internal_work() -> None:
    groups = group_changes(parse_release(EXAMPLE).changes)
    body = "Version 1.4 brings: dark mode. We also did: bump deps."
    assert draft_problems(body, "v1.4.0", groups) == [
        "the change 'Export 500 on large files'",
        "the version 'v1.4.0'",
        "the internal change 'Bump deps' (it should stay out)",
    ]


# Runs ----------------------------------------------------------------------------------


def test_an_offline_run_proposes_the_notes_to_the_given_address(
    store: Store, tmp_path: Path
) -> None:
    outcome = run_release(store, tmp_path, OfflineProvider())
    assert outcome.status == "awaiting_approval"
    [action] = queries.actions_for_job("j1")
    assert (action.connector, action.action) == ("email", "send_email")
    assert action.params["to"] == "customers@list.example"
    assert action.params["subject"] == "What's new in v1.4.0"
    assert "- Dark mode" in action.params["body"] and "Bump deps" not in action.params["body"]
    assert not [f for f in action.flags if f.startswith("⚠")]
    assert outcome.summary.startswith(
        "Drafted release notes v1.4.0 for customers@list.example: 1 new, 1 fixed; "
        "1 internal left out. (offline"
    )


FAITHFUL = (
    "Hello,\n\nv1.4.0 is here, with one new feature and one fix.\n\nNew\n- Dark mode\n\n"
    "Fixed\n- Export 500 on large files\n\nQuestions? Reply to this email.\n\nBest regards,\nSam"
)


def test_a_faithful_model_draft_is_proposed_as_written(store: Store, tmp_path: Path) -> None:
    model = ScriptedProvider([json.dumps({"subject": "Release v1.4.0", "body": FAITHFUL})])
    outcome = run_release(store, tmp_path, model)
    [request] = model.requests
    assert request.task == DRAFT_TASK and request.task_class == "draft"
    assert request.messages[0].content == SYSTEM_PROMPT
    sent = json.loads(request.messages[1].content)["release"]
    assert (sent["version"], sent["new"], sent["fixed"], sent["improved"]) == (
        "v1.4.0",
        "Dark mode",
        "Export 500 on large files",
        "",
    )
    assert "deps" not in request.messages[1].content.lower()  # internal work never reaches it
    [action] = queries.actions_for_job("j1")
    assert action.params["subject"] == "Release v1.4.0"
    assert action.params["body"] == FAITHFUL
    assert "template draft used" not in outcome.summary


def test_invalid_json_from_the_model_gets_one_repair(store: Store, tmp_path: Path) -> None:
    model = ScriptedProvider(
        [
            json.dumps({"subject": "Release v1.4.0"}),  # no body
            json.dumps({"subject": "Release v1.4.0", "body": FAITHFUL}),
        ]
    )
    assert run_release(store, tmp_path, model).status == "awaiting_approval"
    first, repair = model.requests
    assert (first.task, repair.task) == (DRAFT_TASK, f"{DRAFT_TASK}.repair")
    assert "body" in repair.messages[-1].content
    [action] = queries.actions_for_job("j1")
    assert action.params["body"] == FAITHFUL


def test_a_model_draft_that_leaks_internal_work_is_replaced_by_the_template(
    store: Store, tmp_path: Path
) -> None:
    leaky = FAITHFUL.replace(
        "- Export 500 on large files", "- Export 500 on large files\n- Bump deps"
    )
    model = ScriptedProvider([json.dumps({"subject": "Release v1.4.0", "body": leaky})])
    outcome = run_release(store, tmp_path, model)
    [action] = queries.actions_for_job("j1")
    assert "Bump deps" not in action.params["body"]
    assert action.params["subject"] == "What's new in v1.4.0"
    assert "Version v1.4.0 is out." in action.params["body"]
    assert "template draft used" in outcome.summary and "'Bump deps'" in outcome.summary
