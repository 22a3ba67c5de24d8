"""The Debian package of tmpl2deb itself builds, passes lintian and carries what it needs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import needs_tool, sh

PROJECT = Path(__file__).resolve().parent.parent
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's python3, not one a user put first


@pytest.mark.integration
def test_package_builds_and_is_lintian_clean(tmp_path: Path) -> None:
    if not (PROJECT / ".git").exists():
        # autopkgtest (the installed package's tests) or this very build (make deb)
        pytest.skip("not a git checkout of tmpl2deb")
    needs_tool("dpkg-buildpackage", "dh", "lintian", "git")
    source = tmp_path / "tmpl2deb"
    files: str = sh("git", "-C", PROJECT, "ls-files", "-co", "--exclude-standard", "-z").stdout
    for name in [n for n in files.split("\0") if n]:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (PROJECT / name).is_file():
            shutil.copy2(PROJECT / name, target)
    env = {**os.environ, "PATH": DEBIAN_PATH, "DEB_BUILD_OPTIONS": "nocheck"}
    # the test suite is what runs this test; the build runs it again in `make deb`
    sh("dpkg-buildpackage", "-us", "-uc", "-b", "-Pnocheck", cwd=source, env=env)
    deb = tmp_path / "tmpl2deb_0.1.0_all.deb"
    lintian = sh("lintian", "--fail-on", "error", deb, env=env, check=False)
    assert lintian.returncode == 0, lintian.stdout + lintian.stderr

    depends = sh("dpkg-deb", "--field", deb, "Depends").stdout
    for package in ("python3-debian", "python3-arpy", "zstd", "gpg"):
        assert package in depends
    assert "python3-apt" not in depends  # python-debian compares versions
    assert "reprepro" not in depends  # tmpl2deb writes the repository itself
    contents = sh("dpkg-deb", "--contents", deb).stdout
    for path in (
        "./usr/bin/tmpl2deb",
        "./usr/share/man/man1/tmpl2deb.1.gz",
        "./usr/share/bash-completion/completions/tmpl2deb",
        "./usr/lib/python3/dist-packages/tmpl2deb/cli.py",
        "./usr/share/doc/tmpl2deb/examples/apt-repo/conf/distributions",
    ):
        assert path in contents
    # the installed entry point runs on Debian's python3 with the packaged modules
    root = tmp_path / "root"
    sh("dpkg-deb", "-x", deb, root)
    env["PYTHONPATH"] = os.fspath(root / "usr/lib/python3/dist-packages")
    version = sh(root / "usr/bin/tmpl2deb", "--version", env=env).stdout
    assert version == "tmpl2deb 0.1.0\n"
    head = (root / "usr/bin/tmpl2deb").read_text().splitlines()[0]
    assert head == "#!/usr/bin/python3"
