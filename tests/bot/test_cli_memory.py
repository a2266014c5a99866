"""``opcore export`` / ``import`` / ``memory`` from the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from store import open_store
from store.memory.embeddings import NoEmbedder
from store.memory.service import Memory
from store.memory.sqlite_index import SqliteRecallIndex


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPCORE_DATA_DIR", str(tmp_path / "one"))
    monkeypatch.setenv("OPCORE_TELEGRAM_TOKEN", "123456:secret-token-value")
    monkeypatch.setenv("OPCORE_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path


def test_export_import_and_memory_status_from_the_terminal(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(f"sqlite:///{env / 'one' / 'opcore.db'}")
    memory = Memory(store, SqliteRecallIndex(env / "one" / "recall.db"), NoEmbedder())
    memory.remember("Acme wants the audit report by Friday", source="/remember", by="op")
    memory.index.close()
    store.close()

    assert main(["export", str(env / "backup.jsonl")]) == 0
    assert "exported" in capsys.readouterr().out
    assert "secret-token-value" not in (env / "backup.jsonl").read_text()

    monkeypatch.setenv("OPCORE_DATA_DIR", str(env / "two"))
    assert main(["import", str(env / "backup.jsonl")]) == 0
    assert "recall index rebuilt (1 memories)" in capsys.readouterr().out
    assert main(["import", str(env / "backup.jsonl")]) == 2  # not empty any more
    assert "already holds events" in capsys.readouterr().err

    assert main(["memory", "reindex"]) == 0
    out = capsys.readouterr().out
    assert "reindexed 1 memories with keywords only" in out and "keyword-only" in out
