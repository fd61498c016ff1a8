"""``sisdaemon --help``: a sentence that names every command (trial report item 19)."""

from __future__ import annotations

import subprocess
import sys

from sisdaemon.cli import build_parser


def test_the_help_describes_sisdaemon_in_a_sentence_naming_every_command() -> None:
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    names = list(commands.choices or {})
    assert {"run", "submit", "status", "check", "check-config", "sandbox", "demo"} <= set(names)
    text = " ".join(
        subprocess.run(
            [sys.executable, "-m", "sisdaemon", "--help"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    described = text.split(" positional arguments:")[0]
    assert described.startswith("usage: sisdaemon [-h] [--version] COMMAND ... sisdaemon watches drop folders")
    listed = described.split("Its commands are ", 1)[1].split(";", 1)[0]
    assert listed == ", ".join(names[:-1]) + f" and {names[-1]}"
    assert described.endswith("tells more.") and ",;" not in described and ", ;" not in described
