"""tardelta: the child tar rebuilt byte for byte from the parent tar and the delta, on tars
written by GNU tar with the flags pack uses; bad deltas fail."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import needs_tool, sh
from tmpl2deb import rootfs, tardelta
from tmpl2deb.errors import FormatError

MTIME = 1_700_000_000


@pytest.fixture(autouse=True)
def _tools() -> None:
    needs_tool("tar")


def make_tar(tree: Path, out: Path, *extra: str) -> Path:
    sh("tar", "--create", f"--file={out}", f"--directory={tree}", *rootfs.TAR_CREATE_FLAGS,
       "--owner=0", "--group=0", f"--mtime=@{MTIME}", *extra, ".")  # fmt: skip
    return out


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def trees(tmp_path: Path) -> tuple[Path, Path]:
    parent, child = tmp_path / "parent", tmp_path / "child"
    big = os.urandom(3 << 20)
    write(parent / "usr/lib/big", big)
    write(parent / "usr/bin/same-size", b"A" * 4096, 0o755)
    write(parent / "usr/bin/mode", b"x")
    write(parent / "etc/gone", b"removed in the child")
    write(parent / "var/lib/dpkg/status", b"Package: a\n")
    write(child / "usr/lib/big", big)
    write(child / "usr/bin/same-size", b"B" * 4096, 0o755)  # same header, other content
    write(child / "usr/bin/mode", b"x", 0o755)
    write(child / "usr/share/new" / ("n" * 120), b"a long new name")
    write(child / "var/lib/dpkg/status", b"Package: a\n\nPackage: b\n")
    return parent, child


def delta_of(child_tar: Path, parent_tar: Path, out: Path) -> tuple[int, str]:
    with child_tar.open("rb") as c, parent_tar.open("rb") as p, out.open("wb") as o:
        return tardelta.write_delta(c.fileno(), p.fileno(), o.fileno())


def applied(parent_tar: Path, delta: Path, out: Path) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    with parent_tar.open("rb") as p, delta.open("rb") as d, out.open("wb") as o:
        tardelta.apply_delta(p.fileno(), d.fileno(), o.fileno(), lambda *a: seen.append(a))
    return seen


def digest(path: Path) -> tuple[int, str]:
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("order", [["--sort=name"], []])
def test_child_rebuilt_exactly(tmp_path: Path, order: list[str]) -> None:
    parent, child = trees(tmp_path)
    parent_tar = make_tar(parent, tmp_path / "parent.tar", "--sort=name")
    child_tar = make_tar(child, tmp_path / "child.tar", *order)  # unsorted: still exact
    delta, rebuilt = tmp_path / "delta", tmp_path / "rebuilt.tar"
    assert delta_of(child_tar, parent_tar, delta) == digest(parent_tar)
    assert applied(parent_tar, delta, rebuilt) == [digest(parent_tar)]
    assert rebuilt.read_bytes() == child_tar.read_bytes()
    if order:  # the 3 MiB file is copied from the parent, the changed ones are in the delta
        data = delta.read_bytes()
        assert len(data) < 64 << 10
        assert b"B" * 4096 in data and b"Package: b" in data and b"A" * 4096 not in data


@pytest.mark.parametrize("inserted", [False, True])
def test_child_rebuilt_exactly_through_pipes(tmp_path: Path, inserted: bool) -> None:
    """As unpack runs it (parent and delta from zstd, the child into a pipe): the data of
    large members, copied or inserted, moves with splice(2); the child is the same."""
    parent, child = trees(tmp_path)
    if inserted:
        write(child / "usr/lib/big2", os.urandom(1 << 20))
    parent_tar = make_tar(parent, tmp_path / "parent.tar", "--sort=name")
    child_tar = make_tar(child, tmp_path / "child.tar", "--sort=name")
    delta, rebuilt = tmp_path / "delta", tmp_path / "rebuilt.tar"
    delta_of(child_tar, parent_tar, delta)
    with ExitStack() as stack:
        cats = [stack.enter_context(subprocess.Popen(["cat", f], stdout=subprocess.PIPE))
                for f in (parent_tar, delta)]  # fmt: skip
        sink = stack.enter_context(
            subprocess.Popen(["dd", f"of={rebuilt}", "status=none"], stdin=subprocess.PIPE)
        )
        assert sink.stdin is not None and cats[0].stdout and cats[1].stdout
        tardelta.apply_delta(cats[0].stdout.fileno(), cats[1].stdout.fileno(), sink.stdin.fileno())
        sink.stdin.close()
    assert rebuilt.read_bytes() == child_tar.read_bytes()


def test_identical_tars_give_a_tiny_delta(tmp_path: Path) -> None:
    parent, _ = trees(tmp_path)
    tar = make_tar(parent, tmp_path / "p.tar", "--sort=name")
    delta = tmp_path / "delta"
    delta_of(tar, tar, delta)
    # one run of copies and the end-of-archive (zeros, up to a 10 KiB tar record)
    assert len(delta.read_bytes()) < 12 << 10 < (3 << 20) < tar.stat().st_size
    assert delta.read_bytes()[len(tardelta.MAGIC) :].startswith(b"C")


def step(op: bytes, n: int = 0) -> bytes:
    return struct.pack("<cQ", op, n)


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        (b"not a delta at all\n!!!", "not a tmpl2deb tar delta"),
        (tardelta.MAGIC + step(b"C", 10**6), "past the end of the parent"),
        (tardelta.MAGIC + step(b"Z", 1), "bad step"),
        (tardelta.MAGIC + step(b"I") + bytes(1024), "ends inside a member"),
        (tardelta.MAGIC + step(b"C", 1), "ends early"),
        (tardelta.MAGIC + step(b"E", 1024) + bytes(2048), "data after its end"),
    ],
)
def test_bad_delta_fails(tmp_path: Path, delta: bytes, message: str) -> None:
    parent, _ = trees(tmp_path)
    parent_tar = make_tar(parent, tmp_path / "parent.tar", "--sort=name")
    (tmp_path / "delta").write_bytes(delta)
    with pytest.raises(FormatError, match=message):
        applied(parent_tar, tmp_path / "delta", tmp_path / "out.tar")


def test_other_parent_is_reported_before_the_end(tmp_path: Path) -> None:
    parent, child = trees(tmp_path)
    parent_tar = make_tar(parent, tmp_path / "parent.tar", "--sort=name")
    delta = tmp_path / "delta"
    delta_of(make_tar(child, tmp_path / "child.tar", "--sort=name"), parent_tar, delta)
    write(parent / "etc/gone", b"other content, same size!")
    other = make_tar(parent, tmp_path / "other.tar", "--sort=name")
    out = tmp_path / "out.tar"
    assert applied(other, delta, out) == [digest(other)]  # the caller compares and refuses
    assert digest(other) != digest(parent_tar)
