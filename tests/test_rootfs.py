"""Exclude rules, the sorted walk and the tar argv lists."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tests.conftest import needs_tool, sh
from tmpl2deb.errors import FormatError
from tmpl2deb.excludes import ExcludeRules, OwnedPaths
from tmpl2deb.rootfs import (
    decompress_argv,
    installed_packages,
    parse_os_release,
    tar_create_argv,
    walk,
)


def test_decompress_argv() -> None:
    assert decompress_argv(Path("r.tar")) is None
    assert decompress_argv(Path("r.tar.zst")) == ["zstd", "--decompress", "--stdout", "r.tar.zst"]
    assert decompress_argv(Path("r.tar.xz"))[0] == "xz"  # type: ignore[index]
    with pytest.raises(FormatError, match="unknown rootfs archive type"):
        decompress_argv(Path("r.zip"))
    with pytest.raises(FormatError):
        decompress_argv(Path("r.zst"))


def test_tar_create_argv_keeps_options_together() -> None:
    argv = tar_create_argv(Path("/r"), Path("/l"), 5)
    assert argv[:4] == ["tar", "--create", "--file=-", "--directory=/r"]
    for flag in (
        "--format=pax",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--selinux",
        "--numeric-owner",
        "--mtime=@5",
        "--clamp-mtime",
        "--files-from=/l",
    ):
        assert flag in argv
    assert any("delete=atime,delete=ctime" in a for a in argv)


def test_parse_os_release() -> None:
    text = (
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n# c\nVERSION_CODENAME=bookworm\n'
    )
    values = parse_os_release(text)
    assert values["ID"] == "debian" and values["VERSION_CODENAME"] == "bookworm"
    assert values["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


def test_installed_packages_skips_removed() -> None:
    status = (
        b"Package: b\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n\n"
        b"Package: a\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n"
    )
    assert installed_packages(status) == [("b", "2", "all")]


@pytest.mark.integration
def test_walk_order_matches_tar_sort_name(tmp_path: Path) -> None:
    needs_tool("tar")
    root = tmp_path / "r"
    for name in ("b/z", "b/a", "a-b/c", "a/b", "A", "a.b", os.fsdecode(b"\xe9")):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    listing = io.BytesIO()
    count = walk(root, ExcludeRules(()).select(OwnedPaths()), listing).entries
    ours = [n for n in listing.getvalue().split(b"\0") if n]
    tar = sh("tar", "--create", "--file=-", "--sort=name", "-C", root, ".", text=False)
    theirs = [
        line.rstrip(b"/")
        for line in sh(
            "tar", "--list", "--quoting-style=literal", "--file=-", input=tar.stdout, text=False
        ).stdout.split(b"\n")
        if line
    ]
    assert ours == theirs
    assert count == len(ours)


@pytest.mark.integration
def test_walk_prunes_excluded_directories(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "var/log/apt").mkdir(parents=True)
    (root / "var/log/apt/term.log").write_text("x")
    listing = io.BytesIO()
    walk(root, ExcludeRules(("/var/log/*",)).select(OwnedPaths()), listing)
    assert listing.getvalue().split(b"\0")[:-1] == [b".", b"./var", b"./var/log"]
