"""``opcore contacts import`` / ``export`` from the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from store import open_store

GOOGLE = (
    "Name,Given Name,Family Name,Notes,E-mail 1 - Type,E-mail 1 - Value,Phone 1 - Type,"
    "Phone 1 - Value,Organization 1 - Name\r\n"
    'Jane Doe,Jane,Doe,"Met at the fair,\r\nwants a quote",* Work,jane@acme.example,Mobile,'
    "+351 912 345 678,Acme Lda\r\n"
    "Bob Stone,Bob,Stone,,* Home,bob@stone.example,,,Stone & Sons\r\n"
)

WITH_BAD_ROWS = (
    "Name,Email,Company\n"
    "Ann,ann@a.example,A\n"
    "No Address,,B\n"
    "Typo,carl(at)c.example,C\n"
    "Dee,dee@d.example,D\n"
)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPCORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPCORE_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path


def _events(env: Path) -> int:
    store = open_store(f"sqlite:///{env / 'data' / 'opcore.db'}")
    try:
        return len(store.log.read_all(limit=10_000))
    finally:
        store.close()


def test_import_export_and_import_again_from_the_terminal(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "google.csv").write_text(GOOGLE, encoding="utf-8-sig")

    assert main(["contacts", "import", str(env / "google.csv")]) == 0
    assert capsys.readouterr().out == "created 2, updated 0, unchanged 0\n"
    count = _events(env)
    assert main(["contacts", "import", str(env / "google.csv")]) == 0
    assert capsys.readouterr().out == "created 0, updated 0, unchanged 2\n"

    assert main(["contacts", "export", str(env / "all.vcf")]) == 0
    assert "exported 2 contact(s) as vcf to" in capsys.readouterr().out
    vcards = (env / "all.vcf").read_bytes()
    assert vcards.startswith(b"BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Bob Stone\r\n")
    assert main(["contacts", "import", str(env / "all.vcf")]) == 0
    assert capsys.readouterr().out == "created 0, updated 0, unchanged 2\n"

    assert main(["contacts", "export", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "Name,Email,Company,Phone,Notes"
    assert "Jane Doe,jane@acme.example,Acme Lda,+351 912 345 678" in captured.out
    assert "exported 2 contact(s) as csv" in captured.err
    assert _events(env) == count


def test_bad_rows_exit_1_and_the_good_ones_are_imported_unless_strict(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = env / "list.csv"
    path.write_text(WITH_BAD_ROWS)

    assert main(["contacts", "import", str(path), "--strict"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "2 bad row(s): nothing imported (--strict)\n"
    assert f"{path}:3: no email address" in captured.err
    assert f"{path}:4: invalid email address 'carl(at)c.example'" in captured.err
    assert _events(env) == 0

    assert main(["contacts", "import", str(path)]) == 1
    assert capsys.readouterr().out == "created 2, updated 0, unchanged 0; 2 bad row(s) skipped\n"
    assert _events(env) == 2


def test_a_dry_run_reports_and_writes_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = env / "contacts.txt"
    path.write_text("BEGIN:VCARD\nVERSION:4.0\nFN:Ada\nEMAIL:ada@engine.example\nEND:VCARD\n")

    assert main(["contacts", "import", str(path), "--format", "vcf", "--dry-run"]) == 0
    assert (
        capsys.readouterr().out == "created 1, updated 0, unchanged 0 (dry run: nothing written)\n"
    )
    assert _events(env) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "cannot read"),
        ("contacts.xlsx", "Name,Email\n", "cannot tell the format"),
        ("nomail.csv", "Name,Company\nJane,Acme\n", "no email column"),
        ("empty.csv", "", "empty"),
        ("cards.vcf", "Name,Email\nJane,jane@acme.example\n", "no vCard"),
    ],
)
def test_an_unusable_file_exits_2(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | None,
    message: str,
) -> None:
    if content is not None:
        (env / name).write_text(content)

    assert main(["contacts", "import", str(env / name)]) == 2
    assert message in capsys.readouterr().err
    assert not (env / "data" / "opcore.db").exists() or _events(env) == 0


def test_export_needs_a_known_format(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["contacts", "export", str(env / "out.txt")]) == 2
    assert "give --format csv or vcf" in capsys.readouterr().err
    assert main(["contacts", "export", str(env / "out.txt"), "--format", "csv"]) == 0
    assert (env / "out.txt").read_text() == "Name,Email,Company,Phone,Notes\n"
    assert not list(env.glob(".*.partial"))
