"""What the host lacks, by Debian package: tmpl2deb.requirements, and python3 -m tmpl2deb
without one of its modules (the Isar classes run both; they must not end in a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
