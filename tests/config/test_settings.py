from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("OPCORE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_embedded_defaults_need_no_settings(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.broker_url == "memory://"
    assert settings.in_process_broker
    assert (
        settings.resolved_database_url == f"sqlite:///{(tmp_path / 'data' / 'opcore.db').resolve()}"
    )
    assert settings.operators == ("console:local",)
    assert settings.is_operator("console", "local")


def test_environment_variables_use_the_opcore_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCORE_OPERATORS", "console:local, telegram:12345")
    monkeypatch.setenv("OPCORE_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("OPCORE_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    monkeypatch.setenv("OPCORE_LLM_API_KEY", "sk-secret")
    settings = load_settings()
    assert settings.operators == ("console:local", "telegram:12345")
    assert not settings.in_process_broker
    assert settings.resolved_database_url == "postgresql://postgres@127.0.0.1/test"
    assert "sk-secret" not in repr(settings)


def test_opcore_toml_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "opcore.toml").write_text('operator_name = "Sam"\nllm_model = "from-toml"\n')
    monkeypatch.setenv("OPCORE_LLM_MODEL", "from-env")
    settings = load_settings()
    assert settings.operator_name == "Sam"
    assert settings.llm_model == "from-env"


def test_opcore_config_names_another_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('email_from = "sam@rivera.example"\n')
    monkeypatch.setenv("OPCORE_CONFIG", str(other))
    assert load_settings().email_from == "sam@rivera.example"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPCORE_BROKER_URL", "amqp://x"),
        ("OPCORE_DATABASE_URL", "mysql://x"),
        ("OPCORE_OPERATORS", "nobody"),
        ("OPCORE_SMTP_URL", "http://mail"),
        ("OPCORE_WORKER_THREADS", "0"),
        ("OPCORE_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(Exception, match="frozen"):
        settings.broker_url = "redis://x"  # type: ignore[misc]
