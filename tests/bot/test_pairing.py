from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agents import pairing
from bot.dispatch import REFUSAL, Dispatcher
from bot.messages import InboundMessage, Outbound, Reply
from bot.notifier import addressed
from jobs.runtime import Runtime
from store.log import utcnow
from tests.e2e_helpers import opcore, opcore_env


def from_stranger(text: str, user: str = "777") -> InboundMessage:
    return InboundMessage("telegram", user, f"chat-{user}", text)


def test_a_pairing_code_makes_its_sender_an_operator_once(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    assert dispatcher.handle_message(from_stranger("/status"))[0].text == REFUSAL
    code, _ = pairing.issue(runtime.store.log, "telegram", by="cli")
    [paired] = dispatcher.handle_message(from_stranger(f"/pair {code.lower()}"))
    assert paired.text.startswith("Paired")
    assert "Queue" in dispatcher.handle_message(from_stranger("/status"))[0].text
    [reused] = dispatcher.handle_message(from_stranger(f"/pair {code}", user="888"))
    assert "not valid" in reused.text
    assert dispatcher.handle_message(from_stranger("/status", user="888"))[0].text == REFUSAL


def test_a_code_for_another_channel_or_an_expired_one_is_refused(
    dispatcher: Dispatcher, runtime: Runtime
) -> None:
    slack_code, _ = pairing.issue(runtime.store.log, "slack", by="cli")
    assert "not valid" in dispatcher.handle_message(from_stranger(f"/pair {slack_code}"))[0].text
    old, _ = pairing.issue(
        runtime.store.log, "telegram", by="cli", now=utcnow() - timedelta(hours=1)
    )
    assert "not valid" in dispatcher.handle_message(from_stranger(f"/pair {old}"))[0].text
    assert "not valid" in dispatcher.handle_message(from_stranger("/pair ABCD-EFGH"))[0].text


def test_only_the_hash_of_a_code_is_in_the_log(runtime: Runtime) -> None:
    code, _ = pairing.issue(runtime.store.log, "telegram", by="cli")
    raw = code.replace("-", "")
    for event in runtime.store.log.read_stream("pairing"):
        assert raw not in event.data.model_dump_json() and code not in event.data.model_dump_json()


def test_notifications_go_to_the_home_channel_when_one_is_set() -> None:
    note = Outbound("console", "local", Reply("Sent"))
    assert addressed(note, "") == note
    assert addressed(note, "telegram:12345") == Outbound("telegram", "12345", Reply("Sent"))
    assert addressed(note, "console") == Outbound("console", "local", Reply("Sent"))


def test_opcore_pair_prints_a_code_and_an_unconfigured_channel_is_explained(tmp_path: Path) -> None:
    env = opcore_env(tmp_path / "data")
    printed = opcore(["pair", "telegram"], env, cwd=tmp_path)
    assert printed.returncode == 0 and "/pair " in printed.stdout
    refused = opcore(["bot", "telegram"], env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "OPCORE_TELEGRAM_TOKEN" in refused.stderr
