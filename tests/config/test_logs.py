"""Log lines carry the job's correlation id, as text or as one JSON object per line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from config.logs import configure, correlated


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_correlation_id_and_the_exception(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "json")
    log = logging.getLogger("opcore.test")
    with correlated("3870dffde7c946a981dae61d3f133343"):
        log.info("job %s started", "3870df")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    log.warning("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [x["msg"] for x in lines] == ["job 3870df started", "it failed", "outside"]
    assert lines[0]["correlation_id"] == "3870dffde7c946a981dae61d3f133343"
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "opcore.test"
    assert "ValueError: boom" in lines[1]["exc"]
    assert lines[2]["correlation_id"] == "-"


def test_text_lines_show_the_correlation_id_and_configure_twice_keeps_one_handler(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("WARNING", "text")
    configure("WARNING", "text")
    with correlated("abc123"):
        logging.getLogger("opcore.test").warning("careful")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith("WARNING opcore.test [abc123]: careful")
