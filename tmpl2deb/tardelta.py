"""Member-level deltas of rootfs tars, made and applied as streams.

A delta template's payload is the zstd of a *tar delta*: the child's rootfs tar written as
steps against its parent's. Both tars come from the same GNU tar flags (sorted by name), so
their members come in one order and one pass over both finds what the child keeps:

    MAGIC, then records of one byte and a little-endian u64 N:
    C N   copy the next N members of the parent
    S N   skip the next N members of the parent
    I 0   one member of the child follows, as raw tar bytes
    E N   the end: N bytes of the child's end-of-archive follow

A member is its raw bytes: extended (pax) headers, header and data with padding. Members are
compared byte for byte, so applying the steps rebuilds the child tar exactly and its recorded
sha256 holds. Neither side is ever held whole in memory or written to a temporary file: a
delta costs what reading both tars costs, whatever their size.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tmpl2deb.errors import FormatError
from tmpl2deb.pump import READ_SIZE, SPLICE_MIN, splice_all
from tmpl2deb.tarstream import BLOCK, member_name, normalize, parse_number, parse_pax, writer

__all__ = ["MAGIC", "Truncated", "apply_delta", "write_delta"]

MAGIC = b"tmpl2deb tar delta 1\n"
RECORD = struct.Struct("<cQ")
COPY, SKIP, INSERT, END = b"C", b"S", b"I", b"E"
_EXTENSIONS = frozenset(b"xgLK")
_ZERO = bytes(BLOCK)


class Truncated(FormatError):
    """A stream ended early: the tool writing it (side) may have failed."""

    def __init__(self, side: str, message: str) -> None:
        super().__init__(message)
        self.side = side


class Reader:
    """Buffered reads from a file descriptor; every byte read may also go to a sha256."""

    def __init__(self, fd: int, side: str, digest: bool = False) -> None:
        self._fd = fd
        self.side = side
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self.offset = 0
        self.sha256 = hashlib.sha256() if digest else None
        self.trailer = b""  # the end-of-archive block, once next_member() met it
        self._seek = not digest and stat.S_ISREG(os.fstat(fd).st_mode)
        self._splice: bool | None = None  # not known until tried

    def _refill(self) -> int:
        left = self._end - self._start
        if left:
            self._buf[:left] = bytes(self._view[self._start : self._end])
        self._start, self._end = 0, left
        got = os.readv(self._fd, [self._view[left:]])
        self._end += got
        return got

    def _take(self, n: int) -> memoryview:
        view = self._view[self._start : self._start + n]
        if self.sha256 is not None:
            self.sha256.update(view)
        self._start += n
        self.offset += n
        return view

    def read(self, n: int) -> bytes:
        """Exactly n bytes (small reads: headers and records)."""
        while self._end - self._start < n:
            if not self._refill():
                raise Truncated(self.side, f"the {self.side} tar stream ends early")
        return bytes(self._take(n))

    def chunks(self, n: int) -> Iterator[memoryview]:
        """n bytes as views, each valid until the next is asked for."""
        while n:
            if self._start == self._end and not self._refill():
                raise Truncated(self.side, f"the {self.side} tar stream ends early")
            view = self._take(min(n, self._end - self._start))
            n -= len(view)
            yield view

    def same(self, other: Reader, n: int) -> bool:
        """Whether the next n bytes of both are equal; both stop where a difference was found
        (bytearray.startswith is a memcmp, comparing memoryviews is not)."""
        while n:
            for reader in (self, other):
                if reader._start == reader._end and not reader._refill():
                    raise Truncated(reader.side, f"the {reader.side} tar stream ends early")
            k = min(n, self._end - self._start, other._end - other._start)
            mine = self._start
            equal = self._buf.startswith(other._take(k), mine, mine + k)
            self._take(k)
            n -= k
            if not equal:
                return False
        return True

    def skip(self, n: int) -> None:
        buffered = min(n, self._end - self._start)
        if self._seek and n > buffered:
            # a regular file not hashed: members inserted whole are sent from it by offset,
            # not read through the buffer as well
            self._take(buffered)
            os.lseek(self._fd, n - buffered, os.SEEK_CUR)
            self.offset += n - buffered
            return
        for _ in self.chunks(n):
            pass

    def move(self, n: int, out: int, flush: Callable[[], None]) -> None:
        """Send the next n bytes to fd out: what is buffered with write, after flush(); the
        rest with splice(2), in the kernel, when this reader's fd or out is a pipe and
        nothing hashes the bytes (else through the buffer)."""
        buffered = min(n, self._end - self._start)
        if self.sha256 is not None or self._splice is False or n - buffered < SPLICE_MIN:
            write = writer(out)
            flush()
            for view in self.chunks(n):
                write(view)
            return
        flush()
        writer(out)(self._take(buffered))
        left = n - buffered
        moved = splice_all(self._fd, out, left)
        if moved is None:  # neither side a pipe
            self._splice = False
            for view in self.chunks(left):
                writer(out)(view)
            return
        self._splice = True
        self.offset += moved
        if moved < left:
            raise Truncated(self.side, f"the {self.side} tar stream ends early")

    def rest(self) -> Iterator[memoryview]:
        """Everything up to the end of the stream."""
        while self._start < self._end or self._refill():
            yield self._take(self._end - self._start)


@dataclass
class Member:
    key: tuple[bytes, ...]  # path components: the order GNU tar --sort=name writes them in
    header: bytes  # extended headers and the header, raw
    size: int  # data with its padding
    offset: int  # where the member starts in its stream


def next_member(reader: Reader) -> Member | None:
    """The headers of the next member, or None at the end-of-archive block (consumed, and
    kept in reader.trailer)."""
    start = reader.offset
    header = bytearray()
    pax: dict[bytes, bytes] = {}
    longname: bytes | None = None
    while True:
        block = reader.read(BLOCK)
        if block == _ZERO:
            if header:
                raise FormatError(f"the {reader.side} tar has an extended header without member")
            reader.trailer = block
            return None
        header += block
        kind, size = block[156], parse_number(block[124:136])
        if kind in _EXTENSIONS:
            data = reader.read(-(-size // BLOCK) * BLOCK)
            header += data
            if kind == ord("x"):
                pax.update(parse_pax(data[:size]))
            elif kind == ord("L"):
                longname = data[:size].rstrip(b"\0")
            continue
        path = normalize(member_name(block, pax, longname))
        size = int(pax.get(b"size", size))
        return Member(
            tuple(path.split(b"/")) if path else (), bytes(header), -(-size // BLOCK) * BLOCK, start
        )


class _Steps:
    """Writes the records, joining runs of copies and of skips."""

    def __init__(self, out: int) -> None:
        self.write = writer(out)
        self._op = b""
        self._count = 0
        self.write(MAGIC)

    def run(self, op: bytes) -> None:
        if op != self._op:
            self.flush()
            self._op = op
        self._count += 1

    def flush(self) -> None:
        if self._count:
            self.write(RECORD.pack(self._op, self._count))
        self._op, self._count = b"", 0

    def record(self, op: bytes, n: int = 0) -> None:
        self.flush()
        self.write(RECORD.pack(op, n))


def write_delta(child: int, parent: int, out: int, digest: bool = True) -> tuple[int, str]:
    """Write the tar delta of the child tar (a regular file: inserted members are sent from it
    with sendfile) against the parent tar stream to fd out; return the parent's size and, with
    digest, sha256 (every byte of it is read), else ''."""
    children, parents = Reader(child, "child"), Reader(parent, "parent", digest=digest)
    steps = _Steps(out)
    c, p = next_member(children), next_member(parents)
    while c is not None:
        while p is not None and p.key < c.key:  # gone in the child
            parents.skip(p.size)
            steps.run(SKIP)
            p = next_member(parents)
        if p is not None and p.key == c.key:
            if p.header == c.header and p.size == c.size and children.same(parents, c.size):
                steps.run(COPY)
                c, p = next_member(children), next_member(parents)
                continue
            parents.skip(p.size - (parents.offset - p.offset - len(p.header)))
            steps.run(SKIP)
            p = next_member(parents)
        children.skip(c.size - (children.offset - c.offset - len(c.header)))
        steps.record(INSERT)
        _send(out, child, c.offset, children.offset - c.offset)
        c = next_member(children)
    if p is not None:
        parents.skip(p.size)
    _drain(parents, ended=p is None)
    trailer = children.trailer + b"".join(bytes(v) for v in children.rest())
    steps.record(END, len(trailer))
    steps.write(trailer)
    return parents.offset, parents.sha256.hexdigest() if parents.sha256 is not None else ""


def _send(out: int, fd: int, offset: int, count: int) -> None:
    while count:
        sent = os.sendfile(out, fd, offset, count)
        if not sent:
            raise Truncated("child", "the child tar file ends early")
        offset += sent
        count -= sent


def apply_delta(
    parent: int, delta: int, out: int, check_parent: Callable[[int, str], None] | None = None
) -> None:
    """Write the child tar to fd out from the parent tar stream and the tar delta stream.
    The parent is read to its end; with check_parent, its sha256 is computed on the way and
    check_parent(size, sha256) called before the child's end-of-archive is written. (A caller
    that verifies the child's own sha256 need not: a parent other than the one the delta was
    made from cannot rebuild it, and hashing the parent costs as much as hashing the child.)"""
    parents = Reader(parent, "parent", digest=check_parent is not None)
    steps = Reader(delta, "delta")
    output = _Gather(out)
    write = output.write

    if steps.read(len(MAGIC)) != MAGIC:
        raise FormatError("the delta payload is not a tmpl2deb tar delta")
    while (record := RECORD.unpack(steps.read(RECORD.size)))[0] != END:
        op, n = record
        if op == INSERT:
            _pass_member(steps, "the delta ends inside a member", output)
        elif op in (COPY, SKIP):
            for _ in range(n):
                _pass_member(parents, "the delta reaches past the end of the parent's tar",
                             output if op == COPY else None)  # fmt: skip
        else:
            raise FormatError(f"the delta has a bad step {op!r}")
    _drain(parents)
    if check_parent is not None:
        assert parents.sha256 is not None
        check_parent(parents.offset, parents.sha256.hexdigest())
    for view in steps.chunks(record[1]):
        write(view)
    output.flush()
    if any(True for _ in steps.rest()):
        raise FormatError("the delta has data after its end")


class _Gather:
    """Writes to fd, gathering small pieces: one write per ~256 KiB, not two per member."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._write = writer(fd)
        self._pending = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        if len(data) < 1 << 16:
            self._pending += data
            if len(self._pending) < 1 << 18:
                return
            data = b""
        self.flush()
        self._write(data)

    def flush(self) -> None:
        self._write(self._pending)
        self._pending.clear()


def _pass_member(reader: Reader, missing: str, output: _Gather | None) -> None:
    """Read the next member, writing it to output (or skipping it without)."""
    member = next_member(reader)
    if member is None:
        raise FormatError(missing)
    if output is None:
        reader.skip(member.size)
        return
    output.write(member.header)
    if member.size < SPLICE_MIN:
        for view in reader.chunks(member.size):
            output.write(view)
        return
    reader.move(member.size, output.fd, output.flush)


def _drain(reader: Reader, ended: bool = False) -> None:
    """Read the rest of a tar stream: members up to the end-of-archive block (unless it was
    met already), then whatever follows it."""
    while not ended and (member := next_member(reader)) is not None:
        reader.skip(member.size)
    for _ in reader.rest():
        pass
