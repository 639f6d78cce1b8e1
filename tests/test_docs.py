"""The commands and options the documentation shows exist: a renamed option would
otherwise fail only for the reader who types it."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache

from click.testing import CliRunner

from bikematch.app.cli import cli
from bikematch.core.settings import PROJECT_ROOT

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
# Every fenced block, whatever its language, so that the fences pair up.
_CODE_BLOCK = re.compile(r"^```[\w-]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`(bikematch [^`]*)`")
_OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")


@cache
def _help(*path: str) -> str:
    """The command's --help as `bikematch` prints it, in this process (what is under test
    is the text, not the program's start)."""
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="bikematch")
    assert result.exit_code == 0, result.output
    return result.output


def _subcommands(*path: str) -> set[str]:
    listing = _help(*path).partition("\nCommands:\n")[2]
    return set(re.findall(r"^  ([a-z][\w-]*)", listing, re.M))


def _shown_commands(text: str) -> list[str]:
    shown = [command for command in _INLINE.findall(text)]
    for block in _CODE_BLOCK.findall(text):
        for line in block.splitlines():
            for part in re.split(r"&&|\|\||;|\$\(", line):
                part = part.strip().removeprefix("$ ")
                if part.startswith("bikematch "):
                    shown.append(part.split("  #")[0])
    return shown


def test_every_command_and_option_the_docs_show_exists():
    commands = _subcommands()
    checked = 0
    for doc in DOCS:
        for shown in _shown_commands(doc.read_text(encoding="utf-8")):
            words = shown.split()
            name = words[1]
            assert name in commands, f"{doc.name}: `{shown}`: no command {name}"
            paths = [(name,)]
            subcommands = _subcommands(name)
            named = [word for word in words[2:] if word in subcommands]
            if named:  # `bikematch db url | status | stop`, `bikematch embed compare`
                paths = [(name, sub) for sub in named]
            for option in _OPTION.findall(shown):
                helped = " ".join(_help(*path) for path in paths)
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helped), (
                    f"{doc.name}: `{shown}`: no {option} in `bikematch {' '.join(paths[0])} --help`"
                )
                checked += 1
    assert checked > 20  # the parsing found the documented options


def test_python_dash_m_bikematch_runs_the_command_line():
    """Where the installed script is not on PATH (a machine that only has PYTHONPATH),
    `python -m bikematch` is the same command line."""
    shown = subprocess.run(
        [sys.executable, "-m", "bikematch", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Usage: bikematch serve"), shown.stdout
