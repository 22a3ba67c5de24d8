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

import struct
from collections.abc import Callable

from tmpl2deb.errors import FormatError
from tmpl2deb.pump import Output, Reader, Truncated, send_file, writer
from tmpl2deb.tarstream import BLOCK, Header, next_header

__all__ = ["MAGIC", "apply_delta", "write_delta"]

MAGIC = b"tmpl2deb tar delta 1\n"
RECORD = struct.Struct("<cQ")
COPY, SKIP, INSERT, END = b"C", b"S", b"I", b"E"
_ZERO = bytes(BLOCK)


def _key(header: Header) -> tuple[bytes, ...]:
    """Path components: the order GNU tar --sort=name writes members in."""
    name = header.member.name
    return tuple(name.split(b"/")) if name else ()


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
    c, p = next_header(children), next_header(parents)
    while c is not None:
        while p is not None and _key(p) < _key(c):  # gone in the child
            parents.skip(p.padded)
            steps.run(SKIP)
            p = next_header(parents)
        if p is not None and _key(p) == _key(c):
            if p.raw == c.raw and p.padded == c.padded and children.same(parents, c.padded):
                steps.run(COPY)
                c, p = next_header(children), next_header(parents)
                continue
            parents.skip(_data_left(parents, p))
            steps.run(SKIP)
            p = next_header(parents)
        children.skip(_data_left(children, c))
        steps.record(INSERT)
        length = children.offset - c.offset
        if send_file(out, child, c.offset, length) < length:
            raise Truncated("child", "the child tar file ends early")
        c = next_header(children)
    if p is not None:
        parents.skip(p.padded)
    _drain(parents, ended=p is None)
    trailer = _ZERO + b"".join(bytes(v) for v in children.rest())
    steps.record(END, len(trailer))
    steps.write(trailer)
    return parents.offset, parents.sha256.hexdigest() if parents.sha256 is not None else ""


def _data_left(reader: Reader, header: Header) -> int:
    """What is left of the member's data after a comparison stopped inside it."""
    return header.padded - (reader.offset - header.offset - len(header.raw))


def apply_delta(
    parent: int, delta: int, out: int, check_parent: Callable[[int, str], None] | None = None
) -> None:
    """Write the child tar to fd out from the parent tar stream and the tar delta stream.
    The parent is read to its end; with check_parent, its sha256 is computed on the way and
    check_parent(size, sha256) called before the child's end-of-archive is written (for a
    format 1 parent, which only the sha256 of its tar proves). Otherwise it is not hashed: a
    parent other than the one the delta was made from cannot rebuild the child, whose own
    digest the caller checks."""
    parents = Reader(parent, "parent", digest=check_parent is not None)
    steps = Reader(delta, "delta")
    output = Output(out)
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


def _pass_member(reader: Reader, missing: str, output: Output | None) -> None:
    """Read the next member, writing it to output (or skipping it without)."""
    header = next_header(reader)
    if header is None:
        raise FormatError(missing)
    if output is None:
        reader.skip(header.padded)
        return
    output.write(header.raw)
    reader.move(header.padded, output)


def _drain(reader: Reader, ended: bool = False) -> None:
    """Read the rest of a tar stream: members up to the end-of-archive block (unless it was
    met already), then whatever follows it."""
    while not ended and (header := next_header(reader)) is not None:
        reader.skip(header.padded)
    for _ in reader.rest():
        pass
