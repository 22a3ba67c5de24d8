"""Exclude rules: the defaults, cleaning (directories and package-owned paths stay), lost paths."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, needs_root, needs_tool, sh
from tmpl2deb.errors import MetadataError
from tmpl2deb.excludes import (
    DEFAULT_EXCLUDES,
    DIRECTORY,
    ExcludeRules,
    OwnedPaths,
    is_dpkg_list,
    read_owned,
)
from tmpl2deb.rootfs import TAR_CREATE_FLAGS, walk
from tmpl2deb.tarstream import Action, Member

REG, LINK = ord("0"), ord("2")
OWNED = OwnedPaths.from_lists(
    [
        b"/.\n/var\n/var/log\n/var/log/nginx\n/var/log/README\n",
        b"/var/cache/apt/archives/partial\n/var/log/owned.log\n/etc/owned-hosts\n/opt/big/f\n",
    ]
)


@pytest.mark.parametrize(
    ("path", "kind", "action"),
    [
        (b"etc/resolv.conf", REG, Action.DROP),
        (b"etc/apt/sources.list.d/debian.sources", REG, Action.DROP),
        (b"etc/apt/sources.list.d", DIRECTORY, Action.KEEP),
        (b"etc/apt/apt.conf.d/01proxy", REG, Action.DROP),
        (b"etc/apt/apt.conf.d/70debconf", REG, Action.KEEP),
        (b"etc/machine-id", REG, Action.EMPTY),
        (b"var/log", DIRECTORY, Action.KEEP),
        # logs, caches, temporary files: directories stay, files no package owns go
        (b"var/log/apt/history.log", REG, Action.DROP),
        (b"var/log/apt", DIRECTORY, Action.KEEP),
        (b"var/log/journal", DIRECTORY, Action.KEEP),
        (b"var/log/nginx", DIRECTORY, Action.KEEP),
        (b"var/log/README", LINK, Action.KEEP),  # owned symlink
        (b"var/log/unowned-link", LINK, Action.KEEP),  # systemd-tmpfiles' /var/log/README
        (b"run/shm", LINK, Action.KEEP),
        (b"var/log/owned.log", REG, Action.EMPTY),  # owned: kept, emptied
        (b"var/cache/apt/archives/partial", DIRECTORY, Action.KEEP),
        (b"var/cache/apt/pkgcache.bin", REG, Action.DROP),
        (b"var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", REG, Action.DROP),
        (b"var/lib/apt/lists/partial", DIRECTORY, Action.KEEP),
        (b"tmp/x", REG, Action.DROP),
        (b"tmp/.X11-unix", DIRECTORY, Action.KEEP),
        (b"run/lock", DIRECTORY, Action.KEEP),
        (b"run/motd.dynamic", REG, Action.DROP),
        (b"proc/1", DIRECTORY, Action.DROP),
        (b"dev/null", ord("3"), Action.KEEP),
        (b"dev/sda1", ord("4"), Action.DROP),
        (b"dev/pts", DIRECTORY, Action.KEEP),
        (b"dev/pts/0", ord("3"), Action.DROP),
        (b"usr/bin/bash", REG, Action.KEEP),
        (b"etc/hostsfile", REG, Action.KEEP),
    ],
)
def test_default_rules(path: bytes, kind: int, action: Action) -> None:
    assert ExcludeRules(DEFAULT_EXCLUDES).select(OWNED).entry(path, kind) is action


def test_last_pattern_wins_and_user_patterns_follow_defaults() -> None:
    rules = ExcludeRules.build(True, ["!/var/log/keep.log", "/opt/big", "~/srv/*"])
    selection = rules.select(OwnedPaths())
    assert selection.entry(b"var/log/keep.log", REG) is Action.KEEP
    assert selection.entry(b"opt/big", DIRECTORY) is Action.DROP
    assert selection.entry(b"srv/data", DIRECTORY) is Action.KEEP
    assert selection.entry(b"srv/data/f", REG) is Action.DROP
    assert rules.patterns[: len(DEFAULT_EXCLUDES)] == DEFAULT_EXCLUDES
    assert ExcludeRules.build(False, ["/x"]).patterns == ("/x",)


def test_stream_selection_drops_below_dropped_directories_and_notes_lost_paths() -> None:
    selection = ExcludeRules(("/opt/big", "/etc/owned-hosts")).select(OWNED)
    assert selection.member(Member(b"opt/big", DIRECTORY, b"", 0)) is Action.DROP
    assert selection.member(Member(b"opt/big/f", REG, b"", 1)) is Action.DROP
    assert selection.member(Member(b"opt/bigger", REG, b"", 1)) is Action.KEEP
    assert selection.member(Member(b"etc/owned-hosts", REG, b"", 1)) is Action.DROP
    assert selection.lost == [b"opt/big/f", b"etc/owned-hosts"]


def test_what_is_emptied_is_known_before_the_walk() -> None:
    """The files a tree packed directly needs stand-ins for: what entry() empties among the
    owned paths under cleaning patterns and the literal emptying patterns."""
    selection = ExcludeRules(DEFAULT_EXCLUDES).select(OWNED)
    # var/log/nginx, var/log/README are emptied only as regular files (the walk checks)
    expected = [b"etc/machine-id", b"var/cache/apt/archives/partial", b"var/log/README",
                b"var/log/nginx", b"var/log/owned.log"]  # fmt: skip
    assert selection.to_empty() == expected
    kept = ExcludeRules((*DEFAULT_EXCLUDES, "~/*.log", "!/var/log/owned.log")).select(OWNED)
    assert b"var/log/owned.log" not in (kept.to_empty() or [])
    assert ExcludeRules(("=/var/log/*.log",)).select(OWNED).to_empty() is None
    assert ExcludeRules(("~/opt/*",)).select(OWNED).to_empty() == [b"opt/big/f"]


def test_cleaning_never_loses_an_owned_path() -> None:
    selection = ExcludeRules(DEFAULT_EXCLUDES).select(OWNED)
    for name in (b"var/log/nginx", b"var/log/README", b"var/log/owned.log", b"var/log/x"):
        selection.member(Member(name, REG, b"", 0))
    assert selection.lost == []


@pytest.mark.parametrize("pattern", ["var/log", "", "!var", "~var/*", "~~/x"])
def test_relative_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(MetadataError, match="absolute path pattern"):
        ExcludeRules((pattern,))


def test_owned_paths() -> None:
    assert b"var/log/nginx" in OWNED and b"var/log/ngin" not in OWNED and b"" not in OWNED
    assert OWNED.below(b"var/log") == [b"var/log/README", b"var/log/nginx", b"var/log/owned.log"]
    assert OWNED.below(b"opt/big") == [b"opt/big/f"]
    assert is_dpkg_list(b"var/lib/dpkg/info/nginx-common.list")
    assert is_dpkg_list(b"var/lib/dpkg/info/libc6:amd64.list")
    assert not is_dpkg_list(b"var/lib/dpkg/info/nginx-common.md5sums")
    assert not is_dpkg_list(b"var/lib/dpkg/info/x/y.list")


# what the default excludes keep of _tree_with_packages' /var/log
KEPT_LOGS = [
    "./var/log",
    "./var/log/README",
    "./var/log/build-link",
    "./var/log/fifo",
    "./var/log/journal",
    "./var/log/nginx",
    "./var/log/pkg.log",
    "./var/log/private",
]


def _tree_with_packages(root: Path) -> Path:
    """A tree whose dpkg file lists own /var/log/nginx, /var/log/README and a log file."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "nginx-common.list").write_text("/.\n/var\n/var/log\n/var/log/nginx\n")
    (info / "systemd.list").write_text("/var/log/README\n/var/log/journal\n/var/log/pkg.log\n")
    (root / "var/log/nginx").mkdir(parents=True)
    (root / "var/log/nginx/access.log").write_text("build-time request\n")
    (root / "var/log/journal").mkdir()
    (root / "var/log/private").mkdir(mode=0o700)
    (root / "var/log/README").symlink_to("../../usr/share/doc/systemd/README.logs")
    (root / "var/log/pkg.log").write_text("shipped by a package\n")
    (root / "var/log/dpkg.log").write_text("build log\n")
    (root / "var/log/fifo").mkdir()
    os.mkfifo(root / "var/log/fifo/node")  # a node no package owns: dropped like a file
    (root / "var/log/build-link").symlink_to("dpkg.log")  # links are kept
    return root


def test_walk_cleans_and_notes_lost(tmp_path: Path) -> None:
    root = _tree_with_packages(tmp_path / "r")
    (root / "opt/big").mkdir(parents=True)
    (root / "opt/big/f").write_text("x")
    owned = read_owned(root)
    assert b"var/log/nginx" in owned and len(owned) == 6
    listing = io.BytesIO()
    selection = ExcludeRules((*DEFAULT_EXCLUDES, "/opt/big")).select(
        OwnedPaths.from_lists([b"/opt/big/f\n/opt/big/gone\n"])
    )
    walk(root, selection, listing)
    assert selection.lost == [b"opt/big/f"]  # /opt/big/gone does not exist
    selection = ExcludeRules(DEFAULT_EXCLUDES).select(owned)
    listing = io.BytesIO()
    walk(root, selection, listing)
    names = [os.fsdecode(n) for n in listing.getvalue().split(b"\0") if n.startswith(b"./var/log")]
    assert names == KEPT_LOGS
    assert selection.lost == []


def _payload_listing(deb: Path, tmp_path: Path) -> dict[str, list[str]]:
    out = tmp_path / "x"
    sh("dpkg-deb", "-x", deb, out)
    payload = out / "usr/share/tmpl2deb/templates/tmpl-logs/rootfs.tar.zst"
    tar = sh("zstd", "-dc", payload, text=False).stdout
    listing = sh("tar", "-tv", "--numeric-owner", "--file=-", input=tar, text=False).stdout
    return {
        line.split()[5].rstrip("/"): line.split()
        for line in listing.decode().splitlines()
        if " ./var/log" in line
    }


@pytest.mark.integration
@pytest.mark.parametrize("source", ["directory", "tarball"])
def test_pack_keeps_package_owned_log_paths(
    cli: Cli, tmp_path: Path, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    needs_tool("tar", "zstd", "dpkg-deb")
    root = _tree_with_packages(tmp_path / "r")
    src = root
    if source == "tarball":
        src = tmp_path / "rootfs.tar.zst"
        sh("tar", "--create", "--zstd", f"--file={src}", "--sort=name", "-C", root, ".")
    out = tmp_path / "out"
    out.mkdir()
    assert cli("pack", src, "--name", "logs", "--version", "1", "-o", out) == 0, cli.err
    entries = _payload_listing(Path(cli.out.strip()), tmp_path)
    assert sorted(entries) == KEPT_LOGS
    assert entries["./var/log/private"][0] == "drwx------"  # mode kept
    assert entries["./var/log/pkg.log"][2] == "0"  # owned file: kept, emptied
    assert entries["./var/log/README"][0].startswith("l")
    assert "leave out" not in cli.err


def _payload_members(deb: Path, tmp_path: Path, name: str) -> list[tuple[Any, ...]]:
    """Every member of a template's rootfs tar as tarfile reads it, pax records included."""
    import tarfile

    out = tmp_path / name
    sh("dpkg-deb", "-x", deb, out)
    payload = out / "usr/share/tmpl2deb/templates/tmpl-logs/rootfs.tar.zst"
    sh("zstd", "--quiet", "-d", payload, "-o", out / "rootfs.tar")
    with tarfile.open(out / "rootfs.tar") as tar:
        return [(m.name, m.type, m.size, m.mode, m.uid, m.gid, m.mtime, m.linkname,
                 sorted(m.pax_headers.items())) for m in tar.getmembers()]  # fmt: skip


@pytest.mark.integration
def test_files_to_empty_keep_their_metadata_without_the_filter(cli: Cli, tmp_path: Path) -> None:
    """A tree goes from tar to zstd directly; the files the excludes empty are covered by
    stand-ins (owner, mode, ACL, xattr, mtime to the nanosecond): the members are those the
    filter makes of the same tree as a tarball, and the tree itself is left as it was."""
    needs_root()
    needs_tool("tar", "zstd", "dpkg-deb", "setfacl", "unshare")
    root = _tree_with_packages(tmp_path / "r")
    log_file = root / "var/log/pkg.log"
    os.chown(log_file, 33, 4)
    log_file.chmod(0o640)
    sh("setfacl", "-m", "u:1000:r", log_file)
    os.setxattr(log_file, "user.origin", b"package")
    os.utime(log_file, ns=(0, 1_600_000_000_123_456_789))
    (root / "etc").mkdir()
    (root / "etc/machine-id").write_text("uninitialized\n")
    before = sh("tar", "--create", "--file=-", *TAR_CREATE_FLAGS, "--sort=name", "-C", root,
                ".", text=False).stdout  # fmt: skip
    tarball = tmp_path / "rootfs.tar"
    sh("tar", "--create", f"--file={tarball}", *TAR_CREATE_FLAGS, "--mtime=@1700000000",
       "--clamp-mtime", "--sort=name", "-C", root, ".")  # fmt: skip
    members = {}
    for source, name in ((root, "tree"), (tarball, "tarball")):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        argv = ("pack", "-v", source, "--name", "logs", "--version", "1", "-o", out)
        assert cli(*argv) == 0, cli.err
        covered = "2 files to empty, covered by stand-ins" in cli.err
        assert covered == (source == root), cli.err
        members[name] = _payload_members(Path(cli.out.strip().splitlines()[-1]), tmp_path, name)
    ours = {m[0]: m for m in members["tree"]}
    pkg_log = ours["./var/log/pkg.log"]
    assert pkg_log[2:6] == (0, 0o640, 33, 4) and pkg_log[6] == 1_600_000_000.123456789
    assert ("SCHILY.xattr.user.origin", "package") in pkg_log[8]
    assert "SCHILY.acl.access" in dict(pkg_log[8])
    assert ours["./etc/machine-id"][2] == 0
    assert members["tree"] == [m for m in members["tarball"] if m[0] in ours]
    after = sh("tar", "--create", "--file=-", *TAR_CREATE_FLAGS, "--sort=name", "-C", root,
               ".", text=False).stdout  # fmt: skip
    assert after == before  # the tree still has its contents, no mount is left over it
    assert os.fsencode(root) not in Path("/proc/self/mounts").read_bytes()


@pytest.mark.integration
def test_pack_warns_about_lost_owned_paths(cli: Cli, tmp_path: Path) -> None:
    needs_tool("tar", "zstd")
    root = _tree_with_packages(tmp_path / "r")
    out = tmp_path / "out"
    out.mkdir()
    argv = ("pack", root, "--name", "logs", "--version", "1", "-o", out)
    assert cli(*argv, "--exclude", "/var/log/nginx") == 0, cli.err
    assert "leave out 1 paths that packages of the rootfs own: /var/log/nginx " in cli.err


@pytest.fixture(scope="module")
def rootfs_with_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real minbase with two packages that own directories under /var/log."""
    needs_root()
    needs_tool("mmdebstrap")
    root = tmp_path_factory.mktemp("logs") / "rootfs"
    sh("mmdebstrap", "--quiet", "--variant=minbase", "--mode=root",
       "--include=nginx-light,mosquitto", "bookworm", root)  # fmt: skip
    return root


def _missing(root: Path) -> set[str]:
    """What dpkg --verify reports missing in ROOT (dpkg exits 1 when anything differs)."""
    result = sh("dpkg", f"--root={root}", "--verify", check=False)
    assert result.returncode in (0, 1), result.stderr
    return {line.split()[-1] for line in result.stdout.splitlines() if line.startswith("missing")}


@pytest.mark.integration
@pytest.mark.network
def test_real_rootfs_keeps_what_its_packages_own(
    cli: Cli, rootfs_with_logs: Path, tmp_path: Path
) -> None:
    """pack + unpack lose no package-owned path (dpkg --verify), and nginx -t works."""
    needs_tool("dpkg", "chroot", "tar", "zstd")
    out = tmp_path / "out"
    out.mkdir()
    assert cli("pack", rootfs_with_logs, "--name", "logs", "--version", "1", "-o", out) == 0
    assert "leave out" not in cli.err, cli.err
    dest = tmp_path / "dest"
    assert cli("unpack", cli.out.strip(), dest) == 0, cli.err
    assert (dest / "var/log/nginx").is_dir() and (dest / "var/log/mosquitto").is_dir()
    assert _missing(dest) == _missing(rootfs_with_logs)
    for log in ("var/log/nginx", "var/log/mosquitto", "var/log/apt"):
        assert os.lstat(dest / log).st_uid == os.lstat(rootfs_with_logs / log).st_uid
        assert os.lstat(dest / log).st_mode == os.lstat(rootfs_with_logs / log).st_mode
    assert not (dest / "var/log/wtmp").exists()  # made by a postinst, owned by no package
    result = sh("chroot", dest, "/usr/sbin/nginx", "-t", check=False)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
