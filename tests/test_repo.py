"""publish, list and stage with real reprepro, gpg, apt-get and an HTTP server on loopback."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Cli, http_server, needs_root, needs_tool, sh
from tmpl2deb import treeinfo
from tmpl2deb.repo import DISTRIBUTIONS

pytestmark = pytest.mark.usefixtures("host_untouched")

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _tools() -> None:
    needs_root()  # stage installs with dpkg, as root
    needs_tool("reprepro", "apt-get", "dpkg", "gpg", "gpgv")


def packages_index(repo: Path, arch: str = "arm64") -> str:
    return (repo / f"dists/bookworm/main/binary-{arch}/Packages").read_text()


def staged_apt(staging: Path, *argv: str) -> str:
    """Run an apt tool as a consumer of the staging root's configuration."""
    env = {**os.environ, "APT_CONFIG": os.fspath(staging / "etc/apt/apt.conf")}
    out: str = sh(*argv, env=env).stdout
    return out


def plain_deb(tmp_path: Path) -> Path:
    """An ordinary package (not a template), built by dpkg-deb."""
    plain = tmp_path / "plain"
    (plain / "DEBIAN").mkdir(parents=True)
    (plain / "DEBIAN/control").write_text(
        "Package: plain\nVersion: 1\nArchitecture: arm64\nMaintainer: x <x@example.org>\n"
        "Section: misc\nPriority: optional\nDescription: not a template\n"
    )
    sh("dpkg-deb", "--root-owner-group", "-b", plain, tmp_path / "plain.deb")
    return tmp_path / "plain.deb"


def test_publish_creates_a_base_apt_layout(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small()) == 0, cli.err
    assert cli.out == "tmpl-small 1.0 arm64\n"
    # what publish writes for a new unsigned distribution is the documented example
    assert (repo / DISTRIBUTIONS).read_text() == (PROJECT / "apt-repo" / DISTRIBUTIONS).read_text()
    assert (repo / "pool/main/t/tmpl-small/tmpl-small_1.0_arm64.deb").is_file()
    assert (repo / "dists/bookworm/Release").is_file()
    assert not (repo / "dists/bookworm/InRelease").exists()
    index = packages_index(repo)
    for field in ("Template-Format: 1", "Template-Image: small", "Template-Suite: bookworm"):
        assert field in index
    sh("reprepro", "--basedir", repo, "check")  # reprepro's own consistency check


def test_publish_replaces_older_keeps_others_refuses_downgrade(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    one = pack_small()
    other = pack_small("--name", "other")
    two = pack_small("--version", "2.0")
    assert cli("publish", "--repo", repo, one, other) == 0, cli.err
    assert cli("publish", "--repo", repo, two) == 0, cli.err
    pool = sorted(p.name for p in (repo / "pool/main/t").glob("*/*.deb"))
    assert pool == ["tmpl-other_1.0_arm64.deb", "tmpl-small_2.0_arm64.deb"]
    before = packages_index(repo)
    assert cli("publish", "--repo", repo, one) == 1
    assert "already has tmpl-small 2.0 (arm64) in bookworm, newer than 1.0" in cli.err
    assert packages_index(repo) == before
    # --force (a build's own repository): whatever version it has is replaced
    assert cli("publish", "--repo", repo, "--force", one) == 0, cli.err
    assert "Version: 1.0" in packages_index(repo)
    assert not (repo / "pool/main/t/tmpl-small/tmpl-small_2.0_arm64.deb").exists()
    assert cli("publish", "--repo", repo, two) == 0, cli.err

    assert cli("list", "--repo", repo) == 0, cli.err
    lines = cli.out.splitlines()
    assert lines[0].split()[:4] == ["PACKAGE", "VERSION", "ARCH", "SUITE"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["tmpl-other", "1.0", "arm64", "bookworm/main"],
        ["tmpl-small", "2.0", "arm64", "bookworm/main"],
    ]
    assert cli("list", "--repo", repo, "--json") == 0, cli.err
    rows = json.loads(cli.out)
    assert [(r["package"], r["version"], r["image"]) for r in rows] == [
        ("tmpl-other", "1.0", "other"),
        ("tmpl-small", "2.0", "small"),
    ]
    assert rows[1]["size"] == two.stat().st_size


def test_publish_bad_input(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path, gnupg: Callable[[], str]
) -> None:
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, plain_deb(tmp_path)) == 1
    assert "not a tmpl2deb template" in cli.err
    assert cli("publish", "--repo", repo, pack_small(), "--sign-with", "nobody@example.org") == 1
    assert "no secret key 'nobody@example.org'" in cli.err
    assert cli("publish", "--repo", repo, tmp_path / "missing.deb") == 1
    assert not repo.exists(), "a failed publish must not leave a half-made repository"
    assert cli("list", "--repo", tmp_path) == 1
    assert "is not a repository" in cli.err


def test_signed_repository_over_http_stage_and_unpack(
    cli: Cli,
    pack_small: Callable[..., Path],
    small_tree: Path,
    tmp_path: Path,
    gnupg: Callable[[], str],
) -> None:
    key = gnupg()
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, "--sign-with", key, pack_small()) == 0, cli.err
    keyring = repo / "archive-keyring.gpg"
    sh("gpgv", "--keyring", keyring, repo / "dists/bookworm/InRelease")
    sh(
        "gpgv",
        "--keyring",
        keyring,
        repo / "dists/bookworm/Release.gpg",
        repo / "dists/bookworm/Release",
    )
    staging = tmp_path / "staging"
    with http_server(repo) as url:
        source = f"deb [signed-by={keyring}] {url} bookworm main"
        assert (
            cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 0
        ), cli.err
        assert cli.out == f"{staging}\n"
        # newest by default: publishing 2.0 and staging again upgrades the staging root
        assert cli("publish", "--repo", repo, pack_small("--version", "2.0")) == 0, cli.err
        assert (
            cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 0
        ), cli.err
        status = sh("dpkg-query", f"--root={staging}", "-W", "tmpl-small").stdout
        assert status == "tmpl-small:arm64\t2.0\n"  # foreign to the amd64 host dpkg
        # a pinned version that is no longer in the repository
        assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small=1.0", staging) == 1
        assert "no version of tmpl-small satisfies tmpl-small=1.0 (the source has 2.0)" in cli.err
    dest = tmp_path / "rootfs"
    assert cli("unpack", staging, dest) == 0, cli.err
    expected = tmp_path / "expected"
    two = pack_small("--version", "2.0")
    assert cli("unpack", two, expected) == 0, cli.err
    assert treeinfo.differences(treeinfo.describe(expected), treeinfo.describe(dest)) == []
    assert (dest / "etc/os-release").is_symlink()


def test_apt_cache_show_lists_metadata_without_download(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small(), pack_small("--name", "other")) == 0
    staging = tmp_path / "staging"
    source = f"deb [trusted=yes] file:{repo} bookworm main"
    assert (
        cli("stage", "--source", source, "--arch", "arm64", "tmpl-small=1.0", staging) == 0
    ), cli.err
    shown = staged_apt(staging, "apt-cache", "show", "tmpl-other")
    for field in ("Template-Image: other", "Template-Suite: bookworm", "Template-Rootfs-Sha256: "):
        assert field in shown
    assert not list((staging / "usr/share/tmpl2deb/templates").glob("tmpl-other*"))
    assert not list((staging / "var/cache/apt/archives").glob("*.deb"))


def test_stage_refuses_bad_repositories(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path, gnupg: Callable[..., str]
) -> None:
    key = gnupg()
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, "--sign-with", key, pack_small()) == 0, cli.err
    wrong = tmp_path / "wrong.gpg"
    other = gnupg("someone else <else@example.org>")
    sh("gpg", "--batch", "--output", wrong, "--export", other)
    keyring = repo / "archive-keyring.gpg"
    staging = tmp_path / "staging"

    def stage(source: str, spec: str = "tmpl-small") -> str:
        assert cli("stage", "--source", source, "--arch", "arm64", spec, staging) == 1
        assert not staging.exists(), "a failed stage must not leave a new staging root"
        lines = cli.err.splitlines()
        assert all(line.startswith("tmpl2deb: ") for line in lines), cli.err
        assert sum(line.startswith("tmpl2deb: error: ") for line in lines) == 1, cli.err
        return cli.err

    with http_server(repo) as url:
        assert "NO_PUBKEY" in stage(f"deb [signed-by={wrong}] {url} bookworm main")
        assert "tmpl-none is not in the configured source" in stage(
            f"deb [signed-by={keyring}] {url} bookworm main", "tmpl-none"
        )
    assert "NO_PUBKEY" in stage(f"deb file:{repo} bookworm main")  # no key for it at all
    unsigned = tmp_path / "unsigned"
    assert cli("publish", "--repo", unsigned, pack_small()) == 0
    assert "is not signed" in stage(f"deb [signed-by={keyring}] file:{unsigned} bookworm main")
    assert "127.0.0.1:9" in stage("deb [trusted=yes] http://127.0.0.1:9/ bookworm main")
    assert "bad apt source" in stage("http://example.org bookworm main")
    # a tampered index: the signed Release no longer matches it
    index = repo / "dists/bookworm/main/binary-arm64/Packages"
    index.write_text(index.read_text().replace("Template-Image: small", "Template-Image: evil"))
    packed = gzip.compress(index.read_bytes())
    (repo / "dists/bookworm/main/binary-arm64/Packages.gz").write_bytes(packed)
    assert "Hash Sum mismatch" in stage(f"deb [signed-by={keyring}] file:{repo} bookworm main")


def test_stage_refuses_tampered_deb_and_non_templates(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small()) == 0, cli.err
    sh("reprepro", "--basedir", repo, "includedeb", "bookworm", plain_deb(tmp_path))
    staging = tmp_path / "staging"
    source = f"deb [trusted=yes] file:{repo} bookworm main"
    assert cli("stage", "--source", source, "--arch", "arm64", "plain", staging) == 1
    assert "plain 1 is not a tmpl2deb template" in cli.err
    deb = repo / "pool/main/t/tmpl-small/tmpl-small_1.0_arm64.deb"
    data = bytearray(deb.read_bytes())
    data[-100] ^= 0xFF
    deb.write_bytes(bytes(data))
    assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 1
    assert "Hash Sum mismatch" in cli.err or "Size mismatch" in cli.err, cli.err
    assert not staging.exists()
    assert cli("stage", "--source", source, "tmpl-small", "/") == 1
    assert "cannot be /" in cli.err


def test_stage_version_relations_and_checks(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    deb = pack_small("--version", "1.2", "--signature", "abc")
    assert cli("publish", "--repo", repo, deb) == 0, cli.err
    source = f"deb [trusted=yes] file:{repo} bookworm main"
    staging = tmp_path / "staging"

    def stage(*args: str) -> int:
        return cli("stage", "--source", source, "--arch", "arm64", *args, staging)

    assert stage("tmpl-small (>= 1.3)") == 1
    assert "no version of tmpl-small satisfies tmpl-small (>= 1.3) (the source has 1.2)" in cli.err
    assert stage("tmpl-small", "--expect-signature", "def") == 1
    assert "has signature 'abc', the build wants 'def' (the template is stale" in cli.err
    assert stage("tmpl-small", "--suite", "trixie") == 1
    assert "has suite 'bookworm'" in cli.err
    assert stage("tmpl-small (>= 1.3") == 1
    assert "bad template" in cli.err
    assert not staging.exists()
    assert stage("tmpl-small (>= 1.2)", "--expect-signature", "abc") == 0, cli.err
    assert stage("tmpl-small (<< 2)", "--suite", "trixie", "--allow-mismatch") == 0, cli.err
    assert "warning: template tmpl-small 1.2 has suite 'bookworm'" in cli.err


def test_resolve_names_the_template_a_signed_repository_holds(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path, gnupg: Callable[..., str]
) -> None:
    """What an Isar image puts in its signature: a new release or new content changes it."""
    import hashlib

    key = gnupg()
    repo = tmp_path / "repo"
    keyring = repo / "archive-keyring.gpg"
    publish = ("publish", "--repo", repo, "--sign-with", key)
    assert cli(*publish, pack_small("--version", "1.0")) == 0, cli.err

    def resolve(spec: str, source: str = "") -> list[str]:
        source = source or f"deb [signed-by={keyring}] {url} bookworm main"
        assert cli("resolve", "--source", source, "--arch", "arm64", spec) == 0, cli.err
        return cli.out.split()

    def pool(version: str) -> str:
        deb = repo / f"pool/main/t/tmpl-small/tmpl-small_{version}_arm64.deb"
        return hashlib.sha256(deb.read_bytes()).hexdigest()

    with http_server(repo) as url:
        first = resolve("tmpl-small (>= 1.0)")
        assert first[:3] == ["tmpl-small", "1.0", pool("1.0")]
        assert cli("info", "--json", repo / "pool/main/t/tmpl-small/tmpl-small_1.0_arm64.deb") == 0
        assert first[3] == json.loads(cli.out)["rootfs_sha256"]
        assert cli(*publish, pack_small("--version", "1.1")) == 0, cli.err
        newer = resolve("tmpl-small (>= 1.0)")
        assert newer[1] == "1.1" and newer[2] == pool("1.1") != first[2]
        assert resolve("tmpl-small (= 1.1)") == newer
        # other content under the same version: another identity
        republished = pack_small("--version", "1.1", "--feature", "other")
        assert cli(*publish, "--force", republished) == 0, cli.err
        again = resolve("tmpl-small")
        assert again[1] == "1.1" and again[2] == pool("1.1") != newer[2]
        assert cli("resolve", "--source", f"deb [signed-by={keyring}] {url} bookworm main",
                   "--arch", "arm64", "tmpl-small (>> 1.1)") == 1  # fmt: skip
        assert "no version of tmpl-small satisfies tmpl-small (>> 1.1)" in cli.err
    assert cli("resolve", "--source", f"deb file:{repo} bookworm main", "tmpl-small") == 1
    assert "cannot read the template repository" in cli.err and "NO_PUBKEY" in cli.err
    assert cli.err.count("tmpl2deb: error: ") == 1


def test_publish_needs_no_python3_apt(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain virtualenv has python-debian but no apt_pkg: the second publish compares
    versions, and must not need it."""
    import sys

    modules: dict[str, object] = sys.modules  # type: ignore[assignment]
    monkeypatch.setitem(modules, "apt_pkg", None)  # import apt_pkg now raises ImportError
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small("--version", "1.0")) == 0, cli.err
    assert cli("publish", "--repo", repo, pack_small("--version", "1.1")) == 0, cli.err
    assert cli("publish", "--repo", repo, pack_small("--version", "1.0-beta-1")) == 1
    assert "older" in cli.err or "newer" in cli.err, cli.err
