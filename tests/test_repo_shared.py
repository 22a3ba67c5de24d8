"""A repository many teams share: only templates get in, releases stay installable, writers
wait their turn, a killed writer does not wedge it, readers never see a mix.

Real processes (python -m tmpl2deb), real signals, real apt-get, reprepro and flock.
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import arpy
import pytest

from tests.conftest import Cli, http_server, needs_root, needs_tool, sh
from tmpl2deb import debformat
from tmpl2deb.lock import LOCK_NAME
from tmpl2deb.storedgzip import stored_gzip

pytestmark = pytest.mark.usefixtures("host_untouched")

TMPL2DEB = [sys.executable, "-m", "tmpl2deb"]
PWNED = "/pwned-by-template"


@pytest.fixture(autouse=True)
def _tools() -> None:
    needs_root()  # apt's sandbox user, flock of root's files
    needs_tool("reprepro", "apt-get", "dpkg")


def tmpl2deb(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TMPL2DEB, *(str(a) for a in argv)], capture_output=True, text=True, check=check
    )


# -- packages in the template format that are not templates -----------------------------------


def _members(deb: Path) -> dict[str, bytes]:
    with deb.open("rb") as f:
        return {m.header.name.decode().rstrip("/"): m.read() for m in arpy.Archive(fileobj=f)}


def _retar(
    raw: bytes, extra: list[tuple[tarfile.TarInfo, bytes]], edit: Callable[[bytes], bytes]
) -> bytes:
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dst,
    ):
        for info in src:
            data = src.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            if info.name == "./control":
                data = edit(data)
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if info.isfile() else None)
        for info, data in extra:
            dst.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return stored_gzip(out.getvalue())


def _member(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, mode: int = 0o755
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, len(data)
    if kind == tarfile.SYMTYPE:
        info.linkname = "/bin/sh"
    return info, data


SCRIPT = f"#!/bin/sh\necho pwned-as-$(id -u) > {PWNED}\n".encode()


def crafted(
    deb: Path,
    out: Path,
    *,
    control: list[tuple[tarfile.TarInfo, bytes]] = (),  # type: ignore[assignment]
    data: list[tuple[tarfile.TarInfo, bytes]] = (),  # type: ignore[assignment]
    fields: str = "",
) -> Path:
    """DEB rebuilt in the template format (stored gzip members) with more in it."""
    members = _members(deb)

    def edit(text: bytes) -> bytes:
        return text + fields.encode()

    parts = {
        "debian-binary": members["debian-binary"],
        "control.tar.gz": _retar(members["control.tar.gz"], list(control), edit),
        "data.tar.gz": _retar(members["data.tar.gz"], list(data), lambda b: b),
    }
    with out.open("wb") as f:
        f.write(debformat.AR_MAGIC)
        for name, content in parts.items():
            f.write(
                debformat.ar_header(name, len(content), 0) + content + b"\n" * (len(content) % 2)
            )
    return out


HOSTILE = {
    **{
        script: (
            {"control": [_member(f"./{script}", SCRIPT)]},
            f"it has a {script} maintainer script",
        )
        for script in debformat.SCRIPTS
    },
    "shlibs": ({"control": [_member("./shlibs", b"x")]}, "control.tar holds shlibs"),
    "file outside": (
        {"data": [_member("./bin/sh", b"\x7fELF static")]},
        "it installs /bin/sh, outside /usr/share/tmpl2deb/templates/tmpl-small",
    ),
    "traversal": (
        {"data": [_member("./usr/share/doc/tmpl-small/../../../../etc/passwd", b"x")]},
        "data.tar member",
    ),
    "symlink": (
        {"data": [_member("./usr/share/tmpl2deb/templates/tmpl-small/sh", kind=tarfile.SYMTYPE)]},
        "which is not a regular file or a directory",
    ),
    "conflicts": ({"fields": "Conflicts: dpkg\n"}, "it declares Conflicts"),
    "depends": ({"fields": "Depends: evil\n"}, "Depends: evil is not allowed (it is no delta)"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_only_a_template_gets_in(
    cli: Cli, pack_small: Callable[..., Path], tmp_path: Path, kind: str
) -> None:
    changes, message = HOSTILE[kind]
    deb = crafted(pack_small(), tmp_path / "tmpl-small_1.0_arm64.deb", **changes)  # type: ignore[arg-type]
    sh("dpkg-deb", "--info", deb)  # dpkg itself takes it for a package
    repo = tmp_path / "repo"
    for verb in (("publish", "--repo", repo, deb), ("info", deb), ("unpack", deb, tmp_path / "d")):
        assert cli(*verb) == 1, (verb, cli.err)
        assert message in cli.err, (verb, cli.err)
        assert cli.err.count("\n") == 1, cli.err
    assert not repo.exists() and not (tmp_path / "d").exists()
    # in a repository someone else wrote (reprepro takes it): stage fetches it, and refuses it
    # before anything of it runs or is unpacked
    other = tmp_path / "other"
    (other / "conf").mkdir(parents=True)
    (other / "conf/distributions").write_text(
        "Codename: bookworm\nArchitectures: arm64\nComponents: main\n"
    )
    sh("reprepro", "--basedir", other, "includedeb", "bookworm", deb)
    staging = tmp_path / "staging"
    source = f"deb [trusted=yes] file:{other} bookworm main"
    assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-small", staging) == 1
    assert message in cli.err, cli.err
    assert not staging.exists() and not Path(PWNED).exists()


# -- writers, readers, kills -------------------------------------------------------------------


@pytest.fixture
def templates(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """make(name, version): a small template .deb (amd64, bookworm)."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    out = tmp_path / "debs"
    out.mkdir()

    def make(name: str, version: str) -> Path:
        (tree / "etc/stamp").write_text(f"{name} {version}\n")
        argv = ("pack", tree, "--arch", "amd64", "-o", out, "--name", name, "--version", version)
        return Path(tmpl2deb(*argv).stdout.strip())

    yield make


def apt_reads(url: str, root: Path) -> tuple[bool, str]:
    """apt-get update of URL (trusted) into a throw-away apt root: (ok, what it said)."""
    for name in ("etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d",
                 "var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):  # fmt: skip
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    (root / "etc/apt/sources.list.d/t.list").write_text(f"deb [trusted=yes] {url} bookworm main\n")
    conf = root / "apt.conf"
    conf.write_text(f'Dir "{root}/";\nDir::State::status "{root}/status";\n'
                    'APT::Sandbox::User "root";\n')  # fmt: skip
    for entry in (root / "var/lib/apt/lists").glob("*_*"):
        entry.unlink()
    done = subprocess.run(["apt-get", "update", "--error-on=any", "-q"], capture_output=True,
                          text=True, env={**os.environ, "APT_CONFIG": os.fspath(conf)})  # fmt: skip
    said = done.stdout + done.stderr
    bad = [line for line in said.splitlines() if line.startswith(("E:", "W:", "Err"))]
    return done.returncode == 0 and not bad, said


def consistent(repo: Path, tmp_path: Path) -> None:
    """apt reads it, every digest matches, and nothing a writer makes in passing is left."""
    ok, said = apt_reads(f"file:{repo}", tmp_path / "apt-check")
    assert ok, said
    assert tmpl2deb("list", "--check", "--repo", repo, check=False).returncode == 0
    assert not list(repo.glob("**/.tmpl2deb-tmp-*"))


def held(repo: Path) -> list[str]:
    listing = tmpl2deb("list", "--repo", repo).stdout.splitlines()[1:]
    return [" ".join(line.split()[:2]) for line in listing]


def publish_all(repo: Path, debs: list[Path]) -> list[str]:
    """Start one publish per .deb at once; the last error line of each that failed."""
    procs = [subprocess.Popen([*TMPL2DEB, "publish", "--repo", repo, deb],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for deb in debs]  # fmt: skip
    failed = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            failed.append(err.strip().splitlines()[-1])
    return failed


def test_concurrent_publishes_all_land(
    templates: Callable[[str, str], Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    names = [templates(f"t{i}", "1.0") for i in range(8)]
    assert publish_all(repo, names) == []  # into a new repository: one creates it
    assert held(repo) == [f"tmpl-t{i} 1.0" for i in range(8)]
    versions = [templates("multi", f"1.{i}") for i in range(8)]
    assert publish_all(repo, versions) == []  # into the existing one, versions of one template
    assert held(repo)[:8] == [f"tmpl-multi 1.{i}" for i in range(8)]
    consistent(repo, tmp_path)
    with http_server(repo) as url:
        out = tmpl2deb("resolve", "--source", f"deb [trusted=yes] {url} bookworm main",
                       "--arch", "amd64", "tmpl-multi").stdout  # fmt: skip
    assert out.startswith("tmpl-multi 1.7 "), "the newest is what consumers get"


def test_a_writer_waits_for_the_lock_and_gives_up_naming_the_holder(
    templates: Callable[[str, str], Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    deb = templates("one", "1.0")
    repo.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({os.fspath(repo / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid 4242 (the test holder)')\n"
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        start = time.monotonic()
        late = tmpl2deb("publish", "--repo", repo, "--lock-timeout", "1", deb, check=False)
        assert late.returncode == 1 and time.monotonic() - start < 10
        assert "Waiting for the lock on" in late.stderr and "the test holder" in late.stderr
        assert "gave up after 1 s waiting for the lock on" in late.stderr
        waiting = subprocess.Popen([*TMPL2DEB, "publish", "--repo", repo, deb], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        time.sleep(1)
        assert waiting.poll() is None, "it waits while the lock is held"
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel releases a dead holder's lock
        holder.communicate()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert held(repo) == ["tmpl-one 1.0"]


def kill_publish(repo: Path, deb: Path, delay: float, at_first_write: bool) -> bool:
    """SIGKILL a publish (its whole process group); whether it was still running."""
    proc = subprocess.Popen([*TMPL2DEB, "publish", "--repo", repo, deb], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    end = time.monotonic() + delay
    while time.monotonic() < end and proc.poll() is None:
        if at_first_write and list(repo.glob("**/.tmpl2deb-tmp-*")):
            break
        time.sleep(0.001)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def test_a_killed_publish_does_not_wedge_the_repository(
    templates: Callable[[str, str], Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    big = tmp_path / "tree/blob"
    big.write_bytes(os.urandom(32 << 20))  # a publish takes long enough to be caught in it
    debs = [templates("big", f"1.{i}") for i in range(7)]
    assert publish_all(repo, debs[:1]) == []
    killed = 0
    for i, deb in enumerate(debs[1:]):
        killed += kill_publish(repo, deb, 0.15 + 0.05 * i, at_first_write=i % 2 == 0)
        assert publish_all(repo, [deb]) == [], f"the publish after kill {i + 1} failed"
        consistent(repo, tmp_path)
    assert killed >= 4, "the publishes ended before they could be killed"
    assert held(repo) == [f"tmpl-big 1.{i}" for i in range(7)]


def test_a_repository_reprepro_wrote_is_taken_over_even_with_its_stale_lock(
    templates: Callable[[str, str], Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "conf").mkdir(parents=True)
    (repo / "conf/distributions").write_text(
        "Codename: bookworm\nArchitectures: amd64\nComponents: main\n"
    )
    sh("reprepro", "--basedir", repo, "includedeb", "bookworm", templates("old", "1.0"))
    (repo / "db/lockfile").touch()  # reprepro killed
    done = tmpl2deb("publish", "--repo", repo, templates("new", "1.0"))
    assert "Removing reprepro's lock file" in done.stderr
    assert held(repo) == ["tmpl-new 1.0", "tmpl-old 1.0"]
    consistent(repo, tmp_path)


def test_readers_during_publishes_see_old_or_new(
    templates: Callable[[str, str], Path], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    debs = [templates("busy", f"1.{i}") for i in range(4)]
    assert publish_all(repo, debs[:1]) == []
    stop = threading.Event()
    publishes = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            forced = tmpl2deb("publish", "--force", "--repo", repo, debs[i % 4], check=False)
            publishes.append(forced.returncode)

    thread = threading.Thread(target=writer)
    reads: list[str] = []
    with http_server(repo) as url:
        thread.start()
        try:
            end = time.monotonic() + 15
            while time.monotonic() < end:
                ok, said = apt_reads(url, tmp_path / "reader")
                reads.append("" if ok else said)
        finally:
            stop.set()
            thread.join()
    assert len(publishes) >= 5 and set(publishes) == {0}
    assert len(reads) >= 10 and [r for r in reads if r] == []


def test_retention_keeps_what_deltas_need_and_remove_refuses_dependants(
    cli: Cli, small_tree: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def pack(name: str, version: str, *extra: str | Path) -> Path:
        assert cli("pack", small_tree, "--name", name, "--version", version, "-o", out, *extra) == 0
        return Path(cli.out.strip())

    repo = tmp_path / "repo"
    base = pack("base", "1.0")
    middleware = pack("middleware", "1.0", "--delta-from", base)
    assert cli("publish", "--repo", repo, "--retain", "1", base, middleware) == 0, cli.err
    assert cli("publish", "--repo", repo, pack("base", "1.1")) == 0, cli.err
    assert cli("publish", "--repo", repo, pack("base", "1.2")) == 0, cli.err
    assert held(repo) == ["tmpl-base 1.0", "tmpl-base 1.2", "tmpl-middleware 1.0"]
    assert cli("remove", "--repo", repo, "tmpl-base", "1.0") == 1
    assert "tmpl-middleware 1.0 depend on it; remove those first" in cli.err
    staging = tmp_path / "staging"
    source = f"deb [trusted=yes] file:{repo} bookworm main"
    assert cli("stage", "--source", source, "--arch", "arm64", "tmpl-middleware", staging) == 0
    assert cli("remove", "--repo", repo, "tmpl-middleware", "1.0") == 0, cli.err
    assert cli("remove", "--repo", repo, "tmpl-base", "1.0") == 0, cli.err
    assert held(repo) == ["tmpl-base 1.2"]
