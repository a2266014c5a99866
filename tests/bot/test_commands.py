from bot.commands import COMMANDS, ParsedCommand, help_text, parse_command


def test_a_slash_command_is_split_into_name_and_arguments() -> None:
    assert parse_command("/lead  Jane <j@a.example> x") == ParsedCommand(
        "lead", "Jane <j@a.example> x"
    )
    assert parse_command("/STATUS") == ParsedCommand("status", "")


def test_a_telegram_bot_suffix_is_ignored() -> None:
    assert parse_command("/help@opcore_bot") == ParsedCommand("help", "")


def test_plain_text_is_not_a_command() -> None:
    assert parse_command("hello /lead") is None
    assert parse_command("/") is None
    assert parse_command("/1abc") is None


def test_help_lists_every_command() -> None:
    text = help_text()
    for spec in COMMANDS.values():
        assert spec.usage in text
