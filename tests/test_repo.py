"""publish, list and stage with real apt-get, gpg, reprepro (a repository someone else wrote)
and an HTTP server on loopback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Cli, http_proxy, http_server, needs_root, needs_tool, sh
from tmpl2deb import treeinfo
from tmpl2deb.repostate import DISTRIBUTIONS
from tmpl2deb.template import open_template

pytestmark = pytest.mark.usefixtures("host_untouched")

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _tools() -> None:
    needs_root()  # apt's sandbox user needs root to fetch into a staging root
    needs_tool("reprepro", "apt-get", "dpkg", "gpg", "gpgv")


def packages_index(repo: Path, arch: str = "arm64") -> str:
    return (repo / f"dists/bookworm/main/binary-{arch}/Packages").read_text()


def staged_apt(staging: Path, *argv: str) -> str:
    """Run an apt tool as a consumer of the staging root's configuration."""
    env = {**os.environ, "APT_CONFIG": os.fspath(staging / "etc/apt/apt.conf")}
    out: str = sh(*argv, env=env).stdout
    return out


def staged(staging: Path) -> list[str]:
    """The .debs stage left for unpack."""
    return sorted(p.name for p in (staging / "var/cache/apt/archives").glob("*.deb"))


def reprepro_repo(repo: Path, *debs: Path) -> Path:
    """A repository written by reprepro (not by tmpl2deb), holding DEBS."""
    (repo / "conf").mkdir(parents=True)
    (repo / "conf/distributions").write_text(
        "Codename: bookworm\nArchitectures: arm64 amd64\nComponents: main\n"
    )
    for deb in debs:
        sh("reprepro", "--basedir", repo, "includedeb", "bookworm", deb)
    return repo


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
    for field in ("Template-Format: 2", "Template-Image: small", "Template-Suite: bookworm"):
        assert field in index
    release = (repo / "dists/bookworm/Release").read_text()
    assert "Acquire-By-Hash: yes" in release
    by_hash = repo / "dists/bookworm/main/binary-arm64/by-hash/SHA256"
    assert (by_hash / hashlib.sha256(index.encode()).hexdigest()).read_text() == index
    assert cli("list", "--repo", repo, "--check") == 0, cli.err
    assert "indices and 1 .debs match their digests" in cli.err
    (by_hash.parent.parent / "Packages.gz").write_bytes(b"")
    assert cli("list", "--repo", repo, "--check") == 1
    assert "Packages.gz does not match" in cli.err


def versions(cli: Cli, repo: Path) -> list[list[str]]:
    assert cli("list", "--repo", repo) == 0, cli.err
    lines = cli.out.splitlines()
    assert lines[0].split()[:4] == ["PACKAGE", "VERSION", "ARCH", "SUITE"]
    return [line.split()[:2] for line in lines[1:]]


def test_publish_keeps_releases_refuses_other_contents_retains(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    one = pack_small()
    other = pack_small("--name", "other")
    two = pack_small("--version", "2.0")
    assert cli("publish", "--repo", repo, one, other) == 0, cli.err
    assert cli("publish", "--repo", repo, two) == 0, cli.err
    assert versions(cli, repo) == [["tmpl-other", "1.0"], ["tmpl-small", "1.0"],
                                   ["tmpl-small", "2.0"]]  # fmt: skip
    before = packages_index(repo)
    assert cli("publish", "--repo", repo, one) == 0, cli.err  # the same file again: nothing to do
    assert "tmpl-small 1.0 (arm64) is already published" in cli.err
    assert packages_index(repo) == before
    changed = pack_small("--feature", "changed")
    assert cli("publish", "--repo", repo, changed) == 1
    assert "already has tmpl-small 1.0 (arm64) in bookworm with other contents" in cli.err
    assert packages_index(repo) == before
    assert cli("publish", "--repo", repo, "--force", changed) == 0, cli.err
    assert "Template-Features: changed" in packages_index(repo)
    # a maintenance release of an older line is just another version
    assert cli("publish", "--repo", repo, pack_small("--version", "0.9")) == 0, cli.err
    # retention: the 2 newest of each template stay
    assert cli("publish", "--repo", repo, "--retain", "2", pack_small("--version", "3.0")) == 0
    assert "Removing tmpl-small 0.9 (arm64) from bookworm: beyond the 2 versions kept" in cli.err
    assert versions(cli, repo) == [["tmpl-other", "1.0"], ["tmpl-small", "2.0"],
                                   ["tmpl-small", "3.0"]]  # fmt: skip
    assert "Retain: 2" in (repo / DISTRIBUTIONS).read_text()
    assert cli("publish", "--repo", repo, pack_small("--version", "4.0")) == 0, cli.err
    assert versions(cli, repo)[1:] == [["tmpl-small", "3.0"], ["tmpl-small", "4.0"]]
    assert cli("list", "--repo", repo, "--json") == 0, cli.err
    rows = json.loads(cli.out)
    assert (rows[0]["package"], rows[0]["version"], rows[0]["image"]) == (
        "tmpl-other",
        "1.0",
        "other",
    )
    assert rows[0]["size"] == other.stat().st_size
    assert cli("list", "--repo", repo, "--check") == 0, cli.err
    assert cli("remove", "--repo", repo, "tmpl-small", "3.0") == 0, cli.err
    assert cli.out == "tmpl-small 3.0 (arm64) bookworm\n"
    assert cli("remove", "--repo", repo, "tmpl-small", "3.0") == 1
    assert "has no tmpl-small 3.0 to remove" in cli.err


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
        assert staged(staging) == ["tmpl-small_1.0_arm64.deb"]
        assert (staging / "var/lib/dpkg/status").read_bytes() == b"", "dpkg installed nothing"
        # newest by default: publishing 2.0 and staging again brings 2.0
        assert cli("publish", "--repo", repo, pack_small("--version", "2.0")) == 0, cli.err
        assert (
            cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 0
        ), cli.err
        assert staged(staging) == ["tmpl-small_2.0_arm64.deb"]
        # the release before stays installable, pinned
        assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small=1.0", staging) == 0
        assert staged(staging) == ["tmpl-small_1.0_arm64.deb"]
        assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small=1.5", staging) == 1
        assert (
            "no version of tmpl-small satisfies tmpl-small=1.5 (the source has 1.0, 2.0)" in cli.err
        )
        assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 0
    # apt checked the staged .debs: unpack does not hash them again, unless they changed since
    verified = json.loads((staging / "var/lib/tmpl2deb/verified.json").read_text())
    assert list(verified) == ["tmpl-small_2.0_arm64.deb"]
    staged_deb = staging / "var/cache/apt/archives/tmpl-small_2.0_arm64.deb"
    pristine = staged_deb.read_bytes()
    payload = open_template(staged_deb).payload
    offset = next(payload.pieces())[0] + 20  # a byte of the zstd payload
    staged_deb.write_bytes(
        pristine[:offset] + bytes([pristine[offset] ^ 1]) + pristine[offset + 1 :]
    )
    assert cli("unpack", staging, tmp_path / "tampered") == 1
    assert "does not match its recorded sha256" in cli.err or "zstd" in cli.err, cli.err
    assert not (tmp_path / "tampered").exists()
    staged_deb.write_bytes(pristine)
    assert cli("unpack", "-v", staging, tmp_path / "again") == 0, cli.err
    assert "checked by apt" not in cli.err  # changed since apt checked it: hashed
    source = f"deb [signed-by={keyring}] file:{repo} bookworm main"
    assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 0
    dest = tmp_path / "rootfs"
    assert cli("unpack", "-v", staging, dest) == 0, cli.err
    assert "checked by apt against the signed index when staged" in cli.err
    expected = tmp_path / "expected"
    two = pack_small("--version", "2.0")
    assert cli("unpack", two, expected) == 0, cli.err
    assert treeinfo.differences(treeinfo.describe(expected), treeinfo.describe(dest)) == []
    assert (dest / "etc/os-release").is_symlink()


def test_stage_shows_apt_progress_unless_quiet(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    """The real program: apt's own download lines in a pipe, its live output on a terminal
    (script(1) gives it one), nothing with --quiet."""
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small()) == 0, cli.err
    source = f"deb [trusted=yes] file:{repo} bookworm main"
    argv = [sys.executable, "-m", "tmpl2deb", "stage", "--source", source, "--arch", "arm64"]
    argv.append("tmpl-small")
    logged = sh(*argv, tmp_path / "a")
    assert "Downloading tmpl-small 1.0" in logged.stderr
    assert "Get:1 file:" in logged.stderr and "tmpl-small 1.0" in logged.stderr, logged.stderr
    assert logged.stdout == f"{tmp_path / 'a'}\n"
    quiet = sh(*argv, "-q", tmp_path / "b")
    assert quiet.stderr == ""
    shown = sh("script", "-qec", shlex.join([*argv, os.fspath(tmp_path / "c")]), "/dev/null")
    assert "Get:1 file:" in shown.stdout, shown.stdout


def test_stage_again_fetches_only_what_the_index_names_differently(
    cli: Cli, pack_small: Callable[..., Path], small_tree: Path, tmp_path: Path
) -> None:
    """A .deb apt checked before stays while the signed index gives the same sha256; other
    contents under the same version, a changed file or another version are fetched."""
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small()) == 0, cli.err
    source = f"deb [trusted=yes] file:{repo} bookworm main"
    staging = tmp_path / "staging"
    stage: list[str | Path] = ["stage", "--source", source, "--arch", "arm64", "tmpl-small"]
    stage.append(staging)
    assert cli(*stage) == 0, cli.err
    deb = staging / "var/cache/apt/archives/tmpl-small_1.0_arm64.deb"
    first = deb.stat().st_ino
    assert cli(*stage) == 0, cli.err
    assert "Already staged, as the signed index names them: tmpl-small 1.0" in cli.err
    assert deb.stat().st_ino == first and "Downloading" not in cli.err
    assert cli("unpack", "-v", staging, tmp_path / "a") == 0, cli.err
    assert "checked by apt against the signed index" in cli.err
    # other contents under the same version (publish --force): fetched again
    (small_tree / "etc/hostname").write_text("other\n")
    assert cli("publish", "--repo", repo, "--force", pack_small()) == 0, cli.err
    assert cli(*stage) == 0, cli.err
    assert "Downloading tmpl-small 1.0" in cli.err
    assert cli("unpack", staging, tmp_path / "b") == 0, cli.err
    assert (tmp_path / "b/etc/hostname").read_text() == "other\n"
    # a staged file touched since apt checked it: fetched again
    os.utime(deb, ns=(0, 0))
    assert cli(*stage) == 0, cli.err
    assert "Downloading tmpl-small 1.0" in cli.err
    # another version: the old one leaves the staging root
    assert cli("publish", "--repo", repo, pack_small("--version", "2.0")) == 0, cli.err
    assert cli(*stage) == 0, cli.err
    assert staged(staging) == ["tmpl-small_2.0_arm64.deb"]


def test_stage_takes_a_deb822_source(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    """The .sources format apt recommends: a stanza, as given or in a file."""
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small()) == 0, cli.err
    stanza = f"Types: deb\nURIs: file:{repo}\nSuites: bookworm\nComponents: main\nTrusted: yes\n"
    staging = tmp_path / "staging"
    assert cli("stage", "--source", stanza, "--arch", "arm64", "tmpl-small", staging) == 0, cli.err
    assert staged(staging) == ["tmpl-small_1.0_arm64.deb"]
    assert cli("resolve", "--source", stanza, "--arch", "arm64", "tmpl-small") == 0, cli.err
    assert cli.out.startswith("tmpl-small 1.0 ")
    two = stanza.replace("Suites: bookworm", "Suites: bookworm trixie")
    assert cli("stage", "--source", two, "tmpl-small", tmp_path / "s2") == 2  # usage
    assert "2 apt sources" in cli.err and len(cli.err.strip().splitlines()) == 1
    key = stanza + "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n"
    assert cli("stage", "--source", key, "tmpl-small", tmp_path / "s3") == 2
    assert "its key in Signed-By is not supported" in cli.err
    assert not (tmp_path / "s2").exists() and not (tmp_path / "s3").exists()


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
    assert staged(staging) == ["tmpl-small_1.0_arm64.deb"]


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

    def stage(source: str, spec: str = "tmpl-small", code: int = 1) -> str:
        assert cli("stage", "--source", source, "--arch", "arm64", spec, staging) == code
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
    assert "bad apt source" in stage("http://example.org bookworm main", code=2)
    # a tampered index (under its own name and by hash): the signed Release no longer matches
    index = repo / "dists/bookworm/main/binary-arm64/Packages"
    index.write_text(index.read_text().replace("Template-Image: small", "Template-Image: evil"))
    packed = gzip.compress(index.read_bytes())
    (repo / "dists/bookworm/main/binary-arm64/Packages.gz").write_bytes(packed)
    for stored in index.parent.glob("by-hash/SHA256/*"):
        stored.write_bytes(packed if stored.read_bytes()[:2] == b"\x1f\x8b" else index.read_bytes())
    assert "Hash Sum mismatch" in stage(f"deb [signed-by={keyring}] file:{repo} bookworm main")


def test_stage_offline_uses_what_was_staged(
    cli: Cli, pack_small: Callable[..., Path], gnupg: Callable[[], str], tmp_path: Path
) -> None:
    """--offline (a rebuild with BB_NO_NETWORK): the server is gone, the staging root's lists
    and verified .deb serve; what was never staged from that source is refused."""
    key = gnupg()
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, "--sign-with", key, pack_small()) == 0, cli.err
    staging = tmp_path / "staging"
    with http_server(repo) as url:
        source = f"deb [signed-by={repo / 'archive-keyring.gpg'}] {url} bookworm main"
        assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 0
    args = ["stage", "--source", source, "--arch", "arm64"]  # the server is gone
    assert cli(*args, "--offline", "tmpl-small=1.0", staging) == 0, cli.err
    assert "Offline: the package lists" in cli.err
    assert staged(staging) == ["tmpl-small_1.0_arm64.deb"]
    assert cli("unpack", staging, tmp_path / "rootfs") == 0, cli.err
    assert cli(*args, "--offline", "tmpl-small (>= 2.0)", staging) == 1
    assert "no version of tmpl-small satisfies" in cli.err
    assert cli(*args, "--offline", "tmpl-small", tmp_path / "never") == 1
    assert "was not staged from" in cli.err and not (tmp_path / "never").exists()


def test_stage_goes_through_the_proxy_of_the_environment(
    cli: Cli,
    pack_small: Callable[..., Path],
    gnupg: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # templates.invalid does not resolve: only apt going through the proxy reaches it
    key = gnupg()
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, "--sign-with", key, pack_small()) == 0, cli.err
    keyring = repo / "archive-keyring.gpg"
    source = f"deb [signed-by={keyring}] http://templates.invalid bookworm main"
    staging = tmp_path / "staging"
    with http_proxy("templates.invalid", repo) as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)  # the upper-case name, as some hosts set it
        assert (
            cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 0
        ), cli.err
        assert staged(staging) == ["tmpl-small_1.0_arm64.deb"]
        # no_proxy reaches apt too: then the name must resolve, and it does not
        monkeypatch.setenv("no_proxy", "templates.invalid")
        assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 1
        assert "templates.invalid" in cli.err
    assert any(
        line.startswith("GET http://templates.invalid/pool/main/t/tmpl-small/") for line in seen
    ), seen
    assert all(line.endswith((" 200", " 404")) for line in seen), seen


def test_stage_refuses_tampered_deb_and_non_templates(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path
) -> None:
    other = reprepro_repo(tmp_path / "other", plain_deb(tmp_path))
    staging = tmp_path / "staging"
    source = f"deb [trusted=yes] file:{other} bookworm main"
    assert cli("stage", "--source", source, "--arch", "arm64", "plain", staging) == 1
    assert "plain 1 is not a tmpl2deb template" in cli.err
    repo = tmp_path / "repo"
    assert cli("publish", "--repo", repo, pack_small()) == 0, cli.err
    source = f"deb [trusted=yes] file:{repo} bookworm main"
    deb = repo / "pool/main/t/tmpl-small/tmpl-small_1.0_arm64.deb"
    data = bytearray(deb.read_bytes())
    data[-100] ^= 0xFF
    deb.write_bytes(bytes(data))
    assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 1
    assert "Hash Sum mismatch" in cli.err or "Size mismatch" in cli.err, cli.err
    assert not staging.exists()
    assert cli("stage", "--source", source, "tmpl-small", "/") == 2  # usage
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
    assert cli("publish", "--repo", repo, pack_small("--version", "1.0-beta-1")) == 0, cli.err
    assert [v for _, v in versions(cli, repo)] == ["1.0", "1.0-beta-1", "1.1"]  # dpkg order


def package_deb(
    tmp_path: Path, name: str, arch: str, version: str = "1.0", extra: str = ""
) -> Path:
    """A binary package of the platform's own (not a template), built by dpkg-deb."""
    tree = tmp_path / f"{name}-{arch}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share/doc" / name).mkdir(parents=True)
    (tree / "usr/share/doc" / name / "version").write_text(version + "\n")
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nSource: libtmplhello\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: x <x@example.org>\nSection: libdevel\nPriority: optional\n{extra}"
        "Description: a platform package\n"
    )
    deb = tmp_path / f"{name}_{version}_{arch}.deb"
    sh("dpkg-deb", "--root-owner-group", "-b", tree, deb)
    return deb


def test_platform_packages_next_to_the_templates(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path, gnupg: Callable[..., str]
) -> None:
    """publish --packages: the platform's own packages in a component of their own, signed
    with the templates, every version kept; resolve --packages says where each is."""
    key = gnupg()
    repo = tmp_path / "repo"
    keyring = repo / "archive-keyring.gpg"
    assert cli("publish", "--repo", repo, "--sign-with", key, pack_small()) == 0, cli.err
    lib = package_deb(tmp_path, "libtmplhello1", "arm64")
    dev = package_deb(
        tmp_path, "libtmplhello-dev", "arm64", extra="Depends: libc6, libtmplhello1 (= 1.0)\n"
    )
    doc = package_deb(tmp_path, "tmplhello-doc", "all")
    publish = ("publish", "--repo", repo, "--codename", "bookworm", "--packages")
    assert cli(*publish, lib, dev, doc) == 0, cli.err
    assert cli.out.splitlines() == [
        "libtmplhello1 1.0 arm64",
        "libtmplhello-dev 1.0 arm64",
        "tmplhello-doc 1.0 all",
    ]
    assert (repo / "pool/packages/libt/libtmplhello/libtmplhello-dev_1.0_arm64.deb").is_file()
    # Architecture: all is in every architecture's index; the templates' index has none
    for arch in ("arm64", "amd64"):
        index = (repo / f"dists/bookworm/packages/binary-{arch}/Packages").read_text()
        assert index.count("Package: tmplhello-doc\n") == 1
    assert "libtmplhello" not in packages_index(repo)
    assert "Components: main packages" in (repo / "dists/bookworm/Release").read_text()
    # a new release of the platform keeps the packages a template of the old one needs
    assert cli(*publish, package_deb(tmp_path, "libtmplhello-dev", "arm64", "1.1")) == 0
    assert cli("list", "--repo", repo, "--check") == 0, cli.err
    assert "indices and 5 .debs match their digests" in cli.err
    assert cli.out.splitlines()[1].split()[:2] == ["tmpl-small", "1.0"]  # templates only
    with http_server(repo) as url:
        source = f"deb [signed-by={keyring}] {url} bookworm packages"
        resolve = ("resolve", "--packages", "--source", source, "--arch", "arm64")
        assert cli(*resolve, "libtmplhello-dev", "tmplhello-doc") == 0, cli.err
        found = [line.split() for line in cli.out.splitlines()]
        assert [f[:3] for f in found] == [
            ["libtmplhello-dev", "1.1", "arm64"],
            ["tmplhello-doc", "1.0", "all"],
        ]
        pooled = repo / "pool/packages/libt/libtmplhello/libtmplhello-dev_1.1_arm64.deb"
        assert found[0][3] == hashlib.sha256(pooled.read_bytes()).hexdigest()
        assert (
            found[0][4] == f"{url}/pool/packages/libt/libtmplhello/libtmplhello-dev_1.1_arm64.deb"
        )
        # with the packages of the source it depends on (libc6 and the like are not in it)
        assert cli(*resolve, "libtmplhello-dev (<< 1.1)") == 0, cli.err
        assert [line.split()[:2] for line in cli.out.splitlines()] == [
            ["libtmplhello-dev", "1.0"],
            ["libtmplhello1", "1.0"],
        ]
        assert cli(*resolve, "libtmplhello-dev (>> 1.1)") == 1
        assert "no version of libtmplhello-dev satisfies" in cli.err and "1.0, 1.1" in cli.err
        assert cli(*resolve, "libnothere") == 1
        assert "libnothere is not in" in cli.err
        main = f"deb [signed-by={keyring}] {url} bookworm main"
        assert cli("resolve", "--packages", "--source", main, "--arch", "arm64", "tmpl-small") == 1
        assert "tmpl-small is a template, not a package" in cli.err
    # nothing but a template gets into a template component, and no template into packages
    before = sorted(p.name for p in repo.rglob("*"))
    assert cli("publish", "--repo", repo, lib) == 1
    assert "tmpl2deb template" in cli.err or "not a" in cli.err, cli.err
    assert cli(*publish, pack_small("--version", "3.0")) == 1
    assert "is a template (tmpl-small); publish it without --packages" in cli.err
    assert cli(*publish, "--component", "main", lib) == 2
    assert "the main component holds templates only" in cli.err
    assert cli("publish", "--repo", repo, "--packages", lib) == 2
    assert "--packages needs --codename" in cli.err
    changed = package_deb(tmp_path / "other", "libtmplhello1", "arm64", extra="Essential: no\n")
    assert cli(*publish, changed) == 1
    assert "already has libtmplhello1 1.0 (arm64) in bookworm with other contents" in cli.err
    assert cli(*publish, tmp_path / "missing.deb") == 1
    assert sorted(p.name for p in repo.rglob("*")) == before
