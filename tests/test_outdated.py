"""outdated: apt's own upgrade simulation against a template's manifest, on a real mirror."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Cli, needs_tool, sh

MIRROR = os.environ.get("TMPL2DEB_TEST_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCE = f"deb [signed-by={KEYRING}] {MIRROR} bookworm main"


@pytest.fixture
def old_template(cli: Cli, small_tree: Path, tmp_path: Path) -> Path:
    """A template whose dpkg status has an old hello, a current dash and an in-house package."""
    (small_tree / "var/lib/dpkg/status").write_text(
        "Package: hello\nStatus: install ok installed\nVersion: 2.10-2\nArchitecture: amd64\n\n"
        "Package: dash\nStatus: install ok installed\nVersion: 0.5.12-2\nArchitecture: amd64\n\n"
        "Package: in-house\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    argv: list[str | Path] = [
        "pack",
        small_tree,
        "--name",
        "old",
        "--version",
        "1",
        "--arch",
        "amd64",
        "-o",
        out,
    ]
    assert cli(*argv) == 0, cli.err
    return Path(cli.out.strip())


@pytest.mark.network
def test_outdated_reports_newer_versions_only(cli: Cli, old_template: Path) -> None:
    needs_tool("apt-get", "dpkg")
    assert cli("outdated", old_template, "--source", SOURCE) == 0, cli.err
    assert cli.out == "hello amd64 2.10-2 -> 2.10-3\n"
    assert "tmpl-old 1: 1 of 3 packages have newer versions" in cli.err
    assert cli("outdated", old_template, "--source", SOURCE, "--json") == 0, cli.err
    assert json.loads(cli.out) == [
        {"package": "hello", "architecture": "amd64", "version": "2.10-2", "candidate": "2.10-3"}
    ]


@pytest.mark.network
def test_outdated_bad_input(cli: Cli, old_template: Path) -> None:
    needs_tool("apt-get", "dpkg")
    assert cli("outdated", old_template) == 2  # no --source: a usage mistake
    assert "give the apt sources to compare with (--source)" in cli.err
    assert cli("outdated", old_template, "--source", f"deb {MIRROR} bookworm main") == 1
    assert "is not signed" in cli.err and len(cli.err.strip().splitlines()) <= 2


def test_outdated_rootfs_reads_its_own_lists_and_writes_nothing(
    cli: Cli, minbase: Path, tmp_path: Path
) -> None:
    """--rootfs: apt in the rootfs (chroot), its own sources and lists, no update, no cache."""
    needs_tool("apt-get", "chroot")
    root = tmp_path / "rootfs"
    sh("cp", "-a", minbase, root)
    repo = root / "srv/repo"
    repo.mkdir(parents=True)
    (repo / "Packages").write_text(
        "Package: dash\nVersion: 99\nArchitecture: amd64\nFilename: ./dash_99_amd64.deb\n"
        f"Size: 1\nSHA256: {'0' * 64}\nDescription: newer\n\n"
    )
    (root / "etc/apt/sources.list").write_text("deb [trusted=yes] file:/srv/repo ./\n")
    sh("chroot", root, "apt-get", "update", "-q")
    for cache in (root / "var/cache/apt").glob("*.bin"):
        cache.unlink()
    before = sorted(p.relative_to(root) for p in (root / "var").rglob("*"))
    assert cli("outdated", "--rootfs", root) == 0, cli.err
    dash = sh("dpkg-query", f"--root={root}", "-W", "-f=${Version}", "dash")
    assert cli.out == f"dash amd64 {dash.stdout} -> 99\n"
    assert f"{root}: 1 packages have newer versions" in cli.err
    assert sorted(p.relative_to(root) for p in (root / "var").rglob("*")) == before
    assert cli("outdated", "--rootfs", tmp_path) == 1
    assert "is not a root filesystem" in cli.err
    assert cli("outdated", "--rootfs", root, "--source", SOURCE) == 2
