"""Every command's `--help` ends with examples (issue 15), and names the exit codes."""

from __future__ import annotations

import re

import pytest

from reconciler.app.cli import COMMANDS, build_parser


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_runnable_examples(capsys: pytest.CaptureFixture[str], command: str) -> None:
    text = help_of(capsys, *([command] if command else []))
    assert "\nexamples:\n" in text, text
    examples = text.split("\nexamples:\n", 1)[1]
    lines = [l.strip() for l in examples.splitlines() if l.startswith("  syncbit-reconcile")
             or "syncbit-reconcile " in l and l.startswith("  ")]
    assert len(lines) >= 2, examples
    for line in lines:  # every example parses as the command it illustrates
        cmd = line.split("#", 1)[0].split("&&", 1)[0].split("|", 1)[0].split("2>", 1)[0]
        words = cmd.split()
        words = words[words.index("syncbit-reconcile") + 1:]
        args = build_parser().parse_args(words)
        if command:
            assert args.command == command or (command == "plan" and args.dry_run), line
    # Raw formatting: the examples keep their own line breaks and alignment.
    assert re.search(r"\n  syncbit-reconcile \S", examples)
    assert "exit code" in examples


def test_validate_help_mentions_config_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "validate")
    assert "--config P" in text and 'warning: ' in text
