"""What the host lacks, by Debian package: tmpl2deb.requirements, and python3 -m tmpl2deb
without one of its modules (the Isar classes run both; they must not end in a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli

PROJECT = Path(__file__).resolve().parent.parent


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT, capture_output=True, text=True, check=False
    )


def test_requirements_names_the_debian_packages_missing() -> None:
    result = _python("-m", "tmpl2deb.requirements", "tar", "dpkg-deb", "zstd")
    assert (result.returncode, result.stdout) == (0, "")
    result = _python("-m", "tmpl2deb.requirements", "tar", "tmpl2deb-no-such-tool", "xz")
    assert result.returncode == 1
    assert result.stdout.split() == ["tmpl2deb-no-such-tool"]


def test_a_missing_python_module_is_one_line_naming_its_package() -> None:
    # None in sys.modules: importing arpy raises ModuleNotFoundError, as when it is not installed
    run = (
        "import runpy, sys; sys.modules['arpy'] = None; "
        "runpy.run_module('tmpl2deb', run_name='__main__')"
    )
    result = _python("-c", run, "info", str(PROJECT / "README.md"))
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "tmpl2deb: error: Python module arpy not found; install package python3-arpy\n"
    )


def test_the_exit_code_tells_the_kind_of_error(
    cli: Cli, small_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 bad input, 2 a usage mistake, 3 the host failed (here: a tool not installed)."""
    out = tmp_path / "out"
    out.mkdir()
    assert cli("unpack", small_tree / "etc/hostname", tmp_path / "x") == 1
    assert "not a Debian package" in cli.err
    bad_source = "http://example.org bookworm main"
    assert cli("stage", "--source", bad_source, "tmpl-x", tmp_path / "s") == 2
    assert "bad apt source" in cli.err
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    assert cli("pack", small_tree, "--name", "x", "-o", out) == 3
    assert "not found; install package" in cli.err and list(out.iterdir()) == []
