"""Shared fixtures: real tools or a clear failure in CI, small rootfs trees, a cached minbase."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tmpl2deb.cli import main

REQUIRE_TOOLS = os.environ.get("TMPL2DEB_REQUIRE_TOOLS") == "1"
REQUIRE_ROOT = os.environ.get("TMPL2DEB_REQUIRE_ROOT") == "1"

if os.environ.get("TMPL2DEB_INSTALLED") == "1":  # autopkgtest: test the installed package
    import tmpl2deb

    assert tmpl2deb.__file__.startswith("/usr/lib/python3/dist-packages/"), tmpl2deb.__file__
EPOCH = "1700000000"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the mmdebstrap minbase need the Debian mirror: mark them 'network'."""
    for item in items:
        if "minbase" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.network)


def needs_tool(*names: str) -> None:
    """Skip when a tool is missing, or fail when TMPL2DEB_REQUIRE_TOOLS=1 (CI, debian/rules)."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"missing tools: {', '.join(missing)}"
        if REQUIRE_TOOLS:
            pytest.fail(message + " (TMPL2DEB_REQUIRE_TOOLS=1)")
        pytest.skip(message)


def needs_root() -> None:
    """Skip as a normal user (a package build), or fail when TMPL2DEB_REQUIRE_ROOT=1 (CI)."""
    if os.geteuid() != 0:
        if REQUIRE_ROOT:
            pytest.fail("this test needs root (TMPL2DEB_REQUIRE_ROOT=1)")
        pytest.skip("needs root")


def sh(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run a real tool in a test (text output unless text=False); raise if it fails."""
    kwargs.setdefault("text", True)
    kwargs.setdefault("check", True)
    return subprocess.run([os.fspath(a) for a in argv], capture_output=True, **kwargs)


class Cli:
    """Calls tmpl2deb's main() in-process and keeps what it printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.out = ""
        self.err = ""

    def __call__(self, *argv: str | Path) -> int:
        code = main([os.fspath(a) for a in argv])
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        return code


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    return Cli(capsys)


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    """A tiny rootfs-like tree (no root needed), with a dpkg status and an os-release."""
    root = tmp_path / "small"
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/log/apt").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text('ID=debian\nVERSION_CODENAME="bookworm"\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/apt/sources.list.d/debian.sources").write_text("Types: deb\n")
    (root / "etc/hostname").write_text("builder\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/log/apt/history.log").write_text("secret\n")
    (root / "var/lib/dpkg/status").write_text(
        "Package: dpkg\nStatus: install ok installed\nVersion: 1.21.22\nArchitecture: arm64\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: arm64\n\n"
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: arm64\n"
    )
    return root


@pytest.fixture
def fidelity_tree(tmp_path: Path) -> Path:
    """Every kind of entry and attribute a root filesystem may hold (needs root)."""
    needs_root()
    needs_tool("setcap", "setfacl", "setfattr", "tar", "zstd")
    root = tmp_path / "fidelity"
    make_fidelity_tree(root)
    return root


@pytest.fixture(scope="session")
def minbase(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Debian minbase rootfs from mmdebstrap, built once per test run."""
    needs_root()
    needs_tool("mmdebstrap")
    root = tmp_path_factory.mktemp("minbase") / "rootfs"
    sh("mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "bookworm", root)
    return root


@pytest.fixture
def pack_small(cli: Cli, small_tree: Path, tmp_path: Path) -> Callable[..., Path]:
    """Pack small_tree with extra CLI arguments; return the .deb."""

    def pack(*extra: str) -> Path:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        assert (
            cli("pack", small_tree, "--name", "small", "--version", "1.0", "-o", out, *extra) == 0
        ), cli.err
        return Path(cli.out.strip())

    return pack


def make_fidelity_tree(root: Path) -> None:
    """setuid/setgid/sticky, capability, hardlinks, symlinks, devices, fifo, xattrs, ACLs,
    foreign owner, nanosecond mtime, a non-UTF-8 name and a 300-character path."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "dev").mkdir()
    (root / "srv/shared").mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    ping = root / "usr/bin/ping"
    ping.write_bytes(b"\x7fELF fake ping\n")
    ping.chmod(0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", os.fspath(ping)], check=True)
    suid = root / "usr/bin/su"
    suid.write_text("su\n")
    suid.chmod(0o4755)
    sgid = root / "usr/bin/wall"
    sgid.write_text("wall\n")
    os.chown(sgid, 0, 5)
    sgid.chmod(0o2755)
    (root / "usr/bin/a").write_text("hardlinked\n")
    os.link(root / "usr/bin/a", root / "usr/bin/b")
    (root / "usr/bin/rel").symlink_to("a")
    (root / "etc/abs").symlink_to("/usr/bin/a")
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "dev/loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(root / "dev/initctl", 0o600)
    owned = root / "srv/owned"
    owned.write_text("owned\n")
    os.chown(owned, 1234, 5678)
    os.setxattr(owned, "user.comment", b"hello")
    os.setxattr(owned, "trusted.overlay", b"\x00\x01binary")
    os.setxattr(owned, "security.selinux", b"system_u:object_r:var_t:s0\x00")
    shared = root / "srv/shared"
    subprocess.run(["setfacl", "-m", "u:1234:rwx", os.fspath(shared)], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:5678:r-x", os.fspath(shared)], check=True)
    precise = root / "srv/precise"
    precise.write_text("ns\n")
    os.utime(precise, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (root / os.fsdecode(b"srv/latin1-\xe9t\xe9")).write_text("non-UTF-8 name\n")
    deep = root / "srv" / "/".join(["d" * 49] * 5)
    deep.mkdir(parents=True)
    (deep / ("f" * 40)).write_text("deep\n")
    assert len(os.fspath(deep / ("f" * 40)).split("/srv/", 1)[1]) > 280


@pytest.fixture
def gnupg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """A throwaway GNUPGHOME; calling the fixture makes a signing key, returns its fingerprint.
    The gpg-agent it started is stopped after the test."""
    needs_tool("gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", os.fspath(home))

    def make_key(uid: str = "tmpl2deb test <test@example.org>") -> str:
        sh("gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing: str = sh("gpg", "--batch", "--with-colons", "--list-secret-keys", uid).stdout
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))

    yield make_key
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, capture_output=True)


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """A real HTTP server (python3 -m http.server) on loopback serving DIRECTORY; its URL."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # Serving HTTP on 127.0.0.1 port N (http://...) ...
        port = re.search(r" port (\d+) ", line)
        assert port, f"http.server did not start: {line!r}"
        yield f"http://127.0.0.1:{port[1]}"
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def http_proxy(host: str, directory: Path) -> Iterator[tuple[str, list[str]]]:
    """A forwarding HTTP proxy on loopback (tests/proxy.py) that serves http://HOST/ from
    DIRECTORY: its URL, and a list that gets the requests it saw (one line each) on exit."""
    process = subprocess.Popen(
        [sys.executable, "-u", str(Path(__file__).parent / "proxy.py"), host, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    seen: list[str] = []
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("port "), f"tests/proxy.py did not start: {line!r}"
        yield f"http://127.0.0.1:{line.split()[1]}", seen
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            seen.extend(process.stdout.read().splitlines())
            process.stdout.close()


HOST_STATE = (
    Path("/var/lib/dpkg/status"),
    Path("/var/log/dpkg.log"),
    Path("/etc/apt/sources.list.d"),
)


def host_state() -> dict[str, object]:
    """What stage and derive must never change on the host: dpkg's database and log, apt's
    sources, and the mounts."""
    state: dict[str, object] = {}
    for path in HOST_STATE:
        if path.is_dir():
            state[str(path)] = sorted((p.name, p.read_bytes()) for p in path.iterdir())
        elif path.exists():
            state[str(path)] = path.read_bytes()
    state["mounts"] = Path("/proc/self/mountinfo").read_text().count("\n")
    return state


@pytest.fixture
def host_untouched() -> Iterator[None]:
    """Fail the test if it changed the host's dpkg status or log, apt sources or mounts."""
    before = host_state()
    yield
    assert host_state() == before, "the host's dpkg/apt state or mounts changed"
