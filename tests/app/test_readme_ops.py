"""The README's operator sections agree with the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.app import exit_codes

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def test_exit_code_table_is_exit_codes_py() -> None:
    table = section("### Exit codes")
    rows = dict((name, int(code)) for code, name in
                re.findall(r"^\| (\d+) \| `(EXIT_\w+)` \|", table, re.M))
    constants = {k: v for k, v in vars(exit_codes).items() if k.startswith("EXIT_")}
    assert rows == constants


def test_walkthrough_section_points_at_the_tested_script() -> None:
    text = section("## Walkthrough: three nodes from an empty state repo")
    script = (ROOT / "examples" / "walkthrough.sh").read_text()
    assert "examples/walkthrough.sh" in text and "tests/app/test_walkthrough.py" in text
    for line in ("git init -q state", "mkdir -p origin/tiny-corpus/shards",
                 "echo '{\"rows\": 3}' > origin/tiny-corpus/meta.json", "replicas: 3",
                 "selector: {gpu: h100}", "sr lock state tiny-corpus",
                 'git -C state commit -qm "tiny-corpus v1, locked"'):
        assert line in text and line in script, line


def test_troubleshooting_covers_each_symptom() -> None:
    text = section("## Troubleshooting")
    for heading in ("### A dataset stays in `Fetching`", "### Origin errors",
                    "### A rejected revision", "### Disk full", "### A peer that never connects"):
        assert heading in text, heading


def test_placeholders_and_diagram() -> None:
    assert "\n## Benchmarks\n" in README and "bench/README.md" in section("## Benchmarks")
    assert "```mermaid\nflowchart LR" in section("## How it works")
