"""tmpl2deb(1) is rendered from the parser: every command, option and help text is in it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tests.conftest import needs_tool, sh
from tmpl2deb.cli import build_parser
from tmpl2deb.manpage import _subparsers, render


def page_text(tmp_path: Path) -> str:
    """The man page as man(1) shows it, failing on any groff or man warning."""
    needs_tool("man", "groff")
    path = tmp_path / "tmpl2deb.1"
    path.write_text(render(epoch=1700000000))
    result = sh("man", "--warnings", "-l", path, env={**os.environ, "MANWIDTH": "2000"})
    assert result.stderr == "", result.stderr
    return " ".join(result.stdout.replace("\u2010", "-").split())


def test_man_page_matches_help(tmp_path: Path) -> None:
    text = page_text(tmp_path)
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) == {
        "pack",
        "info",
        "unpack",
        "publish",
        "remove",
        "list",
        "stage",
        "resolve",
        "initrd",
        "derive",
        "diff",
        "outdated",
    }
    for name, sub in commands.items():
        assert f"tmpl2deb {name}" in text
        assert " ".join((sub.description or "").split()) in text
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert option in text, f"{name} {option}"
            assert " ".join((action.help or "").split()) in text, f"{name} {action.dest}"
    for code in ("0", "1", "2", "130"):
        assert f" {code} " in text
    assert "2023-11-14" in text  # the date comes from the epoch given: reproducible
