"""derive: templates plus packages on top, with real apt-get in a chroot and a Debian mirror."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import EPOCH, Cli, http_server, needs_root, needs_tool, sh
from tmpl2deb import treeinfo
from tmpl2deb.cli import main
from tmpl2deb.unpack import open_template

pytestmark = pytest.mark.usefixtures("host_untouched")

MIRROR = os.environ.get("TMPL2DEB_TEST_MIRROR", "http://deb.debian.org/debian")
DEBIAN = f"deb {MIRROR} bookworm main"
BUILD_ONLY = (
    "etc/apt/sources.list.d/tmpl2deb-build.list",
    "etc/apt/apt.conf.d/90tmpl2deb-build",
    "etc/apt/tmpl2deb-build-keys",
    "usr/sbin/policy-rc.d",
    "etc/resolv.conf",
)


@pytest.fixture(autouse=True)
def _tools() -> None:
    needs_root()
    needs_tool("apt-get", "dpkg", "unshare", "chroot", "zstd", "tar")


def leftovers(dest: Path) -> list[str]:
    """What a failed derive might leave next to DEST."""
    return [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]


def installed(root: Path) -> set[str]:
    out = sh("dpkg-query", f"--root={root}", "-W", "-f", "${Package}\n").stdout
    return set(out.split())


def test_derive_refuses_mismatch_and_bad_input(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    deb = pack_small()  # arm64, debian bookworm, package dpkg installed
    dest = tmp_path / "rootfs"

    def fails(*args: str | Path, code: int = 1) -> str:
        assert cli("derive", deb, dest, *args) == code  # 2: a usage mistake
        assert not dest.exists() and not leftovers(dest)
        return cli.err

    assert "has architecture 'arm64', the build wants 'amd64'" in fails("--arch", "amd64")
    assert "use --allow-mismatch" in fails("--suite", "trixie")
    assert "has signature '(none)'" in fails("--expect-signature", "abc123")
    assert "not installed: nothere" in fails("--purge", "nothere")
    assert "needs apt sources" in fails("--install", "hello", code=2)
    assert "bad apt source" in fails("--source", "deb bookworm", "--install", "hello", code=2)
    assert cli("derive", deb, dest, "--version", "2.0") == 2  # a usage mistake
    assert "need --template-name" in cli.err and not dest.exists()
    assert "both to install and to purge: dpkg" in fails(
        "--install", "dpkg", "--purge", "dpkg", code=2
    )
    # allowed mismatch, nothing to install: the rootfs of the template
    assert cli("derive", deb, dest, "--suite", "trixie", "--allow-mismatch") == 0, cli.err
    assert "warning: template tmpl-small 1.0 has suite 'bookworm'" in cli.err
    assert (dest / "var/lib/dpkg/status").is_file()
    assert cli("derive", deb, dest) == 1
    assert "is not empty" in cli.err


@pytest.fixture(scope="module")
def base_deb(minbase: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The minbase rootfs packed as template tmpl-base 1.0."""
    out = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        assert main(["pack", os.fspath(minbase), "--name", "base", "--version", "1.0",
                     "-o", os.fspath(out), "-q"]) == 0  # fmt: skip
    yield out / "tmpl-base_1.0_amd64.deb"


@pytest.mark.integration
def test_chain_base_middleware_application(
    cli: Cli, base_deb: Path, minbase: Path, tmp_path: Path, gnupg: Callable[[], str]
) -> None:
    """base (minbase) -> middleware (+hello) -> application (+less, -tzdata of the base),
    the base travelling through a signed repository served over HTTP."""
    needs_tool("reprepro", "gpg")
    key = gnupg()
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, "--sign-with", key, base_deb) == 0, cli.err
    staging = tmp_path / "staging"
    with http_server(repo) as url:
        source = f"deb [signed-by={repo / 'archive-keyring.gpg'}] {url} bookworm main"
        assert cli("stage", "--source", source, "tmpl-base", staging) == 0, cli.err

    out = tmp_path / "out"
    out.mkdir()
    middleware = tmp_path / "middleware"
    assert (
        cli("derive", staging, middleware, "--source", DEBIAN, "--install", "hello",
            "--arch", "amd64", "--distro", "debian", "--suite", "bookworm",
            "--template-name", "middleware", "--version", "1.0", "--feature", "hello", "-o", out,
            "--delta")
        == 0
    ), cli.err  # fmt: skip
    mw_deb = Path(cli.out.strip())
    assert mw_deb == out / "tmpl-middleware_1.0_amd64.deb"
    base = open_template(base_deb).metadata
    mw = open_template(mw_deb).metadata
    assert mw.parent == "tmpl-base (= 1.0)"
    assert mw.parent_sha256 == base.rootfs_sha256
    assert (mw.added, mw.removed, mw.features) == (("hello",), (), ("hello",))
    assert mw.payload == "delta"
    assert cli("info", mw_deb, "--with-parent", base_deb) == 0
    assert "Parent          tmpl-base (= 1.0)" in cli.out
    assert "                tmpl-base 1.0 full" in cli.out

    # the signed-by key of the build is copied in for the build, and taken out again
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    application = tmp_path / "application"
    assert (
        cli("derive", mw_deb, application, "--source", f"deb [signed-by={keyring}] {MIRROR} "
            "bookworm main", "--install", "less", "--purge", "tzdata", "--with-parent", base_deb,
            "--template-name", "application", "--version", "1.0", "--delta", "-o", out)
        == 0
    ), cli.err  # fmt: skip
    app_deb = Path(cli.out.strip())
    assert open_template(app_deb).metadata.parent == "tmpl-middleware (= 1.0)"
    assert installed(application) == (installed(minbase) | {"hello", "less"}) - {"tzdata"}
    assert sh("dpkg", f"--root={application}", "--audit").stdout == ""
    assert (application / "usr/bin/hello").is_file()
    assert (application / "usr/bin/less").is_file()
    assert not (application / "usr/share/zoneinfo").exists()
    for root in (middleware, application):
        present = [name for name in BUILD_ONLY if os.path.lexists(root / name)]
        assert present == [], f"build-only files left in {root}"
        assert not [
            p for p in (root / "var/lib/apt/lists").iterdir() if p.is_file() and p.name != "lock"
        ]
        assert not list((root / "var/cache/apt/archives").glob("*.deb"))

    # each a delta of the one before: the chain gives what a full template of it gives
    full = tmp_path / "full"
    full.mkdir()
    assert cli("pack", application, "--name", "application", "--version", "1.0", "-o", full) == 0
    full_deb = Path(cli.out.strip())
    sizes = {deb: open_template(deb).payload.span.size for deb in (mw_deb, app_deb, full_deb)}
    assert sizes[app_deb] < 0.05 * sizes[full_deb], sizes
    assert cli("unpack", app_deb, tmp_path / "via-full-deb", "--with-parent", base_deb) == 0
    # through the repository: stage fetches the chain the Depends name
    assert cli("publish", "--repo", repo, "--sign-with", key, mw_deb, app_deb) == 0, cli.err
    staging2 = tmp_path / "staging2"
    with http_server(repo) as url:
        source = f"deb [signed-by={repo / 'archive-keyring.gpg'}] {url} bookworm main"
        assert cli("stage", "--source", source, "tmpl-application", staging2) == 0, cli.err
    staged = {p.name.split("_")[0] for p in (staging2 / "var/cache/apt/archives").glob("*.deb")}
    assert staged == {"tmpl-base", "tmpl-middleware", "tmpl-application"}
    for deb, dest in ((full_deb, "via-full"), (staging2, "via-chain")):
        assert cli("unpack", deb, tmp_path / dest) == 0, cli.err
    want = treeinfo.describe(tmp_path / "via-full")
    for dest in ("via-chain", "via-full-deb"):
        assert treeinfo.differences(treeinfo.describe(tmp_path / dest), want) == []


@pytest.mark.integration
def test_apt_failure_inside_derive(cli: Cli, base_deb: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    argv: list[str | Path] = [
        "derive",
        base_deb,
        dest,
        "--source",
        DEBIAN,
        "--install",
        "no-such-package-tmpl2deb",
    ]
    assert cli(*argv) == 1
    assert "Unable to locate package no-such-package-tmpl2deb" in cli.err
    assert not dest.exists() and not leftovers(dest)
