from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.cli import main
from config import Settings


def test_init_writes_a_workspace_that_loads_and_runs_the_consultant_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPCORE_DATA_DIR", str(tmp_path / "data"))
    assert main(["init", "--template", "consultant", "--timezone", "Europe/Berlin"]) == 0
    assert "proposal \u2192 accepted" in capsys.readouterr().out
    config = tomllib.loads((tmp_path / "opcore.toml").read_text())
    assert config["flows"] == "consultant" and config["timezone"] == "Europe/Berlin"
    assert config["approval_rules"]["calendar.create_event"]["mode"] == "auto"
    assert (tmp_path / "data" / "flows" / "consultant.toml").is_file()
    monkeypatch.delenv("OPCORE_DATA_DIR")
    settings = Settings(_toml_file=tmp_path / "opcore.toml")  # type: ignore[call-arg]
    assert settings.flows == ("consultant",) and settings.timezone == "Europe/Berlin"
    # An existing config is never overwritten silently.
    assert main(["init", "--template", "consultant"]) == 2


def test_init_refuses_an_unknown_time_zone_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPCORE_DATA_DIR", str(tmp_path / "data"))
    assert main(["init", "--template", "consultant", "--timezone", "Mars/Olympus"]) == 2
    assert not (tmp_path / "opcore.toml").exists()


@pytest.mark.parametrize(
    ("template", "policy", "extra"),
    [
        ("micro-saas", "documents.append_changelog", "email_tickets"),
        ("content", "documents.publish_post", None),
    ],
)
def test_init_sets_up_the_micro_saas_and_content_workspaces(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    template: str,
    policy: str,
    extra: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPCORE_DATA_DIR", str(tmp_path / "data"))
    assert main(["init", "--template", template, "--timezone", "Europe/Paris"]) == 0
    assert "try:" in capsys.readouterr().out
    config = tomllib.loads((tmp_path / "opcore.toml").read_text())
    assert config["flows"] == template and config["approval_rules"][policy]["mode"] == "ask"
    if extra:
        assert config[extra] is True
    assert (tmp_path / "data" / "flows" / f"{template}.toml").is_file()
    monkeypatch.delenv("OPCORE_DATA_DIR")
    settings = Settings(_toml_file=tmp_path / "opcore.toml")  # type: ignore[call-arg]
    assert settings.flows == (template,)
