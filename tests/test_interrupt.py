"""pack and unpack interrupted by real signals, and onto a full file system (a real tmpfs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root, sh

TMPL2DEB = [sys.executable, "-m", "tmpl2deb"]


@pytest.fixture(autouse=True)
def _root() -> None:
    needs_root()  # pack and unpack of a rootfs, mount


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree with 96 MiB that does not compress: pack and unpack take long enough to be
    caught in the middle."""
    tree = tmp_path_factory.mktemp("big") / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    (tree / "blob").write_bytes(os.urandom(96 << 20))
    return tree


@pytest.fixture(scope="module")
def big_deb(big_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("big-deb")
    argv: list[str | Path] = [*TMPL2DEB, "pack", "-q", big_tree, "--name", "big", "--arch",
                              "amd64", "-o", out]  # fmt: skip
    return Path(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip())


def start(*argv: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*TMPL2DEB, *(str(a) for a in argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def when_exists(proc: subprocess.Popen[str], directory: Path, pattern: str) -> None:
    """Wait until the process has made its temporary."""
    end = time.monotonic() + 30
    while not list(directory.glob(pattern)):
        assert proc.poll() is None, "it ended before it could be interrupted"
        assert time.monotonic() < end
        time.sleep(0.002)
    time.sleep(0.01)  # in the middle: a pack of it takes 0.2 s on 2 cores


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


PACK_TMP = ".tmpl2deb-*.deb.part"


SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.parametrize(("sig", "code", "word"), SIGNALS)
def test_pack_interrupted_leaves_nothing(
    big_tree: Path, tmp_path: Path, sig: int, code: int, word: str
) -> None:
    proc = start("pack", big_tree, "--name", "big", "--arch", "amd64", "-o", tmp_path)
    when_exists(proc, tmp_path, PACK_TMP)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.splitlines()[-1] == f"tmpl2deb: error: {word}"
    assert hidden(tmp_path) == []


def test_pack_killed_leaves_a_hidden_temporary_the_next_pack_removes(
    big_tree: Path, tmp_path: Path
) -> None:
    argv = ("pack", big_tree, "--name", "big", "--arch", "amd64", "-o", tmp_path)
    proc = start(*argv)
    when_exists(proc, tmp_path, PACK_TMP)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    left = hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(".tmpl2deb-"), left
    done = subprocess.run([*TMPL2DEB, *(str(a) for a in argv)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"Removing {tmp_path / left[0]}, left by a tmpl2deb that was killed" in done.stderr
    (made,) = hidden(tmp_path)
    assert made.startswith("tmpl-big_") and made.endswith("_amd64.deb")


def test_unpack_interrupted_or_killed(big_deb: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    proc = start("unpack", big_deb, dest)
    when_exists(proc, tmp_path, ".rootfs.tmpl2deb-*/blob")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.splitlines()[-1] == "tmpl2deb: error: interrupted", err
    assert hidden(tmp_path) == []
    proc = start("unpack", big_deb, dest)
    when_exists(proc, tmp_path, ".rootfs.tmpl2deb-*/blob")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    left = hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(".rootfs.tmpl2deb-"), left
    done = subprocess.run([*TMPL2DEB, "unpack", big_deb, dest], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "left by a tmpl2deb that was killed" in done.stderr
    assert hidden(tmp_path) == ["rootfs"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs."""
    mount = tmp_path / "small"
    mount.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount)
    try:
        yield mount
    finally:
        sh("umount", mount)


def fails_with(*argv: str | Path) -> list[str]:
    """Run tmpl2deb, which must exit 3 (the host failed: the disk is full); its error lines."""
    done = subprocess.run([*TMPL2DEB, *(str(a) for a in argv)], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    return [line for line in done.stderr.splitlines() if "error" in line]


def test_a_full_disk_is_named_in_one_line(big_tree: Path, big_deb: Path, small_fs: Path) -> None:
    assert fails_with("pack", big_tree, "--name", "big", "-o", small_fs) == [
        f"tmpl2deb: error: cannot write the template into {small_fs}: the disk is full "
        "(no space left on device); nothing was left there"
    ]
    assert hidden(small_fs) == []
    dest = small_fs / "rootfs"
    assert fails_with("unpack", big_deb, dest) == [
        f"tmpl2deb: error: cannot unpack into {dest}: the disk is full (no space left on "
        "device); nothing was left there"
    ]
    assert hidden(small_fs) == []


def test_progress_in_a_log_and_on_a_terminal(big_deb: Path, tmp_path: Path) -> None:
    """Not a terminal: a line now and then with the percentage; a terminal (script(1) gives
    it one): one line redrawn in place and taken off at the end; --quiet: none."""
    argv = [*TMPL2DEB, "unpack", os.fspath(big_deb)]
    logged = subprocess.run([*argv, tmp_path / "a"], capture_output=True, text=True, check=True)
    lines = [line for line in logged.stderr.splitlines() if "Unpacking: " in line]
    assert lines and all(" % of 96 MiB, " in line and " s left" in line for line in lines), lines
    quiet = subprocess.run([*argv, "-q", tmp_path / "b"], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
    command = " ".join([*argv, os.fspath(tmp_path / "c")])
    shown = sh("script", "-qec", command, "/dev/null", text=False).stdout
    assert b"\r\x1b[Ktmpl2deb: info: Unpacking: " in shown
    # the live line is taken off before the last line and the result
    assert b"\r\x1b[Ktmpl2deb: info: Unpacked tmpl-big " in shown, shown[-300:]
    assert shown.rstrip().endswith(os.fspath(tmp_path / "c").encode()), shown[-200:]


def test_pack_progress_has_a_percentage(big_tree: Path, tmp_path: Path) -> None:
    """pack of a directory knows about how big its tar will be (from the walk it makes)."""
    argv: list[str | Path] = [*TMPL2DEB, "pack", big_tree, "--name", "big", "--arch", "amd64"]
    argv += ["-o", tmp_path]
    logged = subprocess.run(argv, capture_output=True, text=True, check=True)
    lines = [line for line in logged.stderr.splitlines() if "Packing: " in line]
    assert lines and all(" % of 96 MiB, " in line and " s left" in line for line in lines), lines
