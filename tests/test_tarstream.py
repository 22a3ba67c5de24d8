"""The streaming tar filter: counts, digests, drop/empty, and the safety checks."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import tarfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tmpl2deb.errors import FormatError, UnsafeArchiveError
from tmpl2deb.pump import Output, Reader
from tmpl2deb.tarstream import (
    Action,
    Filtered,
    Member,
    SafetyCheck,
    checksum,
    filter_tar,
    normalize,
    parse_number,
    with_size,
)


def make_tar(*members: tuple[str, str, bytes | str]) -> bytes:
    """(name, kind, data-or-linkname) -> pax tar bytes, kind in file/dir/sym/hard."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            payload = b""
            if kind == "file":
                payload = data if isinstance(data, bytes) else data.encode()
                info.size = len(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = str(data)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def run_filter(
    data: bytes, chunk: int = 700, out: bytearray | None = None, **kwargs: Any
) -> tuple[Filtered, bytes]:
    """filter_tar over a pipe that gets DATA in writes of CHUNK bytes (reads then end at
    those boundaries), into a file; the result and what was written (also into OUT, when
    the filter raises)."""
    read_fd, write_fd = os.pipe()
    out_fd = os.memfd_create("filtered")

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), os.fdopen(write_fd, "wb", 0) as pipe:
            for i in range(0, len(data), chunk):
                pipe.write(data[i : i + chunk])

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        digest = kwargs.pop("digest", True)
        output = Output(out_fd, digest=digest)
        try:
            result = filter_tar(Reader(read_fd, "test"), output, **kwargs)
        finally:
            output.flush()
            written = os.pread(out_fd, 1 << 30, 0)
            if out is not None:
                out += written
    finally:
        os.close(read_fd)
        feeder.join()
        os.close(out_fd)
    return result, written


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_parse_number_octal_and_base256() -> None:
    assert parse_number(b"0000644\0") == 0o644
    assert parse_number(b"\x80" + (8 << 30).to_bytes(11, "big")) == 8 << 30


@pytest.mark.parametrize("field", [b"-000001\0", b"0_00001\0", b"+000001\0", b"0000089\0"])
def test_parse_number_takes_octal_digits_only(field: bytes) -> None:
    """What GNU tar would not read as this number is refused: a size that our check and tar
    read differently would let them see different members in one stream."""
    with pytest.raises(FormatError, match="bad number field"):
        parse_number(field)


def test_with_size_keeps_checksum_valid() -> None:
    header = make_tar(("a", "file", "abc"))[:512]
    new = with_size(header, 0)
    assert parse_number(new[124:136]) == 0
    assert parse_number(new[148:156]) == checksum(new)


def test_normalize() -> None:
    assert normalize(b"./etc/hosts") == b"etc/hosts"
    assert normalize(b"./") == b"" == normalize(b".")
    assert normalize(b"usr/") == b"usr"


@pytest.mark.parametrize("chunk", [1, 511, 512, 700, 1 << 20])
def test_passthrough_is_byte_identical(chunk: int) -> None:
    data = make_tar(("./", "dir", ""), ("./a", "file", "x" * 1000), ("./" + "n" * 150, "file", "y"))
    flt, out = run_filter(data, chunk)
    assert out == data
    assert flt.sha256 == hashlib.sha256(data).hexdigest()
    assert flt.size == len(data)
    assert flt.members == 3


def test_drop_and_empty() -> None:
    data = make_tar(("./keep", "file", "k"), ("./drop", "file", "d" * 2000), ("./mid", "file", "m"))

    def decide(member: Member) -> Action:
        return {b"drop": Action.DROP, b"mid": Action.EMPTY}.get(member.name, Action.KEEP)

    flt, out = run_filter(data, decide=decide)
    assert names(out) == ["./keep", "./mid"]
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert tar.getmember("./mid").size == 0
        assert tar.extractfile("./keep").read() == b"k"  # type: ignore[union-attr]
    assert flt.members == 2


def test_capture_small_files() -> None:
    data = make_tar(("./etc/os-release", "file", "ID=debian\n"), ("./x", "file", "x"))
    flt, _ = run_filter(data, capture=frozenset({b"etc/os-release"}))
    assert flt.captured == {b"etc/os-release": b"ID=debian\n"}


def test_truncated_stream_is_refused() -> None:
    data = make_tar(("./a", "file", "x" * 5000))
    with pytest.raises(FormatError, match="truncated"):
        run_filter(data[:3000])


def test_bad_checksum_is_refused() -> None:
    data = bytearray(make_tar(("./a", "file", "x")))
    data[0] ^= 1
    with pytest.raises(FormatError, match="checksum"):
        run_filter(bytes(data))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("/etc/passwd", "file", "x")], "absolute"),
        ([("../evil", "file", "x")], r"'\.\.'"),
        ([("a/../../evil", "file", "x")], r"'\.\.'"),
        ([("link", "sym", "/etc"), ("link/passwd", "file", "x")], "through the symlink"),
        ([("d", "sym", "."), ("d/d/x", "file", "x")], "through the symlink"),
        ([("hard", "hard", "/etc/shadow")], "absolute"),
        ([("hard", "hard", "../outside")], r"'\.\.'"),
        ([("hard", "hard", "never-seen")], "not an earlier"),
        ([("s", "sym", "/etc"), ("h", "hard", "s/shadow")], "through the symlink"),
        ([("s", "sym", "/etc"), ("s", "file", "x")], "replaces an earlier symlink"),
        # the directory checked for the members before is a link now
        ([("a/x", "file", "x"), ("a", "sym", "/etc"), ("a/y", "file", "y")], "through the symlink"),
    ],
)
def test_safety_check_refuses(members: list[tuple[str, str, str]], message: str) -> None:
    data = make_tar(*members)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        offending = tar.getmembers()[-1].offset
    out = bytearray()
    with pytest.raises(UnsafeArchiveError, match=message):
        run_filter(data, 512, out, check=SafetyCheck())
    # nothing of the refused member reached the consumer (tar), only what came before it
    assert len(out) <= offending
    assert bytes(out) == data[: len(out)]


def test_safety_check_accepts_a_normal_tree() -> None:
    data = make_tar(
        ("./", "dir", ""),
        ("./etc", "dir", ""),
        ("./etc/abs", "sym", "/usr/bin/a"),
        ("./etc/rel", "sym", "../usr"),
        ("./usr", "dir", ""),
        ("./usr/a", "file", "a"),
        ("./usr/b", "hard", "./usr/a"),
    )
    flt, out = run_filter(data, check=SafetyCheck())
    assert out == data and flt.members == 7


def test_pax_global_header_passes_and_may_not_rename_every_member() -> None:
    """A 'g' header (git archive, tarfile's pax_headers) goes through with the members; one
    that sets path, linkpath or size for every member would make the checks of each member's
    own header meaningless, and is refused."""
    body = make_tar(("etc/hostname", "file", "x"))
    for keys, refused in (({"comment": "abc"}, False), ({"path": "../x"}, True)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                          pax_headers=keys) as tar:  # fmt: skip
            info = tarfile.TarInfo("etc/hostname")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        if refused:
            with pytest.raises(UnsafeArchiveError, match="pax global header that sets path"):
                run_filter(buf.getvalue(), check=SafetyCheck())
            continue
        flt, out = run_filter(buf.getvalue(), check=SafetyCheck(), decide=lambda m: Action.KEEP)
        assert out == buf.getvalue() and names(out) == names(body)


@pytest.mark.parametrize("kinds", [("pipe", "pipe"), ("file", "pipe"), ("file", "file")])
def test_filter_splices_member_data_and_still_checks_every_header(
    tmp_path: Path, kinds: tuple[str, str]
) -> None:
    """filter_tar: the data of large members moves in the kernel (or, when neither side is a
    pipe, through the buffer); the stream out is the stream in, and a hostile member
    after spliced data is refused before any byte of it is written."""
    big = os.urandom(3 << 20)
    good = make_tar(("a", "file", big), ("b", "file", "x" * 40000), ("c", "sym", "a"))
    bad = make_tar(("a", "file", big), ("../evil", "file", "x"))
    for data, refused in ((good, False), (bad, True)):
        src, dst = tmp_path / "in", tmp_path / "out"
        src.write_bytes(data)
        dst.unlink(missing_ok=True)
        with ExitStack() as stack:
            if kinds[0] == "pipe":
                feeder = stack.enter_context(subprocess.Popen(["cat", src], stdout=subprocess.PIPE))
                fd_in = feeder.stdout.fileno()  # type: ignore[union-attr]
            else:
                fd_in = stack.enter_context(src.open("rb")).fileno()
            sink = None
            if kinds[1] == "pipe":
                sink = stack.enter_context(
                    subprocess.Popen(["dd", f"of={dst}", "status=none"], stdin=subprocess.PIPE)
                )
                assert sink.stdin is not None
                fd_out = sink.stdin.fileno()
            else:
                fd_out = stack.enter_context(dst.open("wb")).fileno()
            output = Output(fd_out)
            flt: Filtered | None = None
            if refused:
                with pytest.raises(UnsafeArchiveError, match="contains '..'"):
                    filter_tar(Reader(fd_in, "test"), output, check=SafetyCheck())
                output.flush()
            else:
                flt = filter_tar(Reader(fd_in, "test"), output, check=SafetyCheck())
            if sink is not None:
                assert sink.stdin is not None
                sink.stdin.close()
                sink.wait()
        out = dst.read_bytes()
        if refused:
            assert b"evil" not in out and out == data[: len(out)]
            assert len(out) >= len(big)  # the big member went through first
        else:
            assert flt is not None
            assert out == data and flt.size == len(data) and flt.members == 3
