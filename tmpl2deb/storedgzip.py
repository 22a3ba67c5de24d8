"""gzip with stored deflate blocks: the data.tar and control.tar members of a template .deb.

dpkg, apt and lintian expect compressed tar members. The payload is already zstd, so the
members are gzip streams made only of "stored" deflate blocks: no compression work, and
because every block but the last holds exactly STORED_BLOCK bytes, the file offset of any
content offset is known (payload spans can be handed to zstd with sendfile)."""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from tmpl2deb.errors import FormatError

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # no name, mtime 0, Unix
STORED_BLOCK = 65535
_BLOCK_HEADER = 5
GZIP_TRAILER = 8


def stored_offset(content_offset: int) -> int:
    """Offset in the gzip member of a content byte."""
    blocks = content_offset // STORED_BLOCK + 1
    return len(GZIP_HEADER) + blocks * _BLOCK_HEADER + content_offset


def stored_size(content_size: int) -> int:
    """Size of the gzip member holding content_size bytes."""
    return stored_offset(content_size) + GZIP_TRAILER


def content_size(member_size: int) -> int:
    """Inverse of stored_size; raise FormatError if no content size gives member_size."""
    guess = (member_size - 23) * STORED_BLOCK // (STORED_BLOCK + _BLOCK_HEADER)
    for size in range(max(0, guess - 8), guess + 9):
        if stored_size(size) == member_size:
            return size
    raise FormatError(f"a {member_size}-byte member is not a tmpl2deb stored gzip stream")


def _block_header(length: int, final: bool) -> bytes:
    return struct.pack("<BHH", final, length, length ^ 0xFFFF)


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine, GF(2) matrices)."""
    if len2 <= 0:
        return crc1
    power = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(_zero_bytes(power), crc1)
        len2 >>= 1
        power += 1
    return crc1 ^ crc2


@functools.cache
def _zero_bytes(power: int) -> tuple[int, ...]:
    """The operator that appends 2**power zero bytes to a CRC (the same for every call:
    computed once, each from the one before)."""
    if power == 0:
        operator = [0xEDB88320] + [1 << n for n in range(31)]  # appends one zero bit
        for _ in range(3):
            operator = _gf2_square(operator)  # two, four, then eight zero bits
        return tuple(operator)
    return tuple(_gf2_square(_zero_bytes(power - 1)))


def _gf2_times(matrix: Sequence[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: Sequence[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def stored_gzip(data: bytes) -> bytes:
    """A whole stored gzip stream of data (for small members)."""
    out = io.BytesIO()
    writer = StoredGzipWriter(out)
    writer.write(data)
    writer.close()
    return out.getvalue()


class StoredGzipWriter:
    """Writes a stored gzip stream to out, keeping the CRC of each segment of the content."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.start = out.tell()
        self.size = 0
        self.segments: list[list[int]] = [[0, 0]]  # [crc, length] per segment
        self._partial = bytearray()
        out.write(GZIP_HEADER)

    def split(self) -> int:
        """Start a new CRC segment; return its index."""
        self.segments.append([0, 0])
        return len(self.segments) - 1

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        segment = self.segments[-1]
        segment[0] = zlib.crc32(view, segment[0])
        segment[1] += len(view)
        self.size += len(view)
        if self._partial:
            take = min(STORED_BLOCK - len(self._partial), len(view))
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) == STORED_BLOCK:
                self._block(self._partial)
                self._partial = bytearray()
        while len(view) >= STORED_BLOCK:
            self._block(view[:STORED_BLOCK])
            view = view[STORED_BLOCK:]
        self._partial += view

    def _block(self, data: bytes | bytearray | memoryview, final: bool = False) -> None:
        self._out.write(_block_header(len(data), final))
        self._out.write(data)

    def close(self) -> None:
        """Write the final block and the trailer."""
        self._block(self._partial, final=True)
        self._partial = bytearray()
        self._out.write(self._trailer())

    def _trailer(self) -> bytes:
        crc = 0
        for segment_crc, length in self.segments:
            crc = crc32_combine(crc, segment_crc, length)
        return struct.pack("<II", crc, self.size & 0xFFFFFFFF)

    def patch(self, segment: int, content_offset: int, data: bytes) -> None:
        """Overwrite the whole of a (written) segment and fix the trailer's CRC."""
        assert self.segments[segment][1] == len(data)
        for piece_at, piece in _pieces(content_offset, data):
            self._out.seek(self.start + stored_offset(piece_at))
            self._out.write(piece)
        self.segments[segment][0] = zlib.crc32(data)
        self._out.seek(self.start + stored_size(self.size) - GZIP_TRAILER)
        self._out.write(self._trailer())
        self._out.seek(0, os.SEEK_END)


def _pieces(offset: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    """Split data at stored-block boundaries: (content offset, bytes) pieces."""
    while data:
        room = STORED_BLOCK - offset % STORED_BLOCK
        yield offset, data[:room]
        offset, data = offset + room, data[room:]
